"""Access tokens for saved connections: the stored one while fresh, else a single-flight refresh.

A refresh holds the grant's lock across processes, reads the stored tokens again inside it (a
refresh another process just made is used, not repeated), and stores the rotated refresh token
(read back) before the access token is handed out. This module is the whole of a cached
`token`'s path, so it imports neither asyncio nor httpx until a refresh needs them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from xero_tui.core.config import Config
from xero_tui.core.context import Context, in_thread, now_utc, settle
from xero_tui.core.errors import (
    NeedsReconnect,
    StorageError,
    TokenNotStored,
    XeroTuiError,
    clean_text,
)
from xero_tui.core.models import Connection, Grant, Kind, Status, TokenSet
from xero_tui.core.secrets import encode_tokens

if TYPE_CHECKING:
    from xero_tui.core.context import GrantLock

# A refresh rewrites config.toml (under its lock, with two fsyncs) only when it changes a status
# or moves a recorded refresh time by at least this much: a script that refreshes every half hour
# need not rewrite it each time. The recorded time is what `status` measures the refresh token's
# age from (in tenths of a day, against Xero's 60 days); it may lag by less than this, never lead.
REFRESH_RECORD_STEP = timedelta(hours=1)
# Waits before each retry of storing a rotated token, and how long Xero still takes the old one.
STORE_RETRY_WAITS = (0.2, 0.5, 1.0)
STORE_RETRY_BUDGET = 3.0
XERO_GRACE = timedelta(minutes=30)


def cached_token(ctx: Context, name: str) -> tuple[Connection, TokenSet] | None:
    """The stored access token while it is fresh, read without an event loop; else None.

    `token` asks this first: the common case then costs one config read and one keyring read.
    None means `access_token` has to decide (refresh, or report what is wrong).
    """
    config = ctx.load()
    conn = ctx.connection(name, config)
    if conn.grant_id not in config.grants:
        return None
    ctx.secrets_for(config)
    tokens = _stored_tokens(ctx, conn)
    return (conn, tokens) if tokens.is_fresh() else None


async def access_token(
    ctx: Context, name: str, *, force: bool = False, refused: str | None = None
) -> tuple[Connection, TokenSet]:
    """A valid access token for a connection, refreshing (single-flight) when needed.

    `force` refreshes whatever the expiry; `refused` names an access token Xero has just
    rejected: a refresh then happens unless another caller's already replaced that token.
    """
    # Nearly every call ends in a request to Xero (a refresh, or the caller's own): start on
    # its TLS context now, so that it overlaps with the config, the keyring and the lock.
    from xero_tui.core.http import start_tls_context

    start_tls_context()
    config, conn, grant = await in_thread(_grant_of, ctx, name)
    tokens = await _refresh_if_needed(ctx, config, conn, grant, force, refused)
    return conn, tokens


def _grant_of(ctx: Context, name: str) -> tuple[Config, Connection, Grant]:
    """Blocking. The config, the connection and its grant, with the secret store opened."""
    config = ctx.load()
    conn = ctx.connection(name, config)
    grant = config.grants.get(conn.grant_id)
    if grant is None:
        raise NeedsReconnect(
            f"{ctx.paths.config_file} has no grant {conn.grant_id!r} for {name!r}; reconnect it.",
            "missing_grant",
        )
    ctx.secrets_for(config)
    return config, conn, grant


def _stored_tokens(ctx: Context, conn: Connection) -> TokenSet:
    tokens = ctx.secrets.get_tokens(conn.grant_id)
    if tokens is None:
        raise tokens_missing(ctx, conn)
    return tokens


def tokens_missing(ctx: Context, conn: Connection) -> StorageError:
    return StorageError(
        f"The tokens for {conn.name!r} are missing from {ctx.secrets.description}; "
        f"reconnect it (xero-tui connect {conn.name!r} ... or r in the app)."
    )


def client_secret_missing(ctx: Context, conn: Connection) -> StorageError:
    return StorageError(
        f"The client secret for {conn.name!r} is missing from {ctx.secrets.description}; "
        "save the connection again with its secret."
    )


async def _refresh_if_needed(
    ctx: Context,
    config: Config,
    conn: Connection,
    grant: Grant,
    force: bool,
    refused: str | None = None,
) -> TokenSet:
    # Everything before the network in one worker thread: each hand-off to a thread and back
    # costs context switches, which add up on a busy machine.
    stored, locked = await in_thread(_lock_for_refresh, ctx, conn, grant, force, refused)
    if locked is None:
        return stored
    lock, secret = locked

    async def renew() -> TokenSet:
        try:
            try:
                fresh = await _refresh(ctx, conn, grant, stored, secret)
            except NeedsReconnect:
                await in_thread(mark, ctx, grant.grant_id, Status.NEEDS_RECONNECT)
                raise
            await _store_rotated(ctx, conn, lock, grant.grant_id, stored, fresh)
            return fresh
        finally:
            lock.release()

    # Once the request is sent Xero may rotate the token: a caller that gives up (Esc on a
    # test, a replaced worker, Ctrl-C) must not drop the new one, so refresh and store finish
    # before the cancellation goes on.
    fresh = await settle(renew())
    stamp = now_utc()
    if not _refresh_recorded(config, grant.grant_id, stamp):
        await in_thread(mark, ctx, grant.grant_id, Status.OK, stamp)
    return fresh


def _lock_for_refresh(
    ctx: Context, conn: Connection, grant: Grant, force: bool, refused: str | None = None
) -> tuple[TokenSet, tuple[GrantLock, str | None] | None]:
    """Blocking. The stored tokens, and the held grant lock (with the client secret) when they
    have to be renewed; without a lock, the stored tokens are the answer."""
    seen = _stored_tokens(ctx, conn)
    if refused is not None:
        if seen.access_token != refused and seen.is_fresh():
            return seen, None
        force = True
    if not force and seen.is_fresh() and grant.grant_id not in ctx.unstored:
        return seen, None
    lock = ctx.acquire_grant_lock(grant.grant_id, lambda: repr(conn.name))
    try:
        # Read again under the lock, with the secret the refresh needs in the same call.
        client_id = grant.client_id if grant.kind.has_secret else None
        current, secret = ctx.secrets.get_tokens_and_secret(grant.grant_id, client_id)
        if current is None:
            raise tokens_missing(ctx, conn)
        current = _store_unstored(ctx, grant.grant_id, current)
        # Another process refreshed while we waited: its token is as good as ours would be.
        rotated = current.access_token != seen.access_token
        if current.is_fresh() and (rotated or not force):
            lock.release()
            return current, None
        if grant.kind.has_secret and secret is None:
            raise client_secret_missing(ctx, conn)
    except BaseException:
        lock.release()
        raise
    return current, (lock, secret)


async def _store_rotated(
    ctx: Context,
    conn: Connection,
    lock: GrantLock,
    grant_id: str,
    replaced: TokenSet,
    fresh: TokenSet,
) -> None:
    """Store what a refresh rotated in, through the lock held for it, retrying a failing store
    (a full disk, a busy keyring, a database that went away).

    Xero has already replaced the token, but still accepts the stored one for 30 minutes. So a
    store that keeps failing leaves the new token in memory, for the next refresh in this
    process to store first, and says by when a write has to succeed.
    """
    import asyncio
    import time

    started = time.monotonic()
    problem: StorageError | None = None
    for wait in (0.0, *STORE_RETRY_WAITS):
        if time.monotonic() + wait - started > STORE_RETRY_BUDGET:
            # A store that hangs until its own timeout is not asked again and again.
            break
        await asyncio.sleep(wait)
        try:
            await in_thread(lock.store_tokens, fresh, replaced)
        except StorageError as exc:
            problem = exc
            continue
        ctx.unstored.pop(grant_id, None)
        return
    assert problem is not None
    ctx.unstored[grant_id] = (replaced, fresh)
    until = (now_utc() + XERO_GRACE).astimezone().strftime("%H:%M")
    reason = clean_text(str(problem), 300).rstrip(".")
    raise TokenNotStored(
        f"Xero replaced the refresh token of {conn.name!r}, but it could not be stored "
        f"({reason}). The stored one keeps working until about {until} (Xero's 30-minute "
        f"grace): fix the storage, then run `xero-tui token {conn.name}` before then."
    )


def _store_unstored(ctx: Context, grant_id: str, current: TokenSet) -> TokenSet:
    """Blocking, under the grant lock. A rotated token this process could not store, stored
    now, if the store still holds the one it replaced; else the store's own."""
    held = ctx.unstored.get(grant_id)
    if held is None:
        return current
    replaced, fresh = held
    if encode_tokens(current) != encode_tokens(replaced):  # as stored: no id token
        # Another process has refreshed since (with the old token, within Xero's grace).
        ctx.unstored.pop(grant_id, None)
        return current
    ctx.secrets.put_tokens(grant_id, fresh)
    ctx.unstored.pop(grant_id, None)
    return fresh


async def _refresh(
    ctx: Context, conn: Connection, grant: Grant, current: TokenSet, secret: str | None
) -> TokenSet:
    async with ctx.client() as xero:
        if grant.kind is Kind.CUSTOM:
            assert secret is not None
            return await xero.client_credentials(grant.client_id, secret, grant.scopes)
        if current.refresh_token is None:
            raise NeedsReconnect(
                f"No refresh token is stored for {conn.name!r}; reconnect it.", "invalid_grant"
            )
        return await xero.refresh(grant.client_id, secret, current.refresh_token)


def mark(ctx: Context, grant_id: str, status: Status, refreshed: datetime | None = None) -> None:
    """Blocking. Record a refresh (or its failure) on the grant and every connection on it."""

    def change(config: Config) -> None:
        grant = config.grants.get(grant_id)
        if grant is not None and refreshed is not None:
            grant.last_refreshed = refreshed
        for conn in config.connections.values():
            if conn.grant_id == grant_id:
                conn.status = status
                if refreshed is not None:
                    conn.last_refreshed = refreshed

    try:
        ctx.store.update(change)
    except XeroTuiError:
        # The tokens are already stored; a config that cannot be written only loses the date.
        if status is Status.NEEDS_RECONNECT:
            raise


def mark_one(ctx: Context, name: str, status: Status) -> None:
    """Blocking. Record what Xero said about one connection's organisation."""

    def change(config: Config) -> None:
        if name in config.connections:
            config.connections[name].status = status

    ctx.store.update(change)


def _refresh_recorded(config: Config, grant_id: str, stamp: datetime) -> bool:
    """Whether `config` already says what a refresh at `stamp` would record for the grant: every
    connection on it OK, and each refresh time within REFRESH_RECORD_STEP of `stamp`.

    `config` was read before the refresh. A status another process set since then (an
    organisation found disconnected) is not one a refresh could clear.
    """
    grant = config.grants.get(grant_id)
    moments = [grant.last_refreshed if grant is not None else None]
    for conn in config.connections.values():
        if conn.grant_id == grant_id:
            if conn.status is not Status.OK:
                return False
            moments.append(conn.last_refreshed)
    return all(m is not None and abs(stamp - m) < REFRESH_RECORD_STEP for m in moments)
