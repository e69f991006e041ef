"""How saved connections are doing: health from the config and the secret store, and the test
that reaches Xero end to end."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, TypeVar

from xero_tui.core import tokens
from xero_tui.core.config import Config
from xero_tui.core.context import Context, in_thread
from xero_tui.core.errors import TenantNotConnected, TokenRejected
from xero_tui.core.models import (
    REFRESH_TOKEN_LIFETIME_DAYS,
    REFRESH_TOKEN_WARN_DAYS,
    Connection,
    Kind,
    Organisation,
    Status,
    Tenant,
    TokenSet,
)

if TYPE_CHECKING:
    from xero_tui.core.xero import XeroClient

T = TypeVar("T")
NOT_CONNECTED = "organisation no longer connected"
Severity = Literal["ok", "warning", "error"]


@dataclass(frozen=True)
class TestResult:
    connection: Connection
    organisation: Organisation
    expires_at: float


@dataclass(frozen=True)
class Health:
    """What `status` and the home screen show for one connection."""

    connection: Connection
    storage: str
    access_expires_at: float | None
    refresh_age_days: float | None
    # The grant's tokens are not in the secret store: only a reconnect brings new ones.
    secret_missing: bool = False
    # The app's client secret is not in the secret store: it has to be entered again.
    client_secret_missing: bool = False
    # What asking Xero found: False when the organisation is no longer connected, a sentence
    # when Xero could not be asked, None when nobody asked.
    connected: bool | str | None = None

    def checked(self, connected: bool | str) -> Health:
        return replace(self, connected=connected)

    @property
    def refresh_days_left(self) -> float | None:
        if self.refresh_age_days is None:
            return None
        return REFRESH_TOKEN_LIFETIME_DAYS - self.refresh_age_days

    @property
    def stale(self) -> bool:
        """The refresh token nears Xero's 60 days unused."""
        age = self.refresh_age_days
        return age is not None and age > REFRESH_TOKEN_WARN_DAYS

    @property
    def needs_reconnect(self) -> bool:
        return (
            self.secret_missing
            or self.connection.status is Status.NEEDS_RECONNECT
            or self.connected is False
        )

    @property
    def label(self) -> str:
        if self.secret_missing:
            return "tokens missing: reconnect"
        if self.connection.status is Status.NEEDS_RECONNECT:
            return "needs reconnect"
        if self.connected is False:
            return NOT_CONNECTED
        if isinstance(self.connected, str):
            return self.connected
        if self.client_secret_missing:
            return "client secret missing: enter it again"
        if self.stale:
            return f"refresh token unused {self.refresh_age_days:.0f} days"
        return "ok"

    @property
    def severity(self) -> Severity:
        if self.needs_reconnect or self.client_secret_missing or isinstance(self.connected, str):
            return "error"
        return "warning" if self.stale else "ok"


def health(
    ctx: Context,
    names: Iterable[str] | None = None,
    *,
    read_secrets: bool = True,
    config: Config | None = None,
) -> list[Health]:
    """Each connection's health; without `read_secrets`, from the config alone (no keyring
    call), so a missing secret does not show yet. `config`, when the caller has just read it."""
    config = config or ctx.load()
    wanted = list(names) if names is not None else sorted(config.connections)
    out = []
    now = time.time()
    conns = [ctx.connection(name, config) for name in wanted]
    grant_ids = list(dict.fromkeys(c.grant_id for c in conns))
    client_ids = list(dict.fromkeys(c.client_id for c in conns if c.kind.has_secret))
    stored: dict[str, TokenSet | None] = {}
    secrets: dict[str, str | None] = {}
    if read_secrets:
        store = ctx.secrets_for(config)
        storage = store.description
        # One read per grant and per app, not per connection (a consent often covers many),
        # all in one call.
        stored, secrets = store.get_tokens_and_secrets(grant_ids, client_ids)
    else:
        storage = ctx.storage_summary(config)
    for conn in conns:
        grant = config.grants.get(conn.grant_id)
        found = stored.get(conn.grant_id)
        refreshed = conn.last_refreshed or (grant.last_refreshed if grant else None)
        refreshed = refreshed or conn.created
        age = None
        if conn.kind is not Kind.CUSTOM:
            age = max(0.0, (now - refreshed.timestamp()) / 86400)
        out.append(
            Health(
                connection=conn,
                storage=storage,
                access_expires_at=found.expires_at if found else None,
                refresh_age_days=age,
                secret_missing=read_secrets and found is None,
                client_secret_missing=read_secrets
                and conn.kind.has_secret
                and secrets.get(conn.client_id) is None,
            )
        )
    return out


async def with_token(
    ctx: Context, name: str, call: Callable[[XeroClient, Connection, TokenSet], Awaitable[T]]
) -> tuple[Connection, TokenSet, T]:
    """Run one API call with a valid token; refresh once if Xero rejects a cached one."""
    conn, found = await tokens.access_token(ctx, name)
    async with ctx.client() as xero:
        try:
            return conn, found, await call(xero, conn, found)
        except TokenRejected:
            # A cached access token can outlive its grant (the app was removed at Xero): a
            # refresh then either renews it or says the connection needs reconnecting.
            conn, found = await tokens.access_token(ctx, name, refused=found.access_token)
            return conn, found, await call(xero, conn, found)


async def test(ctx: Context, name: str) -> TestResult:
    """Refresh if needed and read the organisation: the connection works end to end."""

    async def organisation(xero: XeroClient, conn: Connection, found: TokenSet) -> Organisation:
        tenant = None if conn.kind is Kind.CUSTOM else conn.tenant_id
        return await xero.organisation(found.access_token, tenant)

    try:
        conn, found, org = await with_token(ctx, name, organisation)
    except TenantNotConnected:
        await in_thread(tokens.mark_one, ctx, name, Status.NEEDS_RECONNECT)
        raise
    return TestResult(conn, org, found.expires_at)


async def still_connected(ctx: Context, name: str) -> bool:
    """Whether Xero still lists this connection's organisation for its grant."""

    async def listed(xero: XeroClient, conn: Connection, found: TokenSet) -> list[Tenant]:
        return await xero.connections(found.access_token)

    conn, _, tenants = await with_token(ctx, name, listed)
    return any(t.tenant_id == conn.tenant_id for t in tenants)
