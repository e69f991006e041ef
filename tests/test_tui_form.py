"""Pilot tests of the connection form against the emulator: pasted refresh tokens, and what a
sign-in still applies to once the fields change."""

from __future__ import annotations

import threading

import pytest
from textual import constants, events
from textual.pilot import Pilot
from textual.widgets import Input, Static

from tests.support.saved import (
    CUSTOM_ID,
    WEB_ID,
    connect,
    make_connection,
    save_offline,
    save_three_connections,
)
from tests.support.tui import SIZE, fill, form, new_custom_connection_form, screen_text, wait_for
from xero_tui.app import XeroTuiApp
from xero_tui.core.config import Config
from xero_tui.core.models import Kind
from xero_tui.core.service import Service
from xero_tui.emulator import Emulator
from xero_tui.screens.confirm import YesNoScreen
from xero_tui.screens.connections import ConnectionsScreen
from xero_tui.screens.form import FormScreen
from xero_tui.screens.organisations import OrganisationsScreen


@pytest.fixture(autouse=True)
def no_animations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "TEXTUAL_ANIMATIONS", "none")


async def token_from_another_tool(emulator: Emulator) -> str:
    """A live refresh token for the demo web app, as another tool would hold it."""
    await connect(Service(), emulator, "elsewhere")
    token = emulator.current_refresh_token(emulator.web_client.client_id)
    assert token
    return token


async def open_form_with_app(app: XeroTuiApp, pilot: Pilot[None], emulator: Emulator) -> FormScreen:
    await pilot.pause()
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(app.screen, FormScreen))
    screen = form(app)
    client = emulator.web_client
    fill(
        screen,
        name="Pasted",
        client_id=client.client_id,
        client_secret=client.client_secret or "",
    )
    return screen


async def check_pasted_token(
    app: XeroTuiApp, pilot: Pilot[None], screen: FormScreen, token: str
) -> Input:
    """Paste `token` and press enter, the explicit action that uses it (Xero rotates it); the
    picker then lists the organisations it reaches."""
    box = screen.query_one("#refresh-token", Input)
    box.focus()
    fill(screen, refresh_token=token)
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, OrganisationsScreen))
    return box


def message(screen: FormScreen) -> str:
    return str(screen.query_one("#form-message", Static).render())


async def test_a_pasted_token_is_not_used_when_the_field_loses_focus(emulator: Emulator) -> None:
    token = await token_from_another_tool(emulator)
    refreshes = emulator.stats.refreshes
    app = XeroTuiApp(Service())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_form_with_app(app, pilot, emulator)
        screen.query_one("#refresh-token", Input).focus()
        fill(screen, refresh_token=token)
        await pilot.press("tab")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert emulator.stats.refreshes == refreshes
        assert app.screen is screen and screen.outcome is None
        # Nothing was used; only the typed client secret would be lost, and that is asked.
        screen.query_one("#refresh-token", Input).focus()
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, YesNoScreen))
        assert "client secret you typed" in screen_text(app)
        await pilot.press("tab", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConnectionsScreen))
        await app.workers.wait_for_complete()
    assert emulator.current_refresh_token(emulator.web_client.client_id) == token
    assert emulator.stats.refreshes == refreshes


async def test_leaving_with_a_checked_token_asks_and_stays_by_default(emulator: Emulator) -> None:
    token = await token_from_another_tool(emulator)
    service = Service()
    app = XeroTuiApp(service)
    client_id = emulator.web_client.client_id
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_form_with_app(app, pilot, emulator)
        box = await check_pasted_token(app, pilot, screen, token)
        rotated = emulator.current_refresh_token(client_id)
        assert rotated and rotated != token
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen)
        assert box.value == rotated

        # The client secret changes: the check no longer applies, but its token stays.
        fill(screen, client_secret="a-different-secret")
        await wait_for(pilot, lambda: screen.outcome is None)
        assert box.value == rotated
        assert "checked again" in message(screen)

        # The new token is kept as an unfinished sign-in; leaving still asks, Stay by default.
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, YesNoScreen))
        assert isinstance(app.screen, YesNoScreen)
        assert "unfinished sign-in" in app.screen.question
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.screen is screen)

        # With the right secret again, Save lists the organisations with the kept token (it
        # need not be used again) and saves it.
        fill(screen, client_secret=emulator.web_client.client_secret or "")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, OrganisationsScreen))
        await pilot.press("space", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConnectionsScreen))
        await app.workers.wait_for_complete()
    saved = [c for c in service.connections() if c.name.startswith("Pasted")]
    assert saved
    stored = service.secrets.get_tokens(saved[0].grant_id)
    latest = emulator.current_refresh_token(client_id)
    assert stored is not None and stored.refresh_token == latest == rotated


async def test_save_after_the_secret_changed_asks_for_a_new_sign_in(emulator: Emulator) -> None:
    service = Service()
    app = XeroTuiApp(service)
    client = emulator.custom_client
    async with app.run_test(size=SIZE) as pilot:
        screen = await new_custom_connection_form(app, pilot)
        secret = client.client_secret or ""
        fill(screen, name="Own", client_id=client.client_id, client_secret=secret)
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: screen.chosen)

        # Edited after Connect: the token came from the old secret, so nothing is saved.
        fill(screen, client_secret=secret + "-edited")
        await wait_for(pilot, lambda: screen.outcome is None)
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is screen
        assert service.connections() == []
        assert "Not saved" in message(screen)

        # Connect again with the secret it is saved with: Save stores that draft.
        fill(screen, client_secret=secret)
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: screen.chosen)
        assert screen.session is not None
        assert screen.session.draft.client_secret == secret
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ConnectionsScreen))
        await app.workers.wait_for_complete()
    [conn] = service.connections()
    assert conn.name == "Own"
    assert service.client_secret_for(client.client_id) == secret


async def test_keys_typed_after_tab_in_one_burst_go_to_the_next_field() -> None:
    """A password manager types "name<TAB>client id" in one write; the text after the tab belongs
    to the next field, even though the keys arrive before focus has moved."""
    app = XeroTuiApp(Service())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, FormScreen))
        screen = form(app)
        name = screen.query_one("#name", Input)
        name.focus()
        await pilot.pause()
        nxt = screen.focus_chain[screen.focus_chain.index(name) + 1]
        assert isinstance(nxt, Input)
        burst = [("a", "a"), ("b", "b"), ("tab", "\t"), ("c", "c"), ("d", "d")]
        for key, character in burst:
            app.post_message(events.Key(key, character))
        await wait_for(pilot, lambda: nxt.value == "cd")
        assert name.value == "ab" and app.focused is nxt


async def test_quitting_with_a_checked_token_asks_and_stays_by_default(emulator: Emulator) -> None:
    token = await token_from_another_tool(emulator)
    app = XeroTuiApp(Service())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_form_with_app(app, pilot, emulator)
        await check_pasted_token(app, pilot, screen, token)
        # Quit from the picker, above the form that holds the only copy of the new token.
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: isinstance(app.screen, YesNoScreen))
        assert "not saved yet" in screen_text(app)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, OrganisationsScreen))
        assert app.is_running
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: isinstance(app.screen, YesNoScreen))
        await pilot.press("tab", "enter")
        await wait_for(pilot, lambda: not app.is_running)


async def test_a_check_that_fails_after_xero_rotated_keeps_the_new_token_and_asks_on_leaving(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = await token_from_another_tool(emulator)
    client_id = emulator.web_client.client_id
    monkeypatch.setenv("XERO_TUI_HTTP_RETRIES", "0")
    app = XeroTuiApp(Service())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_form_with_app(app, pilot, emulator)
        box = screen.query_one("#refresh-token", Input)
        box.focus()
        fill(screen, refresh_token=token)
        # The refresh succeeds (Xero rotates), then listing the organisations fails.
        emulator.inject("connections", "status", status=503)
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        rotated = emulator.current_refresh_token(client_id)
        assert rotated and rotated != token
        await wait_for(pilot, lambda: box.value == rotated)
        assert screen.outcome is None and screen.holds_unsaved_token
        hint = str(screen.query_one("#refresh-token-hint", Static).render())
        assert "503" in hint and "press enter to check it again" in hint

        # The new token is kept (an unfinished sign-in): leaving asks, Stay by default.
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, YesNoScreen))
        assert isinstance(app.screen, YesNoScreen)
        assert "unfinished sign-in" in app.screen.question
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.screen is screen)

        # Checking again lists the organisations with the kept token: no second rotation.
        refreshes = emulator.stats.refreshes
        box.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, OrganisationsScreen))
        assert emulator.stats.refreshes == refreshes
    assert emulator.current_refresh_token(client_id) == rotated


async def test_an_opened_connection_saves_a_new_secret_but_not_a_new_app_without_a_sign_in() -> (
    None
):
    service = Service()
    # A custom connection's redirect URI plays no part, whatever was saved with it.
    save_offline(service, "own", Kind.CUSTOM, CUSTOM_ID, "t1")
    save_offline(service, "web", Kind.WEB, WEB_ID, "t2")
    app = XeroTuiApp(service)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = FormScreen(service, existing=service.connection("own"))
        await app.push_screen(screen)
        await wait_for(pilot, lambda: screen.query_one("#client-secret", Input).value != "")
        fill(screen, client_secret="a-new-secret", scopes="  ".join(reversed(screen._scopes())))
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.screen is not screen)
        assert service.client_secret_for(CUSTOM_ID) == "a-new-secret"

        screen = FormScreen(service, existing=service.connection("web"))
        await app.push_screen(screen)
        await wait_for(pilot, lambda: screen.query_one("#client-secret", Input).value != "")
        fill(screen, redirect_uri="http://localhost:8081/callback")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is screen and "take effect with a new sign-in" in message(screen)
        await app.workers.wait_for_complete()


async def test_quit_pressed_twice_asks_once_and_quit_then_quits(emulator: Emulator) -> None:
    token = await token_from_another_tool(emulator)
    app = XeroTuiApp(Service())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_form_with_app(app, pilot, emulator)
        await check_pasted_token(app, pilot, screen, token)
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: isinstance(app.screen, YesNoScreen))
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert sum(isinstance(s, YesNoScreen) for s in app.screen_stack) == 1
        await pilot.press("tab", "enter")
        await wait_for(pilot, lambda: not app.is_running)


class CountingService(Service):
    """Notes the thread of every config read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def load(self) -> Config:
        self.reads.append(threading.current_thread().name)
        return super().load()


async def test_typing_a_name_reads_no_config_on_the_ui_thread() -> None:
    save_three_connections()
    service = CountingService()
    app = XeroTuiApp(service)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "Alpha" in screen_text(app))
        await app.workers.wait_for_complete()
        # From before the form is pushed: the reads made while it mounts count too.
        service.reads.clear()
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, FormScreen))
        await pilot.press(*"Alpha")
        await wait_for(pilot, lambda: "already exists" in screen_text(app))
        assert service.reads, "the form never read the saved names"
        assert threading.main_thread().name not in service.reads
        # One saved meanwhile by another process is still caught on Save.
        await pilot.press("backspace", "backspace", "backspace", "backspace", "backspace")
        await pilot.press(*"Delta")
        await pilot.pause()
        assert "already exists" not in screen_text(app)
        Service().store.update(lambda c: c.connections.update(Delta=make_connection("Delta")))
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "'Delta' already exists" in screen_text(app))
        await app.workers.wait_for_complete()


async def test_a_hang_up_after_a_checked_token_is_offered_at_the_next_start_and_saved(
    emulator: Emulator,
) -> None:
    """The terminal closes (SIGHUP, as when an SSH session ends) with the picker open after a
    pasted token was checked: Xero has rotated it, and the next start finishes the sign-in."""
    import os
    import signal

    from xero_tui.screens.confirm import PendingScreen

    token = await token_from_another_tool(emulator)
    client_id = emulator.web_client.client_id
    app = XeroTuiApp(Service())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_form_with_app(app, pilot, emulator)
        await check_pasted_token(app, pilot, screen, token)
        rotated = emulator.current_refresh_token(client_id)
        assert rotated and rotated != token
        # The app's own handler, as the terminal would trigger it.
        assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN)
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_for(pilot, lambda: not app.is_running)

    service = Service()
    assert [p.name for p in service.load().pending.values()] == ["Pasted"]
    refreshes = emulator.stats.refreshes
    app = XeroTuiApp(service)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, PendingScreen))
        await wait_for(pilot, lambda: "'Pasted' was not finished" in screen_text(app))
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, OrganisationsScreen))
        await pilot.pause()
        await pilot.press("space", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, FormScreen) and form(app).chosen)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ConnectionsScreen))
        await app.workers.wait_for_complete()
    [saved] = [c for c in service.connections() if c.name == "Pasted"]
    stored = service.secrets.get_tokens(saved.grant_id)
    assert stored is not None and stored.refresh_token == rotated
    assert not service.load().pending
    # Finished with the kept token: Xero was not asked to rotate it again.
    assert emulator.stats.refreshes == refreshes


async def test_home_names_an_unfinished_sign_in_and_discards_it_at_xero(
    emulator: Emulator,
) -> None:
    from tests.support.cli import register_redirect
    from tests.support.session import sign_in
    from xero_tui.core.consent import ConnectionDraft
    from xero_tui.core.models import default_scopes
    from xero_tui.screens.confirm import PendingScreen

    client = emulator.web_client
    draft = ConnectionDraft(
        Kind.WEB,
        client.client_id,
        client.client_secret,
        register_redirect(emulator, client.client_id),
        default_scopes(Kind.WEB),
    )
    service = Service()
    await sign_in(service, draft, "Half done")
    app = XeroTuiApp(service)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, PendingScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ConnectionsScreen))
        text = screen_text(app)
        assert "Unfinished sign-in: 'Half done'" in text and "f Finish sign-in" in text
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, PendingScreen))
        await pilot.press("x")
        await wait_for(pilot, lambda: "Discarded" in screen_text(app))
        await app.workers.wait_for_complete()
        assert "Unfinished sign-in" not in screen_text(app)
    assert emulator.stats.revocations == 1
    assert not service.load().pending
