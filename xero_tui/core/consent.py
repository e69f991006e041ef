"""Consent at Xero: the authorize URL with its loopback listener, and what a consent granted.

`begin_consent` binds the listener before the URL is shown and opens the browser where that
makes sense; `list_organisations` reads what the tokens reach, this consent's first. The code
exchange itself, and keeping what Xero answers, belong to the connect session (`connect`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from xero_tui.core.endpoints import Endpoints
from xero_tui.core.errors import UsageError
from xero_tui.core.models import Kind, Tenant, TokenSet

if TYPE_CHECKING:
    from xero_tui.core.browser import LaunchPlan
    from xero_tui.core.loopback import CallbackListener, CallbackResult
    from xero_tui.core.oauth import AuthRequest
    from xero_tui.core.xero import XeroClient


@dataclass(frozen=True)
class ConnectionDraft:
    """What the form (or `connect`) knows about the app before consent."""

    kind: Kind
    client_id: str
    client_secret: str | None
    redirect_uri: str
    scopes: tuple[str, ...]
    pkce: bool = True


@dataclass(frozen=True)
class ConsentOutcome:
    """What one sign-in reaches: its tokens and organisations, the ones it granted marked."""

    tokens: TokenSet
    tenants: tuple[Tenant, ...]
    new_tenant_ids: frozenset[str]
    auth_event_id: str | None = None

    @property
    def user(self) -> str | None:
        """Who signed in at Xero, from the ID token (unverified, and only ever shown): so that a
        consent somebody else slipped in is visible before anything is saved."""
        from xero_tui.core.errors import clean_text
        from xero_tui.core.oauth import decode_claims

        if not self.tokens.id_token:
            return None
        claims = decode_claims(self.tokens.id_token)
        email = claims.get("email") or claims.get("preferred_username")
        names = [claims.get("given_name"), claims.get("family_name")]
        name = " ".join(n for n in names if isinstance(n, str) and n.strip())
        if not isinstance(email, str) or not email.strip():
            return clean_text(name, 100) or None
        shown = f"{name} <{email}>" if name else email
        return clean_text(shown, 160)

    def ordered(self) -> list[Tenant]:
        """Tenants this consent just granted first, then the rest, each part by name."""
        return sorted(
            self.tenants,
            key=lambda t: (t.tenant_id not in self.new_tenant_ids, t.tenant_name.casefold()),
        )


@dataclass
class ConsentAttempt:
    """A live authorization attempt: the listener is bound before `url` is shown."""

    request: AuthRequest
    listener: CallbackListener
    plan: LaunchPlan
    ssh_command: str | None
    launched: bool = False
    launch_tried: bool = False

    @property
    def url(self) -> str:
        return self.request.url

    @property
    def port(self) -> int:
        return self.listener.port

    @property
    def tunnel_note(self) -> str | None:
        """Said with the `ssh -L` line: what the tunnel needs on the user's own computer."""
        if self.ssh_command is None:
            return None
        from xero_tui.core.browser import tunnel_note

        return tunnel_note(self.port)

    @property
    def browser_note(self) -> str:
        """Whether a browser was opened, and if not, why not."""
        if self.launch_tried and not self.launched:
            from xero_tui.core.browser import LAUNCH_FAILED

            return LAUNCH_FAILED
        if self.plan.launch and not self.launch_tried:
            return "Not opening a browser, as asked."
        return self.plan.reason

    def remaining(self) -> float:
        return self.listener.remaining()

    async def wait(self) -> CallbackResult:
        return await self.listener.wait()

    def submit_pasted_url(self, url: str) -> None:
        self.listener.submit_pasted_url(url)

    def cancel(self) -> None:
        self.listener.cancel()

    async def close(self) -> None:
        await self.listener.close()

    def close_in_background(self) -> None:
        self.listener.close_in_background()


async def begin_consent(
    endpoints: Endpoints,
    draft: ConnectionDraft,
    *,
    timeout: float = 300.0,
    allow_launch: bool = True,
    env: Mapping[str, str] | None = None,
) -> ConsentAttempt:
    """Bind the listener, build the URL and (where it makes sense) open the browser."""
    if not draft.kind.uses_browser:
        raise UsageError("A custom connection signs in with its secret; no browser is needed.")
    from xero_tui.core.browser import is_ssh, launch, plan_launch, ssh_tunnel_command
    from xero_tui.core.loopback import CallbackListener
    from xero_tui.core.oauth import build_auth_request

    request = build_auth_request(
        endpoints, draft.client_id, draft.redirect_uri, draft.scopes, pkce=draft.pkce
    )
    listener = CallbackListener(draft.redirect_uri, request.state, timeout=timeout)
    await listener.start()
    # The code exchange needs the HTTP client: import it (httpx takes ~100 ms) and build its
    # TLS context while the user is still in the browser rather than after Xero answers.
    importlib.import_module("xero_tui.core.xero")
    from xero_tui.core.http import start_tls_context

    start_tls_context()
    plan = plan_launch(request.url, env)
    ssh = ssh_tunnel_command(listener.port, env) if is_ssh(env) else None
    attempt = ConsentAttempt(request, listener, plan, ssh)
    if allow_launch and plan.launch:
        attempt.launch_tried = True
        attempt.launched = launch(plan, request.url)
    return attempt


def auth_event_id(tokens: TokenSet) -> str | None:
    """The consent's id, from the access token's claims: it picks out what this consent granted."""
    from xero_tui.core.oauth import decode_claims

    value = decode_claims(tokens.access_token).get("authentication_event_id")
    return value if isinstance(value, str) and value else None


async def list_organisations(
    xero: XeroClient, tokens: TokenSet, event: str | None
) -> ConsentOutcome:
    """What `tokens` reach, with the ones the consent `event` granted marked as new."""
    new_ids: frozenset[str] = frozenset()
    if not event:
        tenants = await xero.connections(tokens.access_token)
    else:
        import asyncio

        # Both lists at once: one round trip, not two, between the callback and the picker.
        tenants, granted = await asyncio.gather(
            xero.connections(tokens.access_token),
            xero.connections(tokens.access_token, event),
        )
        new_ids = frozenset(t.tenant_id for t in granted)
        known = {t.tenant_id for t in tenants}
        tenants += [t for t in granted if t.tenant_id not in known]
    if not new_ids and tenants:
        # Re-consenting an already connected organisation can leave the filtered list empty:
        # then the most recently updated connection is the one just granted.
        latest = max(tenants, key=lambda t: t.updated or datetime.min.replace(tzinfo=UTC))
        if latest.updated is not None:
            new_ids = frozenset({latest.tenant_id})
    return ConsentOutcome(tokens, tuple(tenants), new_ids, event)
