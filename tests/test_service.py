"""The Service layer in-process, as the TUI uses it, against the emulator."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.support.net import can_bind_without_reuse, free_port
from tests.support.saved import CUSTOM_ID, WEB_ID, connect, save_offline, save_three_connections
from xero_tui.core import loopback
from xero_tui.core.config import Config
from xero_tui.core.connect import ConnectSession
from xero_tui.core.consent import ConnectionDraft, ConsentOutcome
from xero_tui.core.errors import NeedsReconnect, TenantNotConnected, UsageError
from xero_tui.core.locks import FileLock, LockTimeout
from xero_tui.core.models import Kind, Status, Tenant, TokenSet, default_scopes
from xero_tui.core.secrets import FileStore
from xero_tui.core.service import Service
from xero_tui.core.tokens import REFRESH_RECORD_STEP
from xero_tui.emulator import Emulator
from xero_tui.emulator.consent import answer_consent


async def test_test_reads_the_organisation(emulator: Emulator) -> None:
    svc = Service()
    await connect(svc, emulator)
    result = await svc.test("acme")
    assert result.organisation.name == emulator.tenants[0].name
    assert result.organisation.base_currency == emulator.tenants[0].base_currency


async def test_test_after_app_removed_at_xero_says_reconnect(emulator: Emulator) -> None:
    svc = Service()
    await connect(svc, emulator)
    emulator.revoke_all(emulator.web_client.client_id)
    # The cached access token is rejected; one forced refresh then finds the grant gone.
    with pytest.raises(NeedsReconnect):
        await svc.test("acme")
    assert svc.connection("acme").status is Status.NEEDS_RECONNECT


async def test_disconnected_organisation_marks_needs_reconnect(emulator: Emulator) -> None:
    svc = Service()
    await connect(svc, emulator)
    emulator.disconnect_tenant(emulator.web_client.client_id, emulator.tenants[0].tenant_id)
    assert await svc.still_connected("acme") is False
    with pytest.raises(TenantNotConnected):
        await svc.test("acme")
    assert svc.connection("acme").status is Status.NEEDS_RECONNECT


async def test_save_refuses_a_taken_name_before_storing(emulator: Emulator) -> None:
    svc = Service()
    draft = await connect(svc, emulator)
    before = svc.load()
    conn = before.connections["acme"]
    tokens = svc.secrets.get_tokens(conn.grant_id)
    assert tokens is not None
    tenant = Tenant(conn.connection_id or "", conn.tenant_id, conn.tenant_name)
    session = ConnectSession(svc, draft, "acme")
    session.outcome = ConsentOutcome(tokens, (tenant,), frozenset())
    with pytest.raises(UsageError, match="already exists"):
        session.save([tenant])
    assert svc.load() == before


async def test_refresh_rewrites_the_config_only_when_its_record_changes(
    emulator: Emulator,
) -> None:
    svc = Service()
    await connect(svc, emulator)
    config_file = svc.paths.config_file
    saved = config_file.read_text()
    # Refreshed minutes after the consent recorded its time: nothing to record.
    await svc.access_token("acme", force=True)
    assert config_file.read_text() == saved

    # An hour or more behind, or a status to clear: the config is brought up to date.
    def age(config: Config) -> None:
        for record in (*config.grants.values(), *config.connections.values()):
            assert record.last_refreshed is not None
            record.last_refreshed -= REFRESH_RECORD_STEP
        config.connections["acme"].status = Status.NEEDS_RECONNECT

    svc.store.update(age)
    before = svc.load().connections["acme"]
    await svc.access_token("acme", force=True)
    after = svc.load().connections["acme"]
    assert after.status is Status.OK
    assert before.last_refreshed is not None and after.last_refreshed is not None
    assert after.last_refreshed - before.last_refreshed >= REFRESH_RECORD_STEP


async def test_refresh_waits_for_the_grant_lock_and_reads_the_token_again(
    emulator: Emulator,
) -> None:
    svc = Service()
    await connect(svc, emulator)
    conn = svc.connection("acme")
    other = Service()
    lock = FileLock(svc.paths.grant_lock(conn.grant_id), 5)
    lock.acquire()
    try:
        waiting = asyncio.create_task(svc.access_token("acme", force=True))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        # Meanwhile "another process" renews the tokens under the lock.
        async with other.client() as xero:
            stored = other.secrets.get_tokens(conn.grant_id)
            assert stored is not None and stored.refresh_token is not None
            client = emulator.web_client
            renewed = await xero.refresh(
                client.client_id, client.client_secret, stored.refresh_token
            )
        other.secrets.put_tokens(conn.grant_id, renewed)
        refreshes = emulator.stats.refreshes
    finally:
        lock.release()
    _, tokens = await waiting
    assert tokens.access_token == renewed.access_token
    assert emulator.stats.refreshes == refreshes


def test_a_lock_nobody_holds_any_more_is_let_go(tmp_path: Path) -> None:
    path = tmp_path / "grant.lock"
    first = FileLock(path, 0)
    first.acquire()
    with pytest.raises(LockTimeout):
        FileLock(path, 0.05).acquire()
    del first
    again = FileLock(path, 0)
    again.acquire()
    again.release()


async def test_consent_answers_the_browser_without_waiting_for_it_to_hang_up(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Long enough that waiting for the browser would show.
    monkeypatch.setattr(loopback, "LINGER_WAIT", 30.0)
    svc = Service()
    client = emulator.web_client
    redirect = f"http://localhost:{free_port()}/callback"
    emulator.register_client(client.client_id, client.client_secret, Kind.WEB, (redirect,))
    draft = ConnectionDraft(
        Kind.WEB, client.client_id, client.client_secret, redirect, default_scopes(Kind.WEB)
    )
    session = svc.start_session(draft, "acme")
    attempt = await session.begin_consent(allow_launch=False)
    location = await asyncio.to_thread(answer_consent, attempt.url)
    # A browser that reads the page and keeps its connection open, as browsers do.
    host, _, rest = location.removeprefix("http://").partition("/")
    reader, writer = await asyncio.open_connection(*host.rsplit(":", 1))
    writer.write(f"GET /{rest} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    result = await attempt.wait()
    started = time.monotonic()
    outcome = await session.complete_consent(attempt, result)
    page = await asyncio.wait_for(reader.readuntil(b"</html>"), 5)
    attempt.close_in_background()
    assert time.monotonic() - started < 10
    assert outcome.tenants
    assert b"Connected to Xero" in page
    # The browser hangs up; the listener, closing in the background, then frees the port.
    writer.close()
    deadline = time.monotonic() + 10
    while not can_bind_without_reuse(attempt.port):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_cancelled_refresh_still_stores_the_rotated_token(emulator: Emulator) -> None:
    svc = Service()
    await connect(svc, emulator)
    grant = svc.connection("acme").grant_id
    emulator.inject("token", "delay", delay=0.5)
    caller = asyncio.create_task(svc.access_token("acme", force=True))
    await asyncio.sleep(0.2)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while emulator.stats.refreshes == 0 and loop.time() < deadline:
        await asyncio.sleep(0.05)
    current = emulator.current_refresh_token(emulator.web_client.client_id)
    while loop.time() < deadline:
        stored = svc.secrets.get_tokens(grant)
        if stored is not None and stored.refresh_token == current:
            break
        await asyncio.sleep(0.05)
    assert emulator.stats.refreshes == 1
    stored = svc.secrets.get_tokens(grant)
    assert stored is not None and stored.refresh_token == current


async def test_a_pasted_token_check_that_fails_after_the_refresh_keeps_the_new_tokens(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xero_tui.core.errors import UnavailableError

    draft = await connect(Service(), emulator, "elsewhere")
    pasted = emulator.current_refresh_token(draft.client_id)
    assert pasted
    monkeypatch.setenv("XERO_TUI_HTTP_RETRIES", "0")
    emulator.inject("connections", "status", status=503)
    svc = Service()
    session = svc.start_session(draft, "pasted")
    with pytest.raises(UnavailableError) as failed:
        await session.check_refresh_token(pasted)
    rotated = emulator.current_refresh_token(draft.client_id)
    assert rotated != pasted and failed.value.exit_code == 4
    assert rotated not in str(failed.value) and rotated not in repr(failed.value)
    # Kept before the organisations were asked for: in the secret store, and the config.
    assert session.pending is not None
    kept = svc.secrets.get_tokens(session.pending.grant_id)
    assert kept is not None and kept.refresh_token == rotated
    assert list(svc.load().pending) == [session.pending.grant_id]


# Switching to the plain-file store ------------------------------------------------------------


def test_switching_to_the_file_store_moves_the_keyring_secrets() -> None:
    from tests.support.keyring_faults import MemoryKeyring
    from xero_tui.core.secrets import FileStore, KeyringStore

    backend = MemoryKeyring()
    svc = Service(secrets=KeyringStore(backend=backend))
    web = save_offline(svc, "web", Kind.WEB, WEB_ID, "t1")
    custom = save_offline(svc, "own", Kind.CUSTOM, CUSTOM_ID, "t2")
    assert len(backend.values) == 4

    moved = svc.use_file_storage()

    assert moved.moved == 4 and not moved.reconnect and not moved.reenter_secret
    assert svc.load().secret_storage == "file" and svc.storage_kind() == "file"
    file = FileStore(svc.paths)
    assert file.get_client_secret(WEB_ID) == "secret-of-web"
    assert file.get_client_secret(CUSTOM_ID) == "secret-of-own"
    web_tokens = file.get_tokens(web)
    assert web_tokens is not None and web_tokens.refresh_token == "refresh-of-web"
    assert file.get_tokens(custom) is not None
    # Moved, not copied: no second live copy of a refresh token is left to drift apart.
    assert backend.values == {}
    # A fresh process reads the file, and every connection is as it was.
    fresh = Service()
    assert [h.label for h in fresh.health()] == ["ok", "ok"]
    assert fresh.secrets.description.startswith("plain file")


def test_switching_with_an_unreadable_keyring_keeps_connections_and_says_what_to_do() -> None:
    from tests.support.keyring_faults import MemoryKeyring, RaisingKeyring
    from xero_tui.core.secrets import KeyringStore, client_secret_key

    backend = MemoryKeyring()
    svc = Service(secrets=KeyringStore(backend=backend))
    save_offline(svc, "web", Kind.WEB, WEB_ID, "t1")
    # The keyring locks (usually why the user switches): nothing can be read from it.
    locked = Service(secrets=KeyringStore(backend=RaisingKeyring()))

    moved = locked.use_file_storage()

    assert moved.moved == 0 and moved.reconnect == ("web",)
    assert moved.keyring_problem and "could not read" in moved.keyring_problem
    assert locked.load().secret_storage == "file"
    conn = locked.connection("web")
    assert conn.status is Status.NEEDS_RECONNECT and conn.client_id == WEB_ID
    [health] = Service().health()
    assert health.label == "tokens missing: reconnect"

    # Tokens readable, but the app's client secret is gone: the label says to enter it again.
    svc2 = Service(secrets=KeyringStore(backend=backend))
    svc2.store.update(lambda config: setattr(config, "secret_storage", "keyring"))
    save_offline(svc2, "other", Kind.CUSTOM, CUSTOM_ID, "t2")
    del backend.values[("xero-tui", client_secret_key(CUSTOM_ID))]
    moved = svc2.use_file_storage()
    assert moved.reenter_secret == ("other",)
    labels = {h.connection.name: h.label for h in Service().health()}
    assert labels["other"] == "client secret missing: enter it again"


def test_switching_is_not_recorded_when_the_file_does_not_keep_the_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.support.keyring_faults import MemoryKeyring
    from xero_tui.core.errors import StorageError
    from xero_tui.core.secrets import FileStore, KeyringStore

    backend = MemoryKeyring()
    svc = Service(secrets=KeyringStore(backend=backend))
    save_offline(svc, "web", Kind.WEB, WEB_ID, "t1")

    def dropped(self: FileStore, values: dict[str, str]) -> None:
        raise StorageError("the disk is full")

    monkeypatch.setattr(FileStore, "put_many", dropped)
    with pytest.raises(StorageError):
        svc.use_file_storage()
    assert svc.load().secret_storage == "keyring"
    assert len(backend.values) == 2
    assert [h.label for h in svc.health()] == ["ok"]


def lock_is_held(svc: Service, grant_id: str) -> bool:
    """Whether someone (this process included) holds the grant's refresh lock right now."""
    probe = FileLock(svc.paths.grant_lock(grant_id), 0)
    try:
        probe.acquire()
    except LockTimeout:
        return True
    probe.release()
    return False


def test_switching_holds_every_refresh_lock_from_the_keyring_read_to_its_delete() -> None:
    from tests.support.keyring_faults import MemoryKeyring
    from xero_tui.core.secrets import KeyringStore

    grants: list[str] = []
    calls: list[tuple[str, bool]] = []

    class Watched(MemoryKeyring):
        # A refresh in another process takes the grant's lock first: while the move holds them
        # all, none can store a newer token between the read and the delete.
        def get_password(self, service: str, username: str) -> str | None:
            calls.append(("read", all(lock_is_held(svc, g) for g in grants)))
            return super().get_password(service, username)

        def delete_password(self, service: str, username: str) -> None:
            calls.append(("delete", all(lock_is_held(svc, g) for g in grants)))
            super().delete_password(service, username)

    backend = Watched()
    svc = Service(secrets=KeyringStore(backend=backend))
    grants += [
        save_offline(svc, "web", Kind.WEB, WEB_ID, "t1"),
        save_offline(svc, "own", Kind.CUSTOM, CUSTOM_ID, "t2"),
    ]
    calls.clear()

    moved = svc.use_file_storage()

    assert moved.moved == 4 and backend.values == {}
    assert {kind for kind, _ in calls} == {"read", "delete"}
    assert all(held for _, held in calls), calls
    # And let go afterwards: the next refresh is not kept waiting.
    assert not any(lock_is_held(svc, g) for g in grants)


def test_switching_keeps_a_keyring_value_that_changed_during_the_move(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.support.keyring_faults import MemoryKeyring
    from xero_tui.core.secrets import FileStore, KeyringStore, grant_key

    backend = MemoryKeyring()
    svc = Service(secrets=KeyringStore(backend=backend))
    grant = save_offline(svc, "web", Kind.WEB, WEB_ID, "t1")
    save_offline(svc, "other", Kind.WEB, "1" * 32, "t2")
    key = ("xero-tui", grant_key(grant))
    written = FileStore.put_many

    def put_then_keyring_changes(self: FileStore, values: dict[str, str]) -> None:
        written(self, values)
        # Something that takes no grant lock writes the keyring meanwhile.
        backend.values[key] = "written-during-the-move"

    monkeypatch.setattr(FileStore, "put_many", put_then_keyring_changes)
    moved = svc.use_file_storage()

    # The newer value is not this move's to delete: kept, and said.
    assert backend.values == {key: "written-during-the-move"}
    assert moved.left_in_keyring == ("web",)
    assert moved.notice is not None and "'web'" in moved.notice
    kept = FileStore(svc.paths).get_tokens(grant)
    assert kept is not None and kept.refresh_token == "refresh-of-web"


def test_switching_waits_for_a_refresh_in_progress_and_gives_up_like_a_refresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.support.keyring_faults import MemoryKeyring
    from xero_tui.core import context as context_module
    from xero_tui.core.errors import StorageError
    from xero_tui.core.secrets import KeyringStore

    backend = MemoryKeyring()
    svc = Service(secrets=KeyringStore(backend=backend))
    grant = save_offline(svc, "web", Kind.WEB, WEB_ID, "t1")
    monkeypatch.setattr(context_module, "GRANT_LOCK_TIMEOUT", 0.05)
    refreshing = FileLock(svc.paths.grant_lock(grant), 0)
    refreshing.acquire()
    try:
        with pytest.raises(StorageError, match="refreshing 'web'"):
            svc.use_file_storage()
    finally:
        refreshing.release()
    # Nothing moved and nothing recorded: the keyring is still the store, whole.
    assert svc.load().secret_storage == "keyring" and len(backend.values) == 2


def test_switching_does_not_count_a_stale_secrets_file_as_moved() -> None:
    from dataclasses import replace

    from tests.support.keyring_faults import MemoryKeyring, RaisingKeyring
    from xero_tui.core.secrets import FileStore, KeyringStore

    svc = Service(secrets=KeyringStore(backend=MemoryKeyring()))
    grant = save_offline(svc, "web", Kind.WEB, WEB_ID, "t1")
    # Left from an earlier spell on the file store: superseded long ago.
    old = svc.secrets.get_tokens(grant)
    assert old is not None
    leftover = FileStore(svc.paths)
    leftover.put_tokens(grant, replace(old, refresh_token="superseded"))
    leftover.put_client_secret(WEB_ID, "old-secret")
    locked = Service(secrets=KeyringStore(backend=RaisingKeyring()))

    moved = locked.use_file_storage()

    assert moved.moved == 0 and moved.reconnect == ("web",)
    assert locked.connection("web").status is Status.NEEDS_RECONNECT


def test_storage_kind_is_decided_in_one_place() -> None:
    from xero_tui.core.errors import StorageError
    from xero_tui.core.secrets import storage_kind

    assert storage_kind("keyring") == "keyring"
    assert storage_kind("file") == "file"
    assert storage_kind("keyring", insecure=True) == "file"
    with pytest.raises(StorageError):
        storage_kind("vault")
    svc = Service(insecure_storage=True)
    assert svc.uses_file_storage() and svc.storage_summary().startswith("plain file")
    assert Service().storage_summary() == "keyring"


# Blocking calls stay off the event loop -----------------------------------------------------


def forbid_blocking_on_the_loop(monkeypatch: pytest.MonkeyPatch, svc: Service) -> list[str]:
    """Config and secret-store calls made on the event loop's thread are recorded by name."""
    seen: list[str] = []

    def guard(owner: object, name: str) -> None:
        call = getattr(owner, name)

        def guarded(*args: object, **kwargs: object) -> object:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return call(*args, **kwargs)
            seen.append(name)
            return call(*args, **kwargs)

        monkeypatch.setattr(owner, name, guarded)

    guard(svc.store, "update")
    guard(svc.store, "load")
    secrets = svc.secrets
    for name in ("get", "get_many", "set", "delete", "_put_checked"):
        guard(secrets, name)
    return seen


async def test_async_calls_keep_config_writes_and_keyring_calls_off_the_event_loop(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = Service()
    await connect(svc, emulator, "acme")
    await connect(svc, emulator, "beta")
    seen = forbid_blocking_on_the_loop(monkeypatch, svc)

    await svc.access_token("acme", force=True)
    await svc.test("acme")
    assert (await svc.probe_storage()).ok
    # An organisation disconnected at Xero: the test marks the connection (a config write).
    emulator.disconnect_tenant(emulator.web_client.client_id, emulator.tenants[0].tenant_id)
    with pytest.raises(TenantNotConnected):
        await svc.test("acme")
    # The grant is gone at Xero: the refresh marks the grant's connections.
    emulator.revoke_all(emulator.web_client.client_id)
    with pytest.raises(NeedsReconnect):
        await svc.access_token("beta", force=True)
    await svc.removal("acme", disconnect=True)
    await svc.remove("beta", revoke=True)
    assert seen == [], f"called on the event loop: {seen}"
    assert svc.connections() == []


def test_the_secret_store_follows_a_switch_made_by_another_process() -> None:
    svc = save_three_connections()
    assert svc.secrets.kind == "keyring"
    assert all(h.secret_missing for h in svc.health())
    # Another instance opts into the plain file, with the tokens moved there.
    FileStore(svc.paths).put_tokens("g1", TokenSet("access", time.time() + 600, "refresh"))
    Service().store.update(lambda config: setattr(config, "secret_storage", "file"))
    health = svc.health()
    assert svc.secrets.kind == "file"
    assert not any(h.secret_missing for h in health)
    assert health[0].storage == f"plain file {svc.paths.secrets_file}"
