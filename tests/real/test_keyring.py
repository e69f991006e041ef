"""Secrets through a real Secret Service: gnome-keyring on a private D-Bus session bus.

The CLI runs in child processes with PYTHON_KEYRING_BACKEND naming keyring's SecretService
backend; what it stored is read back by a separate `keyring` process and by libsecret's
`secret-tool`, so the values are really in the keyring and not only in xero-tui's view of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.real.conftest import SecretServiceEnv, require
from tests.real.support import (
    keyring_lookup,
    organisation,
    read_config,
    secret_tool_lookup,
)
from tests.support.cli import ROOT, connect_web, run_cli
from xero_tui.emulator import Emulator

pytestmark = pytest.mark.real


@pytest.fixture(autouse=True)
def _tools() -> None:
    require("secret-tool", "libsecret-tools")


def test_keyring_selects_the_secret_service(secret_service: SecretServiceEnv) -> None:
    env = secret_service.child_env()
    listed = subprocess.run(
        [sys.executable, "-m", "keyring", "--list-backends"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert listed.returncode == 0, listed.stderr
    assert "keyring.backends.SecretService.Keyring" in listed.stdout
    # Also without PYTHON_KEYRING_BACKEND: keyring's own choice on this session is SecretService.
    env.pop("PYTHON_KEYRING_BACKEND")
    chosen = keyring_lookup(env, "nothing-stored")
    assert chosen == {"backend": "keyring.backends.SecretService.Keyring", "value": None}


def test_cli_connection_lands_in_the_secret_service(
    secret_service: SecretServiceEnv, emulator: Emulator, isolated_env: Path
) -> None:
    env = secret_service.child_env()
    result = connect_web(emulator, env=env)
    assert result.code == 0, result.err
    assert "Secrets are stored in: keyring (SecretService)" in result.err

    conn = read_config(isolated_env)["connections"]["acme"]
    key = f"grant:{conn['grant']}"
    via_keyring = keyring_lookup(env, key)
    assert via_keyring["backend"] == "keyring.backends.SecretService.Keyring"
    tokens = json.loads(via_keyring["value"])
    assert tokens["refresh_token"] == emulator.current_refresh_token(emulator.web_client.client_id)
    via_libsecret = secret_tool_lookup(env, key)
    assert via_libsecret.returncode == 0, via_libsecret.stderr
    assert via_libsecret.stdout == via_keyring["value"]

    client = emulator.web_client
    secret_key = f"client-secret:{client.client_id}"
    assert keyring_lookup(env, secret_key)["value"] == client.client_secret
    assert secret_tool_lookup(env, secret_key).stdout == client.client_secret

    # The token the CLI hands out comes from the keyring and Xero (the emulator) accepts it.
    token = run_cli("token", "acme", env=env)
    assert token.code == 0, token.err
    assert token.out.strip() == tokens["access_token"]
    assert organisation(emulator, token.out.strip(), conn["tenant_id"]).status_code == 200

    status = run_cli("status", "--offline", env=env)
    assert status.code == 0, status.err
    assert "keyring (SecretService)" in status.err

    # Nothing secret in the config (or the status output).
    text = (isolated_env / "config.toml").read_text()
    for value in (client.client_secret, tokens["access_token"], tokens["refresh_token"]):
        assert value
        for where in (text, result.out, result.err, status.out, status.err):
            assert value not in where
    assert not (isolated_env / "secrets.toml").exists()


def test_refresh_rotates_the_token_in_the_secret_service(
    secret_service: SecretServiceEnv, emulator: Emulator, isolated_env: Path
) -> None:
    env = secret_service.child_env()
    assert connect_web(emulator, env=env).code == 0
    key = f"grant:{read_config(isolated_env)['connections']['acme']['grant']}"
    before = json.loads(keyring_lookup(env, key)["value"])

    refreshed = run_cli("token", "acme", "--force-refresh", env=env)
    assert refreshed.code == 0, refreshed.err

    after = json.loads(keyring_lookup(env, key)["value"])
    current = emulator.current_refresh_token(emulator.web_client.client_id)
    assert after["refresh_token"] == current
    assert after["refresh_token"] != before["refresh_token"]
    assert after["access_token"] == refreshed.out.strip()
    assert json.loads(secret_tool_lookup(env, key).stdout)["refresh_token"] == current


def test_remove_deletes_the_secrets_from_the_secret_service(
    secret_service: SecretServiceEnv, emulator: Emulator, isolated_env: Path
) -> None:
    env = secret_service.child_env()
    assert connect_web(emulator, env=env).code == 0
    key = f"grant:{read_config(isolated_env)['connections']['acme']['grant']}"
    secret_key = f"client-secret:{emulator.web_client.client_id}"
    assert keyring_lookup(env, key)["value"]

    removed = run_cli("remove", "acme", env=env)
    assert removed.code == 0, removed.err

    for name in (key, secret_key):
        assert keyring_lookup(env, name)["value"] is None
        gone = secret_tool_lookup(env, name)
        assert gone.returncode != 0
        assert gone.stdout == ""
    assert "acme" not in read_config(isolated_env).get("connections", {})


def test_probe_leaves_nothing_behind(secret_service: SecretServiceEnv) -> None:
    """The probe's test value is deleted again: the keyring holds no `probe:` items after it."""
    code = (
        "from xero_tui.core.secrets import probe_keyring\n"
        "import secretstorage\n"
        "r = probe_keyring()\n"
        "conn = secretstorage.dbus_init()\n"
        "items = secretstorage.search_items(conn, {'service': 'xero-tui'})\n"
        "left = [i.get_attributes()['username'] for i in items]\n"
        "print(r.ok, r.backend, [u for u in left if u.startswith('probe:')])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=secret_service.child_env(),
        cwd=ROOT,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "SecretService", "[]"]
