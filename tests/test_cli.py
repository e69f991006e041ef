"""The scripting CLI end to end: real child processes against the emulator over loopback HTTP."""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cli import (
    ROOT,
    Connecting,
    cli_env,
    connect_web,
    register_redirect,
    run_cli,
)
from tests.support.keyring_backend import read_all
from tests.support.net import free_port
from xero_tui.emulator import Emulator
from xero_tui.emulator.consent import answer_consent


def config(config_dir: Path) -> dict[str, Any]:
    return tomllib.loads((config_dir / "config.toml").read_text())


def org_with(emu: Emulator, token: str, tenant_id: str) -> httpx.Response:
    return httpx.get(
        emu.url + "/api.xro/2.0/Organisation",
        headers={"Authorization": f"Bearer {token}", "xero-tenant-id": tenant_id},
    )


def stored_grant(keyring_file: Path, grant_id: str) -> dict[str, Any]:
    return json.loads(read_all(keyring_file)["xero-tui"][f"grant:{grant_id}"])


def test_connect_web_app_then_token_is_accepted(
    emulator: Emulator, isolated_env: Path, keyring_file: Path
) -> None:
    result = connect_web(emulator)
    assert result.code == 0, result.err
    assert "Saved 'acme'" in result.out
    conn = config(isolated_env)["connections"]["acme"]
    assert conn["kind"] == "web"
    assert conn["tenant_id"] == emulator.tenants[0].tenant_id

    token = run_cli("token", "acme")
    assert token.code == 0, token.err
    access = token.out.strip()
    assert org_with(emulator, access, conn["tenant_id"]).status_code == 200

    secrets = read_all(keyring_file)["xero-tui"]
    assert f"client-secret:{emulator.web_client.client_id}" in secrets
    assert stored_grant(keyring_file, conn["grant"])["refresh_token"] == (
        emulator.current_refresh_token(emulator.web_client.client_id)
    )


def test_config_and_outputs_hold_no_secret(
    emulator: Emulator, isolated_env: Path, keyring_file: Path
) -> None:
    result = connect_web(emulator)
    assert result.code == 0, result.err
    listing = run_cli("list", "--json")
    status = run_cli("status", "--json")
    text = (isolated_env / "config.toml").read_text()
    values = [emulator.web_client.client_secret or ""]
    for blob in read_all(keyring_file)["xero-tui"].values():
        try:
            tokens = json.loads(blob)
        except json.JSONDecodeError:
            continue
        values += [tokens["access_token"], tokens["refresh_token"]]
    for value in values:
        assert value
        for where in (
            text,
            result.out,
            result.err,
            listing.out,
            listing.err,
            status.out,
            status.err,
        ):
            assert value not in where


def test_connect_pkce_app_sends_no_secret(emulator: Emulator, isolated_env: Path) -> None:
    client = emulator.pkce_client
    redirect = register_redirect(emulator, client.client_id)
    proc = Connecting(
        "books",
        "--kind",
        "pkce",
        "--client-id",
        client.client_id,
        "--redirect-uri",
        redirect,
        "--no-browser",
        env=cli_env(),
    )
    answer_consent(proc.url(), follow_redirect=True)
    result = proc.finish()
    assert result.code == 0, result.err
    token = run_cli("token", "books", "--force-refresh")
    assert token.code == 0, token.err
    assert config(isolated_env)["connections"]["books"]["kind"] == "pkce"


def test_connect_custom_connection_uses_client_credentials(emulator: Emulator) -> None:
    client = emulator.custom_client
    result = run_cli(
        "connect",
        "m2m",
        "--kind",
        "custom",
        "--client-id",
        client.client_id,
        env=cli_env(XERO_CLIENT_SECRET=client.client_secret or ""),
    )
    assert result.code == 0, result.err
    token = run_cli("token", "m2m", "--json")
    assert token.code == 0, token.err
    body = json.loads(token.out)
    org = httpx.get(
        emulator.url + "/api.xro/2.0/Organisation",
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert org.status_code == 200
    assert emulator.stats.client_credentials >= 1


def test_connect_accepts_pasted_redirect_url(emulator: Emulator, isolated_env: Path) -> None:
    client = emulator.web_client
    redirect = register_redirect(emulator, client.client_id)
    proc = Connecting(
        "pasted",
        "--client-id",
        client.client_id,
        "--redirect-uri",
        redirect,
        "--no-browser",
        env=cli_env(XERO_CLIENT_SECRET=client.client_secret or ""),
    )
    landed = answer_consent(proc.url(), follow_redirect=False)
    proc.paste("http://localhost:1/elsewhere?code=x&state=y")
    proc.wait_for_line("Paste it again")
    proc.paste(landed)
    result = proc.finish()
    assert result.code == 0, result.err
    assert "pasted" in config(isolated_env)["connections"]


def test_connect_over_ssh_prints_tunnel_line(emulator: Emulator, tmp_path: Path) -> None:
    client = emulator.web_client
    port = free_port()
    redirect = f"http://localhost:{port}/callback"
    emulator.register_client(
        client.client_id, client.client_secret, client.kind, redirect_uris=(redirect,)
    )
    marker = tmp_path / "browser-ran"
    browser = tmp_path / "browser.sh"
    browser.write_text(f"#!/bin/sh\ntouch {marker}\n")
    browser.chmod(0o755)
    env = cli_env(
        XERO_CLIENT_SECRET=client.client_secret or "",
        SSH_CONNECTION="198.51.100.4 50022 203.0.113.7 2222",
        USER="ana",
        BROWSER=str(browser),
    )
    proc = Connecting("ssh", "--client-id", client.client_id, "--redirect-uri", redirect, env=env)
    url = proc.url()
    # Logged in with `ssh -p 2222`: the tunnel goes through the same port.
    line = proc.wait_for_line("ssh -p")
    assert line.strip() == f"ssh -p 2222 -L {port}:localhost:{port} ana@203.0.113.7"
    note = proc.wait_for_line("must be free")
    assert note.strip() == (
        f"Port {port} must be free on your own computer: the browser goes to exactly "
        f"localhost:{port}."
    )
    answer_consent(url, follow_redirect=True)
    assert proc.finish().code == 0
    assert not marker.exists()


def test_token_without_offline_access_is_an_error(emulator: Emulator, isolated_env: Path) -> None:
    result = connect_web(emulator, "acme", "--scopes", "openid", "accounting.settings")
    assert result.code == 6
    assert "offline_access" in result.err
    assert not (isolated_env / "config.toml").exists() or "acme" not in config(isolated_env).get(
        "connections", {}
    )


def test_cached_token_makes_no_refresh_and_force_refresh_rotates(
    emulator: Emulator, isolated_env: Path, keyring_file: Path
) -> None:
    assert connect_web(emulator).code == 0
    before = emulator.stats.refreshes
    first = run_cli("token", "acme")
    second = run_cli("token", "acme")
    assert first.out == second.out
    assert emulator.stats.refreshes == before
    forced = run_cli("token", "acme", "--force-refresh")
    assert forced.code == 0
    assert forced.out != first.out
    assert emulator.stats.refreshes == before + 1
    grant = config(isolated_env)["connections"]["acme"]["grant"]
    assert stored_grant(keyring_file, grant)["refresh_token"] == emulator.current_refresh_token(
        emulator.web_client.client_id
    )


def test_token_env_output_is_shell_quoted(emulator: Emulator) -> None:
    assert connect_web(emulator).code == 0
    out = run_cli("token", "acme", "--env").out
    lines = out.strip().splitlines()
    assert [line.split("=", 1)[0] for line in lines] == ["XERO_ACCESS_TOKEN", "XERO_TENANT_ID"]
    values = dict(shlex.split(line)[0].split("=", 1) for line in lines)
    assert values["XERO_TENANT_ID"] == emulator.tenants[0].tenant_id
    assert (
        org_with(emulator, values["XERO_ACCESS_TOKEN"], values["XERO_TENANT_ID"]).status_code == 200
    )


def _expire_access_token(keyring_file: Path, grant: str) -> None:
    data = json.loads(keyring_file.read_text())
    tokens = json.loads(data["xero-tui"][f"grant:{grant}"])
    tokens["expires_at"] = 0
    data["xero-tui"][f"grant:{grant}"] = json.dumps(tokens)
    keyring_file.write_text(json.dumps(data))


def test_refresh_is_single_flight_across_processes(
    emulator: Emulator, isolated_env: Path, keyring_file: Path
) -> None:
    assert connect_web(emulator).code == 0
    grant = config(isolated_env)["connections"]["acme"]["grant"]
    _expire_access_token(keyring_file, grant)
    before = emulator.stats.refreshes
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "xero_tui", "token", "acme"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
            cwd=ROOT,
        )
        for _ in range(8)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [o[1] for o in outs]
    assert len({o[0] for o in outs}) == 1
    assert emulator.stats.refreshes == before + 1


def test_invalid_grant_marks_needs_reconnect_and_keeps_config(
    emulator: Emulator, isolated_env: Path
) -> None:
    assert connect_web(emulator).code == 0
    emulator.revoke_all(emulator.web_client.client_id)
    result = run_cli("token", "acme", "--force-refresh")
    assert result.code == 3
    assert "Reconnect" in result.err or "reconnect" in result.err
    assert "Traceback" not in result.err
    conn = config(isolated_env)["connections"]["acme"]
    assert conn["status"] == "needs_reconnect"
    assert conn["client_id"] == emulator.web_client.client_id
    again = run_cli("token", "acme", "--force-refresh")
    assert again.code == 3
    assert emulator.stats.invalid_grants == 2


def test_reconnect_renews_a_saved_connection(emulator: Emulator, isolated_env: Path) -> None:
    assert connect_web(emulator).code == 0
    emulator.revoke_all(emulator.web_client.client_id)
    assert run_cli("token", "acme", "--force-refresh").code == 3
    env = cli_env(XERO_CLIENT_SECRET=emulator.web_client.client_secret or "")
    proc = Connecting("acme", "--no-browser", env=env)
    answer_consent(proc.url(), follow_redirect=True)
    result = proc.finish()
    assert result.code == 0, result.err
    assert config(isolated_env)["connections"]["acme"]["status"] == "ok"
    assert run_cli("token", "acme", "--force-refresh").code == 0


def test_lost_refresh_response_retries_the_same_token(
    emulator: Emulator, isolated_env: Path, keyring_file: Path
) -> None:
    assert connect_web(emulator).code == 0
    emulator.inject("token", "drop_after")
    result = run_cli("token", "acme", "--force-refresh")
    assert result.code == 0, result.err
    assert emulator.stats.grace_refreshes == 1
    grant = config(isolated_env)["connections"]["acme"]["grant"]
    assert stored_grant(keyring_file, grant)["refresh_token"] == emulator.current_refresh_token(
        emulator.web_client.client_id
    )


def test_server_down_keeps_stored_token(
    emulator: Emulator, isolated_env: Path, keyring_file: Path
) -> None:
    assert connect_web(emulator).code == 0
    grant = config(isolated_env)["connections"]["acme"]["grant"]
    before = stored_grant(keyring_file, grant)
    emulator.inject("token", "status", count=10, status=503)
    result = run_cli("token", "acme", "--force-refresh", env=cli_env(XERO_TUI_HTTP_BACKOFF="0.01"))
    assert result.code == 4
    assert "503" in result.err
    assert stored_grant(keyring_file, grant) == before
    assert config(isolated_env)["connections"]["acme"]["status"] == "ok"


def test_two_organisations_share_one_grant(
    emulator: Emulator, isolated_env: Path, keyring_file: Path
) -> None:
    ids = [t.tenant_id for t in emulator.tenants[:2]]
    result = connect_web(emulator, "group", tenants=ids)
    assert result.code == 0, result.err
    conns = config(isolated_env)["connections"]
    names = sorted(conns)
    assert len(names) == 2
    assert conns[names[0]]["grant"] == conns[names[1]]["grant"]
    first = run_cli("token", names[0], "--force-refresh")
    second = run_cli("token", names[1])
    assert first.code == second.code == 0
    assert first.out == second.out
    for name in names:
        access = run_cli("token", name).out.strip()
        assert org_with(emulator, access, conns[name]["tenant_id"]).status_code == 200


def test_remove_with_disconnect_and_revoke(
    emulator: Emulator, isolated_env: Path, keyring_file: Path
) -> None:
    assert connect_web(emulator).code == 0
    grant = config(isolated_env)["connections"]["acme"]["grant"]
    result = run_cli("remove", "acme", "--disconnect", "--revoke")
    assert result.code == 0, result.err
    assert "disconnected" in result.out and "revoked" in result.out
    assert "acme" not in config(isolated_env).get("connections", {})
    assert f"grant:{grant}" not in read_all(keyring_file).get("xero-tui", {})
    assert emulator.stats.revocations == 1


def test_status_reports_storage_expiry_and_age(emulator: Emulator) -> None:
    assert connect_web(emulator).code == 0
    result = run_cli("status", "--json")
    assert result.code == 0, result.err
    (row,) = json.loads(result.out)
    assert row["status"] == "ok"
    assert row["organisation_connected"] is True
    assert row["refresh_token_age_days"] == 0
    assert row["refresh_token_days_left"] == 60
    assert row["access_token_expires"]
    assert "keyring" in result.err
    emulator.disconnect_tenant(emulator.web_client.client_id, emulator.tenants[0].tenant_id)
    gone = run_cli("status", "--json")
    assert json.loads(gone.out)[0]["status"] == "organisation no longer connected"
    assert gone.code == 3


def test_overridden_endpoints_are_announced(emulator: Emulator) -> None:
    result = run_cli("list")
    assert result.code == 0
    assert "Xero endpoints overridden" in result.err
    assert emulator.url in result.err


def test_unknown_connection_is_a_usage_error_without_traceback() -> None:
    result = run_cli("token", "nope")
    assert result.code == 2
    assert result.err.count("\n") == 1
    assert "No connection named 'nope'" in result.err


def test_client_secret_is_never_an_argument() -> None:
    result = run_cli("connect", "x", "--client-id", "0" * 32, "--client-secret", "s3cret")
    assert result.code == 2
    assert "unrecognized arguments" in result.err


def test_secret_required_without_terminal() -> None:
    result = run_cli("connect", "x", "--client-id", "A" * 32)
    assert result.code == 2
    assert "XERO_CLIENT_SECRET" in result.err


def test_bad_client_id_is_explained() -> None:
    result = run_cli("connect", "x", "--client-id", "nothex", env=cli_env(XERO_CLIENT_SECRET="s"))
    assert result.code == 2
    assert "32 hexadecimal" in result.err


def test_cli_commands_never_import_textual(emulator: Emulator) -> None:
    assert connect_web(emulator).code == 0
    code = (
        "import sys, runpy\n"
        "sys.argv = ['xero-tui'] + sys.argv[1:]\n"
        "from xero_tui.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "bad = [m for m in ('textual', 'rich') if m in sys.modules]\n"
        "print('IMPORTED', bad, file=sys.stderr)\n"
    )
    for args in (["list"], ["token", "acme"], ["status", "--offline"]):
        proc = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            env=cli_env(),
            cwd=ROOT,
            timeout=30,
        )
        assert "IMPORTED []" in proc.stderr, (args, proc.stderr)


def test_core_imports_no_textual() -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        "import xero_tui.core as core\n"
        "for m in pkgutil.walk_packages(core.__path__, 'xero_tui.core.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(sorted(n for n in ('textual', 'rich') if n in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("args", [["list"], ["status", "--offline"]])
def test_empty_store_is_friendly(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.code == 0
    assert "No connections saved yet" in result.err


@pytest.mark.parametrize(
    ("argv", "insecure"),
    [
        (["list"], False),
        (["--insecure-storage", "list"], True),
        (["list", "--insecure-storage"], True),
        (["token", "acme", "--insecure-storage", "--env"], True),
        (["connect", "acme", "--insecure-storage", "--client-id", "A" * 32], True),
        (["--insecure-storage", "status", "--offline"], True),
        (["remove", "acme", "--insecure-storage"], True),
        ([], False),
        (["--insecure-storage"], True),
    ],
)
def test_insecure_storage_is_taken_before_or_after_the_command(
    argv: list[str], insecure: bool
) -> None:
    from xero_tui.cli import build_parser

    assert build_parser().parse_args(argv).insecure_storage is insecure


def test_insecure_storage_after_the_command_reaches_the_command() -> None:
    result = run_cli("status", "--offline", "--insecure-storage")
    assert result.code == 0, result.err
    assert "Secrets are stored in: plain file" in result.err


def test_demo_after_a_command_says_where_it_goes() -> None:
    result = run_cli("list", "--demo")
    assert result.code == 2
    assert "unrecognized arguments: --demo" in result.err
    assert "give no command" in result.err


@pytest.mark.parametrize("args", [["--tenants", "0"], ["--port", "70000"], ["--tenants", "x"]])
def test_emulator_arguments_are_checked(args: list[str]) -> None:
    result = run_cli("emulator", *args)
    assert result.code == 2
    assert "Traceback" not in result.err


def test_cancel_and_timeout_messages_name_no_tui_button(emulator: Emulator) -> None:
    """The listener's sentences are shared with the TUI; the CLI has no Generate to press."""
    client = emulator.web_client
    redirect = register_redirect(emulator, client.client_id)
    env = cli_env(XERO_CLIENT_SECRET=client.client_secret or "")
    args = ("--client-id", client.client_id, "--redirect-uri", redirect, "--no-browser")
    proc = Connecting("acme", *args, env=env)
    answer_consent(proc.url(), allow=False, follow_redirect=True)
    cancelled = proc.finish()
    assert cancelled.code == 6
    assert "You cancelled in Xero, so no connection was made." in cancelled.err
    timed_out = run_cli("connect", "acme", *args, "--timeout", "0.5", env=env)
    assert timed_out.code == 6
    assert "Timed out after 0.5 seconds" in timed_out.err
    for result in (cancelled, timed_out):
        assert "Generate" not in result.err


def test_a_taken_port_is_a_local_problem_not_xeros_refusal(emulator: Emulator) -> None:
    client = emulator.web_client
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        redirect = f"http://localhost:{port}/callback"
        emulator.register_client(client.client_id, client.client_secret, client.kind, (redirect,))
        env = cli_env(XERO_CLIENT_SECRET=client.client_secret or "")
        args = ("--client-id", client.client_id, "--redirect-uri", redirect, "--no-browser")
        result = run_cli("connect", "acme", *args, env=env)
    assert result.code == 7, result.err
    assert f"Port {port} is in use, perhaps by another xero-tui sign-in" in result.err


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_connect_timeout_must_be_positive_seconds(value: str) -> None:
    result = run_cli("connect", "x", "--client-id", "A" * 32, "--timeout", value)
    assert result.code == 2
    assert "--timeout" in result.err and "Traceback" not in result.err


def test_connect_checks_the_name_before_signing_in(emulator: Emulator) -> None:
    result = run_cli(
        "connect",
        "x" * 81,
        "--client-id",
        emulator.web_client.client_id,
        env=cli_env(XERO_CLIENT_SECRET=emulator.web_client.client_secret or ""),
    )
    assert result.code == 2
    assert "at most 80" in result.err
    assert "/identity/connect/authorize" not in result.err


def test_remove_says_what_it_could_not_do_at_xero(emulator: Emulator, isolated_env: Path) -> None:
    assert connect_web(emulator).code == 0
    emulator.revoke_all(emulator.web_client.client_id)
    assert run_cli("token", "acme", "--force-refresh").code == 3
    result = run_cli("remove", "acme", "--disconnect")
    # Removed here, but not disconnected at Xero: said, and the exit code is not success.
    assert result.code == 3, result.err
    assert "Removed 'acme'" in result.out
    assert "not disconnected at Xero" in result.err and "needs reconnecting" in result.err
    assert "acme" not in config(isolated_env).get("connections", {})


def test_remove_when_xero_cannot_be_reached_still_removes_and_says_what_was_missed(
    emulator: Emulator, isolated_env: Path, keyring_file: Path
) -> None:
    assert connect_web(emulator).code == 0
    grant = config(isolated_env)["connections"]["acme"]["grant"]
    emulator.stop()
    env = cli_env(XERO_TUI_HTTP_RETRIES="0")
    result = run_cli("remove", "acme", "--disconnect", "--revoke", env=env)
    # Removed here all the same; Xero's part is said on stderr, and the exit code is 1.
    assert result.code == 1, result.err
    assert "Removed 'acme'" in result.out
    assert "not disconnected at Xero" in result.err and "not revoked" in result.err
    assert "Traceback" not in result.err
    assert "acme" not in config(isolated_env).get("connections", {})
    assert f"grant:{grant}" not in read_all(keyring_file).get("xero-tui", {})


def test_remove_finds_a_missing_connection_id_at_xero(
    emulator: Emulator, isolated_env: Path
) -> None:
    assert connect_web(emulator).code == 0
    path = isolated_env / "config.toml"
    text = path.read_text()
    assert "connection_id" in text
    kept = [line for line in text.splitlines() if "connection_id" not in line]
    path.write_text("\n".join(kept) + "\n")
    tenant = config(isolated_env)["connections"]["acme"]["tenant_id"]
    result = run_cli("remove", "acme", "--disconnect")
    assert result.code == 0, result.err
    assert "disconnected" in result.out and "already" not in result.out
    # Gone at Xero already: there is nothing left to disconnect.
    assert not emulator.disconnect_tenant(emulator.web_client.client_id, tenant)
