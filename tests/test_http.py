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

from xero_tui.core.errors import NetworkError, UsageError
from xero_tui.core.http import HttpSettings, new_client, send


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(0.5)
        body = json.dumps({"path": self.path, "ua": self.headers.get("User-Agent")}).encode()
        if self.path == "/gzip":
            body = gzip.compress(body)
        # A client that timed out has gone.
        with contextlib.suppress(OSError):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if self.path == "/gzip":
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
