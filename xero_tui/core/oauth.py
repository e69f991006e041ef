"""The pieces of an authorization request: state, PKCE, the authorize URL, token claims."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from xero_tui.core.endpoints import Endpoints

STATE_BYTES = 32  # 256 bits, well above the 128 the RFC asks for
VERIFIER_BYTES = 48  # 64 characters of the unreserved alphabet


def new_state() -> str:
    return secrets.token_urlsafe(STATE_BYTES)


def new_code_verifier() -> str:
    # token_urlsafe only uses A-Z a-z 0-9 - _ , all inside RFC 7636's unreserved set.
    return secrets.token_urlsafe(VERIFIER_BYTES)


def code_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class AuthRequest:
    """One authorization attempt: everything the callback and the token request must agree on."""

    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str
    code_verifier: str | None
    url: str


def build_auth_request(
    endpoints: Endpoints,
    client_id: str,
    redirect_uri: str,
    scopes: tuple[str, ...],
    *,
    pkce: bool = True,
) -> AuthRequest:
    state = new_state()
    verifier = new_code_verifier() if pkce else None
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(scopes),
        "state": state,
    }
    if verifier is not None:
        params["code_challenge"] = code_challenge(verifier)
        params["code_challenge_method"] = "S256"
    url = endpoints.authorize_url + "?" + urlencode(params, quote_via=quote)
    return AuthRequest(client_id, redirect_uri, scopes, state, verifier, url)


def decode_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified: used only to learn `authentication_event_id`, never trusted."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, UnicodeError):
        return {}
    return claims if isinstance(claims, dict) else {}
