"""The shared store's key: where a host keeps it, making one, copying it, and rotating it.

A host's key comes from XERO_TUI_STORE_KEY (one or more Fernet keys, the first used for new
writes) or else from the local secret store (the keyring, or the 0600 file when the local config
says so), under a name that includes the store's host and database. The database keeps only
the key's fingerprint.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xero_tui.core.errors import StorageError, UsageError
from xero_tui.core.pgstore import (
    _KEY_ID,
    GRANT_LOCK_TIMEOUT,
    StoreAddress,
    StoreBusy,
    _Cipher,
    key_fingerprint,
    new_key,
    parse_keys,
    wrong_key,
)
from xero_tui.core.secrets import SecretStore

if TYPE_CHECKING:
    import psycopg

    from xero_tui.core.pgstore import Database

ENV_STORE_KEY = "XERO_TUI_STORE_KEY"
COPY_HINT = "xero-tui store key --export | ssh OTHER-HOST xero-tui store key --import"


def keys_from_env() -> list[bytes] | None:
    text = os.environ.get(ENV_STORE_KEY, "").strip()
    if not text:
        return None
    try:
        return parse_keys(text)
    except ValueError as exc:
        raise StorageError(f"{ENV_STORE_KEY} is not a store key: {exc}.") from None


def local_keys(address: StoreAddress, local: Callable[[], SecretStore]) -> list[bytes]:
    """This host's keys for the store; a sentence saying how to get one when there is none."""
    from_env = keys_from_env()
    if from_env is not None:
        return from_env
    try:
        store = local()
        value = store.get(address.key_name)
    except StorageError as exc:
        raise StorageError(
            f"{exc} The key for {address.description} can come from {ENV_STORE_KEY} instead."
        ) from None
    if value is None:
        raise StorageError(
            f"This host has no key for {address.description}: run `xero-tui store key` where "
            f"the store was set up and copy it here ({COPY_HINT}), or set {ENV_STORE_KEY}."
        )
    try:
        return parse_keys(value)
    except ValueError as exc:
        raise StorageError(
            f"The key for {address.description} in the {store.description} is damaged ({exc})."
        ) from None


@dataclass(frozen=True)
class KeyState:
    """What `store key` found: where this host's key is, and whether it was just made."""

    where: str
    created: bool


def _store_key_id(db: Database) -> str | None:
    def read(conn: psycopg.Connection[Any]) -> str | None:
        row = conn.execute("SELECT value FROM xero_tui.meta WHERE name = %s", (_KEY_ID,)).fetchone()
        return None if row is None else str(row[0])

    return db.run(read, "read")


def ensure_key(db: Database, local: SecretStore) -> KeyState:
    """This host's key, made (and saved in `local`) when there is none and the store has none
    either. A store that has a key already is never given a second one, and a host key it
    does not know is refused."""
    address = db.address
    key_id = _store_key_id(db)
    from_env = keys_from_env()
    if from_env is not None:
        _check_known(db, from_env, key_id)
        return KeyState(ENV_STORE_KEY, False)
    value = local.get(address.key_name)
    if value is not None:
        _check_known(db, parse_keys(value), key_id)
        return KeyState(local.description, False)
    if key_id is not None:
        raise StorageError(
            f"{address.description} already has secrets under a key this host lacks: copy it "
            f"from a host that works ({COPY_HINT}), or set {ENV_STORE_KEY}."
        )
    local.put(address.key_name, new_key().decode("ascii"))
    return KeyState(local.description, True)


def _check_known(db: Database, keys: list[bytes], key_id: str | None) -> None:
    """Refuse keys the store's key is not among (a store with no key yet takes any)."""
    if key_id is not None and key_id not in {key_fingerprint(k) for k in keys}:
        raise wrong_key(db.address)


def import_key(db: Database, local: SecretStore, text: str) -> str:
    """Save a key copied from another host, after checking that the store knows it; returns
    where it went. A wrong key changes nothing."""
    try:
        keys = parse_keys(text)
    except ValueError as exc:
        raise UsageError(f"That is not a store key: {exc}.") from None
    _check_known(db, keys, _store_key_id(db))
    local.put(db.address.key_name, b",".join(keys).decode("ascii"))
    return local.description


def rotate_key(db: Database, local: SecretStore) -> int:
    """Re-encrypt every secret in the store under a new key, in one transaction; returns how
    many. The new key is saved beside the old one first, so a failure leaves a host that can
    read either; the old one is dropped once the database has committed."""
    if keys_from_env() is not None:
        raise UsageError(
            f"The key comes from {ENV_STORE_KEY} here: rotate it on a host that keeps it in its "
            "keyring or secrets file, then set the new key here."
        )
    address = db.address
    old_text = local.get(address.key_name)
    if old_text is None:
        raise StorageError(f"This host has no key for {address.description} to rotate.")
    old = parse_keys(old_text)
    fresh = new_key()
    local.put(address.key_name, b",".join([fresh, *old]).decode("ascii"))
    cipher = _Cipher([fresh, *old])

    def work(conn: psycopg.Connection[Any]) -> int:
        with conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = '{GRANT_LOCK_TIMEOUT:.0f}s'")
            row = conn.execute(
                "SELECT value FROM xero_tui.meta WHERE name = %s FOR UPDATE", (_KEY_ID,)
            ).fetchone()
            if row is not None and str(row[0]) not in cipher.by_id:
                raise wrong_key(address)
            # No refresh may be between its read and its write while the rows change key: each
            # holds the key's row FOR SHARE from before it locks its grant, so the FOR UPDATE
            # above has waited for it.
            conn.execute("SELECT grant_id FROM xero_tui.grant_locks ORDER BY grant_id FOR UPDATE")
            from cryptography.fernet import MultiFernet

            both = MultiFernet(list(cipher.by_id.values()))
            rows = conn.execute("SELECT key, value FROM xero_tui.secrets FOR UPDATE").fetchall()
            for key, value in rows:
                token = both.rotate(value.encode("ascii")).decode("ascii")
                conn.execute(
                    "UPDATE xero_tui.secrets SET value = %s, updated = now() WHERE key = %s",
                    (token, key),
                )
            conn.execute(
                "INSERT INTO xero_tui.meta (name, value) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (_KEY_ID, key_fingerprint(fresh)),
            )
            return len(rows)

    try:
        count = db.run(work, "re-encrypt the secrets in")
    except StoreBusy:
        raise StorageError(
            f"A refresh held a grant in {address.description} for over "
            f"{GRANT_LOCK_TIMEOUT:.0f} s; nothing was re-encrypted. Try again."
        ) from None
    try:
        local.put(address.key_name, fresh.decode("ascii"))
    except StorageError as exc:
        raise StorageError(
            f"Re-encrypted {count} secrets in {address.description} under a new key, but the "
            f"old key could not be dropped from the {local.description} ({exc}); the new one is "
            f"kept beside it, so this host reads on. Other hosts need the new key: {COPY_HINT}."
        ) from None
    return count
