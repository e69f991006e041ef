"""Stress 4: kill -9 at random moments while a process saves the config, and while it
refreshes and stores the rotated token (test keyring, or the plain secrets file).

After every kill: the config parses and is wholly the old or the new file; the next start leaves
no temporary file; and the token Xero considers current is the stored one. The one exception is a
kill after Xero rotated but before the new token was stored: then the old token is still stored,
Xero honours it for 30 minutes, and it must refresh successfully (counted as "grace")."""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.stress.harness import connect, standing, stored_tokens, temps
from tests.stress.registry import output, record, timed
from tests.support.cli import ROOT, cli_env
from tests.support.keyring_backend import read_all
from tests.support.procs import wait_gone
from xero_tui.core.config import Config, ConfigStore, dump, parse
from xero_tui.core.models import Connection, Grant, Kind
from xero_tui.core.paths import Paths
from xero_tui.core.secrets import FileStore
from xero_tui.core.service import Service
from xero_tui.emulator import Emulator

SEED = 4
RUNS = {"config": 70, "keyring": 65, "file": 65}
WHEN = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def build(count: int, tag: str) -> Config:
    """A config big enough (tens of KB) that a kill can land inside its write."""
    config = Config()
    config.grants["g1"] = Grant("g1", Kind.WEB, "C" * 32, ("openid",), WHEN)
    for index in range(count):
        name = f"{tag} organisation {index:04d}"
        config.connections[name] = Connection(
            name, Kind.WEB, "C" * 32, f"t-{index}", tag * 40, "g1", created=WHEN
        )
    return config


def wait_for_temp(directory: Path, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with os.scandir(directory) as entries:
            if any(e.name.startswith(".config.toml.") for e in entries):
                return True
    return False


async def test_kill_9_during_config_and_token_writes(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keyring_file: Path
) -> None:
    dirs = {
        "config": tmp_path / "config-only",
        "keyring": tmp_path / "config",
        "file": tmp_path / "config-file",
    }
    grants = {}
    for mode, file_store in (("keyring", False), ("file", True)):
        monkeypatch.setenv("XERO_TUI_CONFIG_DIR", str(dirs[mode]))
        grants[mode] = (await connect(emu, "acme", file_store=file_store)).grant_id
    config_store = ConfigStore(Paths(dirs["config"]))
    old, new = build(150, "A"), build(100, "B")
    contents = {dump(old).encode(): "old", dump(new).encode(): "new"}
    files = []
    for data, tag in contents.items():
        files.append(tmp_path / f"{tag}.toml")
        files[-1].write_bytes(data)
    config_store.update(
        lambda c: (c.grants.update(old.grants), c.connections.update(old.connections))
    )

    # A kill right after Xero rotated is the dangerous moment; half the refresh kills wait for it.
    rotated = threading.Event()
    state = emu._state
    original: Callable[..., str] = state._rotate

    def rotate(*args: Any) -> str:
        token = original(*args)
        rotated.set()
        return token

    monkeypatch.setattr(state, "_rotate", rotate)
    rng = random.Random(SEED)
    schedule = [mode for mode, count in RUNS.items() for _ in range(count)]
    rng.shuffle(schedule)
    zygote = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.stress.workers",
            "zygote",
            str(dirs["config"]),
            *map(str, files),
            str(dirs["keyring"]),
            str(dirs["file"]),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=cli_env(),
        cwd=ROOT,
    )
    assert zygote.stdin is not None and zygote.stdout is not None
    broken: list[str] = []
    counts = dict.fromkeys(
        ("inside config write", "inside token write", "current", "grace", "refresh kills"), 0
    )
    start_stats = emu.stats
    seen = set()
    with timed() as clock:
        try:
            assert zygote.stdout.readline().strip() == "ready"
            for run, mode in enumerate(schedule):
                where = f"run {run} ({mode}, seed {SEED})"
                after_rotation = mode != "config" and run % 2 == 0
                rotated.clear()
                zygote.stdin.write(mode + "\n")
                zygote.stdin.flush()
                pid = int(zygote.stdout.readline())
                if mode == "config" and run % 2 == 0:
                    # Half the config kills wait for a write to start, so some land inside one.
                    if not wait_for_temp(dirs["config"]):
                        broken.append(f"{where}: the writer never wrote")
                    time.sleep(rng.uniform(0.0, 0.0005))
                elif mode == "config":
                    time.sleep(rng.uniform(0.005, 0.1))
                elif after_rotation:
                    if not rotated.wait(10):
                        broken.append(f"{where}: the writer never refreshed")
                    time.sleep(rng.uniform(0.0, 0.006))
                else:
                    time.sleep(rng.uniform(0.0, 0.12))
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    broken.append(f"{where}: the writer died before the kill")
                wait_gone(pid)
                directory = dirs[mode]
                paths = Paths(directory)
                if mode == "config":
                    data = paths.config_file.read_bytes()
                    if data not in contents:
                        broken.append(f"{where}: config is neither the old nor the new file")
                        continue
                    seen.add(contents[data])
                    counts["inside config write"] += bool(temps(directory))
                    if stat.S_IMODE(paths.config_file.stat().st_mode) != 0o600:
                        broken.append(f"{where}: config mode changed")
                    # The next start reads a whole file and tidies the killed writer's temp file.
                    if config_store.load() not in (old, new) or temps(directory):
                        broken.append(f"{where}: next start saw a bad config or left temps")
                    continue
                counts["refresh kills"] += 1
                counts["inside token write"] += any(".secrets" in t.name for t in temps(directory))
                monkeypatch.setenv("XERO_TUI_CONFIG_DIR", str(directory))
                text = paths.config_file.read_text()
                if dump(parse(text, paths.config_file)) != text:
                    broken.append(f"{where}: the config is not a whole file as written")
                if mode == "keyring":
                    read_all(keyring_file)  # raises if the keyring file is not whole JSON
                else:
                    FileStore(paths).get("probe")  # raises StorageError if not whole TOML
                kept = stored_tokens(grants[mode])
                where_now = standing(emu, kept.refresh_token if kept else None)
                # The next start (a plain `token` call, no refresh needed) leaves no temp file.
                await Service().access_token("acme")
                if temps(directory):
                    broken.append(f"{where}: temporary files left after the next start")
                if where_now == "grace":
                    # Killed after Xero rotated, before the store: the old token must still work.
                    counts["grace"] += 1
                    await Service().access_token("acme", force=True)
                    kept = stored_tokens(grants[mode])
                    if standing(emu, kept.refresh_token if kept else None) != "current":
                        broken.append(f"{where}: the grace refresh did not store a current token")
                elif where_now == "current":
                    counts["current"] += 1
                else:
                    broken.append(f"{where}: the stored refresh token is {where_now}")
        finally:
            zygote.stdin.close()
            zygote.kill()
            zygote.wait()
    errors = sorted(tmp_path.glob("writer-error-*.txt"))
    for error in errors:
        output("killed writer error", error.read_text())
    finals = []
    for mode in ("keyring", "file"):
        monkeypatch.setenv("XERO_TUI_CONFIG_DIR", str(dirs[mode]))
        await Service().access_token("acme", force=True)
        kept = stored_tokens(grants[mode])
        finals.append(standing(emu, kept.refresh_token if kept else None))
    invalid = emu.stats.invalid_grants - start_stats.invalid_grants
    lost = len(broken) + len(errors) + invalid + sum(f != "current" for f in finals)
    record(
        "4 kill -9 during writes",
        f"{RUNS['config']} config saves, {RUNS['keyring']} keyring and {RUNS['file']} secrets-file "
        f"refreshes killed (seed {SEED}): {counts['inside config write']} kills inside a config "
        f"write, {counts['inside token write']} inside a secrets-file write, {counts['grace']} after "
        "rotation before the store (old token then refreshed in grace)",
        len(schedule),
        lost,
        clock.seconds,
    )
    assert not broken, broken[:5]
    assert not errors, errors[0].read_text()
    assert invalid == 0
    assert finals == ["current", "current"]
    assert seen == {"old", "new"}, "the writers never got to write both configs"
    assert counts["inside config write"] > 0, "no kill landed inside a config write"
    assert counts["grace"] > 0, "no kill landed between rotation and store"
