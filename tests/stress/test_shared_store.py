"""Stress 15: several hosts (config folders of their own) sharing one grant through a real
PostgreSQL: concurrent forced refreshes, hosts killed mid-refresh, a database restart under
load, and a pg_dump scanned for every secret in play."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.stress.harness import (
    access_token_valid,
    connect,
    standing,
    token_workers,
    worker_calls,
)
from tests.stress.registry import SEEN, output, record, timed
from tests.support.cli import ROOT, cli_env, run_cli
from tests.support.postgres import Postgres
from xero_tui.core.pgstore import parse_address
from xero_tui.core.secrets import grant_key
from xero_tui.core.service import Service
from xero_tui.emulator import Emulator

HOSTS = 4
PROCS = 8
CALLS = 10


def hosts(tmp_path: Path, count: int) -> list[dict[str, str]]:
    envs = []
    for index in range(count):
        folder = tmp_path / f"host-{index}"
        folder.mkdir(mode=0o700)
        envs.append(
            cli_env(
                XERO_TUI_CONFIG_DIR=str(folder / "config"),
                XERO_TUI_TEST_KEYRING=str(folder / "keyring.json"),
            )
        )
    return envs


def commits(server: Postgres, url: str, grant_id: str) -> int:
    """How many times the grant's tokens were written to the store (the sign-in's included)."""
    sql = f"SELECT writes FROM xero_tui.secrets WHERE key = '{grant_key(grant_id)}'"
    return int(server.psql(parse_address(url).dbname, sql).strip() or 0)


def start_workers(
    envs: list[dict[str, str]], per_host: int, calls: int
) -> list[subprocess.Popen[str]]:
    """`per_host` workers on each host, every call forced."""
    hosts_envs = [env for env in envs for _ in range(per_host)]
    seeds = [1000 * h + p for h in range(len(envs)) for p in range(per_host)]
    return token_workers(hosts_envs, calls, seeds, 1.0)


def results(procs: list[subprocess.Popen[str]]) -> list[dict[str, object]]:
    return worker_calls(procs, "shared-store token worker", 300)


async def test_hosts_refreshing_one_grant_together_never_get_invalid_grant(
    emu: Emulator, store_url: str, postgres_server: Postgres, tmp_path: Path
) -> None:
    conn = await connect(emu, "acme")
    envs = hosts(tmp_path, HOSTS)
    before, written = emu.stats, commits(postgres_server, store_url, conn.grant_id)
    with timed() as clock:
        calls = results(start_workers(envs, PROCS, CALLS))
    after = emu.stats
    refreshes = after.refreshes - before.refreshes
    invalid = after.invalid_grants - before.invalid_grants
    grace = after.grace_refreshes - before.grace_refreshes
    committed = commits(postgres_server, store_url, conn.grant_id) - written
    failed = [c for c in calls if c["code"] != 0]
    stale = [
        c for c in calls if c["code"] == 0 and not access_token_valid(emu, str(c["out"]).strip())
    ]
    kept = Service().secrets.get_tokens(conn.grant_id)
    assert kept is not None
    lost = len(failed) + invalid + grace + len(stale) + (refreshes != committed)
    lost += standing(emu, kept.refresh_token) != "current"
    slowest = max(float(str(c["seconds"])) for c in calls)
    record(
        "15a hosts sharing a grant",
        f"{HOSTS} hosts x {PROCS} procs x {CALLS} forced `token` through PostgreSQL; Xero "
        f"rotated {refreshes}x, the store committed {committed}, {invalid} invalid_grant, "
        f"slowest call {slowest:.1f} s",
        len(calls),
        lost,
        clock.seconds,
    )
    assert not failed, failed[:3]
    assert len(calls) == HOSTS * PROCS * CALLS
    assert invalid == 0 and grace == 0
    assert refreshes == committed
    assert 1 <= refreshes <= len(calls)
    assert not stale
    assert standing(emu, kept.refresh_token) == "current"


async def test_hosts_killed_mid_refresh_lose_no_token_and_leave_no_lock(
    emu: Emulator, store_url: str, tmp_path: Path
) -> None:
    conn = await connect(emu, "acme")
    envs = hosts(tmp_path, 2)
    rng = random.Random(15)
    kills, broken, waits = 6, 0, []
    with timed() as clock:
        for round_ in range(kills):
            emu.inject("token", "delay", count=1, delay=rng.uniform(0.2, 0.8))
            asked = emu.stats.token_requests
            victim = subprocess.Popen(
                [sys.executable, "-m", "xero_tui", "token", "acme", "--force-refresh"],
                env=envs[round_ % 2],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 20
            while emu.stats.token_requests == asked and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.3))
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(10)
            started = time.monotonic()
            after = run_cli("token", "acme", "--force-refresh", env=envs[(round_ + 1) % 2])
            waits.append(time.monotonic() - started)
            output("token after a kill (stderr)", after.err)
            broken += after.code != 0
    time.sleep(1)  # the last killed request ends at Xero too
    final = run_cli("token", "acme", "--force-refresh", env=envs[0])
    kept = Service().secrets.get_tokens(conn.grant_id)
    assert kept is not None
    invalid = emu.stats.invalid_grants
    lost = broken + invalid + (final.code != 0) + (standing(emu, kept.refresh_token) != "current")
    record(
        "15b host killed mid-refresh",
        f"kill -9 of a host holding the grant's row lock while Xero answers; the other host's "
        f"refresh then waited at most {max(waits):.1f} s, {invalid} invalid_grant",
        kills,
        lost,
        clock.seconds,
    )
    assert broken == 0 and invalid == 0 and final.code == 0, final.err
    assert max(waits) < 10


async def test_a_database_restart_under_load_is_said_and_recovered(
    emu: Emulator, store_url: str, postgres_server: Postgres, tmp_path: Path
) -> None:
    conn = await connect(emu, "acme")
    envs = hosts(tmp_path, 2)
    with timed() as clock:
        procs = start_workers(envs, 2, 30)
        time.sleep(1.0)
        postgres_server.restart()
        calls = results(procs)
    said = [c for c in calls if c["code"] != 0]
    unclear = [c for c in said if c["code"] not in (5, 8) or "PostgreSQL" not in str(c["err"])]
    final = run_cli("token", "acme", "--force-refresh", env=envs[1])
    kept = Service().secrets.get_tokens(conn.grant_id)
    assert kept is not None
    invalid = emu.stats.invalid_grants
    lost = len(unclear) + invalid + (final.code != 0)
    lost += standing(emu, kept.refresh_token) != "current"
    record(
        "15c database restart mid-run",
        f"PostgreSQL restarted under 4 procs x 30 forced `token`: {len(said)} calls said so "
        f"(exit 5 or 8, naming the store), then the next call worked; {invalid} invalid_grant",
        len(calls),
        lost,
        clock.seconds,
    )
    assert not unclear, unclear[:3]
    assert final.code == 0, final.err
    assert invalid == 0


async def test_pg_dump_holds_no_secret_in_clear(
    emu: Emulator, store_url: str, postgres_server: Postgres, tmp_path: Path
) -> None:
    await connect(emu, "acme")
    custom = emu.register_client("C" * 32, "custom-secret-" + "s" * 30, "custom")
    env = hosts(tmp_path, 1)[0]
    with timed() as clock:
        for _ in range(3):
            assert run_cli("token", "acme", "--force-refresh", env=env).code == 0
        connected = run_cli(
            "connect",
            "shop",
            "--kind",
            "custom",
            "--client-id",
            custom.client_id,
            env={**env, "XERO_CLIENT_SECRET": custom.client_secret or ""},
        )
        assert connected.code == 0, connected.err
        dump = postgres_server.dump(parse_address(store_url).dbname)
    secrets = set(SEEN.secrets) | {os.environ["XERO_TUI_STORE_KEY"], custom.client_secret or ""}
    secrets |= {emu.web_client.client_secret or ""}
    secrets = {s for s in secrets if len(s) >= 8}
    hits = [s for s in secrets if s in dump]
    record(
        "15d pg_dump of the store",
        f"a dump of {len(dump) // 1024} KiB after sign-ins, refreshes and a custom connection, "
        f"scanned for {len(secrets)} secret values",
        len(secrets),
        len(hits),
        clock.seconds,
    )
    assert "acme" in dump and "shop" in dump
    assert hits == []


pytestmark = pytest.mark.stress
