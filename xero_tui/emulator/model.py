"""The emulator's records: demo clients and organisations, consents, codes, grants and tokens."""

from __future__ import annotations

import hashlib
import random
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field

from xero_tui.core.models import DEFAULT_REDIRECT_URI, Kind

CODE_LIFETIME = 5 * 60.0
ACCESS_TOKEN_LIFETIME = 30 * 60
REFRESH_GRACE = 30 * 60.0
REFRESH_TOKEN_LIFETIME = 60 * 24 * 3600.0
# How long a consent page stays answerable; Xero's login session is longer, an hour is plenty here.
CONSENT_LIFETIME = 60 * 60.0

IDENTITY_ISSUER = "https://identity.xero.com"
RESOURCE_AUDIENCE = "https://identity.xero.com/resources"

BASE_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})
# The broad scopes Xero retired for apps created from 2 March 2026.
DEPRECATED_SCOPES = frozenset(
    {"accounting.transactions", "accounting.transactions.read", "accounting.reports.read"}
)
_READ_WRITE = (
    "accounting.settings",
    "accounting.contacts",
    "accounting.attachments",
    "accounting.invoices",
    "accounting.payments",
    "accounting.banktransactions",
    "accounting.manualjournals",
    "accounting.classicexpenses",
    "accounting.transactions",
    "accounting.budgets",
    "payroll.employees",
    "payroll.payruns",
    "payroll.payslip",
    "payroll.settings",
    "payroll.timesheets",
    "files",
    "assets",
    "projects",
)
_READ_ONLY = (
    "accounting.reports.read",
    "accounting.reports.tenninetynine.read",
    "accounting.reports.aged.read",
    "accounting.reports.balancesheet.read",
    "accounting.reports.profitandloss.read",
    "accounting.reports.trialbalance.read",
    "accounting.reports.banksummary.read",
    "accounting.reports.budgetsummary.read",
    "accounting.reports.executivesummary.read",
    "accounting.reports.taxreports.read",
    "accounting.journals.read",
    "accounting.budgets.read",
)
KNOWN_SCOPES = frozenset(
    BASE_SCOPES
    | {"paymentservices", "bankfeeds", "marketplace.billing"}
    | set(_READ_WRITE)
    | {f"{s}.read" for s in _READ_WRITE}
    | set(_READ_ONLY)
)
SETTINGS_SCOPES = frozenset({"accounting.settings", "accounting.settings.read"})

SCOPE_TEXT = {
    "openid": "Confirm who you are",
    "profile": "See your name and Xero user id",
    "email": "See your email address",
    "offline_access": "Keep access when you are not using the app",
    "accounting.settings": "View and change organisation settings",
    "accounting.settings.read": "View organisation settings",
    "accounting.contacts": "View and change contacts",
    "accounting.contacts.read": "View contacts",
    "accounting.invoices": "View and change invoices, quotes and items",
    "accounting.invoices.read": "View invoices, quotes and items",
    "accounting.payments": "View and change payments",
    "accounting.payments.read": "View payments",
    "accounting.banktransactions": "View and change bank transactions",
    "accounting.banktransactions.read": "View bank transactions",
    "accounting.manualjournals": "View and change manual journals",
    "accounting.manualjournals.read": "View manual journals",
    "accounting.attachments": "View and add attachments",
    "accounting.attachments.read": "View attachments",
    "accounting.budgets.read": "View budgets",
    "accounting.transactions": "View and change business transactions",
    "accounting.transactions.read": "View business transactions",
    "accounting.reports.read": "View reports",
}


@dataclass(frozen=True)
class DemoClient:
    """An app registered with the emulator, as developer.xero.com/myapps would hold it."""

    client_id: str
    client_secret: str | None = field(repr=False)
    kind: Kind
    redirect_uris: tuple[str, ...] = (DEFAULT_REDIRECT_URI,)
    granular: bool = True
    name: str = "Demo app"

    def allows(self, scope: str) -> bool:
        return scope in KNOWN_SCOPES and not (self.granular and scope in DEPRECATED_SCOPES)


@dataclass(frozen=True)
class DemoTenant:
    """One organisation (or practice) the demo user can connect."""

    tenant_id: str
    name: str
    tenant_type: str
    short_code: str
    country_code: str
    base_currency: str
    is_demo: bool = False


@dataclass(frozen=True)
class DemoUser:
    xero_userid: str
    subject: str
    given_name: str = "Demo"
    family_name: str = "User"
    email: str = "demo.user@example.com"


@dataclass(frozen=True)
class EmulatorStats:
    """A snapshot of what the emulator has answered so far."""

    # Consent pages served: each is a sign-in a person would have to go through.
    authorizations: int = 0
    token_requests: int = 0
    code_exchanges: int = 0
    refreshes: int = 0
    grace_refreshes: int = 0
    invalid_grants: int = 0
    client_credentials: int = 0
    revocations: int = 0
    api_calls: int = 0
    rate_limited: int = 0
    faults_injected: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class ConnectionRecord:
    connection_id: str
    tenant: DemoTenant
    auth_event_id: str
    created: float
    updated: float


@dataclass(frozen=True)
class PendingConsent:
    """An authorize request that passed validation and waits for Allow or Cancel."""

    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    code_challenge: str | None
    created: float


@dataclass(frozen=True)
class AuthCode:
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    code_challenge: str | None
    auth_event_id: str  # names the organisations this consent connected
    issued: float


@dataclass
class Grant:
    """The token family one code exchange starts; refreshes rotate within it."""

    grant_id: str
    client_id: str
    scopes: tuple[str, ...]
    auth_event_id: str
    current_refresh_token: str | None = None
    revoked: bool = False
    issue_order: int = 0


@dataclass
class RefreshRecord:
    grant_id: str
    issued: float
    superseded: float | None = None


@dataclass(frozen=True)
class AccessRecord:
    client_id: str
    grant_id: str | None
    scopes: tuple[str, ...]
    expires: float


@dataclass
class RateWindow:
    """Per-tenant call times in the last minute, and the current fixed day window."""

    minute: deque[float] = field(default_factory=deque)
    day_start: float | None = None
    day_count: int = 0


def fixed_hex(label: str) -> str:
    """A stable 32-character uppercase hex id, shaped like a Xero client id."""
    return hashlib.sha256(f"xero-tui-emulator:{label}".encode()).hexdigest()[:32].upper()


def fixed_secret(label: str) -> str:
    return hashlib.sha256(f"xero-tui-emulator-secret:{label}".encode()).hexdigest()[:48]


def seeded_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


_PLACES = (
    "Kowhai",
    "Harbour",
    "Summit",
    "Totara",
    "Riverbank",
    "Pohutukawa",
    "Coastal",
    "Ironbark",
    "Wattle",
    "Thames",
    "Hudson",
    "Fernside",
)
_TRADES = (
    "Plumbing",
    "Bakery",
    "Consulting",
    "Landscapes",
    "Joinery",
    "Cycles",
    "Dental",
    "Print Co",
    "Coffee Roasters",
    "Electrical",
)
_COUNTRIES = (
    ("NZ", "NZD", "Ltd"),
    ("AU", "AUD", "Pty Ltd"),
    ("GB", "GBP", "Limited"),
    ("US", "USD", "LLC"),
)
_SHORT_CODE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
PRACTICE_INDEX = 3


def make_tenants(count: int, rng: random.Random) -> list[DemoTenant]:
    """The demo user's organisations: deterministic for a seed, the first is the Demo Company."""
    tenants = []
    combos = len(_PLACES) * len(_TRADES)
    for i in range(count):
        country, currency, entity = _COUNTRIES[i % len(_COUNTRIES)]
        tenant_type = "ORGANISATION"
        if i == 0:
            name = f"Demo Company ({country})"
        elif i == PRACTICE_INDEX:
            name = "Ledger Lane Accountants"
            tenant_type = "PRACTICE"
        else:
            place = _PLACES[i % len(_PLACES)]
            trade = _TRADES[(i // len(_PLACES)) % len(_TRADES)]
            name = f"{place} {trade} {entity}"
            if i >= combos:
                name += f" {i // combos + 1}"
        short_code = "!" + "".join(rng.choice(_SHORT_CODE_CHARS) for _ in range(5))
        tenants.append(
            DemoTenant(
                tenant_id=seeded_uuid(rng),
                name=name,
                tenant_type=tenant_type,
                short_code=short_code,
                country_code=country,
                base_currency=currency,
                is_demo=i == 0,
            )
        )
    return tenants
