"""Moving a host's connections into a shared store (`store push`) and back out (`store pull`).

Either way the copy is written, read back and compared before the source is deleted, while
every grant involved is locked at the source, so that no refresh rotates a token between the
read and the delete. A rotating refresh token may have one keeper only: a move, not a copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xero_tui.core.config import Config, records
from xero_tui.core.context import Context, quoted_names
from xero_tui.core.errors import StorageError, UsageError
from xero_tui.core.pgstore import StoreBusy, lock_records, upsert_secret, write_records
from xero_tui.core.secrets import grant_key, open_store
from xero_tui.core.storage import secret_keys
from xero_tui.core.storekey import KeyState, ensure_key

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True)
class Moved:
    """What a push or pull moved, and where to."""

    connections: int
    pending: int
    secrets: int
    where: str
    key: KeyState | None = None
    # Connections whose tokens were missing at the source: moved, but they need reconnecting.
    reconnect: tuple[str, ...] = ()

    def summary(self) -> str:
        def count(n: int, word: str) -> str:
            return f"{n} {word}{'' if n == 1 else 's'}"

        if not self.connections and not self.pending:
            return f"There were no connections to move; from now on they live in {self.where}."
        parts = [count(self.connections, "connection")]
        if self.pending:
            parts.append(count(self.pending, "unfinished sign-in"))
        parts.append(count(self.secrets, "secret"))
        text = (
            f"Moved {', '.join(parts)} to {self.where}, read them back, and only then removed "
            "them from where they were."
        )
        if self.reconnect:
            text += f" Reconnect {quoted_names(self.reconnect)}: its tokens were missing."
        return text


def _missing_tokens(config: Config, values: dict[str, str | None]) -> tuple[str, ...]:
    return tuple(
        sorted(
            name
            for name, conn in config.connections.items()
            if values.get(grant_key(conn.grant_id)) is None
        )
    )


def push(ctx: Context, url: str) -> Moved:
    """Blocking. Move this host's connections, sign-ins and secrets into the store at `url`,
    and make config.toml name it. A name the store already has is refused: nothing moves."""
    local = ctx.local.load()
    if local.store is not None and local.store != url:
        raise UsageError(
            f"{ctx.paths.config_file} already uses the store {ctx.shared(local.store)[0].description}: "
            "pull from it first (xero-tui store pull)."
        )
    address, db = ctx.shared(url)
    source = open_store(ctx.paths, local.secret_storage, insecure=ctx.insecure_storage)
    key = ensure_key(db, ctx.local_secrets())
    target = ctx.shared_secrets(url)
    grant_ids, keys = secret_keys(local)
    with ctx.grant_locks(grant_ids, local, source):
        values = source.get_many(keys)
        present = {k: v for k, v in values.items() if v is not None}
        rows = records(local)

        def write(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                taken = sorted(rows.keys() & lock_records(conn).keys())
                if taken:
                    names = [k for s, k in taken if s == "connections"] or [k for _, k in taken]
                    raise UsageError(
                        f"{address.description} already has {quoted_names(names)}: remove or "
                        "rename it on one side first; nothing was moved."
                    )
                write_records(conn, rows)
                fernet = target.writer(conn)
                for secret_key, value in present.items():
                    upsert_secret(conn, fernet, secret_key, value)

        try:
            db.run(write, "copy the connections to")
        except StoreBusy:
            raise StorageError(
                f"Another host kept the connections in {address.description} locked; nothing "
                "was moved. Try again."
            ) from None
        _check_copy(target.get_many(list(present)), present, address.description)
        shared = ctx.shared_records(url).load()
        if not rows.keys() <= records(shared).keys():
            raise StorageError(f"{address.description} did not keep every connection pushed.")

        def switch(config: Config) -> None:
            config.grants.clear()
            config.connections.clear()
            config.pending.clear()
            config.store = url

        ctx.local.update(switch)
        source.delete_many(keys)
    ctx.use_secrets(target)
    return Moved(
        len(local.connections),
        len(local.pending),
        len(present),
        address.description,
        key,
        _missing_tokens(local, values),
    )


def pull(ctx: Context) -> Moved:
    """Blocking. Move the shared store's connections, sign-ins and secrets to this host (its
    keyring, or its secrets file) and stop using the store. Other hosts lose them."""
    url = ctx.shared_url()
    if url is None:
        raise UsageError("No shared store is set: there is nothing to pull.")
    local = ctx.local.load()
    if local.connections or local.pending:
        raise UsageError(
            f"{ctx.paths.config_file} has connections of its own beside the store's; remove "
            "them first, so that none is overwritten."
        )
    db = ctx.shared(url)[1]
    shared_store = ctx.shared_records(url)
    shared = shared_store.load()
    source = ctx.shared_secrets(url)
    target = open_store(ctx.paths, local.secret_storage, insecure=ctx.insecure_storage)
    grant_ids, keys = secret_keys(shared)
    with ctx.grant_locks(grant_ids, shared, source):
        values = source.get_many(keys)
        present = {k: v for k, v in values.items() if v is not None}
        if present:
            target.put_many(present)
        _check_copy(target.get_many(list(present)), present, target.description)

        def adopt(config: Config) -> None:
            config.grants.update(shared.grants)
            config.connections.update(shared.connections)
            config.pending.update(shared.pending)
            config.store = None

        ctx.local.update(adopt)

        def forget(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                lock_records(conn)
                write_records(conn, {}, records(shared))
                conn.execute("DELETE FROM xero_tui.secrets WHERE key = ANY(%s)", (keys,))

        try:
            db.run(forget, "remove the moved connections from")
        except StorageError as exc:
            raise StorageError(
                f"{exc} The connections are on this host now, and the store still has a copy: "
                "remove them there (xero-tui --store URL remove NAME) before another host "
                "refreshes them, since only one copy of a refresh token can be kept working."
            ) from None
    ctx.use_secrets(target)
    return Moved(
        len(shared.connections),
        len(shared.pending),
        len(present),
        f"this host's {target.description}",
        None,
        _missing_tokens(shared, values),
    )


def _check_copy(got: dict[str, str | None], wanted: dict[str, str], where: str) -> None:
    wrong = [k for k, v in wanted.items() if got.get(k) != v]
    if wrong:
        raise StorageError(
            f"{where} did not keep {len(wrong)} of the secrets copied to it; nothing was removed "
            "from where they came from."
        )
