"""Shared fixtures: every test runs with a temporary config dir and a file-backed test keyring."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# The PostgreSQL server and a database per test, for the shared-store tests.
from tests.support.postgres import postgres_server, store_url  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
TEST_KEYRING_BACKEND = "tests.support.keyring_backend.FileKeyring"

# Nothing a test does may reach the user's own config or keyring, even at import time.
for _name in ("XERO_TUI_LOGIN_URL", "XERO_TUI_IDENTITY_URL", "XERO_TUI_API_URL", "BROWSER"):
    os.environ.pop(_name, None)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A throwaway config dir and keyring for this test; HOME too, so nothing escapes."""
    config_dir = tmp_path / "config"
    monkeypatch.setenv("XERO_TUI_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("XERO_TUI_TEST_KEYRING", str(tmp_path / "keyring.json"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", TEST_KEYRING_BACKEND)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for name in ("SSH_CONNECTION", "SSH_TTY", "SSH_CLIENT", "BROWSER"):
        monkeypatch.delenv(name, raising=False)
    yield config_dir


@pytest.fixture
def keyring_file(tmp_path: Path) -> Path:
    return tmp_path / "keyring.json"


def python_cmd(*args: str) -> list[str]:
    """The command that runs xero-tui in a child process with this interpreter."""
    return [sys.executable, "-m", "xero_tui", *args]


if TYPE_CHECKING:
    from xero_tui.emulator import Emulator


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """A running emulator with three demo organisations; xero-tui's URLs point at it."""
    from xero_tui.emulator import Emulator

    with Emulator(tenants=3) as emu:
        for k, v in emu.env.items():
            monkeypatch.setenv(k, v)
        yield emu


@pytest.fixture
def failing_keyring(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """PYTHON_KEYRING_BACKEND=keyring.backends.fail.Keyring, for this process too.

    keyring reads the variable once per process, so the backend it names is also set directly.
    """
    import keyring
    from keyring.backends import fail

    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    yield
    keyring.set_keyring(previous)
