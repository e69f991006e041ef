"""Hand a connection over to another tool: its client ID, secret, refresh token and tenant.

A rotating refresh token can have only one keeper: whichever copy refreshes first breaks the
other. So by default the hand-over forgets the grant here (its connections, tokens and a client
secret nothing else uses), under the grant's refresh lock, so that no refresh of ours can rotate
the token between the read and the forgetting. A copy that keeps it here too is possible, and
said to be a risk.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from xero_tui.core.config import Config
from xero_tui.core.context import Context, app_in_use
from xero_tui.core.errors import UsageError
from xero_tui.core.models import Kind
from xero_tui.core.removal import drop_unused_grants
from xero_tui.core.tokens import client_secret_missing, tokens_missing

FORMATS = ("env", "json", "tap-xero")


@dataclass(frozen=True)
class Export:
    """What another tool needs to go on with a connection. Its repr leaves the secrets out."""

    name: str
    kind: Kind
    client_id: str
    client_secret: str | None
    refresh_token: str | None
    tenant_id: str
    tenant_name: str
    created: datetime
    # The connections forgotten here because they shared the handed-over grant.
    forgotten: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"Export(name={self.name!r}, client_id={self.client_id!r}, forgotten={self.forgotten!r})"

    def render(self, fmt: str) -> str:
        """The text for `fmt`: shell-quoted env lines, JSON, or tap-xero's config.json."""
        fields = {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "refresh_token": self.refresh_token,
            "tenant_id": self.tenant_id,
        }
        if fmt == "env":
            return "".join(
                f"XERO_{key.upper()}={shlex.quote(value)}\n"
                for key, value in fields.items()
                if value is not None
            )
        if fmt == "json":
            return json.dumps({**fields, "tenant_name": self.tenant_name}, indent=2) + "\n"
        if fmt == "tap-xero":
            start = self.created.date().isoformat() + "T00:00:00Z"
            tap = {**fields, "start_date": start, "user_agent": "xero-tui export"}
            return json.dumps(tap, indent=2) + "\n"
        raise UsageError(f"Unknown format {fmt!r}: use one of {', '.join(FORMATS)}.")


def export(ctx: Context, name: str, deliver: Callable[[Export], None], *, keep: bool) -> Export:
    """Blocking. Hand the connection `name` to `deliver` (which writes it where it goes) and
    then, unless `keep`, forget its grant here; a `deliver` that fails forgets nothing. A
    custom connection has no rotating token, so it always stays."""
    config = ctx.load()
    conn = ctx.connection(name, config)
    with ctx.grant_locks([conn.grant_id], config):
        client_id = conn.client_id if conn.kind.has_secret else None
        stored, secret = ctx.secrets_for(config).get_tokens_and_secret(conn.grant_id, client_id)
        if stored is None:
            raise tokens_missing(ctx, conn)
        if conn.kind.has_secret and secret is None:
            raise client_secret_missing(ctx, conn)
        handed = Export(
            name=name,
            kind=conn.kind,
            client_id=conn.client_id,
            client_secret=secret,
            refresh_token=stored.refresh_token,
            tenant_id=conn.tenant_id,
            tenant_name=conn.tenant_name,
            created=conn.created,
        )
        deliver(handed)
        if keep or conn.kind is Kind.CUSTOM:
            return handed
        forgotten = _forget_grant(ctx, conn.grant_id, conn.client_id)
    return replace(handed, forgotten=tuple(forgotten))


def _forget_grant(ctx: Context, grant_id: str, client_id: str) -> list[str]:
    """Blocking, under the grant lock: drop every connection on the grant, then its secrets."""
    names: list[str] = []

    def change(config: Config) -> Config:
        for conn in list(config.connections.values()):
            if conn.grant_id == grant_id:
                names.append(conn.name)
                del config.connections[conn.name]
        drop_unused_grants(config)
        return config

    remaining = ctx.store.update(change)
    secrets = ctx.secrets_for(remaining)
    secrets.delete_tokens(grant_id)
    if not app_in_use(remaining, client_id):
        secrets.delete_client_secret(client_id)
    return sorted(names, key=str.casefold)
