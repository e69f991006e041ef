"""Stress 11-14, the attacks of issue 11: a second local user (foreign and loose folders,
planted links, a held foreign lock), a Xero that returns hostile fields, answers too big or too
slow to finish, and a local flood of idle connections at the listener (security.md 45-52)."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
import time
import unicodedata
import uuid
from pathlib import Path

import pytest

from tests.stress.harness import connect, standing, stored_tokens
from tests.stress.registry import output, record, timed
from tests.stress.wire import LoopThread, exchange
from tests.support.cli import ROOT, cli_env
from tests.support.procs import FOREIGN_UID, require_root
from xero_tui.core.errors import EXIT_STORAGE, EXIT_UNAVAILABLE, OAuthError
from xero_tui.core.http import HttpSettings
from xero_tui.core.loopback import MAX_CONNECTIONS, CallbackListener
from xero_tui.core.xero import XeroClient
from xero_tui.emulator import Emulator

VICTIM = b"# the victim's own start-up file\n"
HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp"})
ESCAPES = ("\x1b]52;c;cHduZWQ=\x07", "\x1b[2J\x1b[H", "\x1b[31m", "\x9b2J", "\x1bP1$r\x1b\\")
INVISIBLE = ("\u202e", "\u2066", "\u200b", "\u200d", "\ufeff", "\u2028", "\u2029", "\x85")


# Runs `python -m xero_tui ARGS` and, at exit, writes the process's own peak resident memory
# (VmHWM, KiB): ru_maxrss would also count the pages the child shared with pytest before exec.
_PEAK_WRAPPER = """
import atexit, runpy, sys
out = sys.argv.pop(1)
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            open(out, "w").write(line.split()[1])
atexit.register(peak)
sys.argv[0] = "xero_tui"
runpy.run_module("xero_tui", run_name="__main__", alter_sys=True)
"""


def run(args: list[str], env: dict[str, str]) -> tuple[int, str, str, float, int]:
    """The real CLI in a child: exit code, stdout, stderr, seconds and its peak memory (KiB)."""
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".peak") as peak_file:
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", _PEAK_WRAPPER, peak_file.name, *args],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
            text=True,
            timeout=120,
        )
        seconds = time.monotonic() - started
        text = peak_file.read().strip()
    peak = int(text) if text.isdigit() else 0
    if "token" not in args:
        output("xero-tui " + " ".join(args) + " (stdout)", proc.stdout)
    output("xero-tui " + " ".join(args) + " (stderr)", proc.stderr)
    return proc.returncode, proc.stdout, proc.stderr, seconds, peak


def one_sentence(err: str) -> bool:
    lines = [line for line in err.strip().splitlines() if not line.startswith("xero-tui: Xero")]
    return len(lines) == 1


def test_a_second_local_user_plants_folders_links_and_locks(tmp_path: Path) -> None:
    """Stress 11: every planted folder, link and lock of a second local user is refused by the
    real CLI with one sentence and exit 5, and no victim file changes."""
    require_root("the planted files must belong to another user")
    home = tmp_path / "victim"
    home.mkdir()
    # (what was planted, the config folder, the victim files, the commands that meet it)
    cases: list[tuple[str, Path, list[Path], list[list[str]]]] = []
    every = [["list"], ["token", "acme"], ["remove", "acme"]]

    def victim(name: str) -> Path:
        path = home / name
        path.write_bytes(VICTIM)
        return path

    # A foreign 0777 folder holding config.toml -> the victim's .bashrc.
    bashrc = victim(".bashrc")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.toml").symlink_to(bashrc)
    os.chmod(foreign, 0o777)
    os.chown(foreign, FOREIGN_UID, FOREIGN_UID)
    cases.append(("foreign 0777 folder, config.toml -> .bashrc", foreign, [bashrc], every))
    # The victim's own 0777 folder holding secrets.toml -> .profile.
    profile = victim(".profile")
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "secrets.toml").symlink_to(profile)
    (loose / "config.toml").write_text('schema = 1\nsecret_storage = "file"\n')
    os.chmod(loose, 0o777)
    cases.append(("own 0777 folder, secrets.toml -> .profile", loose, [profile], every))
    # A group-writable folder.
    group = tmp_path / "group"
    group.mkdir()
    os.chmod(group, 0o770)
    cases.append(("own 0770 folder", group, [], every))
    # A private folder whose config.toml links to another user's file.
    other = victim(".other-user-file")
    os.chown(other, FOREIGN_UID, FOREIGN_UID)
    linked = tmp_path / "linked"
    linked.mkdir(mode=0o700)
    (linked / "config.toml").symlink_to(other)
    cases.append(("config.toml -> another user's file", linked, [other], every))
    # A private folder whose locks/ belongs to another user, with its lock held.
    locked = tmp_path / "locked"
    (locked / "locks").mkdir(parents=True, mode=0o700)
    os.chmod(locked, 0o700)
    (locked / "config.toml").write_text(
        'schema = 1\n\n[grants.g1]\nkind = "web"\nclient_id = "c"\n'
        'created = 2026-11-28T10:00:00Z\n\n[connections.acme]\nkind = "web"\n'
        'client_id = "c"\ntenant_id = "t"\ntenant_name = "Acme"\ngrant = "g1"\n'
        "created = 2026-11-28T10:00:00Z\n"
    )
    held = os.open(locked / "locks" / "config.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX)
    os.chown(locked / "locks", FOREIGN_UID, FOREIGN_UID)
    # Only a change takes the lock: removing the saved connection meets it.
    cases.append(("foreign locks/ with a held lock", locked, [], [["remove", "acme"]]))
    # A grant id that would move its lock file out of the folder.
    moved = tmp_path / "moved"
    moved.mkdir(mode=0o700)
    (moved / "config.toml").write_text(
        'schema = 1\n\n[grants."../../pwn"]\nkind = "web"\nclient_id = "c"\n'
        "created = 2026-11-28T10:00:00Z\n"
    )
    cases.append(("grant id ../../pwn", moved, [], every))

    broken: list[str] = []
    runs = 0
    slowest = 0.0
    with timed() as clock:
        try:
            for label, folder, victims, commands in cases:
                for args in commands:
                    runs += 1
                    env = cli_env(XERO_TUI_CONFIG_DIR=str(folder))
                    code, _, err, seconds, _ = run(args, env)
                    slowest = max(slowest, seconds)
                    if code != EXIT_STORAGE or str(folder) not in err or not one_sentence(err):
                        broken.append(f"{label}, {args[0]}: exit {code}: {err.strip()[:300]}")
                for path in victims:
                    if path.read_bytes() != VICTIM:
                        broken.append(f"{label}: {path.name} was changed")
            # Under umask 000, missing folders are made 0700.
            deep = tmp_path / "new" / ".config" / "xero-tui"
            env = cli_env(XERO_TUI_CONFIG_DIR=str(deep), XERO_CLIENT_SECRET="x")
            runs += 1
            old = os.umask(0)
            try:
                code, _, err, _, _ = run(["remove", "nothing"], env)
                from xero_tui.core.config import ConfigStore
                from xero_tui.core.paths import Paths

                ConfigStore(Paths(deep)).update(lambda config: None)
            finally:
                os.umask(old)
            for folder in (tmp_path / "new", tmp_path / "new" / ".config", deep):
                if (folder.stat().st_mode & 0o777) != 0o700:
                    broken.append(f"umask 000: {folder} is {folder.stat().st_mode & 0o777:o}")
        finally:
            os.close(held)
    record(
        "11 local neighbours",
        f"{len(cases)} plants of a second user (foreign/0777/0770 folders, links to .bashrc, "
        ".profile and a foreign file, a held foreign lock, grant id ../../pwn) x list/token/"
        f"remove through the CLI, then umask 000; slowest refusal {slowest:.1f} s",
        runs,
        len(broken),
        clock.seconds,
    )
    assert broken == []


def hostile_entries() -> list[tuple[str, dict[str, object], bool]]:
    """(label, /connections entry, whether it must be refused) for each hostile field."""
    cases: list[tuple[str, dict[str, object], bool]] = []

    def entry(**changes: object) -> dict[str, object]:
        base: dict[str, object] = {
            "id": str(uuid.uuid4()),
            "authEventId": str(uuid.uuid4()),
            "tenantId": str(uuid.uuid4()),
            "tenantType": "ORGANISATION",
            "tenantName": "Acme",
        }
        base.update(changes)
        return base

    for text in ESCAPES + INVISIBLE:
        shown = repr(text)
        cases.append((f"tenantName {shown}", entry(tenantName=f"Ac{text}me"), False))
        for key in ("tenantId", "id", "authEventId"):
            cases.append((f"{key} {shown}", entry(**{key: f"{uuid.uuid4()}{text}"}), True))
        cases.append((f"tenantType {shown}", entry(tenantType=f"ORGANISATION{text}"), True))
    cases.append(("10,000-character name", entry(tenantName="N" * 10_000), False))
    cases.append(("tenantId not a UUID", entry(tenantId="tenant-1"), True))
    return cases


async def test_a_hostile_xero_is_refused_or_cleaned_before_anything_shows(emu: Emulator) -> None:
    """Stress 12: every hostile /connections field is refused (ids, types) or cleaned (names)
    on arrival, and a real `connect` against them prints no hidden character."""
    cases = hostile_entries()
    settings = HttpSettings(timeout=10, retries=0)
    broken: list[str] = []
    refused = cleaned = 0
    with timed() as clock:
        async with XeroClient(emu.endpoints, settings) as xero:
            for label, item, must_refuse in cases:
                emu.inject("connections", "answer", body=json.dumps([item]))
                try:
                    tenants = await xero.connections("any")
                except OAuthError as exc:
                    output(f"hostile {label}", str(exc))
                    refused += 1
                    if not must_refuse:
                        broken.append(f"{label}: refused, but a name is to be cleaned")
                    if any(unicodedata.category(ch) in HIDDEN for ch in str(exc)):
                        broken.append(f"{label}: the refusal carries a hidden character")
                    continue
                cleaned += 1
                if must_refuse:
                    broken.append(f"{label}: accepted")
                for tenant in tenants:
                    for value in (tenant.tenant_name, tenant.tenant_id, tenant.tenant_type):
                        if any(unicodedata.category(ch) in HIDDEN for ch in value):
                            broken.append(f"{label}: {value!r} kept a hidden character")
                    if len(tenant.tenant_name) > 500:
                        broken.append(f"{label}: a {len(tenant.tenant_name)}-character name")
        # The real CLI through a whole consent: a hostile type is refused, in a clean sentence.
        from tests.support.cli import connect_web

        types = [c for c in cases if c[0].startswith("tenantType")][:3]
        for index, (label, item, _) in enumerate(types):
            emu.inject("connections", "answer", count=2, body=json.dumps([item]))
            # A refused answer leaves the sign-in pending under its name: a new name each time.
            result = await asyncio.to_thread(connect_web, emu, f"acme-{index}")
            output(f"connect with {label}", result.err)
            if result.code == 0 or any(
                unicodedata.category(ch) in HIDDEN and ch != "\n" for ch in result.out + result.err
            ):
                broken.append(f"connect with {label}: exit {result.code}, or a hidden character")
    record(
        "12 hostile Xero data",
        f"{len(cases)} /connections entries with ESC/OSC/CSI/DCS, bidi, zero-width, BOM, "
        f"U+2028/9, NEL and 10,000-character fields: {refused} refused, {cleaned} cleaned; "
        "then 3 real `connect`s",
        len(cases) + 3,
        len(broken),
        clock.seconds,
    )
    assert broken == []


async def test_answers_too_big_or_too_slow_end_in_bounded_memory_and_time(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stress 13: `token --force-refresh` against an endless token answer stops at the body cap
    in bounded memory, and against one trickled a byte at a time stops at the total deadline
    and frees the grant lock; the stored refresh token keeps working."""
    monkeypatch.setenv("XERO_TUI_HTTP_BACKOFF", "0.01")
    conn = await connect(emu, "acme")
    env = cli_env(XERO_TUI_HTTP_TIMEOUT="2", XERO_TUI_HTTP_RETRIES="1")
    broken: list[str] = []
    with timed() as clock:
        emu.inject("token", "endless")  # refused, not retried
        code, _, err, big_seconds, peak = run(["token", "acme", "--force-refresh"], env)
        if code != EXIT_UNAVAILABLE or "larger than 1 MB" not in err:
            broken.append(f"endless answer: exit {code}: {err.strip()[:200]}")
        emu.inject("token", "trickle", count=2, delay=0.2)
        code, _, err, slow_seconds, _ = run(["token", "acme", "--force-refresh"], env)
        # Two tries of 2 s each (+ the grace and backoff), not the minutes a trickle takes.
        if code != EXIT_UNAVAILABLE or "did not finish answering within 2 s" not in err:
            broken.append(f"trickled answer: exit {code}: {err.strip()[:200]}")
        if slow_seconds > 2 * 2.5 + 2:
            broken.append(f"trickled answer: `token` took {slow_seconds:.1f} s")
        # The lock is free and the old refresh token (rotated unseen by the trickle) still works.
        before = stored_tokens(conn.grant_id)
        code, out, err, _, normal_peak = run(["token", "acme", "--force-refresh"], env)
        after = stored_tokens(conn.grant_id)
        # The 64 MB answer costs about the 1 MB read, not 64 MB, over a normal refresh.
        if not peak or not normal_peak or peak > normal_peak + 16 * 1024:
            broken.append(f"endless answer: peaked at {peak} KiB, a refresh at {normal_peak} KiB")
        if code != 0 or not out.strip() or after is None:
            broken.append(f"after the attacks: exit {code}: {err.strip()[:200]}")
        elif before is not None and standing(emu, after.refresh_token) != "current":
            broken.append("after the attacks: the stored refresh token is not the current one")
    record(
        "13 oversized and trickled answers",
        f"`token --force-refresh` (timeout 2 s, 1 retry) vs an endless token answer: exit 4 "
        f"in {big_seconds:.1f} s, peak RSS {peak // 1024} MiB (a normal refresh: "
        f"{normal_peak // 1024} MiB); vs one byte every 0.2 s: exit 4 in {slow_seconds:.1f} s; "
        "then a refresh with the kept token",
        3,
        len(broken),
        clock.seconds,
    )
    assert broken == []


def test_a_flood_of_idle_connections_cannot_lock_the_browser_out() -> None:
    """Stress 14: with far more idle connections than the listener's limit held open, every
    browser request and the genuine callback are still answered."""
    flood = MAX_CONNECTIONS * 3
    requests = 10
    loop = LoopThread()
    idle: list[socket.socket] = []
    broken: list[str] = []
    served = 0
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        listener = CallbackListener(f"http://localhost:{port}/callback", "s" * 43, timeout=60)
        loop.run(listener.start())
        with timed() as clock:
            for _ in range(flood):
                sock = socket.create_connection(("127.0.0.1", port))
                idle.append(sock)
            time.sleep(0.2)
            for index in range(requests):
                answer = exchange(port, f"GET /favicon.ico?{index} HTTP/1.1\r\n\r\n".encode())
                if answer.status == 404:
                    served += 1
                else:
                    broken.append(f"browser request {index}: {answer.status}")
                # The flood keeps coming back between the browser's requests.
                for _ in range(8):
                    idle.append(socket.create_connection(("127.0.0.1", port)))
            # The browser's request is held until the exchange is done, as in a real sign-in.
            page: list[object] = []
            target = b"GET /callback?state=" + b"s" * 43 + b"&code=c HTTP/1.1\r\n\r\n"
            browser = threading.Thread(
                target=lambda: page.append(exchange(port, target, timeout=20)), daemon=True
            )
            browser.start()
            result = loop.run(asyncio.wait_for(listener.wait(), 5))
            loop.run(listener.complete(True, "ok"))
            browser.join(20)
            if result.code != "c" or not page or getattr(page[0], "status", None) != 200:
                broken.append("the genuine callback did not complete the attempt")
    finally:
        for sock in idle:
            sock.close()
        loop.run(listener.close())
        loop.close()
    record(
        "14 idle connection flood",
        f"{flood} idle connections (limit {MAX_CONNECTIONS}) plus 8 more between each of "
        f"{requests} browser requests: {served} of {requests} answered, then the genuine callback",
        requests + 1,
        len(broken),
        clock.seconds,
    )
    assert broken == []
