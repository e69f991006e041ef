"""Plain data the rest of the app passes around."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

DEFAULT_REDIRECT_URI = "http://localhost:8719/callback"
# Where Xero apps are created and their client IDs, secrets and redirect URIs are kept.
MYAPPS_URL = "https://developer.xero.com/myapps"
BASE_SCOPES: tuple[str, ...] = ("offline_access", "openid", "profile", "email")
# Apps created from 2 March 2026 must ask for granular scopes (the set Xero's own CLI asks for).
GRANULAR_SCOPES: tuple[str, ...] = (
    "accounting.contacts",
    "accounting.settings",
    "accounting.invoices",
    "accounting.payments",
    "accounting.banktransactions",
    "accounting.manualjournals",
    "accounting.reports.aged.read",
    "accounting.reports.balancesheet.read",
    "accounting.reports.profitandloss.read",
    "accounting.reports.trialbalance.read",
    "accounting.budgets.read",
    "accounting.attachments",
)
# Apps created before 2 March 2026 may keep the broad scopes until September 2027.
LEGACY_SCOPES: tuple[str, ...] = (
    "accounting.transactions",
    "accounting.reports.read",
    "accounting.settings",
    "accounting.contacts",
    "accounting.attachments",
    "accounting.journals.read",
    "accounting.budgets.read",
)
# New apps start on Xero's free Starter tier, which connects this many organisations at most;
# the paid tiers connect more. The tier is not visible through the API.
STARTER_TIER_LIMIT = 5
PAID_TIER_LIMITS = "Core 50, Plus 1,000, Advanced 10,000"
ACCESS_TOKEN_MARGIN = 60.0
REFRESH_TOKEN_LIFETIME_DAYS = 60
REFRESH_TOKEN_WARN_DAYS = 50


class Kind(StrEnum):
    WEB = "web"
    PKCE = "pkce"
    CUSTOM = "custom"

    @property
    def label(self) -> str:
        """The app type as Xero's documentation names it."""
        return {
            Kind.WEB: "Web app",
            Kind.PKCE: "Auth code with PKCE",
            Kind.CUSTOM: "Custom connection",
        }[self]

    @property
    def short_label(self) -> str:
        """The same name cut down for narrow places, such as a table column."""
        return {
            Kind.WEB: "Web app",
            Kind.PKCE: "PKCE",
            Kind.CUSTOM: "Custom",
        }[self]

    @property
    def has_secret(self) -> bool:
        return self is not Kind.PKCE

    @property
    def uses_browser(self) -> bool:
        return self is not Kind.CUSTOM


class Status(StrEnum):
    OK = "ok"
    NEEDS_RECONNECT = "needs_reconnect"


def tier_notice(count: int) -> str | None:
    """What to say, once and without stopping anything, when `count` organisations are chosen
    for one app: more than Xero's Starter tier connects. None when they fit in it."""
    if count <= STARTER_TIER_LIMIT:
        return None
    return (
        f"More than {STARTER_TIER_LIMIT} organisations for one app: a new Xero app is on the "
        f"free Starter tier, which connects at most {STARTER_TIER_LIMIT}. If this app is still "
        f"on it, Xero will refuse the rest; the paid tiers connect more ({PAID_TIER_LIMITS})."
    )


def default_scopes(kind: Kind, legacy: bool = False) -> tuple[str, ...]:
    accounting = LEGACY_SCOPES if legacy else GRANULAR_SCOPES
    if kind is Kind.CUSTOM:
        return accounting
    return BASE_SCOPES + accounting


@dataclass(frozen=True)
class TokenSet:
    """What the token endpoint returned; `expires_at` is seconds since the epoch."""

    access_token: str
    expires_at: float
    refresh_token: str | None = None
    scopes: tuple[str, ...] = ()
    id_token: str | None = None

    def is_fresh(self, margin: float = ACCESS_TOKEN_MARGIN, now: float | None = None) -> bool:
        return self.expires_at - margin > (time.time() if now is None else now)

    def __repr__(self) -> str:
        return f"TokenSet(expires_at={self.expires_at!r}, scopes={self.scopes!r})"


@dataclass(frozen=True)
class Tenant:
    """One entry of `GET /connections`: an organisation (or practice) the grant reaches."""

    connection_id: str
    tenant_id: str
    tenant_name: str
    tenant_type: str = "ORGANISATION"
    auth_event_id: str | None = None
    created: datetime | None = None
    updated: datetime | None = None


@dataclass(frozen=True)
class Organisation:
    """The fields of `GET /api.xro/2.0/Organisation` the connection test shows."""

    organisation_id: str
    name: str
    short_code: str | None
    country_code: str | None
    base_currency: str | None
    is_demo: bool = False
    status: str | None = None


@dataclass
class Grant:
    """One consent (or one custom connection): its tokens live in the secret store under `grant_id`."""

    grant_id: str
    kind: Kind
    client_id: str
    scopes: tuple[str, ...]
    created: datetime
    last_refreshed: datetime | None = None
    auth_event_id: str | None = None


@dataclass
class Connection:
    """One organisation reached through one grant, saved under a name."""

    name: str
    kind: Kind
    client_id: str
    tenant_id: str
    tenant_name: str
    grant_id: str
    redirect_uri: str = DEFAULT_REDIRECT_URI
    scopes: tuple[str, ...] = ()
    tenant_type: str = "ORGANISATION"
    connection_id: str | None = None
    created: datetime = field(default_factory=lambda: datetime.now().astimezone())
    last_refreshed: datetime | None = None
    status: Status = Status.OK
    pkce: bool = True


@dataclass
class PendingSignIn:
    """A sign-in Xero has answered whose connections are not saved yet.

    Its tokens are already in the secret store under `grant_id` (the grant it becomes), so that
    an interruption between Xero's answer and the save loses nothing: `connect NAME` again, or
    the app's next start, finishes it without signing in again.
    """

    grant_id: str
    name: str
    kind: Kind
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    # When Xero issued the refresh token it holds: its 60 days run from here.
    issued: datetime
    pkce: bool = True
    auth_event_id: str | None = None
    # The saved connections a reconnect replaces (empty for a new connection).
    renewing: tuple[str, ...] = ()

    def expires(self) -> datetime:
        """When Xero stops accepting its refresh token, if nothing uses it before then."""
        from datetime import timedelta

        return self.issued + timedelta(days=REFRESH_TOKEN_LIFETIME_DAYS)
