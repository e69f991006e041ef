"""Every HTTP call to Xero goes through here: explicit timeouts, bounded retries, typed errors."""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from xero_tui.core.errors import NetworkError, RateLimited, ServerError

RETRY_STATUSES = frozenset({500, 502, 503, 504})


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
        """XERO_TUI_HTTP_TIMEOUT / XERO_TUI_HTTP_RETRIES let slow links (and tests) tune the bounds."""
        settings = cls()
        timeout = os.environ.get("XERO_TUI_HTTP_TIMEOUT")
        retries = os.environ.get("XERO_TUI_HTTP_RETRIES")
        backoff = os.environ.get("XERO_TUI_HTTP_BACKOFF")
        return cls(
            timeout=float(timeout) if timeout else settings.timeout,
            connect_timeout=min(float(timeout), settings.connect_timeout)
            if timeout
            else settings.connect_timeout,
            retries=int(retries) if retries else settings.retries,
            backoff=float(backoff) if backoff else settings.backoff,
        )

    def httpx_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, connect=self.connect_timeout)


def new_client(settings: HttpSettings | None = None) -> httpx.AsyncClient:
    settings = settings or HttpSettings.from_env()
    return httpx.AsyncClient(
        timeout=settings.httpx_timeout(),
        verify=True,
        follow_redirects=False,
        headers={"User-Agent": "xero-tui", "Accept": "application/json"},
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
