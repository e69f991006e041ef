"""Xero's answers as the app reads them: the token answer's `expires_in`, and the app type's name."""

from __future__ import annotations

import pytest

from xero_tui.core.errors import OAuthError
from xero_tui.core.models import Kind
from xero_tui.core.xero import (
    ACCESS_TOKEN_LIFETIME,
    MAX_ACCESS_TOKEN_LIFETIME,
    oauth_error,
    tokens_from,
)
from xero_tui.emulator import Emulator

NOW = 1_000_000.0


def body(**fields: object) -> dict[str, object]:
    return {"access_token": "a.b.c", "refresh_token": "rotated", **fields}


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [
        (1800, 1800.0),
        (600.5, 600.5),
        ("1800", 1800.0),
        (" 900 ", 900.0),
    ],
)
def test_a_usable_expires_in_is_taken_as_given(expires_in: object, lifetime: float) -> None:
    tokens = tokens_from(body(expires_in=expires_in), now=NOW)
    assert tokens.expires_at == NOW + lifetime


@pytest.mark.parametrize(
    "expires_in",
    [
        "soon",
        "",
        None,
        -60,
        0,
        "-1",
        float("nan"),
        float("inf"),
        "inf",
        10**400,
        True,
        [1800],
        {"s": 1},
    ],
)
def test_an_unusable_expires_in_falls_back_to_xeros_documented_lifetime(
    expires_in: object,
) -> None:
    # The rest of the answer (the rotated refresh token above all) is kept, not lost to an error.
    tokens = tokens_from(body(expires_in=expires_in), now=NOW)
    assert tokens.expires_at == NOW + ACCESS_TOKEN_LIFETIME
    assert tokens.refresh_token == "rotated"


def test_a_missing_expires_in_falls_back_to_xeros_documented_lifetime() -> None:
    assert tokens_from(body(), now=NOW).expires_at == NOW + ACCESS_TOKEN_LIFETIME


def test_an_absurd_lifetime_is_capped() -> None:
    tokens = tokens_from(body(expires_in=10**12), now=NOW)
    assert tokens.expires_at == NOW + MAX_ACCESS_TOKEN_LIFETIME


@pytest.mark.parametrize("answer", [None, [], "text", {}, {"access_token": 42}])
def test_an_answer_without_an_access_token_is_a_typed_error(answer: object) -> None:
    with pytest.raises(OAuthError, match="no access token"):
        tokens_from(answer, now=NOW)


def test_the_pkce_type_has_one_name_and_the_checklist_gives_xeros_form_label_once() -> None:
    from xero_tui.core.models import Kind
    from xero_tui.core.xero import oauth_error
    from xero_tui.screens.checklist import steps_for

    assert Kind.PKCE.label == "Auth code with PKCE"
    assert Kind.PKCE.label in oauth_error("unauthorized_client", None, "code").message
    for kind in Kind:
        text = " ".join(f"{s.title} {s.body}" for s in steps_for(kind, "http://localhost:1/cb"))
        assert "PKCE app" not in text and text.count("Auth code with PKCE") >= 1
        assert text.count("Mobile or desktop app") == 1


async def test_invalid_scope_for_client_credentials_says_the_app_may_not_be_a_custom_connection(
    emulator: Emulator,
) -> None:
    """A Web app asking for client credentials gets Xero's invalid_scope ("Client credentials
    scope validation failed"), explained as the wrong app type, not as a granular-scope problem."""
    from xero_tui.core.http import HttpSettings
    from xero_tui.core.xero import XeroClient

    web = emulator.web_client
    async with XeroClient(emulator.endpoints, HttpSettings(retries=0)) as xero:
        with pytest.raises(OAuthError) as caught:
            await xero.client_credentials(web.client_id, web.client_secret or "", ())
    assert caught.value.error == "invalid_scope"
    assert caught.value.description == "Client credentials scope validation failed"
    assert "probably not a Custom connection" in caught.value.message
    assert "granular" not in caught.value.message
    # At the authorize step or on a refresh the same code still means broad scopes.
    assert "granular" in oauth_error("invalid_scope", None, "code").message


@pytest.mark.parametrize(
    ("uri", "noted"),
    [
        ("http://127.0.0.1:8719/callback", "http://localhost:8719/callback"),
        ("http://[::1]:8719/callback", "http://localhost:8719/callback"),
        ("http://localhost:8719/callback", None),
    ],
)
def test_a_loopback_ip_redirect_uri_is_noted_where_it_is_typed(uri: str, noted: str | None) -> None:
    """A 127.0.0.1 or [::1] redirect URI is accepted, with a note (in `connect` and the
    checklist) that Xero documents only localhost."""
    from xero_tui.core.validate import check_redirect_uri, redirect_uri_note
    from xero_tui.screens.checklist import steps_for

    assert check_redirect_uri(uri) == uri
    note = redirect_uri_note(uri)
    step = next(s for s in steps_for(Kind.WEB, uri) if s.key == "redirect")
    if noted is None:
        assert note is None and "documents only localhost" not in step.body
    else:
        assert note is not None and "Xero documents only localhost" in note and noted in note
        assert note in step.body


def test_connect_with_a_loopback_ip_redirect_uri_says_xero_documents_only_localhost(
    emulator: Emulator,
) -> None:
    """`connect --redirect-uri http://127.0.0.1:PORT/...` says, before the URL, that Xero
    documents only localhost, and still completes."""
    from tests.support.cli import start_connect
    from tests.support.net import free_port
    from xero_tui.emulator.consent import answer_consent

    web = emulator.web_client
    uri = f"http://127.0.0.1:{free_port()}/callback"
    emulator.register_client(web.client_id, web.client_secret, web.kind, redirect_uris=(uri,))
    proc = start_connect(emulator, "acme", "--no-browser", redirect=uri)
    answer_consent(proc.url(), follow_redirect=True)
    result = proc.finish()
    assert result.code == 0, result.err
    assert "Xero documents only localhost redirect URIs" in result.err
    assert result.err.index("documents only localhost") < result.err.index("/identity/connect")
