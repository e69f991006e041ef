"""`xero_tui.sdk`: Xero's own SDK (the real xero-python package) on xero-tui's store and lock,
against the emulator. Nothing here may leave the machine: every host but loopback is refused."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from xero_python.accounting import AccountingApi
from xero_python.exceptions import HTTPStatusException

from tests.support.saved import connect
from xero_tui import sdk
from xero_tui.core.errors import UsageError
from xero_tui.core.models import TokenSet
from xero_tui.core.service import Service
from xero_tui.emulator import Emulator

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An SDK request that escaped our endpoints would fail here rather than reach Xero."""
    real = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in LOOPBACK:
            raise OSError(f"test_sdk refuses to resolve {name}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    yield


def _stored(svc: Service) -> TokenSet:
    tokens = svc.secrets.get_tokens(svc.connection("acme").grant_id)
    assert tokens is not None
    return tokens


def _expire_stored_access_token(svc: Service) -> None:
    grant_id = svc.connection("acme").grant_id
    svc.secrets.put_tokens(grant_id, dataclasses.replace(_stored(svc), expires_at=0))


def _organisation_id(client: sdk.XeroTuiApiClient) -> str:
    found = AccountingApi(client).get_organisations(sdk.tenant_id("acme"))
    return str(found.organisations[0].organisation_id)


async def test_the_sdk_reads_the_emulators_organisation(emulator: Emulator) -> None:
    svc = Service()
    await connect(svc, emulator)
    conn = svc.connection("acme")
    calls = emulator.stats.api_calls

    client = sdk.api_client("acme")
    assert client.tenant_id == sdk.tenant_id("acme") == conn.tenant_id
    found = await asyncio.to_thread(AccountingApi(client).get_organisations, sdk.tenant_id("acme"))
    (org,) = found.organisations
    assert str(org.organisation_id) == conn.tenant_id
    assert org.name == next(t.name for t in emulator.tenants if t.tenant_id == conn.tenant_id)
    assert emulator.stats.api_calls == calls + 1
    # What the SDK was handed: an access token, never the refresh token.
    handed = client.get_oauth2_token()
    assert handed["refresh_token"] is None and handed["token_type"] == "Bearer"
    assert client.configuration.oauth2_token.refresh_token is None


@pytest.mark.parametrize("store", ["keyring", "database"])
async def test_an_expired_access_token_is_refreshed_by_xero_tui_not_the_sdk(
    emulator: Emulator, store: str, request: pytest.FixtureRequest
) -> None:
    if store == "database":
        request.getfixturevalue("store_url")  # a shared store: the refresh lands in PostgreSQL
    svc = Service()
    await connect(svc, emulator)
    assert svc.secrets.kind == store
    old = _stored(svc)
    _expire_stored_access_token(svc)
    refreshes = emulator.stats.refreshes

    client = sdk.api_client("acme")
    assert await asyncio.to_thread(_organisation_id, client) == svc.connection("acme").tenant_id
    assert emulator.stats.refreshes == refreshes + 1
    # The rotated refresh token is in our store (read by a fresh Service, as another process
    # or host would), and it is the one Xero now honours.
    new = _stored(Service())
    assert new.refresh_token != old.refresh_token
    assert new.refresh_token == emulator.current_refresh_token(emulator.web_client.client_id)
    assert client.configuration.oauth2_token.refresh_token is None


async def test_a_401_is_refreshed_once_through_xero_tui_and_the_call_sent_again(
    emulator: Emulator,
) -> None:
    svc = Service()
    await connect(svc, emulator)
    client = sdk.api_client("acme")
    await asyncio.to_thread(_organisation_id, client)
    before = _stored(svc)
    refreshes = emulator.stats.refreshes
    # Xero's clock passes the token's end while ours still holds it fresh: a 401.
    emulator.advance_clock(31 * 60)

    assert await asyncio.to_thread(_organisation_id, client) == svc.connection("acme").tenant_id
    assert emulator.stats.refreshes == refreshes + 1
    assert _stored(svc).refresh_token != before.refresh_token


async def test_sixteen_threads_on_one_grant_refresh_once_per_expiry(emulator: Emulator) -> None:
    svc = Service()
    await connect(svc, emulator)
    # Round 1: our stored token has expired. Rounds 2 and 3: Xero's clock moved past it (401s).
    _expire_stored_access_token(svc)
    client = sdk.api_client("acme")
    tenant = svc.connection("acme").tenant_id
    before = emulator.stats
    results: list[str] = []
    failures: list[BaseException] = []
    rounds = 3

    def worker(start: threading.Barrier) -> None:
        start.wait()
        try:
            results.append(_organisation_id(client))
        except BaseException as exc:
            failures.append(exc)

    def one_round() -> None:
        start = threading.Barrier(16)
        threads = [threading.Thread(target=worker, args=(start,)) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

    for n in range(rounds):
        if n:
            emulator.advance_clock(31 * 60)
        await asyncio.to_thread(one_round)

    after = emulator.stats
    assert failures == []
    assert results == [tenant] * 16 * rounds
    assert after.invalid_grants - before.invalid_grants == 0
    assert after.grace_refreshes - before.grace_refreshes == 0
    assert after.refreshes - before.refreshes == rounds
    assert _stored(svc).refresh_token == emulator.current_refresh_token(
        emulator.web_client.client_id
    )


async def test_the_sdks_own_token_calls_go_through_xero_tui(emulator: Emulator) -> None:
    svc = Service()
    await connect(svc, emulator)
    client = sdk.api_client("acme")
    first = await asyncio.to_thread(client.get_oauth2_token)
    refreshes = emulator.stats.refreshes

    forced = await asyncio.to_thread(client.refresh_oauth2_token)
    assert forced["access_token"] != first["access_token"] and forced["refresh_token"] is None
    assert emulator.stats.refreshes == refreshes + 1
    assert _stored(svc).access_token == forced["access_token"]
    with pytest.raises(UsageError, match="xero-tui remove"):
        client.revoke_oauth2_token()
    assert emulator.stats.revocations == 0
    # A token set from elsewhere would make a second keeper of the grant: refused, ours kept.
    stored = _stored(svc)
    with pytest.raises(UsageError, match="keeps the refresh token"):
        client.set_oauth2_token({**forced, "refresh_token": "from-elsewhere"})
    assert _stored(svc) == stored


async def test_a_refusal_no_refresh_mends_is_the_sdks_own_error(emulator: Emulator) -> None:
    svc = Service()
    await connect(svc, emulator)
    client = sdk.api_client("acme")
    refreshes = emulator.stats.refreshes
    # An organisation the grant does not cover: Xero says 403, which no refresh changes.
    with pytest.raises(HTTPStatusException) as raised:
        await asyncio.to_thread(AccountingApi(client).get_organisations, str(uuid.uuid4()))
    assert raised.value.status == 403
    assert emulator.stats.refreshes == refreshes


def test_the_sdk_adapter_imports_no_textual() -> None:
    probe = "import sys, xero_tui.sdk; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
