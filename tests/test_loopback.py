"""The loopback listener, over real sockets: security.md properties 6-17 and its robustness limits."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.capability import missing
from tests.support.net import V6, can_bind_without_reuse, free_port
from xero_tui.core import loopback
from xero_tui.core.errors import (
    EXIT_LOCAL,
    CallbackError,
    ConsentCancelled,
    ConsentTimeout,
    OAuthError,
    PortInUse,
)
from xero_tui.core.loopback import (
    CONNECTED_TEXT,
    CSP,
    MAX_HEADER_BYTES,
    MAX_REQUEST_LINE,
    SIGN_IN_HEADER,
    BadRequest,
    CallbackListener,
    CallbackResult,
    HeadParser,
)

STATE = "St4te-7f3a9c0e5b1d4e2a8c6b0d9f1e3a5c7b"
CODE = "C0de-Zq81xWvT5kLmN0pQrS2uYb"
SESSION = "sess-9c8b7a"


Make = Callable[..., Awaitable[CallbackListener]]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    made: list[CallbackListener] = []

    async def _make(
        *, timeout: float = 20.0, host: str = "localhost", path: str = "/callback", **kw: Any
    ) -> CallbackListener:
        for _ in range(10):
            port = free_port()
            netloc = f"[{host}]" if ":" in host else host
            listener = CallbackListener(
                f"http://{netloc}:{port}{path}", STATE, timeout=timeout, **kw
            )
            try:
                await listener.start()
            except PortInUse:
                continue
            made.append(listener)
            return listener
        raise RuntimeError("no free port found")

    yield _make
    for listener in made:
        await listener.close()


def client() -> httpx.AsyncClient:
    # trust_env=False: a proxy from the environment must never see these requests.
    return httpx.AsyncClient(trust_env=False, timeout=5.0)


def cb_url(listener: CallbackListener, **params: str) -> str:
    return f"http://127.0.0.1:{listener.port}/callback?{urlencode(params)}"


def good(listener: CallbackListener) -> str:
    return cb_url(
        listener, code=CODE, scope="openid offline_access", state=STATE, session_state=SESSION
    )


class Response:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.text = body.decode("utf-8", "replace")

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


async def raw(
    port: int,
    data: bytes,
    *,
    host: str = "127.0.0.1",
    head_only: bool = False,
    timeout: float = 5.0,
) -> Response:
    """Send raw bytes, read one response (by Content-Length), then close first as a browser does."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = [tuple(line.split(": ", 1)) for line in lines[1:] if line]
        resp = Response(status, headers, b"")  # type: ignore[arg-type]
        length = int(resp.header("Content-Length") or 0)
        if not head_only:
            resp.body = await asyncio.wait_for(reader.readexactly(length), timeout)
            resp.text = resp.body.decode("utf-8", "replace")
        return resp
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n".encode()


async def expect_success(listener: CallbackListener) -> CallbackResult:
    async with client() as c:
        task = asyncio.create_task(c.get(good(listener)))
        result = await asyncio.wait_for(listener.wait(), 5)
        await listener.complete(True, "ok")
        resp = await task
    assert resp.status_code == 200
    assert CONNECTED_TEXT in resp.text
    return result


def _non_loopback_addresses() -> list[str]:
    found: set[str] = set()
    if shutil.which("ip"):
        out = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            for iface in json.loads(out.stdout or "[]"):
                for info in iface.get("addr_info", []):
                    found.add(info.get("local", ""))
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, proto=socket.IPPROTO_TCP):
            found.add(str(info[4][0]))
    except OSError:
        pass
    addrs = []
    for text in found:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            continue
        # Link-local v6 needs a scope id to connect to; the others prove the point.
        if addr.is_loopback or addr.is_link_local or addr.is_unspecified:
            continue
        addrs.append(text)
    return sorted(addrs)


# --- Property 6: loopback only ------------------------------------------------------------------


async def test_listener_binds_loopback_only(make: Make) -> None:
    listener = await make()
    names = [s.getsockname()[0] for s in listener.sockets]
    assert "127.0.0.1" in names
    if V6:
        assert "::1" in names
    for name in names:
        assert ipaddress.ip_address(name).is_loopback
    assert all(s.getsockname()[1] == listener.port for s in listener.sockets)


async def test_listener_refuses_non_loopback_address_of_host(make: Make) -> None:
    addrs = _non_loopback_addresses()
    if not addrs:
        missing("this host has no non-loopback address to try")
    listener = await make()
    for addr in addrs:
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(asyncio.open_connection(addr, listener.port), 3)
    # The attempt is untouched by those attempts.
    await expect_success(listener)


async def test_listener_answers_on_ipv6_loopback_for_localhost(make: Make) -> None:
    if not V6:
        missing("no IPv6 loopback on this host")
    listener = await make()
    resp = await raw(listener.port, get("/favicon.ico"), host="::1")
    assert resp.status == 404


async def test_listener_ipv6_redirect_uri(make: Make) -> None:
    if not V6:
        missing("no IPv6 loopback on this host")
    listener = await make(host="::1")
    assert listener.redirect_uri.startswith("http://[::1]:")
    async with client() as c:
        url = f"http://[::1]:{listener.port}/callback?code={CODE}&state={STATE}"
        task = asyncio.create_task(c.get(url))
        result = await listener.wait()
        await listener.complete(True, "ok")
        assert (await task).status_code == 200
    assert result.code == CODE


async def test_listener_socket_options_no_reuseaddr_v6only(make: Make) -> None:
    listener = await make()
    for sock in listener.sockets:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
        if sock.family == socket.AF_INET6:
            assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1


# --- Property 7: bound before the URL, never re-bound -------------------------------------------


async def test_listener_bound_before_url_shown_and_never_rebound(make: Make) -> None:
    listener = CallbackListener(f"http://localhost:{free_port()}/callback", STATE, timeout=10)
    # Nothing listens before start(); after start() returns (before any URL exists), it does.
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", listener.port)
    await listener.start()
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.close()
        before = [(id(s), s.fileno(), s.getsockname()) for s in listener.sockets]
        for path in ("/", "/favicon.ico", "/callback?state=wrong&code=x"):
            await raw(listener.port, get(path))
        after = [(id(s), s.fileno(), s.getsockname()) for s in listener.sockets]
        assert before == after
        await expect_success(listener)
    finally:
        await listener.close()


# --- Property 8: a taken port fails fast --------------------------------------------------------


@pytest.mark.parametrize("occupant", ["loopback", "wildcard-reuseaddr", "ipv6-only"])
async def test_port_in_use_fails_fast_naming_port(occupant: str) -> None:
    if occupant == "ipv6-only" and not V6:
        missing("no IPv6 loopback on this host")
    family, host = {
        "loopback": (socket.AF_INET, "127.0.0.1"),
        "wildcard-reuseaddr": (socket.AF_INET, "0.0.0.0"),
        "ipv6-only": (socket.AF_INET6, "::1"),
    }[occupant]
    with socket.socket(family, socket.SOCK_STREAM) as other:
        if occupant == "wildcard-reuseaddr":
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind((host, 0))
        other.listen()
        port = other.getsockname()[1]
        listener = CallbackListener(f"http://localhost:{port}/callback", STATE)
        began = time.monotonic()
        with pytest.raises(PortInUse) as info:
            await listener.start()
        assert time.monotonic() - began < 1.0
    assert info.value.port == port
    message = str(info.value)
    assert f"Port {port} is in use, perhaps by another xero-tui sign-in" in message
    assert "or by another program" in message
    assert "choose another redirect URI" in message and "Xero app" in message
    assert info.value.seconds_left is None
    # Not Xero's refusal: the CLI exits with the code for a local problem.
    assert info.value.exit_code == EXIT_LOCAL
    # A failed start leaves nothing bound behind.
    assert can_bind_without_reuse(port)


async def test_port_held_by_another_sign_in_says_so_and_when_it_gives_up(make: Make) -> None:
    first = await make(timeout=250.0)
    second = CallbackListener(f"http://localhost:{first.port}/callback", "other-state")
    with pytest.raises(PortInUse) as info:
        await second.start()
    message = str(info.value)
    assert f"Port {first.port} is in use by another xero-tui sign-in" in message
    assert "which gives up in 4 min 1" in message
    assert info.value.seconds_left is not None and 240 < info.value.seconds_left <= 250
    assert info.value.exit_code == EXIT_LOCAL
    # Asking did not disturb the first sign-in: its callback still completes it.
    async with client() as http:
        waiting = asyncio.ensure_future(first.wait())
        response = asyncio.ensure_future(http.get(good(first)))
        result = await waiting
        await first.complete(True, "ok")
        assert (await response).status_code == 200
    assert result.code == CODE


@pytest.mark.parametrize(
    ("head", "left"),
    [
        (b"HTTP/1.1 404 Not Found\r\nX-Xero-Tui-Sign-In-Left: 42\r\n\r\n", 42.0),
        (b"HTTP/1.1 404 Not Found\r\nx-xero-tui-sign-in-left:7\r\n\r\n", 7.0),
        (b"HTTP/1.1 200 OK\r\nServer: other\r\n\r\n", None),
        (b"HTTP/1.1 404 Not Found\r\nX-Xero-Tui-Sign-In-Left: soon\r\n\r\n", None),
        (b"HTTP/1.1 404 Not Found\r\nX-Xero-Tui-Sign-In-Left: 99999999\r\n\r\n", None),
    ],
)
def test_only_a_sign_ins_own_header_is_believed(head: bytes, left: float | None) -> None:
    assert loopback._seconds_left(head) == left


# --- Property 9: only GET on the exact path is a callback ---------------------------------------


async def test_stray_requests_do_not_end_attempt(make: Make) -> None:
    listener = await make()
    port = listener.port
    cases: list[tuple[bytes, int, bool]] = [
        (get("/favicon.ico"), 404, False),
        (get("/"), 404, False),
        (get("/callback/"), 404, False),
        (get("/Callback"), 404, False),
        (get("/callbackx?state=" + STATE + "&code=x"), 404, False),
        (get("/other?state=" + STATE), 404, False),
        (b"HEAD /callback HTTP/1.1\r\nHost: localhost\r\n\r\n", 405, True),
        (b"POST /callback HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 405, False),
        (f"PUT /callback?state={STATE}&code=x HTTP/1.1\r\n\r\n".encode(), 405, False),
        (b"OPTIONS /callback HTTP/1.1\r\n\r\n", 405, False),
        (b"GET /favicon.ico HTTP/1.1\r\nPurpose: prefetch\r\n\r\n", 404, False),
    ]
    for data, status, head_only in cases:
        resp = await raw(port, data, head_only=head_only)
        assert resp.status == status, data
        if status == 405:
            assert resp.header("Allow") == "GET"
        assert listener.remaining() > 0
    assert listener.sockets, "stray requests must not close the listener"
    result = await expect_success(listener)
    assert result.code == CODE


async def test_head_on_callback_sends_no_body(make: Make) -> None:
    listener = await make()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(b"HEAD /callback HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await writer.drain()
    writer.write_eof()
    data = await asyncio.wait_for(reader.read(), 3)
    writer.close()
    assert data.startswith(b"HTTP/1.1 405 ")
    assert data.endswith(b"\r\n\r\n")


# --- Property 10: state ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        f"code={CODE}",
        f"code={CODE}&state=",
        f"code={CODE}&state=%20",
        f"code={CODE}&state=wrong",
        f"code={CODE}&state={STATE}x",
        f"code={CODE}&state={STATE[:-1]}",
        f"code={CODE}&state={STATE}&state={STATE}",
        f"code={CODE}&state=wrong&state={STATE}",
        "error=access_denied&state=wrong",
        "error=access_denied",
    ],
)
async def test_bad_state_400_attempt_continues(make: Make, query: str) -> None:
    listener = await make()
    resp = await raw(listener.port, get(f"/callback?{query}"))
    assert resp.status == 400
    assert "state" in resp.text
    assert listener.sockets
    result = await expect_success(listener)
    assert (result.code, result.state, result.session_state, result.via) == (
        CODE,
        STATE,
        SESSION,
        "browser",
    )
    assert result.scope == "openid offline_access"


@pytest.mark.parametrize(
    "query", [f"state={STATE}", f"state={STATE}&code=", f"state={STATE}&code=a&code=b"]
)
async def test_missing_code_with_correct_state_400(make: Make, query: str) -> None:
    listener = await make()
    resp = await raw(listener.port, get(f"/callback?{query}"))
    assert resp.status == 400
    assert "no authorization code" in resp.text.lower()
    await expect_success(listener)


async def test_bad_query_encoding_400(make: Make) -> None:
    listener = await make()
    resp = await raw(listener.port, get(f"/callback?state={STATE}&code=%ff%fe"))
    assert resp.status == 400
    many = "&".join(f"k{i}=v" for i in range(150))
    resp = await raw(listener.port, get(f"/callback?{many}&state={STATE}&code=x"))
    assert resp.status == 400
    await expect_success(listener)


# --- Property 11: error= -----------------------------------------------------------------------


async def test_error_access_denied_reads_cancelled_in_xero(make: Make) -> None:
    listener = await make()
    async with client() as c:
        task = asyncio.create_task(c.get(cb_url(listener, error="access_denied", state=STATE)))
        with pytest.raises(OAuthError) as info:
            await asyncio.wait_for(listener.wait(), 5)
        resp = await task
    assert info.value.error == "access_denied"
    assert "cancelled in Xero" in str(info.value)
    assert resp.status_code == 200
    assert "cancelled in Xero" in resp.text
    assert "connected" not in resp.text.lower()
    assert can_bind_without_reuse(listener.port)


async def test_error_callback_escaped_and_control_chars_stripped(make: Make) -> None:
    listener = await make()
    desc = "Bad <script>alert(1)</script> \x1b[2J\x1b]0;pwned\x07 scope\r\nX-Injected: 1"
    url = f"http://127.0.0.1:{listener.port}/callback?error=invalid%3Cb%3Escope&error_description={quote(desc)}&state={STATE}"
    async with client() as c:
        task = asyncio.create_task(c.get(url))
        with pytest.raises(OAuthError) as info:
            await asyncio.wait_for(listener.wait(), 5)
        resp = await task
    message = str(info.value)
    for bad in ("\x1b", "[2J", "\x07", "\r", "\n", "pwned"):
        assert bad not in message
    assert "invalid<b>scope" in message and "alert(1)" in message
    assert info.value.description is not None and "\x1b" not in info.value.description
    page = resp.text
    assert "<script>" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "invalid&lt;b&gt;scope" in page
    assert "\x1b" not in page
    assert "X-Injected" not in str(resp.headers)
    assert "connected" not in page.lower()


# --- Property 12: single use --------------------------------------------------------------------


async def _rejected(port: int, data: bytes) -> bool:
    """A replay is rejected: the connection is refused (or reset), or it gets 400."""
    try:
        resp = await raw(port, data)
    except (ConnectionRefusedError, ConnectionResetError, asyncio.IncompleteReadError):
        return True
    return resp.status == 400


async def test_replay_rejected_after_accepted_callback(make: Make) -> None:
    listener = await make()
    replay = get(f"/callback?code={CODE}&state={STATE}")
    async with client() as c:
        task = asyncio.create_task(c.get(good(listener)))
        await asyncio.wait_for(listener.wait(), 5)
        # While the browser's request is held, the port no longer accepts anything new.
        assert not listener.sockets
        assert await _rejected(listener.port, replay)
        await listener.complete(True, "ok")
        assert (await task).status_code == 200
    assert await _rejected(listener.port, replay)
    assert can_bind_without_reuse(listener.port)


async def test_a_second_callback_on_a_connection_opened_earlier_is_refused(make: Make) -> None:
    """A browser may open a connection ahead (a prefetch) and send on it later: once a callback
    is accepted, a second one there gets 400 and leaves the first browser's page alone."""
    listener = await make()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        async with client() as c:
            task = asyncio.create_task(c.get(good(listener)))
            result = await asyncio.wait_for(listener.wait(), 5)
            writer.write(get(f"/callback?code=another-code&state={STATE}"))
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 400 ")
            await listener.complete(True, "ok")
            resp = await task
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    assert result.code == CODE
    assert resp.status_code == 200 and CONNECTED_TEXT in resp.text


# --- Property 13: timeout and cancel free the port ----------------------------------------------


async def test_timeout_frees_port(make: Make) -> None:
    listener = await make(timeout=0.5)
    # A half-open stray connection must not keep the port after the timeout.
    _, stray = await asyncio.open_connection("127.0.0.1", listener.port)
    stray.write(b"GET /call")
    began = time.monotonic()
    with pytest.raises(ConsentTimeout) as info:
        await asyncio.wait_for(listener.wait(), 5)
    assert 0.4 < time.monotonic() - began < 2.0
    message = str(info.value)
    assert "Timed out after 0.5 seconds" in message
    assert f"port {listener.port} is free" in message
    assert can_bind_without_reuse(listener.port)
    stray.close()


def test_timeout_message_in_minutes() -> None:
    from xero_tui.core.loopback import _duration

    assert _duration(300.0) == "5 minutes"
    assert _duration(60.0) == "1 minute"
    assert _duration(0.5) == "0.5 seconds"
    assert CallbackListener("http://localhost:8719/callback", STATE).timeout == 300.0


async def test_cancel_frees_port_at_once(make: Make) -> None:
    listener = await make()
    listener.cancel()
    # No await in between: the port is free the moment cancel() returns.
    assert can_bind_without_reuse(listener.port)
    with pytest.raises(ConsentCancelled):
        await listener.wait()
    await listener.close()  # idempotent
    await listener.close()


async def test_cancel_with_open_connections_frees_port(make: Make) -> None:
    listener = await make()
    _, half = await asyncio.open_connection("127.0.0.1", listener.port)
    half.write(b"GET /callback?state=")
    await half.drain()
    await asyncio.sleep(0.05)
    listener.cancel()
    with pytest.raises(ConsentCancelled):
        await listener.wait()
    assert can_bind_without_reuse(listener.port)
    half.close()


async def test_cancel_while_a_connection_is_being_accepted_frees_port(make: Make) -> None:
    # asyncio accepts a connection in one loop turn and hands it over in the next; a cancel in
    # between must not leave that accepted socket (and with it the port) open.
    listener = await make()
    loop = asyncio.get_running_loop()
    browser = socket.create_connection(("127.0.0.1", listener.port))
    try:
        # Due before the next turn starts, so it runs in the same turn as the accept.
        loop.call_later(0.0001, listener.cancel)
        time.sleep(0.01)
        with pytest.raises(ConsentCancelled):
            await listener.wait()
        await listener.close()
        assert can_bind_without_reuse(listener.port)
    finally:
        browser.close()


async def test_success_frees_port_without_reuseaddr(make: Make) -> None:
    listener = await make()
    for path in ("/", "/favicon.ico"):
        await raw(listener.port, get(path))
    await expect_success(listener)
    assert can_bind_without_reuse(listener.port)


async def test_context_manager_frees_port() -> None:
    port = free_port()
    async with CallbackListener(f"http://localhost:{port}/cb", STATE) as listener:
        assert listener.port == port
        assert not can_bind_without_reuse(port)
    assert can_bind_without_reuse(port)


async def test_deadline_and_remaining(make: Make) -> None:
    listener = await make(timeout=30.0)
    assert 29.0 < listener.remaining() <= 30.0
    assert abs(listener.deadline - (time.monotonic() + listener.remaining())) < 0.1


# --- Property 14-16: the page ----------------------------------------------------------------


EXPECTED_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Type": "text/html; charset=utf-8",
    "X-Content-Type-Options": "nosniff",
    "Connection": "close",
}


def _check_page(resp: Response) -> None:
    names = {k for k, _ in resp.headers}
    assert names - {"Allow", SIGN_IN_HEADER} == set(EXPECTED_HEADERS) | {"Content-Length"}
    # The one extra a page may carry: seconds left to the sign-in, and nothing else.
    left = resp.header(SIGN_IN_HEADER)
    assert left is None or (left.isdigit() and int(left) <= 20)
    for name, value in EXPECTED_HEADERS.items():
        assert resp.header(name) == value
    assert resp.header("Location") is None
    assert resp.status < 300 or resp.status >= 400
    body = resp.text
    assert '<link rel="icon" href="data:,">' in body
    assert "<style>" in body
    for external in (
        "http://",
        "https://",
        "src=",
        "<script",
        "<img",
        "<iframe",
        "@import",
        "url(",
    ):
        assert external not in body.lower()
    assert len(resp.body) < 4096
    assert CODE not in body and STATE not in body and SESSION not in body


async def test_page_headers_exact_and_no_secrets(make: Make) -> None:
    assert EXPECTED_HEADERS["Content-Security-Policy"] == CSP
    listener = await make()
    port = listener.port
    redirect = "https%3A%2F%2Fevil.example%2F"
    for data in (
        get("/"),
        get(f"/favicon.ico?next={redirect}"),
        get(f"/callback?code={CODE}&state=wrong&redirect_uri={redirect}"),
        get(f"/callback?state={STATE}&session_state={SESSION}"),
        b"DELETE /callback HTTP/1.1\r\n\r\n",
        b"GET /callback HTTP/3.0\r\n\r\n",
        b"GET /" + b"a" * (MAX_REQUEST_LINE + 10) + b" HTTP/1.1\r\n\r\n",
    ):
        _check_page(await raw(port, data))
    task = asyncio.create_task(
        raw(
            port,
            get(f"/callback?code={CODE}&state={STATE}&session_state={SESSION}&next={redirect}"),
        )
    )
    await asyncio.wait_for(listener.wait(), 5)
    await listener.complete(True, "ok")
    resp = await task
    assert resp.status == 200
    assert CONNECTED_TEXT in resp.text
    _check_page(resp)


async def test_error_page_has_no_secrets(make: Make) -> None:
    listener = await make()
    task = asyncio.create_task(
        raw(
            listener.port, get(f"/callback?error=server_error&error_description=oops&state={STATE}")
        )
    )
    with pytest.raises(OAuthError):
        await asyncio.wait_for(listener.wait(), 5)
    resp = await task
    assert resp.status == 200
    _check_page(resp)
    assert "server_error" in resp.text


async def test_page_says_connected_only_after_complete_true(make: Make) -> None:
    listener = await make()
    async with client() as c:
        task = asyncio.create_task(c.get(good(listener)))
        result = await asyncio.wait_for(listener.wait(), 5)
        assert result.code == CODE
        await asyncio.sleep(0.2)
        assert not task.done(), "the browser must not get an answer before the exchange finished"
        await listener.complete(True, "ok")
        resp = await task
    assert CONNECTED_TEXT in resp.text


async def test_page_says_what_failed_when_exchange_fails(make: Make) -> None:
    listener = await make()
    async with client() as c:
        task = asyncio.create_task(c.get(good(listener)))
        await asyncio.wait_for(listener.wait(), 5)
        await listener.complete(False, "Xero refused the code (invalid_grant) <b>\x1b[31m")
        resp = await task
    assert resp.status_code == 200
    assert "connected" not in resp.text.lower()
    assert "invalid_grant" in resp.text
    assert "&lt;b&gt;" in resp.text and "\x1b" not in resp.text
    assert can_bind_without_reuse(listener.port)


async def test_held_callback_gets_neutral_page_when_terminal_silent(make: Make) -> None:
    listener = await make(hold_timeout=0.3)
    async with client() as c:
        task = asyncio.create_task(c.get(good(listener)))
        await asyncio.wait_for(listener.wait(), 5)
        resp = await asyncio.wait_for(task, 3)
    assert "terminal did not answer" in resp.text
    assert "connected" not in resp.text.lower()
    await listener.complete(True, "late")  # too late for the page; still frees the port
    assert can_bind_without_reuse(listener.port)


async def test_close_answers_held_callback_neutrally(make: Make) -> None:
    listener = await make()
    async with client() as c:
        task = asyncio.create_task(c.get(good(listener)))
        await asyncio.wait_for(listener.wait(), 5)
        await listener.close()
        resp = await task
    assert "terminal did not answer" in resp.text
    assert can_bind_without_reuse(listener.port)


# --- Property 17: pasted URL -------------------------------------------------------------------


async def test_paste_accepts_matching_url(make: Make) -> None:
    listener = await make()
    port = listener.port
    listener.submit_pasted_url(
        f"  http://LOCALHOST:{port}/callback?code={CODE}&scope=openid&state={STATE}&session_state=s \n"
    )
    result = await listener.wait()
    assert (result.code, result.via, result.scope, result.session_state) == (
        CODE,
        "paste",
        "openid",
        "s",
    )
    assert not listener.sockets
    await listener.complete(True, "ok")
    assert can_bind_without_reuse(port)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (
            "http://localhost:{other}/callback?code=c&state={state}",
            "That URL is for http://localhost:{other}/callback, not http://localhost:{port}/callback.",
        ),
        (
            "http://localhost:{port}/other?code=c&state={state}",
            "That URL is for http://localhost:{port}/other, not",
        ),
        (
            "http://localhost:{port}/callback/?code=c&state={state}",
            "That URL is for http://localhost:{port}/callback/, not",
        ),
        (
            "http://127.0.0.1:{port}/callback?code=c&state={state}",
            "That URL is for http://127.0.0.1:{port}/callback, not",
        ),
        (
            "https://localhost:{port}/callback?code=c&state={state}",
            "That URL is for https://localhost:{port}/callback, not",
        ),
        (
            "http://evil.example:{port}/callback?code=c&state={state}",
            "That URL is for http://evil.example:{port}/callback",
        ),
        (
            "http://localhost/callback?code=c&state={state}",
            "That URL is for http://localhost/callback",
        ),
        (
            "http://localhost:{port}/callback?code=c&state=nope",
            "belongs to another attempt (state does not match)",
        ),
        (
            "http://localhost:{port}/callback?code=c&state={state}&state={state}",
            "state does not match",
        ),
        ("http://localhost:{port}/callback?code=c", "has no state"),
        ("http://localhost:{port}/callback?state={state}", "That URL has no code."),
        ("http://localhost:{port}/callback?state={state}&code=", "That URL has no code."),
        ("http://localhost:{port}/callback?state={state}&code=%ff", "cannot be read"),
        ("localhost:{port}/callback?code=c&state={state}", "That is not a URL"),
        ("just some text", "That is not a URL"),
        ("", "That is not a URL"),
        ("http://localhost:99999/callback", "That is not a URL"),
        (
            "http://localhost:{port}/callback\x1b[2J?code=c&state={state}",
            "contains control characters",
        ),
    ],
)
async def test_paste_rejects_wrong_url(make: Make, template: str, expected: str) -> None:
    listener = await make()
    port = listener.port
    fill = {"port": port, "other": port + 1 if port < 65535 else port - 1, "state": STATE}
    with pytest.raises(CallbackError) as info:
        listener.submit_pasted_url(template.format(**fill))
    message = str(info.value)
    assert expected.format(**fill) in message
    assert "\x1b" not in message
    # The attempt goes on: the real callback still works.
    assert listener.sockets
    await expect_success(listener)


async def test_paste_error_url_ends_attempt(make: Make) -> None:
    listener = await make()
    listener.submit_pasted_url(
        f"http://localhost:{listener.port}/callback?error=access_denied&state={STATE}"
    )
    with pytest.raises(OAuthError) as info:
        await listener.wait()
    assert info.value.error == "access_denied"
    assert can_bind_without_reuse(listener.port)


async def test_paste_then_callback_first_wins(make: Make) -> None:
    listener = await make()
    listener.submit_pasted_url(
        f"http://localhost:{listener.port}/callback?code=PASTED&state={STATE}"
    )
    assert await _rejected(listener.port, get(f"/callback?code={CODE}&state={STATE}"))
    with pytest.raises(CallbackError, match="already has an answer"):
        listener.submit_pasted_url(
            f"http://localhost:{listener.port}/callback?code=x&state={STATE}"
        )
    result = await listener.wait()
    assert (result.code, result.via) == ("PASTED", "paste")


async def test_callback_then_paste_first_wins(make: Make) -> None:
    listener = await make()
    async with client() as c:
        task = asyncio.create_task(c.get(good(listener)))
        result = await asyncio.wait_for(listener.wait(), 5)
        with pytest.raises(CallbackError, match="already has an answer"):
            listener.submit_pasted_url(
                f"http://localhost:{listener.port}/callback?code=PASTED&state={STATE}"
            )
        await listener.complete(True, "ok")
        assert CONNECTED_TEXT in (await task).text
    assert (result.code, result.via) == (CODE, "browser")


async def test_paste_and_callback_race_exactly_one_wins(make: Make) -> None:
    listener = await make()
    async with client() as c:
        task = asyncio.create_task(c.get(good(listener)))
        pasted = False
        for _ in range(50):
            await asyncio.sleep(0.002)
            try:
                listener.submit_pasted_url(
                    f"http://localhost:{listener.port}/callback?code=PASTED&state={STATE}"
                )
                pasted = True
                break
            except CallbackError:
                break
        result = await listener.wait()
        await listener.complete(True, "ok")
        try:
            resp: httpx.Response | None = await task
        except httpx.TransportError:
            resp = None
    if pasted:
        assert result.via == "paste"
        assert resp is None or resp.status_code == 400
    else:
        assert result.via == "browser"
        assert resp is not None and CONNECTED_TEXT in resp.text


# --- Robustness ----------------------------------------------------------------------------------


async def test_half_sent_request_does_not_block_callback(make: Make) -> None:
    listener = await make()
    _, half = await asyncio.open_connection("127.0.0.1", listener.port)
    half.write(b"GET /callback?state=" + STATE.encode() + b"&code=")
    await half.drain()
    began = time.monotonic()
    await expect_success(listener)
    assert time.monotonic() - began < 2.0
    half.close()


async def test_slow_request_gets_408(make: Make) -> None:
    listener = await make(read_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(b"GET /callback HTTP/1.1\r\nHost: l")
    await writer.drain()
    data = await asyncio.wait_for(reader.readuntil(b"\r\n"), 3)
    writer.close()
    assert data.startswith(b"HTTP/1.1 408 ")
    await expect_success(listener)


async def test_huge_header_431_attempt_continues(make: Make) -> None:
    listener = await make()
    big = (
        b"GET /callback HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * (1024 * 1024) + b"\r\n\r\n"
    )
    resp = await raw(listener.port, big)
    assert resp.status == 431
    many = get("/", "".join(f"X-{i}: v\r\n" for i in range(101)))
    assert (await raw(listener.port, many)).status == 431
    assert (
        await raw(listener.port, get("/", "".join(f"X-{i}: v\r\n" for i in range(99))))
    ).status == 404
    await expect_success(listener)


async def test_long_request_line_414_and_garbage_400(make: Make) -> None:
    listener = await make()
    port = listener.port
    assert (
        await raw(port, b"GET /" + b"a" * MAX_REQUEST_LINE + b" HTTP/1.1\r\n\r\n")
    ).status == 414
    assert (await raw(port, b"GET /" + b"a" * (MAX_REQUEST_LINE * 2))).status == 414
    for data in (
        b"GET /callback?state=\xff\xfe HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"GET /callback\r\n\r\n",
        b"GET  /callback HTTP/1.1\r\n\r\n",
        b"GET http://localhost/callback HTTP/1.1\r\n\r\n",
        b"G<T /callback HTTP/1.1\r\n\r\n",
        b"GET /callback HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /callback HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        b"\r\n\r\n",
    ):
        assert (await raw(port, data)).status == 400, data
    assert (await raw(port, b"GET /callback HTTP/2.0\r\n\r\n")).status == 505
    await expect_success(listener)


async def test_at_the_connection_cap_the_oldest_idle_connection_is_evicted(make: Make) -> None:
    """With its connection limit held by idle connections, the listener resets the oldest idle
    one for each new connection, so the browser's callback still gets through."""
    listener = await make(max_connections=4)
    idle = [await asyncio.open_connection("127.0.0.1", listener.port) for _ in range(4)]
    await asyncio.sleep(0.05)

    async def closed(reader: asyncio.StreamReader) -> bool:
        try:
            return await asyncio.wait_for(reader.read(), 0.3) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    # A stray request that is answered normally gets in, in place of the oldest idle one.
    assert (await raw(listener.port, get("/favicon.ico"))).status == 404
    assert [await closed(reader) for reader, _ in idle] == [True, False, False, False]
    # ... and so does the genuine callback.
    await expect_success(listener)
    for _, writer in idle:
        writer.close()


async def test_many_hostile_connections_then_callback(make: Make) -> None:
    listener = await make()
    port = listener.port

    payloads = [get("/"), b"\x00" * 100, b"GET /callback?state=x&code=y HTTP/1.1\r\n\r\n", b""]

    async def hostile(i: int) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return
        try:
            writer.write(payloads[i % 4])
            await writer.drain()
            if i % 3 == 0:
                writer.transport.abort()
                return
            await asyncio.wait_for(reader.read(1), 0.5 if i % 4 == 3 else 3)
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    await asyncio.gather(*(hostile(i) for i in range(150)))
    await expect_success(listener)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_head_parser_only_returns_or_rejects(chunks: list[bytes]) -> None:
    parser = HeadParser()
    try:
        for chunk in chunks:
            if parser.feed(chunk) is not None:
                break
    except BadRequest as bad:
        assert bad.status in {400, 414, 431, 505}


def test_head_parser_limits() -> None:
    parser = HeadParser()
    assert parser.feed(b"GET /x HTTP/1.1\r\n") is None
    with pytest.raises(BadRequest) as info:
        for _ in range(MAX_HEADER_BYTES // 1000 + 2):
            assert parser.feed(b"X: " + b"a" * 1000) is None
    assert info.value.status == 431
    request = HeadParser().feed(b"GET /cb?a=1 HTTP/1.0\nHost: x\n\n")
    assert (
        request is not None and request.target == "/cb?a=1" and request.headers == (("host", "x"),)
    )


# --- Construction ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "https://localhost:8719/callback",
        "http://example.com:8719/callback",
        "http://192.0.2.10:8719/callback",
        "http://localhost:0/callback",
        "http://localhost:99999/callback",
        "localhost:8719/callback",
    ],
)
def test_redirect_uri_must_be_loopback_http(uri: str) -> None:
    with pytest.raises(CallbackError):
        CallbackListener(uri, STATE)


def test_redirect_uri_defaults() -> None:
    listener = CallbackListener("http://localhost/cb", STATE)
    assert listener.port == 80
    assert listener.redirect_uri == "http://localhost/cb"


def test_callback_result_repr_hides_code() -> None:
    result = CallbackResult(
        code=CODE, state=STATE, scope="openid", session_state=None, via="browser"
    )
    assert CODE not in repr(result) and STATE not in repr(result)
