"""Every HTTP call to Xero goes through here: explicit timeouts, bounded retries, typed errors."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import random
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from xero_tui.core.errors import (
    NetworkError,
    RateLimited,
    ServerError,
    UnavailableError,
    UsageError,
    clean_text,
)

RETRY_STATUSES = frozenset({500, 502, 503, 504})
# Xero's answers are a few KB (a thousand organisations in /connections stay far below this);
# nothing bigger is read, raw or decoded.
MAX_BODY = 1 << 20
ACCEPT_ENCODING = "gzip, deflate"
# How long exit waits for this module's threads (see _let_threads_finish): ample for a thread
# inside OpenSSL to leave it, short enough that Ctrl-C during a request still ends at once.
EXIT_WAIT = 0.5
A = TypeVar("A")
R = TypeVar("R")


@dataclass(frozen=True)
class HttpSettings:
    # The most one request may take from start to end, whatever the server does; each read
    # waits at most this long too.
    timeout: float = 20.0
    connect_timeout: float = 5.0
    retries: int = 3
    backoff: float = 0.5
    # A Retry-After longer than this is reported rather than slept through.
    max_retry_after: float = 30.0

    @classmethod
    def from_env(cls) -> HttpSettings:
        """XERO_TUI_HTTP_TIMEOUT / _RETRIES / _BACKOFF let slow links (and tests) tune the bounds."""
        settings = cls()
        timeout = _env_number("XERO_TUI_HTTP_TIMEOUT", float, minimum=0.1)
        retries = _env_number("XERO_TUI_HTTP_RETRIES", int, minimum=0)
        backoff = _env_number("XERO_TUI_HTTP_BACKOFF", float, minimum=0.0)
        return cls(
            timeout=settings.timeout if timeout is None else timeout,
            connect_timeout=settings.connect_timeout
            if timeout is None
            else min(timeout, settings.connect_timeout),
            retries=settings.retries if retries is None else retries,
            backoff=settings.backoff if backoff is None else backoff,
        )

    def httpx_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, connect=self.connect_timeout)


N = TypeVar("N", int, float)


def _env_number(name: str, kind: Callable[[str], N], *, minimum: N) -> N | None:
    """An optional numeric setting from the environment; a bad value is a usage error that names it."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value != value or value < minimum or value == float("inf"):
        what = "a whole number" if kind is int else "a number"
        raise UsageError(f"{name} must be {what} of at least {minimum}, not {raw!r}.")
    return value


_tls: ssl.SSLContext | None = None
_tls_lock = threading.Lock()


def tls_context() -> ssl.SSLContext:
    """The verifying TLS context every client shares: building one parses the whole CA bundle
    (30 ms and more), which each new client would otherwise pay again."""
    global _tls
    with _tls_lock:
        if _tls is None:
            _tls = httpx.create_ssl_context(verify=True)
        return _tls


def start_tls_context() -> None:
    """Start building the TLS context in a thread, unless it is built. OpenSSL parses the CA
    bundle without holding the GIL, so this overlaps with what the caller does next (keyring,
    locks) instead of adding to it; `tls_context()` waits for it if it is not done."""
    if _tls is None:
        _start_thread(_build_tls_context, "xero-tui tls")


def _build_tls_context() -> None:
    # A failure is reported by the caller's own tls_context(), which tries again.
    with contextlib.suppress(Exception):
        tls_context()


# The caller waits this much longer than the deadline, so that the thread's own timeouts (and
# its own check of the deadline while reading a body) are what a slow answer normally meets.
DEADLINE_GRACE = 0.25


class DeadlineExceeded(httpx.ReadTimeout):
    """The request did not end within its total deadline (a server trickling its answer)."""


def _too_large(request: httpx.Request) -> UnavailableError:
    host = clean_text(request.url.host, 200)
    return UnavailableError(
        f"{host} sent an answer larger than {MAX_BODY // (1 << 20)} MB, which Xero never does, "
        "so xero-tui stopped reading it; try again later, and if it persists check what the "
        "XERO_TUI_*_URL variables point at."
    )


def _decoder(request: httpx.Request, encoding: str) -> Any:
    """A zlib decompressor for the answer's Content-Encoding (None: identity)."""
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    host = clean_text(request.url.host, 200)
    raise UnavailableError(
        f"{host} answered in an encoding xero-tui did not ask for "
        f"({clean_text(encoding, 40)}); try again later."
    )


def _bounded_body(
    request: httpx.Request, chunks: Iterator[bytes], encoding: str, deadline: float
) -> bytes:
    """The decoded body, read until its end, MAX_BODY or the deadline, whichever comes first."""
    decoder = _decoder(request, encoding)
    raw = 0
    out = bytearray()
    for chunk in chunks:
        raw += len(chunk)
        if raw > MAX_BODY:
            raise _too_large(request)
        if time.monotonic() > deadline:
            raise DeadlineExceeded("the answer did not finish in time", request=request)
        if decoder is None:
            out += chunk
            continue
        try:
            out += decoder.decompress(chunk, MAX_BODY + 1 - len(out))
        except zlib.error:
            raise httpx.DecodingError("the compressed answer is corrupt", request=request) from None
        if len(out) > MAX_BODY or decoder.unconsumed_tail:
            raise _too_large(request)
    if decoder is not None:
        out += decoder.flush()
    if len(out) > MAX_BODY:
        raise _too_large(request)
    return bytes(out)


class ThreadedTransport(httpx.AsyncBaseTransport):
    """httpx's blocking transport, each request run to the end in a daemon thread.

    httpx's own async transport runs on anyio, whose asyncio backend (imported on the first
    request) and machinery cost a `token --force-refresh` about a tenth of its CPU time. Xero
    gets a few small requests at a time, so a thread each costs next to nothing. The blocking
    transport applies the same timeouts and TLS verification. A request whose caller was
    cancelled runs on, at most until its own timeout, and its answer is dropped; exit waits for
    it only briefly (see _let_threads_finish).
    """

    def __init__(self, verify: ssl.SSLContext, deadline: float = HttpSettings.timeout) -> None:
        self._blocking = httpx.HTTPTransport(verify=verify)
        self._deadline = deadline

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # The caller's wait ends at the deadline whatever the thread is stuck in (a server can
        # send one byte a second forever without tripping a per-read timeout); the thread
        # itself stops reading a body at the same deadline.
        deadline = time.monotonic() + self._deadline
        try:
            async with asyncio.timeout(self._deadline + DEADLINE_GRACE):
                return await _in_request_thread(self._fetch, (request, deadline))
        except TimeoutError:
            raise DeadlineExceeded("no complete answer in time", request=request) from None

    def _fetch(self, job: tuple[httpx.Request, float]) -> httpx.Response:
        request, deadline = job
        response = self._blocking.handle_request(request)
        try:
            length = response.headers.get("Content-Length", "")
            if length.strip().isdigit() and int(length) > MAX_BODY:
                raise _too_large(request)
            encoding = response.headers.get("Content-Encoding", "").strip().lower()
            # Raw, and decoded here within MAX_BODY: a small compressed answer may not unpack
            # into gigabytes.
            content = _bounded_body(request, response.iter_raw(), encoding, deadline)
        finally:
            response.close()
        kept = ("http_version", "reason_phrase")
        extensions: dict[str, Any] = {
            key: value for key, value in response.extensions.items() if key in kept
        }
        headers = [
            (name, value)
            for name, value in response.headers.multi_items()
            if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(
            response.status_code,
            headers=headers,
            content=content,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        self._blocking.close()


async def _in_request_thread(fn: Callable[[A], R], arg: A) -> R:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[R] = loop.create_future()

    def deliver(outcome: tuple[bool, Any]) -> None:
        if answer.done():  # the caller was cancelled
            return
        ok, value = outcome
        if ok:
            answer.set_result(value)
        else:
            answer.set_exception(value)

    def run() -> None:
        try:
            outcome: tuple[bool, Any] = (True, fn(arg))
        except BaseException as exc:
            outcome = (False, exc)
        # A closed loop means nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deliver, outcome)

    _start_thread(run, "xero-tui http")
    return await answer


_running: set[threading.Thread] = set()


def _start_thread(target: Callable[[], None], name: str) -> None:
    def run() -> None:
        try:
            target()
        finally:
            _running.discard(thread)

    thread = threading.Thread(target=run, name=name, daemon=True)
    _running.add(thread)
    thread.start()


@atexit.register
def _let_threads_finish() -> None:
    """At exit, wait (up to EXIT_WAIT) for requests whose callers are gone and for a TLS context
    being built: OpenSSL frees its state as the process exits, and a thread still working inside
    it then would crash the exit. A request stuck on the network sits in the kernel, harmlessly,
    and is not waited for beyond that."""
    deadline = time.monotonic() + EXIT_WAIT
    for thread in list(_running):
        thread.join(max(0.0, deadline - time.monotonic()))


def new_client(settings: HttpSettings | None = None) -> httpx.AsyncClient:
    settings = settings or HttpSettings.from_env()
    context = tls_context()
    return httpx.AsyncClient(
        timeout=settings.httpx_timeout(),
        verify=context,
        follow_redirects=False,
        headers={
            "User-Agent": "xero-tui",
            "Accept": "application/json",
            # Only what the transport decodes within MAX_BODY itself.
            "Accept-Encoding": ACCEPT_ENCODING,
        },
        transport=ThreadedTransport(context, settings.timeout),
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    settings: HttpSettings,
    **kwargs: Any,
) -> httpx.Response:
    """Send with bounded retries; return any response that is not a 429 or retryable 5xx.

    A dropped connection is retried with the very same request: for a refresh that is what Xero's
    30-minute grace for the previous refresh token is for.
    """
    attempt = 0
    while True:
        try:
            response = await client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            if attempt >= settings.retries and isinstance(exc, DeadlineExceeded):
                raise NetworkError(
                    f"{_host(url)} did not finish answering within {settings.timeout:g} s "
                    f"({attempt + 1} tries); try again later, or raise XERO_TUI_HTTP_TIMEOUT "
                    "on a slow link."
                ) from None
            if attempt >= settings.retries:
                reason = type(exc).__name__
                raise NetworkError(
                    f"Could not reach {_host(url)} ({reason}) after {attempt + 1} tries. "
                    "Check the network connection and try again."
                ) from None
        else:
            if response.status_code == 429:
                retry_after = _retry_after(response)
                problem = response.headers.get("X-Rate-Limit-Problem")
                wait = retry_after if retry_after is not None else settings.backoff * 2**attempt
                if attempt >= settings.retries or wait > settings.max_retry_after:
                    limit = f"{problem} " if problem else ""
                    when = f"in {retry_after:.0f} s" if retry_after is not None else "later"
                    raise RateLimited(
                        f"Xero's {limit}rate limit was reached; try again {when}.",
                        retry_after,
                        problem,
                    )
                attempt += 1
                await asyncio.sleep(wait)
                continue
            if response.status_code not in RETRY_STATUSES:
                return response
            if attempt >= settings.retries:
                raise ServerError(
                    f"Xero answered {response.status_code} from {_host(url)} after "
                    f"{attempt + 1} tries; it may be down. Try again in a few minutes.",
                    response.status_code,
                )
        delay = settings.backoff * 2**attempt
        attempt += 1
        await asyncio.sleep(delay * (0.5 + random.random() / 2))
