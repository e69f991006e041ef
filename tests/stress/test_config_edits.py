"""Stress 5: 8 processes each add, remove and rename their own connections, 50 updates each,
all at once through ConfigStore.update: no change may be lost (security.md 34)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from tests.stress.registry import output, record, timed
from tests.support.cli import ROOT, cli_env
from xero_tui.core.config import ConfigStore
from xero_tui.core.models import Grant, Kind
from xero_tui.core.paths import Paths

PROCESSES = 8
UPDATES = 50


def expected_names(who: str) -> dict[str, str]:
    """What one worker leaves: every other added connection removed, the rest renamed."""
    return {f"{who}-{index:03d}": "renamed" for index in range(UPDATES // 2) if index % 2 == 1}


def test_concurrent_config_edits_lose_no_change(isolated_env: Path) -> None:
    store = ConfigStore(Paths(isolated_env))
    when = datetime(2026, 11, 28, tzinfo=UTC)
    store.update(lambda c: c.grants.update(g1=Grant("g1", Kind.WEB, "C" * 32, (), when)))
    with timed() as clock:
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.stress.workers",
                    "config",
                    str(isolated_env),
                    f"w{index}",
                    str(UPDATES),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=cli_env(),
                cwd=ROOT,
            )
            for index in range(PROCESSES)
        ]
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        for worker in workers:  # all start together, so their updates interleave
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        reports = []
        for worker in workers:
            out, err = worker.communicate(timeout=120)
            output("config worker (stderr)", err)
            assert worker.returncode == 0, err
            reports += json.loads(out.splitlines()[-1])
    config = store.load()
    want: dict[str, str] = {}
    for index in range(PROCESSES):
        want |= expected_names(f"w{index}")
    got = {name: conn.tenant_name for name, conn in config.connections.items()}
    lost = len(set(want.items()) ^ set(got.items())) + ("g1" not in config.grants)
    slowest = max(float(r["max_seconds"]) for r in reports)
    record(
        "5 concurrent config edits",
        f"{PROCESSES} procs x {UPDATES} ConfigStore.update (add, then remove or rename), "
        f"{len(want)} connections left; slowest update {slowest:.2f} s",
        PROCESSES * UPDATES,
        lost,
        clock.seconds,
    )
    assert got == want
    assert "g1" in config.grants
