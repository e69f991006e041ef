"""Removing a saved connection, and what it asks of Xero on the way out."""

from __future__ import annotations

from dataclasses import dataclass

from xero_tui.core import tokens
from xero_tui.core.config import Config
from xero_tui.core.context import Context, app_in_use, in_thread
from xero_tui.core.errors import (
    EXIT_NEEDS_RECONNECT,
    NeedsReconnect,
    XeroTuiError,
    clean_text,
    sentence,
)
from xero_tui.core.models import Connection, Status


@dataclass(frozen=True)
class Removal:
    """What removing a connection did, and what it was asked to do at Xero but could not."""

    name: str
    done: tuple[str, ...] = ()
    not_done: tuple[str, ...] = ()
    # Something asked for was skipped because the grant no longer works.
    needs_reconnect: bool = False

    @property
    def done_text(self) -> str:
        return f"Removed {self.name!r}" + (": " + "; ".join(self.done) + "." if self.done else ".")

    @property
    def summary(self) -> str:
        return " ".join([self.done_text, *(sentence(n) for n in self.not_done)])


async def removal(
    ctx: Context, name: str, *, disconnect: bool = False, revoke: bool = False
) -> Removal:
    """Delete a saved connection; optionally disconnect its organisation and revoke the grant.

    Revoking happens only when no other saved connection shares the grant (revoking would
    break them too). What was asked for at Xero and could not be done is said, not skipped.
    """
    config = await in_thread(ctx.load)
    conn = ctx.connection(name, config)
    sharing = [
        c.name for c in config.connections.values() if c.grant_id == conn.grant_id and c is not conn
    ]
    revoking = revoke and not sharing
    done: list[str] = []
    not_done: list[str] = []
    stale = False
    if (disconnect or revoking) and conn.status is Status.NEEDS_RECONNECT:
        stale = True
        not_done += _not_reached(
            conn, disconnect, revoking, f"{name!r} needs reconnecting, so no token reaches Xero"
        )
    elif disconnect or revoking:
        # Each step is taken off as it is done: a failure names only what is left.
        left = {"disconnect": disconnect, "revoke": revoking}
        try:
            not_done += await _disconnect_at_xero(ctx, conn, left, done)
        except NeedsReconnect:
            stale = True
            not_done += _not_reached(
                conn, left["disconnect"], False, "Xero no longer accepts the grant"
            )
            if left["revoke"]:
                done.append("the grant was already gone at Xero")
        except XeroTuiError as exc:
            # Xero unreachable, a token it refused, a secret store that would not answer:
            # the connection is removed here all the same, and what was missed is said.
            stale = exc.exit_code == EXIT_NEEDS_RECONNECT
            why = clean_text(str(exc), 300).rstrip(".")
            not_done += _not_reached(conn, left["disconnect"], left["revoke"], why)
    if revoke and sharing:
        done.append(f"the grant was kept for {', '.join(sorted(sharing))}")
    await in_thread(_forget, ctx, conn)
    return Removal(name, tuple(done), tuple(not_done), stale)


def _forget(ctx: Context, conn: Connection) -> None:
    """Blocking. Drop the connection, then the secrets nothing saved uses any more.

    Under the grant's refresh lock: a refresh finishing meanwhile would store its rotated token
    after the delete, leaving a live refresh token that nothing refers to.
    """
    orphans: list[str] = []

    def change(cfg: Config) -> Config:
        cfg.connections.pop(conn.name, None)
        orphans.extend(drop_unused_grants(cfg))
        return cfg

    with ctx.grant_locks([conn.grant_id], ctx.load()):
        remaining = ctx.store.update(change)
        secrets = ctx.secrets_for(remaining)
        for grant_id in orphans:
            secrets.delete_tokens(grant_id)
    if not app_in_use(remaining, conn.client_id):
        secrets.delete_client_secret(conn.client_id)


async def _disconnect_at_xero(
    ctx: Context, conn: Connection, left: dict[str, bool], done: list[str]
) -> list[str]:
    """Do the steps still True in `left` at Xero, setting each False and saying it in `done`
    once it is done; returns what could not be done (each a phrase)."""
    _, found = await tokens.access_token(ctx, conn.name)
    not_done: list[str] = []
    async with ctx.client() as xero:
        if left["disconnect"]:
            connection_id = conn.connection_id
            if not connection_id:
                # Saved without Xero's id for it: Xero's list for this grant has it.
                listed = await xero.connections(found.access_token)
                match = [t for t in listed if t.tenant_id == conn.tenant_id]
                connection_id = match[0].connection_id if match else None
            gone = False
            if connection_id:
                gone = await xero.delete_connection(found.access_token, connection_id)
            left["disconnect"] = False
            done.append(
                f"disconnected {conn.tenant_name} at Xero"
                if gone
                else f"{conn.tenant_name} was already disconnected at Xero"
            )
        if left["revoke"] and found.refresh_token:
            secret = None
            if conn.kind.has_secret:
                secret = await in_thread(ctx.secrets.get_client_secret, conn.client_id)
            await xero.revoke(conn.client_id, secret, found.refresh_token)
            left["revoke"] = False
            done.append("revoked the grant")
        elif left["revoke"]:
            left["revoke"] = False
            not_done.append(
                "the grant was not revoked: a custom connection has no refresh token to "
                "revoke; --disconnect (or removing the connection at Xero) ends its access"
            )
    return not_done


def _not_reached(conn: Connection, disconnect: bool, revoke: bool, why: str) -> list[str]:
    """What a removal could not do at Xero, and what the user can do instead."""
    out = []
    if disconnect:
        out.append(
            f"{conn.tenant_name} was not disconnected at Xero ({why}); if Xero still lists this "
            f"app for {conn.tenant_name}, disconnect it there (Settings, Connected apps)"
        )
    if revoke:
        out.append(
            f"the grant was not revoked ({why}); if it still works elsewhere, revoke it at Xero "
            "by disconnecting the app there"
        )
    return out


def drop_unused_grants(config: Config) -> list[str]:
    used = {c.grant_id for c in config.connections.values()}
    unused = [g for g in config.grants if g not in used]
    for grant_id in unused:
        del config.grants[grant_id]
    return unused
