"""Xero's own SDK, `xero-python`, on xero-tui's saved connections (`pip install 'xero-tui[sdk]'`).

    from xero_python.accounting import AccountingApi
    from xero_tui import sdk

    client = sdk.api_client("Acme sync")
    AccountingApi(client).get_organisations(sdk.tenant_id("Acme sync"))

The SDK refreshes on its own when it holds a refresh token, and two keepers of one rotating
refresh token break each other. So it is never given one: each request takes its access token
from `api.access_token` (the stored one, or a single-flight refresh under the grant lock, as the
CLI does), the SDK's own expiry check is left nothing to act on, and when Xero still refuses
the token (a 401) the refused token is refreshed through xero-tui and the request sent once
more. The SDK's own refresh, client-credentials and revoke calls go through xero-tui too, or are
refused with a sentence. Requests go to xero-tui's Xero endpoints (`XERO_TUI_API_URL` and
`XERO_TUI_IDENTITY_URL` included), with the same timeouts as xero-tui's own calls.
"""

from __future__ import annotations

import time
from typing import Any

from xero_tui import api
from xero_tui.core.context import Context
from xero_tui.core.endpoints import API_URL, IDENTITY_URL
from xero_tui.core.errors import UsageError
from xero_tui.core.http import HttpSettings

try:
    from xero_python.api_client import ApiClient, Configuration
    from xero_python.api_client.oauth2 import OAuth2Token
    from xero_python.exceptions import HTTPStatusException
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "xero_tui.sdk needs Xero's SDK: pip install 'xero-tui[sdk]' (or xero-python)."
    ) from exc

__all__ = ["XeroTuiApiClient", "api_client", "tenant_id"]


def tenant_id(name: str) -> str:
    """The organisation (`xero-tenant-id`) of the saved connection `name`; no keyring call."""
    return Context().connection(name).tenant_id


def api_client(name: str) -> XeroTuiApiClient:
    """An `ApiClient` for the saved connection `name` whose tokens are xero-tui's."""
    return XeroTuiApiClient(name)


class XeroTuiApiClient(ApiClient):  # type: ignore[misc]
    """xero-python's `ApiClient`, with tokens from xero-tui's store and refresh lock.

    `tenant_id` is the connection's organisation. The client may be shared between threads.
    """

    def __init__(self, name: str) -> None:
        ctx = Context()
        conn = ctx.connection(name)
        self.connection_name = name
        self.tenant_id = conn.tenant_id
        self._scopes = list(conn.scopes)
        self._hosts = (
            (API_URL, ctx.endpoints.api_url),
            (IDENTITY_URL, ctx.endpoints.identity_url),
        )
        self._timeout = _timeouts()
        # No client secret and, from the getter, no refresh token: the SDK can never refresh.
        # With no margin of its own its expiry check defers to ours, which keeps a minute.
        token = OAuth2Token(client_id=conn.client_id, expiration_buffer=0)
        super().__init__(
            Configuration(oauth2_token=token),
            oauth2_token_getter=self._token_for_sdk,
            oauth2_token_saver=self._refuse_sdk_tokens,
        )

    # What the SDK reads and writes --------------------------------------------------------------

    def _token_for_sdk(self, *, force: bool = False) -> dict[str, Any]:
        return self._as_sdk_token(api.access_token(self.connection_name, force=force))

    def _as_sdk_token(self, token: api.Token) -> dict[str, Any]:
        return {
            "access_token": token.access_token,
            "token_type": "Bearer",
            "expires_at": token.expires_at,
            "expires_in": max(0, int(token.expires_at - time.time())),
            "scope": list(self._scopes),
            "refresh_token": None,
            "id_token": None,
        }

    def _refuse_sdk_tokens(self, token: dict[str, Any]) -> None:
        # Reached only when code outside the SDK's own flows sets a token: one carrying a refresh
        # token would make two keepers of one grant. The caller still holds it; it is not lost.
        if token.get("refresh_token"):
            raise UsageError(
                f"xero-tui keeps the refresh token of {self.connection_name!r}; a token set "
                "from elsewhere is not taken. Save it with `xero-tui connect` instead."
            )

    def refresh_oauth2_token(self) -> dict[str, Any]:
        """Force a refresh, through xero-tui's single-flight refresh, and return the token."""
        return self._token_for_sdk(force=True)

    def get_client_credentials_token(self, app_store_billing: bool = False) -> dict[str, Any]:
        """A new token for a custom connection, through xero-tui (which holds its secret)."""
        if app_store_billing:
            raise UsageError("xero-tui does not ask Xero for the marketplace.billing scope.")
        return self._token_for_sdk(force=True)

    def revoke_oauth2_token(self) -> dict[str, Any]:
        raise UsageError(
            f"xero-tui keeps the refresh token of {self.connection_name!r}; remove the "
            f"connection with `xero-tui remove {self.connection_name!r}` instead."
        )

    # Every request the SDK sends ------------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        query_params: Any = None,
        headers: dict[str, str] | None = None,
        post_params: Any = None,
        body: Any = None,
        _preload_content: bool = True,
        _request_timeout: Any = None,
    ) -> Any:
        def send() -> Any:
            return super(XeroTuiApiClient, self).request(
                method,
                self._on_our_hosts(url),
                query_params=query_params,
                headers=headers,
                post_params=post_params,
                body=body,
                _preload_content=_preload_content,
                _request_timeout=self._timeout if _request_timeout is None else _request_timeout,
            )

        refused: str | None = None
        try:
            return send()
        except HTTPStatusException as exc:
            refused = _bearer(headers) if exc.status == 401 else None
            if refused is None or headers is None:
                raise
        # Xero refused a token we still held fresh (revoked, or its clock ahead of ours): have
        # xero-tui replace that token, unless another caller already has, and try once more.
        token = api.access_token(self.connection_name, stale=refused)
        headers["Authorization"] = f"Bearer {token.access_token}"
        return send()

    def _on_our_hosts(self, url: str) -> str:
        for xero, ours in self._hosts:
            if url == xero or url.startswith(xero + "/"):
                return ours + url[len(xero) :]
        return url


def _timeouts() -> tuple[float, float]:
    settings = HttpSettings.from_env()
    return settings.connect_timeout, settings.timeout


def _bearer(headers: dict[str, str] | None) -> str | None:
    value = (headers or {}).get("Authorization", "")
    scheme, _, token = value.partition(" ")
    return token if scheme == "Bearer" and token else None
