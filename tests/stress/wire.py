"""Raw HTTP/1.1 over blocking sockets, and an event loop in a thread for the listener under test.

The listener runs on its own loop so that the test (and hypothesis, which drives plain functions)
can throw bytes at it from the main thread the way hostile local programs would.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from xero_tui.core import loopback

T = TypeVar("T")
_LENGTH = re.compile(rb"\r\nContent-Length: (\d+)\r\n", re.I)


class LoopThread:
    """An asyncio loop running in a daemon thread; `run` hands it a coroutine and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@dataclass
class Answer:
    """One exchange: `status` None means the listener reset or closed without an answer."""

    status: int | None
    head: bytes
    body: bytes
    seconds: float


def exchange(
    port: int,
    data: bytes,
    *,
    host: str = "127.0.0.1",
    timeout: float = 5.0,
    method: str = "",
    sock: socket.socket | None = None,
) -> Answer:
    """Send `data` (unless `sock` was already given it) and read one response, then close first,
    as a browser does. Raises TimeoutError when nothing arrives within `timeout`."""
    start = time.monotonic()
    if sock is None:
        sock = socket.create_connection((host, port), timeout=timeout)
        # It may answer (400, 431) and reset before taking everything.
        with contextlib.suppress(OSError):
            sock.sendall(data)
    sock.settimeout(timeout)
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return Answer(None, buf, b"", time.monotonic() - start)
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        match = _LENGTH.search(head + b"\r\n")
        length = int(match.group(1)) if match else 0
        # A 405 to HEAD carries the head only, as HEAD answers must.
        if not (status == 405 and method == "HEAD"):
            while len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
        return Answer(status, head, body, time.monotonic() - start)
    except (ConnectionResetError, BrokenPipeError):
        return Answer(None, buf, b"", time.monotonic() - start)
    finally:
        sock.close()


def _pages() -> set[bytes]:
    pages = [*loopback._STATUS_PAGES.values(), loopback._STATE_PAGE, loopback._NO_CODE_PAGE]
    pages.append(loopback._USED_PAGE)
    return {loopback.render_page(title, text).encode() for title, text in pages}


# Every page a stray or hostile request may get: fixed texts, so nothing from a request shows.
STRAY_PAGES = frozenset(_pages())
HEADER_LINES = frozenset(
    f"{name}: {value}".encode() for name, value in (*loopback.PAGE_HEADERS, ("Allow", "GET"))
)


# The one header whose value varies: the seconds the sign-in still waits, from its own clock.
SIGN_IN_LEFT = re.compile(rb"%s: \d{1,5}" % re.escape(loopback.SIGN_IN_HEADER.encode()))


def reflects_nothing(answer: Answer) -> bool:
    """The answer is one of the listener's fixed pages with its fixed headers."""
    lines = answer.head.split(b"\r\n")
    fixed = all(
        line in HEADER_LINES
        or line.startswith(b"Content-Length: ")
        or SIGN_IN_LEFT.fullmatch(line) is not None
        for line in lines[1:]
    )
    return fixed and (answer.body in STRAY_PAGES or answer.body == b"")
