"""The connection store: `config.toml`, a human-readable file of grants and named connections.

Readers never lock: every write replaces the whole file atomically, so a reader sees the old
file or the new one. Writers go through `ConfigStore.update`, which locks, re-reads, applies the
change and writes only when something changed. A file that does not parse, or that a newer
version wrote, is reported and never overwritten.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from xero_tui.core.errors import ConfigError, StorageError
from xero_tui.core.fsutil import (
    atomic_write,
    check_private_dir,
    ensure_private_dir,
    read_private,
    remove_stale_temps,
    stale_temps,
    tighten_file,
)
from xero_tui.core.locks import file_lock
from xero_tui.core.models import (
    DEFAULT_REDIRECT_URI,
    Connection,
    Grant,
    Kind,
    PendingSignIn,
    Status,
)
from xero_tui.core.paths import Paths, is_grant_id

SCHEMA = 1
SecretStorage = Literal["keyring", "file"]
SECRET_STORAGES: tuple[SecretStorage, ...] = ("keyring", "file")
T = TypeVar("T")

_FIX = "fix or move the file; xero-tui will not overwrite it"


@dataclass
class Config:
    schema: int = SCHEMA
    secret_storage: SecretStorage = "keyring"
    # A shared store (a PostgreSQL URL): when set, grants, connections and pending sign-ins live
    # there, and a local config keeps only this and its own preferences.
    store: str | None = None
    grants: dict[str, Grant] = field(default_factory=dict)
    connections: dict[str, Connection] = field(default_factory=dict)
    # Sign-ins whose tokens are stored but whose connections are not saved yet, by grant id.
    pending: dict[str, PendingSignIn] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Writing


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ARRAY_INLINE_WIDTH = 100


def toml_string(value: str) -> str:
    # tomli-w escapes what TOML forbids in a basic string; the layout around it stays ours.
    import tomli_w

    return tomli_w.dumps({"v": value})[4:-1]


def toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_string(key)


def _toml_datetime(value: datetime) -> str:
    # UTC with whole seconds: one spelling per instant keeps diffs to real changes.
    utc = value.astimezone(UTC).replace(microsecond=0, tzinfo=None)
    return utc.isoformat() + "Z"


def _toml_value(value: object, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime):
        return _toml_datetime(value)
    if isinstance(value, list | tuple):
        items = [_toml_value(item, key) for item in value]
        inline = f"{key} = [{', '.join(items)}]"
        if len(inline) <= _ARRAY_INLINE_WIDTH:
            return inline[len(key) + 3 :]
        return "[\n" + "".join(f"    {item},\n" for item in items) + "]"
    raise TypeError(f"{key} cannot be saved: {type(value).__name__} is not a config value")


def _table(header: tuple[str, str], fields: list[tuple[str, object]]) -> list[str]:
    lines = ["", f"[{header[0]}.{toml_key(header[1])}]"]
    for key, value in fields:
        if value is not None:
            lines.append(f"{key} = {_toml_value(value, key)}")
    return lines


def _grant_fields(grant: Grant) -> list[tuple[str, object]]:
    return [
        ("kind", Kind(grant.kind).value),
        ("client_id", grant.client_id),
        ("scopes", list(grant.scopes)),
        ("auth_event_id", grant.auth_event_id),
        ("created", grant.created),
        ("last_refreshed", grant.last_refreshed),
    ]


def _pending_fields(pending: PendingSignIn) -> list[tuple[str, object]]:
    return [
        ("name", pending.name),
        ("kind", Kind(pending.kind).value),
        ("client_id", pending.client_id),
        ("scopes", list(pending.scopes)),
        ("redirect_uri", pending.redirect_uri),
        ("pkce", pending.pkce),
        ("auth_event_id", pending.auth_event_id),
        ("renewing", list(pending.renewing) or None),
        ("issued", pending.issued),
    ]


def _connection_fields(conn: Connection) -> list[tuple[str, object]]:
    return [
        ("kind", Kind(conn.kind).value),
        ("client_id", conn.client_id),
        ("tenant_id", conn.tenant_id),
        ("tenant_name", conn.tenant_name),
        ("tenant_type", conn.tenant_type),
        ("connection_id", conn.connection_id),
        ("scopes", list(conn.scopes)),
        ("redirect_uri", conn.redirect_uri),
        ("grant", conn.grant_id),
        ("pkce", conn.pkce),
        ("created", conn.created),
        ("last_refreshed", conn.last_refreshed),
        ("status", Status(conn.status).value),
    ]


def dump(config: Config) -> str:
    """The TOML text for `config`: the same config always gives the same text.

    Tables are sorted by name; fields keep a fixed order that reads top-down. Raises ValueError
    when a dict key disagrees with the id or name of the object stored under it.
    """
    if config.secret_storage not in SECRET_STORAGES:
        raise ValueError(f"secret_storage must be one of {SECRET_STORAGES}")
    lines = [
        f"schema = {int(config.schema)}",
        f"secret_storage = {toml_string(config.secret_storage)}",
    ]
    if config.store is not None:
        lines.append(f"store = {toml_string(config.store)}")
    for grant_id in sorted(config.grants):
        grant = config.grants[grant_id]
        if grant.grant_id != grant_id:
            raise ValueError(f"grant stored under {grant_id!r} has grant_id {grant.grant_id!r}")
        lines += _table(("grants", grant_id), _grant_fields(grant))
    for name in sorted(config.connections):
        conn = config.connections[name]
        if conn.name != name:
            raise ValueError(f"connection stored under {name!r} is named {conn.name!r}")
        lines += _table(("connections", name), _connection_fields(conn))
    for grant_id in sorted(config.pending):
        pending = config.pending[grant_id]
        if pending.grant_id != grant_id:
            raise ValueError(f"sign-in stored under {grant_id!r} has grant_id {pending.grant_id!r}")
        lines += _table(("pending", grant_id), _pending_fields(pending))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Reading


_DECODE_POSITION = re.compile(r"\s*\(at (?:line (\d+), column \d+|end of document)\)\s*$")


def _kind_of(value: object) -> str:
    # Described in TOML's words, since the reader is editing a TOML file.
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, datetime):
        return "a date-time"
    if isinstance(value, date):
        return "a date"
    if isinstance(value, time):
        return "a time"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _header_of(line: str) -> tuple[str, ...] | None:
    """The key path of a `[table]` header line, or None when the line is not one."""
    stripped = line.strip()
    if not stripped.startswith("[") or stripped.startswith("[["):
        return None
    try:
        node: Any = tomllib.loads(stripped)
    except tomllib.TOMLDecodeError:
        return None
    keys: list[str] = []
    while isinstance(node, dict) and len(node) == 1:
        key, node = next(iter(node.items()))
        keys.append(key)
    return tuple(keys) if node == {} else None


def _key_of(line: str) -> str | None:
    stripped = line.strip()
    if not stripped or stripped.startswith(("#", "[")):
        return None
    try:
        parsed = tomllib.loads(stripped)
    except tomllib.TOMLDecodeError:
        return None
    return next(iter(parsed), None)


def _find_line(text: str, table: tuple[str, ...], key: str | None) -> int | None:
    """1-based line of `key` in `table` (or of the table's header), found by reading the text.

    Only used to word an error, so a table written in an unusual way just goes without a line.
    Lines end at "\n" only, as TOML's do: a U+2028 inside a string is not a line break.
    """
    lines = text.split("\n")
    start = 0
    header_line: int | None = None
    if table:
        for index, line in enumerate(lines):
            if _header_of(line) == table:
                start = index + 1
                header_line = index + 1
                break
        else:
            return None
    if key is None:
        return header_line
    for index in range(start, len(lines)):
        if lines[index].lstrip().startswith("[") and _header_of(lines[index]) is not None:
            break
        if _key_of(lines[index]) == key:
            return index + 1
    return header_line


def _table_name(table: tuple[str, ...]) -> str:
    return "[" + ".".join(toml_key(part) for part in table) + "]"


class _Reader:
    """Turns parsed TOML into a Config, with errors that name the file, table, field and line."""

    def __init__(self, path: Path | str, text: str) -> None:
        self.path = path
        self.text = text

    def error(
        self, table: tuple[str, ...], key: str | None, problem: str, fix: str = _FIX
    ) -> ConfigError:
        line = _find_line(self.text, table, key)
        where = f"{self.path} line {line}" if line else f"{self.path}"
        return ConfigError(f"{where}: {problem} — {fix}.")

    def field_error(self, table: tuple[str, ...], key: str, problem: str) -> ConfigError:
        owner = f"{_table_name(table)} field" if table else "field"
        return self.error(table, key, f"{owner} '{key}' {problem}")

    def config(self, data: dict[str, Any]) -> Config:
        schema = data.get("schema", SCHEMA)
        if type(schema) is not int:
            raise self.field_error((), "schema", f"must be an integer, not {_kind_of(schema)}")
        if schema != SCHEMA:
            raise self.error(
                (),
                "schema",
                f"schema = {schema} is not a version this xero-tui reads (it reads {SCHEMA})",
                "a newer xero-tui probably wrote it; upgrade, or move the file aside, "
                "as xero-tui will not overwrite it",
            )
        for key in data:
            if key not in ("schema", "secret_storage", "store", "grants", "connections", "pending"):
                raise self.error((), key, f"unknown setting '{key}'")
        storage = data.get("secret_storage", "keyring")
        if storage not in SECRET_STORAGES:
            raise self.field_error((), "secret_storage", 'must be "keyring" or "file"')
        store = self.optional_string((), data, "store")
        config = Config(schema=schema, secret_storage=cast(SecretStorage, storage), store=store)
        for name, table in self.tables(data, "grants").items():
            config.grants[name] = self.grant(name, table)
        for name, table in self.tables(data, "connections").items():
            config.connections[name] = self.connection(name, table)
        for grant_id, table in self.tables(data, "pending").items():
            config.pending[grant_id] = self.pending(grant_id, table)
        return config

    def tables(self, data: dict[str, Any], section: str) -> dict[str, dict[str, Any]]:
        tables = data.get(section, {})
        if not isinstance(tables, dict):
            raise self.field_error((), section, f"must be a table, not {_kind_of(tables)}")
        for name, table in tables.items():
            if not isinstance(table, dict):
                raise self.field_error((section,), name, f"must be a table, not {_kind_of(table)}")
            if not name.strip():
                raise self.error(
                    (section, name), None, f"{_table_name((section, name))} has a blank name"
                )
        return tables

    def check_fields(
        self, where: tuple[str, ...], table: Mapping[str, Any], known: tuple[str, ...]
    ) -> None:
        for key in table:
            if key not in known:
                raise self.error(where, key, f"{_table_name(where)} has an unknown field '{key}'")

    def string(self, where: tuple[str, ...], table: Mapping[str, Any], key: str) -> str:
        if key not in table:
            raise self.error(where, None, f"{_table_name(where)} is missing the field '{key}'")
        value = table[key]
        if not isinstance(value, str):
            raise self.field_error(where, key, f"must be a string, not {_kind_of(value)}")
        if not value.strip():
            raise self.field_error(where, key, "must not be blank")
        return value

    def optional_string(
        self, where: tuple[str, ...], table: Mapping[str, Any], key: str
    ) -> str | None:
        return self.string(where, table, key) if key in table else None

    def strings(
        self, where: tuple[str, ...], table: Mapping[str, Any], key: str
    ) -> tuple[str, ...]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.field_error(where, key, "must be an array of strings")
        return tuple(value)

    def scopes(self, where: tuple[str, ...], table: Mapping[str, Any]) -> tuple[str, ...]:
        return self.strings(where, table, "scopes")

    def moment(self, where: tuple[str, ...], table: Mapping[str, Any], key: str) -> datetime:
        if key not in table:
            raise self.error(where, None, f"{_table_name(where)} is missing the field '{key}'")
        value = table[key]
        if not isinstance(value, datetime):
            raise self.field_error(
                where, key, f"must be a date-time like 2026-11-28T10:00:00Z, not {_kind_of(value)}"
            )
        # A local date-time written by hand means the local time zone.
        return value if value.tzinfo is not None else value.astimezone()

    def optional_moment(
        self, where: tuple[str, ...], table: Mapping[str, Any], key: str
    ) -> datetime | None:
        return self.moment(where, table, key) if key in table else None

    def kind(self, where: tuple[str, ...], table: Mapping[str, Any]) -> Kind:
        value = self.string(where, table, "kind")
        try:
            return Kind(value)
        except ValueError:
            allowed = ", ".join(f'"{k.value}"' for k in Kind)
            raise self.field_error(where, "kind", f"must be one of {allowed}") from None

    _GRANT_FIELDS = ("kind", "client_id", "scopes", "auth_event_id", "created", "last_refreshed")

    def grant_id(self, where: tuple[str, ...], key: str | None, value: str) -> str:
        # A grant id becomes part of a lock file's name: nothing that could leave the lock dir.
        if not is_grant_id(value):
            raise self.error(
                where,
                key,
                f"the grant id {toml_string(value[:80])} is not one xero-tui makes (up to 64 "
                "letters, digits, '.', '_' and '-', not starting with '.')",
            )
        return value

    def grant(self, grant_id: str, table: dict[str, Any]) -> Grant:
        where = ("grants", grant_id)
        self.grant_id(where, None, grant_id)
        self.check_fields(where, table, self._GRANT_FIELDS)
        return Grant(
            grant_id=grant_id,
            kind=self.kind(where, table),
            client_id=self.string(where, table, "client_id"),
            scopes=self.scopes(where, table),
            created=self.moment(where, table, "created"),
            last_refreshed=self.optional_moment(where, table, "last_refreshed"),
            auth_event_id=self.optional_string(where, table, "auth_event_id"),
        )

    def flag(self, where: tuple[str, ...], table: Mapping[str, Any], key: str) -> bool:
        value = table.get(key, True)
        if not isinstance(value, bool):
            raise self.field_error(where, key, f"must be true or false, not {_kind_of(value)}")
        return value

    _PENDING_FIELDS = (
        "name",
        "kind",
        "client_id",
        "scopes",
        "redirect_uri",
        "pkce",
        "auth_event_id",
        "renewing",
        "issued",
    )

    def pending(self, grant_id: str, table: dict[str, Any]) -> PendingSignIn:
        where = ("pending", grant_id)
        self.grant_id(where, None, grant_id)
        self.check_fields(where, table, self._PENDING_FIELDS)
        return PendingSignIn(
            grant_id=grant_id,
            name=self.string(where, table, "name"),
            kind=self.kind(where, table),
            client_id=self.string(where, table, "client_id"),
            redirect_uri=self.string(where, table, "redirect_uri"),
            scopes=self.scopes(where, table),
            issued=self.moment(where, table, "issued"),
            pkce=self.flag(where, table, "pkce"),
            auth_event_id=self.optional_string(where, table, "auth_event_id"),
            renewing=self.strings(where, table, "renewing"),
        )

    _CONNECTION_FIELDS = (
        "kind",
        "client_id",
        "tenant_id",
        "tenant_name",
        "tenant_type",
        "connection_id",
        "scopes",
        "redirect_uri",
        "grant",
        "pkce",
        "created",
        "last_refreshed",
        "status",
    )

    def connection(self, name: str, table: dict[str, Any]) -> Connection:
        where = ("connections", name)
        self.check_fields(where, table, self._CONNECTION_FIELDS)
        pkce = self.flag(where, table, "pkce")
        status_text = table.get("status", Status.OK.value)
        try:
            status = Status(status_text) if isinstance(status_text, str) else None
        except ValueError:
            status = None
        if status is None:
            allowed = ", ".join(f'"{s.value}"' for s in Status)
            raise self.field_error(where, "status", f"must be one of {allowed}")
        return Connection(
            name=name,
            kind=self.kind(where, table),
            client_id=self.string(where, table, "client_id"),
            tenant_id=self.string(where, table, "tenant_id"),
            tenant_name=self.string(where, table, "tenant_name"),
            grant_id=self.grant_id(where, "grant", self.string(where, table, "grant")),
            redirect_uri=(
                self.string(where, table, "redirect_uri")
                if "redirect_uri" in table
                else DEFAULT_REDIRECT_URI
            ),
            scopes=self.scopes(where, table),
            tenant_type=(
                self.string(where, table, "tenant_type")
                if "tenant_type" in table
                else "ORGANISATION"
            ),
            connection_id=self.optional_string(where, table, "connection_id"),
            created=self.moment(where, table, "created"),
            last_refreshed=self.optional_moment(where, table, "last_refreshed"),
            status=status,
            pkce=pkce,
        )


def parse(text: str, path: Path) -> Config:
    """Read config text; raises ConfigError naming `path` (and the line) when it is not valid."""
    try:
        data = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        position = _DECODE_POSITION.search(message)
        line: int | None = None
        if position:
            message = message[: position.start()]
            line = (
                int(position.group(1))
                if position.group(1)
                else len(text.removesuffix("\n").split("\n"))
            )
        where = f"{path} line {line}" if line else f"{path}"
        raise ConfigError(f"{where}: {message} — {_FIX}.") from None
    return _Reader(path, text).config(data)


# ---------------------------------------------------------------------------------------------
# Records: each grant, connection and pending sign-in on its own, for a shared store's rows

_MOMENTS = frozenset({"created", "last_refreshed", "issued"})
Record = tuple[str, str]


def records(config: Config) -> dict[Record, dict[str, Any]]:
    """Every grant, connection and pending sign-in of `config` as JSON-ready fields, by
    (section, id or name): the same fields, in the same words, as config.toml's tables."""
    out: dict[Record, dict[str, Any]] = {}

    def put(section: str, key: str, fields: list[tuple[str, object]]) -> None:
        body: dict[str, Any] = {}
        for name, value in fields:
            if isinstance(value, datetime):
                body[name] = _toml_datetime(value)
            elif isinstance(value, tuple):
                body[name] = list(value)
            elif value is not None:
                body[name] = value
        out[(section, key)] = body

    for grant_id, grant in config.grants.items():
        put("grants", grant_id, _grant_fields(grant))
    for name, conn in config.connections.items():
        put("connections", name, _connection_fields(conn))
    for grant_id, pending in config.pending.items():
        put("pending", grant_id, _pending_fields(pending))
    return out


def from_records(rows: Mapping[Record, Mapping[str, Any]], where: str, store: str) -> Config:
    """The Config that `records` gave these rows, checked as config.toml's tables are; errors
    name `where` (the store) and the record."""
    reader = _Reader(where, "")
    config = Config(store=store)
    for (section, key), body in sorted(rows.items()):
        table: dict[str, Any] = {}
        for name, value in body.items():
            if name in _MOMENTS and isinstance(value, str):
                try:
                    table[name] = datetime.fromisoformat(value)
                except ValueError:
                    table[name] = value
            else:
                table[name] = value
        if section == "grants":
            config.grants[key] = reader.grant(key, table)
        elif section == "connections":
            config.connections[key] = reader.connection(key, table)
        elif section == "pending":
            config.pending[key] = reader.pending(key, table)
        else:
            raise reader.error((), None, f"unknown record section {section!r}")
    return config


# ---------------------------------------------------------------------------------------------
# The store


class ConfigStore:
    """Loads and changes `config.toml` safely across processes."""

    def __init__(self, paths: Paths, lock_timeout: float = 10.0) -> None:
        self.paths = paths
        self.lock_timeout = lock_timeout

    @property
    def path(self) -> Path:
        return self.paths.config_file

    def _read(self) -> str | None:
        path = self.path
        try:
            raw = read_private(path, through_symlink=True)
        except FileNotFoundError:
            return None
        except OSError as exc:
            reason = exc.strerror or exc.__class__.__name__
            raise ConfigError(f"Could not read {path}: {reason}.") from None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise ConfigError(f"{path} line {line}: the file is not UTF-8 text — {_FIX}.") from None

    def _clean_if_idle(self) -> None:
        # Leftovers of a killed writer: removed only when no writer holds the lock right now.
        if not stale_temps(self.path):
            return
        try:
            with file_lock(self.paths.config_lock, 0):
                remove_stale_temps(self.path)
        except (StorageError, ConfigError):
            pass

    def load(self) -> Config:
        """The saved config (empty when there is no file); takes no lock.

        A config folder that another user owns or can write to is refused (ConfigError), as a
        file planted there would be believed.
        """
        if not check_private_dir(self.paths.config_dir):
            return Config()
        self._clean_if_idle()
        text = self._read()
        return Config() if text is None else parse(text, self.path)

    def update(self, change: Callable[[Config], T]) -> T:
        """Apply `change` to the freshest config under the cross-process lock and save it.

        `change` mutates the Config it is given; its return value is returned. The file is
        written only when the result differs from what was read, and never when the file on
        disk is corrupt or of an unknown version (ConfigError).
        """
        path = self.path
        ensure_private_dir(self.paths.config_dir, for_file=path, follow_symlinks=True)
        ensure_private_dir(self.paths.lock_dir, for_file=path)
        with file_lock(self.paths.config_lock, self.lock_timeout):
            remove_stale_temps(path)
            text = self._read()
            config = Config() if text is None else parse(text, self.path)
            before = dump(config)
            result = change(config)
            try:
                after = dump(config)
                data = after.encode("utf-8")
                # Never write what could not be read back.
                parse(after, path)
            except (ValueError, TypeError, ConfigError) as exc:
                raise ConfigError(
                    f"Could not write {path}: the new settings would not read back ({exc}); "
                    "the file was left as it was."
                ) from None
            if after != before:
                atomic_write(path, data, through_symlink=True)
            elif text is not None:
                tighten_file(path)
        return result
