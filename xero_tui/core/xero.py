"""Xero's identity and API calls, with Xero's error answers turned into typed errors."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import httpx

from xero_tui.core.endpoints import Endpoints
from xero_tui.core.errors import (
    ApiError,
    NeedsReconnect,
    OAuthError,
    TenantNotConnected,
    TokenRejected,
    UsageError,
    clean_text,
)
from xero_tui.core.http import HttpSettings, new_client, send
from xero_tui.core.models import MYAPPS_URL, Kind, Organisation, Tenant, TokenSet

# Ids from Xero (tenants, connections, authentication events) are dashed UUIDs.
_UUID = re.compile(r"[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}")
# The tenant types Xero's spec and samples show; a new plain upper-case word is let through, as
# it cannot change how anything shows, while anything else refuses the answer.
TENANT_TYPES = frozenset({"ORGANISATION", "PRACTICE", "PRACTICEMANAGER", "WORKFLOWMAX"})
_TYPE_WORD = re.compile(r"[A-Z][A-Z0-9_]{0,39}")
# Tokens are printable ASCII without spaces. Xero's JWTs are 1-2 KB; this leaves room to grow.
MAX_TOKEN_LENGTH = 16 * 1024
_TOKEN = re.compile(rf"[\x21-\x7e]{{1,{MAX_TOKEN_LENGTH}}}")
_SCOPE = re.compile(r"[\x21-\x7e]{1,200}")
_REFUSED = (
    "; xero-tui refused the answer. Try again, and if it persists, check what the "
    "XERO_TUI_*_URL variables point at."
)

# Xero documents 30 minutes for an access token.
ACCESS_TOKEN_LIFETIME = 1800.0
# Longer than Xero has ever issued: a bigger number would keep a dead token "fresh" for days.
MAX_ACCESS_TOKEN_LIFETIME = 86400.0

_GENERIC: dict[str, str] = {
    "invalid_client": (
        "Xero rejected the client ID or client secret. Copy both again from " + MYAPPS_URL + " "
        "(a lost secret cannot be shown again: generate a new one there)."
    ),
    "invalid_scope": (
        "Xero rejected the requested scopes. Apps created from 2 March 2026 need the granular "
        "scopes (the default); for an app created before then, switch on legacy scopes."
    ),
    "unauthorized_client": (
        f"Xero does not allow this app to sign in this way. Check the app type at {MYAPPS_URL}: "
        f"a {Kind.WEB.label} needs a secret, the “{Kind.PKCE.label}” type has none, and a "
        f"{Kind.CUSTOM.label} uses no browser."
    ),
    "access_denied": "You cancelled in Xero, so no connection was made. Try again when ready.",
    "unsupported_grant_type": "Xero does not support this grant type for this app.",
    "invalid_request": "Xero rejected the request as malformed.",
}

# Where the same code means something else for one kind of request.
_BY_CONTEXT: dict[tuple[str, str], str] = {
    # Xero answers a Web (or PKCE) app that asks for client credentials with invalid_scope
    # ("Client credentials scope validation failed"): not a granular-scope problem.
    ("client_credentials", "invalid_scope"): (
        f"Xero refused the {Kind.CUSTOM.label}'s scopes: the app is probably not a "
        f"{Kind.CUSTOM.label} (Xero answers a {Kind.WEB.label} this way), or it may not use a "
        f"scope asked for. Check the app's type and scopes at {MYAPPS_URL}."
    ),
}

_INVALID_GRANT = {
    "code": (
        "Xero rejected the authorization code (it expired, was already used, or the redirect "
        "URI or PKCE verifier did not match). Start the consent again."
    ),
    "refresh": (
        "Xero no longer accepts this connection's refresh token (unused for 60 days, revoked, "
        "or replaced by another copy). Reconnect to sign in again."
    ),
    "client_credentials": "Xero rejected the custom connection's credentials.",
}


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def oauth_error(error: str, description: str | None, context: str) -> OAuthError:
    """The typed error for an OAuth `error` code, with a sentence that says what to do."""
    error = clean_text(error, 80)
    description = clean_text(description) if description else None
    if error == "invalid_grant":
        return NeedsReconnect(
            _INVALID_GRANT.get(context, _INVALID_GRANT["refresh"]), error, description
        )
    message = _BY_CONTEXT.get((context, error)) or _GENERIC.get(error)
    if message is None:
        message = f"Xero refused the request: {error}" + (
            f" ({description})." if description else "."
        )
    return OAuthError(message, error, description)


def _lifetime(expires_in: object) -> float:
    """`expires_in` in seconds, or Xero's documented lifetime when it is missing or not usable.

    Failing here instead would lose the tokens of a refresh, and with them the rotated refresh
    token; a wrong lifetime costs at most one rejected call and a refresh.
    """
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float | str):
        return ACCESS_TOKEN_LIFETIME
    try:
        seconds = float(expires_in)
    except (ValueError, OverflowError):
        return ACCESS_TOKEN_LIFETIME
    if not math.isfinite(seconds) or seconds <= 0:
        return ACCESS_TOKEN_LIFETIME
    return min(seconds, MAX_ACCESS_TOKEN_LIFETIME)


def is_uuid(value: object) -> bool:
    return isinstance(value, str) and _UUID.fullmatch(value) is not None


def _refuse(what: str) -> OAuthError:
    return OAuthError(f"Xero's {what}{_REFUSED}", "invalid_response")


def _token_field(body: Mapping[str, Any], key: str) -> str | None:
    """A token from the answer: printable ASCII of bounded length, or the answer is refused."""
    value = body.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise _refuse(
            f"token answer carried a {key} that is not printable ASCII of at most "
            f"{MAX_TOKEN_LENGTH} characters"
        )
    return value


def tokens_from(body: Any, now: float | None = None) -> TokenSet:
    """The token set of a token answer, each field checked: a malformed token or scope refuses
    the whole answer (OAuthError `invalid_response`) rather than reach a terminal or header."""
    if not isinstance(body, Mapping) or not isinstance(body.get("access_token"), str):
        raise OAuthError("Xero's token answer had no access token.", "invalid_response")
    access = _token_field(body, "access_token")
    if access is None:
        raise OAuthError("Xero's token answer had no access token.", "invalid_response")
    refresh = _token_field(body, "refresh_token")
    id_token = _token_field(body, "id_token")
    scope = body.get("scope", "")
    scopes = tuple(scope.split()) if isinstance(scope, str) else ()
    if not all(_SCOPE.fullmatch(item) for item in scopes):
        raise _refuse("token answer named a scope that is not printable ASCII")
    return TokenSet(
        access_token=access,
        expires_at=(time.time() if now is None else now) + _lifetime(body.get("expires_in")),
        refresh_token=refresh,
        scopes=scopes,
        id_token=id_token,
    )


def _tenant_type(value: object) -> str:
    if value is None or value == "":
        return "ORGANISATION"
    if isinstance(value, str) and (value in TENANT_TYPES or _TYPE_WORD.fullmatch(value)):
        return value
    raise _refuse("connections answer had a tenantType that is not a plain word like ORGANISATION")


def tenant_from(item: Mapping[str, Any]) -> Tenant:
    """One `/connections` entry, every field checked: ids UUID-shaped, the type a plain word, the
    name stripped of what would change how a terminal shows it. Raises OAuthError otherwise."""
    for key in ("id", "tenantId"):
        if not is_uuid(item.get(key)):
            raise _refuse(f"connections answer had a {key} that is not an id")
    event = item.get("authEventId")
    if event not in (None, "") and not is_uuid(event):
        raise _refuse("connections answer had an authEventId that is not an id")
    name = item.get("tenantName")
    shown = clean_text(name) if isinstance(name, str) else ""
    return Tenant(
        connection_id=str(item["id"]),
        tenant_id=str(item["tenantId"]),
        tenant_name=shown.strip() or str(item["tenantId"]),
        tenant_type=_tenant_type(item.get("tenantType")),
        auth_event_id=str(event) if event else None,
        created=_parse_time(item.get("createdDateUtc")),
        updated=_parse_time(item.get("updatedDateUtc")),
    )


class XeroClient:
    """One HTTP client for the identity server and the API; use as an async context manager."""

    def __init__(
        self,
        endpoints: Endpoints | None = None,
        settings: HttpSettings | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.endpoints = endpoints or Endpoints.from_env()
        self.settings = settings or HttpSettings.from_env()
        self._http = http or new_client(self.settings)

    async def __aenter__(self) -> XeroClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _token_request(
        self,
        data: dict[str, str],
        client_id: str,
        client_secret: str | None,
        context: str,
    ) -> TokenSet:
        auth: httpx.BasicAuth | None = None
        if client_secret is not None:
            auth = httpx.BasicAuth(client_id, client_secret)
        else:
            data = {**data, "client_id": client_id}
        response = await send(
            self._http, "POST", self.endpoints.token_url, self.settings, data=data, auth=auth
        )
        body = _json(response)
        if response.status_code != 200:
            raise self._error(response, body, context)
        return tokens_from(body)

    def _error(self, response: httpx.Response, body: Any, context: str) -> Exception:
        if isinstance(body, Mapping) and isinstance(body.get("error"), str):
            description = body.get("error_description")
            return oauth_error(
                body["error"], description if isinstance(description, str) else None, context
            )
        return ApiError(
            f"Xero answered {response.status_code} without an explanation.", response.status_code
        )

    async def exchange_code(
        self,
        client_id: str,
        client_secret: str | None,
        code: str,
        redirect_uri: str,
        code_verifier: str | None,
    ) -> TokenSet:
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier is not None:
            data["code_verifier"] = code_verifier
        tokens = await self._token_request(data, client_id, client_secret, "code")
        if tokens.refresh_token is None:
            raise OAuthError(
                "Xero returned no refresh token: the scopes must include offline_access.",
                "no_refresh_token",
            )
        return tokens

    async def refresh(
        self, client_id: str, client_secret: str | None, refresh_token: str
    ) -> TokenSet:
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        tokens = await self._token_request(data, client_id, client_secret, "refresh")
        if tokens.refresh_token is None:
            raise OAuthError(
                "Xero's refresh answer had no new refresh token; the old one is kept.",
                "no_refresh_token",
            )
        return tokens

    async def client_credentials(
        self, client_id: str, client_secret: str, scopes: tuple[str, ...]
    ) -> TokenSet:
        data = {"grant_type": "client_credentials"}
        if scopes:
            data["scope"] = " ".join(scopes)
        return await self._token_request(data, client_id, client_secret, "client_credentials")

    async def revoke(self, client_id: str, client_secret: str | None, refresh_token: str) -> None:
        data = {"token": refresh_token}
        auth: httpx.BasicAuth | None = None
        if client_secret is not None:
            auth = httpx.BasicAuth(client_id, client_secret)
        else:
            data["client_id"] = client_id
        response = await send(
            self._http, "POST", self.endpoints.revocation_url, self.settings, data=data, auth=auth
        )
        if response.status_code != 200:
            raise self._error(response, _json(response), "refresh")

    def _api_error(self, response: httpx.Response, tenant_id: str | None = None) -> ApiError:
        body = _json(response)
        detail = body.get("Detail") if isinstance(body, Mapping) else None
        detail = clean_text(detail) if isinstance(detail, str) else None
        status = response.status_code
        if status == 403:
            return TenantNotConnected(
                "Xero refused access to this organisation (AuthenticationUnsuccessful): it was "
                "disconnected from the app, the user's role changed, or the organisation is gone. "
                "Reconnect to choose it again.",
                status,
                detail,
            )
        if status == 401:
            challenge = response.headers.get("WWW-Authenticate", "")
            if "insufficient_scope" in challenge:
                return ApiError(
                    "The connection lacks a scope this call needs (accounting.settings). "
                    "Reconnect with the right scopes.",
                    status,
                    detail,
                )
            return TokenRejected(
                "Xero did not accept the access token" + (f" ({detail})" if detail else "") + ".",
                status,
                detail,
            )
        text = f" ({detail})" if detail else ""
        return ApiError(f"Xero answered {status}{text}.", status, detail)

    async def connections(
        self, access_token: str, auth_event_id: str | None = None
    ) -> list[Tenant]:
        if auth_event_id and not is_uuid(auth_event_id):
            raise _refuse("access token named an authentication event that is not an id")
        params = {"authEventId": auth_event_id} if auth_event_id else None
        response = await send(
            self._http,
            "GET",
            self.endpoints.connections_url,
            self.settings,
            params=params,
            headers={"Authorization": f"Bearer {access_token}"},
        )
        if response.status_code != 200:
            raise self._api_error(response)
        body = _json(response)
        if not isinstance(body, list):
            raise ApiError("Xero's connections answer was not a list.", response.status_code)
        return [
            tenant_from(item)
            for item in body
            if isinstance(item, Mapping) and item.get("tenantId") and item.get("id")
        ]

    async def delete_connection(self, access_token: str, connection_id: str) -> bool:
        """Remove an organisation's connection at Xero; False when Xero no longer had it."""
        if not is_uuid(connection_id):
            raise UsageError(
                "A connection id from Xero (a UUID) is needed to disconnect at Xero; reconnect "
                "to record it."
            )
        response = await send(
            self._http,
            "DELETE",
            f"{self.endpoints.connections_url}/{connection_id}",
            self.settings,
            headers={"Authorization": f"Bearer {access_token}"},
        )
        if response.status_code in (200, 204):
            return True
        if response.status_code == 404:
            return False
        raise self._api_error(response)

    async def organisation(self, access_token: str, tenant_id: str | None) -> Organisation:
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        if tenant_id:
            if not is_uuid(tenant_id):
                raise UsageError(
                    f"The organisation id {clean_text(tenant_id, 80)!r} is not an id from Xero "
                    "(a UUID); reconnect to choose the organisation again."
                )
            headers["xero-tenant-id"] = tenant_id
        response = await send(
            self._http, "GET", self.endpoints.organisation_url, self.settings, headers=headers
        )
        if response.status_code != 200:
            raise self._api_error(response, tenant_id)
        body = _json(response)
        orgs = body.get("Organisations") if isinstance(body, Mapping) else None
        if not isinstance(orgs, list) or not orgs or not isinstance(orgs[0], Mapping):
            raise ApiError("Xero's Organisation answer was empty.", response.status_code)
        org = orgs[0]
        if org.get("OrganisationID") not in (None, "") and not is_uuid(org.get("OrganisationID")):
            raise _refuse("Organisation answer had an OrganisationID that is not an id")

        def text(key: str) -> str | None:
            value = org.get(key)
            return clean_text(str(value)) if value not in (None, "") else None

        return Organisation(
            organisation_id=text("OrganisationID") or (tenant_id or ""),
            name=text("Name") or "",
            short_code=text("ShortCode"),
            country_code=text("CountryCode"),
            base_currency=text("BaseCurrency"),
            is_demo=bool(org.get("IsDemoCompany")),
            status=text("OrganisationStatus"),
        )
