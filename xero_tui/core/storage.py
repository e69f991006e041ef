"""Where secrets live: the keyring probe before a sign-in, and the move to the plain file."""

from __future__ import annotations

from dataclasses import dataclass, replace

from xero_tui.core.config import Config
from xero_tui.core.context import Context, in_thread, quoted_names
from xero_tui.core.errors import StorageError, clean_text, sentence
from xero_tui.core.models import Status
from xero_tui.core.secrets import (
    FileStore,
    ProbeResult,
    SecretStore,
    client_secret_key,
    grant_key,
    probe_keyring,
)


@dataclass(frozen=True)
class StorageMove:
    """What switching to the plain-file store did with the secrets already saved."""

    moved: int
    # Connections whose tokens stayed behind (the keyring did not give them): reconnect them.
    reconnect: tuple[str, ...] = ()
    # Connections whose app's client secret stayed behind: enter it again.
    reenter_secret: tuple[str, ...] = ()
    keyring_problem: str | None = None
    # Connections whose moved secret is also still in the keyring: it changed there during the
    # move, or the keyring would not delete it. The file's copy is the one used from now on.
    left_in_keyring: tuple[str, ...] = ()

    @property
    def notice(self) -> str | None:
        """What the user has to know or do after the switch, in a few lines; None if nothing."""
        parts = []
        if self.reconnect or self.reenter_secret:
            # The problem's first sentence: the rest advises the switch just made.
            why = (self.keyring_problem or "").split(". ", 1)[0].rstrip(".")
            parts.append(sentence(why or "The keyring holds no secrets for some connections"))
            todo = []
            if self.reconnect:
                todo.append(f"reconnect {quoted_names(self.reconnect)}")
            if self.reenter_secret:
                todo.append(
                    f"enter the client secret again for {quoted_names(self.reenter_secret)}"
                )
            parts.append(sentence("; ".join(todo)))
        if self.left_in_keyring:
            parts.append(
                f"The keyring still holds a copy for {quoted_names(self.left_in_keyring)}; the file's "
                "copy is the one used now."
            )
        if not parts:
            return None
        if self.moved:
            plural = "s" if self.moved != 1 else ""
            parts.insert(0, f"Moved {self.moved} secret{plural} to the plain file.")
        return clean_text(" ".join(parts), 600)


def secret_keys(config: Config) -> tuple[list[str], list[str]]:
    """The grant ids a config's connections and sign-ins use (sorted, for taking their locks)
    and every secret they need: each grant's tokens, and each app's client secret."""
    grant_ids = sorted(
        {c.grant_id for c in config.connections.values()} | set(config.grants) | set(config.pending)
    )
    apps = [(c.client_id, c.kind) for c in config.connections.values()]
    apps += [(p.client_id, p.kind) for p in config.pending.values()]
    client_ids = sorted({client_id for client_id, kind in apps if kind.has_secret})
    return grant_ids, [grant_key(g) for g in grant_ids] + [client_secret_key(c) for c in client_ids]


async def probe_storage(ctx: Context) -> ProbeResult:
    """Check that secrets can be kept before a consent is spent on it."""

    def probe() -> ProbeResult:
        try:
            secrets = ctx.secrets
        except StorageError as exc:
            if ctx.shared_url() is None:
                raise
            return ProbeResult(False, "shared store", str(exc), str(exc), shared=True)
        if secrets.kind == "database":
            try:
                # Reaches the database and checks this host's key against the store's.
                secrets.get_many([])
            except StorageError as exc:
                return ProbeResult(False, secrets.description, str(exc), str(exc), shared=True)
            return ProbeResult(True, secrets.description, f"Secrets go to {secrets.description}.")
        if ctx.uses_file_storage():
            return ProbeResult(True, ctx.secrets.description, "Secrets go to a plain file.")
        return probe_keyring()

    return await in_thread(probe)


def use_file_storage(ctx: Context) -> StorageMove:
    """The user's opt-in to the plain-file store, remembered in the config. Blocking.

    The secrets already saved move with it: each is read from the keyring where it can be,
    written to the file and read back, and only then does the config say "file". What the
    keyring would not give (usually why the user is switching) stays behind; the connections
    that need it are kept and say what to do: reconnect, or enter the client secret again.
    """
    config = ctx.load()
    source = ctx.secrets_for(config)
    if source.kind == "database":
        raise StorageError(
            f"The secrets are in the shared store, {source.description}; the plain file is for "
            "a host's own connections (xero-tui store pull brings them here first)."
        )
    # Unfinished sign-ins' tokens move too: they may be the only live copy.
    grant_ids, keys = secret_keys(config)
    if source.kind != "keyring":
        # Already on the file (--insecure-storage): nothing moves, and what it lacks is lost.
        kept = source.get_many(keys)
        return _switch_to_file(ctx, config, {k for k in keys if kept[k] is None}, 0, None)
    # Every grant's refresh lock, from the keyring read to the keyring delete: a refresh
    # finishing in between would store a newer token in the keyring, to be deleted there
    # while the file kept the one it superseded (dead 30 minutes later).
    with ctx.grant_locks(grant_ids, config):
        return _move_from_keyring(ctx, config, source, keys)


def _move_from_keyring(
    ctx: Context, config: Config, source: SecretStore, keys: list[str]
) -> StorageMove:
    """Blocking, under the grant locks: read, write the file, record the switch, delete."""
    found: dict[str, str | None] = {}
    problem = None
    if keys:
        try:
            found = source.get_many(keys)
        except StorageError as exc:
            problem = str(exc)
    moving = {key: value for key, value in found.items() if value is not None}
    FileStore(ctx.paths).put_many(moving)
    # Only what came from the keyring counts as kept: a secrets.toml left from an earlier
    # spell on the file store may hold values for the rest, and those are stale.
    missing = {key for key in keys if key not in moving}
    move = _switch_to_file(ctx, config, missing, len(moving), problem)
    if not moving:
        return move
    # Moved, not copied: a second live copy would be refreshed apart from this one and each
    # would break the other. But only a value still as it was read is dropped; one written
    # meanwhile (by something that takes no grant lock) is kept, and said.
    try:
        now = source.get_many(list(moving))
    except StorageError:
        now = {}
    unchanged = [key for key, value in moving.items() if now.get(key) == value]
    left = set(moving) - set(unchanged)
    if unchanged:
        try:
            source.delete_many(unchanged)
        except StorageError:
            left.update(unchanged)
    if not left:
        return move
    names = sorted(
        c.name
        for c in config.connections.values()
        if grant_key(c.grant_id) in left
        or (c.kind.has_secret and client_secret_key(c.client_id) in left)
    )
    return replace(move, left_in_keyring=tuple(names))


def _switch_to_file(
    ctx: Context, config: Config, missing: set[str], moved: int, problem: str | None
) -> StorageMove:
    """Blocking. The config says "file" from now on; connections whose tokens were not moved
    need reconnecting."""
    reconnect = sorted(
        c.name for c in config.connections.values() if grant_key(c.grant_id) in missing
    )
    reenter = sorted(
        c.name
        for c in config.connections.values()
        if c.kind.has_secret
        and client_secret_key(c.client_id) in missing
        and c.name not in reconnect
    )
    gone = set(reconnect)

    def change(cfg: Config) -> None:
        cfg.secret_storage = "file"
        for conn in cfg.connections.values():
            if conn.name in gone:
                conn.status = Status.NEEDS_RECONNECT

    ctx.store.update(change)
    ctx.use_secrets(FileStore(ctx.paths))
    return StorageMove(moved, tuple(reconnect), tuple(reenter), problem)
