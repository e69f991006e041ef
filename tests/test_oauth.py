"""Authorization request properties (security.md 1-3) and token claim decoding."""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest

from xero_tui.core.endpoints import Endpoints
from xero_tui.core.errors import UsageError
from xero_tui.core.models import Kind, default_scopes
from xero_tui.core.oauth import (
    build_auth_request,
    code_challenge,
    decode_claims,
    new_code_verifier,
    new_state,
)
from xero_tui.core.validate import check_client_id, check_redirect_uri

CLIENT_ID = "6E4D953BAAE949D1A1B399307AD58B94"


def test_state_is_fresh_and_at_least_128_bits() -> None:
    states = {new_state() for _ in range(10_000)}
    assert len(states) == 10_000
    for state in list(states)[:100]:
        # base64url without padding: 6 bits a character
        assert len(state) * 6 >= 128


def test_pkce_verifier_alphabet_and_length() -> None:
    verifiers = {new_code_verifier() for _ in range(1000)}
    assert len(verifiers) == 1000
    for verifier in verifiers:
        assert 43 <= len(verifier) <= 128
        assert re.fullmatch(r"[A-Za-z0-9\-._~]+", verifier)


def test_pkce_challenge_matches_rfc7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_authorize_url_carries_redirect_uri_byte_identical() -> None:
    redirect = "http://localhost:8719/callback"
    req = build_auth_request(Endpoints(), CLIENT_ID, redirect, default_scopes(Kind.WEB))
    parts = urlsplit(req.url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == (
        "https://login.xero.com/identity/connect/authorize"
    )
    query = parse_qs(parts.query, strict_parsing=True)
    assert query["redirect_uri"] == [redirect]
    assert req.redirect_uri == redirect
    assert query["response_type"] == ["code"]
    assert query["client_id"] == [CLIENT_ID]
    assert query["state"] == [req.state]
    assert query["code_challenge_method"] == ["S256"]
    assert req.code_verifier is not None
    assert query["code_challenge"] == [code_challenge(req.code_verifier)]
    assert query["scope"][0].split() == list(default_scopes(Kind.WEB))
    # Spaces in the scope are percent-encoded, never '+', which some servers misread.
    assert "+" not in parts.query


def test_each_attempt_gets_fresh_state_and_verifier() -> None:
    a = build_auth_request(Endpoints(), CLIENT_ID, "http://localhost:8719/callback", ("openid",))
    b = build_auth_request(Endpoints(), CLIENT_ID, "http://localhost:8719/callback", ("openid",))
    assert a.state != b.state
    assert a.code_verifier != b.code_verifier


def test_web_app_pkce_can_be_switched_off() -> None:
    req = build_auth_request(
        Endpoints(), CLIENT_ID, "http://localhost:8719/callback", ("openid",), pkce=False
    )
    assert req.code_verifier is None
    assert "code_challenge" not in parse_qs(urlsplit(req.url).query)


def test_default_scopes_granular_and_legacy() -> None:
    granular = default_scopes(Kind.WEB)
    assert {"offline_access", "openid", "profile", "email"} <= set(granular)
    assert "accounting.invoices" in granular
    assert "accounting.transactions" not in granular
    legacy = default_scopes(Kind.WEB, legacy=True)
    assert "accounting.transactions" in legacy
    assert "offline_access" not in default_scopes(Kind.CUSTOM)


def _jwt(claims: dict[str, object]) -> str:
    def enc(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{enc({'alg': 'RS256'})}.{enc(claims)}.c2ln"


def test_decode_claims_reads_auth_event_id_without_trusting_it() -> None:
    token = _jwt({"authentication_event_id": "e1", "scope": ["openid"]})
    assert decode_claims(token)["authentication_event_id"] == "e1"
    assert decode_claims("not-a-jwt") == {}
    assert decode_claims("a.%%%.c") == {}


@pytest.mark.parametrize("value", ["", "123", "G" * 32, CLIENT_ID + "0"])
def test_client_id_must_be_32_hex(value: str) -> None:
    with pytest.raises(UsageError, match="32 hexadecimal"):
        check_client_id(value)


def test_client_id_accepts_xero_format() -> None:
    assert check_client_id(f"  {CLIENT_ID} ") == CLIENT_ID


@pytest.mark.parametrize(
    "uri",
    [
        "https://localhost:8719/callback",
        "http://example.com:8719/callback",
        "http://localhost/callback",
        "http://localhost:80/callback",
        "http://localhost:8719",
        "http://localhost:8719/callback?x=1",
        "http://localhost:99999/callback",
    ],
)
def test_redirect_uri_must_be_a_loopback_listener(uri: str) -> None:
    with pytest.raises(UsageError):
        check_redirect_uri(uri)


def test_redirect_uri_accepts_localhost_forms() -> None:
    for uri in ("http://localhost:8719/callback", "http://127.0.0.1:9000/cb"):
        assert check_redirect_uri(uri) == uri


def test_endpoints_default_to_xero_https_and_say_when_overridden() -> None:
    default = Endpoints.from_env({})
    assert default.token_url == "https://identity.xero.com/connect/token"
    assert default.authorize_url == "https://login.xero.com/identity/connect/authorize"
    assert default.connections_url == "https://api.xero.com/connections"
    assert default.override_notice() is None
    moved = Endpoints.from_env({"XERO_TUI_IDENTITY_URL": "http://127.0.0.1:1234/"})
    assert moved.token_url == "http://127.0.0.1:1234/connect/token"
    notice = moved.override_notice()
    assert notice is not None and "http://127.0.0.1:1234" in notice
