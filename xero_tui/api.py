"""For sync jobs written in Python: a valid access token for a saved connection, or an
`httpx.Auth` that keeps one on every request.

    from xero_tui import api

    token = api.access_token("Acme sync")        # refreshed under the usual lock when needed
    with httpx.Client(auth=api.XeroAuth("Acme sync")) as client:
        client.get("https://api.xero.com/api.xro/2.0/Organisation")

Both use the connections, secret store and single-flight refresh of the `xero-tui` command (the
same config folder, `XERO_TUI_CONFIG_DIR` included). Neither imports Textual. A fresh access
token is kept in memory until a minute before it expires, so asking again costs nothing; the
refresh token is never handed out.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass, field

import httpx

from xero_tui.core import tokens
from xero_tui.core.context import Context
from xero_tui.core.models import ACCESS_TOKEN_MARGIN, TokenSet

__all__ = ["Token", "XeroAuth", "access_token", "access_token_async"]


@dataclass(frozen=True)
class Token:
    """An access token for one connection's organisation; `expires_at` is seconds since the
    epoch. Its repr leaves the token out."""

    access_token: str = field(repr=False)
    tenant_id: str
    expires_at: float

    def is_fresh(self) -> bool:
        return TokenSet(self.access_token, self.expires_at).is_fresh(ACCESS_TOKEN_MARGIN)


# Fresh tokens by (config folder, connection name), shared by the threads of this process.
_kept: dict[tuple[str, str], Token] = {}
_kept_lock = threading.Lock()


_told: set[str] = set()


def _context() -> Context:
    """This call's context; overridden Xero endpoints are said once per process, as a warning
    (the command line and the screens say it on every run)."""
    ctx = Context()
    notice = ctx.endpoints.override_notice()
    if notice is not None and notice not in _told:
        _told.add(notice)
        import warnings

        warnings.warn(f"xero-tui: {notice}", UserWarning, stacklevel=3)
    return ctx


def _key(ctx: Context, name: str) -> tuple[str, str]:
    return str(ctx.paths.config_dir), name


def _token(tenant_id: str, found: TokenSet) -> Token:
    return Token(found.access_token, tenant_id, found.expires_at)


def _remember(ctx: Context, name: str, token: Token) -> Token:
    with _kept_lock:
        _kept[_key(ctx, name)] = token
    return token


def _remembered(ctx: Context, name: str, stale: str | None) -> Token | None:
    with _kept_lock:
        token = _kept.get(_key(ctx, name))
    if token is None or not token.is_fresh() or token.access_token == stale:
        return None
    return token


async def access_token_async(name: str, *, force: bool = False, stale: str | None = None) -> Token:
    """`access_token`, for code already on an event loop."""
    ctx = _context()
    if not force:
        kept = _remembered(ctx, name, stale)
        if kept is not None:
            return kept
    conn, found = await tokens.access_token(ctx, name, force=force, refused=stale)
    return _remember(ctx, name, _token(conn.tenant_id, found))


def access_token(name: str, *, force: bool = False, stale: str | None = None) -> Token:
    """A valid access token for the saved connection `name`, refreshed when needed.

    `force` refreshes whatever the stored token's expiry; `stale` names an access token Xero
    has just refused (a 401), which is then not handed out again. Raises the core's errors
    (`XeroTuiError` and its kinds: `NeedsReconnect`, `StorageError`, ...), each a sentence.
    """
    ctx = _context()
    if not force:
        kept = _remembered(ctx, name, stale)
        if kept is not None:
            return kept
    if not force and stale is None:
        # Without an event loop: the stored token, while fresh. A refused one is the core's.
        cached = tokens.cached_token(ctx, name)
        if cached is not None:
            conn, found = cached
            return _remember(ctx, name, _token(conn.tenant_id, found))
    work = access_token_async(name, force=force, stale=stale)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    # Called from a thread that runs an event loop: the refresh runs on a loop of its own.
    answer: list[Token] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            answer.append(asyncio.run(work))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="xero-tui api")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return answer[0]


class XeroAuth(httpx.Auth):
    """Sets `Authorization` and `xero-tenant-id` from the saved connection `name`; when Xero
    refuses the access token (401), refreshes once and sends the request again. One instance
    may be shared by threads and asyncio tasks: refreshes are single-flight across processes."""

    requires_response_body = False

    def __init__(self, name: str) -> None:
        self.name = name

    @staticmethod
    def _sign(request: httpx.Request, token: Token) -> None:
        request.headers["Authorization"] = f"Bearer {token.access_token}"
        request.headers["xero-tenant-id"] = token.tenant_id

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        token = access_token(self.name)
        self._sign(request, token)
        response = yield request
        if response.status_code == 401:
            self._sign(request, access_token(self.name, stale=token.access_token))
            yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await access_token_async(self.name)
        self._sign(request, token)
        response = yield request
        if response.status_code == 401:
            self._sign(request, await access_token_async(self.name, stale=token.access_token))
            yield request
