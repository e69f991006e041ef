"""The shared store on a real PostgreSQL: several hosts (each its own config folder) against one
database and the emulator, as `xero-tui` runs on each of them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cli import ROOT, cli_env, run_cli
from tests.support.postgres import Postgres
from tests.support.saved import connect
from tests.support.session import consent_in
from xero_tui.core.config import parse
from xero_tui.core.context import GrantLock
from xero_tui.core.errors import ConfigError, StorageError
from xero_tui.core.models import TokenSet
from xero_tui.core.pgstore import parse_address
from xero_tui.core.secrets import grant_key
from xero_tui.core.service import Service
from xero_tui.emulator import Emulator
from xero_tui.emulator.state import EmulatorStats


def host(tmp_path: Path, name: str, **extra: str) -> dict[str, str]:
    """The environment of another host: a config folder (and test keyring) of its own."""
    folder = tmp_path / name
    folder.mkdir(mode=0o700)
    return cli_env(
        XERO_TUI_CONFIG_DIR=str(folder / "config"),
        XERO_TUI_TEST_KEYRING=str(folder / "keyring.json"),
        **extra,
    )


def stats(emulator: Emulator) -> EmulatorStats:
    return emulator.stats


def writes(server: Postgres, url: str, key: str) -> int:
    dbname = parse_address(url).dbname
    out = server.psql(dbname, f"SELECT writes FROM xero_tui.secrets WHERE key = '{key}'").strip()
    return int(out or 0)


def test_a_password_written_in_the_store_url_is_refused_with_a_sentence() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_address("postgresql://sync:hunter2@db.example:5432/xero")
    assert "password" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    address = parse_address("postgresql://sync@db.example:6543/xero?sslmode=verify-full")
    assert address.description == "PostgreSQL xero on db.example:6543"


def test_connect_on_one_host_gives_a_token_on_another_and_a_reconnect_there_is_seen_back(
    emulator: Emulator, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    draft = asyncio.run(connect(Service(), emulator, "acme"))
    other = host(tmp_path, "b")
    got = run_cli("token", "acme", "--json", env=other)
    assert got.code == 0, got.err
    before = Service().connection("acme")
    assert json.loads(got.out)["tenant_id"] == before.tenant_id
    listed = json.loads(run_cli("list", "--json", env=other).out)
    assert [(row["name"], row["storage"]) for row in listed] == [("acme", "database")]

    # A reconnect on host B, in its own config folder, replaces the grant for host A too.
    monkeypatch.setenv("XERO_TUI_CONFIG_DIR", other["XERO_TUI_CONFIG_DIR"])

    async def reconnect() -> None:
        session = Service().start_session(draft, "acme", reconnect=True)
        outcome = await consent_in(session)
        session.save([t for t in outcome.tenants if t.tenant_id == before.tenant_id])

    asyncio.run(reconnect())
    monkeypatch.setenv("XERO_TUI_CONFIG_DIR", str(tmp_path / "config"))
    seen_on_a = Service().connection("acme")
    assert seen_on_a.grant_id != before.grant_id
    assert run_cli("token", "acme").code == 0
    assert emulator.stats.invalid_grants == 0


def test_a_forced_refresh_on_one_host_is_the_token_the_other_host_then_hands_out(
    emulator: Emulator, store_url: str, tmp_path: Path
) -> None:
    asyncio.run(connect(Service(), emulator, "acme"))
    other = host(tmp_path, "b")
    refreshed = run_cli("token", "acme", "--force-refresh", env=other)
    assert refreshed.code == 0, refreshed.err
    here = run_cli("token", "acme")
    assert here.code == 0, here.err
    assert here.out == refreshed.out
    assert stats(emulator).invalid_grants == 0


def test_status_and_list_name_the_store_and_never_its_credentials(
    emulator: Emulator, store_url: str
) -> None:
    asyncio.run(connect(Service(), emulator, "acme"))
    status = run_cli("status", "--offline")
    assert status.code == 0, status.err
    address = parse_address(store_url)
    assert f"PostgreSQL {address.dbname} on {address.host}" in status.out + status.err


def test_a_host_with_another_key_gets_one_sentence_and_changes_nothing(
    emulator: Emulator, store_url: str, postgres_server: Postgres, tmp_path: Path
) -> None:
    from cryptography.fernet import Fernet

    asyncio.run(connect(Service(), emulator, "acme"))
    dbname = parse_address(store_url).dbname
    before = postgres_server.dump(dbname)
    stranger = host(tmp_path, "b", XERO_TUI_STORE_KEY=Fernet.generate_key().decode())
    custom = emulator.register_client("C" * 32, "custom-secret-" + "s" * 30, "custom")
    stranger_connects = {**stranger, "XERO_CLIENT_SECRET": custom.client_secret or ""}
    for args, env in (
        (("token", "acme"), stranger),
        (("token", "acme", "--force-refresh"), stranger),
        (("status",), stranger),
        (
            ("connect", "shop", "--kind", "custom", "--client-id", custom.client_id),
            stranger_connects,
        ),
    ):
        got = run_cli(*args, env=env)
        assert got.code == 5, (args, got.err)
        assert "store key" in got.err and "Traceback" not in got.err
        said = [line for line in got.err.splitlines() if "endpoints overridden" not in line]
        assert len(said) == 1, said
    assert postgres_server.dump(dbname) == before
    assert stats(emulator).refreshes == 0 and stats(emulator).client_credentials == 0


def test_pg_dump_of_the_store_holds_no_token_secret_or_key_in_clear(
    emulator: Emulator, store_url: str, postgres_server: Postgres
) -> None:
    svc = Service()
    draft = asyncio.run(connect(svc, emulator, "acme"))
    assert run_cli("token", "acme", "--force-refresh").code == 0
    conn = Service().connection("acme")
    tokens = Service().secrets.get_tokens(conn.grant_id)
    assert tokens is not None and tokens.refresh_token
    secrets = {
        tokens.access_token,
        tokens.refresh_token,
        draft.client_secret or "",
        os.environ["XERO_TUI_STORE_KEY"],
    }
    dump = postgres_server.dump(parse_address(store_url).dbname)
    assert conn.tenant_id in dump  # the dump is of the right database
    assert [s for s in secrets if s and s in dump] == []


def test_push_moves_a_working_host_into_the_store_and_pull_moves_it_back(
    emulator: Emulator, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XERO_TUI_STORE")
    asyncio.run(connect(Service(), emulator, "acme"))
    local_secrets = Service().secrets
    grant = Service().connection("acme").grant_id
    assert local_secrets.get_tokens(grant) is not None

    pushed = run_cli("--store", store_url, "store", "push")
    assert pushed.code == 0, pushed.err
    assert "Moved 1 connection" in pushed.out
    config = parse((tmp_path / "config" / "config.toml").read_text(), Path("config.toml"))
    assert config.store == store_url and not config.connections and not config.grants
    assert local_secrets.get_tokens(grant) is None  # the keyring's copy is gone
    # Without --store: config.toml now names the store.
    assert run_cli("token", "acme").code == 0
    other = host(tmp_path, "b", XERO_TUI_STORE=store_url)
    assert run_cli("token", "acme", env=other).code == 0

    pulled = run_cli("store", "pull")
    assert pulled.code == 0, pulled.err
    config = parse((tmp_path / "config" / "config.toml").read_text(), Path("config.toml"))
    assert config.store is None and "acme" in config.connections
    assert local_secrets.get_tokens(grant) is not None
    assert run_cli("token", "acme", "--force-refresh").code == 0
    gone = run_cli("token", "acme", env=other)
    assert gone.code == 2 and "No connection named 'acme'" in gone.err
    assert stats(emulator).invalid_grants == 0


def test_push_refuses_a_name_the_store_already_has_and_moves_nothing(
    emulator: Emulator, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = host(tmp_path, "b")
    monkeypatch.setenv("XERO_TUI_CONFIG_DIR", other["XERO_TUI_CONFIG_DIR"])
    monkeypatch.setenv("XERO_TUI_TEST_KEYRING", other["XERO_TUI_TEST_KEYRING"])
    asyncio.run(connect(Service(), emulator, "acme"))  # host B, straight into the store
    monkeypatch.setenv("XERO_TUI_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("XERO_TUI_TEST_KEYRING", str(tmp_path / "keyring.json"))
    monkeypatch.delenv("XERO_TUI_STORE")
    asyncio.run(connect(Service(), emulator, "acme"))  # host A, locally
    text_before = (tmp_path / "config" / "config.toml").read_text()
    pushed = run_cli("--store", store_url, "store", "push")
    assert pushed.code == 2, pushed.err
    assert "already has 'acme'" in pushed.err and "nothing was moved" in pushed.err
    assert (tmp_path / "config" / "config.toml").read_text() == text_before
    assert run_cli("token", "acme").code == 0


def test_store_key_is_made_once_copied_to_another_host_and_a_wrong_one_is_refused(
    emulator: Emulator, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XERO_TUI_STORE_KEY")
    made = run_cli("store", "key")
    assert made.code == 0, made.err
    assert "Made a new key" in made.out and "--export | ssh" in made.out
    again = run_cli("store", "key")
    assert "Made" not in again.out
    asyncio.run(connect(Service(), emulator, "acme"))

    other = host(tmp_path, "b")
    lacking = run_cli("token", "acme", env=other)
    assert lacking.code == 5 and "no key for" in lacking.err
    # A made-up key is refused by --import, and the stranger's store key would not open it.
    from cryptography.fernet import Fernet

    wrong = run_cli("store", "key", "--import", env=other, stdin=Fernet.generate_key().decode())
    assert wrong.code == 5 and "not the one" in wrong.err
    exported = run_cli("store", "key", "--export")
    assert exported.code == 0
    imported = run_cli("store", "key", "--import", env=other, stdin=exported.out)
    assert imported.code == 0, imported.err
    got = run_cli("token", "acme", env=other)
    assert got.code == 0, got.err
    assert exported.out.strip() not in got.out + got.err + imported.out + imported.err


def test_key_rotation_reencrypts_every_secret_and_the_old_key_alone_then_opens_nothing(
    emulator: Emulator,
    store_url: str,
    postgres_server: Postgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("XERO_TUI_STORE_KEY")
    assert run_cli("store", "key").code == 0
    asyncio.run(connect(Service(), emulator, "acme"))
    old_key = run_cli("store", "key", "--export").out.strip()
    dbname = parse_address(store_url).dbname
    before = postgres_server.psql(dbname, "SELECT key, value FROM xero_tui.secrets ORDER BY key")
    rotated = run_cli("store", "key", "--rotate")
    assert rotated.code == 0, rotated.err
    assert "Re-encrypted 2 secrets" in rotated.out
    after = postgres_server.psql(dbname, "SELECT key, value FROM xero_tui.secrets ORDER BY key")
    old_rows = dict(line.split("|") for line in before.split())
    new_rows = dict(line.split("|") for line in after.split())
    assert old_rows.keys() == new_rows.keys()
    assert all(old_rows[k] != new_rows[k] for k in old_rows)
    assert run_cli("token", "acme", "--force-refresh").code == 0
    stale = host(tmp_path, "b", XERO_TUI_STORE_KEY=old_key)
    refused = run_cli("token", "acme", env=stale)
    assert refused.code == 5 and "not the one" in refused.err


def test_a_host_killed_mid_refresh_releases_its_lock_and_no_token_is_lost(
    emulator: Emulator, store_url: str, postgres_server: Postgres
) -> None:
    asyncio.run(connect(Service(), emulator, "acme"))
    grant = Service().connection("acme").grant_id
    emulator.inject("token", "delay", count=1, delay=3)
    victim = subprocess.Popen(
        [sys.executable, "-m", "xero_tui", "token", "acme", "--force-refresh"],
        env=cli_env(),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while stats(emulator).token_requests < 2 and time.monotonic() < deadline:  # 1: the sign-in
        time.sleep(0.02)
    assert stats(emulator).token_requests >= 2, "the refresh never reached Xero"
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    started = time.monotonic()
    after = run_cli("token", "acme", "--force-refresh")
    waited = time.monotonic() - started
    assert after.code == 0, after.err
    assert waited < 10, f"waited {waited:.1f} s for a dead host's lock"
    time.sleep(3)  # the killed host's request ends at Xero too
    assert run_cli("token", "acme", "--force-refresh").code == 0
    assert stats(emulator).invalid_grants == 0
    assert writes(postgres_server, store_url, grant_key(grant)) >= 2


def test_a_database_restart_mid_run_gives_a_sentence_and_the_next_call_works(
    emulator: Emulator, store_url: str, postgres_server: Postgres
) -> None:
    from xero_tui import api

    asyncio.run(connect(Service(), emulator, "acme"))
    first = api.access_token("acme")
    postgres_server.restart()
    try:
        again = api.access_token("acme", force=True)
    except StorageError as exc:
        assert "PostgreSQL" in str(exc) and "Traceback" not in str(exc)
        again = api.access_token("acme", force=True)
    assert again.access_token != first.access_token
    assert stats(emulator).invalid_grants == 0


def test_a_commit_that_fails_after_xero_rotated_keeps_the_token_and_says_by_when(
    emulator: Emulator, store_url: str, postgres_server: Postgres
) -> None:
    from xero_tui.core import tokens
    from xero_tui.core.context import Context
    from xero_tui.core.errors import TokenNotStored

    asyncio.run(connect(Service(), emulator, "acme"))
    ctx = Context()
    asyncio.run(tokens.access_token(ctx, "acme", force=True))
    emulator.inject("token", "delay", count=1, delay=1.5)

    async def refresh_while_the_database_stops() -> None:
        refresh = asyncio.ensure_future(tokens.access_token(ctx, "acme", force=True))
        await asyncio.sleep(0.8)
        await asyncio.to_thread(postgres_server.stop, "immediate")
        await refresh

    with pytest.raises(TokenNotStored) as caught:
        asyncio.run(refresh_while_the_database_stops())
    assert "30-minute grace" in str(caught.value)
    assert ctx.unstored  # the rotated token, held for the next refresh here
    postgres_server.start()
    asyncio.run(tokens.access_token(ctx, "acme", force=True))
    assert not ctx.unstored
    assert run_cli("token", "acme", "--force-refresh").code == 0
    assert stats(emulator).invalid_grants == 0


def test_a_lock_wait_is_bounded_and_names_what_it_waited_for(
    emulator: Emulator, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xero_tui.core import pgstore

    asyncio.run(connect(Service(), emulator, "acme"))
    holder = Service()
    grant = holder.connection("acme").grant_id
    held = holder.acquire_grant_lock(grant, lambda: "'acme'")
    try:
        monkeypatch.setattr(pgstore, "GRANT_LOCK_TIMEOUT", 1.0)
        started = time.monotonic()
        with pytest.raises(StorageError) as caught:
            Service().acquire_grant_lock(grant, lambda: "'acme'")
        assert time.monotonic() - started < 5
        assert "Another host has been refreshing 'acme'" in str(caught.value)
        assert "PostgreSQL" in str(caught.value)
    finally:
        held.release()
    Service().acquire_grant_lock(grant, lambda: "'acme'").release()


def test_store_init_creates_the_schema_once_even_when_hosts_start_together(
    postgres_server: Postgres, store_url: str, tmp_path: Path
) -> None:
    hosts = [host(tmp_path, f"h{i}") for i in range(4)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "xero_tui", "store", "init"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for env in hosts
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "are ready" in out
    dbname = parse_address(store_url).dbname
    assert postgres_server.psql(dbname, "SELECT version FROM xero_tui.schema_version").split() == [
        "1"
    ]
    assert run_cli("list", env=hosts[0]).code == 0


def test_a_store_written_by_a_newer_schema_is_refused_with_a_sentence(
    postgres_server: Postgres, store_url: str
) -> None:
    assert run_cli("store", "init").code == 0
    dbname = parse_address(store_url).dbname
    postgres_server.psql(dbname, "INSERT INTO xero_tui.schema_version (version) VALUES (99)")
    got = run_cli("list")
    assert got.code == 5
    assert "newer xero-tui" in got.err and "Traceback" not in got.err


def test_a_lost_refresh_answer_is_retried_with_the_same_token_inside_the_row_lock(
    emulator: Emulator, store_url: str, postgres_server: Postgres
) -> None:
    asyncio.run(connect(Service(), emulator, "acme"))
    grant = Service().connection("acme").grant_id
    written = writes(postgres_server, store_url, grant_key(grant))
    emulator.inject("token", "drop_after")
    got = run_cli("token", "acme", "--force-refresh")
    assert got.code == 0, got.err
    assert emulator.stats.grace_refreshes == 1 and emulator.stats.invalid_grants == 0
    kept = Service().secrets.get_tokens(grant)
    assert kept is not None
    assert kept.refresh_token == emulator.current_refresh_token(emulator.web_client.client_id)
    assert writes(postgres_server, store_url, grant_key(grant)) == written + 1


def test_a_writer_with_another_key_is_refused_before_it_writes(
    emulator: Emulator, store_url: str, postgres_server: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.fernet import Fernet

    asyncio.run(connect(Service(), emulator, "acme"))
    dbname = parse_address(store_url).dbname
    before = postgres_server.dump(dbname)
    monkeypatch.setenv("XERO_TUI_STORE_KEY", Fernet.generate_key().decode())
    stranger = Service().secrets
    with pytest.raises(StorageError) as caught:
        stranger.put_many({"client-secret:" + "D" * 32: "would be unreadable elsewhere"})
    assert "not the one the secrets" in str(caught.value)
    assert postgres_server.dump(dbname) == before


def test_a_sign_in_interrupted_on_one_host_is_finished_on_another_without_signing_in_again(
    emulator: Emulator, store_url: str, tmp_path: Path
) -> None:
    from tests.support.net import free_port
    from tests.support.session import sign_in
    from xero_tui.core.consent import ConnectionDraft
    from xero_tui.core.models import Kind, default_scopes

    client = emulator.web_client
    redirect = f"http://localhost:{free_port()}/callback"
    emulator.register_client(
        client.client_id, client.client_secret, Kind.WEB, redirect_uris=(redirect,)
    )
    draft = ConnectionDraft(
        Kind.WEB, client.client_id, client.client_secret, redirect, default_scopes(Kind.WEB)
    )
    # Host A: Xero answered the sign-in, then the host went away before anything was saved.
    asyncio.run(sign_in(Service(), draft, "acme"))
    assert [p.name for p in Service().load().pending.values()] == ["acme"]
    other = host(tmp_path, "b")
    said = run_cli("list", env=other)
    assert "acme" in said.err  # host B names the unfinished sign-in
    finished = run_cli("connect", "acme", env=other)
    assert finished.code == 0, finished.err
    assert "Finishing the sign-in for 'acme'" in finished.err
    assert "acme" in Service().load().connections
    assert not Service().load().pending
    assert emulator.stats.authorizations == 1 and emulator.stats.invalid_grants == 0
    assert run_cli("token", "acme").code == 0


def test_a_role_that_may_not_create_or_read_the_tables_gets_a_sentence(
    postgres_server: Postgres, store_url: str, tmp_path: Path
) -> None:
    dbname = parse_address(store_url).dbname
    role = f"guest_{dbname}"
    postgres_server.psql(dbname, f"CREATE ROLE {role} LOGIN")
    postgres_server.psql(dbname, f"REVOKE CREATE ON SCHEMA public FROM {role}")
    guest = store_url.replace("postgres@", f"{role}@")
    refused = run_cli("--store", guest, "store", "init")
    assert refused.code == 5 and "permission denied" in refused.err
    assert "Traceback" not in refused.err
    assert run_cli("store", "init").code == 0
    unreadable = run_cli("--store", guest, "list")
    assert unreadable.code == 5 and "permission denied" in unreadable.err


def test_connections_left_in_config_toml_beside_a_shared_store_are_named_with_the_way_on(
    emulator: Emulator, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XERO_TUI_STORE")
    asyncio.run(connect(Service(), emulator, "acme"))
    listed = run_cli("--store", store_url, "list")
    assert listed.code == 0, listed.err
    assert "still holds 1 connection or sign-in of its own" in listed.err
    assert "xero-tui store push" in listed.err
    assert "acme" not in listed.out
    status = run_cli("--store", store_url, "status", "--offline")
    assert "store push" in status.err
    assert "store push" not in run_cli("list").err


@pytest.mark.parametrize("refreshed_before", [False, True], ids=["first-refresh", "later"])
def test_a_key_rotation_waits_for_a_refresh_holding_the_grant_and_neither_fails(
    emulator: Emulator,
    store_url: str,
    monkeypatch: pytest.MonkeyPatch,
    refreshed_before: bool,
) -> None:
    from dataclasses import replace

    monkeypatch.delenv("XERO_TUI_STORE_KEY")
    assert run_cli("store", "key").code == 0
    asyncio.run(connect(Service(), emulator, "acme"))
    if refreshed_before:
        assert run_cli("token", "acme", "--force-refresh").code == 0
    refresher = Service()
    grant = refresher.connection("acme").grant_id
    held = refresher.acquire_grant_lock(grant, lambda: "'acme'")
    stored = refresher.secrets.get_tokens(grant)
    assert stored is not None
    # Another process on this host rotates the key while this one is between refresh and store.
    rotation = subprocess.Popen(
        [sys.executable, "-m", "xero_tui", "store", "key", "--rotate"],
        env=cli_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2.5)  # past PostgreSQL's deadlock_timeout: the rotation waits for the grant
        rotated = replace(stored, access_token=stored.access_token + "x", expires_at=time.time())
        held.store_tokens(rotated, stored)
    finally:
        held.release()
        out, err = rotation.communicate(timeout=90)
    assert rotation.returncode == 0, err
    assert "Re-encrypted" in out
    assert Service().secrets.get_tokens(grant) == rotated


def test_a_process_running_through_a_key_rotation_on_its_host_reads_on_with_the_new_key(
    emulator: Emulator, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xero_tui.core import tokens
    from xero_tui.core.context import Context

    monkeypatch.delenv("XERO_TUI_STORE_KEY")
    assert run_cli("store", "key").code == 0
    asyncio.run(connect(Service(), emulator, "acme"))
    ctx = Context()  # a long-running process: the app, or a script using xero_tui.api
    asyncio.run(tokens.access_token(ctx, "acme", force=True))
    assert run_cli("store", "key", "--rotate").code == 0  # the keyring here has the new key
    _, fresh = asyncio.run(tokens.access_token(ctx, "acme", force=True))
    assert run_cli("token", "acme").out.strip() == fresh.access_token
    assert emulator.stats.invalid_grants == 0


def _drop_session(server: Postgres, url: str, lock: object) -> None:
    """The server ends a held RowLock's session, as a restart or a network cut would."""
    pid = lock._conn.info.backend_pid  # type: ignore[attr-defined]
    server.psql(parse_address(url).dbname, f"SELECT pg_terminate_backend({pid})")


def _lock_whose_session_dropped(
    emulator: Emulator, server: Postgres, url: str
) -> tuple[GrantLock, str, TokenSet]:
    """A saved connection's grant lock, held, whose session the server has ended; with the
    grant id and the tokens stored when it was taken."""
    asyncio.run(connect(Service(), emulator, "acme"))
    svc = Service()
    grant = svc.connection("acme").grant_id
    stored = svc.secrets.get_tokens(grant)
    assert stored is not None
    lock = svc.acquire_grant_lock(grant, lambda: "'acme'")
    _drop_session(server, url, lock)
    return lock, grant, stored


def test_a_rotated_token_whose_lock_session_dropped_is_written_when_the_store_is_unchanged(
    emulator: Emulator, store_url: str, postgres_server: Postgres
) -> None:
    from dataclasses import replace

    lock, grant, stored = _lock_whose_session_dropped(emulator, postgres_server, store_url)
    # What Xero answered carries an id token, which the store does not keep.
    replaced = replace(stored, id_token="eyJ.id.token")
    rotated = replace(stored, access_token=stored.access_token + "x", refresh_token="R" * 64)
    with pytest.raises(StorageError):
        lock.store_tokens(rotated, replaced)  # the dead session
    lock.store_tokens(rotated, replaced)  # a new one: the store still holds `replaced`
    assert Service().secrets.get_tokens(grant) == rotated


def test_a_retried_store_never_overwrites_a_token_another_host_rotated_meanwhile(
    emulator: Emulator,
    store_url: str,
    postgres_server: Postgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dataclasses import replace

    from xero_tui.core import pgstore, tokens
    from xero_tui.core.context import Context
    from xero_tui.core.errors import TokenNotStored

    asyncio.run(connect(Service(), emulator, "acme"))
    ctx = Context()
    conn = ctx.connection("acme")
    stored = ctx.secrets.get_tokens(conn.grant_id)
    assert stored is not None
    lock = ctx.acquire_grant_lock(conn.grant_id, lambda: "'acme'")
    # This host refreshed; its lock's session dropped before the rotated token was committed,
    # and another host, finding the grant free, refreshed it with the same (grace) token.
    mine = replace(stored, access_token=stored.access_token + "x", refresh_token="M" * 64)
    _drop_session(postgres_server, store_url, lock)
    theirs = run_cli("token", "acme", "--force-refresh", env=host(tmp_path, "b"))
    assert theirs.code == 0, theirs.err
    # The first read on the retry fails too (the database still settling).
    real_get = pgstore.DatabaseSecrets.get_tokens
    failures = iter([StorageError("Could not read the secrets in PostgreSQL: gone.")])

    def flaky_get(self: pgstore.DatabaseSecrets, grant_id: str) -> object:
        for exc in failures:
            raise exc
        return real_get(self, grant_id)

    monkeypatch.setattr(pgstore.DatabaseSecrets, "get_tokens", flaky_get)
    try:
        asyncio.run(tokens._store_rotated(ctx, conn, lock, conn.grant_id, stored, mine))
    except TokenNotStored:
        pass
    finally:
        lock.release()
    monkeypatch.setattr(pgstore.DatabaseSecrets, "get_tokens", real_get)
    kept = Service().secrets.get_tokens(conn.grant_id)
    assert kept is not None and kept.access_token == theirs.out.strip()


def test_a_held_rotated_token_is_stored_when_the_one_it_replaced_came_with_an_id_token(
    emulator: Emulator, store_url: str
) -> None:
    from dataclasses import replace

    from xero_tui.core import tokens
    from xero_tui.core.context import Context

    asyncio.run(connect(Service(), emulator, "acme"))
    ctx = Context()
    grant = ctx.connection("acme").grant_id
    stored = ctx.secrets.get_tokens(grant)
    assert stored is not None
    # Held after a failed store; what it replaced was itself an answer from Xero, id token and all.
    rotated = replace(stored, access_token=stored.access_token + "x", refresh_token="R" * 64)
    ctx.unstored[grant] = (replace(stored, id_token="eyJ.id.token"), rotated)
    assert tokens._store_unstored(ctx, grant, stored) == rotated
    assert Service().secrets.get_tokens(grant) == rotated


def test_a_secret_write_waiting_on_a_row_another_session_holds_is_bounded_and_said(
    emulator: Emulator, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    import psycopg

    from xero_tui.core import pgstore

    asyncio.run(connect(Service(), emulator, "acme"))
    svc = Service()
    grant = svc.connection("acme").grant_id
    tokens = svc.secrets.get_tokens(grant)
    assert tokens is not None
    monkeypatch.setattr(pgstore, "RECORDS_LOCK_TIMEOUT", 1.0)
    outcome: list[BaseException | None] = []

    def write() -> None:
        try:
            Service().secrets.put_tokens(grant, tokens)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    # Another session (a host hung mid-transaction) holds the grant's secret row.
    with psycopg.connect(store_url) as other:
        other.execute(
            "SELECT key FROM xero_tui.secrets WHERE key = %s FOR UPDATE", (grant_key(grant),)
        )
        worker = threading.Thread(target=write, daemon=True)
        worker.start()
        worker.join(10)
        assert not worker.is_alive(), "the write waited on the lock without end"
    assert len(outcome) == 1 and isinstance(outcome[0], StorageError), outcome
    assert "PostgreSQL" in str(outcome[0]) and "locked" in str(outcome[0])
    assert Service().secrets.get_tokens(grant) == tokens


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://sync:hunter%zz2@db.example/xero",
        "postgresql://sync:hunter2@[db.example/xero",
        "postgresql://sync@db.example/xero?password=hunter%zz2",
    ],
)
def test_a_password_in_a_store_url_that_does_not_parse_is_never_quoted(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_address(url)
    assert "hunter" not in str(caught.value)


def test_a_rotated_token_retried_after_its_grant_was_removed_does_not_bring_it_back(
    emulator: Emulator, store_url: str, postgres_server: Postgres
) -> None:
    from dataclasses import replace

    lock, grant, stored = _lock_whose_session_dropped(emulator, postgres_server, store_url)
    rotated = replace(stored, refresh_token="R" * 64)
    with pytest.raises(StorageError):
        lock.store_tokens(rotated, stored)  # the dead session
    assert run_cli("remove", "acme").code == 0
    lock.store_tokens(rotated, stored)  # a new session finds the grant gone
    assert Service().secrets.get_tokens(grant) is None


def test_a_schema_set_up_held_by_another_host_is_waited_for_a_bounded_time(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from xero_tui.core import pgstore

    monkeypatch.setattr(pgstore, "RECORDS_LOCK_TIMEOUT", 1.0)
    with psycopg.connect(store_url) as other:
        other.execute("SELECT pg_advisory_xact_lock(%s)", (pgstore._MIGRATION_LOCK,))
        started = time.monotonic()
        with pytest.raises(StorageError) as caught:
            Service().load()
        assert time.monotonic() - started < 5
        assert "setting up the tables" in str(caught.value)
    assert Service().load().connections == {}
