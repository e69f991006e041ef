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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from xero_tui.core.errors import NetworkError, RateLimited, ServerError, UsageError

RETRY_STATUSES = frozenset({500, 502, 503, 504})
# How long exit waits for this module's threads (see _let_threads_finish): ample for a thread
# inside OpenSSL to leave it, short enough that Ctrl-C during a request still ends at once.
EXIT_WAIT = 0.5
A = TypeVar("A")
R = TypeVar("R")


@dataclass(frozen=True)
class HttpSettings:
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


class ThreadedTransport(httpx.AsyncBaseTransport):
    """httpx's blocking transport, each request run to the end in a daemon thread.

    httpx's own async transport runs on anyio, whose asyncio backend (imported on the first
    request) and machinery cost a `token --force-refresh` about a tenth of its CPU time. Xero
    gets a few small requests at a time, so a thread each costs next to nothing. The blocking
    transport applies the same timeouts and TLS verification. A request whose caller was
    cancelled runs on, at most until its own timeout, and its answer is dropped; exit waits for
    it only briefly (see _let_threads_finish).
    """

    def __init__(self, verify: ssl.SSLContext) -> None:
        self._blocking = httpx.HTTPTransport(verify=verify)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await _in_request_thread(self._fetch, request)

    def _fetch(self, request: httpx.Request) -> httpx.Response:
        response = self._blocking.handle_request(request)
        try:
            # Raw: the body is decoded (gzip...) once, by the response handed back.
            content = b"".join(response.iter_raw())
        finally:
            response.close()
        kept = ("http_version", "reason_phrase")
        extensions: dict[str, Any] = {
            key: value for key, value in response.extensions.items() if key in kept
        }
        return httpx.Response(
            response.status_code,
            headers=response.headers,
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
        headers={"User-Agent": "xero-tui", "Accept": "application/json"},
        transport=ThreadedTransport(context),
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
