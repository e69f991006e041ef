"""Keep unattended connections alive: a refresh token unused for 60 days dies at Xero.

`keep_alive` refreshes each grant whose last refresh is older than a given number of days, one
grant at a time (Xero's rate limits are per organisation and per app, and the HTTP layer waits
out a short Retry-After), through the usual single-flight refresh, and says what happened to
every connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from xero_tui.core import tokens
from xero_tui.core.config import Config
from xero_tui.core.context import Context, in_thread, now_utc
from xero_tui.core.errors import EXIT_NEEDS_RECONNECT, XeroTuiError, clean_text
from xero_tui.core.models import Connection, Kind

DEFAULT_OLDER_THAN_DAYS = 30


@dataclass(frozen=True)
class Kept:
    """What keeping one connection alive did; `line` says it for a person or a log."""

    connection: str
    outcome: str  # "refreshed", "not due", "skipped" or "failed"
    line: str
    needs_reconnect: bool = False


def _last_refreshed(config: Config, conn: Connection) -> datetime:
    grant = config.grants.get(conn.grant_id)
    moments = [conn.last_refreshed, grant.last_refreshed if grant else None]
    known = [m for m in moments if m is not None]
    return max(known) if known else conn.created


async def keep_alive(ctx: Context, older_than_days: float = DEFAULT_OLDER_THAN_DAYS) -> list[Kept]:
    """Refresh every grant last refreshed more than `older_than_days` ago; one `Kept` for each
    saved connection, in name order."""
    config = await in_thread(ctx.load)
    limit = now_utc() - timedelta(days=older_than_days)
    by_grant: dict[str, list[Connection]] = {}
    for conn in sorted(config.connections.values(), key=lambda c: c.name.casefold()):
        by_grant.setdefault(conn.grant_id, []).append(conn)
    results: dict[str, Kept] = {}
    for conns in by_grant.values():
        first = conns[0]
        last = _last_refreshed(config, first)
        age = (now_utc() - last).total_seconds() / 86400
        if first.kind is Kind.CUSTOM:
            for conn in conns:
                line = f"{conn.name}: skipped, a custom connection has no refresh token to keep"
                results[conn.name] = Kept(conn.name, "skipped", line)
            continue
        if last > limit:
            for conn in conns:
                line = f"{conn.name}: not due, refreshed {age:.0f} days ago"
                results[conn.name] = Kept(conn.name, "not due", line)
            continue
        try:
            await tokens.access_token(ctx, first.name, force=True)
        except XeroTuiError as exc:
            why = clean_text(str(exc), 300)
            stale = exc.exit_code == EXIT_NEEDS_RECONNECT
            for conn in conns:
                results[conn.name] = Kept(conn.name, "failed", f"{conn.name}: {why}", stale)
            continue
        for conn in conns:
            line = f"{conn.name}: refreshed (it was {age:.0f} days since the last refresh)"
            results[conn.name] = Kept(conn.name, "refreshed", line)
    return [results[name] for name in sorted(results, key=str.casefold)]
