"""`xero-tui export`: a hand-over leaves one keeper of the refresh token; a copy says the risk."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tests.support.cli import run_cli
from tests.support.saved import connect
from tests.support.terminal import Terminal
from xero_tui.core.service import Service
from xero_tui.emulator import Emulator


async def test_a_hand_over_gives_the_live_token_and_forgets_it_here(
    emulator: Emulator, isolated_env: Path
) -> None:
    svc = Service()
    await connect(svc, emulator)
    conn = svc.connection("acme")
    result = run_cli("export", "acme", "--format", "json", "--yes")
    assert result.code == 0, result.err
    handed = json.loads(result.out)
    client = emulator.web_client
    assert handed["client_id"] == client.client_id
    assert handed["client_secret"] == client.client_secret
    assert handed["refresh_token"] == emulator.current_refresh_token(client.client_id)
    assert handed["tenant_id"] == conn.tenant_id
    assert "the other tool now holds the only refresh token" in result.err
    assert svc.connections() == []
    assert svc.secrets.get_tokens(conn.grant_id) is None
    assert svc.client_secret_for(client.client_id) is None
    assert handed["refresh_token"] not in (isolated_env / "config.toml").read_text()


async def test_a_copy_keeps_the_connection_and_says_what_that_risks(emulator: Emulator) -> None:
    svc = Service()
    await connect(svc, emulator)
    result = run_cli("export", "acme", "--format", "env", "--keep")
    assert result.code == 0, result.err
    assert "XERO_REFRESH_TOKEN=" in result.out and "XERO_TENANT_ID=" in result.out
    assert "Whichever copy refreshes first breaks the other" in result.err
    assert [c.name for c in svc.connections()] == ["acme"]


async def test_without_a_terminal_a_hand_over_needs_yes(emulator: Emulator) -> None:
    svc = Service()
    await connect(svc, emulator)
    result = run_cli("export", "acme")
    assert result.code == 2
    assert "--yes" in result.err and result.out == ""
    assert [c.name for c in svc.connections()] == ["acme"]


async def test_secrets_reach_a_terminal_only_when_asked_and_a_file_is_0600(
    emulator: Emulator, tmp_path: Path
) -> None:
    from tests.support.cli import cli_env

    svc = Service()
    await connect(svc, emulator)
    with Terminal("export", "acme", "--keep", env=cli_env()) as t:
        assert t.wait(10) == 2
        assert "scrollback" in t.screen and "XERO_REFRESH_TOKEN" not in t.screen
    target = tmp_path / "tap-config.json"
    with Terminal(
        "export", "acme", "--format", "tap-xero", "--output", str(target), env=cli_env()
    ) as t:
        t.wait_for("Type yes to hand it over: ")
        t.type("yes\n")
        assert t.wait(10) == 0, t.screen
        assert "refresh_token" not in t.screen
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    tap = json.loads(target.read_text())
    assert set(tap) >= {"client_id", "client_secret", "refresh_token", "tenant_id", "start_date"}
    assert svc.connections() == []


async def test_an_export_that_cannot_be_written_forgets_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    svc = Service()
    await connect(svc, emulator)
    result = run_cli("export", "acme", "--yes", "--output", str(tmp_path / "no" / "such" / "f"))
    assert result.code == 5, result.err
    assert [c.name for c in svc.connections()] == ["acme"]
    stored = svc.secrets.get_tokens(svc.connection("acme").grant_id)
    assert stored is not None
