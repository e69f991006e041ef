"""Stress 10: keyrings that hang, raise or drop writes, under the real `xero-tui` command.

Every command ends within a bound with one clear sentence (exit 5, or 8 when Xero had already
rotated the token), `connect` stops before the
browser, and no token is lost: when the keyring fails after Xero rotated the refresh token, the
old one stays stored, Xero honours it for 30 minutes, and the next refresh with a working keyring
succeeds (security.md 22, 23, 27-29)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.stress.harness import connect, free_port, run_cli, standing, stored_tokens
from tests.stress.registry import record, timed
from tests.support.cli import Result, cli_env
from xero_tui.core.errors import EXIT_NOT_STORED, EXIT_STORAGE
from xero_tui.core.secrets import DEFAULT_TIMEOUT
from xero_tui.emulator import Emulator

FAULTS = "tests.support.keyring_faults."
# Well under the 30 s a hanging backend blocks for: start-up under load, the keyring call's own
# timeout, and its read-back's.
BOUND = 2 * DEFAULT_TIMEOUT + 10.0


@dataclass
class Case:
    label: str
    backend: str
    command: tuple[str, ...]
    # How the emulator should then see the stored refresh token: untouched, or rotated away
    # (kept only by the grace period). None: no connection involved.
    stored: str | None
    directory: Path = field(default=Path())
    keyring: Path = field(default=Path())
    grant: str = ""
    result: Result | None = None
    seconds: float = 0.0


def cases(client_id: str) -> list[Case]:
    connect_new = (
        "connect",
        "new",
        "--client-id",
        client_id,
        "--no-browser",
        "--redirect-uri",
        f"http://localhost:{free_port()}/callback",
    )
    return [
        Case("hangs: token", "HangingKeyring", ("token", "acme"), "current"),
        Case("raises: token", "RaisingKeyring", ("token", "acme"), "current"),
        Case("drops writes: token", "DroppingKeyring", ("token", "acme"), "current"),
        Case("hangs: connect", "HangingKeyring", connect_new, None),
        Case("raises: connect", "RaisingKeyring", connect_new, None),
        Case("drops writes: connect", "DroppingKeyring", connect_new, None),
        Case(
            "hangs on store: refresh",
            "HangingWritesKeyring",
            ("token", "acme", "--force-refresh"),
            "grace",
        ),
        Case(
            "raises on store: refresh",
            "RaisingWritesKeyring",
            ("token", "acme", "--force-refresh"),
            "grace",
        ),
        Case(
            "drops the store: refresh",
            "DroppingWritesKeyring",
            ("token", "acme", "--force-refresh"),
            "grace",
        ),
    ]


async def test_keyring_faults_are_bounded_clear_and_lose_no_token(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = emu.web_client
    todo = cases(client.client_id)
    for index, case in enumerate(todo):
        case.directory = tmp_path / f"case-{index}"
        case.keyring = tmp_path / f"case-{index}-keyring.json"
        monkeypatch.setenv("XERO_TUI_CONFIG_DIR", str(case.directory))
        monkeypatch.setenv("XERO_TUI_TEST_KEYRING", str(case.keyring))
        if case.stored is not None:
            case.grant = (await connect(emu, "acme")).grant_id
    exchanges = emu.stats.code_exchanges
    broken: list[str] = []

    def env(case: Case, backend: str) -> dict[str, str]:
        return cli_env(
            XERO_TUI_CONFIG_DIR=str(case.directory),
            XERO_TUI_TEST_KEYRING=str(case.keyring),
            PYTHON_KEYRING_BACKEND=backend,
            XERO_CLIENT_SECRET=client.client_secret or "",
        )

    def run(case: Case) -> None:
        before = case.keyring.read_bytes() if case.keyring.exists() else b""
        started = time.monotonic()
        case.result = run_cli(*case.command, env=env(case, FAULTS + case.backend), timeout=60)
        case.seconds = time.monotonic() - started
        after = case.keyring.read_bytes() if case.keyring.exists() else b""
        if after != before:
            broken.append(f"{case.label}: the stored secrets changed")

    with timed() as clock:
        with ThreadPoolExecutor(len(todo)) as pool:
            list(pool.map(run, todo))
        for case in todo:
            result = case.result
            assert result is not None
            lines = [
                line
                for line in result.err.splitlines()
                if line.strip() and "Xero endpoints overridden" not in line
            ]
            sentence = lines[0] if len(lines) == 1 else result.err
            # A store failing after Xero rotated says so, with its own code.
            expected = EXIT_NOT_STORED if case.stored == "grace" else EXIT_STORAGE
            if result.code != expected or len(lines) != 1 or "keyring" not in sentence:
                broken.append(f"{case.label}: exit {result.code}: {result.err!r}")
            if "Traceback" in result.err or "/identity/connect/authorize" in result.err:
                broken.append(f"{case.label}: a traceback, or the sign-in went ahead")
            if case.seconds > BOUND:
                broken.append(f"{case.label}: took {case.seconds:.1f} s")
        # No token lost: the stored one is where the emulator expects it, and it still refreshes.
        recoverable = [c for c in todo if c.stored is not None]
        for case in recoverable:
            monkeypatch.setenv("XERO_TUI_CONFIG_DIR", str(case.directory))
            monkeypatch.setenv("XERO_TUI_TEST_KEYRING", str(case.keyring))
            kept = stored_tokens(case.grant)
            now = standing(emu, kept.refresh_token if kept else None)
            if now != case.stored:
                broken.append(f"{case.label}: the stored refresh token is {now}, not {case.stored}")
        with ThreadPoolExecutor(len(recoverable)) as pool:
            retries = list(
                pool.map(
                    lambda c: run_cli(
                        "token",
                        "acme",
                        "--force-refresh",
                        env=env(c, "tests.support.keyring_backend.FileKeyring"),
                    ),
                    recoverable,
                )
            )
        for case, retry in zip(recoverable, retries, strict=True):
            monkeypatch.setenv("XERO_TUI_CONFIG_DIR", str(case.directory))
            monkeypatch.setenv("XERO_TUI_TEST_KEYRING", str(case.keyring))
            kept = stored_tokens(case.grant)
            if retry.code != 0 or standing(emu, kept.refresh_token if kept else None) != "current":
                broken.append(f"{case.label}: the next refresh failed: {retry.err!r}")
    if emu.stats.code_exchanges != exchanges:
        broken.append("a consent went ahead with a keyring that cannot keep its tokens")
    slowest = max(c.seconds for c in todo)
    record(
        "10 keyring faults",
        "hanging, raising and write-dropping keyrings under `token`, `connect` and a forced "
        f"refresh (Xero rotated, store failed: old token refreshed after); slowest "
        f"{slowest:.1f} s (bound {BOUND:.0f} s)",
        len(todo) + len(recoverable),
        len(broken),
        clock.seconds,
    )
    assert not broken, broken[:5]
