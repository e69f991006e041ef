"""One user's setting: the config file, the secret store, the grant locks and Xero's client.

Every use case (tokens, consent, the connect session, health, removal, the move to the file
store) takes a `Context`. It imports neither asyncio nor httpx: a cached `token` needs neither.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from xero_tui.core.config import Config, ConfigStore
from xero_tui.core.endpoints import Endpoints
from xero_tui.core.errors import NotFound, StorageError
from xero_tui.core.fsutil import ensure_private_dir
from xero_tui.core.locks import FileLock, LockTimeout
from xero_tui.core.models import Connection, TokenSet
from xero_tui.core.paths import ENV_STORE, Paths
from xero_tui.core.secrets import SecretStore, StorageKind, open_store, storage_kind

if TYPE_CHECKING:
    from xero_tui.core.pgstore import Database, DatabaseSecrets, RecordStore, StoreAddress
    from xero_tui.core.xero import XeroClient

T = TypeVar("T")
GRANT_LOCK_TIMEOUT = 60.0


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """`asyncio.to_thread`, with asyncio imported by the first caller rather than at start-up."""
    import asyncio

    return await asyncio.to_thread(fn, *args)


async def settle(work: Awaitable[T]) -> T:
    """Await `work` to its end even if the caller is cancelled meanwhile (Ctrl-C, a closed
    screen): once a request that makes Xero issue or rotate a token is sent, its answer must be
    stored. The cancellation is passed on once the work is done."""
    import asyncio

    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
            continue
        if cancelled:
            raise asyncio.CancelledError
        return result


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def quoted_names(names: Sequence[str]) -> str:
    """Connection names as messages quote them: `'A', 'B'`."""
    return ", ".join(repr(n) for n in names)


def app_in_use(config: Config, client_id: str) -> bool:
    """Whether a saved connection or an unfinished sign-in still needs this app's secret."""
    return any(c.client_id == client_id for c in config.connections.values()) or any(
        p.client_id == client_id for p in config.pending.values()
    )


class GrantLock(Protocol):
    """A grant's refresh lock, held: `store_tokens` saves what a refresh rotated in before the
    lock is let go (a shared store commits it in the lock's own transaction)."""

    def store_tokens(self, tokens: TokenSet, replaced: TokenSet) -> None: ...

    def release(self) -> None: ...


class _FileGrantLock:
    def __init__(self, lock: FileLock, secrets: SecretStore, grant_id: str) -> None:
        self.lock = lock
        self.secrets = secrets
        self.grant_id = grant_id

    def store_tokens(self, tokens: TokenSet, replaced: TokenSet) -> None:
        self.secrets.put_tokens(self.grant_id, tokens)

    def release(self) -> None:
        self.lock.release()


class Records:
    """The grants, connections and pending sign-ins: config.toml's, or those of the shared
    store that `--store`, XERO_TUI_STORE or config.toml's `store` names."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def load(self) -> Config:
        ctx = self.ctx
        if ctx.store_url is not None:
            return ctx.shared_records(ctx.store_url).load()
        local = ctx.local.load()
        if local.store is None:
            return local
        return ctx.shared_records(local.store).load()

    def update(self, change: Callable[[Config], T]) -> T:
        ctx = self.ctx
        url = ctx.shared_url()
        if url is None:
            return ctx.local.update(change)
        return ctx.shared_records(url).update(change)


class Context:
    """Where one user's connections live, and how to reach Xero for them."""

    def __init__(
        self,
        paths: Paths | None = None,
        endpoints: Endpoints | None = None,
        *,
        insecure_storage: bool = False,
        secrets: SecretStore | None = None,
        client_factory: Callable[[], XeroClient] | None = None,
        store_url: str | None = None,
    ) -> None:
        self.paths = paths or Paths.from_env()
        self.endpoints = endpoints or Endpoints.from_env()
        self.local = ConfigStore(self.paths)
        # The shared store given by --store or XERO_TUI_STORE; else config.toml may name one.
        self.store_url = store_url or os.environ.get(ENV_STORE) or None
        self.store = Records(self)
        self._shared: tuple[StoreAddress, Database] | None = None
        self.insecure_storage = insecure_storage
        self._secrets = secrets
        self._secrets_given = secrets is not None
        self._client_factory = client_factory
        # Rotated tokens whose store failed, by grant: (the stored set they replace, the new).
        # The next refresh of the grant in this process stores them first.
        self.unstored: dict[str, tuple[TokenSet, TokenSet]] = {}

    def load(self) -> Config:
        return self.store.load()

    # The shared store ----------------------------------------------------------------------------

    def shared(self, url: str) -> tuple[StoreAddress, Database]:
        """The shared store at `url`: its checked address and this process's connection."""
        if self._shared is None or self._shared[0].url != url:
            from xero_tui.core.pgstore import database, parse_address

            address = parse_address(url)
            self._shared = (address, database(address))
        return self._shared

    def shared_records(self, url: str) -> RecordStore:
        from xero_tui.core.pgstore import RecordStore

        return RecordStore(self.shared(url)[1])

    def shared_url(self) -> str | None:
        """The shared store in use, if any (reads config.toml unless --store or the env says)."""
        return self.store_url if self.store_url is not None else self.local.load().store

    def local_secrets(self) -> SecretStore:
        """This host's own secret store, whatever the shared store: it keeps the store's key."""
        if self._secrets_given and self._secrets is not None and self._secrets.kind != "database":
            return self._secrets
        return open_store(
            self.paths, self.local.load().secret_storage, insecure=self.insecure_storage
        )

    def shared_secrets(self, url: str) -> DatabaseSecrets:
        from xero_tui.core.pgstore import DatabaseSecrets
        from xero_tui.core.storekey import local_keys

        address, db = self.shared(url)
        return DatabaseSecrets(db, lambda: local_keys(address, self.local_secrets))

    @property
    def secrets(self) -> SecretStore:
        return self.secrets_for(self.load() if self._secrets is None else None)

    def secrets_for(self, config: Config | None) -> SecretStore:
        """The secret store, opened from a config the caller has already loaded.

        Opened once, and again when `config` asks for another kind of store than the open one:
        another process (another instance's opt-in to the plain file) may have changed it. A
        store given to the constructor is kept whatever the config says.
        """
        if (
            self._secrets is not None
            and config is not None
            and not self._secrets_given
            and self._secrets.kind != self.storage_kind(config)
        ):
            self._secrets = None
        if self._secrets is None:
            assert config is not None
            if config.store is not None:
                self._secrets = self.shared_secrets(config.store)
            else:
                self._secrets = open_store(
                    self.paths, config.secret_storage, insecure=self.insecure_storage
                )
        return self._secrets

    def use_secrets(self, store: SecretStore) -> None:
        """From now on secrets go to `store` (the config has just been switched to it)."""
        self._secrets = store
        self._secrets_given = False

    def storage_kind(self, config: Config | None = None) -> StorageKind:
        """Where secrets live ("file", "keyring" or "database"), from the settings alone: no
        keyring call."""
        config = config or self.load()
        if config.store is not None:
            return "database"
        return storage_kind(config.secret_storage, insecure=self.insecure_storage)

    def uses_file_storage(self) -> bool:
        return self.storage_kind() == "file"

    def storage_summary(self, config: Config | None = None) -> str:
        """Where secrets live, in words, without asking the keyring anything."""
        config = config or self.load()
        kind = self.storage_kind(config)
        if kind == "database":
            assert config.store is not None
            return f"{self.shared(config.store)[0].description} (encrypted)"
        if kind == "file":
            return f"plain file {self.paths.secrets_file}"
        return "keyring"

    def connection(self, name: str, config: Config | None = None) -> Connection:
        config = config or self.load()
        try:
            return config.connections[name]
        except KeyError:
            known = ", ".join(sorted(config.connections)) or "none saved yet"
            raise NotFound(f"No connection named {name!r} (known: {known}).") from None

    def connections(self) -> list[Connection]:
        return sorted(self.load().connections.values(), key=lambda c: c.name.casefold())

    def client_secret_for(self, client_id: str) -> str | None:
        return self.secrets.get_client_secret(client_id)

    def client(self) -> XeroClient:
        if self._client_factory is not None:
            return self._client_factory()
        from xero_tui.core.xero import XeroClient

        return XeroClient(self.endpoints)

    # Grant locks ---------------------------------------------------------------------------------

    def grant_lock(self, grant_id: str) -> FileLock:
        path = self.paths.grant_lock(grant_id)
        ensure_private_dir(path.parent)
        # Acquired in a worker thread and released on the event loop.
        return FileLock(path, GRANT_LOCK_TIMEOUT)

    def acquire_grant_lock(
        self, grant_id: str, users: Callable[[], str], secrets: SecretStore | None = None
    ) -> GrantLock:
        """Blocking. The grant's refresh lock, held; `users` names who shares the grant, for the
        message when another process (or host) holds it too long. The lock is the one of the
        store the tokens are in: `secrets`, by default this context's."""
        secrets = secrets or self.secrets
        if secrets.kind == "database":
            from xero_tui.core.pgstore import DatabaseSecrets, RowLock

            assert isinstance(secrets, DatabaseSecrets)
            return RowLock(secrets, grant_id, users).acquire()
        lock = self.grant_lock(grant_id)
        try:
            lock.acquire()
        except LockTimeout:
            raise StorageError(
                f"Another xero-tui process has been refreshing {users()} for over "
                f"{GRANT_LOCK_TIMEOUT:.0f} s ({lock.path}); try again."
            ) from None
        except OSError as exc:
            reason = exc.strerror or exc.__class__.__name__
            raise StorageError(f"Could not lock {lock.path}: {reason}.") from None
        return _FileGrantLock(lock, secrets, grant_id)

    @contextlib.contextmanager
    def grant_locks(
        self, grant_ids: Sequence[str], config: Config, secrets: SecretStore | None = None
    ) -> Iterator[None]:
        """Blocking. Hold the refresh locks of `grant_ids`, taken in the order given: callers
        that take several pass them sorted, so that two of them cannot deadlock."""
        held: list[GrantLock] = []
        secrets = secrets or self.secrets_for(config)
        try:
            for grant_id in grant_ids:

                def users(grant_id: str = grant_id) -> str:
                    names = [c.name for c in config.connections.values() if c.grant_id == grant_id]
                    if names:
                        return quoted_names(sorted(names))
                    pending = config.pending.get(grant_id)
                    if pending is not None:
                        return f"the unfinished sign-in {pending.name!r}"
                    return f"grant {grant_id}"

                held.append(self.acquire_grant_lock(grant_id, users, secrets))
            yield
        finally:
            for lock in reversed(held):
                lock.release()
