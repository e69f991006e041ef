"""Keyring backends that misbehave the way real ones do: hang, raise, drop writes, rank too low.

Each can be passed to the stores in-process, or named in PYTHON_KEYRING_BACKEND for a child
process (e.g. `tests.support.keyring_faults.HangingKeyring`).
"""

from __future__ import annotations

import threading
import time

from keyring.backend import KeyringBackend
from keyring.backends import chainer, fail, null
from keyring.errors import KeyringLocked, PasswordDeleteError

from tests.support.keyring_backend import FileKeyring


class MemoryKeyring(KeyringBackend):
    """A working backend kept in memory."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.values.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.values[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if (service, username) not in self.values:
            raise PasswordDeleteError("not found")
        del self.values[(service, username)]


class HangingKeyring(KeyringBackend):
    """A locked keyring whose unlock prompt nobody answers: every call blocks for 30 s.

    Tests set `release` when done so that abandoned calls end early.
    """

    priority = 1  # type: ignore[assignment]
    hang_seconds = 30.0
    release = threading.Event()

    def _hang(self) -> None:
        self.release.wait(self.hang_seconds)

    def get_password(self, service: str, username: str) -> str | None:
        self._hang()
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        self._hang()

    def delete_password(self, service: str, username: str) -> None:
        self._hang()


class RaisingKeyring(KeyringBackend):
    """A backend that fails every call; its errors even repeat the value, as careless ones do."""

    priority = 1  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        raise KeyringLocked(f"collection is locked, cannot read {username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise KeyringLocked(f"collection is locked, cannot store {username}={password}")

    def delete_password(self, service: str, username: str) -> None:
        raise KeyringLocked("collection is locked")


class DroppingKeyring(KeyringBackend):
    """Accepts every write and keeps nothing, like a misconfigured or null-like backend."""

    priority = 1  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        return None

    def delete_password(self, service: str, username: str) -> None:
        raise PasswordDeleteError("not found")


class LowPriorityKeyring(MemoryKeyring):
    """Works, but ranks below 1, as keyrings.alt's plaintext backends do."""

    priority = 0.5  # type: ignore[assignment]


class EmptyChainer(chainer.ChainerBackend):
    """A chainer whose only members are the null and fail backends."""

    backends = [null.Keyring(), fail.Keyring()]  # type: ignore[assignment]


# Backends that read what the test keyring holds but fail to write, as a keyring that locks
# between the read and the write of a refresh does: Xero has rotated the token by then.
# Named in PYTHON_KEYRING_BACKEND for a child process; the test keyring file is the one given
# by XERO_TUI_TEST_KEYRING.


class HangingWritesKeyring(FileKeyring):
    """Reads work; every write or delete blocks for 30 s (an unlock prompt nobody answers)."""

    def set_password(self, service: str, username: str, password: str) -> None:
        time.sleep(30)

    def delete_password(self, service: str, username: str) -> None:
        time.sleep(30)


class RaisingWritesKeyring(FileKeyring):
    """Reads work; every write fails, repeating the value in its error as careless ones do."""

    def set_password(self, service: str, username: str, password: str) -> None:
        raise KeyringLocked(f"collection is locked, cannot store {username}={password}")


class DroppingWritesKeyring(FileKeyring):
    """Reads work; writes are accepted and dropped."""

    def set_password(self, service: str, username: str, password: str) -> None:
        return None
