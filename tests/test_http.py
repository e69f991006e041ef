"""The HTTP layer's transport: httpx's blocking transport driven from daemon threads."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from xero_tui.core.errors import NetworkError, UnavailableError, UsageError
from xero_tui.core.http import MAX_BODY, HttpSettings, new_client, send
from xero_tui.emulator import Emulator


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(0.5)
        body = json.dumps({"path": self.path, "ua": self.headers.get("User-Agent")}).encode()
        if self.path == "/gzip":
            body = gzip.compress(body)
        if self.path == "/bomb":
            # 64 KB on the wire that would unpack into 64 MB.
            body = gzip.compress(b" " * (64 << 20), compresslevel=9)
        # A client that timed out has gone.
        with contextlib.suppress(OSError):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if self.path in ("/gzip", "/bomb"):
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.dumps({"form": self.rfile.read(length).decode()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def _server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_requests_go_through_and_bodies_are_decoded_once() -> None:
    settings = HttpSettings(timeout=5.0)
    with _server() as base:
        async with new_client(settings) as client:
            plain = await send(client, "GET", f"{base}/plain", settings)
            packed = await send(client, "GET", f"{base}/gzip", settings)
            form = await send(client, "POST", f"{base}/token", settings, data={"a": "b c"})
            both = await asyncio.gather(
                send(client, "GET", f"{base}/one", settings),
                send(client, "GET", f"{base}/two", settings),
            )
    assert plain.json() == {"path": "/plain", "ua": "xero-tui"}
    assert packed.json() == {"path": "/gzip", "ua": "xero-tui"}
    assert form.json() == {"form": "a=b+c"}
    assert [r.json()["path"] for r in both] == ["/one", "/two"]


async def test_refused_connection_is_a_network_error_after_bounded_retries() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = HttpSettings(timeout=2.0, retries=2, backoff=0.01)
    async with new_client(settings) as client:
        with pytest.raises(NetworkError, match="after 3 tries"):
            await send(client, "GET", f"http://127.0.0.1:{port}/", settings)


async def test_a_cancelled_request_leaves_nothing_behind() -> None:
    settings = HttpSettings(timeout=5.0)
    loop = asyncio.get_running_loop()
    problems: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: problems.append(context))
    with _server() as base:
        async with new_client(settings) as client:
            task = asyncio.create_task(client.get(f"{base}/slow"))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The thread finishes its request; its answer is dropped quietly.
            await asyncio.sleep(0.7)
            again = await client.get(f"{base}/after")
    assert again.json()["path"] == "/after"
    assert problems == []


def test_timeouts_apply_in_the_thread() -> None:
    settings = HttpSettings(timeout=0.2, retries=0)

    async def go() -> None:
        with _server() as base:
            async with new_client(settings) as client:
                with pytest.raises(httpx.ReadTimeout):
                    await client.get(f"{base}/slow")

    asyncio.run(go())


def test_exit_waits_for_a_tls_context_being_built() -> None:
    # OpenSSL frees its state at exit; a thread still parsing the CA bundle then crashed it.
    code = (
        "import time\n"
        "from xero_tui.core.http import start_tls_context\n"
        "start_tls_context()\n"
        "time.sleep(0.005)\n"
    )
    for _ in range(8):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr.decode()[-500:]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("XERO_TUI_HTTP_TIMEOUT", "ten"),
        ("XERO_TUI_HTTP_TIMEOUT", "0"),
        ("XERO_TUI_HTTP_TIMEOUT", "nan"),
        ("XERO_TUI_HTTP_RETRIES", "1.5"),
        ("XERO_TUI_HTTP_RETRIES", "-1"),
        ("XERO_TUI_HTTP_BACKOFF", "inf"),
    ],
)
def test_bad_http_settings_are_a_usage_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(UsageError) as caught:
        HttpSettings.from_env()
    assert name in caught.value.message
    assert repr(value) in caught.value.message


def test_http_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XERO_TUI_HTTP_TIMEOUT", " 2.5 ")
    monkeypatch.setenv("XERO_TUI_HTTP_RETRIES", "0")
    monkeypatch.setenv("XERO_TUI_HTTP_BACKOFF", "")
    settings = HttpSettings.from_env()
    assert (settings.timeout, settings.connect_timeout) == (2.5, 2.5)
    assert settings.retries == 0
    assert settings.backoff == HttpSettings().backoff


async def test_an_endless_answer_is_cut_at_the_body_cap_without_holding_it(
    emulator: Emulator,
) -> None:
    """A token answer that does not end (64 MB without a length) is cut after about 1 MB with a
    sentence, and the client never holds much more than that in memory."""
    import tracemalloc

    settings = HttpSettings(timeout=30, retries=0)
    emulator.inject("token", "endless")
    tracemalloc.start()
    started = time.monotonic()
    try:
        async with new_client(settings) as client:
            with pytest.raises(UnavailableError, match="larger than 1 MB") as caught:
                await send(client, "POST", emulator.endpoints.token_url, settings, data={})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 10
    assert peak < 8 * MAX_BODY, peak
    assert "127.0.0.1" in str(caught.value)


async def test_a_compressed_answer_is_not_unpacked_past_the_body_cap() -> None:
    """A 64 KB gzip answer that would unpack into 64 MB is refused at the cap, not unpacked."""
    settings = HttpSettings(timeout=30, retries=0)
    with _server() as base:
        async with new_client(settings) as client:
            with pytest.raises(UnavailableError, match="larger than 1 MB"):
                await send(client, "GET", f"{base}/bomb", settings)
            small = await send(client, "GET", f"{base}/gzip", settings)
    assert small.json()["path"] == "/gzip"


async def test_an_answer_trickled_a_byte_at_a_time_ends_at_the_total_deadline(
    emulator: Emulator,
) -> None:
    """A server sending one byte every 0.1 s (never tripping the per-read timeout) is given
    up on at the request's total deadline, each retry included, with a sentence."""
    settings = HttpSettings(timeout=1.0, retries=1, backoff=0.01)
    emulator.inject("token", "trickle", count=2, delay=0.1)
    started = time.monotonic()
    async with new_client(settings) as client:
        with pytest.raises(NetworkError, match=r"did not finish answering within 1 s \(2 tries\)"):
            await send(client, "POST", emulator.endpoints.token_url, settings, data={})
    elapsed = time.monotonic() - started
    assert 2.0 <= elapsed < 3.5, elapsed
    # A trickled answer that does finish in time is read as usual.
    settings = HttpSettings(timeout=20.0, retries=0)
    emulator.inject("token", "trickle", delay=0.001)
    async with new_client(settings) as client:
        response = await send(client, "POST", emulator.endpoints.token_url, settings, data={})
    assert response.status_code in (400, 401)
