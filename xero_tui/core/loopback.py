"""The loopback listener that receives Xero's redirect after consent.

One listener serves one attempt. It binds before the authorize URL is shown, answers stray
requests without ending the attempt, accepts the first valid callback (or pasted URL), holds the
browser's request open until the token exchange has finished so the page tells the truth, and then
frees the port. Everything a request carries is treated as hostile: the reader is small, bounded
and strict, and every connection is answered or closed within a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import html
import re
import secrets
import socket
import struct
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from xero_tui.core.errors import (
    CallbackError,
    ConsentCancelled,
    ConsentTimeout,
    ListenError,
    OAuthError,
    PortInUse,
    clean_text,
)

DEFAULT_TIMEOUT = 300.0
HOLD_TIMEOUT = 60.0
READ_TIMEOUT = 10.0
WRITE_TIMEOUT = 5.0
# After answering, wait this long for the client to close first so the server side of the
# connection never sits in TIME_WAIT (which would block re-binding without SO_REUSEADDR).
LINGER_WAIT = 1.0
MAX_CONNECTIONS = 64
MAX_REQUEST_LINE = 8 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_LINES = 100
MAX_QUERY_FIELDS = 100
_DRAIN_LIMIT = 4 * 1024 * 1024
# Every page a listener serves says how long its sign-in still waits, so that a second sign-in
# finding the port taken can tell the user when the first one gives up.
SIGN_IN_HEADER = "X-Xero-Tui-Sign-In-Left"
# Asking the port's holder who it is must not hold up the error: a frozen one never answers.
HOLDER_TIMEOUT = 0.5
_READ_CHUNK = 16 * 1024

# Listeners closing in the background, kept here until they are done.
_CLOSING: set[asyncio.Task[None]] = set()

_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(r"HTTP/\d\.\d")
_BAD_LINE_BYTE = re.compile(rb"[\x00-\x0c\x0e-\x1f\x7f]")

CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
PAGE_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Type", "text/html; charset=utf-8"),
    ("Content-Security-Policy", CSP),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Connection", "close"),
)
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    505: "HTTP Version Not Supported",
}

CONNECTED_TEXT = "Connected to Xero. You can close this tab and return to the terminal."
# Shared by the CLI and the TUI, so it names no key or button: each adds its own way to retry.
ACCESS_DENIED_TEXT = "You cancelled in Xero, so no connection was made."


@dataclass(frozen=True)
class CallbackResult:
    code: str
    state: str
    scope: str | None
    session_state: str | None
    via: Literal["browser", "paste"]

    def __repr__(self) -> str:
        # The code is a credential for five minutes: keep it out of logs and tracebacks.
        return f"CallbackResult(scope={self.scope!r}, via={self.via!r})"


@dataclass(frozen=True)
class Request:
    """The head of one HTTP/1.x request: all the listener ever looks at."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]


class BadRequest(Exception):
    """The request cannot be served; `status` is the answer to send."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class HeadParser:
    """Incremental reader for a request head with hard limits, fed as bytes arrive.

    `feed` returns the request once the blank line ending the head is seen, None while more bytes
    are needed, and raises BadRequest (400, 414, 431 or 505) as soon as a limit is crossed, so a
    hostile client never makes the listener hold more than about 72 KiB.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._line: tuple[str, str, str] | None = None
        self._headers: list[tuple[str, str]] = []
        self._header_bytes = 0

    def feed(self, data: bytes) -> Request | None:
        # Control bytes can never be part of a request line: answer at once instead of waiting
        # for a newline that may never come (binary junk, a TLS hello).
        if self._line is None and _BAD_LINE_BYTE.search(data.split(b"\n", 1)[0]):
            raise BadRequest(400)
        self._buf += data
        while True:
            end = self._buf.find(b"\n", self._pos)
            if end < 0:
                pending = len(self._buf) - self._pos
                if self._line is None:
                    if pending > MAX_REQUEST_LINE + 1:
                        raise BadRequest(414)
                elif self._header_bytes + pending > MAX_HEADER_BYTES:
                    raise BadRequest(431)
                return None
            raw = bytes(self._buf[self._pos : end])
            consumed = end + 1 - self._pos
            self._pos = end + 1
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if self._line is None:
                if len(raw) > MAX_REQUEST_LINE:
                    raise BadRequest(414)
                self._line = _parse_request_line(raw)
                continue
            self._header_bytes += consumed
            if self._header_bytes > MAX_HEADER_BYTES:
                raise BadRequest(431)
            if not raw:
                method, target, version = self._line
                return Request(method, target, version, tuple(self._headers))
            if len(self._headers) >= MAX_HEADER_LINES:
                raise BadRequest(431)
            self._headers.append(_parse_header(raw))


def _parse_request_line(raw: bytes) -> tuple[str, str, str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(400) from None
    parts = text.split(" ")
    if len(parts) != 3:
        raise BadRequest(400)
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise BadRequest(400)
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest(505 if _VERSION.fullmatch(version) else 400)
    # Only origin-form targets: a loopback callback never comes through a proxy.
    if not target.startswith("/") or any(ch <= " " or ch == "\x7f" for ch in target):
        raise BadRequest(400)
    return method, target, version


def _parse_header(raw: bytes) -> tuple[str, str]:
    name, sep, value = raw.partition(b":")
    # Header values are never used, so bytes that are not UTF-8 (old cookies on localhost) are
    # tolerated there; the request line, which carries the callback, must be UTF-8.
    text_name = name.decode("latin-1")
    if not sep or not _TOKEN.fullmatch(text_name):
        raise BadRequest(400)
    return text_name.lower(), value.decode("latin-1").strip(" \t")


def render_page(title: str, message: str, tone: Literal["ok", "bad", "info"] = "info") -> str:
    """A small self-contained page; callers pass plain text, which is escaped here."""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>xero-tui: {html.escape(title)}</title>"
        "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:12vh auto;"
        "padding:0 1rem;color:#1e2933;background:#fff}h1{font-size:1.35rem}"
        ".ok{color:#0b7a3e}.bad{color:#b3261e}.info{color:#1e2933}</style>"
        f'</head><body><h1 class="{tone}">{html.escape(title)}</h1>'
        f"<p>{html.escape(message)}</p></body></html>\n"
    )


def build_response(
    status: int,
    page: str,
    *,
    head_only: bool = False,
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    body = page.encode("utf-8")
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"]
    lines.append(f"Content-Length: {len(body)}")
    lines.extend(f"{name}: {value}" for name, value in PAGE_HEADERS + extra)
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    return head if head_only else head + body


_STATUS_PAGES: dict[int, tuple[str, str]] = {
    400: ("Bad request", "xero-tui could not read this request."),
    404: ("Not found", "xero-tui answers only on its sign-in callback address."),
    405: ("Method not allowed", "Only GET is accepted on the sign-in callback address."),
    408: ("Request timeout", "The request did not arrive in time."),
    414: ("Address too long", "The request's address is longer than xero-tui accepts."),
    431: ("Headers too large", "The request's headers are larger than xero-tui accepts."),
    505: ("HTTP version not supported", "xero-tui speaks HTTP/1.0 and HTTP/1.1 only."),
}
_STATE_PAGE = (
    "Not the sign-in xero-tui is waiting for",
    "This address does not carry the state of the current sign-in (it may be from an older "
    "attempt). Use the link shown in the terminal.",
)
_NO_CODE_PAGE = (
    "No authorization code",
    "Xero's answer had no authorization code. Return to the terminal and try again.",
)
_USED_PAGE = (
    "This sign-in has already finished",
    "xero-tui already received an answer for this sign-in. Return to the terminal.",
)
_NEUTRAL_PAGE = (
    "The terminal did not answer",
    "xero-tui received Xero's answer, but the terminal did not answer in time. Return to the "
    "terminal to see whether the connection was made.",
)


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds:g} second{'s' if seconds != 1 else ''}"


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0): no TIME_WAIT on our side, nothing left for a hostile peer."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _bind(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Exclusive use of the port: another program on it must make us fail, not share it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        exclusive = getattr(socket, "SO_EXCLUSIVEADDRUSE", None)
        if exclusive is not None:
            sock.setsockopt(socket.SOL_SOCKET, exclusive, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_loopback(port: int) -> list[socket.socket]:
    """Listening sockets on 127.0.0.1 and, where the host has it, ::1; none held on failure."""
    sockets = [_bind(socket.AF_INET, "127.0.0.1", port)]
    if socket.has_ipv6:
        try:
            sockets.append(_bind(socket.AF_INET6, "::1", port))
        except OSError as exc:
            # No IPv6 loopback on this host: 127.0.0.1 alone serves the attempt.
            if exc.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
                sockets[0].close()
                raise
    return sockets


def port_in_use(port: int, seconds_left: float | None) -> PortInUse:
    """The error for a taken port, naming the likeliest holder: another xero-tui sign-in."""
    fix = "choose another redirect URI (and register it in the Xero app)"
    if seconds_left is not None:
        return PortInUse(
            f"Port {port} is in use by another xero-tui sign-in (another terminal, or a "
            f"sign-in screen left open), which gives up in {_time_left(seconds_left)}. Finish "
            f"or cancel that one, wait, or {fix}.",
            port,
            seconds_left,
        )
    return PortInUse(
        f"Port {port} is in use, perhaps by another xero-tui sign-in (another terminal, or a "
        f"sign-in screen left open or suspended; it gives up after {_duration(DEFAULT_TIMEOUT)} "
        f"unless given longer) or by another program. Close it, wait, or {fix}.",
        port,
    )


def _time_left(seconds: float) -> str:
    whole = max(1, round(seconds))
    if whole < 60:
        return f"{whole} second{'s' if whole != 1 else ''}"
    minutes, rest = divmod(whole, 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


async def sign_in_left(port: int, timeout: float = HOLDER_TIMEOUT) -> float | None:
    """How long the xero-tui sign-in holding `port` still waits; None if that is not known.

    Asks the holder with one plain request: a listener of this module says it in a header of
    its answer. Anything else (another program, a process that is stopped) gives None.
    """
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    try:
        async with asyncio.timeout(timeout):
            for host in ("127.0.0.1", "::1"):
                try:
                    reader, writer = await asyncio.open_connection(host, port)
                except OSError:
                    continue
                try:
                    writer.write(request)
                    await writer.drain()
                    head = await reader.readuntil(b"\r\n\r\n")
                finally:
                    writer.close()
                return _seconds_left(head)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    return None


def _seconds_left(head: bytes) -> float | None:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == SIGN_IN_HEADER.lower():
            text = value.strip()
            if text.isascii() and text.isdigit() and int(text) <= 86_400:
                return float(text)
    return None


def loopback_port_free(port: int) -> bool:
    """Whether a listener could bind `port` now, as `CallbackListener.start` binds it."""
    try:
        sockets = _bind_loopback(port)
    except OSError:
        return False
    for sock in sockets:
        sock.close()
    return True


def _retrieve(fut: asyncio.Future[CallbackResult]) -> None:
    # Nobody may ever await wait(); retrieving the exception keeps asyncio from logging it.
    if not fut.cancelled():
        fut.exception()


def _first(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None


@dataclass(eq=False)
class _Conn:
    writer: asyncio.StreamWriter
    # The connection whose answer ends the attempt (the held callback, or an error= callback):
    # close() lets it finish; every other connection is reset.
    final: bool = False
    # True until a whole request head has arrived: such a connection may be evicted for a new one.
    idle: bool = True


class CallbackListener:
    """Receives one OAuth redirect on a loopback port; see the module docstring.

    Call everything from the event loop's thread. `start()` binds; `wait()` returns the first valid
    callback or pasted URL; `complete()` answers the browser and frees the port.
    """

    def __init__(
        self,
        redirect_uri: str,
        state: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        hold_timeout: float = HOLD_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        if not state:
            raise ValueError("state must not be empty")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.redirect_uri = redirect_uri
        self._scheme, self._host, self.port, self._path = _loopback_target(redirect_uri)
        self._base = f"{self._scheme}://{urlsplit(redirect_uri).netloc}{self._path}"
        self._state = state
        self.timeout = timeout
        self._hold_timeout = hold_timeout
        self._read_timeout = read_timeout
        self._max_connections = max_connections
        self.deadline = time.monotonic() + timeout
        self._sockets: list[socket.socket] = []
        self._servers: list[asyncio.Server] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outcome: asyncio.Future[CallbackResult] | None = None
        self._held: asyncio.Future[bytes] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._conns: dict[asyncio.Task[None], _Conn] = {}
        self._listening = False
        self._started = False

    # Lifecycle ---------------------------------------------------------------------------------

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets (for inspection; empty once the listener stops accepting)."""
        return tuple(self._sockets) if self._listening else ()

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("a CallbackListener is started once")
        self._started = True
        loop = self._loop = asyncio.get_running_loop()
        try:
            self._sockets.extend(_bind_loopback(self.port))
        except OSError as exc:
            raise await self._bind_error(exc) from None
        try:
            for sock in self._sockets:
                server = await asyncio.start_server(
                    self._on_connection, sock=sock, backlog=socket.SOMAXCONN
                )
                self._servers.append(server)
        except BaseException:
            self._stop_listening()
            self._close_sockets()
            raise
        self._listening = True
        self._outcome = loop.create_future()
        self._outcome.add_done_callback(_retrieve)
        self.deadline = time.monotonic() + self.timeout
        self._timer = loop.call_later(self.timeout, self._on_timeout)

    async def _bind_error(self, exc: OSError) -> CallbackError:
        if exc.errno == errno.EADDRINUSE or getattr(exc, "winerror", None) == 10048:
            return port_in_use(self.port, await sign_in_left(self.port))
        if exc.errno in (errno.EACCES, errno.EPERM):
            return ListenError(
                f"Port {self.port} needs administrator rights on this system; choose a redirect "
                "URI with a port from 1024 to 65535 (and register it in the Xero app)."
            )
        reason = clean_text(exc.strerror or str(exc), 200)
        return ListenError(f"Cannot listen on port {self.port} ({reason}).")

    async def __aenter__(self) -> CallbackListener:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def wait(self) -> CallbackResult:
        """The first valid callback or accepted pasted URL.

        Raises ConsentCancelled, ConsentTimeout or OAuthError (Xero sent `error=`); in those cases
        the port is free when this returns.
        """
        if self._outcome is None:
            raise RuntimeError("start() the listener before waiting on it")
        try:
            return await asyncio.shield(self._outcome)
        except (CallbackError, OAuthError):
            await self.close()
            raise

    def cancel(self) -> None:
        """End the attempt now and free the port (open connections are reset)."""
        self._fail(
            ConsentCancelled(f"Cancelled; no connection was made and port {self.port} is free.")
        )
        self._stop_listening()
        self._cancel_timer()
        for task, conn in list(self._conns.items()):
            _reset(conn.writer)
            task.cancel()

    async def complete(self, ok: bool, message: str) -> None:
        """Report the token exchange's outcome: the held browser page says it, then we close."""
        self.answer(ok, message)
        await self.close()

    def answer(self, ok: bool, message: str) -> None:
        """Give the held browser request the exchange's outcome, without waiting for it to go.

        The caller still closes: `close()` (which waits up to LINGER_WAIT for the browser to
        hang up) or `close_in_background()`.
        """
        if self._held is not None and not self._held.done():
            if ok:
                page = render_page("Connected to Xero", CONNECTED_TEXT, "ok")
            else:
                detail = clean_text(message, 300).strip() or "the token exchange failed."
                page = render_page(
                    "The sign-in did not finish",
                    f"Xero sent you back, but xero-tui could not finish: {detail} "
                    "Return to the terminal for details.",
                    "bad",
                )
            self._held.set_result(build_response(200, page))

    def close_in_background(self) -> None:
        """Stop the attempt now and let the answered page finish on its own (see `close`)."""
        self._stop_listening()
        self._cancel_timer()
        task = asyncio.get_running_loop().create_task(self.close())
        # The loop keeps only a weak reference to a task.
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)

    async def close(self) -> None:
        """Free the port; idempotent. A held browser request gets a neutral page first."""
        self._fail(
            ConsentCancelled(f"Closed; no connection was made and port {self.port} is free.")
        )
        self._stop_listening()
        self._cancel_timer()
        if self._held is not None and not self._held.done():
            self._held.set_result(build_response(200, render_page(*_NEUTRAL_PAGE)))
        finals: list[asyncio.Task[None]] = []
        for task, conn in list(self._conns.items()):
            if conn.final:
                finals.append(task)
            else:
                _reset(conn.writer)
                task.cancel()
        if finals:
            _, pending = await asyncio.wait(finals, timeout=WRITE_TIMEOUT + LINGER_WAIT + 1.0)
            for task in pending:
                stuck = self._conns.get(task)
                if stuck is not None:
                    _reset(stuck.writer)
                task.cancel()
        rest = list(self._conns)
        if rest:
            await asyncio.wait(rest, timeout=1.0)
        # Aborted transports close their sockets on the next loop turn; let that happen.
        await asyncio.sleep(0)

    # Outcomes ----------------------------------------------------------------------------------

    def _fail(self, exc: Exception) -> None:
        if self._outcome is not None and not self._outcome.done():
            self._outcome.set_exception(exc)

    def _on_timeout(self) -> None:
        self._timer = None
        if self._outcome is None or self._outcome.done():
            return
        self._fail(
            ConsentTimeout(
                f"Timed out after {_duration(self.timeout)} without an answer from Xero; port "
                f"{self.port} is free again."
            )
        )
        self._stop_listening()
        for task, conn in list(self._conns.items()):
            _reset(conn.writer)
            task.cancel()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _stop_listening(self) -> None:
        """Stop accepting: the listening sockets close now (their port stays ours until then).

        The asyncio Servers are deliberately not closed: Server.close() makes a connection that
        asyncio has accepted but not yet handed over fail inside asyncio, which never closes its
        socket, so the port stays taken. Removing the accept callback and closing the listening
        sockets ourselves lets such a connection reach _on_connection, which resets it.
        """
        self._listening = False
        for sock in self._sockets:
            if self._loop is not None and sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
        self._servers.clear()
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    def _accept(self, result: CallbackResult) -> None:
        assert self._outcome is not None
        self._outcome.set_result(result)
        self._cancel_timer()
        self._stop_listening()

    def _end_with_error(self, error: str, description: str | None) -> tuple[str, str]:
        """Xero sent `error=`: end the attempt with a readable error; return the page to show."""
        code = clean_text(error, 100).strip() or "unknown_error"
        detail = clean_text(description, 300).strip() if description else ""
        if code == "access_denied":
            message = ACCESS_DENIED_TEXT
            page = (
                "You cancelled in Xero",
                "No connection was made. You can close this tab and press Generate in the "
                "terminal to try again.",
            )
        else:
            said = f"{code}: {detail}" if detail else code
            message = f"Xero did not grant access ({said}). No connection was made."
            page = ("Xero did not grant access", f"Xero answered: {said}. No connection was made.")
        self._fail(OAuthError(message, error=code, description=detail or None))
        self._cancel_timer()
        self._stop_listening()
        return page

    def _state_matches(self, values: list[str] | None) -> bool:
        if values is None or len(values) != 1 or not values[0].strip():
            return False
        return secrets.compare_digest(values[0].encode(), self._state.encode())

    # Pasted URL --------------------------------------------------------------------------------

    def submit_pasted_url(self, url: str) -> None:
        """Accept the address the browser ended on, for when its redirect cannot reach us (SSH).

        Raises CallbackError saying what is wrong; the attempt continues. An `error=` URL ends the
        attempt as the callback would, and wait() raises it.
        """
        if self._outcome is None:
            raise CallbackError("The sign-in has not started yet.")
        if self._outcome.done():
            raise CallbackError("This sign-in already has an answer; paste is no longer needed.")
        text = url.strip().strip("'\"<>").strip()
        if any(ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F for ch in text):
            raise CallbackError(
                "That text contains control characters; copy the URL again from the browser's "
                "address bar."
            )
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            parts, port = None, None
        if parts is None or not parts.scheme or not parts.netloc:
            raise CallbackError(
                "That is not a URL; paste the whole address from the browser's address bar "
                f"(it starts with {self._base})."
            )
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower()
        if port is None:
            port = {"http": 80, "https": 443}.get(scheme)
        path = parts.path or "/"
        if (scheme, host, port, path) != (self._scheme, self._host, self.port, self._path):
            shown = clean_text(f"{parts.scheme}://{parts.netloc}{parts.path}", 200)
            raise CallbackError(f"That URL is for {shown}, not {self._base}.")
        try:
            params = _parse_query(parts.query)
        except ValueError:
            raise CallbackError("That URL's query cannot be read; paste it unchanged.") from None
        if "state" not in params:
            raise CallbackError("That URL has no state, so it cannot be matched to this sign-in.")
        if not self._state_matches(params.get("state")):
            raise CallbackError("That URL belongs to another attempt (state does not match).")
        if "error" in params:
            self._end_with_error(params["error"][0], _first(params, "error_description"))
            return
        codes = params.get("code")
        if not codes or len(codes) != 1 or not codes[0].strip():
            raise CallbackError("That URL has no code.")
        self._accept(
            CallbackResult(
                code=codes[0],
                state=self._state,
                scope=_first(params, "scope"),
                session_state=_first(params, "session_state"),
                via="paste",
            )
        )

    # Connections -------------------------------------------------------------------------------

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is None or not self._listening:
            _reset(writer)
            return
        if len(self._conns) >= self._max_connections and not self._evict_oldest_idle():
            _reset(writer)
            return
        conn = _Conn(writer)
        self._conns[task] = conn
        try:
            await self._serve(reader, conn)
        except asyncio.CancelledError:
            # Only this listener cancels these tasks (cancel, timeout, close). Ending normally
            # keeps asyncio's stream callback from logging the cancellation as an error.
            _reset(writer)
        except Exception:
            # A broken or hostile connection ends with a reset, never with an error in the app.
            _reset(writer)
        finally:
            # An evicted connection was taken out already.
            self._conns.pop(task, None)

    def _evict_oldest_idle(self) -> bool:
        """Make room for a new connection by resetting the oldest one that has not yet sent a
        whole request: a local flood of idle connections cannot lock the browser out. False
        when every held connection is being answered."""
        for task, conn in self._conns.items():
            if conn.idle and not conn.final:
                del self._conns[task]
                _reset(conn.writer)
                task.cancel()
                return True
        return False

    async def _serve(self, reader: asyncio.StreamReader, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        parser = HeadParser()
        deadline = loop.time() + self._read_timeout
        try:
            request: Request | None = None
            while request is None:
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError
                chunk = await asyncio.wait_for(reader.read(_READ_CHUNK), left)
                if not chunk:
                    _reset(conn.writer)
                    return
                request = parser.feed(chunk)
        except BadRequest as bad:
            conn.idle = False
            await self._answer(reader, conn, bad.status, *_STATUS_PAGES[bad.status])
            return
        except TimeoutError:
            conn.idle = False
            await self._answer(reader, conn, 408, *_STATUS_PAGES[408])
            return
        conn.idle = False
        await self._route(reader, conn, request)

    async def _route(self, reader: asyncio.StreamReader, conn: _Conn, request: Request) -> None:
        path, _, query = request.target.partition("?")
        query = query.partition("#")[0]
        if path != self._path:
            await self._answer(reader, conn, 404, *_STATUS_PAGES[404])
            return
        if request.method != "GET":
            await self._answer(
                reader,
                conn,
                405,
                *_STATUS_PAGES[405],
                head_only=request.method == "HEAD",
                extra=(("Allow", "GET"),),
            )
            return
        if self._outcome is None or self._outcome.done():
            await self._answer(reader, conn, 400, *_USED_PAGE)
            return
        try:
            params = _parse_query(query)
        except ValueError:
            await self._answer(reader, conn, 400, *_STATUS_PAGES[400])
            return
        if not self._state_matches(params.get("state")):
            await self._answer(reader, conn, 400, *_STATE_PAGE)
            return
        if "error" in params:
            conn.final = True
            title, text = self._end_with_error(
                params["error"][0], _first(params, "error_description")
            )
            await self._answer(reader, conn, 200, title, text, tone="bad")
            return
        codes = params.get("code")
        if not codes or len(codes) != 1 or not codes[0].strip():
            await self._answer(reader, conn, 400, *_NO_CODE_PAGE)
            return
        conn.final = True
        loop = asyncio.get_running_loop()
        self._held = loop.create_future()
        self._accept(
            CallbackResult(
                code=codes[0],
                state=self._state,
                scope=_first(params, "scope"),
                session_state=_first(params, "session_state"),
                via="browser",
            )
        )
        try:
            response = await asyncio.wait_for(asyncio.shield(self._held), self._hold_timeout)
        except TimeoutError:
            response = build_response(200, render_page(*_NEUTRAL_PAGE))
        await self._send(reader, conn, response)

    async def _answer(
        self,
        reader: asyncio.StreamReader,
        conn: _Conn,
        status: int,
        title: str,
        text: str,
        *,
        tone: Literal["ok", "bad", "info"] = "info",
        head_only: bool = False,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        page = render_page(title, text, tone)
        left = ((SIGN_IN_HEADER, str(round(self.remaining()))),) if self._listening else ()
        await self._send(
            reader, conn, build_response(status, page, head_only=head_only, extra=extra + left)
        )

    async def _send(self, reader: asyncio.StreamReader, conn: _Conn, response: bytes) -> None:
        writer = conn.writer
        writer.write(response)
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        # Let the client close first (so TIME_WAIT lands on its side), discarding whatever else it
        # sends; a client that does not close in time gets a reset instead.
        try:
            async with asyncio.timeout(LINGER_WAIT):
                drained = 0
                while chunk := await reader.read(_READ_CHUNK):
                    drained += len(chunk)
                    if drained > _DRAIN_LIMIT:
                        raise TimeoutError
        except (TimeoutError, OSError):
            _reset(writer)
            return
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)


def _parse_query(query: str) -> dict[str, list[str]]:
    """Strict query parsing: invalid percent-encoded UTF-8 or too many fields is a ValueError."""
    return parse_qs(
        query,
        keep_blank_values=True,
        encoding="utf-8",
        errors="strict",
        max_num_fields=MAX_QUERY_FIELDS,
    )


def _loopback_target(redirect_uri: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of a redirect URI this machine can listen for."""
    try:
        parts = urlsplit(redirect_uri)
        port = parts.port
    except ValueError:
        raise CallbackError(
            f"The redirect URI {clean_text(redirect_uri, 200)} is not valid."
        ) from None
    host = (parts.hostname or "").lower()
    if parts.scheme.lower() != "http" or host not in _LOOPBACK_HOSTS:
        raise CallbackError(
            "The redirect URI must be http://localhost:PORT/path (or 127.0.0.1 / [::1]) for "
            f"xero-tui to receive Xero's answer; {clean_text(redirect_uri, 200)} is not."
        )
    if port == 0:
        raise CallbackError("The redirect URI needs a real port number, not 0.")
    return "http", host, 80 if port is None else port, parts.path or "/"
