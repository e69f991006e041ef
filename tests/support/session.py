"""A real sign-in against the emulator through the connect session, as the CLI and form drive it."""

from __future__ import annotations

import asyncio

from xero_tui.core.connect import ConnectSession
from xero_tui.core.consent import ConnectionDraft, ConsentOutcome
from xero_tui.core.context import Context
from xero_tui.core.models import Connection
from xero_tui.emulator.consent import answer_consent


async def consent_in(
    session: ConnectSession, *, tenant_ids: list[str] | None = None, timeout: float = 30
) -> ConsentOutcome:
    """Consent in the scripted browser (for `tenant_ids`, or the page's default) and complete
    it in `session`: the tokens are kept as a pending sign-in, nothing is saved."""
    attempt = await session.begin_consent(timeout=timeout, allow_launch=False, env={})
    # The scripted browser blocks until the held callback is answered, so it runs beside us.
    browser = asyncio.ensure_future(
        asyncio.to_thread(answer_consent, attempt.url, tenant_ids=tenant_ids, follow_redirect=True)
    )
    try:
        result = await asyncio.wait_for(attempt.wait(), 20)
        outcome = await session.complete_consent(attempt, result)
    finally:
        await attempt.close()
    await asyncio.wait_for(browser, 20)
    return outcome


async def sign_in(
    ctx: Context,
    draft: ConnectionDraft,
    name: str,
    *,
    tenant_ids: list[str] | None = None,
    timeout: float = 30,
) -> tuple[ConnectSession, ConsentOutcome]:
    """A new session for `name`, and `consent_in` it."""
    session = ConnectSession.start(ctx, draft, name)
    return session, await consent_in(session, tenant_ids=tenant_ids, timeout=timeout)


async def connect_new(ctx: Context, draft: ConnectionDraft, name: str) -> Connection:
    """`sign_in`, then save the one organisation this consent granted."""
    session, outcome = await sign_in(ctx, draft, name)
    tenant = next(t for t in outcome.ordered() if t.tenant_id in outcome.new_tenant_ids)
    (saved,) = session.save([tenant])
    return saved
