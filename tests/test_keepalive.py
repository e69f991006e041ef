"""`xero-tui keepalive`: a grant refreshed longer ago than the limit is refreshed, others not."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.support.cli import cli_env, run_cli
from tests.support.saved import connect
from xero_tui.core.config import Config
from xero_tui.core.service import Service
from xero_tui.emulator import Emulator


def age(svc: Service, name: str, days: float) -> None:
    """Make the connection's grant look last refreshed `days` ago."""

    def back(config: Config) -> None:
        grant_id = config.connections[name].grant_id
        for record in (config.grants[grant_id], *config.connections.values()):
            if getattr(record, "grant_id", None) != grant_id:
                continue
            assert record.last_refreshed is not None
            record.last_refreshed -= timedelta(days=days)

    svc.store.update(back)


async def test_a_31_day_old_grant_is_refreshed_and_a_2_day_old_one_is_not(
    emulator: Emulator,
) -> None:
    svc = Service()
    await connect(svc, emulator, "old")
    await connect(svc, emulator, "recent")
    age(svc, "old", 31)
    age(svc, "recent", 2)
    before = svc.load()
    refreshes = emulator.stats.refreshes
    result = run_cli("keepalive")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].startswith("old: refreshed (it was 31 days")
    assert lines[1] == "recent: not due, refreshed 2 days ago"
    assert emulator.stats.refreshes == refreshes + 1
    after = svc.load()
    old, recent = after.connections["old"], after.connections["recent"]
    assert old.last_refreshed is not None and before.connections["old"].last_refreshed is not None
    assert old.last_refreshed - before.connections["old"].last_refreshed > timedelta(days=30)
    assert recent.last_refreshed == before.connections["recent"].last_refreshed
    # With a lower limit, the recent one is due too.
    assert run_cli("keepalive", "--older-than", "1").code == 0
    assert emulator.stats.refreshes == refreshes + 2


async def test_keepalive_exits_3_when_a_grant_is_gone(emulator: Emulator) -> None:
    svc = Service()
    await connect(svc, emulator, "gone")
    age(svc, "gone", 40)
    emulator.revoke_all(emulator.web_client.client_id)
    result = run_cli("keepalive")
    assert result.code == 3, result.err
    assert result.out.startswith("gone: ")
    assert "Reconnect" in result.out


def test_keepalive_refuses_a_limit_past_xeros_sixty_days() -> None:
    result = run_cli("keepalive", "--older-than", "61")
    assert result.code == 2
    assert "under 60 days" in result.err


async def test_ctrl_c_during_a_refresh_at_a_terminal_still_stores_the_rotated_token(
    emulator: Emulator,
) -> None:
    """Xero rotates as soon as it answers: the answer is stored before the command ends."""
    import time

    from tests.support.cli import cli_env
    from tests.support.terminal import Terminal

    svc = Service()
    await connect(svc, emulator, "old")
    age(svc, "old", 31)
    grant_id = svc.connection("old").grant_id
    faults, refreshes = emulator.stats.faults_injected, emulator.stats.refreshes
    emulator.inject("token", "delay", delay=1.0)
    with Terminal("keepalive", env=cli_env()) as t:
        # Ctrl-C while Xero holds the refresh request: it rotates once the delay is over.
        deadline = time.monotonic() + 10
        while emulator.stats.faults_injected == faults:
            assert time.monotonic() < deadline, t.screen
            time.sleep(0.01)
        t.interrupt()
        t.wait(10)
    # Xero finishes the refresh whether or not the caller is still there.
    deadline = time.monotonic() + 10
    while emulator.stats.refreshes == refreshes:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stored = Service().secrets.get_tokens(grant_id)
    assert stored is not None
    assert stored.refresh_token == emulator.current_refresh_token(emulator.web_client.client_id)


async def test_keepalive_carries_a_grant_past_xeros_60_days_on_the_emulators_clock(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Xero's clock moves 31 days, then 31 more: the grant keepalive refreshed on the way still
    works, while one on another host that never ran it has died (62 days unused)."""
    svc = Service()
    await connect(svc, emulator, "kept")
    neglected = {
        "XERO_TUI_CONFIG_DIR": str(tmp_path / "other"),
        "XERO_TUI_TEST_KEYRING": str(tmp_path / "other.json"),
    }
    for name, value in neglected.items():
        monkeypatch.setenv(name, value)
    await connect(Service(), emulator, "neglected")
    monkeypatch.setenv("XERO_TUI_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("XERO_TUI_TEST_KEYRING", str(tmp_path / "keyring.json"))

    emulator.advance_clock(timedelta(days=31).total_seconds())
    age(svc, "kept", 31)
    kept = run_cli("keepalive")
    assert kept.code == 0, kept.err
    assert kept.out.startswith("kept: refreshed")
    emulator.advance_clock(timedelta(days=31).total_seconds())

    assert run_cli("token", "kept", "--force-refresh").code == 0
    dead = run_cli("token", "neglected", "--force-refresh", env=cli_env(**neglected))
    assert dead.code == 3, dead.err
    assert emulator.stats.invalid_grants == 1
