"""What the emulated Xero knows and how each endpoint answers; one lock guards all of it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import random
import re
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote_plus, urlencode

from xero_tui.core.models import DEFAULT_REDIRECT_URI, Kind, default_scopes
from xero_tui.emulator import model
from xero_tui.emulator.faults import Fault, FaultPlan
from xero_tui.emulator.model import (
    AccessRecord,
    AuthCode,
    ConnectionRecord,
    DemoClient,
    DemoTenant,
    DemoUser,
    EmulatorStats,
    Grant,
    PendingConsent,
    RateWindow,
    RefreshRecord,
)
from xero_tui.emulator.pages import consent_page, index_page
from xero_tui.emulator.replies import (
    NO_STORE,
    Refused,
    Reply,
    error_page_reply,
    html_reply,
    json_reply,
    oauth_error,
    problem,
    rate_limited,
    redirect,
)

# Xero's documented limits; module attributes so a test can lower them.
MINUTE_LIMIT = 60
DAY_LIMIT = 5000
APP_MINUTE_LIMIT = 10_000

Form = Mapping[str, list[str]]

_PKCE_VALUE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_KEY_ID = "1CAF8A24ECF9C8C7E3BA2E0A9B1B6D0F"
WEB_ID = model.fixed_hex("web")
PKCE_ID = model.fixed_hex("pkce")
CUSTOM_ID = model.fixed_hex("custom")
_UNKNOWN_CLIENT = "Error: unauthorized_client : Unknown client or client not enabled"


def first(form: Form, name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


def xero_date(timestamp: float) -> str:
    """Xero's identity API date: UTC without a zone suffix, 7 fractional digits."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0"


def _s256(verifier: str) -> str:
    # Not core.oauth.code_challenge: if the server shared the client's code, a bug there
    # would pass every test and fail only against Xero.
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return _b64url(digest)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _fake_jwt(claims: dict[str, Any]) -> str:
    """JWT-shaped like Xero's tokens; the signature is random bytes, nothing can verify it."""
    header = {"alg": "RS256", "kid": _KEY_ID, "typ": "JWT", "x5t": _b64url(_KEY_ID.encode())}
    parts = [json.dumps(part, separators=(",", ":")).encode() for part in (header, claims)]
    return ".".join([*map(_b64url, parts), _b64url(secrets.token_bytes(256))])


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


class EmulatorState:
    def __init__(self, tenants: int, seed: int) -> None:
        if tenants < 1:
            raise ValueError("the demo user needs at least one organisation")
        rng = random.Random(seed)
        self._lock = threading.Lock()
        self._offset = 0.0
        self.user = DemoUser(
            xero_userid=model.seeded_uuid(rng), subject=f"{rng.getrandbits(128):032x}"
        )
        self._session_id = f"{rng.getrandbits(128):032x}"
        self.tenants = model.make_tenants(tenants, rng)
        self._tenant_index = {t.tenant_id: t for t in self.tenants}
        self._faults = FaultPlan()
        self._counts = {f.name: 0 for f in fields(EmulatorStats)}
        self._clients: dict[str, DemoClient] = {}
        self._custom_events: dict[str, str] = {}
        self._connections: dict[str, dict[str, ConnectionRecord]] = {}
        self._pending: dict[str, PendingConsent] = {}
        self._codes: dict[str, AuthCode] = {}
        self._grants: dict[str, Grant] = {}
        self._refresh: dict[str, RefreshRecord] = {}
        self._access: dict[str, AccessRecord] = {}
        self._rates: dict[tuple[str, str], RateWindow] = {}
        self._issued = 0
        self._app_minute: dict[str, deque[float]] = {}
        self.register_client(WEB_ID, model.fixed_secret("web"), Kind.WEB, name="Demo web app")
        self.register_client(PKCE_ID, None, Kind.PKCE, name="Demo PKCE app")
        self.register_client(
            CUSTOM_ID,
            model.fixed_secret("custom"),
            Kind.CUSTOM,
            redirect_uris=(),
            name="Demo custom connection",
        )

    # The demo apps as registered now: a test may re-register one with other redirect URIs.
    @property
    def web_client(self) -> DemoClient:
        return self._clients[WEB_ID]

    @property
    def pkce_client(self) -> DemoClient:
        return self._clients[PKCE_ID]

    @property
    def custom_client(self) -> DemoClient:
        return self._clients[CUSTOM_ID]

    # -- the emulator's own controls -------------------------------------------------------

    def now(self) -> float:
        return time.time() + self._offset

    def advance_clock(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += seconds
            return self._offset

    def register_client(
        self,
        client_id: str,
        client_secret: str | None,
        kind: Kind | str,
        redirect_uris: tuple[str, ...] = (DEFAULT_REDIRECT_URI,),
        granular: bool = True,
        *,
        name: str | None = None,
    ) -> DemoClient:
        kind = Kind(kind)
        if not client_id:
            raise ValueError("client_id cannot be empty")
        if kind.has_secret != (client_secret is not None):
            need = "needs" if kind.has_secret else "cannot have"
            raise ValueError(f"an app of type “{kind.label}” {need} a client secret")
        if kind.uses_browser and not redirect_uris:
            raise ValueError(f"an app of type “{kind.label}” needs at least one redirect URI")
        with self._lock:
            # Re-registering (say, to add a redirect URI) keeps the app's name unless given.
            previous = self._clients.get(client_id)
            name = name or (previous.name if previous else kind.label)
            client = DemoClient(
                client_id, client_secret, kind, tuple(redirect_uris), granular, name
            )
            self._clients[client_id] = client
            if kind is Kind.CUSTOM:
                self._establish_custom_connection(client_id)
        return client

    def _establish_custom_connection(self, client_id: str) -> None:
        """The authorising user picked the first organisation when the connection was set up."""
        event = self._custom_events.setdefault(client_id, str(uuid.uuid4()))
        tenant = self.tenants[0]
        now = self.now()
        self._connections[client_id] = {
            tenant.tenant_id: ConnectionRecord(str(uuid.uuid4()), tenant, event, now, now)
        }

    def inject(self, endpoint: str, kind: str, count: int, **options: Any) -> None:
        fault = Fault.make(endpoint, kind, **options)
        with self._lock:
            self._faults.inject(endpoint, fault, count)

    def set_fault_rate(
        self, endpoint: str, kind: str, rate: float, seed: int | None, **options: Any
    ) -> None:
        """Fault a random fraction of requests; rate 0 clears that kind, whatever the options."""
        with self._lock:
            if rate == 0:
                self._faults.clear_rate(endpoint, kind)
            else:
                self._faults.set_rate(endpoint, Fault.make(endpoint, kind, **options), rate, seed)

    def take_fault(self, endpoint: str) -> Fault | None:
        with self._lock:
            fault = self._faults.take(endpoint)
            if fault is not None:
                self._counts["faults_injected"] += 1
            return fault

    def stats(self) -> EmulatorStats:
        with self._lock:
            return EmulatorStats(**self._counts)

    def current_refresh_token(self, client_id: str, auth_event_id: str | None = None) -> str | None:
        """The refresh token the emulator honours without grace: for the consent `auth_event_id`,
        or else for the client's grant whose tokens were issued last."""
        with self._lock:
            grants = [
                g
                for g in self._grants.values()
                if g.client_id == client_id
                and not g.revoked
                and g.current_refresh_token
                and auth_event_id in (None, g.auth_event_id)
            ]
            if not grants:
                return None
            return max(grants, key=lambda g: g.issue_order).current_refresh_token

    def revoke_all(self, client_id: str) -> int:
        """The user removed the app: every grant is revoked and every connection removed."""
        with self._lock:
            grants = [
                g for g in self._grants.values() if g.client_id == client_id and not g.revoked
            ]
            for grant in grants:
                grant.revoked = True
            self._access = {t: a for t, a in self._access.items() if a.client_id != client_id}
            self._connections.pop(client_id, None)
            return len(grants)

    def disconnect_tenant(self, client_id: str, tenant_id: str) -> bool:
        with self._lock:
            return self._connections.get(client_id, {}).pop(tenant_id.lower(), None) is not None

    # -- login.xero.com --------------------------------------------------------------------

    def index(self, base_url: str) -> Reply:
        return html_reply(200, index_page(base_url))

    def authorize(self, params: Form) -> Reply:
        with self._lock:
            self._counts["authorizations"] += 1
            client = self._clients.get(first(params, "client_id") or "")
            if client is None or client.kind is Kind.CUSTOM:
                raise error_page_reply(_UNKNOWN_CLIENT)
            redirect_uri = first(params, "redirect_uri")
            if redirect_uri not in client.redirect_uris:
                raise error_page_reply("Error: unauthorized_client : Invalid redirect_uri")
            if first(params, "response_type") != "code":
                raise error_page_reply("Error: unsupported_response_type : Invalid response_type")
            scopes = _unique((first(params, "scope") or "").split())
            if not scopes or not all(client.allows(scope) for scope in scopes):
                raise error_page_reply("Error: invalid_scope : Invalid scope for client")
            challenge = first(params, "code_challenge")
            if challenge is None:
                if client.kind is Kind.PKCE:
                    raise error_page_reply("Error: invalid_request : code challenge required")
            elif first(params, "code_challenge_method") != "S256":
                raise error_page_reply("Error: invalid_request : Transform algorithm not supported")
            elif not _PKCE_VALUE.fullmatch(challenge):
                raise error_page_reply("Error: invalid_request : Invalid code_challenge")
            now = self.now()
            self._pending = {
                rid: p
                for rid, p in self._pending.items()
                if now - p.created < model.CONSENT_LIFETIME
            }
            request_id = secrets.token_urlsafe(24)
            self._pending[request_id] = PendingConsent(
                client.client_id,
                redirect_uri,
                tuple(scopes),
                first(params, "state"),
                challenge,
                now,
            )
            return self._consent_page(request_id, {self.tenants[0].tenant_id})

    def _consent_page(
        self, request_id: str, checked: set[str], message: str | None = None
    ) -> Reply:
        pending = self._pending[request_id]
        page = consent_page(
            app_name=self._clients[pending.client_id].name,
            scopes=pending.scopes,
            tenants=self.tenants,
            checked=checked,
            request_id=request_id,
            user_email=self.user.email,
            message=message,
        )
        return html_reply(400 if message else 200, page)

    def decide(self, form: Form) -> Reply:
        with self._lock:
            request_id = first(form, "request_id") or ""
            pending = self._pending.get(request_id)
            if pending is None or self.now() - pending.created >= model.CONSENT_LIFETIME:
                raise error_page_reply(
                    "Error: invalid_request : This request has expired or was already answered", 400
                )
            decision = first(form, "decision")
            if decision == "cancel":
                del self._pending[request_id]
                return self._redirect_back(
                    pending,
                    [
                        ("error", "access_denied"),
                        ("error_description", "The user cancelled consent"),
                        ("state", pending.state),
                    ],
                )
            if decision != "allow":
                raise error_page_reply(
                    "Error: invalid_request : Choose Allow access or Cancel", 400
                )
            chosen = _unique(form.get("tenant", []))
            known = [tid for tid in chosen if tid in self._tenant_index]
            if not chosen or len(known) != len(chosen):
                return self._consent_page(
                    request_id,
                    set(known),
                    "Choose at least one organisation from the list.",
                )
            del self._pending[request_id]
            auth_event_id = self._record_consent(pending.client_id, known)
            now = self.now()
            self._codes = {
                c: r for c, r in self._codes.items() if now - r.issued <= model.CODE_LIFETIME
            }
            code = secrets.token_urlsafe(32)
            self._codes[code] = AuthCode(
                pending.client_id,
                pending.redirect_uri,
                pending.scopes,
                pending.code_challenge,
                auth_event_id,
                now,
            )
            return self._redirect_back(
                pending,
                [
                    ("code", code),
                    ("scope", " ".join(pending.scopes)),
                    ("state", pending.state),
                    ("session_state", f"{secrets.token_urlsafe(32)}.{secrets.token_hex(16)}"),
                ],
            )

    def _record_consent(self, client_id: str, tenant_ids: list[str]) -> str:
        """Connect each chosen organisation; one authEventId is shared by this consent."""
        auth_event_id = str(uuid.uuid4())
        now = self.now()
        connections = self._connections.setdefault(client_id, {})
        for tenant_id in tenant_ids:
            existing = connections.get(tenant_id)
            if existing is None:
                connections[tenant_id] = ConnectionRecord(
                    str(uuid.uuid4()), self._tenant_index[tenant_id], auth_event_id, now, now
                )
            else:
                existing.auth_event_id = auth_event_id
                existing.updated = now
        return auth_event_id

    @staticmethod
    def _redirect_back(pending: PendingConsent, params: list[tuple[str, str | None]]) -> Reply:
        query = urlencode([(k, v) for k, v in params if v is not None], quote_via=quote)
        joiner = "&" if "?" in pending.redirect_uri else "?"
        return redirect(pending.redirect_uri + joiner + query)

    # -- identity.xero.com -----------------------------------------------------------------

    def discovery(self, base_url: str) -> Reply:
        return json_reply(
            200,
            {
                "issuer": model.IDENTITY_ISSUER,
                "authorization_endpoint": f"{base_url}/identity/connect/authorize",
                "token_endpoint": f"{base_url}/connect/token",
                "revocation_endpoint": f"{base_url}/connect/revocation",
                "jwks_uri": f"{base_url}/.well-known/openid-configuration/jwks",
                "scopes_supported": sorted(model.KNOWN_SCOPES),
                "response_types_supported": ["code"],
                "response_modes_supported": ["query"],
                "grant_types_supported": [
                    "authorization_code",
                    "refresh_token",
                    "client_credentials",
                ],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
            },
        )

    def jwks(self) -> Reply:
        # The tokens carry fake signatures, so there is no key to publish.
        return json_reply(200, {"keys": []})

    def _authenticate(self, authorization: str | None, form: Form) -> DemoClient:
        """Client authentication by HTTP Basic or by client_id/client_secret in the body."""
        body_id = first(form, "client_id")
        client_id, secret = body_id, first(form, "client_secret")
        if authorization and authorization[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise oauth_error("invalid_client") from None
            basic_id, sep, basic_secret = decoded.partition(":")
            if not sep or (body_id is not None and body_id != unquote_plus(basic_id)):
                raise oauth_error("invalid_client")
            client_id, secret = unquote_plus(basic_id), unquote_plus(basic_secret)
        client = self._clients.get(client_id or "")
        if client is None:
            raise oauth_error("invalid_client")
        if client.client_secret is not None and not (
            secret is not None
            and hmac.compare_digest(secret.encode(), client.client_secret.encode())
        ):
            raise oauth_error("invalid_client")
        return client

    def _invalid_grant(self) -> Refused:
        self._counts["invalid_grants"] += 1
        return oauth_error("invalid_grant")

    def token(self, authorization: str | None, form: Form) -> Reply:
        with self._lock:
            self._counts["token_requests"] += 1
            client = self._authenticate(authorization, form)
            grant_type = first(form, "grant_type")
            if grant_type == "authorization_code":
                return self._exchange_code(client, form)
            if grant_type == "refresh_token":
                return self._refresh_grant(client, form)
            if grant_type == "client_credentials":
                return self._client_credentials(client, form)
            raise oauth_error("unsupported_grant_type")

    def _exchange_code(self, client: DemoClient, form: Form) -> Reply:
        if client.kind is Kind.CUSTOM:
            raise oauth_error("unauthorized_client")
        # Like IdentityServer, a code is spent by any attempt to redeem it, even a failed one.
        record = self._codes.pop(first(form, "code") or "", None)
        if (
            record is None
            or record.client_id != client.client_id
            or self.now() - record.issued > model.CODE_LIFETIME
            or first(form, "redirect_uri") != record.redirect_uri
        ):
            raise self._invalid_grant()
        verifier = first(form, "code_verifier")
        if record.code_challenge is None:
            if verifier is not None:
                raise self._invalid_grant()
        elif (
            verifier is None
            or not _PKCE_VALUE.fullmatch(verifier)
            or not hmac.compare_digest(_s256(verifier), record.code_challenge)
        ):
            raise self._invalid_grant()
        grant = Grant(str(uuid.uuid4()), client.client_id, record.scopes, record.auth_event_id)
        self._grants[grant.grant_id] = grant
        self._counts["code_exchanges"] += 1
        return self._issue(client, grant, record.scopes, grant.auth_event_id)

    def _refresh_grant(self, client: DemoClient, form: Form) -> Reply:
        if client.kind is Kind.CUSTOM:
            raise oauth_error("unauthorized_client")
        record = self._refresh.get(first(form, "refresh_token") or "")
        now = self.now()
        grant = self._grants[record.grant_id] if record else None
        if (
            record is None
            or grant is None
            or grant.client_id != client.client_id
            or grant.revoked
            or now - record.issued > model.REFRESH_TOKEN_LIFETIME
            or (record.superseded is not None and now - record.superseded > model.REFRESH_GRACE)
        ):
            raise self._invalid_grant()
        scopes = grant.scopes
        requested = first(form, "scope")
        if requested:
            narrowed = tuple(_unique(requested.split()))
            if not set(narrowed) <= set(grant.scopes):
                raise oauth_error("invalid_scope")
            scopes = narrowed
        self._counts["refreshes"] += 1
        if record.superseded is not None:
            self._counts["grace_refreshes"] += 1
        return self._issue(client, grant, scopes, grant.auth_event_id)

    def _client_credentials(self, client: DemoClient, form: Form) -> Reply:
        if client.kind is not Kind.CUSTOM:
            # What Xero answers a Web app that asks for client credentials (issue 11).
            raise oauth_error(
                "invalid_scope", description="Client credentials scope validation failed"
            )
        requested = first(form, "scope")
        if requested:
            scopes = tuple(_unique(requested.split()))
            if any(s in model.BASE_SCOPES or not client.allows(s) for s in scopes):
                raise oauth_error("invalid_scope")
        else:
            scopes = default_scopes(Kind.CUSTOM, legacy=not client.granular)
        self._counts["client_credentials"] += 1
        return self._issue(client, None, scopes, self._custom_events[client.client_id])

    def _issue(
        self, client: DemoClient, grant: Grant | None, scopes: tuple[str, ...], auth_event_id: str
    ) -> Reply:
        """A token set; with a grant that has offline_access, a new current refresh token."""
        now = self.now()
        expires = now + model.ACCESS_TOKEN_LIFETIME
        access_token = _fake_jwt(
            {
                "nbf": int(now),
                "exp": int(expires),
                "iss": model.IDENTITY_ISSUER,
                "aud": model.RESOURCE_AUDIENCE,
                "client_id": client.client_id,
                "sub": self.user.subject,
                "auth_time": int(now),
                "xero_userid": self.user.xero_userid,
                "global_session_id": self._session_id,
                "sid": self._session_id,
                "jti": uuid.uuid4().hex.upper(),
                "authentication_event_id": auth_event_id,
                "scope": list(scopes),
                "amr": ["pwd"],
                "idp": "local",
            }
        )
        grant_id = grant.grant_id if grant else None
        self._access[access_token] = AccessRecord(client.client_id, grant_id, scopes, expires)
        body: dict[str, Any] = {}
        if "openid" in scopes:
            body["id_token"] = self._id_token(client, scopes, access_token, now)
        body.update(
            access_token=access_token,
            expires_in=model.ACCESS_TOKEN_LIFETIME,
            token_type="Bearer",
        )
        if grant is not None and "offline_access" in grant.scopes:
            body["refresh_token"] = self._rotate(grant, now)
        body["scope"] = " ".join(scopes)
        return json_reply(200, body, NO_STORE)

    def _rotate(self, grant: Grant, now: float) -> str:
        previous = self._refresh.get(grant.current_refresh_token or "")
        if previous is not None and previous.superseded is None:
            previous.superseded = now
        token = secrets.token_hex(32)
        self._refresh[token] = RefreshRecord(grant.grant_id, now)
        grant.current_refresh_token = token
        self._issued += 1
        grant.issue_order = self._issued
        return token

    def _id_token(
        self, client: DemoClient, scopes: tuple[str, ...], access_token: str, now: float
    ) -> str:
        digest = hashlib.sha256(access_token.encode()).digest()
        claims: dict[str, Any] = {
            "nbf": int(now),
            "exp": int(now) + 300,
            "iss": model.IDENTITY_ISSUER,
            "aud": client.client_id,
            "iat": int(now),
            "at_hash": _b64url(digest[:16]),
            "sid": self._session_id,
            "sub": self.user.subject,
            "auth_time": int(now),
            "idp": "local",
            "xero_userid": self.user.xero_userid,
            "global_session_id": self._session_id,
            "amr": ["pwd"],
        }
        if "email" in scopes:
            claims.update(preferred_username=self.user.email, email=self.user.email)
        if "profile" in scopes:
            claims.update(given_name=self.user.given_name, family_name=self.user.family_name)
        return _fake_jwt(claims)

    def revoke(self, authorization: str | None, form: Form) -> Reply:
        """Revoking a refresh token ends its grant and removes the user's connections to the app.

        As in IdentityServer, unknown tokens and other clients' tokens get 200 and change nothing.
        """
        with self._lock:
            client = self._authenticate(authorization, form)
            token = first(form, "token")
            if not token:
                raise oauth_error("invalid_request")
            record = self._refresh.get(token)
            grant = self._grants[record.grant_id] if record else None
            if grant is not None and grant.client_id == client.client_id and not grant.revoked:
                grant.revoked = True
                self._access = {
                    t: a for t, a in self._access.items() if a.grant_id != grant.grant_id
                }
                self._connections.pop(client.client_id, None)
                self._counts["revocations"] += 1
            return Reply(200, b"", dict(NO_STORE))

    # -- api.xero.com ----------------------------------------------------------------------

    def _bearer(self, authorization: str | None) -> AccessRecord:
        """The access token's record, found by lookup: the claims are never trusted."""
        unauthorized = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        token = ""
        if authorization and authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
        record = self._access.get(token)
        if record is None:
            raise problem(401, "Unauthorized", "AuthenticationUnsuccessful", unauthorized)
        if self.now() >= record.expires:
            expired_at = datetime.fromtimestamp(record.expires, UTC).strftime("%m/%d/%Y %H:%M:%S")
            raise problem(
                401, "Unauthorized", f"TokenExpired: token expired at {expired_at}", unauthorized
            )
        return record

    def list_connections(self, authorization: str | None, params: Form) -> Reply:
        with self._lock:
            self._counts["api_calls"] += 1
            record = self._bearer(authorization)
            wanted = first(params, "authEventId")
            connections = self._connections.get(record.client_id, {}).values()
            return json_reply(
                200,
                [
                    {
                        "id": c.connection_id,
                        "authEventId": c.auth_event_id,
                        "tenantId": c.tenant.tenant_id,
                        "tenantType": c.tenant.tenant_type,
                        "tenantName": c.tenant.name,
                        "createdDateUtc": xero_date(c.created),
                        "updatedDateUtc": xero_date(c.updated),
                    }
                    for c in connections
                    if wanted is None or c.auth_event_id == wanted.lower()
                ],
            )

    def delete_connection(self, authorization: str | None, connection_id: str) -> Reply:
        with self._lock:
            self._counts["api_calls"] += 1
            record = self._bearer(authorization)
            connections = self._connections.get(record.client_id, {})
            for tenant_id, connection in connections.items():
                if connection.connection_id == connection_id.lower():
                    del connections[tenant_id]
                    return Reply(204)
            raise problem(404, "Not Found", "Connection not found", extensions=False)

    def organisation(self, authorization: str | None, tenant_header: str | None) -> Reply:
        with self._lock:
            self._counts["api_calls"] += 1
            record = self._bearer(authorization)
            if not model.SETTINGS_SCOPES & set(record.scopes):
                raise problem(
                    401,
                    "Unauthorized",
                    "AuthorizationUnsuccessful",
                    {"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
                )
            connection = self._tenant_connection(record.client_id, tenant_header)
            # The accounting API serves organisations only, never a practice.
            if connection is None or connection.tenant.tenant_type != "ORGANISATION":
                raise problem(403, "Forbidden", "AuthenticationUnsuccessful", extensions=False)
            tenant = connection.tenant
            headers = self._count_call(record.client_id, tenant.tenant_id)
            now = self.now()
            return json_reply(
                200,
                {
                    "Id": str(uuid.uuid4()),
                    "Status": "OK",
                    "ProviderName": self._clients[record.client_id].name,
                    "DateTimeUTC": f"/Date({int(now * 1000)})/",
                    "Organisations": [_organisation_json(tenant)],
                },
                headers,
            )

    def _tenant_connection(
        self, client_id: str, tenant_header: str | None
    ) -> ConnectionRecord | None:
        connections = self._connections.get(client_id, {})
        if tenant_header:
            return connections.get(tenant_header.strip().lower())
        # Custom connections reach exactly one organisation, so they may leave the header out.
        if self._clients[client_id].kind is Kind.CUSTOM and len(connections) == 1:
            return next(iter(connections.values()))
        return None

    def _count_call(self, client_id: str, tenant_id: str) -> dict[str, str]:
        """Apply the per-tenant minute and day limits and the app-wide minute limit."""
        now = self.now()
        window = self._rates.setdefault((client_id, tenant_id), RateWindow())
        app = self._app_minute.setdefault(client_id, deque())
        for calls in (window.minute, app):
            while calls and calls[0] <= now - 60:
                calls.popleft()
        if window.day_start is None or now - window.day_start >= 86400:
            window.day_start, window.day_count = now, 0

        def headers() -> dict[str, str]:
            return {
                "X-DayLimit-Remaining": str(max(DAY_LIMIT - window.day_count, 0)),
                "X-MinLimit-Remaining": str(max(MINUTE_LIMIT - len(window.minute), 0)),
                "X-AppMinLimit-Remaining": str(max(APP_MINUTE_LIMIT - len(app), 0)),
            }

        exceeded: tuple[str, float] | None = None
        if window.day_count >= DAY_LIMIT:
            exceeded = ("day", window.day_start + 86400 - now)
        elif len(window.minute) >= MINUTE_LIMIT:
            exceeded = ("minute", window.minute[0] + 60 - now)
        elif len(app) >= APP_MINUTE_LIMIT:
            exceeded = ("appminute", app[0] + 60 - now)
        if exceeded is not None:
            self._counts["rate_limited"] += 1
            name, wait = exceeded
            raise Refused(rate_limited(name, max(1, math.ceil(wait)), headers()))
        window.minute.append(now)
        app.append(now)
        window.day_count += 1
        return headers()


def _organisation_json(tenant: DemoTenant) -> dict[str, Any]:
    return {
        "Name": tenant.name,
        "LegalName": tenant.name,
        "OrganisationID": tenant.tenant_id,
        "ShortCode": tenant.short_code,
        "CountryCode": tenant.country_code,
        "BaseCurrency": tenant.base_currency,
        "IsDemoCompany": tenant.is_demo,
        "OrganisationStatus": "ACTIVE",
        "OrganisationType": "COMPANY",
        "Version": {"GB": "UK"}.get(tenant.country_code, tenant.country_code),
        "PaysTax": True,
        "Edition": "BUSINESS",
        "Class": "STANDARD",
    }
