"""`xero_tui.api` for Python jobs: tokens from the saved connections, and an httpx.Auth."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import httpx

from tests.support.saved import connect
from xero_tui import api
from xero_tui.core.service import Service
from xero_tui.emulator import Emulator


async def test_access_token_refreshes_when_needed_and_then_answers_from_memory(
    emulator: Emulator,
) -> None:
    svc = Service()
    await connect(svc, emulator)
    conn = svc.connection("acme")

    def ask() -> api.Token:
        return api.access_token("acme")

    first = await asyncio.to_thread(ask)
    assert first.tenant_id == conn.tenant_id and first.is_fresh()
    assert first.access_token not in repr(first)
    refreshes = emulator.stats.refreshes
    # Asked from a thread that runs an event loop too (a job on asyncio calling the sync API).
    again = ask()
    assert again == first and emulator.stats.refreshes == refreshes
    forced = await api.access_token_async("acme", force=True)
    assert forced.access_token != first.access_token
    assert emulator.stats.refreshes == refreshes + 1


def _organisation(client: httpx.Client, emulator: Emulator) -> httpx.Response:
    return client.get(f"{emulator.url}/api.xro/2.0/Organisation")


async def test_xero_auth_signs_requests_and_refreshes_once_on_a_401(emulator: Emulator) -> None:
    svc = Service()
    await connect(svc, emulator)

    def job() -> list[int]:
        with httpx.Client(auth=api.XeroAuth("acme")) as client:
            codes = [_organisation(client, emulator).status_code]
            # Xero's clock passes the token's end while ours still holds it fresh: a 401.
            emulator.advance_clock(31 * 60)
            codes.append(_organisation(client, emulator).status_code)
            return codes

    refreshes = emulator.stats.refreshes
    assert await asyncio.to_thread(job) == [200, 200]
    assert emulator.stats.refreshes == refreshes + 1


async def test_xero_auth_on_asyncio(emulator: Emulator) -> None:
    svc = Service()
    await connect(svc, emulator)
    async with httpx.AsyncClient(auth=api.XeroAuth("acme")) as client:
        emulator.advance_clock(31 * 60)
        answer = await client.get(f"{emulator.url}/api.xro/2.0/Organisation")
    assert answer.status_code == 200


async def test_one_auth_shared_by_sixteen_threads_makes_one_refresh(emulator: Emulator) -> None:
    svc = Service()
    await connect(svc, emulator)
    auth = api.XeroAuth("acme")
    emulator.advance_clock(31 * 60)
    refreshes = emulator.stats.refreshes
    codes: list[int] = []
    start = threading.Barrier(16)

    def worker() -> None:
        with httpx.Client(auth=auth) as client:
            start.wait()
            codes.append(_organisation(client, emulator).status_code)

    def run_all() -> None:
        threads = [threading.Thread(target=worker) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

    await asyncio.to_thread(run_all)
    assert codes == [200] * 16
    assert emulator.stats.invalid_grants == 0
    # Every thread met the same refused token, and one refresh served them all.
    assert emulator.stats.refreshes - refreshes == 1


def test_the_api_imports_no_textual() -> None:
    probe = "import sys, xero_tui.api; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_overridden_endpoints_are_said_once_per_process_as_a_warning(
    emulator: Emulator,
) -> None:
    import warnings

    from xero_tui import api as api_module

    svc = Service()
    await connect(svc, emulator)
    api_module._told.clear()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        await asyncio.to_thread(api.access_token, "acme")
        await asyncio.to_thread(api.access_token, "acme")
    said = [str(w.message) for w in seen if "endpoints overridden" in str(w.message)]
    assert said == [f"xero-tui: {emulator.endpoints.override_notice()}"]
