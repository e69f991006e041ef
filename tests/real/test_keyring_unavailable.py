"""A keyring that cannot keep secrets: locked, absent, or no session bus at all.

Each case must end quickly with the same choices (unlock, or opt in to the 0600 file with
--insecure-storage) and before the sign-in URL is shown, so no consent is thrown away; none may
hang. With the opt-in, the plain-file store then works end to end on the same machine.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real.conftest import SECRET_SERVICE_BACKEND, SessionBus, session_bus
from tests.real.support import organisation, read_config
from tests.support.cli import Result, cli_env, connect_web, run_cli
from xero_tui.core.secrets import DEFAULT_TIMEOUT
from xero_tui.emulator import Emulator

pytestmark = pytest.mark.real

# The probe gives up after DEFAULT_TIMEOUT; the rest is interpreter start-up and slack for CI.
HARD_TIMEOUT = 30.0
ENOUGH = DEFAULT_TIMEOUT + 7.0


def keyring_env(bus: SessionBus | None, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = cli_env(**extra)
    env.pop("XERO_TUI_TEST_KEYRING", None)
    if bus is None:
        # No session bus: nothing to connect to, and no user bus under XDG_RUNTIME_DIR either.
        env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        empty = tmp_path / "no-runtime"
        empty.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(empty)
    else:
        env.update(bus.env)
    return env


def connect_refused(emu: Emulator, env: dict[str, str]) -> tuple[Result, float]:
    """`connect` for a new connection, which must stop at the keyring probe."""
    client = emu.web_client
    started = time.monotonic()
    result = run_cli(
        "connect",
        "acme",
        "--client-id",
        client.client_id,
        "--no-browser",
        env={**env, "XERO_CLIENT_SECRET": client.client_secret or ""},
        timeout=HARD_TIMEOUT,
    )
    return result, time.monotonic() - started


def assert_choices(result: Result) -> None:
    assert result.code == 5, result.err
    assert "--insecure-storage" in result.err
    assert "unlock" in result.err
    assert "Traceback" not in result.err
    # Stopped before the sign-in, so the user never consents for nothing.
    assert "/identity/connect/authorize" not in result.err
    assert "Open this URL" not in result.err


@pytest.fixture(params=["locked-login", "locked-login-silent-prompter", "no-collection"])
def locked_keyring(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionBus]:
    """gnome-keyring started without the password, so its collection stays locked.

    `locked-login`: a `login` collection made earlier (with the password) is there but locked,
    and no unlock dialog can be shown, so unlocking fails at once. With a silent prompter the
    unlock dialog is "shown" but never answered, so every keyring call waits forever. With no
    collection at all, creating the default one needs that dialog too.
    """
    kind = request.param
    if kind.startswith("locked-login"):
        with session_bus(tmp_path / "setup") as first:
            first.start_keyring(unlock=True)
            # Make the collection exist on disk (a write creates the login keyring file).
            subprocess.run(
                [sys.executable, "-c", "import keyring; keyring.set_password('setup', 'x', 'y')"],
                env={**cli_env(), **first.env, "PYTHON_KEYRING_BACKEND": SECRET_SERVICE_BACKEND},
                check=True,
                timeout=30,
            )
            keyrings = first.keyrings
        assert (keyrings / "login.keyring").exists()
    with session_bus(tmp_path / "bus") as bus:
        if kind.startswith("locked-login"):
            bus.keyrings.parent.mkdir(parents=True, exist_ok=True)
            keyrings.rename(bus.keyrings)
        if kind != "locked-login":
            bus.add_silent_prompter()
        bus.start_keyring(unlock=False)
        yield bus


def test_locked_keyring_stops_connect_with_the_choices(
    locked_keyring: SessionBus, emulator: Emulator, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = keyring_env(locked_keyring, tmp_path, PYTHON_KEYRING_BACKEND=SECRET_SERVICE_BACKEND)
    result, took = connect_refused(emulator, env)
    assert_choices(result)
    assert took < ENOUGH, f"took {took:.1f} s"
    if request.node.callspec.params["locked_keyring"] != "locked-login":
        # The keyring really blocked (an unanswered unlock dialog) and the probe cut it off.
        assert f"did not answer within {DEFAULT_TIMEOUT:g} s" in result.err
        assert took >= DEFAULT_TIMEOUT - 0.5
    assert not (tmp_path / "config" / "secrets.toml").exists()


def test_token_gives_up_on_a_keyring_locked_after_saving(
    emulator: Emulator, isolated_env: Path, tmp_path: Path
) -> None:
    """Saved while unlocked, then the keyring locks (screen lock) with no dialog answered."""
    with session_bus(tmp_path / "bus") as bus:
        bus.add_silent_prompter()
        bus.start_keyring(unlock=True)
        env = keyring_env(bus, tmp_path, PYTHON_KEYRING_BACKEND=SECRET_SERVICE_BACKEND)
        assert connect_web(emulator, env=env).code == 0
        lock = (
            "import secretstorage\n"
            "c = secretstorage.dbus_init()\n"
            "col = secretstorage.get_default_collection(c)\n"
            "col.lock()\n"
            "print(col.is_locked())\n"
        )
        locked = subprocess.run(
            [sys.executable, "-c", lock], capture_output=True, text=True, env=env, timeout=30
        )
        assert locked.stdout.strip() == "True", locked.stderr

        started = time.monotonic()
        result = run_cli("token", "acme", "--force-refresh", env=env, timeout=HARD_TIMEOUT)
        took = time.monotonic() - started
        assert result.code == 5, result.err
        assert "did not answer within 5 s" in result.err
        assert "--insecure-storage" in result.err
        assert took < ENOUGH, f"took {took:.1f} s"
        assert read_config(isolated_env)["connections"]["acme"]["status"] == "ok"


@pytest.fixture(params=["bus-without-keyring", "no-bus"])
def no_secret_service(
    request: pytest.FixtureRequest, tmp_path: Path, emulator: Emulator
) -> Iterator[dict[str, str]]:
    """No Secret Service: a session bus where nothing provides it, or no session bus at all.

    keyring picks its own backend here (PYTHON_KEYRING_BACKEND unset), as on a user's server.
    The env is taken after the emulator's URLs are set, so the children use the emulator.
    """
    if request.param == "no-bus":
        env = keyring_env(None, tmp_path)
        env.pop("PYTHON_KEYRING_BACKEND", None)
        yield env
        return
    with session_bus(tmp_path / "bus") as bus:
        env = keyring_env(bus, tmp_path)
        env.pop("PYTHON_KEYRING_BACKEND", None)
        yield env


def test_no_secret_service_stops_connect_with_the_choices(
    no_secret_service: dict[str, str], emulator: Emulator
) -> None:
    result, took = connect_refused(emulator, no_secret_service)
    assert_choices(result)
    assert took < ENOUGH, f"took {took:.1f} s"


def test_no_secret_service_with_the_opt_in_uses_the_0600_file(
    no_secret_service: dict[str, str], emulator: Emulator, isolated_env: Path
) -> None:
    env = no_secret_service
    secrets_file = isolated_env / "secrets.toml"
    result = connect_web(emulator, env=env, options=("--insecure-storage",))
    assert result.code == 0, result.err
    assert f"Secrets are stored in: plain file {secrets_file}" in result.err
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(isolated_env.stat().st_mode) == 0o700

    conn = read_config(isolated_env)["connections"]["acme"]
    token = run_cli("--insecure-storage", "token", "acme", env=env)
    assert token.code == 0, token.err
    assert organisation(emulator, token.out.strip(), conn["tenant_id"]).status_code == 200
    refreshed = run_cli("--insecure-storage", "token", "acme", "--force-refresh", env=env)
    assert refreshed.code == 0, refreshed.err
    current = emulator.current_refresh_token(emulator.web_client.client_id)
    assert current and current in secrets_file.read_text()

    status = run_cli("--insecure-storage", "status", "--json", env=env)
    assert status.code == 0, status.err
    assert f"plain file {secrets_file}" in status.err
    assert json.loads(status.out)[0]["storage"] == f"plain file {secrets_file}"
    # The config holds none of it.
    secret = emulator.web_client.client_secret
    assert secret
    config_text = (isolated_env / "config.toml").read_text()
    assert secret not in config_text
    assert "refresh_token" not in config_text

    removed = run_cli("--insecure-storage", "remove", "acme", env=env)
    assert removed.code == 0, removed.err
    left = secrets_file.read_text()
    assert f"grant:{conn['grant']}" not in left
    assert secret not in left
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
