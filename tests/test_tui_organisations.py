"""The organisation picker: order and marks, filter, selection, keys, and 10,000 organisations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import Input, Static

from xero_tui.core.consent import ConsentOutcome
from xero_tui.core.models import Tenant, TokenSet, tier_notice
from xero_tui.screens.organisations import OrganisationsScreen, TenantList

UNSET = object()


def tenant(n: int, name: str, kind: str = "ORGANISATION") -> Tenant:
    return Tenant(f"conn-{n}", f"tenant-{n}", name, kind)


TENANTS = (
    tenant(1, "Wellington Widgets"),
    tenant(2, "Auckland Apples"),
    tenant(3, "demo company (NZ)"),
    tenant(4, "Christchurch Cycles", "PRACTICE"),
    tenant(5, "Dunedin Dairy"),
    tenant(6, "Napier Nurseries"),
)


def outcome(
    tenants: Sequence[Tenant] = TENANTS, new: Sequence[str] = ("tenant-1", "tenant-5")
) -> ConsentOutcome:
    tokens = TokenSet(access_token="not-shown", expires_at=0.0, refresh_token="not-shown")
    return ConsentOutcome(tokens, tuple(tenants), frozenset(new))


class PickerApp(App[None]):
    """Pushes the picker and keeps what it dismissed with."""

    def __init__(self, result: ConsentOutcome, saved: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.outcome = result
        self.saved = saved
        self.chosen: object = UNSET

    def on_mount(self) -> None:
        self.push_screen(OrganisationsScreen(self.outcome, self.saved), self._done)

    def _done(self, chosen: list[Tenant] | None) -> None:
        self.chosen = chosen


def picker(app: App[None]) -> OrganisationsScreen:
    screen = app.screen
    assert isinstance(screen, OrganisationsScreen)
    return screen


def shown_names(app: App[None]) -> list[str]:
    screen = picker(app)
    return [screen.tenants[i].tenant_name for i in screen.tenant_list.rows]


def rendered_rows(app: App[None]) -> list[str]:
    tenant_list = picker(app).tenant_list
    height = tenant_list.scrollable_content_region.height
    return [tenant_list.render_line(y).text for y in range(height)]


async def test_new_organisations_come_first_and_every_mark_shows() -> None:
    app = PickerApp(outcome(), saved=frozenset({"tenant-2", "tenant-5"}))
    async with app.run_test(size=(100, 24)) as pilot:
        await pilot.pause()
        # New ones first, then the rest, each part by name regardless of case.
        assert shown_names(app) == [
            "Dunedin Dairy",
            "Wellington Widgets",
            "Auckland Apples",
            "Christchurch Cycles",
            "demo company (NZ)",
            "Napier Nurseries",
        ]
        rows = rendered_rows(app)
        dunedin, wellington, auckland, christchurch = rows[:4]
        assert "[ ] Dunedin Dairy" in dunedin
        assert " new saved Organisation" in dunedin
        assert " new " in wellington and "saved" not in wellington
        assert "saved Organisation" in auckland and " new " not in auckland
        assert christchurch.rstrip().endswith("Practice")
        intro = str(app.screen.query_one("#org-intro").render())
        assert "6 organisations" in intro and "the 2 it just granted" in intro
        await app.workers.wait_for_complete()


async def test_typing_filters_by_name_case_insensitively() -> None:
    app = PickerApp(outcome())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.focused, Input)
        await pilot.press("C", "H")
        assert shown_names(app) == ["Christchurch Cycles"]
        await pilot.press("backspace", "backspace", "i", "N")
        assert shown_names(app) == ["Dunedin Dairy", "Wellington Widgets"]
        await pilot.press("x", "y", "z")
        assert shown_names(app) == []
        assert "No organisation matches the filter." in rendered_rows(app)[0]
        status = str(app.screen.query_one("#org-status").render())
        assert "0 of 6 shown" in status
        # Nothing to confirm: enter does nothing rather than dismissing with an empty list.
        await pilot.press("enter")
        assert app.chosen is UNSET
        await pilot.press("backspace", "backspace", "backspace", "backspace", "backspace")
        assert len(shown_names(app)) == 6
        await app.workers.wait_for_complete()


async def test_space_selects_several_and_enter_returns_them_in_list_order() -> None:
    app = PickerApp(outcome())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("down", "down", "space", "up", "up", "space")
        # Space selects; it never reaches the filter.
        assert app.screen.query_one(Input).value == ""
        assert "2 selected" in str(app.screen.query_one("#org-status").render())
        assert rendered_rows(app)[0].startswith(" [x] Dunedin Dairy")
        await pilot.press("enter")
        assert isinstance(app.chosen, list)
        assert [t.tenant_name for t in app.chosen] == ["Dunedin Dairy", "Auckland Apples"]
        await app.workers.wait_for_complete()


async def test_space_again_clears_a_selection_and_a_click_toggles() -> None:
    app = PickerApp(outcome())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("space", "space")
        assert picker(app).tenant_list.checked == set()
        await pilot.click(TenantList, offset=(10, 2))
        assert picker(app).tenant_list.checked == {2}
        assert picker(app).tenant_list.cursor == 2
        await app.workers.wait_for_complete()


async def test_selection_survives_filtering() -> None:
    app = PickerApp(outcome())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("n", "a", "p", "tab")
        await pilot.press("backspace", "backspace", "backspace", "w", "e", "l", "tab")
        await pilot.press("enter")
        assert isinstance(app.chosen, list)
        assert [t.tenant_name for t in app.chosen] == ["Wellington Widgets", "Napier Nurseries"]
        await app.workers.wait_for_complete()


def footer_keys(app: App[None]) -> dict[str, str]:
    """Key -> description of what the footer shows right now."""
    return {
        key: active.binding.description
        for key, active in app.screen.active_bindings.items()
        if active.enabled and active.binding.show
    }


def checked_names(app: App[None]) -> set[str]:
    screen = picker(app)
    return {screen.tenants[i].tenant_name for i in screen.tenant_list.checked}


async def test_a_space_after_text_is_typed_into_the_filter_and_tab_selects() -> None:
    app = PickerApp(outcome())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        # The footer names tab, which selects whatever the filter holds.
        assert footer_keys(app)["tab"] == "Select" and "space" not in footer_keys(app)
        await pilot.press(*"demo", "space", "c")
        assert app.screen.query_one(Input).value == "demo c"
        assert shown_names(app) == ["demo company (NZ)"]
        assert picker(app).tenant_list.checked == set()
        await pilot.press("tab")
        assert checked_names(app) == {"demo company (NZ)"}
        assert "1 selected" in str(app.screen.query_one("#org-status").render())
        await pilot.press("tab")
        assert picker(app).tenant_list.checked == set()
        # An emptied filter gives space back to selecting (the cursor stays on its
        # organisation); the placeholder says so.
        await pilot.press(*["backspace"] * 6, "space")
        assert app.screen.query_one(Input).value == ""
        assert checked_names(app) == {"demo company (NZ)"}
        assert "space or tab selects" in app.screen.query_one(Input).placeholder
        await pilot.press("enter")
        assert isinstance(app.chosen, list)
        assert [t.tenant_name for t in app.chosen] == ["demo company (NZ)"]
        await app.workers.wait_for_complete()


async def test_list_keys_leave_the_footer_while_nothing_matches() -> None:
    app = PickerApp(outcome())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("x", "y", "z")
        await pilot.pause()
        assert "tab" not in footer_keys(app) and "enter" not in footer_keys(app)
        await pilot.press("tab")
        assert picker(app).tenant_list.checked == set()
        await pilot.press("backspace", "backspace", "backspace")
        await pilot.pause()
        assert footer_keys(app)["tab"] == "Select" and footer_keys(app)["enter"] == "Connect"
        await app.workers.wait_for_complete()


async def test_backspace_and_retyping_give_the_same_rows_as_a_fresh_filter() -> None:
    many = [
        tenant(i, f"{('Alpha', 'Beta Ltd', 'Gamma Trading')[i % 3]} {i:03d}") for i in range(90)
    ]
    app = PickerApp(outcome(many, new=()))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = picker(app)
        for keys in (["t", "r"], ["backspace"], ["a", "d"], ["backspace"] * 4, ["0", "1"]):
            await pilot.press(*keys)
            query = screen.query_one(Input).value.casefold()
            expected = [
                i for i, t in enumerate(screen.tenants) if query in t.tenant_name.casefold()
            ]
            assert screen.tenant_list.rows == expected, query
        # Pasting a different text altogether starts again from every organisation.
        screen.query_one(Input).value = "beta"
        await pilot.pause()
        assert len(screen.tenant_list.rows) == 30
        await app.workers.wait_for_complete()


async def test_enter_without_a_selection_picks_the_highlighted_one() -> None:
    app = PickerApp(outcome())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("a", "u", "enter")
        assert isinstance(app.chosen, list)
        assert [t.tenant_id for t in app.chosen] == ["tenant-2"]
        await app.workers.wait_for_complete()


async def test_escape_cancels() -> None:
    app = PickerApp(outcome())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("space", "escape")
        assert app.chosen is None
        await app.workers.wait_for_complete()


async def test_list_keys_act_on_the_list_while_the_filter_keeps_focus() -> None:
    many = [tenant(i, f"Org {i:03d}") for i in range(100)]
    app = PickerApp(outcome(many, new=()))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        tenant_list = picker(app).tenant_list
        page = tenant_list.page
        await pilot.press("end")
        assert tenant_list.cursor == 99
        assert tenant_list.scroll_offset.y > 0
        await pilot.press("home")
        assert (tenant_list.cursor, tenant_list.scroll_offset.y) == (0, 0)
        await pilot.press("pagedown", "pagedown")
        assert tenant_list.cursor == 2 * page
        await pilot.press("pageup", "down")
        assert tenant_list.cursor == page + 1
        await pilot.press("up", "up", "up")
        assert tenant_list.cursor == page - 2
        assert isinstance(app.focused, Input)
        # home/end moved the list, not the filter's cursor; typing still filters.
        await pilot.press("0", "4", "2")
        assert shown_names(app) == ["Org 042"]
        await app.workers.wait_for_complete()


async def test_the_cursor_stays_on_its_organisation_while_the_filter_narrows() -> None:
    many = [tenant(i, f"Org {i:03d}") for i in range(100)]
    app = PickerApp(outcome(many, new=()))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = picker(app)
        screen.tenant_list.cursor = 42
        await pilot.press("4")
        current = screen.tenant_list.current
        assert current is not None
        assert screen.tenants[current].tenant_name == "Org 042"
        await app.workers.wait_for_complete()


async def test_names_with_terminal_escapes_are_shown_harmlessly() -> None:
    hostile = tenant(9, "Evil\x1b]52;c;aGk=\x07 Ltd\x1b[2J")
    app = PickerApp(outcome([hostile], new=()))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        row = rendered_rows(app)[0]
        assert "\x1b" not in row and "\x07" not in row
        assert "Evil Ltd" in row
        await app.workers.wait_for_complete()


async def test_an_empty_answer_says_so() -> None:
    app = PickerApp(outcome([], new=()))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert "Xero returned no organisations" in rendered_rows(app)[0]
        await pilot.press("space", "enter")
        assert app.chosen is UNSET
        await app.workers.wait_for_complete()


async def test_one_new_organisation_is_said_in_words() -> None:
    app = PickerApp(outcome(new=("tenant-3",)))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        intro = str(picker(app).query_one("#org-intro", Static).render())
        assert "the one it just granted comes first, marked new" in intro
        await app.workers.wait_for_complete()


async def test_more_than_the_starter_tier_is_said_once_and_nothing_is_refused() -> None:
    app = PickerApp(outcome(many_tenants(8), new=()))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = picker(app)
        line = screen.query_one("#org-tier", Static)
        for _ in range(5):
            await pilot.press("space", "down")
        assert not line.display
        await pilot.press("space")
        await pilot.pause()
        said = str(line.render())
        assert line.display and line.region.height >= 1 and line.region.bottom <= 23
        assert "Starter tier, which connects at most 5" in said
        assert said == tier_notice(6)
        # One line that stays while it applies, not a message at each selection.
        await pilot.press("down", "space")
        await pilot.pause()
        assert line.display and not app._notifications
        await pilot.press("space", "up", "space")
        await pilot.pause()
        assert not line.display
        await pilot.press("space", "down", "space", "enter")
        assert isinstance(app.chosen, list) and len(app.chosen) == 7
        await app.workers.wait_for_complete()


async def test_the_apps_saved_organisations_count_towards_the_starter_tier() -> None:
    tenants = many_tenants(8)
    saved = frozenset(t.tenant_id for t in tenants[:4]) | {"tenant-elsewhere"}
    app = PickerApp(outcome(tenants, new=()), saved=saved)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        line = picker(app).query_one("#org-tier", Static)
        # Five saved for this app: nothing said until one more is chosen.
        assert not line.display
        await pilot.press("end", "space")
        await pilot.pause()
        assert line.display
        await app.workers.wait_for_complete()


def test_tier_notice_only_past_the_starter_limit() -> None:
    assert tier_notice(0) is None and tier_notice(5) is None
    notice = tier_notice(6)
    assert notice is not None
    assert "Starter" in notice and "Core 50, Plus 1,000, Advanced 10,000" in notice


# 10,000 organisations ------------------------------------------------------------------------


def many_tenants(count: int = 10_000) -> list[Tenant]:
    words = ("Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel")
    return [
        tenant(i, f"{words[i % 8]} {words[(i // 8) % 8]} Trading {i:05d} Ltd") for i in range(count)
    ]


async def test_ten_thousand_organisations_list_filter_and_pick() -> None:
    """What 10,000 organisations cost to open and to filter per key is measured against a bare
    OptionList by `python -m tests.bench.run` (its picker and filter-keystroke rows)."""
    tenants = many_tenants()
    app = PickerApp(outcome(tenants, new=("tenant-9999",)))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = picker(app)
        assert len(screen.tenant_list.rows) == 10_000
        assert screen.tenants[0].tenant_id == "tenant-9999"
        await pilot.press("h", "o", "t")
        hot = [t for t in tenants if "hot" in t.tenant_name.casefold()]
        assert 0 < len(screen.tenant_list.rows) == len(hot) < 10_000
        await pilot.press("backspace", "backspace", "backspace")
        assert len(screen.tenant_list.rows) == 10_000
        await pilot.press("0", "0", "4", "2", "1")
        assert shown_names(app) == [tenants[421].tenant_name]
        await pilot.press("space", "enter")
        assert isinstance(app.chosen, list) and app.chosen[0].tenant_id == "tenant-421"
        await app.workers.wait_for_complete()


# Snapshots --------------------------------------------------------------------------------------


def snapshot_app() -> PickerApp:
    return PickerApp(outcome(), saved=frozenset({"tenant-2", "tenant-5"}))


async def select_two(pilot: Pilot[None]) -> None:
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    await pilot.press("space", "down", "down", "space", "down")
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
def test_snapshot_picker(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(snapshot_app(), terminal_size=size, run_before=select_two)


def test_snapshot_picker_filtered(snap_compare: Any) -> None:
    async def filtered(pilot: Pilot[None]) -> None:
        await select_two(pilot)
        await pilot.press("e", "l")
        await pilot.pause()

    assert snap_compare(snapshot_app(), terminal_size=(80, 24), run_before=filtered)


def id_token(**claims: str) -> str:
    """An ID token as Xero shapes it (unsigned here: its claims are only ever shown)."""
    import base64
    import json

    def part(data: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.signature"


async def test_the_picker_says_who_signed_in_before_anything_is_saved() -> None:
    """A consent someone else slipped in shows as someone else's, in plain text."""
    tokens = TokenSet(
        access_token="not-shown",
        expires_at=0.0,
        id_token=id_token(
            email="mallory@example.com", given_name="Mal\x1b]52;c;aGk=\x07lory", family_name="X"
        ),
    )
    app = PickerApp(ConsentOutcome(tokens, TENANTS, frozenset({"tenant-1"})))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        intro = str(picker(app).query_one("#org-intro", Static).render())
        assert "Signed in to Xero as Mallory X <mallory@example.com>." in intro
        assert "\x1b" not in intro


def test_without_an_id_token_no_user_is_claimed() -> None:
    assert outcome().user is None
