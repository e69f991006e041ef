"""The Service layer in-process, as the TUI uses it, against the emulator."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.test_cli import free_port
from tests.test_loopback import can_bind_without_reuse
from xero_tui.core import loopback
from xero_tui.core.config import Config
from xero_tui.core.errors import NeedsReconnect, TenantNotConnected, UsageError
from xero_tui.core.locks import FileLock, LockTimeout
from xero_tui.core.models import Kind, Status, Tenant, default_scopes
from xero_tui.core.service import REFRESH_RECORD_STEP, ConnectionDraft, ConsentOutcome, Service
from xero_tui.emulator import Emulator
from xero_tui.emulator.consent import answer_consent


async def connect(svc: Service, emu: Emulator, name: str = "acme") -> ConnectionDraft:
    client = emu.web_client
    redirect = f"http://localhost:{free_port()}/callback"
    emu.register_client(client.client_id, client.client_secret, Kind.WEB, redirect_uris=(redirect,))
    draft = ConnectionDraft(
        Kind.WEB, client.client_id, client.client_secret, redirect, default_scopes(Kind.WEB)
    )
    attempt = await svc.begin_consent(draft, allow_launch=False)
    try:
        browser = asyncio.create_task(
            asyncio.to_thread(answer_consent, attempt.url, follow_redirect=True)
        )
        result = await attempt.wait()
        outcome = await svc.finish_consent(attempt, result, draft.client_secret)
        await browser
    finally:
        await attempt.close()
    (tenant,) = [t for t in outcome.tenants if t.tenant_id in outcome.new_tenant_ids]
    svc.save_connections(draft, outcome, [(name, tenant)])
    return draft


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
    with pytest.raises(UsageError, match="already exists"):
        svc.save_connections(
            draft, ConsentOutcome(tokens, (tenant,), frozenset()), [("acme", tenant)]
        )
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
        async with other._client() as xero:
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
    attempt = await svc.begin_consent(draft, allow_launch=False)
    location = await asyncio.to_thread(answer_consent, attempt.url)
    # A browser that reads the page and keeps its connection open, as browsers do.
    host, _, rest = location.removeprefix("http://").partition("/")
    reader, writer = await asyncio.open_connection(*host.rsplit(":", 1))
    writer.write(f"GET /{rest} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    result = await attempt.wait()
    started = time.monotonic()
    outcome = await svc.finish_consent(attempt, result, draft.client_secret)
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
