"""A rotated refresh token whose store fails: retried, kept in memory, and said with its deadline."""

from __future__ import annotations

import pytest

from tests.support.saved import connect
from xero_tui.core import tokens
from xero_tui.core.errors import EXIT_NOT_STORED, StorageError, TokenNotStored
from xero_tui.core.models import TokenSet
from xero_tui.core.secrets import FileStore
from xero_tui.core.service import Service
from xero_tui.emulator import Emulator


class FullDiskStore(FileStore):
    """The plain-file store on a disk that is full for the next `failures` token writes."""

    def __init__(self, *args: object, failures: int = 0) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.failures = failures
        self.writes = 0

    def put_tokens(self, grant_id: str, tokens: TokenSet) -> None:
        self.writes += 1
        if self.failures:
            self.failures -= 1
            raise StorageError(f"Could not write {self.path}: No space left on device.")
        super().put_tokens(grant_id, tokens)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "STORE_RETRY_WAITS", (0.01, 0.01, 0.01))


async def connected(emulator: Emulator) -> tuple[Service, FullDiskStore, str]:
    first = Service(insecure_storage=True)
    await connect(first, emulator)
    store = FullDiskStore(first.paths)
    return Service(insecure_storage=True, secrets=store), store, emulator.web_client.client_id


async def test_a_store_that_fails_for_a_moment_is_retried(emulator: Emulator) -> None:
    svc, store, client_id = await connected(emulator)
    store.failures = 2
    _, fresh = await svc.access_token("acme", force=True)
    assert store.writes == 3
    stored = store.get_tokens(svc.connection("acme").grant_id)
    assert stored is not None and stored.refresh_token == fresh.refresh_token
    assert fresh.refresh_token == emulator.current_refresh_token(client_id)


async def test_a_full_disk_after_xero_rotated_says_by_when_and_the_next_refresh_stores_it(
    emulator: Emulator,
) -> None:
    svc, store, client_id = await connected(emulator)
    grant_id = svc.connection("acme").grant_id
    old = store.get_tokens(grant_id)
    store.failures = 99
    with pytest.raises(TokenNotStored) as failed:
        await svc.access_token("acme", force=True)
    rotated = emulator.current_refresh_token(client_id)
    assert failed.value.exit_code == EXIT_NOT_STORED
    message = str(failed.value)
    assert "Xero replaced the refresh token of 'acme'" in message
    assert "keeps working until about" in message and "No space left on device" in message
    assert rotated is not None and rotated not in message
    # The stored token is the old one, which Xero still takes; the new one is held here.
    assert store.get_tokens(grant_id) == old

    # Space again: the next call stores the held token instead of refreshing once more.
    store.failures = 0
    refreshes = emulator.stats.refreshes
    _, now = await svc.access_token("acme")
    assert emulator.stats.refreshes == refreshes
    assert now.refresh_token == rotated
    stored = store.get_tokens(grant_id)
    assert stored is not None and stored.refresh_token == rotated
    assert not svc.unstored


async def test_a_new_process_after_a_full_disk_refreshes_the_old_token_within_the_grace(
    emulator: Emulator,
) -> None:
    svc, store, client_id = await connected(emulator)
    store.failures = 99
    with pytest.raises(TokenNotStored):
        await svc.access_token("acme", force=True)
    later = Service(insecure_storage=True)
    _, fresh = await later.access_token("acme", force=True)
    assert emulator.stats.grace_refreshes == 1
    assert fresh.refresh_token == emulator.current_refresh_token(client_id)


async def test_remove_waits_for_a_refresh_in_flight_and_leaves_no_token_behind(
    emulator: Emulator,
) -> None:
    import asyncio

    from xero_tui.core.locks import FileLock

    svc = Service(insecure_storage=True)
    await connect(svc, emulator)
    grant_id = svc.connection("acme").grant_id
    # Another process is refreshing: it holds the grant's lock, and stores a new token after.
    refreshing = FileLock(svc.paths.grant_lock(grant_id), 5)
    refreshing.acquire()
    removal = asyncio.ensure_future(svc.removal("acme"))
    await asyncio.sleep(0.3)
    assert not removal.done()
    stored = svc.secrets.get_tokens(grant_id)
    assert stored is not None
    svc.secrets.put_tokens(grant_id, TokenSet("rotated", stored.expires_at, "rotated-refresh"))
    refreshing.release()
    await asyncio.wait_for(removal, 10)
    assert svc.secrets.get_tokens(grant_id) is None
    assert "rotated-refresh" not in svc.paths.secrets_file.read_text()


async def test_a_token_refused_by_xero_is_refreshed_once_however_many_callers_saw_it(
    emulator: Emulator,
) -> None:
    from xero_tui.core import tokens as token_module

    svc = Service()
    await connect(svc, emulator)
    _, old = await svc.access_token("acme")
    refreshes = emulator.stats.refreshes
    # Two callers met the same 401; the second asks only after the first has refreshed.
    _, first = await token_module.access_token(svc, "acme", refused=old.access_token)
    _, second = await token_module.access_token(svc, "acme", refused=old.access_token)
    assert emulator.stats.refreshes == refreshes + 1
    assert first.access_token == second.access_token != old.access_token
