"""A keyring backend for tests: a JSON file named by XERO_TUI_TEST_KEYRING, shared by processes.

Selected with PYTHON_KEYRING_BACKEND=tests.support.keyring_backend.FileKeyring so that neither the
tests nor the processes they start ever touch the user's real keyring.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError

ENV = "XERO_TUI_TEST_KEYRING"


class FileKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    @property
    def _path(self) -> Path:
        return Path(os.environ[ENV])

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        path = self._path
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(str(path) + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = json.loads(path.read_text()) if path.exists() and path.stat().st_size else {}
                before = json.dumps(data, sort_keys=True)
                yield data
                if json.dumps(data, sort_keys=True) != before:
                    tmp = path.with_suffix(".tmp")
                    tmp.write_text(json.dumps(data))
                    os.replace(tmp, path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def get_password(self, service: str, username: str) -> str | None:
        with self._locked() as data:
            value = data.get(service, {}).get(username)
            return value if isinstance(value, str) else None

    def set_password(self, service: str, username: str, password: str) -> None:
        with self._locked() as data:
            data.setdefault(service, {})[username] = password

    def delete_password(self, service: str, username: str) -> None:
        with self._locked() as data:
            if username not in data.get(service, {}):
                raise PasswordDeleteError("not found")
            del data[service][username]


def read_all(path: Path) -> dict[str, dict[str, str]]:
    """Everything stored, for assertions."""
    if not path.exists() or not path.stat().st_size:
        return {}
    data: dict[str, dict[str, str]] = json.loads(path.read_text())
    return data
