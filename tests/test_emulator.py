"""The local Xero emulator, driven over real loopback HTTP as xero-tui and a browser would."""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from xero_tui.core.models import DEFAULT_REDIRECT_URI, GRANULAR_SCOPES, Kind
from xero_tui.emulator import DemoClient, Emulator, serve
from xero_tui.emulator import state as emulator_state
from xero_tui.emulator.consent import ConsentError, answer_consent

SCOPE = "openid profile email offline_access accounting.settings"
RFC_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
XERO_DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
BROWSER_SCRIPT = Path(__file__).parent / "support" / "browser_script.py"
OTHER_ID = "0123456789ABCDEF0123456789ABCDEF"
# One client for the whole module: building a client (and its TLS context) costs more than a call.
HTTP = httpx.Client(timeout=10)


# -- helpers --------------------------------------------------------------------------------


def authorize_url(emu: Emulator, client: DemoClient, **overrides: str | None) -> str:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": client.redirect_uris[0] if client.redirect_uris else None,
        "scope": SCOPE,
        "state": "st4te",
        **overrides,
    }
    kept = {k: v for k, v in params.items() if v is not None}
    return str(httpx.URL(emu.endpoints.authorize_url, params=kept))


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def get_code(
    emu: Emulator, client: DemoClient, tenant_ids: list[str] | None = None, **overrides: str
) -> str:
    return query(answer_consent(authorize_url(emu, client, **overrides), tenant_ids=tenant_ids))[
        "code"
    ]


def token_request(
    emu: Emulator, data: dict[str, str], client: DemoClient | None, *, basic: bool = True
) -> httpx.Response:
    auth = None
    if client is not None and client.client_secret is not None and basic:
        auth = (client.client_id, client.client_secret)
    elif client is not None:
        data = {**data, "client_id": client.client_id}
        if client.client_secret is not None:
            data["client_secret"] = client.client_secret
    return HTTP.post(emu.endpoints.token_url, data=data, auth=auth)


def exchange(
    emu: Emulator,
    client: DemoClient,
    code: str,
    *,
    verifier: str | None = None,
    basic: bool = True,
    redirect_uri: str | None = None,
) -> httpx.Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri or client.redirect_uris[0],
    }
    if verifier is not None:
        data["code_verifier"] = verifier
    return token_request(emu, data, client, basic=basic)


def connect(
    emu: Emulator,
    client: DemoClient | None = None,
    *,
    tenant_ids: list[str] | None = None,
    **overrides: str,
) -> dict[str, Any]:
    client = client or emu.web_client
    response = exchange(emu, client, get_code(emu, client, tenant_ids, **overrides))
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def refresh(
    emu: Emulator, token: str, client: DemoClient | None = None, **extra: str
) -> httpx.Response:
    data = {"grant_type": "refresh_token", "refresh_token": token, **extra}
    return token_request(emu, data, client or emu.web_client)


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def connections(emu: Emulator, access_token: str, **params: str) -> httpx.Response:
    return HTTP.get(emu.endpoints.connections_url, headers=bearer(access_token), params=params)


def organisation(emu: Emulator, access_token: str, tenant_id: str | None) -> httpx.Response:
    headers = bearer(access_token)
    if tenant_id is not None:
        headers["xero-tenant-id"] = tenant_id
    return HTTP.get(emu.endpoints.organisation_url, headers=headers)


def oauth_error(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    error: str = response.json()["error"]
    return error


@pytest.fixture
def callback() -> Iterator[tuple[str, list[str]]]:
    """A stand-in for the app's loopback listener: records the paths it is sent."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/callback", hits
    server.shutdown()
    server.server_close()


# -- set-up, discovery, demo data ---------------------------------------------------------


def test_lifecycle_url_env_and_stop(emulator: Emulator) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", emulator.url)
    assert emulator.endpoints.token_url == emulator.url + "/connect/token"
    assert emulator.env == {
        "XERO_TUI_LOGIN_URL": emulator.url,
        "XERO_TUI_IDENTITY_URL": emulator.url,
        "XERO_TUI_API_URL": emulator.url,
    }
    assert os.environ["XERO_TUI_API_URL"] == emulator.url
    with pytest.raises(RuntimeError):
        emulator.start()
    with pytest.raises(RuntimeError):
        _ = Emulator().url
    with httpx.Client() as client:
        assert client.get(emulator.url + "/").status_code == 200
        emulator.stop()
        # The keep-alive connection is closed too, not just the listening socket.
        with pytest.raises(httpx.TransportError):
            client.get(emulator.url + "/")


def test_discovery_document(emulator: Emulator) -> None:
    doc = HTTP.get(emulator.url + "/.well-known/openid-configuration").json()
    assert doc["issuer"] == "https://identity.xero.com"
    assert doc["authorization_endpoint"] == emulator.endpoints.authorize_url
    assert doc["token_endpoint"] == emulator.endpoints.token_url
    assert doc["revocation_endpoint"] == emulator.endpoints.revocation_url
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
    ]
    assert HTTP.get(doc["jwks_uri"]).json() == {"keys": []}


def test_demo_clients_are_fixed_and_shaped_like_xero(emulator: Emulator) -> None:
    again = Emulator(seed=7)
    for client, twin, kind in [
        (emulator.web_client, again.web_client, Kind.WEB),
        (emulator.pkce_client, again.pkce_client, Kind.PKCE),
        (emulator.custom_client, again.custom_client, Kind.CUSTOM),
    ]:
        assert re.fullmatch(r"[0-9A-F]{32}", client.client_id)
        assert client == twin
        assert client.kind is kind
        assert (client.client_secret is not None) == kind.has_secret
        assert client.client_secret is None or client.client_secret not in repr(client)
    web = emulator.web_client
    assert web.redirect_uris == (DEFAULT_REDIRECT_URI,)
    moved = emulator.register_client(web.client_id, web.client_secret, Kind.WEB, ("http://x/cb",))
    assert moved.name == web.name and moved.redirect_uris == ("http://x/cb",)
    assert emulator.web_client == moved
    with pytest.raises(ValueError):
        emulator.register_client(OTHER_ID, None, Kind.WEB)
    with pytest.raises(ValueError):
        emulator.register_client(OTHER_ID, "secret", Kind.PKCE)
    with pytest.raises(ValueError):
        emulator.register_client(OTHER_ID, "secret", Kind.WEB, redirect_uris=())


def test_tenants_are_deterministic_per_seed_with_one_practice() -> None:
    three = Emulator(tenants=3).tenants
    assert [t.tenant_type for t in three] == ["ORGANISATION"] * 3
    assert three == Emulator(tenants=3, seed=0).tenants
    assert {t.tenant_id for t in three}.isdisjoint(t.tenant_id for t in Emulator(seed=1).tenants)
    many = Emulator(tenants=10_000).tenants
    assert [t.tenant_type for t in many].count("PRACTICE") == 1
    assert many[0].tenant_type == "ORGANISATION" and many[0].is_demo
    assert len({t.tenant_id for t in many}) == len({t.name for t in many}) == 10_000
    assert all(UUID.fullmatch(t.tenant_id) for t in many)
    assert {t.base_currency for t in many[:4]} == {"NZD", "AUD", "GBP", "USD"}
    with pytest.raises(ValueError):
        Emulator(tenants=0)


# -- authorize: consent page and error pages ------------------------------------------------


def test_consent_page_shows_app_scopes_and_orgs_escaped(emulator: Emulator) -> None:
    client = emulator.register_client(
        OTHER_ID, "s3cret", Kind.WEB, name="<script>alert(1)</script> Books"
    )
    page = HTTP.get(authorize_url(emulator, client, state="<b>"))
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"
    html = page.text
    assert "<title>Xero | Authorise app</title>" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Books" in html and "<script>" not in html
    assert "not from Xero" in html
    for scope in SCOPE.split():
        assert f"<code>{scope}</code>" in html
    boxes = re.findall(r'<input type="checkbox" name="tenant" value="([^"]+)"( checked)?>', html)
    assert [(tid, bool(mark)) for tid, mark in boxes] == [
        (t.tenant_id, i == 0) for i, t in enumerate(emulator.tenants)
    ]
    for tenant in emulator.tenants:
        assert f'{tenant.name} <span class="type">ORGANISATION · {tenant.country_code}' in html
    assert 'value="allow"' in html and 'value="cancel"' in html


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"client_id": OTHER_ID},
            "Error: unauthorized_client : Unknown client or client not enabled",
        ),
        (
            {"client_id": "custom"},
            "Error: unauthorized_client : Unknown client or client not enabled",
        ),
        (
            {"redirect_uri": DEFAULT_REDIRECT_URI + "/"},
            "Error: unauthorized_client : Invalid redirect_uri",
        ),
        ({"redirect_uri": None}, "Error: unauthorized_client : Invalid redirect_uri"),
        (
            {"scope": "openid accounting.transactions"},
            "Error: invalid_scope : Invalid scope for client",
        ),
        ({"scope": "accounting.reports.read"}, "Error: invalid_scope : Invalid scope for client"),
        ({"scope": "accounting.everything"}, "Error: invalid_scope : Invalid scope for client"),
        ({"scope": ""}, "Error: invalid_scope : Invalid scope for client"),
        ({"response_type": "token"}, "Error: unsupported_response_type : Invalid response_type"),
        ({"client_id": "pkce"}, "Error: invalid_request : code challenge required"),
        (
            {"code_challenge": RFC_CHALLENGE, "code_challenge_method": "plain"},
            "Error: invalid_request : Transform algorithm not supported",
        ),
        (
            {"code_challenge": "short", "code_challenge_method": "S256"},
            "Error: invalid_request : Invalid code_challenge",
        ),
    ],
)
def test_authorize_errors_show_xero_error_page_without_redirect(
    emulator: Emulator, overrides: dict[str, str | None], message: str
) -> None:
    named = {"custom": emulator.custom_client.client_id, "pkce": emulator.pkce_client.client_id}
    if overrides.get("client_id") in named:
        overrides = {**overrides, "client_id": named[str(overrides["client_id"])]}
    url = authorize_url(emulator, emulator.web_client, **overrides)
    page = HTTP.get(url)
    assert page.status_code == 500
    assert "location" not in page.headers
    assert message in page.text
    with pytest.raises(ConsentError) as caught:
        answer_consent(url)
    assert caught.value.message == message


def test_legacy_app_may_still_ask_for_broad_scopes(emulator: Emulator) -> None:
    legacy = emulator.register_client(OTHER_ID, "s3cret", Kind.WEB, granular=False)
    tokens = connect(emulator, legacy, scope="offline_access accounting.transactions")
    assert tokens["scope"] == "offline_access accounting.transactions"


def test_allow_redirects_with_code_scope_state_and_session_state(emulator: Emulator) -> None:
    location = answer_consent(authorize_url(emulator, emulator.web_client, state="a b&c"))
    assert location.startswith(DEFAULT_REDIRECT_URI + "?code=")
    params = query(location)
    assert list(params) == ["code", "scope", "state", "session_state"]
    assert params["scope"] == SCOPE and params["state"] == "a b&c"
    assert len(params["code"]) >= 40 and params["code"] != params["code"].lower()


def test_cancel_redirects_with_access_denied(emulator: Emulator) -> None:
    location = answer_consent(authorize_url(emulator, emulator.web_client), allow=False)
    params = query(location)
    assert params["error"] == "access_denied" and params["state"] == "st4te"
    assert "code" not in params
    assert emulator.stats.code_exchanges == 0


def test_allow_needs_a_known_org_and_a_request_answers_once(emulator: Emulator) -> None:
    url = authorize_url(emulator, emulator.web_client)
    for tenants in ([], ["00000000-0000-4000-8000-000000000000"]):
        with pytest.raises(ConsentError, match="at least one organisation"):
            answer_consent(url, tenant_ids=tenants)
    page = HTTP.get(url).text
    request_id = re.search(r'name="request_id" value="([^"]+)"', page)
    assert request_id is not None
    decision = emulator.url + "/identity/connect/authorize/decision"
    form = {
        "request_id": request_id[1],
        "decision": "allow",
        "tenant": emulator.tenants[0].tenant_id,
    }
    assert HTTP.post(decision, data=form).status_code == 302
    again = HTTP.post(decision, data=form)
    assert again.status_code == 400 and "already answered" in again.text


def test_follow_redirect_delivers_the_callback(
    emulator: Emulator, callback: tuple[str, list[str]]
) -> None:
    redirect_uri, hits = callback
    client = emulator.register_client(OTHER_ID, "s3cret", Kind.WEB, redirect_uris=(redirect_uri,))
    location = answer_consent(authorize_url(emulator, client), follow_redirect=True)
    assert hits == [location[len(redirect_uri.rsplit("/", 1)[0]) :]]
    assert "code" in query(location)


# -- token endpoint: code exchange ----------------------------------------------------------


def test_code_exchange_returns_xero_token_set(emulator: Emulator) -> None:
    client = emulator.web_client
    response = exchange(emulator, client, get_code(emulator, client))
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    tokens = response.json()
    assert list(tokens) == [
        "id_token",
        "access_token",
        "expires_in",
        "token_type",
        "refresh_token",
        "scope",
    ]
    assert tokens["expires_in"] == 1800 and tokens["token_type"] == "Bearer"
    assert tokens["scope"] == SCOPE
    assert re.fullmatch(r"[0-9a-f]{64}", tokens["refresh_token"])
    access = claims(tokens["access_token"])
    assert access["iss"] == "https://identity.xero.com"
    assert access["aud"] == "https://identity.xero.com/resources"
    assert access["client_id"] == client.client_id
    assert access["scope"] == SCOPE.split()
    assert access["exp"] - access["nbf"] == 1800
    assert UUID.fullmatch(access["xero_userid"]) and access["sub"] and access["jti"]
    [connection] = connections(emulator, tokens["access_token"]).json()
    assert access["authentication_event_id"] == connection["authEventId"]
    identity = claims(tokens["id_token"])
    assert identity["aud"] == client.client_id
    assert identity["email"] and identity["given_name"]
    stats = emulator.stats
    assert (stats.token_requests, stats.code_exchanges) == (1, 1)


def test_client_auth_by_basic_or_body_and_refusals(emulator: Emulator) -> None:
    client = emulator.web_client
    assert exchange(emulator, client, get_code(emulator, client), basic=False).status_code == 200
    code = get_code(emulator, client)
    wrong = DemoClient(client.client_id, "not-the-secret", Kind.WEB)
    unknown = DemoClient(OTHER_ID, "s3cret", Kind.WEB)
    for bad, basic in [(wrong, True), (wrong, False), (unknown, True)]:
        assert oauth_error(exchange(emulator, bad, code, basic=basic)) == "invalid_client"
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": DEFAULT_REDIRECT_URI}
    assert oauth_error(token_request(emulator, data, None)) == "invalid_client"
    conflicting = HTTP.post(
        emulator.endpoints.token_url,
        data={**data, "client_id": OTHER_ID},
        auth=(client.client_id, str(client.client_secret)),
    )
    assert oauth_error(conflicting) == "invalid_client"
    # None of those reached the code, so it still works.
    assert exchange(emulator, client, code).status_code == 200


def test_code_is_single_use_case_sensitive_and_bound(emulator: Emulator) -> None:
    client = emulator.web_client
    code = get_code(emulator, client)
    assert oauth_error(exchange(emulator, client, code.swapcase())) == "invalid_grant"
    assert exchange(emulator, client, code).status_code == 200
    assert oauth_error(exchange(emulator, client, code)) == "invalid_grant"
    # A wrong redirect_uri fails and, as at IdentityServer, spends the code.
    code = get_code(emulator, client)
    wrong_uri = exchange(emulator, client, code, redirect_uri="http://localhost:8719/other")
    assert oauth_error(wrong_uri) == "invalid_grant"
    assert oauth_error(exchange(emulator, client, code)) == "invalid_grant"
    other = emulator.register_client(OTHER_ID, "s3cret", Kind.WEB)
    assert oauth_error(exchange(emulator, other, get_code(emulator, client))) == "invalid_grant"
    stats = emulator.stats
    assert (stats.code_exchanges, stats.invalid_grants) == (1, 5)


def test_code_expires_after_five_minutes_of_emulator_clock(emulator: Emulator) -> None:
    client = emulator.web_client
    code = get_code(emulator, client)
    emulator.advance_clock(299)
    assert exchange(emulator, client, code).status_code == 200
    code = get_code(emulator, client)
    emulator.advance_clock(301)
    assert oauth_error(exchange(emulator, client, code)) == "invalid_grant"
    with pytest.raises(ValueError):
        emulator.advance_clock(-1)


def test_pkce_s256_with_the_rfc_7636_vector(emulator: Emulator) -> None:
    assert (
        base64.urlsafe_b64encode(hashlib.sha256(RFC_VERIFIER.encode()).digest())
        .rstrip(b"=")
        .decode()
        == RFC_CHALLENGE
    )
    client = emulator.pkce_client
    pkce = {"code_challenge": RFC_CHALLENGE, "code_challenge_method": "S256"}
    code = get_code(emulator, client, **pkce)
    response = exchange(emulator, client, code, verifier=RFC_VERIFIER)
    assert response.status_code == 200 and "refresh_token" in response.json()
    for verifier in (None, RFC_VERIFIER[:-1] + "l", "x" * 42):
        code = get_code(emulator, client, **pkce)
        assert oauth_error(exchange(emulator, client, code, verifier=verifier)) == "invalid_grant"


def test_web_app_may_use_pkce_but_not_send_a_stray_verifier(emulator: Emulator) -> None:
    client = emulator.web_client
    pkce = {"code_challenge": RFC_CHALLENGE, "code_challenge_method": "S256"}
    code = get_code(emulator, client, **pkce)
    assert exchange(emulator, client, code, verifier=RFC_VERIFIER).status_code == 200
    code = get_code(emulator, client)
    assert oauth_error(exchange(emulator, client, code, verifier=RFC_VERIFIER)) == "invalid_grant"


def test_refresh_and_id_tokens_only_with_their_scopes(emulator: Emulator) -> None:
    tokens = connect(emulator, scope="accounting.settings")
    assert "refresh_token" not in tokens and "id_token" not in tokens
    tokens = connect(emulator, scope="openid accounting.settings")
    assert "refresh_token" not in tokens
    assert "email" not in claims(tokens["id_token"])


def test_grant_type_errors(emulator: Emulator) -> None:
    web, custom = emulator.web_client, emulator.custom_client
    assert oauth_error(token_request(emulator, {"grant_type": "password"}, web)) == (
        "unsupported_grant_type"
    )
    assert oauth_error(token_request(emulator, {"code": "x"}, web)) == "unsupported_grant_type"
    grant = {"grant_type": "client_credentials"}
    # Xero answers a Web app asking for client credentials with invalid_scope, not
    # unauthorized_client.
    refused = token_request(emulator, grant, web).json()
    assert refused == {
        "error": "invalid_scope",
        "error_description": "Client credentials scope validation failed",
    }
    assert oauth_error(exchange(emulator, custom, "code", redirect_uri="x")) == (
        "unauthorized_client"
    )
    assert oauth_error(refresh(emulator, "token", custom)) == "unauthorized_client"
    as_json = HTTP.post(
        emulator.endpoints.token_url,
        json=grant,
        auth=(custom.client_id, str(custom.client_secret)),
    )
    assert oauth_error(as_json) == "invalid_request"


# -- token endpoint: refresh rotation and grace ---------------------------------------------


def test_refresh_rotates_with_a_thirty_minute_grace(emulator: Emulator) -> None:
    client = emulator.web_client
    first = connect(emulator)
    old = first["refresh_token"]
    assert emulator.current_refresh_token(client.client_id) == old
    rotated = refresh(emulator, old).json()
    assert rotated["refresh_token"] != old and list(rotated)[-1] == "scope"
    # Access tokens issued before a refresh stay valid until they expire.
    assert connections(emulator, first["access_token"]).status_code == 200
    assert emulator.current_refresh_token(client.client_id) == rotated["refresh_token"]
    emulator.advance_clock(1790)
    # Inside the grace the old token works as often as needed; each use becomes current.
    again = [refresh(emulator, old).json()["refresh_token"] for _ in range(2)]
    assert len({old, rotated["refresh_token"], *again}) == 4
    assert emulator.current_refresh_token(client.client_id) == again[-1]
    emulator.advance_clock(11)
    assert oauth_error(refresh(emulator, old)) == "invalid_grant"
    assert refresh(emulator, rotated["refresh_token"]).status_code == 200
    stats = emulator.stats
    assert (stats.refreshes, stats.grace_refreshes, stats.invalid_grants) == (4, 3, 1)


def test_superseded_token_fails_once_its_grace_is_over(emulator: Emulator) -> None:
    old = connect(emulator)["refresh_token"]
    new = refresh(emulator, old).json()
    assert connections(emulator, new["access_token"]).status_code == 200
    emulator.advance_clock(1801)
    assert oauth_error(refresh(emulator, old)) == "invalid_grant"
    assert refresh(emulator, new["refresh_token"]).status_code == 200


def test_refresh_by_body_auth_with_scope_pkce_and_other_clients(emulator: Emulator) -> None:
    tokens = connect(emulator)
    narrowed = token_request(
        emulator,
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "scope": "offline_access accounting.settings",
        },
        emulator.web_client,
        basic=False,
    )
    assert narrowed.status_code == 200
    assert narrowed.json()["scope"] == "offline_access accounting.settings"
    wider = refresh(emulator, narrowed.json()["refresh_token"], scope="accounting.contacts")
    assert oauth_error(wider) == "invalid_scope"
    other = emulator.register_client(OTHER_ID, "s3cret", Kind.WEB)
    assert oauth_error(refresh(emulator, narrowed.json()["refresh_token"], other)) == (
        "invalid_grant"
    )
    pkce = emulator.pkce_client
    code = get_code(emulator, pkce, code_challenge=RFC_CHALLENGE, code_challenge_method="S256")
    pkce_tokens = exchange(emulator, pkce, code, verifier=RFC_VERIFIER).json()
    assert refresh(emulator, pkce_tokens["refresh_token"], pkce).status_code == 200


def test_unused_refresh_token_expires_after_sixty_days(emulator: Emulator) -> None:
    token = connect(emulator)["refresh_token"]
    emulator.advance_clock(60 * 86400 + 1)
    assert oauth_error(refresh(emulator, token)) == "invalid_grant"


def test_concurrent_refreshes_of_one_token_all_succeed_and_one_is_current(
    emulator: Emulator,
) -> None:
    token = connect(emulator)["refresh_token"]
    results: list[httpx.Response] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        results.append(refresh(emulator, token))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    issued = {r.json()["refresh_token"] for r in results if r.status_code == 200}
    assert len(issued) == 8
    assert emulator.current_refresh_token(emulator.web_client.client_id) in issued
    stats = emulator.stats
    assert (stats.refreshes, stats.grace_refreshes) == (8, 7)


def test_current_refresh_token_per_consent(emulator: Emulator) -> None:
    client_id = emulator.web_client.client_id
    first = connect(emulator)
    second = connect(emulator)
    first_event = claims(first["access_token"])["authentication_event_id"]
    second_event = claims(second["access_token"])["authentication_event_id"]
    assert emulator.current_refresh_token(client_id) == second["refresh_token"]
    assert emulator.current_refresh_token(client_id, first_event) == first["refresh_token"]
    rotated = refresh(emulator, first["refresh_token"]).json()["refresh_token"]
    assert emulator.current_refresh_token(client_id) == rotated
    assert emulator.current_refresh_token(client_id, second_event) == second["refresh_token"]
    assert emulator.current_refresh_token(OTHER_ID) is None


# -- token endpoint: custom connections ------------------------------------------------------


def test_client_credentials_for_custom_connection(emulator: Emulator) -> None:
    custom = emulator.custom_client
    response = token_request(emulator, {"grant_type": "client_credentials"}, custom)
    tokens = response.json()
    assert response.status_code == 200
    assert "refresh_token" not in tokens and "id_token" not in tokens
    assert tokens["scope"] == " ".join(GRANULAR_SCOPES)
    [connection] = connections(emulator, tokens["access_token"]).json()
    assert connection["tenantId"] == emulator.tenants[0].tenant_id
    assert claims(tokens["access_token"])["authentication_event_id"] == connection["authEventId"]
    org = organisation(emulator, tokens["access_token"], None)
    assert org.json()["Organisations"][0]["OrganisationID"] == emulator.tenants[0].tenant_id
    assert (
        organisation(emulator, tokens["access_token"], emulator.tenants[1].tenant_id).status_code
        == 403
    )
    body_auth = token_request(
        emulator,
        {"grant_type": "client_credentials", "scope": "accounting.settings.read"},
        custom,
        basic=False,
    )
    assert body_auth.json()["scope"] == "accounting.settings.read"
    for scope in ("accounting.transactions", "offline_access", "nonsense"):
        data = {"grant_type": "client_credentials", "scope": scope}
        assert oauth_error(token_request(emulator, data, custom)) == "invalid_scope"
    assert emulator.stats.client_credentials == 2


# -- revocation -----------------------------------------------------------------------------


def test_revocation_ends_the_grant_and_removes_connections(emulator: Emulator) -> None:
    client = emulator.web_client
    tokens = connect(emulator, tenant_ids=[t.tenant_id for t in emulator.tenants])
    other = connect(emulator)
    revoke_url = emulator.endpoints.revocation_url
    secret = str(client.client_secret)
    bad = HTTP.post(
        revoke_url, data={"token": tokens["refresh_token"]}, auth=(client.client_id, "x")
    )
    assert oauth_error(bad) == "invalid_client"
    missing = HTTP.post(revoke_url, data={}, auth=(client.client_id, secret))
    assert oauth_error(missing) == "invalid_request"
    body_auth = {"client_id": client.client_id, "client_secret": secret}
    assert HTTP.post(revoke_url, data={"token": "unknown", **body_auth}).status_code == 200
    emulator.register_client(OTHER_ID, "s3cret", Kind.WEB)
    foreign = HTTP.post(
        revoke_url, data={"token": tokens["refresh_token"]}, auth=(OTHER_ID, "s3cret")
    )
    assert foreign.status_code == 200
    assert emulator.stats.revocations == 0

    revoked = HTTP.post(
        revoke_url, data={"token": tokens["refresh_token"]}, auth=(client.client_id, secret)
    )
    assert revoked.status_code == 200
    assert emulator.stats.revocations == 1
    assert connections(emulator, tokens["access_token"]).status_code == 401
    assert oauth_error(refresh(emulator, tokens["refresh_token"])) == "invalid_grant"
    # Every connection of the user to the app is gone; the other consent's grant still refreshes.
    assert connections(emulator, other["access_token"]).json() == []
    assert refresh(emulator, other["refresh_token"]).status_code == 200


# -- connections ----------------------------------------------------------------------------


def test_connections_are_cumulative_and_filter_by_auth_event(emulator: Emulator) -> None:
    t0, t1, t2 = (t.tenant_id for t in emulator.tenants)
    first = connect(emulator, tenant_ids=[t0])
    second = connect(emulator, tenant_ids=[t1, t2])
    first_event = claims(first["access_token"])["authentication_event_id"]
    second_event = claims(second["access_token"])["authentication_event_id"]
    listed = connections(emulator, second["access_token"]).json()
    assert [c["tenantId"] for c in listed] == [t0, t1, t2]
    assert set(listed[0]) == {
        "id",
        "authEventId",
        "tenantId",
        "tenantType",
        "tenantName",
        "createdDateUtc",
        "updatedDateUtc",
    }
    assert listed[0]["tenantName"] == emulator.tenants[0].name
    assert listed[0]["tenantType"] == "ORGANISATION"
    for c in listed:
        assert (
            XERO_DATE.fullmatch(c["createdDateUtc"]) and c["createdDateUtc"] == c["updatedDateUtc"]
        )
    filtered = connections(emulator, first["access_token"], authEventId=second_event).json()
    assert [c["tenantId"] for c in filtered] == [t1, t2]

    emulator.advance_clock(10)
    third = connect(emulator, tenant_ids=[t0])
    third_event = claims(third["access_token"])["authentication_event_id"]
    [again] = connections(emulator, third["access_token"], authEventId=third_event).json()
    assert again["id"] == listed[0]["id"]
    assert again["createdDateUtc"] == listed[0]["createdDateUtc"]
    assert again["updatedDateUtc"] > listed[0]["updatedDateUtc"]
    assert connections(emulator, third["access_token"], authEventId=first_event).json() == []


def test_delete_connection(emulator: Emulator) -> None:
    t0, t1, _ = (t.tenant_id for t in emulator.tenants)
    tokens = connect(emulator, tenant_ids=[t0, t1])
    listed = connections(emulator, tokens["access_token"]).json()
    url = f"{emulator.endpoints.connections_url}/{listed[1]['id']}"
    deleted = HTTP.delete(url, headers=bearer(tokens["access_token"]))
    assert deleted.status_code == 204 and deleted.content == b""
    assert HTTP.delete(url, headers=bearer(tokens["access_token"])).status_code == 404
    assert HTTP.delete(url).status_code == 401
    assert [c["tenantId"] for c in connections(emulator, tokens["access_token"]).json()] == [t0]
    assert organisation(emulator, tokens["access_token"], t1).status_code == 403


def test_expired_and_unknown_access_tokens_get_401(emulator: Emulator) -> None:
    tokens = connect(emulator)
    emulator.advance_clock(1799)
    assert connections(emulator, tokens["access_token"]).status_code == 200
    emulator.advance_clock(1)
    expired = connections(emulator, tokens["access_token"])
    assert expired.status_code == 401
    body = expired.json()
    assert set(body) == {"Type", "Title", "Status", "Detail", "Instance", "Extensions"}
    assert (body["Type"], body["Title"], body["Status"]) == (None, "Unauthorized", 401)
    assert re.fullmatch(
        r"TokenExpired: token expired at \d\d/\d\d/\d{4} \d\d:\d\d:\d\d", body["Detail"]
    )
    assert "invalid_token" in expired.headers["WWW-Authenticate"]
    # Tokens are looked up, not trusted: a re-signed copy of a valid one is refused.
    fresh = refresh(emulator, tokens["refresh_token"]).json()["access_token"]
    forged = fresh.rsplit(".", 1)[0] + ".c2lnbmF0dXJl"
    assert connections(emulator, forged).json()["Detail"] == "AuthenticationUnsuccessful"
    assert HTTP.get(emulator.endpoints.connections_url).status_code == 401


# -- Organisation and rate limits -----------------------------------------------------------


def test_organisation_for_a_connected_tenant(emulator: Emulator) -> None:
    tenant = emulator.tenants[0]
    tokens = connect(emulator)
    response = organisation(emulator, tokens["access_token"], tenant.tenant_id)
    assert response.status_code == 200
    body = response.json()
    assert body["Status"] == "OK" and re.fullmatch(r"/Date\(\d+\)/", body["DateTimeUTC"])
    [org] = body["Organisations"]
    assert org["OrganisationID"] == tenant.tenant_id
    assert (org["Name"], org["ShortCode"], org["CountryCode"], org["BaseCurrency"]) == (
        tenant.name,
        tenant.short_code,
        tenant.country_code,
        tenant.base_currency,
    )
    assert org["IsDemoCompany"] is True and org["OrganisationStatus"] == "ACTIVE"
    assert response.headers["X-MinLimit-Remaining"] == "59"
    assert response.headers["X-DayLimit-Remaining"] == "4999"
    assert response.headers["X-AppMinLimit-Remaining"] == "9999"
    assert emulator.stats.api_calls == 1


def test_organisation_refusals(emulator: Emulator) -> None:
    tokens = connect(emulator)
    for tenant_id in (None, emulator.tenants[1].tenant_id, "not-a-tenant"):
        forbidden = organisation(emulator, tokens["access_token"], tenant_id)
        assert forbidden.status_code == 403
        body = forbidden.json()
        assert set(body) == {"Type", "Title", "Status", "Detail", "Instance"}
        assert (body["Title"], body["Detail"]) == ("Forbidden", "AuthenticationUnsuccessful")
    no_settings = connect(emulator, scope="offline_access accounting.contacts")
    insufficient = organisation(
        emulator, no_settings["access_token"], emulator.tenants[0].tenant_id
    )
    assert insufficient.status_code == 401
    assert insufficient.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope"'
    read_only = connect(emulator, scope="accounting.settings.read")
    assert (
        organisation(emulator, read_only["access_token"], emulator.tenants[0].tenant_id).status_code
        == 200
    )


def test_practice_tenant_is_listed_but_not_an_accounting_org() -> None:
    with Emulator(tenants=4) as emu:
        practice = emu.tenants[3]
        assert practice.tenant_type == "PRACTICE"
        tokens = connect(emu, tenant_ids=[practice.tenant_id])
        assert connections(emu, tokens["access_token"]).json()[0]["tenantType"] == "PRACTICE"
        assert organisation(emu, tokens["access_token"], practice.tenant_id).status_code == 403


def test_sixty_calls_a_minute_per_tenant(emulator: Emulator) -> None:
    t0, t1, _ = (t.tenant_id for t in emulator.tenants)
    token = connect(emulator, tenant_ids=[t0, t1])["access_token"]
    with httpx.Client(headers=bearer(token)) as client:

        def call(tenant_id: str) -> httpx.Response:
            return client.get(
                emulator.endpoints.organisation_url, headers={"xero-tenant-id": tenant_id}
            )

        remaining = [call(t0).headers["X-MinLimit-Remaining"] for _ in range(60)]
        assert remaining == [str(n) for n in range(59, -1, -1)]
        limited = call(t0)
        assert limited.status_code == 429
        assert limited.headers["X-Rate-Limit-Problem"] == "minute"
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert call(t1).status_code == 200
        emulator.advance_clock(60)
        assert call(t0).status_code == 200
    assert emulator.stats.rate_limited == 1


def test_day_and_app_minute_limits(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emulator_state, "DAY_LIMIT", 3)
    monkeypatch.setattr(emulator_state, "APP_MINUTE_LIMIT", 5)
    t0, t1, _ = (t.tenant_id for t in emulator.tenants)
    tokens = connect(emulator, tenant_ids=[t0, t1])
    token = tokens["access_token"]
    assert [organisation(emulator, token, t0).status_code for _ in range(4)] == [200, 200, 200, 429]
    day = organisation(emulator, token, t0)
    assert day.headers["X-Rate-Limit-Problem"] == "day"
    assert int(day.headers["Retry-After"]) > 86000
    assert [organisation(emulator, token, t1).status_code for _ in range(3)] == [200, 200, 429]
    assert organisation(emulator, token, t1).headers["X-Rate-Limit-Problem"] == "appminute"
    emulator.advance_clock(86400)
    token = refresh(emulator, tokens["refresh_token"]).json()["access_token"]
    assert organisation(emulator, token, t0).status_code == 200


# -- server-side changes --------------------------------------------------------------------


def test_disconnect_tenant_and_revoke_all(emulator: Emulator) -> None:
    client_id = emulator.web_client.client_id
    t0, t1, _ = (t.tenant_id for t in emulator.tenants)
    tokens = connect(emulator, tenant_ids=[t0, t1])
    assert emulator.disconnect_tenant(client_id, t1) is True
    assert emulator.disconnect_tenant(client_id, t1) is False
    assert organisation(emulator, tokens["access_token"], t1).status_code == 403
    assert organisation(emulator, tokens["access_token"], t0).status_code == 200
    connect(emulator)
    assert emulator.revoke_all(client_id) == 2
    assert connections(emulator, tokens["access_token"]).status_code == 401
    assert oauth_error(refresh(emulator, tokens["refresh_token"])) == "invalid_grant"
    assert emulator.current_refresh_token(client_id) is None
    fresh = connect(emulator, tenant_ids=[t1])
    assert [c["tenantId"] for c in connections(emulator, fresh["access_token"]).json()] == [t1]


# -- faults ---------------------------------------------------------------------------------


def test_status_faults_are_one_shot_fifo_per_endpoint(emulator: Emulator) -> None:
    token = connect(emulator)["access_token"]
    emulator.inject("connections", "status", 2, status=503)
    emulator.inject("connections", "status", status=500)
    assert [connections(emulator, token).status_code for _ in range(4)] == [503, 503, 500, 200]
    emulator.inject("*", "status", status=502)
    assert organisation(emulator, token, emulator.tenants[0].tenant_id).status_code == 502
    assert connections(emulator, token).status_code == 200
    emulator.inject("authorize", "status", status=503)
    with pytest.raises(ConsentError, match="HTTP 503"):
        answer_consent(authorize_url(emulator, emulator.web_client))
    assert emulator.stats.faults_injected == 5


def test_rate_limit_fault(emulator: Emulator) -> None:
    emulator.inject("token", "rate_limit", retry_after=7)
    emulator.inject("token", "rate_limit")
    data = {"grant_type": "client_credentials"}
    first = token_request(emulator, data, emulator.custom_client)
    assert first.status_code == 429
    assert (first.headers["Retry-After"], first.headers["X-Rate-Limit-Problem"]) == ("7", "minute")
    assert "Retry-After" not in token_request(emulator, data, emulator.custom_client).headers
    assert token_request(emulator, data, emulator.custom_client).status_code == 200
    stats = emulator.stats
    assert (stats.token_requests, stats.faults_injected, stats.rate_limited) == (1, 2, 0)


def test_delay_fault_answers_after_the_delay(emulator: Emulator) -> None:
    emulator.inject("token", "delay", delay=0.3)
    started = time.monotonic()
    response = token_request(emulator, {"grant_type": "client_credentials"}, emulator.custom_client)
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        emulator.inject("token", "delay", delay=1.0)
        HTTP.post(emulator.endpoints.token_url, data={}, timeout=0.2)


def test_reset_fault_closes_without_processing(emulator: Emulator) -> None:
    tokens = connect(emulator)
    emulator.inject("token", "reset")
    with pytest.raises(httpx.TransportError):
        refresh(emulator, tokens["refresh_token"])
    assert emulator.current_refresh_token(emulator.web_client.client_id) == tokens["refresh_token"]
    assert emulator.stats.refreshes == 0
    emulator.inject("authorize", "reset")
    with pytest.raises(ConsentError, match="could not reach the consent page") as caught:
        answer_consent(authorize_url(emulator, emulator.web_client))
    assert isinstance(caught.value.__cause__, httpx.TransportError)


def test_drop_after_fault_rotates_before_the_socket_closes(emulator: Emulator) -> None:
    client_id = emulator.web_client.client_id
    old = connect(emulator)["refresh_token"]
    emulator.inject("token", "drop_after")
    with pytest.raises(httpx.TransportError):
        refresh(emulator, old)
    lost = emulator.current_refresh_token(client_id)
    assert lost not in (None, old)
    assert emulator.stats.refreshes == 1
    # The client never saw the new token; the old one still works inside the grace.
    retried = refresh(emulator, old)
    assert retried.status_code == 200
    assert emulator.current_refresh_token(client_id) == retried.json()["refresh_token"] != lost
    assert emulator.stats.grace_refreshes == 1


def test_random_fault_rate_is_seeded_and_clearable(emulator: Emulator) -> None:
    token = connect(emulator)["access_token"]

    def pattern() -> list[int]:
        return [connections(emulator, token).status_code for _ in range(30)]

    emulator.set_fault_rate("connections", "status", 0.5, seed=3, status=500)
    first = pattern()
    assert 0 < first.count(500) < 30 and set(first) == {200, 500}
    emulator.set_fault_rate("connections", "status", 0.5, seed=3, status=500)
    assert pattern() == first
    emulator.set_fault_rate("connections", "status", 0)
    assert set(pattern()) == {200}
    emulator.set_fault_rate("*", "status", 1.0, status=503)
    assert token_request(emulator, {}, emulator.web_client).status_code == 503


@pytest.mark.parametrize(
    ("endpoint", "kind", "options"),
    [
        ("nowhere", "status", {"status": 500}),
        ("token", "explode", {}),
        ("token", "status", {}),
        ("token", "status", {"status": 200}),
        ("token", "delay", {"delay": -1}),
    ],
)
def test_fault_arguments_are_checked(
    emulator: Emulator, endpoint: str, kind: str, options: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        emulator.inject(endpoint, kind, **options)
    with pytest.raises(ValueError):
        emulator.set_fault_rate(endpoint, kind, 0.5, **options)


def test_fault_counts_and_rates_are_checked(emulator: Emulator) -> None:
    with pytest.raises(ValueError):
        emulator.inject("token", "reset", 0)
    with pytest.raises(ValueError):
        emulator.set_fault_rate("token", "reset", 1.5)


# -- admin endpoints ------------------------------------------------------------------------


def test_admin_endpoints_mirror_the_python_controls(emulator: Emulator) -> None:
    admin = emulator.url + "/_emulator/"
    tokens = connect(emulator, tenant_ids=[t.tenant_id for t in emulator.tenants[:2]])
    inject = {"endpoint": "connections", "kind": "status", "status": 503, "count": 2}
    assert HTTP.post(admin + "inject", json=inject).json() == {"ok": True}
    assert [connections(emulator, tokens["access_token"]).status_code for _ in range(3)] == [
        503,
        503,
        200,
    ]
    rate = {"endpoint": "connections", "kind": "status", "rate": 1, "status": 500}
    assert HTTP.post(admin + "fault-rate", json=rate).status_code == 200
    assert connections(emulator, tokens["access_token"]).status_code == 500
    assert HTTP.post(admin + "fault-rate", json={**rate, "rate": 0}).status_code == 200
    assert HTTP.post(admin + "clock", json={"seconds": 1801}).json() == {"offset": 1801.0}
    assert connections(emulator, tokens["access_token"]).status_code == 401
    fresh = refresh(emulator, tokens["refresh_token"]).json()
    client_id = emulator.web_client.client_id
    tenant_id = emulator.tenants[1].tenant_id
    disconnect = {"client_id": client_id, "tenant_id": tenant_id}
    assert HTTP.post(admin + "disconnect", json=disconnect).json() == {"removed": True}
    assert organisation(emulator, fresh["access_token"], tenant_id).status_code == 403
    assert HTTP.post(admin + "revoke-all", json={"client_id": client_id}).json() == {"revoked": 1}
    stats = HTTP.get(admin + "stats").json()
    assert stats == emulator.stats.as_dict()
    assert stats["faults_injected"] == 3 and stats["refreshes"] == 1


@pytest.mark.parametrize(
    ("method", "action", "kwargs", "status"),
    [
        ("POST", "inject", {"json": {"endpoint": "token"}}, 400),
        ("POST", "inject", {"json": {"endpoint": "nowhere", "kind": "reset"}}, 400),
        ("POST", "inject", {"json": ["not", "an", "object"]}, 400),
        ("POST", "clock", {"json": {"seconds": -5}}, 400),
        ("POST", "nothing", {"json": {}}, 400),
        ("POST", "clock", {"data": {"seconds": "5"}}, 415),
        ("GET", "clock", {}, 405),
    ],
)
def test_admin_endpoints_refuse_bad_requests(
    emulator: Emulator, method: str, action: str, kwargs: dict[str, Any], status: int
) -> None:
    response = HTTP.request(method, f"{emulator.url}/_emulator/{action}", **kwargs)
    assert response.status_code == status
    assert "error" in response.json()
    assert emulator.stats.faults_injected == 0


# -- HTTP edges -----------------------------------------------------------------------------


def raw_request(emu: Emulator, header: str) -> bytes:
    """A token request whose body never follows its headers: the answer must not wait for it."""
    port = int(emu.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"POST /connect/token HTTP/1.1\r\nHost: x\r\n{header}\r\n\r\n".encode())
        return sock.recv(4096)


def test_unknown_paths_methods_and_bodies(emulator: Emulator) -> None:
    assert HTTP.get(emulator.url + "/nope").status_code == 404
    wrong_method = HTTP.get(emulator.endpoints.token_url)
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "POST"
    assert raw_request(emulator, "Content-Length: 5000000").startswith(b"HTTP/1.1 413 ")
    assert raw_request(emulator, "Transfer-Encoding: chunked").startswith(b"HTTP/1.1 411 ")
    # Xero's spec spells the path /Connections; matching ignores case.
    assert HTTP.get(emulator.url + "/Connections").status_code == 401


def test_emulator_bug_answers_500_instead_of_hanging(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(emulator._state, "jwks", broken)
    response = HTTP.get(emulator.url + "/.well-known/openid-configuration/jwks")
    assert response.status_code == 500 and "boom" in response.json()["detail"]


# -- ten thousand organisations -------------------------------------------------------------


def test_ten_thousand_tenants_stay_usable() -> None:
    started = time.perf_counter()
    with Emulator(tenants=10_000) as emu:
        built = time.perf_counter()
        chosen = [t.tenant_id for t in emu.tenants[::10]]
        tokens = connect(emu, tenant_ids=chosen)
        consented = time.perf_counter()
        listed = connections(emu, tokens["access_token"]).json()
        done = time.perf_counter()
        assert [c["tenantId"] for c in listed] == chosen
        assert organisation(emu, tokens["access_token"], chosen[-1]).status_code == 200
    print(
        f"\n10,000 tenants: build {built - started:.2f}s, consent for 1,000 "
        f"{consented - built:.2f}s, list {done - consented:.2f}s"
    )


# -- the scripted browser and the foreground server -----------------------------------------


def test_browser_script_allows_cancels_and_logs_errors(
    emulator: Emulator, callback: tuple[str, list[str]], tmp_path: Path
) -> None:
    redirect_uri, hits = callback
    client = emulator.register_client(OTHER_ID, "s3cret", Kind.WEB, redirect_uris=(redirect_uri,))
    log = tmp_path / "browser.log"
    env = {**os.environ, "XERO_TUI_TEST_BROWSER_LOG": str(log)}
    second = emulator.tenants[1].tenant_id

    def run(url: str, **extra: str) -> int:
        return subprocess.run(
            [sys.executable, str(BROWSER_SCRIPT), url], env={**env, **extra}
        ).returncode

    assert run(authorize_url(emulator, client), XERO_TUI_TEST_TENANTS=second) == 0
    code = query(hits[-1])["code"]
    tokens = exchange(emulator, client, code, redirect_uri=redirect_uri).json()
    assert connections(emulator, tokens["access_token"]).json()[0]["tenantId"] == second
    assert run(authorize_url(emulator, client), XERO_TUI_TEST_CONSENT="cancel") == 0
    assert query(hits[-1])["error"] == "access_denied"
    assert not log.exists()
    assert run(authorize_url(emulator, client, redirect_uri="http://evil.example/cb")) == 1
    assert "Invalid redirect_uri" in log.read_text()
    assert len(hits) == 2


def test_serve_prints_setup_and_stops_cleanly_on_ctrl_c() -> None:
    code = "from xero_tui.emulator import serve; serve(0, 5)"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        assert proc.stdout is not None
        first_line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", first_line)
        assert url is not None, first_line
        assert "5 demo organisations" in first_line
        assert HTTP.get(url[0] + "/.well-known/openid-configuration").status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        out = first_line + proc.stdout.read()
        assert proc.stderr is not None
        err = proc.stderr.read()
    assert "Traceback" not in err and err == ""
    demo = Emulator()
    for name in ("XERO_TUI_LOGIN_URL", "XERO_TUI_IDENTITY_URL", "XERO_TUI_API_URL"):
        assert f"export {name}={url[0]}" in out
    for client in (demo.web_client, demo.pkce_client, demo.custom_client):
        assert client.client_id in out
    assert str(demo.web_client.client_secret) in out
    assert f"GET {url[0]}/_emulator/stats" in out
    assert "Emulator stopped." in out


def test_serve_reports_a_taken_port_and_no_tenants() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as caught:
            serve(port, 3, out=io.StringIO())
        assert caught.value.errno == errno.EADDRINUSE
    with pytest.raises(ValueError, match="at least one organisation"):
        serve(0, 0, out=io.StringIO())


def test_a_consent_page_that_cannot_be_reached_is_a_consent_error() -> None:
    with Emulator() as emu:
        url = authorize_url(emu, emu.web_client)
    with pytest.raises(ConsentError) as caught:
        answer_consent(url)
    assert caught.value.message.startswith("could not reach the consent page: ")
