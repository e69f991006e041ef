"""The connect session without Textual: its phases, the write-ahead, resume, naming and discard.

Each sign-in is a real consent against the emulator over loopback HTTP.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest

from tests.support.cli import register_redirect
from tests.support.session import sign_in
from xero_tui.core.connect import (
    ConnectSession,
    Phase,
    connection_names,
    find_pending,
    parse_choice,
)
from xero_tui.core.consent import ConnectionDraft
from xero_tui.core.context import settle
from xero_tui.core.errors import UnavailableError, UsageError
from xero_tui.core.models import Kind, Tenant, default_scopes
from xero_tui.core.service import Service
from xero_tui.core.validate import MAX_NAME, check_name
from xero_tui.emulator import Emulator


def web_draft(emulator: Emulator) -> ConnectionDraft:
    client = emulator.web_client
    redirect = register_redirect(emulator, client.client_id)
    return ConnectionDraft(
        Kind.WEB, client.client_id, client.client_secret, redirect, default_scopes(Kind.WEB)
    )


def tenant(name: str, tenant_id: str) -> Tenant:
    return Tenant(f"c-{tenant_id}", tenant_id, name)


# Names ---------------------------------------------------------------------------------------


def test_organisations_with_the_same_name_get_distinct_valid_names() -> None:
    pairs = connection_names(
        "Sync", [tenant("Acme", "a"), tenant("Acme", "b"), tenant("Beta", "c")]
    )
    names = [name for name, _ in pairs]
    assert names == ["Sync - Acme", "Sync - Acme (2)", "Sync - Beta"]


def test_a_derived_name_fits_the_limit_that_connect_name_checks() -> None:
    long = "Ω" + "x" * 10_000
    pairs = connection_names("Sync", [tenant(long, "a"), tenant(long, "b")])
    for name, _ in pairs:
        assert len(name) <= MAX_NAME
        assert check_name(name) == name
    assert pairs[0][0] != pairs[1][0]


def test_derived_names_are_numbered_past_saved_ones_and_controls_dropped() -> None:
    pairs = connection_names(
        "Sync", [tenant("Acme\x1b[2J", "a"), tenant("Beta", "b")], taken={"Sync - Acme"}
    )
    assert [name for name, _ in pairs] == ["Sync - Acme (2)", "Sync - Beta"]


@pytest.mark.parametrize("answer", ["0", "4", "two", "", "1,0", "-1", "1.5"])
def test_the_organisation_prompt_refuses(answer: str) -> None:
    with pytest.raises(UsageError, match="from 1 to 3"):
        parse_choice(answer, 3)


def test_the_organisation_prompt_takes_numbers_once_each() -> None:
    assert parse_choice(" 3, 1,3 ", 3) == [2, 0]


# Starting ------------------------------------------------------------------------------------


async def test_a_name_is_checked_before_anything_reaches_xero(emulator: Emulator) -> None:
    svc = Service()
    draft = web_draft(emulator)
    with pytest.raises(UsageError, match="at most 80"):
        svc.start_session(draft, "x" * 81)
    session, outcome = await sign_in(svc, draft, "acme")
    session.save([outcome.ordered()[0]])
    with pytest.raises(UsageError, match="already exists"):
        svc.start_session(draft, "acme")
    assert emulator.stats.authorizations == 1


# The write-ahead -----------------------------------------------------------------------------


async def test_the_tokens_are_kept_before_the_organisations_are_asked_for(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XERO_TUI_HTTP_RETRIES", "0")
    emulator.inject("connections", "status", count=2, status=503)
    svc = Service()
    draft = web_draft(emulator)
    with pytest.raises(UnavailableError):
        await sign_in(svc, draft, "acme")
    [pending] = svc.load().pending.values()
    assert pending.name == "acme" and pending.client_id == draft.client_id
    kept = svc.secrets.get_tokens(pending.grant_id)
    assert kept is not None
    assert kept.refresh_token == emulator.current_refresh_token(draft.client_id)
    # The config holds the facts, never a token.
    assert kept.refresh_token not in svc.paths.config_file.read_text()


async def test_the_browser_is_told_connected_only_once_the_tokens_are_kept(
    emulator: Emulator,
) -> None:
    from tests.support.keyring_faults import RaisingKeyring
    from xero_tui.core.errors import StorageError
    from xero_tui.core.loopback import CONNECTED_TEXT
    from xero_tui.core.secrets import KeyringStore
    from xero_tui.emulator.consent import answer_consent

    svc = Service(secrets=KeyringStore(backend=RaisingKeyring()))
    session = svc.start_session(web_draft(emulator), "acme")
    attempt = await session.begin_consent(allow_launch=False, env={})
    landed = await asyncio.to_thread(answer_consent, attempt.url)
    page: list[str] = []

    def browser() -> None:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(landed, timeout=20) as answer:
                page.append(answer.read().decode())
        except urllib.error.HTTPError as failed:
            page.append(failed.read().decode())

    opened = asyncio.ensure_future(asyncio.to_thread(browser))
    result = await attempt.wait()
    try:
        with pytest.raises(StorageError):
            await session.complete_consent(attempt, result)
    finally:
        await attempt.close()
    await opened
    assert page and CONNECTED_TEXT not in page[0]
    assert "Connected" not in page[0]
    assert session.pending is None


async def test_a_cancelled_caller_still_keeps_what_xero_issued(emulator: Emulator) -> None:
    svc = Service()
    session, _ = await sign_in(svc, web_draft(emulator), "first")
    assert session.tokens is not None and session.tokens.refresh_token
    pasted = session.tokens.refresh_token
    emulator.inject("token", "delay", delay=1.0)
    checking = ConnectSession.start(svc, session.draft, "second")
    task = asyncio.ensure_future(checking.check_refresh_token(pasted))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert checking.pending is not None
    kept = svc.secrets.get_tokens(checking.pending.grant_id)
    assert kept is not None
    assert kept.refresh_token == emulator.current_refresh_token(session.draft.client_id) != pasted


async def test_settle_passes_the_cancellation_on_once_the_work_is_done() -> None:
    done: list[int] = []

    async def work() -> int:
        await asyncio.sleep(0.2)
        done.append(1)
        return 1

    task = asyncio.ensure_future(settle(work()))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert done == [1]


# Phases, resume and save ---------------------------------------------------------------------


async def test_phases_from_ready_to_saved(emulator: Emulator) -> None:
    svc = Service()
    draft = web_draft(emulator)
    session = svc.start_session(draft, "acme")
    assert session.phase is Phase.READY and not session.holds_tokens
    with pytest.raises(UsageError):
        session.save([tenant("Acme", "a")])
    session, outcome = await sign_in(svc, draft, "acme")
    assert session.phase is Phase.LISTED and session.holds_tokens
    assert session.pending is not None
    issued = session.pending.issued
    [saved] = session.save([outcome.ordered()[0]])
    assert session.phase is Phase.SAVED and not session.holds_tokens
    config = svc.load()
    assert not config.pending
    # The refresh token's 60 days run from when Xero issued it, not from the save.
    assert config.grants[saved.grant_id].last_refreshed == issued == saved.last_refreshed
    with pytest.raises(UsageError, match="saved already"):
        session.save([outcome.ordered()[0]])


async def test_resume_renews_an_expired_access_token_and_saves_without_a_new_sign_in(
    emulator: Emulator,
) -> None:
    svc = Service()
    draft = web_draft(emulator)
    first, _ = await sign_in(svc, draft, "acme")
    assert first.pending is not None
    grant_id = first.pending.grant_id
    kept = svc.secrets.get_tokens(grant_id)
    assert kept is not None
    svc.secrets.put_tokens(grant_id, dataclasses.replace(kept, expires_at=0.0))
    # Hours later, in another process.
    pending = find_pending(svc.load(), "acme")
    assert pending is not None
    later = Service()
    session = later.resume_session(pending)
    assert session.phase is Phase.ISSUED
    refreshes = emulator.stats.refreshes
    outcome = await session.organisations()
    assert emulator.stats.refreshes == refreshes + 1
    renewed = later.secrets.get_tokens(grant_id)
    assert renewed is not None and renewed.refresh_token != kept.refresh_token
    assert renewed.refresh_token == emulator.current_refresh_token(draft.client_id)
    assert session.pending is not None and session.pending.issued >= pending.issued
    [saved] = session.save([outcome.ordered()[0]])
    assert saved.grant_id == grant_id
    assert emulator.stats.authorizations == 1


async def test_signing_in_again_in_one_session_replaces_the_kept_sign_in(
    emulator: Emulator,
) -> None:
    from tests.support.session import consent_in

    svc = Service()
    session, _ = await sign_in(svc, web_draft(emulator), "acme")
    assert session.pending is not None
    before = session.pending.grant_id
    await consent_in(session)
    assert session.pending is not None and session.pending.grant_id != before
    config = svc.load()
    assert list(config.pending) == [session.pending.grant_id]
    assert svc.secrets.get_tokens(before) is None


async def test_discard_revokes_at_xero_and_leaves_nothing_behind(emulator: Emulator) -> None:
    svc = Service()
    session, _ = await sign_in(svc, web_draft(emulator), "acme")
    assert session.pending is not None
    grant_id = session.pending.grant_id
    said = await session.discard()
    assert said == "Discarded the unfinished sign-in 'acme' and revoked it at Xero."
    assert emulator.stats.revocations == 1
    assert not svc.load().pending
    assert svc.secrets.get_tokens(grant_id) is None
    # No saved connection uses the app, so its secret goes too.
    assert svc.client_secret_for(session.draft.client_id) is None
    assert session.phase is Phase.DISCARDED


async def test_a_reconnect_keeps_each_connection_on_its_organisation(emulator: Emulator) -> None:
    svc = Service()
    draft = web_draft(emulator)
    everyone = [t.tenant_id for t in emulator.tenants]
    first, outcome = await sign_in(svc, draft, "acme", tenant_ids=everyone)
    saved = first.save(outcome.ordered()[:2])
    assert len({c.grant_id for c in saved}) == 1
    session = svc.start_session(draft, saved[0].name, reconnect=True)
    assert set(session.renewing) == {c.name for c in saved}
    from tests.support.session import consent_in

    await consent_in(session, tenant_ids=everyone)
    assert session.preselect().tenants == tuple(t for _, t in session.renewed())
    renewed = session.save(list(session.preselect().tenants))
    assert sorted(c.name for c in renewed) == sorted(c.name for c in saved)
    assert {c.tenant_id for c in renewed} == {c.tenant_id for c in saved}
    config = svc.load()
    assert len(config.grants) == 1 and saved[0].grant_id not in config.grants


def test_a_pending_sign_in_expires_with_xeros_sixty_days() -> None:
    from datetime import UTC, datetime

    from xero_tui.core.models import PendingSignIn

    issued = datetime(2026, 12, 1, tzinfo=UTC)
    pending = PendingSignIn("g", "n", Kind.WEB, "c", "http://localhost:1/cb", (), issued)
    assert pending.expires() - issued == timedelta(days=60)
