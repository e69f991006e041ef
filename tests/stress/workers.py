"""Child-process workers for the stress scenarios: `python -m tests.stress.workers KIND ...`.

Each prints "ready", waits for one line on stdin (so all workers start together), does its work
and prints one JSON line of results. Starting an interpreter costs ~0.3 s of CPU, so a worker
makes its many calls in one process; each call still goes through the real entry point
(`xero_tui.cli.main`) with its own config load, keyring access and cross-process locks.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path


def _barrier() -> None:
    print("ready", flush=True)
    sys.stdin.readline()


def token_loop(name: str, count: int, seed: int, force_rate: float) -> list[dict[str, object]]:
    """`xero-tui token NAME [--force-refresh]` `count` times; forced at random (seeded)."""
    from xero_tui import cli

    rng = random.Random(seed)
    results: list[dict[str, object]] = []
    _barrier()
    for _ in range(count):
        force = rng.random() < force_rate
        out, err = io.StringIO(), io.StringIO()
        # CLOCK_MONOTONIC is one clock for every process, so the parent can order these calls
        # against the refreshes its emulator answered.
        start = time.monotonic()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["token", name, *(["--force-refresh"] if force else [])])
        end = time.monotonic()
        results.append(
            {
                "code": code,
                "force": force,
                "out": out.getvalue(),
                "err": err.getvalue(),
                "start": start,
                "seconds": end - start,
            }
        )
    return results


def config_edits(config_dir: str, who: str, count: int) -> list[dict[str, object]]:
    """`count` ConfigStore.update calls: add a connection, then remove or rename it, in turn."""
    from xero_tui.core.config import ConfigStore
    from xero_tui.core.models import Connection, Kind
    from xero_tui.core.paths import Paths

    # A long lock timeout: back-to-back writers starve each other for seconds (reported), and
    # the property under test is that no change is lost.
    store = ConfigStore(Paths(Path(config_dir)), lock_timeout=60)
    when = datetime(2026, 11, 28, tzinfo=UTC)
    waits: list[float] = []
    _barrier()
    for step in range(count):
        name = f"{who}-{step // 2:03d}"

        def change(config, step=step, name=name):  # type: ignore[no-untyped-def]
            if step % 2 == 0:
                config.connections[name] = Connection(
                    name, Kind.WEB, "C" * 32, "t-" + name, "added", "g1", created=when
                )
            elif (step // 2) % 2 == 0:
                del config.connections[name]
            else:
                config.connections[name].tenant_name = "renamed"

        start = time.monotonic()
        store.update(change)
        waits.append(time.monotonic() - start)
    return [{"updates": count, "max_seconds": max(waits), "total_seconds": sum(waits)}]


def zygote(config_dir: str, old_file: str, new_file: str, keyring_dir: str, file_dir: str) -> None:
    """Import once, then fork one writer per line on stdin ("config", "keyring" or "file") and
    print its pid; the parent kills it. A fork costs milliseconds where an interpreter costs 0.3 s.

    "config" loops ConfigStore.update between two whole configs; "keyring" and "file" loop the
    forced refresh of `token --force-refresh` (a new Service each time, as each command makes)
    with the tokens kept in the test keyring or in the plain secrets file. No thread or event
    loop exists here before the fork.
    """
    import asyncio
    import os
    import signal
    import traceback

    from xero_tui.core.config import ConfigStore, parse
    from xero_tui.core.paths import Paths
    from xero_tui.core.service import Service

    store = ConfigStore(Paths(Path(config_dir)))
    configs = [parse(Path(f).read_text(), store.path) for f in (old_file, new_file)]
    # Killed children are reaped by the kernel.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)

    def config_loop() -> None:
        # The file holds the old config, so the first update already writes the new one.
        index = 1
        while True:
            target = configs[index % 2]

            def change(config, target=target):  # type: ignore[no-untyped-def]
                config.grants = dict(target.grants)
                config.connections = dict(target.connections)

            store.update(change)
            index += 1

    async def refresh_loop() -> None:
        while True:
            await Service().access_token("acme", force=True)

    print("ready", flush=True)
    for line in sys.stdin:
        mode = line.strip()
        pid = os.fork()
        if pid == 0:
            try:
                if mode == "config":
                    config_loop()
                else:
                    os.environ["XERO_TUI_CONFIG_DIR"] = (
                        keyring_dir if mode == "keyring" else file_dir
                    )
                    asyncio.run(refresh_loop())
            except BaseException:
                # Only a kill may end a writer; anything else is reported beside its config.
                errors = Path(config_dir).parent / f"writer-error-{os.getpid()}.txt"
                errors.write_text(traceback.format_exc())
            finally:
                os._exit(3)
        print(pid, flush=True)


def main(argv: list[str]) -> int:
    kind, *args = argv
    if kind == "token":
        name, count, seed, rate = args
        results = token_loop(name, int(count), int(seed), float(rate))
    elif kind == "zygote":
        zygote(*args)
        return 0
    elif kind == "config":
        config_dir, who, count = args
        results = config_edits(config_dir, who, int(count))
    else:
        print(f"unknown worker {kind!r}", file=sys.stderr)
        return 2
    print(json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
