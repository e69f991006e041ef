"""`python -m tests.bench.run [--quick]`: xero-tui against the floor, one table.

Every scenario is measured against its baseline in the same run, interleaved (scenario, baseline,
scenario, baseline, ...); the table shows each side's median, and the ratio is the median of the
pairs' ratios, so it holds on a busy machine. Process scenarios time the whole child process; TUI
scenarios run headless (`run_test`) in a fresh child process each. Everything runs against the emulator, in a temporary config dir with the
file-backed test keyring; the user's own config and keyring are never touched.

Full mode is the check of the targets: its exit status is 1 when a target is missed. `--quick` (CI)
runs each scenario twice, prints the table and names any target it missed, but a miss does not
fail it. In both modes the exit status is 1 when a scenario fails to run or Textual/Rich reach
the `token` path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from tests.bench.prepare import (
    CLIENT_ID,
    CLIENT_SECRET,
    ROOT,
    Place,
    connect_for_real,
    register_bench_client,
    write_many,
)
from tests.support.net import free_port
from xero_tui.emulator import Emulator

BENCH = Path(__file__).resolve().parent
MANY_CONNECTIONS = 1_000
# How many of those connections share one consent (one grant, one keyring entry).
CONNECTIONS_PER_GRANT = 10
MANY_ORGANISATIONS = 10_000
CONSENT_ORGANISATIONS = 100
TOKEN_NAME = "Bench"
FRAME = 0.016
# Modules a cached `token` never needs: they belong to refreshing, consent or the TUI.
NOT_FOR_A_CACHED_TOKEN = (
    "textual",
    "rich",
    "httpx",
    "httpcore",
    "h11",
    "anyio",
    "sniffio",
    "certifi",
    "idna",
    "ssl",
    "filelock",
    "platformdirs",
    "xero_tui.core.xero",
    "xero_tui.core.http",
    "xero_tui.core.loopback",
    "xero_tui.core.browser",
    "xero_tui.core.oauth",
    "xero_tui.emulator",
)


class BenchError(Exception):
    """A scenario could not run: the benchmark itself is broken, which must not go unnoticed."""


def xero_tui_command() -> list[str]:
    script = Path(sys.executable).parent / "xero-tui"
    return [str(script)] if script.exists() else [sys.executable, "-m", "xero_tui"]


def run_process(cmd: Sequence[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(
        cmd,
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0 or not proc.stdout.strip():
        raise BenchError(
            f"{' '.join(cmd[:4])} exited {proc.returncode}:\n{proc.stderr[-3000:]}{proc.stdout[-500:]}"
        )
    return elapsed, proc.stdout


def timed(cmd: Sequence[str], env: dict[str, str]) -> Callable[[], float]:
    def run() -> float:
        return run_process(cmd, env)[0]

    return run


def tui_child(scenario: str, side: str, count: int, env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "tests.bench.tui", scenario, side, str(count)]
    _, out = run_process(cmd, env)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def tui_seconds(scenario: str, side: str, count: int, env: dict[str, str]) -> Callable[[], float]:
    def run() -> float:
        return float(tui_child(scenario, side, count, env)["seconds"])

    return run


def tui_memory(side: str, count: int, env: dict[str, str]) -> Callable[[], float]:
    def run() -> float:
        return float(tui_child("memory", side, count, env)["maxrss_kb"]) * 1024

    return run


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[round(0.95 * (len(ordered) - 1))]


@dataclass
class Row:
    name: str
    target: str
    limit: float
    unit: str = "ms"
    ours: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    runs: str = ""
    statistic: str = "median"
    note: str = ""
    error: str | None = None

    @property
    def value(self) -> float:
        if self.statistic == "p95":
            return p95(self.ours)
        return statistics.median(self.ours)

    @property
    def ratio(self) -> float | None:
        """The median of each pair's ratio: a pair runs back to back, so the machine's drift
        over the run (which moves both medians, though not always together) cancels out."""
        if not self.floor:
            return None
        return statistics.median(o / f for o, f in zip(self.ours, self.floor, strict=True))

    @property
    def met(self) -> bool:
        if self.error is not None or not self.ours:
            return False
        measured = self.ratio if self.ratio is not None else self.value
        return measured <= self.limit

    def show(self, value: float) -> str:
        if self.unit == "MB":
            return f"{value / 2**20:.0f} MB"
        return f"{value * 1000:.1f} ms"


def measure_pairs(
    row: Row, ours: Callable[[], float], floor: Callable[[], float], runs: int, warm: bool
) -> None:
    """Interleaved: scenario, baseline, scenario, baseline... (after one unrecorded pair)."""
    if warm:
        ours()
        floor()
    for _ in range(runs):
        row.ours.append(ours())
        row.floor.append(floor())
    row.runs = str(runs)


def print_table(rows: list[Row], quick: bool) -> None:
    header = ("scenario", "runs", "median", "baseline median", "ratio", "target", "met?")
    lines = []
    for row in rows:
        if row.error is not None:
            lines.append((row.name, row.runs or "-", "error", "-", "-", row.target, "no"))
            continue
        value = row.show(row.value) + (" (p95)" if row.statistic == "p95" else "")
        floor = row.show(statistics.median(row.floor)) if row.floor else "-"
        ratio = f"{row.ratio:.2f}" if row.ratio is not None else "-"
        lines.append(
            (row.name, row.runs, value, floor, ratio, row.target, "yes" if row.met else "NO")
        )
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]

    def fmt(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    print()
    print(f"xero-tui benchmark ({'quick' if quick else 'full'} mode)")
    print(fmt(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines:
        print(fmt(line))
    for row in rows:
        if row.note:
            print(f"  {row.name}: {row.note}")
        if row.error:
            print(f"  {row.name} FAILED: {row.error}")


# Import path of `token` ----------------------------------------------------------------------


def imported(cmd: Sequence[str], env: dict[str, str]) -> dict[str, int]:
    """Module -> its own import time in microseconds, from `python -X importtime`."""
    proc = subprocess.run(
        cmd, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(cmd[:5])} exited {proc.returncode}: {proc.stderr[-2000:]}")
    modules: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        own, _, name = line.removeprefix("import time:").split("|")
        modules[name.strip()] = int(own)
    return modules


def import_report(place: Place, grant_id: str) -> bool:
    """Print what `token NAME` imports beyond the floor script; False if Textual or Rich do."""
    env = place.env()
    entry = "import sys; from xero_tui.cli import main; sys.exit(main())"
    ours = imported([sys.executable, "-X", "importtime", "-c", entry, "token", TOKEN_NAME], env)
    floor = imported(
        [sys.executable, "-X", "importtime", str(BENCH / "floor_token.py"), grant_id], env
    )
    extra = {name: us for name, us in ours.items() if name not in floor}

    def unneeded(name: str) -> bool:
        return any(name == m or name.startswith(m + ".") for m in NOT_FOR_A_CACHED_TOKEN)

    waste = {name: us for name, us in extra.items() if unneeded(name)}
    own = {name: us for name, us in extra.items() if name.startswith("xero_tui")}
    rest = {name: us for name, us in extra.items() if name not in waste and name not in own}
    print()
    print(
        f"`xero-tui token NAME` imports {len(ours)} modules, {len(extra)} more than the floor "
        f"script ({sum(extra.values()) / 1000:.1f} ms of their own import time in this run):"
    )
    print(f"  xero_tui's own ({len(own)}, {sum(own.values()) / 1000:.1f} ms): {', '.join(own)}")
    print(f"  other, needed ({len(rest)}, {sum(rest.values()) / 1000:.1f} ms): {_top(rest)}")
    if waste:
        print(
            f"  NOT NEEDED for a cached token ({len(waste)}, {sum(waste.values()) / 1000:.1f} ms):"
            f" {_top(waste)}"
        )
    else:
        print("  not needed for a cached token: none")
    clean = True
    for package in ("textual", "rich"):
        present = any(n == package or n.startswith(package + ".") for n in ours)
        print(f"  {package}: {'IMPORTED (must not be)' if present else 'not imported'}")
        clean = clean and not present
    return clean


def _top(modules: dict[str, int], count: int = 12) -> str:
    if not modules:
        return "-"
    ordered = sorted(modules.items(), key=lambda item: -item[1])
    shown = [f"{name} {us / 1000:.1f}" for name, us in ordered[:count]]
    more = f", and {len(ordered) - count} more" if len(ordered) > count else ""
    return ", ".join(shown) + more


# The run -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="two runs each (CI); names missed targets without failing",
    )
    parser.add_argument("--only", nargs="+", metavar="WORD", help="scenarios whose name has WORD")
    args = parser.parse_args(argv)
    quick = args.quick
    process_runs, tui_runs, filter_children = (2, 2, 1) if quick else (31, 9, 5)
    warm = not quick

    with (
        TemporaryDirectory(prefix="xero-tui-bench-") as tmp,
        Emulator(tenants=CONSENT_ORGANISATIONS) as emulator,
        contextlib.ExitStack() as stack,
    ):
        root = Path(tmp)
        redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
        register_bench_client(emulator, redirect_uri)
        token_place = Place(root / "token", emulator.env)
        many_place = Place(root / "many", {})
        empty_place = Place(root / "empty", {})
        consent_place = Place(root / "consent", emulator.env)
        grant_id = connect_for_real(token_place, emulator, TOKEN_NAME, redirect_uri)
        write_many(many_place, MANY_CONNECTIONS, CONNECTIONS_PER_GRANT)
        consent_env = consent_place.env() | {
            "BENCH_CLIENT_ID": CLIENT_ID,
            "BENCH_CLIENT_SECRET": CLIENT_SECRET,
            "BENCH_REDIRECT_URI": redirect_uri,
            "BENCH_TENANT_IDS": ",".join(t.tenant_id for t in emulator.tenants),
        }
        for name in ("DISPLAY", "WAYLAND_DISPLAY"):
            consent_env.pop(name, None)
        xero_tui = xero_tui_command()
        python = sys.executable
        token_env, many_env = token_place.env(), many_place.env()
        shared = stack.enter_context(shared_store(root, emulator, redirect_uri))

        plan: list[tuple[Row, Callable[[Row], None]]] = [
            (
                Row("token NAME, cached (whole process)", "ratio <= 1.3", 1.3),
                lambda row: measure_pairs(
                    row,
                    timed([*xero_tui, "token", TOKEN_NAME], token_env),
                    timed([python, str(BENCH / "floor_token.py"), grant_id], token_env),
                    process_runs,
                    warm,
                ),
            ),
            (
                Row("token NAME --force-refresh (whole process)", "ratio <= 1.3", 1.3),
                lambda row: measure_pairs(
                    row,
                    timed([*xero_tui, "token", TOKEN_NAME, "--force-refresh"], token_env),
                    timed(
                        [python, str(BENCH / "floor_refresh.py"), grant_id, CLIENT_ID], token_env
                    ),
                    process_runs,
                    warm,
                ),
            ),
            (
                Row("token NAME, cached, shared store (whole process)", "ratio <= 1.3", 1.3),
                lambda row: measure_pairs(
                    row,
                    timed([*xero_tui, "token", TOKEN_NAME], shared.hosts[0]),
                    timed(
                        [python, str(BENCH / "floor_token_shared.py"), shared.grant_id],
                        shared.hosts[0],
                    ),
                    process_runs,
                    warm,
                ),
            ),
            (
                Row("token --force-refresh, shared store, two hosts in turn", "ratio <= 1.3", 1.3),
                lambda row: measure_pairs(
                    row,
                    shared.in_turn([*xero_tui, "token", TOKEN_NAME, "--force-refresh"]),
                    timed(
                        [
                            python,
                            str(BENCH / "floor_refresh_shared.py"),
                            shared.grant_id,
                            CLIENT_ID,
                        ],
                        shared.hosts[0],
                    ),
                    process_runs,
                    warm,
                ),
            ),
            (
                Row(f"list --json, {MANY_CONNECTIONS:,} connections", "ratio <= 2", 2.0),
                lambda row: measure_pairs(
                    row,
                    timed([*xero_tui, "list", "--json"], many_env),
                    timed([python, str(BENCH / "floor_list.py")], many_env),
                    process_runs,
                    warm,
                ),
            ),
            (
                Row(
                    f"TUI start to painted home, {MANY_CONNECTIONS:,} connections",
                    "ratio <= 1.3",
                    1.3,
                ),
                lambda row: measure_pairs(
                    row,
                    tui_seconds("home", "ours", MANY_CONNECTIONS, many_env),
                    tui_seconds("home", "floor", MANY_CONNECTIONS, many_env),
                    tui_runs,
                    warm,
                ),
            ),
            (
                Row(f"organisation picker open, {MANY_ORGANISATIONS:,} orgs", "ratio <= 1.3", 1.3),
                lambda row: measure_pairs(
                    row,
                    tui_seconds("picker", "ours", MANY_ORGANISATIONS, empty_place.env()),
                    tui_seconds("picker", "floor", MANY_ORGANISATIONS, empty_place.env()),
                    tui_runs,
                    warm,
                ),
            ),
            (
                Row("api.access_token, cached (in-process)", "median <= 2 ms", API_CACHED),
                lambda row: measure_api(row, token_env, 5 if quick else 200),
            ),
            (
                Row(
                    f"filter keystroke, {MANY_ORGANISATIONS:,} orgs (CPU, key to painted)",
                    "p95 < 16 ms",
                    FRAME,
                    statistic="p95",
                ),
                lambda row: measure_keys(row, empty_place.env(), filter_children),
            ),
            (
                Row(
                    f"consent: callback to {CONSENT_ORGANISATIONS} orgs shown (loopback)",
                    "ratio <= 1.5",
                    1.5,
                ),
                lambda row: measure_pairs(
                    row,
                    tui_seconds("consent", "ours", CONSENT_ORGANISATIONS, consent_env),
                    tui_seconds("consent", "floor", CONSENT_ORGANISATIONS, consent_env),
                    tui_runs,
                    warm,
                ),
            ),
            (
                Row(
                    f"peak memory, {MANY_ORGANISATIONS:,} orgs on screen (ru_maxrss)",
                    "ratio <= 1.5",
                    1.5,
                    unit="MB",
                    note="whole-process peak RSS (getrusage ru_maxrss) of each child, "
                    "interpreter and imports included",
                ),
                lambda row: measure_pairs(
                    row,
                    tui_memory("ours", MANY_ORGANISATIONS, empty_place.env()),
                    tui_memory("floor", MANY_ORGANISATIONS, empty_place.env()),
                    max(2, tui_runs // 2),
                    False,
                ),
            ),
        ]
        rows = []
        for row, measure in plan:
            if args.only and not any(word in row.name for word in args.only):
                continue
            print(f"measuring: {row.name}", file=sys.stderr, flush=True)
            try:
                measure(row)
            except (BenchError, subprocess.TimeoutExpired) as exc:
                row.error = str(exc)
            rows.append(row)
        clean = import_report(token_place, grant_id)
    print_table(rows, quick)
    broken = any(row.error is not None for row in rows)
    missed = [row.name for row in rows if not row.met and row.error is None]
    if missed:
        print(f"\nTargets missed: {', '.join(missed)}")
        if quick:
            # Two runs each on a shared machine: a hint, not a verdict; the full run decides.
            print("(quick mode: not a check; `python -m tests.bench.run` measures these properly)")
    if broken or not clean:
        return 1
    return 0 if quick or not missed else 1


@dataclass
class SharedStore:
    """Two hosts (config folders of their own) on one PostgreSQL store, with one connection."""

    grant_id: str
    hosts: list[dict[str, str]]

    def in_turn(self, cmd: Sequence[str]) -> Callable[[], float]:
        turn = [0]

        def run() -> float:
            turn[0] += 1
            return run_process(cmd, self.hosts[turn[0] % len(self.hosts)])[0]

        return run


@contextlib.contextmanager
def shared_store(root: Path, emulator: Emulator, redirect_uri: str) -> Iterator[SharedStore]:
    from cryptography.fernet import Fernet

    from tests.support.postgres import Unavailable, running_postgres

    try:
        server = running_postgres()
        postgres = server.__enter__()
    except Unavailable as exc:
        raise BenchError(f"the shared-store rows need PostgreSQL: {exc}") from None
    try:
        dbname = postgres.new_database()
        store = {
            "XERO_TUI_STORE": postgres.url(dbname),
            "XERO_TUI_STORE_KEY": Fernet.generate_key().decode(),
        }
        places = [Place(root / f"shared-{i}", emulator.env | store) for i in range(2)]
        grant_id = connect_for_real(places[0], emulator, TOKEN_NAME, redirect_uri)
        for name in store:
            os.environ.pop(name, None)
        yield SharedStore(grant_id, [place.env() for place in places])
    finally:
        server.__exit__(None, None, None)


# A job's own process asks for a token before each call to Xero: it must cost next to nothing.
API_CACHED = 0.002
API_PROBE = """
import json, sys, time
from xero_tui import api
api.access_token(sys.argv[1])
seconds = []
for _ in range(int(sys.argv[2])):
    started = time.perf_counter()
    api.access_token(sys.argv[1])
    seconds.append(time.perf_counter() - started)
print(json.dumps(seconds))
"""


def measure_api(row: Row, env: dict[str, str], calls: int) -> None:
    """Calls of `api.access_token` in one process after its first, against a stored token."""
    answer = subprocess.run(
        [sys.executable, "-c", API_PROBE, TOKEN_NAME, str(calls)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    row.ours = json.loads(answer.stdout)
    row.runs = f"{calls} calls"


def measure_keys(row: Row, env: dict[str, str], children: int) -> None:
    wall: list[float] = []
    for _ in range(children):
        result = tui_child("filter", "ours", MANY_ORGANISATIONS, env)
        row.ours += result["cpu"]
        wall += result["wall"]
    row.runs = f"{len(row.ours)} keys"
    row.note = (
        f"CPU time of the TUI process from key to repainted list; wall clock on this busy "
        f"machine: p95 {p95(wall) * 1000:.1f} ms, median {statistics.median(wall) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    sys.exit(main())
