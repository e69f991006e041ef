"""A store several hosts share, on PostgreSQL.

Grants, connections and pending sign-ins (with their statuses) are rows of `xero_tui.records`,
in the fields config.toml uses. Secrets are rows of `xero_tui.secrets`, Fernet-encrypted here
with a key the database never sees; `xero_tui.meta` holds only the key's fingerprint, so that a
host with another key is refused before it reads or writes anything. A grant's refresh holds
its row of `xero_tui.grant_locks` (`SELECT ... FOR UPDATE`) in a transaction of its own, and
the rotated token is written and committed in that transaction before the access token is
handed out. A host that dies mid-refresh ends its session, and with it the lock.

psycopg and cryptography are imported only when a store is configured (the `postgres` extra).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from xero_tui.core.config import Config, Record, from_records, records
from xero_tui.core.errors import ConfigError, StorageError, clean_text
from xero_tui.core.models import TokenSet
from xero_tui.core.secrets import SecretStore, StorageKind, grant_key

if TYPE_CHECKING:
    import psycopg
    from cryptography.fernet import Fernet

T = TypeVar("T")

SCHEMA_VERSION = 1
# Waits are bounded: for another host's refresh of the same grant, and for a config write.
GRANT_LOCK_TIMEOUT = 60.0
RECORDS_LOCK_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10
# A constant for the advisory lock that serialises schema migrations between first users.
_MIGRATION_LOCK = 0x78657275
_KEY_ID = "key_id"
INSTALL = "pip install 'xero-tui[postgres]'"

# Each version's statements; a database at version N gets N+1.. applied in one transaction.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE xero_tui.records (
            section text NOT NULL CHECK (section IN ('grants', 'connections', 'pending')),
            key text NOT NULL,
            body jsonb NOT NULL,
            updated timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (section, key))""",
        """CREATE TABLE xero_tui.secrets (
            key text PRIMARY KEY,
            value text NOT NULL,
            writes bigint NOT NULL DEFAULT 1,
            updated timestamptz NOT NULL DEFAULT now())""",
        "CREATE TABLE xero_tui.grant_locks (grant_id text PRIMARY KEY)",
        "CREATE TABLE xero_tui.meta (name text PRIMARY KEY, value text NOT NULL)",
        "INSERT INTO xero_tui.meta (name, value) VALUES ('records', 'writer lock')",
    ),
}


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StorageError(
            f"A PostgreSQL store needs psycopg, which is not installed: {INSTALL}."
        ) from None
    return psycopg


class StoreBusy(StorageError):
    """A lock wait in the store ran out (ours, or the server's own lock_timeout)."""


def _reason(exc: BaseException) -> str:
    # libpq's first line says what failed; the rest is hints and context.
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return clean_text(text, 200).rstrip(".")


# ---------------------------------------------------------------------------------------------
# The address


@dataclass(frozen=True)
class StoreAddress:
    """A store's URL, with what may be shown of it: host and database, never credentials."""

    url: str
    host: str
    port: str
    dbname: str

    @property
    def description(self) -> str:
        where = self.host if not self.port or self.port == "5432" else f"{self.host}:{self.port}"
        return f"PostgreSQL {self.dbname} on {where}"

    @property
    def key_name(self) -> str:
        """The name the store's key has in a local secret store."""
        return f"store-key:{self.host}:{self.port or '5432'}/{self.dbname}"


def parse_address(url: str) -> StoreAddress:
    """Check a store URL; a password written in it is refused (libpq has better places)."""
    shown = clean_text(url.split("@")[-1], 80)
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"The store {shown!r} is not a PostgreSQL URL: write it as "
            "postgresql://user@host:5432/dbname."
        )
    has_password = ConfigError(
        "The store URL holds a password, which would sit in config files and process "
        "lists: remove it and use ~/.pgpass (or PGPASSFILE), PGPASSWORD, or peer or "
        "certificate authentication."
    )
    # Refused before libpq reads it: its complaint about a URL it cannot read quotes the URL.
    # User information ends at the first '@' unless a '/' comes first, as libpq reads it.
    rest = url.split("://", 1)[1]
    end = min((i for i in (rest.find("@"), rest.find("/")) if i >= 0), default=-1)
    if end >= 0 and rest[end] == "@" and rest[:end].partition(":")[2]:
        raise has_password
    pg = _psycopg()
    try:
        params = pg.conninfo.conninfo_to_dict(url)
    except pg.ProgrammingError as exc:
        if "password" in url.lower():
            raise has_password from None
        raise ConfigError(f"The store URL cannot be read ({_reason(exc)}).") from None
    if params.get("password"):
        raise has_password
    import getpass
    import os

    host = str(params.get("host") or os.environ.get("PGHOST") or "localhost")
    user = str(params.get("user") or os.environ.get("PGUSER") or getpass.getuser())
    dbname = str(params.get("dbname") or os.environ.get("PGDATABASE") or user)
    port = str(params.get("port") or os.environ.get("PGPORT") or "")
    return StoreAddress(url, host, port, dbname)


# ---------------------------------------------------------------------------------------------
# The key


def key_fingerprint(key: bytes) -> str:
    """What the database keeps of a key: enough to tell keys apart, nothing to decrypt with."""
    return hashlib.sha256(b"xero-tui store key\0" + key).hexdigest()[:32]


def new_key() -> bytes:
    from cryptography.fernet import Fernet

    key: bytes = Fernet.generate_key()
    return key


def parse_keys(text: str) -> list[bytes]:
    """One or more Fernet keys (comma or space separated); raises ValueError for a bad one."""
    import base64
    import binascii

    keys = [part.strip().encode("ascii", "replace") for part in text.replace(",", " ").split()]
    if not keys:
        raise ValueError("no key given")
    for key in keys:
        try:
            raw = base64.urlsafe_b64decode(key)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ValueError("a store key is 44 characters of URL-safe base64 (32 bytes)")
    return keys


class _Cipher:
    """The local keys; encrypts with the one the database names, decrypts with any."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        from cryptography.fernet import Fernet

        self.by_id: dict[str, Fernet] = {key_fingerprint(k): Fernet(k) for k in keys}
        self.first = key_fingerprint(keys[0])

    def for_id(self, key_id: str | None, address: StoreAddress) -> Fernet:
        fernet = self.by_id.get(key_id or self.first)
        if fernet is None:
            raise wrong_key(address)
        return fernet


def wrong_key(address: StoreAddress) -> StorageError:
    return StorageError(
        f"The store key here is not the one the secrets in {address.description} were written "
        "with, so nothing was read or changed. Copy the key from a host that works: "
        "xero-tui store key --export | ssh THIS-HOST xero-tui store key --import."
    )


# ---------------------------------------------------------------------------------------------
# The database


class Database:
    """One store's connection, shared by the threads of a process and made again after the
    server restarts; every failure is a StorageError sentence naming the store."""

    def __init__(self, address: StoreAddress) -> None:
        self.address = address
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.RLock()

    @property
    def description(self) -> str:
        return self.address.description

    def unreachable(self, exc: BaseException, doing: str = "reach") -> StorageError:
        return StorageError(f"Could not {doing} {self.description}: {_reason(exc)}.")

    def session(self, *, autocommit: bool) -> psycopg.Connection[Any]:
        """A new connection of its own (a refresh's lock is held by its session)."""
        pg = _psycopg()
        try:
            conn: psycopg.Connection[Any] = pg.connect(
                self.address.url,
                autocommit=autocommit,
                connect_timeout=CONNECT_TIMEOUT,
                application_name="xero-tui",
            )
        except pg.Error as exc:
            raise self.unreachable(exc) from None
        return conn

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = self.session(autocommit=True)
            try:
                ensure_schema(conn, self.address)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def run(
        self,
        work: Callable[[psycopg.Connection[Any]], T],
        doing: str = "use",
        *,
        read: bool = False,
    ) -> T:
        """`work` on the shared connection, under this process's lock for it.

        A connection the server dropped since its last use (a restart) is found on its next
        use: a `read` is then tried once more on a new connection; anything else is said, and
        the next call connects again."""
        pg = _psycopg()
        with self._lock:
            reused = self._conn is not None and not self._conn.closed
            conn = self._connection()
            try:
                return work(conn)
            except pg.errors.LockNotAvailable:
                raise StoreBusy(
                    f"Could not {doing} {self.description}: another session kept what this "
                    "needed locked for too long; try again."
                ) from None
            except pg.OperationalError as exc:
                conn.close()
                if not (read and reused):
                    raise self.unreachable(exc, doing) from None
            except pg.Error as exc:
                # Refused privileges, a table changed by hand, a constraint: said, not raised.
                raise self.unreachable(exc, doing) from None
            conn = self._connection()
            try:
                return work(conn)
            except pg.Error as exc:
                conn.close()
                raise self.unreachable(exc, doing) from None

    def set_up(self) -> None:
        """Connect: the schema is created or migrated on every first connection."""
        self.run(lambda conn: None, "set up")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


_databases: dict[str, Database] = {}
_databases_lock = threading.Lock()


def database(address: StoreAddress) -> Database:
    """The process's one `Database` for a store."""
    with _databases_lock:
        db = _databases.get(address.url)
        if db is None:
            db = _databases[address.url] = Database(address)
        return db


def schema_version(conn: psycopg.Connection[Any]) -> int | None:
    """The store's schema version, or None when it has no schema yet."""
    pg = _psycopg()
    try:
        row = conn.execute("SELECT max(version) FROM xero_tui.schema_version").fetchone()
    except (pg.errors.UndefinedTable, pg.errors.InvalidSchemaName):
        return None
    return int(row[0]) if row is not None and row[0] is not None else 0


def ensure_schema(conn: psycopg.Connection[Any], address: StoreAddress) -> bool:
    """Create or migrate the schema; True when something was applied. `conn` is autocommit."""
    pg = _psycopg()
    try:
        if schema_version(conn) == SCHEMA_VERSION:
            return False
        with conn.transaction():
            # Two first users at once: one applies, the other waits (bounded) and finds it done.
            bound_lock_wait(conn)
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("CREATE SCHEMA IF NOT EXISTS xero_tui")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS xero_tui.schema_version ("
                "version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())"
            )
            current = schema_version(conn) or 0
            if current > SCHEMA_VERSION:
                raise StorageError(
                    f"{address.description} was set up by a newer xero-tui (schema {current}; "
                    f"this one knows {SCHEMA_VERSION}): upgrade xero-tui on this host."
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO xero_tui.schema_version (version) VALUES (%s)", (version,)
                )
    except pg.errors.LockNotAvailable:
        raise StorageError(
            f"Another host has been setting up the tables in {address.description} for over "
            f"{RECORDS_LOCK_TIMEOUT:.0f} s; try again."
        ) from None
    except pg.Error as exc:
        raise StorageError(
            f"Could not set up the tables in {address.description}: {_reason(exc)}."
        ) from None
    return True


# ---------------------------------------------------------------------------------------------
# Records


def lock_records(conn: psycopg.Connection[Any]) -> dict[Record, dict[str, Any]]:
    """Inside a transaction: every record, with the writers' turn (the `records` row of
    `xero_tui.meta`) held until the transaction ends; the wait for it is bounded."""
    bound_lock_wait(conn)
    conn.execute("SELECT value FROM xero_tui.meta WHERE name = 'records' FOR UPDATE")
    return read_records(conn)


def read_records(conn: psycopg.Connection[Any]) -> dict[Record, dict[str, Any]]:
    rows = conn.execute("SELECT section, key, body FROM xero_tui.records").fetchall()
    return {(section, key): body for section, key, body in rows}


def write_records(
    conn: psycopg.Connection[Any],
    changed: Mapping[Record, dict[str, Any]],
    gone: Iterable[Record] = (),
) -> None:
    """Inside `lock_records`' transaction: write `changed` (added or replaced), delete `gone`."""
    from psycopg.types.json import Jsonb

    for section, key in gone:
        conn.execute("DELETE FROM xero_tui.records WHERE section = %s AND key = %s", (section, key))
    for (section, key), body in changed.items():
        conn.execute(
            "INSERT INTO xero_tui.records (section, key, body) VALUES (%s, %s, %s) "
            "ON CONFLICT (section, key) DO UPDATE SET body = excluded.body, updated = now()",
            (section, key, Jsonb(body)),
        )


class RecordStore:
    """The shared grants, connections and pending sign-ins: `load` and `update`, as the local
    ConfigStore has them."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def load(self) -> Config:
        return self._config(self.db.run(read_records, "read the connections in", read=True))

    def _config(self, rows: Mapping[Record, dict[str, Any]]) -> Config:
        return from_records(rows, self.db.description, self.db.address.url)

    def update(self, change: Callable[[Config], T]) -> T:
        """Apply `change` to the freshest records in one transaction, writers taking turns;
        only the records that changed are written."""

        def work(conn: psycopg.Connection[Any]) -> T:
            with conn.transaction():
                config = self._config(lock_records(conn))
                before = records(config)
                result = change(config)
                after = records(config)
                try:
                    self._config(after)
                except ConfigError as exc:
                    raise ConfigError(
                        f"The change would not read back ({exc}); {self.db.description} was "
                        "left as it was."
                    ) from None
                changed = {key: body for key, body in after.items() if before.get(key) != body}
                write_records(conn, changed, [key for key in before if key not in after])
                return result

        try:
            return self.db.run(work, "save to")
        except StoreBusy:
            raise StorageError(
                f"Another host has been changing the connections in {self.db.description} for "
                f"over {RECORDS_LOCK_TIMEOUT:.0f} s; try again."
            ) from None


# ---------------------------------------------------------------------------------------------
# Secrets


KeySource = Callable[[], list[bytes]]


class DatabaseSecrets(SecretStore):
    """Secrets as Fernet tokens in `xero_tui.secrets`; the key comes from `keys` (the local
    keyring or secrets file, or XERO_TUI_STORE_KEY) on first use."""

    kind: StorageKind = "database"

    def __init__(self, db: Database, keys: KeySource) -> None:
        self.db = db
        self._keys = keys
        self._cipher: _Cipher | None = None

    @property
    def description(self) -> str:
        return f"{self.db.description} (encrypted)"

    def cipher(self, key_id: str | None = None) -> _Cipher:
        """This host's keys, read again when the store names one they lack: a rotation on this
        host, or a key imported since, is then used without restarting the process."""
        cipher = self._cipher
        if cipher is None or (key_id is not None and key_id not in cipher.by_id):
            cipher = self._cipher = _Cipher(self._keys())
        return cipher

    def _read_key_id(self, conn: psycopg.Connection[Any]) -> str | None:
        row = conn.execute(
            "SELECT value FROM xero_tui.meta WHERE name = %s FOR SHARE", (_KEY_ID,)
        ).fetchone()
        return None if row is None else str(row[0])

    def writer(self, conn: psycopg.Connection[Any]) -> Fernet:
        """Inside a transaction: the key to write with, the store's, held against a rotation
        (FOR SHARE) until the transaction ends. The first writer names the key."""
        cipher = self.cipher()
        key_id = self._read_key_id(conn)
        if key_id is None:
            conn.execute(
                "INSERT INTO xero_tui.meta (name, value) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (_KEY_ID, cipher.first),
            )
            key_id = self._read_key_id(conn)
        return self.cipher(key_id).for_id(key_id, self.db.address)

    def decrypt(self, fernet: Fernet, key: str, token: str) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise StorageError(
                f"The value for {key} in {self.db.description} does not decrypt with the store "
                "key; it was written with another key, or changed in the database."
            ) from None

    def get(self, key: str) -> str | None:
        return self.get_many([key])[key]

    def get_many(self, keys: list[str]) -> dict[str, str | None]:
        self.cipher()

        def read(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
            # The key's fingerprint comes in the same round trip as the values.
            return conn.execute(
                "SELECT '', value FROM xero_tui.meta WHERE name = %s UNION ALL "
                "SELECT key, value FROM xero_tui.secrets WHERE key = ANY(%s)",
                (_KEY_ID, keys),
            ).fetchall()

        rows = self.db.run(read, "read the secrets in", read=True)
        key_id = next((value for key, value in rows if key == ""), None)
        found = {key: value for key, value in rows if key != ""}
        cipher = self.cipher(key_id)
        if not found:
            if key_id is not None and key_id not in cipher.by_id:
                raise wrong_key(self.db.address)
            return dict.fromkeys(keys)
        fernet = cipher.for_id(key_id, self.db.address)
        return {k: self.decrypt(fernet, k, found[k]) if k in found else None for k in keys}

    def _write(self, work: Callable[[psycopg.Connection[Any], Fernet], None]) -> None:
        def run(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                bound_lock_wait(conn)
                work(conn, self.writer(conn))

        self.db.run(run, "save to")

    def set(self, key: str, value: str) -> None:
        self.put_many({key: value})

    def _put_checked(self, key: str, value: str) -> None:
        # A committed write is kept: the database answers only once it is durable.
        self.put_many({key: value})

    def put_many(self, values: dict[str, str]) -> None:
        def work(conn: psycopg.Connection[Any], fernet: Fernet) -> None:
            for key, value in values.items():
                upsert_secret(conn, fernet, key, value)

        self._write(work)

    def delete(self, key: str) -> None:
        self.delete_many([key])

    def delete_many(self, keys: list[str]) -> None:
        def work(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                bound_lock_wait(conn)
                conn.execute("DELETE FROM xero_tui.secrets WHERE key = ANY(%s)", (keys,))

        self.db.run(work, "delete from")


def bound_lock_wait(conn: psycopg.Connection[Any]) -> None:
    """Inside a transaction: a lock another session holds is waited for a bounded time."""
    conn.execute(f"SET LOCAL lock_timeout = '{RECORDS_LOCK_TIMEOUT:.0f}s'")


def upsert_secret(conn: psycopg.Connection[Any], fernet: Fernet, key: str, value: str) -> None:
    token = fernet.encrypt(value.encode("utf-8")).decode("ascii")
    conn.execute(
        "INSERT INTO xero_tui.secrets (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
        "SET value = excluded.value, writes = xero_tui.secrets.writes + 1, updated = now()",
        (key, token),
    )


# ---------------------------------------------------------------------------------------------
# A grant's refresh lock


class RowLock:
    """A grant's refresh lock: its row of `xero_tui.grant_locks`, held FOR UPDATE by a session
    of its own. `store_tokens` writes the rotated tokens and commits in that same transaction,
    which ends the lock; a host that dies holding it ends its session, and the lock with it."""

    def __init__(self, secrets: DatabaseSecrets, grant_id: str, users: Callable[[], str]) -> None:
        self.secrets = secrets
        self.grant_id = grant_id
        self.users = users
        self._conn: psycopg.Connection[Any] | None = None

    @property
    def db(self) -> Database:
        return self.secrets.db

    def acquire(self) -> RowLock:
        pg = _psycopg()
        conn = self.db.session(autocommit=False)
        try:
            conn.execute(f"SET LOCAL lock_timeout = '{GRANT_LOCK_TIMEOUT:.0f}s'")
            # The store key first, as a rotation takes it: held FOR SHARE until the rotated token
            # is committed, so that a rotation waits for this refresh (rather than deadlocking
            # with its write, or re-encrypting around it when the grant's row is new).
            conn.execute("SELECT value FROM xero_tui.meta WHERE name = %s FOR SHARE", (_KEY_ID,))
            conn.execute(
                "INSERT INTO xero_tui.grant_locks (grant_id) VALUES (%s) ON CONFLICT DO NOTHING",
                (self.grant_id,),
            )
            conn.execute(
                "SELECT grant_id FROM xero_tui.grant_locks WHERE grant_id = %s FOR UPDATE",
                (self.grant_id,),
            )
        except pg.errors.LockNotAvailable:
            conn.close()
            raise StorageError(
                f"Another host has been refreshing {self.users()} for over "
                f"{GRANT_LOCK_TIMEOUT:.0f} s (it holds the grant's lock in "
                f"{self.db.description}); try again."
            ) from None
        except pg.Error as exc:
            conn.close()
            raise self.db.unreachable(exc, "lock a grant in") from None
        self._conn = conn
        return self

    def store_tokens(self, tokens: TokenSet, replaced: TokenSet) -> None:
        """Write `tokens` and commit, in the lock's own transaction. When that session is gone
        (the server restarted), a new one takes the lock again and writes them only if the
        store still holds `replaced`: another host may have refreshed meanwhile."""
        from xero_tui.core.secrets import encode_tokens

        pg = _psycopg()
        key = grant_key(self.grant_id)
        if self._conn is None:
            self.acquire()
            try:
                current = self.secrets.get_tokens(self.grant_id)
            except BaseException:
                # Not kept: a retry must take the lock and compare again, never write blind.
                self.release()
                raise
            # Compared as stored: what Xero answered has an id token the store does not keep.
            # Tokens gone meanwhile mean the grant was removed: not brought back.
            if current is None or encode_tokens(current) != encode_tokens(replaced):
                self.release()
                return
        conn = self._conn
        assert conn is not None
        try:
            upsert_secret(conn, self.secrets.writer(conn), key, encode_tokens(tokens))
            conn.commit()
        except pg.Error as exc:
            self.release()
            raise self.db.unreachable(exc, "save the rotated token to") from None
        self.release()

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # Closing ends the transaction: a lock not used to store anything is let go as is.
            conn.close()
