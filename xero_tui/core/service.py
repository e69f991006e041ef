"""What the CLI and the screens call: consent, saving, tokens, tests and removal of connections.

Everything here is async so that the TUI and the CLI share one code path; blocking work (keyring,
file locks, config writes) runs in threads with timeouts of their own.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from xero_tui.core.config import Config, ConfigStore
from xero_tui.core.endpoints import Endpoints
from xero_tui.core.errors import (
    EXIT_ERROR,
    EXIT_NEEDS_RECONNECT,
    NeedsReconnect,
    NotFound,
    StorageError,
    TenantNotConnected,
    TokenRejected,
    UsageError,
    XeroTuiError,
    clean_text,
)
from xero_tui.core.fsutil import ensure_private_dir
from xero_tui.core.locks import FileLock, LockTimeout
from xero_tui.core.models import (
    Connection,
    Grant,
    Kind,
    Organisation,
    Status,
    Tenant,
    TokenSet,
)
from xero_tui.core.paths import Paths
from xero_tui.core.secrets import (
    FileStore,
    ProbeResult,
    SecretStore,
    StorageKind,
    client_secret_key,
    grant_key,
    open_store,
    probe_keyring,
    storage_kind,
)

# Consent, refresh and HTTP modules are imported where they are used: a cached `token` needs
# none of them, nor asyncio, and importing them would double that command's time.
if TYPE_CHECKING:
    from xero_tui.core import outcomes
    from xero_tui.core.loopback import CallbackResult
    from xero_tui.core.xero import XeroClient

    # Exported here too; at run time `__getattr__` below supplies them.
    ConnectionDraft = outcomes.ConnectionDraft
    ConsentAttempt = outcomes.ConsentAttempt
    ConsentOutcome = outcomes.ConsentOutcome
    Health = outcomes.Health
    Removal = outcomes.Removal
    StorageMove = outcomes.StorageMove
    TestResult = outcomes.TestResult

_OUTCOMES = frozenset(
    {
        "ConnectionDraft",
        "ConsentAttempt",
        "ConsentOutcome",
        "Health",
        "Removal",
        "StorageMove",
        "TestResult",
    }
)


def __getattr__(name: str) -> Any:
    """The result types, from `outcomes` on first use (see that module)."""
    if name in _OUTCOMES:
        from xero_tui.core import outcomes

        return getattr(outcomes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


T = TypeVar("T")
GRANT_LOCK_TIMEOUT = 60.0
# A refresh rewrites config.toml (under its lock, with two fsyncs) only when it changes a status
# or moves a recorded refresh time by at least this much: a script that refreshes every half hour
# need not rewrite it each time. The recorded time is what `status` measures the refresh token's
# age from (in tenths of a day, against Xero's 60 days); it may lag by less than this, never lead.
REFRESH_RECORD_STEP = timedelta(hours=1)


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """`asyncio.to_thread`, with asyncio imported by the first caller rather than at start-up."""
    import asyncio

    return await asyncio.to_thread(fn, *args)


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class TokenCheckFailed(XeroTuiError):
    """Xero took a pasted refresh token and answered with new tokens, then a later call failed.

    The pasted token stops working 30 minutes after that refresh: `tokens` hold the only live
    refresh token, and must reach the user (or the secret store) rather than be dropped.
    """

    def __init__(self, message: str, tokens: TokenSet, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.tokens = tokens
        self.exit_code = exit_code


def _auth_event_id(tokens: TokenSet) -> str | None:
    from xero_tui.core.oauth import decode_claims

    value = decode_claims(tokens.access_token).get("authentication_event_id")
    return value if isinstance(value, str) and value else None


class Service:
    """One user's connections: config file, secret store and Xero, behind a few typed calls."""

    def __init__(
        self,
        paths: Paths | None = None,
        endpoints: Endpoints | None = None,
        *,
        insecure_storage: bool = False,
        secrets: SecretStore | None = None,
        client_factory: Callable[[], XeroClient] | None = None,
    ) -> None:
        self.paths = paths or Paths.from_env()
        self.endpoints = endpoints or Endpoints.from_env()
        self.store = ConfigStore(self.paths)
        self.insecure_storage = insecure_storage
        self._secrets = secrets
        self._secrets_given = secrets is not None
        self._client_factory = client_factory

    # Storage -----------------------------------------------------------------------------------

    def load(self) -> Config:
        return self.store.load()

    @property
    def secrets(self) -> SecretStore:
        return self._secrets_for(self.load() if self._secrets is None else None)

    def _secrets_for(self, config: Config | None) -> SecretStore:
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
            self._secrets = open_store(
                self.paths, config.secret_storage, insecure=self.insecure_storage
            )
        return self._secrets

    def storage_kind(self, config: Config | None = None) -> StorageKind:
        """Where secrets live ("file" or "keyring"), from the settings alone: no keyring call."""
        config = config or self.load()
        return storage_kind(config.secret_storage, insecure=self.insecure_storage)

    def uses_file_storage(self) -> bool:
        return self.storage_kind() == "file"

    def storage_summary(self, config: Config | None = None) -> str:
        """Where secrets live, in words, without asking the keyring anything."""
        if self.storage_kind(config) == "file":
            return f"plain file {self.paths.secrets_file}"
        return "keyring"

    async def probe_storage(self) -> ProbeResult:
        """Check that secrets can be kept before a consent is spent on it."""

        def probe() -> ProbeResult:
            if self.uses_file_storage():
                return ProbeResult(True, self.secrets.description, "Secrets go to a plain file.")
            return probe_keyring()

        return await _in_thread(probe)

    def use_file_storage(self) -> StorageMove:
        """The user's opt-in to the plain-file store, remembered in the config. Blocking.

        The secrets already saved move with it: each is read from the keyring where it can be,
        written to the file and read back, and only then does the config say "file". What the
        keyring would not give (usually why the user is switching) stays behind; the connections
        that need it are kept and say what to do: reconnect, or enter the client secret again.
        """
        config = self.load()
        source = self._secrets_for(config)
        grant_ids = sorted({c.grant_id for c in config.connections.values()} | set(config.grants))
        client_ids = sorted({c.client_id for c in config.connections.values() if c.kind.has_secret})
        keys = [grant_key(g) for g in grant_ids] + [client_secret_key(c) for c in client_ids]
        if source.kind != "keyring":
            # Already on the file (--insecure-storage): nothing moves, and what it lacks is lost.
            kept = source.get_many(keys)
            return self._switch_to_file(config, {k for k in keys if kept[k] is None}, 0, None)
        # Every grant's refresh lock, from the keyring read to the keyring delete: a refresh
        # finishing in between would store a newer token in the keyring, to be deleted there
        # while the file kept the one it superseded (dead 30 minutes later).
        with self._grant_locks(grant_ids, config):
            return self._move_from_keyring(config, source, keys)

    def _move_from_keyring(
        self, config: Config, source: SecretStore, keys: list[str]
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
        FileStore(self.paths).put_many(moving)
        # Only what came from the keyring counts as kept: a secrets.toml left from an earlier
        # spell on the file store may hold values for the rest, and those are stale.
        missing = {key for key in keys if key not in moving}
        move = self._switch_to_file(config, missing, len(moving), problem)
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
        self, config: Config, missing: set[str], moved: int, problem: str | None
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

        self.store.update(change)
        self._secrets = FileStore(self.paths)
        self._secrets_given = False
        from xero_tui.core.outcomes import StorageMove

        return StorageMove(moved, tuple(reconnect), tuple(reenter), problem)

    def _acquire_grant_lock(self, grant_id: str, users: Callable[[], str]) -> FileLock:
        """Blocking. The grant's refresh lock, held; `users` names who shares the grant, for the
        message when another process holds it too long."""
        lock = self._grant_lock(grant_id)
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
        return lock

    @contextlib.contextmanager
    def _grant_locks(self, grant_ids: Sequence[str], config: Config) -> Iterator[None]:
        """Blocking. Hold the refresh locks of `grant_ids`, taken in the order given: callers
        that take several pass them sorted, so that two of them cannot deadlock."""
        held: list[FileLock] = []
        try:
            for grant_id in grant_ids:

                def users(grant_id: str = grant_id) -> str:
                    from xero_tui.core.outcomes import quoted_names

                    names = [c.name for c in config.connections.values() if c.grant_id == grant_id]
                    return quoted_names(sorted(names)) if names else f"grant {grant_id}"

                held.append(self._acquire_grant_lock(grant_id, users))
            yield
        finally:
            for lock in reversed(held):
                lock.release()

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

    def _client(self) -> XeroClient:
        if self._client_factory is not None:
            return self._client_factory()
        from xero_tui.core.xero import XeroClient

        return XeroClient(self.endpoints)

    # Consent -----------------------------------------------------------------------------------

    async def begin_consent(
        self,
        draft: ConnectionDraft,
        *,
        timeout: float = 300.0,
        allow_launch: bool = True,
        env: dict[str, str] | None = None,
    ) -> ConsentAttempt:
        """Bind the listener, build the URL and (where it makes sense) open the browser."""
        if not draft.kind.uses_browser:
            raise UsageError("A custom connection signs in with its secret; no browser is needed.")
        from xero_tui.core.browser import is_ssh, launch, plan_launch, ssh_tunnel_command
        from xero_tui.core.loopback import CallbackListener
        from xero_tui.core.oauth import build_auth_request

        request = build_auth_request(
            self.endpoints, draft.client_id, draft.redirect_uri, draft.scopes, pkce=draft.pkce
        )
        listener = CallbackListener(draft.redirect_uri, request.state, timeout=timeout)
        await listener.start()
        # The code exchange needs the HTTP client: import it (httpx takes ~100 ms) and build its
        # TLS context while the user is still in the browser rather than after Xero answers.
        importlib.import_module("xero_tui.core.xero")
        from xero_tui.core.http import start_tls_context

        start_tls_context()
        plan = plan_launch(request.url, env)
        ssh = ssh_tunnel_command(listener.port, env) if is_ssh(env) else None
        from xero_tui.core.outcomes import ConsentAttempt

        attempt = ConsentAttempt(request, listener, plan, ssh)
        if allow_launch and plan.launch:
            attempt.launch_tried = True
            attempt.launched = launch(plan, request.url)
        return attempt

    async def finish_consent(
        self, attempt: ConsentAttempt, result: CallbackResult, client_secret: str | None
    ) -> ConsentOutcome:
        """Exchange the code and list the organisations; the browser page reports the outcome.

        The page is answered but not waited for: the caller closes the attempt, and can let
        the browser hang up in the background while it shows the organisations.
        """
        request = attempt.request
        try:
            async with self._client() as xero:
                tokens = await xero.exchange_code(
                    request.client_id,
                    client_secret,
                    result.code,
                    request.redirect_uri,
                    request.code_verifier,
                )
                outcome = await self._outcome(xero, tokens)
        except XeroTuiError as exc:
            attempt.listener.answer(False, str(exc))
            raise
        except BaseException:
            attempt.listener.answer(False, "xero-tui stopped before finishing.")
            raise
        attempt.listener.answer(True, "Connected to Xero.")
        return outcome

    async def _outcome(self, xero: XeroClient, tokens: TokenSet) -> ConsentOutcome:
        event = _auth_event_id(tokens)
        new_ids: frozenset[str] = frozenset()
        if not event:
            tenants = await xero.connections(tokens.access_token)
        else:
            import asyncio

            # Both lists at once: one round trip, not two, between the callback and the picker.
            tenants, granted = await asyncio.gather(
                xero.connections(tokens.access_token),
                xero.connections(tokens.access_token, event),
            )
            new_ids = frozenset(t.tenant_id for t in granted)
            known = {t.tenant_id for t in tenants}
            tenants += [t for t in granted if t.tenant_id not in known]
        if not new_ids and tenants:
            # Re-consenting an already connected organisation can leave the filtered list empty:
            # then the most recently updated connection is the one just granted.
            latest = max(tenants, key=lambda t: t.updated or datetime.min.replace(tzinfo=UTC))
            if latest.updated is not None:
                new_ids = frozenset({latest.tenant_id})
        from xero_tui.core.outcomes import ConsentOutcome

        return ConsentOutcome(tokens, tuple(tenants), new_ids, event)

    async def outcome_from_refresh_token(
        self, draft: ConnectionDraft, refresh_token: str
    ) -> ConsentOutcome:
        """Validate a refresh token pasted from another tool by using it (it rotates).

        Raises TokenCheckFailed, with the new tokens, when Xero rotated it but the organisations
        could not be listed.
        """
        async with self._client() as xero:
            tokens = await xero.refresh(draft.client_id, draft.client_secret, refresh_token)
            # Xero has rotated the token now: whatever fails next, the new one goes back.
            try:
                return await self._outcome(xero, tokens)
            except XeroTuiError as exc:
                raise TokenCheckFailed(str(exc), tokens, exc.exit_code) from exc
            except Exception as exc:
                raise TokenCheckFailed(
                    f"Xero's list of organisations could not be read ({type(exc).__name__}).",
                    tokens,
                ) from exc

    async def outcome_for_custom(self, draft: ConnectionDraft) -> ConsentOutcome:
        if not draft.client_secret:
            raise UsageError("A custom connection needs its client secret.")
        async with self._client() as xero:
            tokens = await xero.client_credentials(
                draft.client_id, draft.client_secret, draft.scopes
            )
            tenants = await xero.connections(tokens.access_token)
        from xero_tui.core.outcomes import ConsentOutcome

        return ConsentOutcome(tokens, tuple(tenants), frozenset(t.tenant_id for t in tenants))

    def save_connections(
        self,
        draft: ConnectionDraft,
        outcome: ConsentOutcome,
        chosen: Sequence[tuple[str, Tenant]],
        *,
        replace_existing: Iterable[str] = (),
    ) -> list[Connection]:
        """Store the grant's secrets (read back), then one connection per chosen organisation.

        Names in `replace_existing` may be overwritten (a reconnect); any other existing name is
        refused before anything is stored.
        """
        if not chosen:
            raise UsageError("Choose at least one organisation.")
        replaceable = set(replace_existing)
        names = [name.strip() for name, _ in chosen]
        if any(not name for name in names):
            raise UsageError("Every connection needs a name.")
        if len(set(names)) != len(names):
            raise UsageError("Two of the chosen organisations would get the same name.")
        taken = [n for n in names if n in self.load().connections and n not in replaceable]
        if taken:
            raise UsageError(f"A connection named {taken[0]!r} already exists; choose another.")
        import uuid  # only saving needs it, and `token` need not import it

        grant_id = uuid.uuid4().hex
        stamp = now_utc()
        secrets = self.secrets
        if draft.client_secret is not None:
            secrets.put_client_secret(draft.client_id, draft.client_secret)
        secrets.put_tokens(grant_id, outcome.tokens)
        scopes = outcome.tokens.scopes or draft.scopes
        grant = Grant(
            grant_id=grant_id,
            kind=draft.kind,
            client_id=draft.client_id,
            scopes=scopes,
            created=stamp,
            last_refreshed=stamp,
            auth_event_id=outcome.auth_event_id,
        )
        saved = [
            Connection(
                name=name.strip(),
                kind=draft.kind,
                client_id=draft.client_id,
                tenant_id=tenant.tenant_id,
                tenant_name=tenant.tenant_name,
                tenant_type=tenant.tenant_type,
                connection_id=tenant.connection_id,
                grant_id=grant_id,
                redirect_uri=draft.redirect_uri,
                scopes=scopes,
                created=stamp,
                last_refreshed=stamp,
                pkce=draft.pkce,
            )
            for name, tenant in chosen
        ]
        orphans: list[str] = []

        def change(config: Config) -> None:
            clash = [c.name for c in saved if c.name in config.connections]
            clash = [n for n in clash if n not in replaceable]
            if clash:
                raise UsageError(f"A connection named {clash[0]!r} already exists; choose another.")
            config.grants[grant_id] = grant
            for conn in saved:
                old = config.connections.get(conn.name)
                if old is not None:
                    conn.created = old.created
                config.connections[conn.name] = conn
            orphans.extend(_drop_unused_grants(config))

        try:
            self.store.update(change)
        except BaseException:
            secrets.delete_tokens(grant_id)
            raise
        for orphan in orphans:
            secrets.delete_tokens(orphan)
        return saved

    # Tokens ------------------------------------------------------------------------------------

    async def access_token(self, name: str, *, force: bool = False) -> tuple[Connection, TokenSet]:
        """A valid access token for a connection, refreshing (single-flight) when needed."""
        # Nearly every call ends in a request to Xero (a refresh, or the caller's own): start on
        # its TLS context now, so that it overlaps with the config, the keyring and the lock.
        from xero_tui.core.http import start_tls_context

        start_tls_context()
        config, conn, grant = await _in_thread(self._grant_of, name)
        tokens = await self._refresh_if_needed(config, conn, grant, force)
        return conn, tokens

    def _grant_of(self, name: str) -> tuple[Config, Connection, Grant]:
        """Blocking. The config, the connection and its grant, with the secret store opened."""
        config = self.load()
        conn = self.connection(name, config)
        grant = config.grants.get(conn.grant_id)
        if grant is None:
            raise NeedsReconnect(
                f"{self.paths.config_file} has no grant {conn.grant_id!r} for {name!r}; "
                "reconnect it.",
                "missing_grant",
            )
        self._secrets_for(config)
        return config, conn, grant

    def cached_token(self, name: str) -> tuple[Connection, TokenSet] | None:
        """The stored access token while it is fresh, read without an event loop; else None.

        `token` asks this first: the common case then costs one config read and one keyring
        read. None means `access_token` has to decide (refresh, or report what is wrong).
        """
        config = self.load()
        conn = self.connection(name, config)
        if conn.grant_id not in config.grants:
            return None
        self._secrets_for(config)
        tokens = self._stored_tokens(conn)
        return (conn, tokens) if tokens.is_fresh() else None

    def _stored_tokens(self, conn: Connection) -> TokenSet:
        tokens = self.secrets.get_tokens(conn.grant_id)
        if tokens is None:
            raise self._tokens_missing(conn)
        return tokens

    def _tokens_missing(self, conn: Connection) -> StorageError:
        return StorageError(
            f"The tokens for {conn.name!r} are missing from {self.secrets.description}; "
            f"reconnect it (xero-tui connect {conn.name!r} ... or r in the app)."
        )

    async def _refresh_if_needed(
        self, config: Config, conn: Connection, grant: Grant, force: bool
    ) -> TokenSet:
        # Everything before the network in one worker thread: each hand-off to a thread and back
        # costs context switches, which add up on a busy machine.
        stored, locked = await _in_thread(self._lock_for_refresh, conn, grant, force)
        if locked is None:
            return stored
        lock, secret = locked

        async def renew() -> TokenSet:
            try:
                try:
                    fresh = await self._refresh(conn, grant, stored, secret)
                except NeedsReconnect:
                    await _in_thread(self._mark, grant.grant_id, Status.NEEDS_RECONNECT)
                    raise
                await _in_thread(self.secrets.put_tokens, grant.grant_id, fresh)
                return fresh
            finally:
                lock.release()

        import asyncio

        # Once the request is sent Xero may rotate the token: a caller that gives up (Esc on a
        # test, a replaced worker) must not drop the new one, so refresh and store finish alone.
        fresh = await asyncio.shield(asyncio.ensure_future(renew()))
        stamp = now_utc()
        if not _refresh_recorded(config, grant.grant_id, stamp):
            await _in_thread(self._mark, grant.grant_id, Status.OK, stamp)
        return fresh

    def _lock_for_refresh(
        self, conn: Connection, grant: Grant, force: bool
    ) -> tuple[TokenSet, tuple[FileLock, str | None] | None]:
        """Blocking. The stored tokens, and the held grant lock (with the client secret) when
        they have to be renewed; without a lock, the stored tokens are the answer."""
        seen = self._stored_tokens(conn)
        if not force and seen.is_fresh():
            return seen, None
        lock = self._acquire_grant_lock(grant.grant_id, lambda: repr(conn.name))
        try:
            # Read again under the lock, with the secret the refresh needs in the same call.
            client_id = grant.client_id if grant.kind.has_secret else None
            current, secret = self.secrets.get_tokens_and_secret(grant.grant_id, client_id)
            if current is None:
                raise self._tokens_missing(conn)
            # Another process refreshed while we waited: its token is as good as ours would be.
            rotated = current.access_token != seen.access_token
            if current.is_fresh() and (rotated or not force):
                lock.release()
                return current, None
            if grant.kind.has_secret and secret is None:
                raise StorageError(
                    f"The client secret for {conn.name!r} is missing from "
                    f"{self.secrets.description}; save the connection again with its secret."
                )
        except BaseException:
            lock.release()
            raise
        return current, (lock, secret)

    def _grant_lock(self, grant_id: str) -> FileLock:
        path = self.paths.grant_lock(grant_id)
        ensure_private_dir(path.parent)
        # Acquired in a worker thread and released on the event loop.
        return FileLock(path, GRANT_LOCK_TIMEOUT)

    async def _refresh(
        self, conn: Connection, grant: Grant, current: TokenSet, secret: str | None
    ) -> TokenSet:
        async with self._client() as xero:
            if grant.kind is Kind.CUSTOM:
                assert secret is not None
                return await xero.client_credentials(grant.client_id, secret, grant.scopes)
            if current.refresh_token is None:
                raise NeedsReconnect(
                    f"No refresh token is stored for {conn.name!r}; reconnect it.", "invalid_grant"
                )
            return await xero.refresh(grant.client_id, secret, current.refresh_token)

    def _mark(self, grant_id: str, status: Status, refreshed: datetime | None = None) -> None:
        """Record a refresh (or its failure) on the grant and every connection that shares it."""

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
            self.store.update(change)
        except XeroTuiError:
            # The tokens are already stored; a config that cannot be written only loses the date.
            if status is Status.NEEDS_RECONNECT:
                raise

    # Health, test, removal -----------------------------------------------------------------------

    def health(
        self, names: Iterable[str] | None = None, *, read_secrets: bool = True
    ) -> list[Health]:
        """Each connection's health; without `read_secrets`, from the config alone (no keyring
        call), so a missing secret does not show yet."""
        config = self.load()
        wanted = list(names) if names is not None else sorted(config.connections)
        out = []
        now = time.time()
        conns = [self.connection(name, config) for name in wanted]
        grant_ids = list(dict.fromkeys(c.grant_id for c in conns))
        client_ids = list(dict.fromkeys(c.client_id for c in conns if c.kind.has_secret))
        stored: dict[str, TokenSet | None] = {}
        secrets: dict[str, str | None] = {}
        if read_secrets:
            store = self._secrets_for(config)
            storage = store.description
            # One read per grant and per app, not per connection (a consent often covers
            # many), all in one call.
            stored, secrets = store.get_tokens_and_secrets(grant_ids, client_ids)
        else:
            storage = self.storage_summary(config)
        from xero_tui.core.outcomes import Health

        for conn in conns:
            grant = config.grants.get(conn.grant_id)
            tokens = stored.get(conn.grant_id)
            refreshed = conn.last_refreshed or (grant.last_refreshed if grant else None)
            refreshed = refreshed or conn.created
            age = None
            if conn.kind is not Kind.CUSTOM:
                age = max(0.0, (now - refreshed.timestamp()) / 86400)
            out.append(
                Health(
                    connection=conn,
                    storage=storage,
                    access_expires_at=tokens.expires_at if tokens else None,
                    refresh_age_days=age,
                    secret_missing=read_secrets and tokens is None,
                    client_secret_missing=read_secrets
                    and conn.kind.has_secret
                    and secrets.get(conn.client_id) is None,
                )
            )
        return out

    async def _with_token(
        self, name: str, call: Callable[[XeroClient, Connection, TokenSet], Awaitable[T]]
    ) -> tuple[Connection, TokenSet, T]:
        """Run one API call with a valid token; refresh once if Xero rejects a cached one."""
        conn, tokens = await self.access_token(name)
        async with self._client() as xero:
            try:
                return conn, tokens, await call(xero, conn, tokens)
            except TokenRejected:
                # A cached access token can outlive its grant (the app was removed at Xero):
                # a refresh then either renews it or says the connection needs reconnecting.
                conn, tokens = await self.access_token(name, force=True)
                return conn, tokens, await call(xero, conn, tokens)

    async def test(self, name: str) -> TestResult:
        """Refresh if needed and read the organisation: the connection works end to end."""

        async def organisation(
            xero: XeroClient, conn: Connection, tokens: TokenSet
        ) -> Organisation:
            tenant = None if conn.kind is Kind.CUSTOM else conn.tenant_id
            return await xero.organisation(tokens.access_token, tenant)

        try:
            conn, tokens, org = await self._with_token(name, organisation)
        except TenantNotConnected:
            await _in_thread(self._mark_one, name, Status.NEEDS_RECONNECT)
            raise
        from xero_tui.core.outcomes import TestResult

        return TestResult(conn, org, tokens.expires_at)

    async def still_connected(self, name: str) -> bool:
        """Whether Xero still lists this connection's organisation for its grant."""

        async def tenants(xero: XeroClient, conn: Connection, tokens: TokenSet) -> list[Tenant]:
            return await xero.connections(tokens.access_token)

        conn, _, listed = await self._with_token(name, tenants)
        return any(t.tenant_id == conn.tenant_id for t in listed)

    def _mark_one(self, name: str, status: Status) -> None:
        def change(config: Config) -> None:
            if name in config.connections:
                config.connections[name].status = status

        self.store.update(change)

    async def remove(self, name: str, *, disconnect: bool = False, revoke: bool = False) -> str:
        """`removal`, as one sentence for a screen: what was done, and what could not be."""
        return (await self.removal(name, disconnect=disconnect, revoke=revoke)).summary

    async def removal(
        self, name: str, *, disconnect: bool = False, revoke: bool = False
    ) -> Removal:
        """Delete a saved connection; optionally disconnect its organisation and revoke the grant.

        Revoking happens only when no other saved connection shares the grant (revoking would
        break them too). What was asked for at Xero and could not be done is said, not skipped.
        """
        config = await _in_thread(self.load)
        conn = self.connection(name, config)
        sharing = [
            c.name
            for c in config.connections.values()
            if c.grant_id == conn.grant_id and c is not conn
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
                not_done += await self._disconnect_at_xero(conn, left, done)
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
        await _in_thread(self._forget, conn)
        from xero_tui.core.outcomes import Removal

        return Removal(name, tuple(done), tuple(not_done), stale)

    def _forget(self, conn: Connection) -> None:
        """Blocking. Drop the connection, then the secrets nothing saved uses any more."""
        orphans: list[str] = []

        def change(cfg: Config) -> Config:
            cfg.connections.pop(conn.name, None)
            orphans.extend(_drop_unused_grants(cfg))
            return cfg

        remaining = self.store.update(change)
        secrets = self._secrets_for(remaining)
        for grant_id in orphans:
            secrets.delete_tokens(grant_id)
        if not any(c.client_id == conn.client_id for c in remaining.connections.values()):
            secrets.delete_client_secret(conn.client_id)

    async def _disconnect_at_xero(
        self, conn: Connection, left: dict[str, bool], done: list[str]
    ) -> list[str]:
        """Do the steps still True in `left` at Xero, setting each False and saying it in `done`
        once it is done; returns what could not be done (each a phrase)."""
        _, tokens = await self.access_token(conn.name)
        not_done: list[str] = []
        async with self._client() as xero:
            if left["disconnect"]:
                connection_id = conn.connection_id
                if not connection_id:
                    # Saved without Xero's id for it: Xero's list for this grant has it.
                    listed = await xero.connections(tokens.access_token)
                    match = [t for t in listed if t.tenant_id == conn.tenant_id]
                    connection_id = match[0].connection_id if match else None
                gone = False
                if connection_id:
                    gone = await xero.delete_connection(tokens.access_token, connection_id)
                left["disconnect"] = False
                done.append(
                    f"disconnected {conn.tenant_name} at Xero"
                    if gone
                    else f"{conn.tenant_name} was already disconnected at Xero"
                )
            if left["revoke"] and tokens.refresh_token:
                secret = None
                if conn.kind.has_secret:
                    secret = await _in_thread(self.secrets.get_client_secret, conn.client_id)
                await xero.revoke(conn.client_id, secret, tokens.refresh_token)
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


def _drop_unused_grants(config: Config) -> list[str]:
    used = {c.grant_id for c in config.connections.values()}
    unused = [g for g in config.grants if g not in used]
    for grant_id in unused:
        del config.grants[grant_id]
    return unused


def reconnect_names(config: Config, name: str) -> list[str]:
    """The connections a reconnect of `name` renews: every one sharing its grant."""
    conn = config.connections[name]
    return [c.name for c in config.connections.values() if c.grant_id == conn.grant_id]


def renewed_pairs(
    config: Config, renewing: Iterable[str], tenants: Iterable[Tenant]
) -> list[tuple[str, Tenant]]:
    """Which saved connection each organisation of a new grant replaces in a reconnect: every
    renewed name whose organisation the grant reaches stays on that organisation."""
    by_id = {t.tenant_id: t for t in tenants}
    return [
        (name, by_id[config.connections[name].tenant_id])
        for name in renewing
        if name in config.connections and config.connections[name].tenant_id in by_id
    ]


def connection_names(name: str, tenants: Sequence[Tenant]) -> list[tuple[str, Tenant]]:
    """One connection per organisation: the plain name for one, `NAME - Organisation` for more."""
    name = name.strip()
    if len(tenants) == 1:
        return [(name, tenants[0])]
    return [(f"{name} - {t.tenant_name}", t) for t in tenants]


def clone_draft(conn: Connection, secret: str | None) -> ConnectionDraft:
    from xero_tui.core.outcomes import ConnectionDraft

    return ConnectionDraft(
        kind=conn.kind,
        client_id=conn.client_id,
        client_secret=secret,
        redirect_uri=conn.redirect_uri,
        scopes=conn.scopes,
        pkce=conn.pkce,
    )
