"""Xero's answers as the app reads them: the token answer's `expires_in`, and the app type's name."""

from __future__ import annotations

import pytest

from xero_tui.core.errors import OAuthError
from xero_tui.core.xero import ACCESS_TOKEN_LIFETIME, MAX_ACCESS_TOKEN_LIFETIME, tokens_from

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
