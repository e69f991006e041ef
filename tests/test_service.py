"""The Service layer in-process, as the TUI uses it, against the emulator."""

from __future__ import annotations

import asyncio

import pytest

from tests.test_cli import free_port
from xero_tui.core.errors import NeedsReconnect, TenantNotConnected, UsageError
from xero_tui.core.models import Kind, Status, Tenant, default_scopes
from xero_tui.core.service import ConnectionDraft, ConsentOutcome, Service
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
