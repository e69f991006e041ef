"""The secret store: client secrets and token sets, in the system keyring or an opt-in 0600 file.

Keys are `client-secret:<client_id>` and `grant:<grant_id>` under the service `xero-tui`.
Every keyring call runs in a daemon thread with a timeout, because a locked keyring can block
forever and must neither freeze the UI nor keep the process from exiting. Every write is read
back, because some backends accept a value and drop it. No message ever contains a secret.

`keyring` is imported on first use, not here: importing it takes about as long as the whole
`token` command otherwise does (jaraco's helpers pull in urllib, http and email), and neither
the TUI's first screen nor `list` touches a secret.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
import tomllib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from xero_tui.core.config import toml_key, toml_string
from xero_tui.core.errors import ConfigError, KeyringUnavailable, StorageError, clean_text
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
from xero_tui.core.models import TokenSet
from xero_tui.core.paths import Paths

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend
    from keyring.backends.chainer import ChainerBackend

SERVICE = "xero-tui"
DEFAULT_TIMEOUT = 5.0
# The two ways on when the keyring cannot be used, as the command line offers them; each screen
# says its own (a key to press) after the problem alone.
CHOICES = (
    "start or unlock a Secret Service (such as gnome-keyring), or keep secrets in a 0600 file: "
    '--insecure-storage, or secret_storage = "file" in the config'
)
NO_KEYRING = "No keyring is available: no Secret Service runs here (usual over SSH)."
_FILE_SCHEMA = 1
T = TypeVar("T")
StorageKind = Literal["keyring", "file", "database"]


def client_secret_key(client_id: str) -> str:
    return f"client-secret:{client_id}"


def grant_key(grant_id: str) -> str:
    return f"grant:{grant_id}"


def encode_tokens(tokens: TokenSet) -> str:
    """Compact JSON of what a refresh needs; the id token is not kept."""
    data = {
        "access_token": tokens.access_token,
        "expires_at": tokens.expires_at,
        "refresh_token": tokens.refresh_token,
        "scopes": list(tokens.scopes),
    }
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def decode_tokens(text: str) -> TokenSet:
    """Raises ValueError (without quoting `text`) when it is not a stored token set."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError("not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    access = data.get("access_token")
    expires = data.get("expires_at")
    refresh = data.get("refresh_token")
    scopes = data.get("scopes", [])
    if not isinstance(access, str):
        raise ValueError("access_token is not a string")
    if isinstance(expires, bool) or not isinstance(expires, int | float):
        raise ValueError("expires_at is not a number")
    if refresh is not None and not isinstance(refresh, str):
        raise ValueError("refresh_token is not a string")
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise ValueError("scopes is not a list of strings")
    return TokenSet(access, float(expires), refresh, tuple(scopes))


def _hidden_parts(value: str) -> list[str]:
    """The value and, for a token set, each token in it: none may reach a message."""
    parts = [value]
    if value.startswith("{"):
        try:
            data = json.loads(value)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            parts += [v for v in data.values() if isinstance(v, str)]
    return [part for part in parts if len(part) >= 4]


def _scrub(text: str, hide: Iterable[str]) -> str:
    for part in sorted(hide, key=len, reverse=True):
        text = text.replace(part, "[hidden]")
    return text


class SecretStore(ABC):
    """Where secrets live; `description` is what every screen and `status` shows."""

    kind: StorageKind

    @property
    @abstractmethod
    def description(self) -> str: ...

    @abstractmethod
    def get(self, key: str) -> str | None: ...

    @abstractmethod
    def set(self, key: str, value: str) -> None: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key`; a key that is not there is not an error."""

    def take_warning(self) -> str | None:
        """A warning about how the secrets were kept until now, if there is one; said once."""
        return None

    def _not_kept(self, key: str) -> StorageError:
        return StorageError(
            f"The {self.description} did not keep the value for {key} "
            "(reading it back gave something else)."
        )

    def _put_checked(self, key: str, value: str) -> None:
        self.set(key, value)
        if self.get(key) != value:
            raise self._not_kept(key)

    def put(self, key: str, value: str) -> None:
        """Save and read back; raises StorageError when the store did not keep it."""
        self._put_checked(key, value)

    def get_many(self, keys: list[str]) -> dict[str, str | None]:
        """Several values at once; stores that pay per call override this."""
        return {key: self.get(key) for key in keys}

    def delete_many(self, keys: list[str]) -> None:
        """Remove several keys; stores that pay per call override this."""
        for key in keys:
            self.delete(key)

    def put_many(self, values: dict[str, str]) -> None:
        """Save several values and read them back; raises StorageError naming one not kept."""
        for key, value in values.items():
            self._put_checked(key, value)

    def get_tokens(self, grant_id: str) -> TokenSet | None:
        return self._tokens(grant_id, self.get(grant_key(grant_id)))

    def get_many_tokens(self, grant_ids: list[str]) -> dict[str, TokenSet | None]:
        return self.get_tokens_and_secrets(grant_ids, [])[0]

    def get_tokens_and_secret(
        self, grant_id: str, client_id: str | None
    ) -> tuple[TokenSet | None, str | None]:
        """A grant's tokens and (unless `client_id` is None) its app's client secret, together."""
        client_ids = [] if client_id is None else [client_id]
        tokens, secrets = self.get_tokens_and_secrets([grant_id], client_ids)
        return tokens[grant_id], secrets.get(client_id) if client_id is not None else None

    def get_tokens_and_secrets(
        self, grant_ids: list[str], client_ids: list[str]
    ) -> tuple[dict[str, TokenSet | None], dict[str, str | None]]:
        """Several grants' tokens and several apps' client secrets, in one read."""
        keys = [grant_key(g) for g in grant_ids] + [client_secret_key(c) for c in client_ids]
        values = self.get_many(keys)
        tokens = {g: self._tokens(g, values[grant_key(g)]) for g in grant_ids}
        return tokens, {c: values[client_secret_key(c)] for c in client_ids}

    def _tokens(self, grant_id: str, value: str | None) -> TokenSet | None:
        if value is None:
            return None
        try:
            return decode_tokens(value)
        except ValueError as exc:
            raise StorageError(
                f"The tokens saved for grant {grant_id} in the {self.description} cannot be "
                f"read ({exc}); reconnect to replace them."
            ) from None

    def put_tokens(self, grant_id: str, tokens: TokenSet) -> None:
        """Save and read back; raises StorageError when the store did not keep them."""
        self._put_checked(grant_key(grant_id), encode_tokens(tokens))

    def delete_tokens(self, grant_id: str) -> None:
        self.delete(grant_key(grant_id))

    def get_client_secret(self, client_id: str) -> str | None:
        return self.get(client_secret_key(client_id))

    def put_client_secret(self, client_id: str, secret: str) -> None:
        """Save and read back; raises StorageError when the store did not keep it."""
        self._put_checked(client_secret_key(client_id), secret)

    def delete_client_secret(self, client_id: str) -> None:
        self.delete(client_secret_key(client_id))


# ---------------------------------------------------------------------------------------------
# Keyring


class _NoAnswer(Exception):
    """The call was still running when its time was up."""


def _seconds(timeout: float) -> str:
    return f"{timeout:g} s"


def run_with_timeout(fn: Callable[[], T], timeout: float, name: str = "xero-tui keyring") -> T:
    """Run `fn` in a daemon thread and wait at most `timeout` seconds for it.

    A daemon thread rather than an executor: a hung call is abandoned, and it must not keep
    the interpreter from exiting (executor threads are joined at exit). Raises `_NoAnswer`
    on timeout, or whatever `fn` raised.
    """
    outcome: list[tuple[bool, Any]] = []
    done = threading.Event()

    def work() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as exc:
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=work, name=name, daemon=True).start()
    if not done.wait(timeout):
        raise _NoAnswer
    ok, value = outcome[0]
    if not ok:
        raise value
    result: T = value
    return result


def no_keyring() -> KeyringUnavailable:
    return KeyringUnavailable(NO_KEYRING, f"To go on, {CHOICES}.")


def _no_keyring(exc: Exception) -> bool:
    from keyring.errors import NoKeyringError

    return isinstance(exc, NoKeyringError)


def backend_label(backend: KeyringBackend) -> str:
    """A short name for a backend: `SecretService`, `kwallet`, `macOS`, or the class name."""
    from keyring.backends import chainer, fail

    if isinstance(backend, fail.Keyring):
        # keyring's stand-in when it found no backend: "fail" would read as a verdict.
        return "none available"
    if isinstance(backend, chainer.ChainerBackend):
        inner = [backend_label(b) for b in _chained(backend)]
        return " + ".join(inner) if inner else "no backend"
    cls = type(backend)
    if cls.__name__ == "Keyring":
        return cls.__module__.rsplit(".", 1)[-1]
    return cls.__name__


def _chained(backend: ChainerBackend) -> list[KeyringBackend]:
    try:
        return list(backend.backends)
    except Exception:
        return []


def _priority(backend: KeyringBackend) -> float:
    try:
        return float(backend.priority)
    except Exception:
        # A backend whose priority check fails is not viable here.
        return 0.0


def unusable_reason(backend: KeyringBackend) -> str | None:
    """Why this backend cannot keep secrets, or None when it looks usable."""
    from keyring.backends import chainer, fail, null

    label = backend_label(backend)
    if isinstance(backend, fail.Keyring):
        return NO_KEYRING.removesuffix(".")
    if isinstance(backend, null.Keyring):
        return "The keyring is switched off (null backend, which drops every value)"
    if isinstance(backend, chainer.ChainerBackend):
        if not any(unusable_reason(b) is None for b in _chained(backend)):
            return "No usable keyring backend was found"
        return None
    priority = _priority(backend)
    if priority < 1:
        return f"The keyring backend {label} is not a recommended one (priority {priority:g})"
    return None


class KeyringStore(SecretStore):
    """Secrets in the system keyring; every call gives up after `timeout` seconds."""

    kind: StorageKind = "keyring"

    def __init__(
        self,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        backend: KeyringBackend | None = None,
        service: str = SERVICE,
    ) -> None:
        self.timeout = timeout
        self.service = service
        self._backend = backend
        self._label: str | None = backend_label(backend) if backend is not None else None

    def _resolve(self) -> KeyringBackend:
        # Runs in the worker thread: finding the default backend can itself talk to D-Bus.
        if self._backend is None:
            import keyring

            self._backend = keyring.get_keyring()
            self._label = backend_label(self._backend)
        return self._backend

    @property
    def description(self) -> str:
        if self._label is None:
            try:
                run_with_timeout(self._resolve, self.timeout)
            except Exception:
                return "keyring (not answering)"
        return f"keyring ({self._label})"

    def _timeout_error(self) -> StorageError:
        return StorageError(
            f"The keyring did not answer within {_seconds(self.timeout)} (is it locked?). "
            "Unlock it, or run with --insecure-storage to keep secrets in a 0600 file."
        )

    def _call(self, action: str, key: str, fn: Callable[[KeyringBackend], T], hide: list[str]) -> T:
        try:
            return run_with_timeout(lambda: fn(self._resolve()), self.timeout)
        except _NoAnswer:
            raise self._timeout_error() from None
        except Exception as exc:
            if _no_keyring(exc):
                # keyring's own text ("install the keyrings.alt package") is advice for
                # developers; the user needs to hear what is missing and the ways on.
                raise no_keyring() from None
            reason = clean_text(_scrub(f"{type(exc).__name__}: {exc}", hide), 200)
            label = self._label or "default backend"
            # `from None`: the backend's own exception could carry the value in its text.
            raise StorageError(
                f"The keyring ({label}) could not {action} {key}: {reason}. To go on, {CHOICES}."
            ) from None

    def _not_kept(self, key: str) -> StorageError:
        return StorageError(
            f"The keyring ({self._label}) did not keep the value for {key} "
            f"(reading it back gave something else). To go on, {CHOICES}."
        )

    def _put_checked(self, key: str, value: str) -> None:
        # The write and its read-back in one keyring call: one worker thread, not two.
        def write_and_read(backend: KeyringBackend) -> str | None:
            backend.set_password(self.service, key, value)
            return backend.get_password(self.service, key)

        if self._call("save", key, write_and_read, _hidden_parts(value)) != value:
            raise self._not_kept(key)

    def get(self, key: str) -> str | None:
        def read(backend: KeyringBackend) -> str | None:
            return backend.get_password(self.service, key)

        return self._call("read", key, read, [])

    def get_many(self, keys: list[str]) -> dict[str, str | None]:
        # One worker thread for all of them: a thread hand-off per key costs more than the read
        # while the TUI keeps the interpreter busy.
        def read_all(backend: KeyringBackend) -> dict[str, str | None]:
            return {key: backend.get_password(self.service, key) for key in keys}

        return self._call("read", f"{len(keys)} keys", read_all, [])

    def set(self, key: str, value: str) -> None:
        def write(backend: KeyringBackend) -> None:
            backend.set_password(self.service, key, value)

        self._call("save", key, write, _hidden_parts(value))

    def delete(self, key: str) -> None:
        self.delete_many([key])

    def delete_many(self, keys: list[str]) -> None:
        if not keys:
            return

        def remove(backend: KeyringBackend) -> None:
            from keyring.errors import PasswordDeleteError

            for key in keys:
                with contextlib.suppress(PasswordDeleteError):  # already gone
                    backend.delete_password(self.service, key)

        self._call("delete", keys[0] if len(keys) == 1 else f"{len(keys)} keys", remove, [])


@dataclass(frozen=True)
class ProbeResult:
    """`message` says what is wrong and the command line's ways on; `problem`, when set, only
    what is wrong, for a screen that lists its own choices."""

    ok: bool
    backend: str
    message: str
    problem: str = ""
    # The store is shared (a database): its problems are not solved by a local plain file.
    shared: bool = False


def probe_keyring(
    timeout: float = DEFAULT_TIMEOUT, *, backend: KeyringBackend | None = None
) -> ProbeResult:
    """Check, within `timeout` seconds in total, that the keyring keeps a value.

    Run before the browser opens, so that a keyring that cannot keep the tokens is found before
    the user consents rather than after.
    """
    seen = {"label": backend_label(backend) if backend is not None else "default backend"}

    def work() -> ProbeResult:
        import secrets as _random

        import keyring

        chosen = backend if backend is not None else keyring.get_keyring()
        label = seen["label"] = backend_label(chosen)
        problem = unusable_reason(chosen)
        if problem:
            return refused(label, f"{problem}.")
        key = f"probe:{_random.token_hex(8)}"
        value = _random.token_urlsafe(16)
        try:
            chosen.set_password(SERVICE, key, value)
            got = chosen.get_password(SERVICE, key)
        finally:
            # Nothing may be stored, or the backend already failed above.
            with contextlib.suppress(Exception):
                chosen.delete_password(SERVICE, key)
        if got != value:
            return refused(label, f"The keyring ({label}) did not keep a test value.")
        return ProbeResult(True, label, f"Secrets will be kept in the keyring ({label}).")

    def refused(label: str, problem: str) -> ProbeResult:
        return ProbeResult(False, label, f"{problem} To go on, {CHOICES}.", problem)

    try:
        return run_with_timeout(work, timeout, "xero-tui keyring probe")
    except _NoAnswer:
        label = seen["label"]
        return refused(
            label,
            f"The keyring ({label}) did not answer within {_seconds(timeout)} (is it locked?).",
        )
    except Exception as exc:
        label = seen["label"]
        if _no_keyring(exc):
            return refused(label, NO_KEYRING)
        reason = clean_text(f"{type(exc).__name__}: {exc}", 200)
        return refused(label, f"The keyring ({label}) failed a test write ({reason}).")


# ---------------------------------------------------------------------------------------------
# Plain file


class FileStore(SecretStore):
    """Secrets in `secrets.toml`, 0600 in a 0700 dir, for when no keyring can be used (opt-in)."""

    kind: StorageKind = "file"

    def __init__(self, paths: Paths, lock_timeout: float = 10.0) -> None:
        self.paths = paths
        self.lock_timeout = lock_timeout
        # The mode the file had when it was found readable by others (and tightened), if it was.
        self.was_loose: int | None = None

    @property
    def path(self) -> Path:
        return self.paths.secrets_file

    @property
    def description(self) -> str:
        return f"plain file {self.path}"

    def take_warning(self) -> str | None:
        """What to tell the user, once, when a secrets file others could read was tightened."""
        if self.was_loose is None:
            return None
        mode, self.was_loose = self.was_loose, None
        return (
            f"{self.path} was readable by others (mode {mode:04o}); it is now 0600. "
            "Anyone who read it could use the connections it holds: reconnect them to be sure."
        )

    def _tighten(self) -> None:
        try:
            mode = stat.S_IMODE(os.stat(self.path, follow_symlinks=False).st_mode)
        except OSError:
            return
        if mode & 0o077:
            tighten_file(self.path)
            self.was_loose = mode

    def _not_kept(self, key: str) -> StorageError:
        return StorageError(
            f"The secrets file {self.path} did not keep the value for {key} "
            "(reading it back gave something else); check the disk and the file's owner."
        )

    def _read(self) -> dict[str, str]:
        path = self.path
        try:
            if not check_private_dir(self.paths.config_dir):
                return {}
            text = read_private(path).decode("utf-8")
            self._tighten()
        except ConfigError as exc:
            raise StorageError(str(exc)) from None
        except FileNotFoundError:
            return {}
        except UnicodeDecodeError:
            raise StorageError(f"{path} is not UTF-8 text; fix or move the file.") from None
        except OSError as exc:
            reason = exc.strerror or exc.__class__.__name__
            raise StorageError(f"Could not read {path}: {reason}.") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            # tomllib names the position, never the text, so no secret can leak from here.
            raise StorageError(f"{path}: {exc}; fix or move the file.") from None
        schema = data.get("schema", _FILE_SCHEMA)
        if schema != _FILE_SCHEMA:
            raise StorageError(
                f"{path}: schema {clean_text(str(schema), 20)} is not one this xero-tui reads; "
                "upgrade xero-tui, or move the file."
            )
        table = data.get("secrets", {})
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            raise StorageError(f"{path}: [secrets] must hold only strings; fix or move the file.")
        return table

    def _dump(self, table: dict[str, str]) -> bytes:
        lines = [
            '# xero-tui keeps secrets here because secret_storage is "file" (no keyring).',
            "# Anyone who can read this file can use the Xero connections it holds.",
            f"schema = {_FILE_SCHEMA}",
            "",
            "[secrets]",
        ]
        lines += [f"{toml_key(key)} = {toml_string(table[key])}" for key in sorted(table)]
        return ("\n".join(lines) + "\n").encode("utf-8")

    def _modify(self, change: Callable[[dict[str, str]], None]) -> None:
        path = self.path
        try:
            ensure_private_dir(self.paths.config_dir, for_file=path, follow_symlinks=True)
            ensure_private_dir(self.paths.lock_dir, for_file=path)
        except ConfigError as exc:
            raise StorageError(str(exc)) from None
        with file_lock(self.paths.secrets_lock, self.lock_timeout):
            remove_stale_temps(path)
            table = self._read()
            before = dict(table)
            change(table)
            if table == before and path.exists():
                return
            try:
                atomic_write(path, self._dump(table))
            except ConfigError as exc:
                raise StorageError(str(exc)) from None

    def _clean_if_idle(self) -> None:
        # A writer killed mid-write leaves a temp file holding secrets, and the next start may
        # only read; removed only when no writer holds the lock (a live writer's temp is not stale).
        if not stale_temps(self.path):
            return
        try:
            with file_lock(self.paths.secrets_lock, 0):
                remove_stale_temps(self.path)
        except StorageError:
            pass

    def get(self, key: str) -> str | None:
        # No lock: writers replace the file atomically.
        self._clean_if_idle()
        return self._read().get(key)

    def set(self, key: str, value: str) -> None:
        def put(table: dict[str, str]) -> None:
            table[key] = value

        self._modify(put)

    def delete(self, key: str) -> None:
        self.delete_many([key])

    def delete_many(self, keys: list[str]) -> None:
        def remove(table: dict[str, str]) -> None:
            for key in keys:
                table.pop(key, None)

        if keys and self.path.exists():
            self._modify(remove)

    def put_many(self, values: dict[str, str]) -> None:
        # One locked write and one read-back for all of them, not one of each per value.
        if values:
            self._modify(lambda table: table.update(values))
        kept = self._read()
        for key, value in values.items():
            if kept.get(key) != value:
                raise self._not_kept(key)


def storage_kind(secret_storage: str, *, insecure: bool = False) -> StorageKind:
    """Where secrets live for these settings: the one place that decides "file or keyring"."""
    if insecure or secret_storage == "file":
        return "file"
    if secret_storage == "keyring":
        return "keyring"
    raise StorageError(
        f'Unknown secret storage "{clean_text(secret_storage, 40)}": use "keyring" or "file".'
    )


def open_store(
    paths: Paths,
    secret_storage: str,
    *,
    insecure: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> SecretStore:
    """The store the settings ask for; does not probe the keyring (callers do, before consent)."""
    if storage_kind(secret_storage, insecure=insecure) == "file":
        return FileStore(paths)
    return KeyringStore(timeout)
