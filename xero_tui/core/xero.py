"""Xero's identity and API calls, with Xero's error answers turned into typed errors."""

from __future__ import annotations

import json
import math
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
    message = _GENERIC.get(error)
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


def tokens_from(body: Any, now: float | None = None) -> TokenSet:
    if not isinstance(body, Mapping) or not isinstance(body.get("access_token"), str):
        raise OAuthError("Xero's token answer had no access token.", "invalid_response")
    scope = body.get("scope", "")
    refresh = body.get("refresh_token")
    id_token = body.get("id_token")
    return TokenSet(
        access_token=body["access_token"],
        expires_at=(time.time() if now is None else now) + _lifetime(body.get("expires_in")),
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        scopes=tuple(scope.split()) if isinstance(scope, str) else (),
        id_token=id_token if isinstance(id_token, str) else None,
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
        tenants = []
        for item in body:
            if not isinstance(item, Mapping) or not item.get("tenantId") or not item.get("id"):
                continue
            tenants.append(
                Tenant(
                    connection_id=str(item["id"]),
                    tenant_id=str(item["tenantId"]),
                    tenant_name=clean_text(str(item.get("tenantName") or item["tenantId"])),
                    tenant_type=str(item.get("tenantType") or "ORGANISATION"),
                    auth_event_id=str(item["authEventId"]) if item.get("authEventId") else None,
                    created=_parse_time(item.get("createdDateUtc")),
                    updated=_parse_time(item.get("updatedDateUtc")),
                )
            )
        return tenants

    async def delete_connection(self, access_token: str, connection_id: str) -> bool:
        """Remove an organisation's connection at Xero; False when Xero no longer had it."""
        if not connection_id or "/" in connection_id:
            raise UsageError("A connection id is needed to disconnect at Xero.")
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
