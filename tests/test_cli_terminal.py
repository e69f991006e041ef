"""`xero-tui connect` as a person runs it: on a terminal that sends nothing unless typed at.

Every sign-in here is a real consent against the emulator over loopback HTTP; the terminal is a
pseudo-terminal that is the command's controlling terminal, so Ctrl-C, a hang-up and SIGTERM
arrive as they do from a real one. Each test also says what it measured.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

from tests.support.cli import ROOT, cli_env, register_redirect, run_cli
from tests.support.terminal import Terminal
from xero_tui.emulator import Emulator
from xero_tui.emulator.consent import ConsentError, answer_consent

URL = re.compile(r"http://\S+/identity/connect/authorize\?\S+")
# What a person waits, at most, between the browser's "Connected" and their prompt.
EXIT_AFTER_CALLBACK = 1.0


def config(config_dir: Path) -> dict[str, object]:
    path = config_dir / "config.toml"
    return tomllib.loads(path.read_text()) if path.exists() else {}


def connect_args(emulator: Emulator, name: str, *extra: str) -> list[str]:
    client = emulator.web_client
    redirect = register_redirect(emulator, client.client_id)
    return ["connect", name, "--client-id", client.client_id, "--redirect-uri", redirect, *extra]


def secret_env(emulator: Emulator) -> dict[str, str]:
    return cli_env(XERO_CLIENT_SECRET=emulator.web_client.client_secret or "")


def sign_in_url(term: Terminal) -> str:
    term.wait_for("/identity/connect/authorize")
    term.wait_for("and press Enter")
    found = URL.search(term.screen)
    assert found, term.screen
    return found.group(0)


def wait_pending(config_dir: Path, timeout: float = 20) -> None:
    """Until the config records an unfinished sign-in (its tokens are stored by then)."""
    deadline = time.monotonic() + timeout
    while not config(config_dir).get("pending"):
        assert time.monotonic() < deadline, "no pending sign-in was recorded"
        time.sleep(0.02)


def test_connect_exits_within_a_second_of_the_callback_on_a_silent_terminal(
    emulator: Emulator, isolated_env: Path
) -> None:
    with Terminal(*connect_args(emulator, "acme", "--no-browser"), env=secret_env(emulator)) as t:
        url = sign_in_url(t)
        answer_consent(url, follow_redirect=True)
        answered = time.monotonic()
        code = t.wait(10)
        took = time.monotonic() - answered
    print(f"\ncallback to exit on a terminal: {took * 1000:.0f} ms")
    assert code == 0, t.screen
    # Who consented, and what is saved, said before the save.
    said = t.screen.index(
        "Signed in to Xero as Demo User <demo.user@example.com>; saving Demo Company (NZ)."
    )
    assert said < t.screen.index("Saved 'acme'")
    assert "acme" in config(isolated_env)["connections"]  # type: ignore[operator]
    assert took < EXIT_AFTER_CALLBACK, t.screen


def test_connect_exits_within_a_second_of_the_callback_with_a_pipe_held_open(
    emulator: Emulator, isolated_env: Path
) -> None:
    """`sleep 100 | xero-tui connect ...`: stdin stays open and sends nothing."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "xero_tui", *connect_args(emulator, "piped", "--no-browser")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=secret_env(emulator),
        cwd=ROOT,
    )
    try:
        assert proc.stderr is not None
        url = ""
        while not url:
            line = proc.stderr.readline()
            assert line, "connect ended before printing the URL"
            found = URL.search(line)
            url = found.group(0) if found else ""
        answer_consent(url, follow_redirect=True)
        answered = time.monotonic()
        code = proc.wait(10)
        took = time.monotonic() - answered
    finally:
        if proc.poll() is None:
            proc.kill()
        assert proc.stdin is not None
        proc.stdin.close()
    print(f"\ncallback to exit with stdin held open: {took * 1000:.0f} ms")
    assert code == 0
    assert "piped" in config(isolated_env)["connections"]  # type: ignore[operator]
    assert took < EXIT_AFTER_CALLBACK


def test_the_client_secret_is_typed_at_a_hidden_prompt(
    emulator: Emulator, isolated_env: Path
) -> None:
    secret = emulator.web_client.client_secret or ""
    with Terminal(*connect_args(emulator, "typed", "--no-browser"), env=cli_env()) as t:
        t.wait_for("Client secret (input hidden): ")
        t.type(secret + "\n")
        answer_consent(sign_in_url(t), follow_redirect=True)
        assert t.wait(10) == 0, t.screen
        assert secret not in t.screen
    assert "typed" in config(isolated_env)["connections"]  # type: ignore[operator]


def test_the_organisation_prompt_refuses_zero_a_number_past_the_end_and_junk(
    emulator: Emulator, isolated_env: Path
) -> None:
    args = connect_args(emulator, "chosen", "--no-browser", "--tenant", "Nobody Ltd")
    everyone = [tenant.tenant_id for tenant in emulator.tenants]
    with Terminal(*args, env=secret_env(emulator)) as t:
        answer_consent(sign_in_url(t), tenant_ids=everyone, follow_redirect=True)
        t.wait_for("no organisation 'Nobody Ltd'")
        prompt = "Organisations to save (numbers, comma separated): "
        t.wait_for(prompt)
        listed = dict(re.findall(r"^  (\d)\. (.+) \(ORGANISATION\)\r?$", t.screen, re.M))
        assert sorted(listed) == ["1", "2", "3"], t.screen
        for answer in ("0", "4", "two", "1,0"):
            before = t.screen.count("Type numbers from 1 to 3")
            t.type(answer + "\n")
            deadline = time.monotonic() + 10
            while t.screen.count("Type numbers from 1 to 3") == before:
                assert t.proc.poll() is None, f"{answer!r} was taken:\n{t.screen}"
                assert time.monotonic() < deadline, t.screen
                time.sleep(0.02)
        t.type("2\n")
        assert t.wait(10) == 0, t.screen
    [saved] = config(isolated_env)["connections"].values()  # type: ignore[attr-defined]
    assert saved["tenant_name"] == listed["2"]


def test_a_pasted_redirect_url_finishes_with_a_single_enter(
    emulator: Emulator, isolated_env: Path
) -> None:
    with Terminal(*connect_args(emulator, "pasted", "--no-browser"), env=secret_env(emulator)) as t:
        landed = answer_consent(sign_in_url(t), follow_redirect=False)
        t.type(landed + "\n")
        assert t.wait(10) == 0, t.screen
    assert "pasted" in config(isolated_env)["connections"]  # type: ignore[operator]


def _stopped_after_the_exchange(
    emulator: Emulator, config_dir: Path, stop: str
) -> tuple[int | None, str]:
    """Sign in, hold the organisations call, and stop the command the way `stop` says once
    Xero's tokens are kept; returns its exit code (None when killed) and screen."""
    emulator.inject("connections", "delay", count=2, delay=5)
    with Terminal(*connect_args(emulator, "acme", "--no-browser"), env=secret_env(emulator)) as t:
        url = sign_in_url(t)
        pages: list[object] = []

        def browse() -> None:
            try:
                pages.append(answer_consent(url, follow_redirect=True))
            except ConsentError as exc:
                pages.append(exc)

        browser = threading.Thread(target=browse)
        browser.start()
        t.wait_for("exchanging the code")
        wait_pending(config_dir)
        stopped = time.monotonic()
        if stop == "ctrl-c":
            t.interrupt()
        elif stop == "kill":
            t.signal(signal.SIGKILL)
        else:
            t.signal(getattr(signal, stop))
        code = t.wait(10)
        took = time.monotonic() - stopped
        browser.join(20)
        screen = t.screen
    # A stopped command still answers the page; a killed one may have had no time to, and
    # then the browser says the connection dropped.
    assert len(pages) == 1
    if stop != "kill":
        assert not isinstance(pages[0], ConsentError), pages
    print(f"\n{stop} after the exchange: exit {code} in {took * 1000:.0f} ms")
    assert took < 5, screen
    return (None if stop == "kill" else code), screen


@pytest.mark.parametrize(
    ("stop", "code"), [("ctrl-c", 130), ("SIGTERM", 143), ("SIGHUP", 129), ("kill", None)]
)
def test_a_stop_after_the_exchange_keeps_the_sign_in_and_connect_again_finishes_it(
    emulator: Emulator, isolated_env: Path, stop: str, code: int | None
) -> None:
    exited, screen = _stopped_after_the_exchange(emulator, isolated_env, stop)
    if code is not None:
        assert exited == code, screen
        assert "Xero's answer is kept" in screen
        assert "xero-tui connect 'acme'" in screen
    assert "acme" not in config(isolated_env).get("connections", {})  # type: ignore[operator]
    assert emulator.stats.authorizations == 1

    # The same command again, from a script this time: finished, with no second sign-in.
    again = run_cli("connect", "acme", env=secret_env(emulator))
    assert again.code == 0, again.err
    assert "no new sign-in is needed" in again.err
    # The ID token is not kept, so a resumed sign-in names what it saves, not who signed in.
    assert "Saving Demo Company (NZ)." in again.err
    saved = config(isolated_env)
    assert "acme" in saved["connections"]  # type: ignore[operator]
    assert not saved.get("pending")
    assert emulator.stats.authorizations == 1 and emulator.stats.code_exchanges == 1


def test_a_failing_connections_call_keeps_the_sign_in_for_the_next_connect(
    emulator: Emulator, isolated_env: Path
) -> None:
    emulator.inject("connections", "status", count=2, status=503)
    env = {**secret_env(emulator), "XERO_TUI_HTTP_RETRIES": "0"}
    args = connect_args(emulator, "acme", "--no-browser")
    with Terminal(*args, env=env) as t:
        answer_consent(sign_in_url(t), follow_redirect=True)
        assert t.wait(10) == 4, t.screen
        assert "xero-tui connect 'acme'" in t.screen
    listed = run_cli("list", env=env)
    assert "Unfinished sign-in 'acme'" in listed.err
    status = run_cli("status", "--offline", env=env)
    assert "Unfinished sign-in 'acme'" in status.err
    # The very same command again, as a script would run it.
    again = run_cli(*args, env=env)
    assert again.code == 0, again.err
    assert "acme" in config(isolated_env)["connections"]  # type: ignore[operator]
    assert emulator.stats.authorizations == 1


def test_sigterm_while_waiting_for_the_browser_ends_at_once_and_keeps_nothing(
    emulator: Emulator, isolated_env: Path
) -> None:
    with Terminal(*connect_args(emulator, "acme", "--no-browser"), env=secret_env(emulator)) as t:
        sign_in_url(t)
        stopped = time.monotonic()
        t.signal(signal.SIGTERM)
        assert t.wait(10) == 143, t.screen
        took = time.monotonic() - stopped
        assert "nothing was saved" in t.screen
    print(f"\nSIGTERM while waiting: {took * 1000:.0f} ms")
    assert took < 2
    assert not config(isolated_env).get("pending")


def test_remove_discards_an_unfinished_sign_in_and_revokes_it(
    emulator: Emulator, isolated_env: Path
) -> None:
    _stopped_after_the_exchange(emulator, isolated_env, "ctrl-c")
    revoked = emulator.stats.revocations
    gone = run_cli("remove", "acme", env=secret_env(emulator))
    assert gone.code == 0, gone.err
    assert "Discarded the unfinished sign-in 'acme' and revoked it at Xero" in gone.out
    assert emulator.stats.revocations == revoked + 1
    assert not config(isolated_env).get("pending")
    keyring = isolated_env.parent / "keyring.json"
    assert "grant:" not in keyring.read_text()


def test_connect_with_more_organisations_than_the_starter_tier_says_so_once(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.cli import connect_web

    with Emulator(tenants=6) as emu:
        for key, value in emu.env.items():
            monkeypatch.setenv(key, value)
        result = connect_web(emu, "many", tenants=[t.tenant_id for t in emu.tenants])
    assert result.code == 0, result.err
    assert result.err.count("Starter tier") == 1
    assert len(config(isolated_env)["connections"]) == 6  # type: ignore[arg-type]


def test_insecure_storage_is_remembered_so_later_commands_find_the_secrets(
    emulator: Emulator, isolated_env: Path
) -> None:
    from tests.support.cli import connect_web

    result = connect_web(emulator, "acme", options=("--insecure-storage",))
    assert result.code == 0, result.err
    assert config(isolated_env)["secret_storage"] == "file"
    listed = run_cli("list", "--json")
    assert '"storage": "file"' in listed.out
    token = run_cli("token", "acme", "--force-refresh")
    assert token.code == 0, token.err


def test_insecure_storage_does_not_split_secrets_saved_in_the_keyring(
    emulator: Emulator, isolated_env: Path
) -> None:
    from tests.support.cli import connect_web, start_connect

    assert connect_web(emulator, "in keyring").code == 0
    before = (isolated_env / "config.toml").read_text()
    proc = start_connect(emulator, "in file", "--no-browser", options=("--insecure-storage",))
    result = proc.finish()
    assert result.code == 5
    assert "would split them" in result.err and "/identity/connect/authorize" not in result.err
    assert (isolated_env / "config.toml").read_text() == before
    assert not (isolated_env / "secrets.toml").exists()


def test_a_secrets_file_others_can_read_is_tightened_and_said_once(
    emulator: Emulator, isolated_env: Path
) -> None:
    from tests.support.cli import connect_web

    assert connect_web(emulator, "acme", options=("--insecure-storage",)).code == 0
    secrets = isolated_env / "secrets.toml"
    secrets.chmod(0o644)
    first = run_cli("token", "acme")
    assert first.code == 0, first.err
    assert f"{secrets} was readable by others (mode 0644); it is now 0600" in first.err
    assert secrets.stat().st_mode & 0o777 == 0o600
    again = run_cli("token", "acme")
    assert again.code == 0 and "readable by others" not in again.err


def test_store_key_at_a_terminal_is_typed_hidden_and_never_printed_to_it(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XERO_TUI_STORE_KEY")
    made = run_cli("store", "key")
    assert made.code == 0, made.err
    key = run_cli("store", "key", "--export").out.strip()
    with Terminal("store", "key", "--export", env=cli_env()) as t:
        assert t.wait(10) == 2
        assert "scrollback" in t.screen and key not in t.screen
    other = cli_env(
        XERO_TUI_CONFIG_DIR=str(tmp_path / "other"),
        XERO_TUI_TEST_KEYRING=str(tmp_path / "other.json"),
    )
    with Terminal("store", "key", "--import", env=other) as t:
        t.wait_for("Store key (hidden):")
        t.type(key + "\r")
        assert t.wait(10) == 0, t.screen
        assert "Kept the key" in t.screen and key not in t.screen
    assert run_cli("store", "key", "--export", env=other).out.strip() == key


@pytest.mark.parametrize("stop", ["ctrl-c", "SIGHUP", "SIGTERM"])
def test_a_refresh_through_the_shared_store_stopped_at_a_terminal_still_commits_the_rotation(
    emulator: Emulator, store_url: str, stop: str
) -> None:
    """Xero rotates once it answers: stopped while Xero holds the refresh (the grant's row lock
    held), `token` still commits the new token before it ends, and says it was stopped."""
    import asyncio

    from tests.support.saved import connect
    from xero_tui.core.service import Service

    asyncio.run(connect(Service(), emulator, "acme"))
    grant_id = Service().connection("acme").grant_id
    faults, refreshes = emulator.stats.faults_injected, emulator.stats.refreshes
    emulator.inject("token", "delay", delay=1.0)
    with Terminal("token", "acme", "--force-refresh", env=cli_env()) as t:
        deadline = time.monotonic() + 10
        while emulator.stats.faults_injected == faults:
            assert time.monotonic() < deadline, t.screen
            time.sleep(0.01)
        if stop == "ctrl-c":
            t.interrupt()
        else:
            t.signal(getattr(signal, stop))
        code = t.wait(10)
        screen = t.screen
    assert code == {"ctrl-c": 130, "SIGHUP": 129, "SIGTERM": 143}[stop], screen
    assert emulator.stats.refreshes == refreshes + 1
    stored = Service().secrets.get_tokens(grant_id)
    assert stored is not None
    assert stored.refresh_token == emulator.current_refresh_token(emulator.web_client.client_id)
    assert run_cli("token", "acme", "--force-refresh").code == 0
    assert emulator.stats.grace_refreshes == 0 and emulator.stats.invalid_grants == 0


@pytest.mark.parametrize("stop", ["ctrl-c", "SIGHUP"])
def test_store_key_import_left_at_its_prompt_ends_at_once_and_keeps_nothing(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: str
) -> None:
    monkeypatch.delenv("XERO_TUI_STORE_KEY")
    assert run_cli("store", "key").code == 0
    other = cli_env(
        XERO_TUI_CONFIG_DIR=str(tmp_path / "other"),
        XERO_TUI_TEST_KEYRING=str(tmp_path / "other.json"),
    )
    with Terminal("store", "key", "--import", env=other) as t:
        t.wait_for("Store key (hidden):")
        time.sleep(0.3)  # a silent terminal: nothing typed
        if stop == "ctrl-c":
            t.interrupt()
        else:
            t.signal(signal.SIGHUP)
        code = t.wait(5)
    if stop == "ctrl-c":
        assert code == 130
    assert run_cli("store", "key", "--export", env=other).code == 5  # no key was kept
