"""Stress 9: broken config files and missing secrets, through the real `xero-tui` command.

Each case gets exactly one line on stderr (besides the endpoint notice when the emulator is in
use): one sentence naming the file (or the store the secret was missing from), the right exit
code, no traceback, and the file byte for byte as it was (security.md 35)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.stress.harness import connect, run_cli, standing, stored_tokens, temps
from tests.stress.registry import record, timed
from tests.support.cli import Result, cli_env
from tests.support.procs import DROP_ROOT_FILE_CAPS
from xero_tui.core.config import Config, ConfigStore, dump
from xero_tui.core.errors import EXIT_NOT_STORED, EXIT_STORAGE
from xero_tui.core.models import Connection, Grant, Kind, TokenSet
from xero_tui.core.paths import Paths
from xero_tui.core.secrets import FileStore, encode_tokens, grant_key
from xero_tui.emulator import Emulator

WHEN = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
# The read-only cases run the real entry point without root's file capabilities.
DROP_CAPS_THEN_MAIN = (
    DROP_ROOT_FILE_CAPS + "from xero_tui.cli import main\nsys.exit(main(sys.argv[1:]))\n"
)


def sample() -> str:
    config = Config()
    config.grants["g1"] = Grant("g1", Kind.WEB, "C" * 32, ("openid", "offline_access"), WHEN)
    config.connections["acme"] = Connection(
        "acme", Kind.WEB, "C" * 32, "tenant-1", "Acme Ltd", "g1", created=WHEN
    )
    return dump(config)


def cut_inside(text: str, needle: str, keep: int) -> bytes:
    """The file cut off `keep` characters into the first `needle`, as a crash mid-copy would."""
    return text[: text.index(needle) + keep].encode()


def replace(text: str, old: str, new: str) -> bytes:
    assert old in text, old
    return text.replace(old, new, 1).encode()


@dataclass
class Case:
    label: str
    make: Callable[[str], bytes]
    says: str  # a fragment the sentence must hold (besides the file name)


CASES = [
    Case("truncated in a string", lambda t: cut_inside(t, 'client_id = "', 20), "line"),
    Case("truncated in a header", lambda t: cut_inside(t, "[connections.", 8), "line"),
    Case("truncated in a date", lambda t: cut_inside(t, "created = ", 15), "line"),
    Case(
        "truncated before a field",
        lambda t: cut_inside(t, "[connections.acme]", 19),
        "missing the field",
    ),
    Case("invalid TOML", lambda t: replace(t, "[connections.acme]", "[connections.acme"), "line"),
    Case(
        "key without value", lambda t: replace(t, 'tenant_id = "tenant-1"', "tenant_id ="), "line"
    ),
    Case("duplicate table", lambda t: (t + "\n[connections.acme]\n").encode(), "line"),
    Case(
        "not UTF-8",
        lambda t: replace(t, "Acme Ltd", "Acme Ltd").replace(b"Acme Ltd", b"Acme \xff"),
        "not UTF-8",
    ),
    Case("NUL byte", lambda t: replace(t, "Acme Ltd", "Acme\x00Ltd"), "line"),
    Case(
        "number for a string",
        lambda t: replace(t, 'tenant_id = "tenant-1"', "tenant_id = 5"),
        "must be a string",
    ),
    Case("string for a bool", lambda t: replace(t, "pkce = true", 'pkce = "yes"'), "true or false"),
    Case(
        "string for a date",
        lambda t: replace(t, "created = 2026-11-28T10:00:00Z", 'created = "yesterday"'),
        "date-time",
    ),
    Case(
        "string for a list",
        lambda t: replace(t, 'scopes = ["openid", "offline_access"]', 'scopes = "openid"'),
        "array of strings",
    ),
    Case("table is a number", lambda t: b"schema = 1\nconnections = 3\n", "must be a table"),
    Case(
        "unknown kind", lambda t: replace(t, 'kind = "web"', 'kind = "desktop"'), "must be one of"
    ),
    Case(
        "schema as a string",
        lambda t: replace(t, "schema = 1", 'schema = "1"'),
        "must be an integer",
    ),
    Case(
        "schema 2", lambda t: replace(t, "schema = 1", "schema = 2"), "schema = 2 is not a version"
    ),
    Case(
        "schema 99",
        lambda t: replace(t, "schema = 1", "schema = 99"),
        "schema = 99 is not a version",
    ),
    Case(
        "schema 0", lambda t: replace(t, "schema = 1", "schema = 0"), "schema = 0 is not a version"
    ),
]
COMMANDS = (("token", "acme"), ("remove", "acme"))


def one_sentence(result: Result) -> str:
    """The one line the command printed on stderr (the endpoint notice aside)."""
    lines = [
        line
        for line in result.err.splitlines()
        if line.strip() and "Xero endpoints overridden" not in line
    ]
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    line = lines[0]
    assert line.startswith("xero-tui: ") and line.endswith("."), line
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", line), line
    return line


def test_bad_config_files_give_one_sentence_and_stay_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Xero's real URLs are in use here (no notice line); nothing may reach the network anyway.
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    text = sample()
    jobs = []
    for case in CASES:
        directory = tmp_path / re.sub(r"\W+", "-", case.label)
        directory.mkdir(mode=0o700)
        data = case.make(text)
        (directory / "config.toml").write_bytes(data)
        (directory / "config.toml").chmod(0o600)
        for command in COMMANDS:
            jobs.append((case, directory, data, command))
    broken: list[str] = []

    def run(job: tuple[Case, Path, bytes, tuple[str, ...]]) -> None:
        case, directory, data, command = job
        where = f"{case.label} / {' '.join(command)}"
        result = run_cli(*command, env=cli_env(XERO_TUI_CONFIG_DIR=str(directory)))
        try:
            line = one_sentence(result)
        except AssertionError as exc:
            broken.append(f"{where}: {exc}")
            return
        path = str(directory / "config.toml")
        if result.code != EXIT_STORAGE or path not in line or case.says not in line:
            broken.append(f"{where}: exit {result.code}: {line}")
        if result.out:
            broken.append(f"{where}: printed on stdout: {result.out!r}")
        if (directory / "config.toml").read_bytes() != data or temps(directory):
            broken.append(f"{where}: the file was changed")

    with timed() as clock, ThreadPoolExecutor(4) as pool:
        list(pool.map(run, jobs))
    record(
        "9a bad config files",
        f"{len(CASES)} broken files (truncated, invalid TOML, not UTF-8, wrong types, schema "
        f"0/2/99) x `token`, `remove` through the real CLI",
        len(jobs),
        len(broken),
        clock.seconds,
    )
    assert not broken, broken[:5]


async def test_missing_secrets_and_read_only_dir_give_one_sentence(
    emu: Emulator, isolated_env: Path, keyring_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken: list[str] = []
    runs = 0
    with timed() as clock:
        conn = await connect(emu, "acme")
        config = isolated_env / "config.toml"
        keyring = json.loads(keyring_file.read_text())
        tokens = keyring["xero-tui"][grant_key(conn.grant_id)]
        secret_key = f"client-secret:{conn.client_id}"

        def check(
            label: str, args: tuple[str, ...], says: list[str], code: int, **env: str
        ) -> None:
            nonlocal runs
            runs += 1
            before = (config.read_bytes(), keyring_file.read_bytes())
            result = run_cli(*args, env=cli_env(**env))
            try:
                line = one_sentence(result)
            except AssertionError as exc:
                broken.append(f"{label}: {exc}")
                return
            if result.code != code or not all(s in line for s in says):
                broken.append(f"{label}: exit {result.code}: {line}")
            if (config.read_bytes(), keyring_file.read_bytes()) != before:
                broken.append(f"{label}: the config or the keyring changed")

        # The tokens of a saved connection are gone from the keyring.
        store = dict(keyring["xero-tui"])
        del store[grant_key(conn.grant_id)]
        keyring_file.write_text(json.dumps({"xero-tui": store}))
        check(
            "tokens missing",
            ("token", "acme"),
            ["'acme'", "missing from keyring", "reconnect"],
            EXIT_STORAGE,
        )
        # The client secret is gone and the access token has expired, so a refresh needs it.
        stale = TokenSet("expired-access", 1.0, "rt-unused", ("openid",))
        store = dict(keyring["xero-tui"])
        store[grant_key(conn.grant_id)] = encode_tokens(stale)
        del store[secret_key]
        keyring_file.write_text(json.dumps({"xero-tui": store}))
        check(
            "client secret missing",
            ("token", "acme"),
            ["client secret for 'acme'", "missing from keyring"],
            EXIT_STORAGE,
        )
        keyring_file.write_text(json.dumps(keyring))

        # The same with the plain secrets file: the sentence names that file.
        file_store = FileStore(Paths(isolated_env))
        file_store.set(secret_key, keyring["xero-tui"][secret_key])
        ConfigStore(Paths(isolated_env)).update(lambda c: setattr(c, "secret_storage", "file"))
        check(
            "tokens missing from the file",
            ("token", "acme"),
            [str(isolated_env / "secrets.toml"), "'acme'"],
            EXIT_STORAGE,
        )
        file_store.set(grant_key(conn.grant_id), tokens)

        # A read-only config dir: the write is refused with one sentence naming the file, and a
        # refresh whose new token cannot be stored leaves the old one, which Xero still honours.
        os.chmod(isolated_env, 0o500)
        try:
            for label, args, says, code in (
                (
                    "read-only: remove",
                    ("remove", "acme"),
                    [f"Could not write {config}", "Permission denied", "left as it was"],
                    EXIT_STORAGE,
                ),
                (
                    "read-only: forced refresh",
                    ("token", "acme", "--force-refresh"),
                    [str(isolated_env / "secrets.toml"), "Permission denied", "keeps working"],
                    EXIT_NOT_STORED,
                ),
            ):
                runs += 1
                before = config.read_bytes(), (isolated_env / "secrets.toml").read_bytes()
                result = run_cli(*args, prefix=("-c", DROP_CAPS_THEN_MAIN))
                try:
                    line = one_sentence(result)
                except AssertionError as exc:
                    broken.append(f"{label}: {exc}")
                    continue
                if result.code != code or not all(s in line for s in says):
                    broken.append(f"{label}: exit {result.code}: {line}")
                after = config.read_bytes(), (isolated_env / "secrets.toml").read_bytes()
                if after != before or temps(isolated_env):
                    broken.append(f"{label}: a file changed or a temp file was left")
        finally:
            os.chmod(isolated_env, 0o700)
        kept = stored_tokens(conn.grant_id)
        rescued = standing(emu, kept.refresh_token if kept else None) == "grace"
        final = run_cli("token", "acme", "--force-refresh")
        if not rescued or final.code != 0:
            broken.append(f"the old token was not honoured after the failed store: {final.err}")
    record(
        "9b missing secrets, read-only dir",
        "tokens or client secret missing (keyring and file), read-only config dir "
        "(remove; refresh whose new token cannot be stored: old token still refreshes)",
        runs,
        len(broken),
        clock.seconds,
    )
    assert not broken, broken[:5]
