"""Data from Xero is hostile until checked (issue 11, item 2; security.md 49-50): every field is
validated on arrival, every text shown is stripped of Cc, Cf, Zl and Zp, typed names refuse
C0/C1, and a worker that fails unexpectedly still tells the screen in a sentence."""

from __future__ import annotations

import json
import sys
import unicodedata
import uuid
from pathlib import Path

import pytest
from textual.app import App
from textual.widgets import Static

from tests.support.cli import connect_web
from xero_tui.core.config import parse
from xero_tui.core.errors import EXIT_REFUSED, ConfigError, OAuthError, UsageError, clean_text
from xero_tui.core.http import HttpSettings
from xero_tui.core.service import Service
from xero_tui.core.validate import check_name
from xero_tui.core.xero import MAX_TOKEN_LENGTH, XeroClient, tokens_from
from xero_tui.emulator import Emulator

ESCAPES = "\x1b]52;c;cHduZWQ=\x07\x1b[2J\x1b[H"
# Bidi override, zero-width space and joiner, line and paragraph separators, NEL, soft hyphen.
INVISIBLE = "\u202e\u200b\u200d\u2028\u2029\x85\u00ad\u2066"
HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp"})
SETTINGS = HttpSettings(timeout=5, retries=0)


def entry(**changes: object) -> dict[str, object]:
    item: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "authEventId": str(uuid.uuid4()),
        "tenantId": str(uuid.uuid4()),
        "tenantType": "ORGANISATION",
        "tenantName": "Acme Ltd",
        "createdDateUtc": "2019-12-07T18:46:19.5165400",
        "updatedDateUtc": "2019-12-07T18:46:19.5165400",
    }
    item.update(changes)
    return item


async def listed(emu: Emulator, items: list[dict[str, object]]) -> list[object]:
    """What `XeroClient.connections` makes of `/connections` answering `items`."""
    emu.inject("connections", "answer", body=json.dumps(items))
    async with XeroClient(emu.endpoints, SETTINGS) as xero:
        return list(await xero.connections("any-token"))


@pytest.mark.parametrize(
    "changes",
    [
        {"tenantId": "\u202e" + str(uuid.uuid4())},
        {"tenantId": "0" * 36},
        {"id": "../../connections"},
        {"tenantType": "ORGANISATION" + ESCAPES},
        {"tenantType": "\u202eNOITASINAGRO"},
        {"authEventId": "\x1b[2J"},
        {"tenantId": 42},
    ],
    ids=["bidi-id", "not-uuid", "path-id", "osc52-type", "bidi-type", "csi-event", "number"],
)
async def test_a_connections_answer_with_a_malformed_field_is_refused_with_a_sentence(
    emulator: Emulator, changes: dict[str, object]
) -> None:
    """A `/connections` entry whose id, tenantId or authEventId is not UUID-shaped, or whose
    tenantType is not a plain word, refuses the answer with one sentence free of escapes."""
    with pytest.raises(OAuthError) as caught:
        await listed(emulator, [entry(), entry(**changes)])
    message = str(caught.value)
    assert message.startswith("Xero's connections answer had a") and "refused" in message
    assert clean_text(message, 10_000) == message


async def test_known_and_plain_new_tenant_types_are_kept(emulator: Emulator) -> None:
    """Xero's known tenant types, and a new plain upper-case word, are taken as given."""
    types = ["ORGANISATION", "PRACTICE", "PRACTICEMANAGER", "WORKFLOWMAX", "NEW_KIND2"]
    tenants = await listed(emulator, [entry(tenantType=t) for t in types])
    assert [t.tenant_type for t in tenants] == types  # type: ignore[attr-defined]


async def test_a_hostile_tenant_name_reaches_nothing_with_its_escapes_or_invisible_characters(
    emulator: Emulator,
) -> None:
    """A tenantName of escapes, bidi, zero-width and separator characters and 10,000 letters
    arrives as plain text of at most 500 characters."""
    name = f"Acme{ESCAPES}{INVISIBLE}Ltd" + "x" * 10_000
    (tenant,) = await listed(emulator, [entry(tenantName=name)])
    shown = tenant.tenant_name  # type: ignore[attr-defined]
    assert shown.startswith("AcmeLtdxxx") and len(shown) <= 500
    assert not any(unicodedata.category(ch) in HIDDEN for ch in shown)


async def test_a_tenant_id_that_is_not_an_id_never_reaches_the_tenant_header(
    emulator: Emulator,
) -> None:
    """The Organisation call refuses a tenant id that is not a UUID with a sentence before any
    request (U+202E in `xero-tenant-id` used to raise UnicodeEncodeError in httpx)."""
    before = emulator.stats.api_calls
    async with XeroClient(emulator.endpoints, SETTINGS) as xero:
        with pytest.raises(UsageError, match="not an id from Xero"):
            await xero.organisation("any-token", "\u202e" + str(uuid.uuid4()))
        with pytest.raises(UsageError, match="connection id from Xero"):
            await xero.delete_connection("any-token", "../tenants")
    assert emulator.stats.api_calls == before


def good_token_answer(**changes: object) -> dict[str, object]:
    return {
        "access_token": "eyJ.a-b_c.d",
        "refresh_token": "0123abcd",
        "id_token": "eyJ.x.y",
        "scope": "openid offline_access accounting.settings",
        "expires_in": 1800,
        **changes,
    }


@pytest.mark.parametrize(
    "changes",
    [
        {"access_token": "eyJ." + ESCAPES},
        {"access_token": "a" * (MAX_TOKEN_LENGTH + 1)},
        {"refresh_token": "abc\ndef"},
        {"refresh_token": "clé"},
        {"refresh_token": ["list"]},
        {"id_token": "x y"},
        {"scope": "openid accounting.settings\u202e"},
    ],
    ids=["escapes", "too-long", "newline", "non-ascii", "not-a-string", "space", "bidi-scope"],
)
def test_a_token_answer_whose_tokens_are_not_printable_ascii_is_refused(
    changes: dict[str, object],
) -> None:
    """Tokens must be printable ASCII of bounded length and scopes printable words; anything
    else refuses the token answer with a sentence (`invalid_response`)."""
    assert tokens_from(good_token_answer()).refresh_token == "0123abcd"
    with pytest.raises(OAuthError) as caught:
        tokens_from(good_token_answer(**changes))
    assert caught.value.error == "invalid_response"
    assert "Xero's token answer" in str(caught.value) and ESCAPES not in str(caught.value)


def test_clean_text_strips_every_cc_cf_zl_and_zp_character() -> None:
    """Every character of Unicode categories Cc, Cf, Zl and Zp is stripped from shown text, and
    ordinary letters, marks, emoji and spaces are kept."""
    hidden = "".join(
        chr(code) for code in range(sys.maxunicode + 1) if unicodedata.category(chr(code)) in HIDDEN
    )
    assert len(hidden) > 200
    assert clean_text(hidden, 10_000) == ""
    kept = "Ōtautahi Ngā Mahi 🥝 (NZ) — 東京\u00a0Ltd"
    assert clean_text(f"{kept[:9]}{INVISIBLE}{kept[9:]}") == kept


@pytest.mark.parametrize("bad", ["\x85", "\x9b31m", "\u202e", "\u2028", "\u200b", "\x1b", "\x7f"])
def test_a_typed_name_with_c0_c1_or_invisible_characters_is_refused(bad: str) -> None:
    """A typed connection name with a C0 or C1 control, a bidi or zero-width character or a
    line separator is refused with a sentence; names in any script are accepted."""
    assert check_name("Ōtautahi Ngā Mahi 🥝") == "Ōtautahi Ngā Mahi 🥝"
    with pytest.raises(UsageError, match="80 printable characters"):
        check_name(f"Acme{bad}Ltd")


def test_a_line_separator_inside_a_config_string_does_not_shift_error_line_numbers(
    tmp_path: Path,
) -> None:
    """U+2028 in a TOML string is not a line break: a later error still names its real line."""
    text = (
        'schema = 1\n\n[connections.acme]\nkind = "web"\nclient_id = "c"\n'
        'tenant_id = "t"\ntenant_name = "Acme\u2028Ltd"\ngrant = "g1"\n'
        "created = 2026-11-28T10:00:00Z\nstatus = 5\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse(text, tmp_path / "config.toml")
    assert f"{tmp_path / 'config.toml'} line 10:" in str(caught.value)


def test_connect_refuses_a_hostile_connections_answer_in_one_clean_sentence(
    emulator: Emulator,
) -> None:
    """`connect` with a `/connections` answer carrying an OSC 52 tenantType exits 6 with one
    sentence, and no escape reaches its output."""
    hostile = json.dumps([entry(tenantType="ORGANISATION" + ESCAPES)])
    emulator.inject("connections", "answer", count=2, body=hostile)
    result = connect_web(emulator, "acme")
    assert result.code == EXIT_REFUSED, result.err
    assert "\x1b" not in result.out + result.err
    assert "Xero's connections answer had a tenantType" in result.err


class _FailingService(Service):
    async def test(self, name: str) -> object:  # type: ignore[override]
        raise UnicodeEncodeError("ascii", "\u202e", 0, 1, "ordinal not in range(128)")

    def health(self, *args: object, **kwargs: object) -> list[object]:  # type: ignore[override]
        raise RuntimeError("a bug")


async def test_an_unexpected_failure_in_the_test_dialog_ends_with_a_sentence() -> None:
    """The Test dialog whose work fails with an unexpected error shows a sentence instead of
    staying blank."""
    from xero_tui.screens.test_result import TestResultScreen

    screen = TestResultScreen(_FailingService(), "acme")

    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(screen)

    async with Host().run_test() as pilot:
        for _ in range(100):
            if screen.outcome is not None:
                break
            await pilot.pause(0.05)
        shown = str(screen.query_one("#test-error", Static).render())
    assert "Unexpected UnicodeEncodeError" in shown and "XERO_TUI_DEBUG" in shown


async def test_an_unexpected_failure_of_a_home_screen_worker_reaches_its_message_line() -> None:
    """A home-screen worker that fails with an error it does not handle says so, in a
    sentence, on the screen's message line."""
    from xero_tui.app import XeroTuiApp
    from xero_tui.screens.connections import ConnectionsScreen

    app = XeroTuiApp(_FailingService())
    async with app.run_test(size=(100, 30)) as pilot:
        shown = ""
        for _ in range(100):
            await pilot.pause(0.05)
            if isinstance(app.screen, ConnectionsScreen):
                shown = str(app.screen.query_one("#home-message", Static).render())
                if shown:
                    break
    assert "Unexpected RuntimeError" in shown
