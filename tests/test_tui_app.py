"""Pilot tests of the app shell and its screens: home, form, checklist, test result, delete.

The journey tests run against the emulator with a BROWSER script that answers the consent page
over HTTP, as a person in a browser would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import keyring
import pytest
from textual import constants
from textual.binding import BindingType
from textual.pilot import Pilot
from textual.widgets import Button, Checkbox, DataTable, Input, RadioButton, Select, Static

from tests.support.keyring_faults import HangingKeyring, RaisingKeyring
from tests.support.saved import connect, save_three_connections
from tests.support.tui import (
    SIZE,
    fill,
    form,
    new_custom_connection_form,
    run_from_palette,
    screen_text,
    wait_for,
)
from xero_tui.app import XeroTuiApp
from xero_tui.core.config import Config
from xero_tui.core.models import Kind, Status, TokenSet
from xero_tui.core.secrets import KeyringStore
from xero_tui.core.service import Service
from xero_tui.emulator import DemoClient, Emulator
from xero_tui.emulator.consent import answer_consent
from xero_tui.screens.checklist import ChecklistScreen, steps_for
from xero_tui.screens.confirm import DeleteScreen, YesNoScreen
from xero_tui.screens.connections import ConnectionsScreen
from xero_tui.screens.consent import ConsentScreen
from xero_tui.screens.form import FormScreen, connection_names
from xero_tui.screens.organisations import OrganisationsScreen
from xero_tui.screens.test_result import TestResultScreen

ROOT = Path(__file__).resolve().parent.parent
BROWSER_SCRIPT = ROOT / "tests" / "support" / "browser_script.py"


def home(app: XeroTuiApp) -> ConnectionsScreen:
    screen = app.screen
    assert isinstance(screen, ConnectionsScreen)
    return screen


def footer_keys(app: XeroTuiApp) -> set[str]:
    return {b.binding.action for b in app.screen.active_bindings.values() if b.enabled}


@pytest.fixture(autouse=True)
def no_animations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scrolling into view is instant, so key presses do not wait for animations."""
    monkeypatch.setattr(constants, "TEXTUAL_ANIMATIONS", "none")


def free_redirect_uri(emu: Emulator, client: DemoClient) -> str:
    """A redirect URI on a port nobody uses, registered for `client`.

    Other xero-tui processes on this machine (a demo, a parallel test run) may hold the default
    port; the tests do not depend on it being free.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri = f"http://localhost:{port}/callback"
    emu.register_client(
        client.client_id, client.client_secret, client.kind, (*client.redirect_uris, uri)
    )
    return uri


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """BROWSER answers the emulator's consent page; its errors land in the returned log."""
    log = tmp_path / "browser.log"
    monkeypatch.setenv("BROWSER", f"{sys.executable} {BROWSER_SCRIPT} %s")
    monkeypatch.setenv("XERO_TUI_TEST_BROWSER_LOG", str(log))
    return log


# Home --------------------------------------------------------------------------------------------


async def test_home_empty_state_says_what_to_do_first() -> None:
    app = XeroTuiApp(Service())
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "No connections yet" in screen_text(app))
        assert "press k" in screen_text(app) and "Press n" in screen_text(app)
        keys = footer_keys(app)
        assert {"new", "checklist"} <= keys
        # Row actions are hidden while there is no row to act on.
        for action in ("test", "reconnect", "delete", "copy_token"):
            assert not home(app).check_action(action, ())
        await app.workers.wait_for_complete()


async def test_home_shows_a_corrupt_config_instead_of_crashing(isolated_env: Path) -> None:
    isolated_env.mkdir(parents=True)
    (isolated_env / "config.toml").write_text("schema = 1\n[connections\n")
    app = XeroTuiApp(Service())
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "config.toml line 2" in screen_text(app))
        await app.workers.wait_for_complete()
    assert (isolated_env / "config.toml").read_text() == "schema = 1\n[connections\n"


@pytest.fixture
def raising_keyring() -> Iterator[None]:
    previous = keyring.get_keyring()
    keyring.set_keyring(RaisingKeyring())
    yield
    keyring.set_keyring(previous)


@pytest.fixture
def hanging_keyring() -> Iterator[None]:
    previous = keyring.get_keyring()
    HangingKeyring.release.clear()
    keyring.set_keyring(HangingKeyring())
    yield
    HangingKeyring.release.set()
    keyring.set_keyring(previous)


async def home_keeps_rows_without_secrets(service: Service, why: str) -> None:
    app = XeroTuiApp(service)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: why in screen_text(app))
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = home(app)
        table = screen.query_one(DataTable)
        assert table.display and table.row_count == 3
        shown = screen_text(app)
        assert "Alpha" in shown and "Charlie" in shown
        assert shown.count("keyring unavailable") == 3
        # Every key that acts on a row is still there.
        assert {"open_row", "test", "reconnect", "delete", "copy_token"} <= footer_keys(app)
        assert "⏎ Open" in shown


@pytest.mark.usefixtures("raising_keyring")
async def test_home_keeps_the_rows_when_the_keyring_fails() -> None:
    await home_keeps_rows_without_secrets(save_three_connections(), "collection is locked")


@pytest.mark.usefixtures("hanging_keyring")
async def test_home_keeps_the_rows_when_the_keyring_does_not_answer() -> None:
    service = save_three_connections()
    service._secrets = KeyringStore(timeout=0.2)
    await home_keeps_rows_without_secrets(service, "did not answer")


async def test_reloading_keeps_the_named_keyring_on_the_storage_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = save_three_connections()
    app = XeroTuiApp(service)
    shown: list[str] = []
    show = app.show_storage
    monkeypatch.setattr(app, "show_storage", lambda d: (shown.append(d), show(d)))
    async with app.run_test(size=SIZE) as pilot:
        full = service.secrets.description
        await wait_for(pilot, lambda: f"Secrets: {full}" in screen_text(app))
        await app.workers.wait_for_complete()
        home(app).reload()
        await app.workers.wait_for_complete()
        await pilot.pause()
    # Once the keyring has been named, the config's bare "keyring" never replaces it.
    assert full in shown and full != "keyring"
    assert "keyring" not in shown[shown.index(full) :]


@pytest.mark.parametrize("corrupt", [False, True])
async def test_home_without_a_table_offers_no_open_key(isolated_env: Path, corrupt: bool) -> None:
    if corrupt:
        isolated_env.mkdir(parents=True)
        (isolated_env / "config.toml").write_text("schema = 1\n[connections\n")
    app = XeroTuiApp(Service())
    async with app.run_test(size=SIZE) as pilot:
        why = "config.toml line 2" if corrupt else "No connections yet"
        await wait_for(pilot, lambda: why in screen_text(app))
        await app.workers.wait_for_complete()
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConnectionsScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ConnectionsScreen))
        await pilot.pause()
        assert "open_row" not in footer_keys(app)
        assert "Open" not in screen_text(app)
        await app.workers.wait_for_complete()


async def test_token_key_is_hidden_while_the_tokens_are_missing() -> None:
    # The keyring answers, but holds no tokens for these connections.
    app = XeroTuiApp(save_three_connections())
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "tokens missing: reconnect" in screen_text(app))
        await app.workers.wait_for_complete()
        await pilot.pause()
        keys = footer_keys(app)
        assert {"test", "reconnect", "delete"} <= keys
        assert "copy_token" not in keys
        assert "Token" not in screen_text(app)


async def test_palette_runs_the_home_screens_and_the_apps_commands() -> None:
    app = XeroTuiApp(save_three_connections())
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "Bravo" in screen_text(app))
        await run_from_palette(pilot, "delete br", "Delete Bravo")
        await wait_for(pilot, lambda: isinstance(app.screen, DeleteScreen))
        dialog = app.screen
        assert isinstance(dialog, DeleteScreen) and dialog.connection.name == "Bravo"
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ConnectionsScreen))
        await run_from_palette(pilot, "checklist", "Create the Xero app (checklist)")
        await wait_for(pilot, lambda: isinstance(app.screen, ChecklistScreen))
        await app.workers.wait_for_complete()
    assert len(Service().connections()) == 3


async def test_quit_asks_nothing_without_a_consent_in_flight() -> None:
    app = XeroTuiApp(Service())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert not app.is_running


async def test_quit_asks_while_a_consent_is_in_flight() -> None:
    app = XeroTuiApp(Service())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        with app.consent_guard():
            await pilot.press("ctrl+q")
            await wait_for(pilot, lambda: isinstance(app.screen, YesNoScreen))
            await pilot.press("enter")  # focus starts on "Stay"
            await pilot.pause()
            assert app.is_running and isinstance(app.screen, ConnectionsScreen)
            await pilot.press("ctrl+q")
            await wait_for(pilot, lambda: isinstance(app.screen, YesNoScreen))
            await pilot.press("tab", "enter")
            await pilot.pause()
        assert not app.is_running


async def test_consent_that_finishes_under_the_quit_question_waits_for_its_answer(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    app = XeroTuiApp(Service())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, FormScreen))
        await pilot.press(*"acme")
        fill(
            form(app),
            client_id=emulator.web_client.client_id,
            client_secret=emulator.web_client.client_secret or "",
            redirect_uri=free_redirect_uri(emulator, emulator.web_client),
        )
        await pilot.press("ctrl+g")
        await wait_for(
            pilot, lambda: isinstance(app.screen, ConsentScreen) and app.screen.attempt is not None
        )
        screen = app.screen
        assert isinstance(screen, ConsentScreen) and screen.attempt is not None
        url = screen.attempt.url
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: isinstance(app.screen, YesNoScreen))
        question = app.screen
        # Xero redirects back while the question is up; the loopback page answers only once
        # the code has been exchanged, so the consent has its outcome when this returns.
        await asyncio.to_thread(answer_consent, url, follow_redirect=True)
        await wait_for(pilot, lambda: screen.attempt is None)
        await pilot.pause(0.3)
        assert app.screen is question and app.screen_stack[-2] is screen
        await pilot.press("enter")  # Stay
        await wait_for(pilot, lambda: isinstance(app.screen, OrganisationsScreen))
        assert app.is_running
        await pilot.press("escape")
        await app.workers.wait_for_complete()


async def test_banner_when_endpoints_are_overridden(emulator: Emulator) -> None:
    app = XeroTuiApp(Service())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert emulator.url in screen_text(app)
        await pilot.press("k")
        await wait_for(pilot, lambda: isinstance(app.screen, ChecklistScreen))
        assert "endpoints overridden" in screen_text(app)
        await app.workers.wait_for_complete()


async def test_at_60_columns_every_key_status_and_app_type_is_whole() -> None:
    service = save_three_connections()

    def unused(config: Config) -> None:
        config.connections["Charlie"].status = Status.NEEDS_RECONNECT

    service.store.update(unused)
    # Tokens stored, so that every key on the row applies (c Token needs them).
    service.secrets.put_tokens("g1", TokenSet("access", time.time() + 1800, "refresh"))
    app = XeroTuiApp(service)
    async with app.run_test(size=(60, 20)) as pilot:
        await wait_for(pilot, lambda: "needs reconnect" in screen_text(app))
        await app.workers.wait_for_complete()
        await pilot.pause()
        footer = screen_text(app).splitlines()[-1]
        for key in ("n New", "t Test", "r Reconnect", "d Delete", "c Token", "k Setup", "^q Quit"):
            assert key in footer, footer
        row = next(line for line in screen_text(app).splitlines() if "Charlie" in line)
        assert "needs reconnect" in row
        # Enter still opens, though the footer has no room to say so.
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, FormScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ConnectionsScreen))
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, FormScreen))
        await pilot.pause()
        form = screen_text(app)
        for label in ("Web app", "Auth code with PKCE", "Custom connection"):
            assert label in form, form
        await app.workers.wait_for_complete()


@pytest.mark.parametrize("size", [(60, 20), (80, 24), (100, 36)], ids=lambda s: f"{s[0]}x{s[1]}")
async def test_with_an_unfinished_sign_in_the_footer_still_fits(size: tuple[int, int]) -> None:
    from datetime import UTC, datetime

    from xero_tui.core.models import PendingSignIn
    from xero_tui.screens.confirm import PendingScreen

    service = save_three_connections()

    def kept(config: Config) -> None:
        config.pending["g9"] = PendingSignIn(
            "g9",
            "Books",
            Kind.WEB,
            "A" * 32,
            "http://localhost:8719/callback",
            (),
            datetime(2026, 11, 28, tzinfo=UTC),
        )

    service.store.update(kept)
    service.secrets.put_tokens("g1", TokenSet("access", time.time() + 1800, "refresh"))
    app = XeroTuiApp(service)
    async with app.run_test(size=size) as pilot:
        # Offered once at start; later, the home screen keeps the key.
        await wait_for(pilot, lambda: isinstance(app.screen, PendingScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ConnectionsScreen))
        await app.workers.wait_for_complete()
        await pilot.pause()
        text = screen_text(app)
        footer = text.splitlines()[-1]
        keys = ["n New", "t Test", "r Reconnect", "d Delete", "c Token", "k Setup", "^q Quit"]
        if size[0] >= 80:
            keys.append("f Finish sign-in")
        for key in keys:
            assert key in footer, footer
        # Nothing is cut at the right edge: the last key shown ends inside the line.
        assert footer.rstrip() == footer.rstrip()[: size[0]] and len(footer.rstrip()) < size[0]
        # Where the footer has no room for f, the line of unfinished sign-ins names it.
        assert "f finishes or discards it" in " ".join(text.split())
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, PendingScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ConnectionsScreen))
        await app.workers.wait_for_complete()


# Checklist ---------------------------------------------------------------------------------------


def test_checklist_text_follows_the_app_type() -> None:
    redirect = "http://localhost:9000/cb"
    web = {s.key: s for s in steps_for(Kind.WEB, redirect)}
    pkce = {s.key: s for s in steps_for(Kind.PKCE, redirect)}
    custom = {s.key: s for s in steps_for(Kind.CUSTOM, redirect)}
    assert web["redirect"].value == redirect and "secret" in web
    assert "Xero" in web["name"].body and "shows it once" in web["secret"].body
    assert "secret" not in pkce and pkce["redirect"].value == redirect
    assert "redirect" not in custom and {"scopes", "user", "secret"} <= set(custom)
    assert "accounting.contacts" in (custom["scopes"].value or "")
    assert web["login"].value == "https://developer.xero.com/myapps"
    for kind in Kind:
        # One line on when to pick each type, whichever is chosen.
        text = {s.key: s for s in steps_for(kind, redirect)}["type"].body
        assert "Web app" in text and "PKCE" in text and "Custom connection" in text
        assert "AU, NZ, UK and US only" in text


def test_checklist_says_a_new_app_connects_five_organisations() -> None:
    for kind in (Kind.WEB, Kind.PKCE):
        created = {s.key: s for s in steps_for(kind, "http://localhost:9000/cb")}["create"].body
        assert "Starter tier, which connects at most 5 organisations" in created
        assert "Core 50, Plus 1,000, Advanced 10,000" in created


async def test_checklist_ticks_progress_copy_and_type_switch() -> None:
    app = XeroTuiApp(Service())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("k")
        await wait_for(pilot, lambda: isinstance(app.screen, ChecklistScreen))
        screen = app.screen
        assert isinstance(screen, ChecklistScreen)
        await pilot.press("space", "down", "space")
        assert "2 of 9 steps done" in str(screen.query_one("#checklist-count", Static).render())
        assert app.checklist_ticks == {"login", "new-app"}
        await pilot.press(*["down"] * 4)  # the redirect URI step
        assert "copy" in footer_keys(app)
        await pilot.press("c")
        assert app._clipboard == "http://localhost:8719/callback"
        # The PKCE type has no secret step; ticks are kept.
        await pilot.press("t", "right", "enter")
        await pilot.pause()
        assert screen.kind is Kind.PKCE
        assert "2 of 8 steps done" in str(screen.query_one("#checklist-count", Static).render())
        assert "Generate a secret" not in screen_text(app)
        await pilot.press("escape")
        assert isinstance(app.screen, ConnectionsScreen)
        await app.workers.wait_for_complete()


# Form --------------------------------------------------------------------------------------------


async def test_save_is_refused_and_says_which_fields_are_missing() -> None:
    app = XeroTuiApp(Service())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, FormScreen))
        await pilot.press("ctrl+s")
        await pilot.pause()
        message = str(form(app).query_one("#form-message", Static).render())
        for label in ("Name", "Client ID", "Client Secret", "Refresh Token", "Organisation"):
            assert label in message
        assert form(app).focused is form(app).query_one("#name", Input)
        # Inline check of the client ID as it is typed.
        await pilot.press("tab", *"abc")
        hint = form(app).query_one("#client-id-hint", Static)
        assert hint.display and "32 hexadecimal" in str(hint.render())
        fill(form(app), client_id="0123456789abcdef0123456789ABCDEF")
        await pilot.pause()
        assert not hint.display
        await app.workers.wait_for_complete()


async def test_form_follows_the_app_type_and_masks_secrets() -> None:
    app = XeroTuiApp(Service())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, FormScreen))
        screen = form(app)
        secret = screen.query_one("#client-secret", Input)
        token = screen.query_one("#refresh-token", Input)
        assert secret.password and token.password
        fill(screen, client_secret="top-secret-value")
        await pilot.pause()
        assert "top-secret-value" not in screen_text(app)
        await pilot.press("ctrl+t")
        assert not secret.password and not token.password
        await pilot.press("ctrl+t")
        assert secret.password

        def pick(kind: Kind) -> None:
            for button in screen.query("#kind RadioButton").results(RadioButton):
                if button.name == kind.value:
                    button.value = True

        pick(Kind.PKCE)
        await pilot.pause()
        assert not screen.query_one("#client-secret-row").display
        assert screen.query_one("#refresh-token-row").display
        pick(Kind.CUSTOM)
        await pilot.pause()
        assert screen.query_one("#client-secret-row").display
        assert not screen.query_one("#refresh-token-row").display
        assert not screen.query_one("#redirect-uri-row").display
        assert str(screen.query_one("#generate", Button).label) == "Connect"
        assert "offline_access" not in screen.query_one("#scopes", Input).value
        screen.query_one("#legacy", Checkbox).value = True
        await pilot.pause()
        assert "accounting.transactions" in screen.query_one("#scopes", Input).value
        await app.workers.wait_for_complete()


def test_connection_names_one_per_organisation() -> None:
    from xero_tui.core.models import Tenant

    one = Tenant("c1", "t1", "Acme Ltd")
    two = Tenant("c2", "t2", "Beta Ltd")
    assert connection_names(" Sync ", [one]) == [("Sync", one)]
    assert connection_names("Sync", [one, two]) == [
        ("Sync - Acme Ltd", one),
        ("Sync - Beta Ltd", two),
    ]


# Journeys against the emulator -------------------------------------------------------------------


async def new_connection(
    app: XeroTuiApp, pilot: Pilot[None], emu: Emulator, name: str, pick: int
) -> None:
    """n, fill in, Generate; the BROWSER script consents; pick `pick` organisations; save."""
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(app.screen, FormScreen))
    screen = form(app)
    await pilot.press(*name)
    fill(
        screen,
        client_id=emu.web_client.client_id,
        client_secret=emu.web_client.client_secret or "",
        redirect_uri=free_redirect_uri(emu, emu.web_client),
    )
    await pilot.press("ctrl+g")
    await wait_for(pilot, lambda: isinstance(app.screen, OrganisationsScreen), timeout=30)
    for _ in range(pick):
        await pilot.press("space", "down")
    await pilot.press("enter")
    await wait_for(pilot, lambda: app.screen is screen and screen.chosen)
    assert screen.query_one("#refresh-token", Input).password
    await pilot.press("ctrl+s")
    await wait_for(pilot, lambda: isinstance(app.screen, ConnectionsScreen))


async def test_journey_new_test_reconnect_delete(
    emulator: Emulator, browser: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenants = emulator.tenants
    monkeypatch.setenv("XERO_TUI_TEST_TENANTS", ",".join(t.tenant_id for t in tenants[:2]))
    service = Service()
    app = XeroTuiApp(service)
    secret = emulator.web_client.client_secret or ""
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await new_connection(app, pilot, emulator, "Sync", pick=2)
        table = home(app).query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 2)
        names = sorted(c.name for c in service.connections())
        assert names == sorted(f"Sync - {t.name}" for t in tenants[:2])
        assert len({c.grant_id for c in service.connections()}) == 1
        text = screen_text(app)
        assert secret not in text and "ok" in text

        # Test: refresh and read the organisation.
        first = home(app).selected_name()
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, TestResultScreen))
        result = app.screen
        assert isinstance(result, TestResultScreen)
        await wait_for(pilot, lambda: result.outcome is not None)
        shown = str(result.query_one("#test-result", Static).render())
        tenant = next(t for t in tenants if first and first.endswith(t.name))
        assert tenant.name in shown and (tenant.short_code or "") in shown
        assert tenant.base_currency in shown and "Token expires" in shown
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ConnectionsScreen))

        # The user removed the app at Xero, and the access token has since expired: the
        # refresh gets invalid_grant, and the test says to reconnect.
        emulator.revoke_all(emulator.web_client.client_id)
        expire_access_token(service)
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, TestResultScreen))
        result = app.screen
        assert isinstance(result, TestResultScreen)
        await wait_for(pilot, lambda: result.outcome is not None)
        assert "reconnect" in str(result.query_one("#test-error", Static).render()).lower()
        await pilot.press("escape")
        await wait_for(pilot, lambda: "needs reconnect" in screen_text(app))
        assert all(c.status is Status.NEEDS_RECONNECT for c in service.connections())
        assert "copy_token" not in footer_keys(app)

        # Reconnect: the form goes straight to the sign-in and renews both connections.
        await pilot.press("r")
        await wait_for(pilot, lambda: "Reconnected" in screen_text(app), timeout=30)
        assert sorted(c.name for c in service.connections()) == names
        assert all(c.status is Status.OK for c in service.connections())
        assert len({c.grant_id for c in service.connections()}) == 1

        # The other organisation is disconnected at Xero: "check every connection" says so.
        other = next(n for n in names if n != first)
        gone_tenant = next(t for t in tenants if other.endswith(t.name))
        emulator.disconnect_tenant(emulator.web_client.client_id, gone_tenant.tenant_id)
        home(app).check_all()
        await wait_for(pilot, lambda: "organisation no longer connected" in screen_text(app))

        # Copy a token: only on request, only to the clipboard.
        await pilot.press("c")
        await wait_for(pilot, lambda: app._clipboard)
        _, tokens = await service.access_token(first or "")
        assert app._clipboard == tokens.access_token
        assert tokens.access_token not in screen_text(app)

        # Delete with disconnect: the confirm starts on No.
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, DeleteScreen))
        await pilot.press("enter")
        await pilot.pause()
        assert len(service.connections()) == 2
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, DeleteScreen))
        dialog = app.screen
        assert dialog.query_one("#revoke", Checkbox).disabled  # the other connection shares it
        dialog.query_one("#disconnect", Checkbox).value = True
        dialog.query_one("#delete", Button).press()
        await wait_for(pilot, lambda: "disconnected" in screen_text(app))
        assert [c.name for c in service.connections()] != names
        assert len(service.connections()) == 1
        gone = next(t for t in tenants if first and first.endswith(t.name))
        assert gone.tenant_id not in {
            t.tenant_id for t in await _connected(service, service.connections()[0].name)
        }
        await app.workers.wait_for_complete()
    assert "Traceback" not in (browser.read_text() if browser.exists() else "")


def expire_access_token(service: Service) -> None:
    for grant_id in service.load().grants:
        tokens = service.secrets.get_tokens(grant_id)
        assert tokens is not None
        service.secrets.put_tokens(grant_id, dataclasses.replace(tokens, expires_at=0.0))


async def _connected(service: Service, name: str) -> list:  # type: ignore[type-arg]
    from xero_tui.core.xero import XeroClient

    _, tokens = await service.access_token(name)
    async with XeroClient(service.endpoints) as xero:
        return await xero.connections(tokens.access_token)


async def test_second_connection_reuses_credentials_and_a_pasted_token(
    emulator: Emulator, browser: Path
) -> None:
    service = Service()
    app = XeroTuiApp(service)
    client = emulator.web_client
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await new_connection(app, pilot, emulator, "First", pick=1)
        token = emulator.current_refresh_token(client.client_id)
        assert token

        # "Reuse the credentials of an existing connection" fills the client ID and secret.
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, FormScreen))
        screen = form(app)
        assert screen.query_one("#reuse-row").display
        screen.query_one("#reuse", Select).value = "First"
        secret_box = screen.query_one("#client-secret", Input)
        await wait_for(pilot, lambda: secret_box.value == client.client_secret)
        assert screen.query_one("#client-id", Input).value == client.client_id
        assert secret_box.password
        fill(screen, name="Pasted")

        # A token that Xero refuses: said in words, without echoing it.
        screen.query_one("#refresh-token", Input).focus()
        await pilot.press(*"not-a-real-token", "enter")
        hint = screen.query_one("#refresh-token-hint", Static)
        await wait_for(pilot, lambda: hint.display)
        assert "not-a-real-token" not in str(hint.render()) and not screen.chosen

        # A token from another tool: a refresh proves it and lists the organisations.
        fill(screen, refresh_token=token)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, OrganisationsScreen))
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.screen is screen and screen.chosen)
        # Using a pasted token rotates it: the form now holds the new one.
        assert screen.query_one("#refresh-token", Input).value != token
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ConnectionsScreen))
        assert {c.name for c in service.connections()} == {"First", "Pasted"}

        # Open a saved one: the name is fixed; a new secret is stored without a sign-in.
        await wait_for(pilot, lambda: home(app).selected_name() == "First")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, FormScreen))
        screen = form(app)
        assert screen.query_one("#name", Input).disabled
        secret_box = screen.query_one("#client-secret", Input)
        await wait_for(pilot, lambda: secret_box.value == client.client_secret)
        fill(screen, client_secret="a-rotated-secret")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ConnectionsScreen))
        assert service.client_secret_for(client.client_id) == "a-rotated-secret"
        await app.workers.wait_for_complete()


async def test_custom_connection_and_leaving_unsaved_asks_first(emulator: Emulator) -> None:
    service = Service()
    app = XeroTuiApp(service)
    client = emulator.custom_client
    async with app.run_test(size=SIZE) as pilot:
        screen = await new_custom_connection_form(app, pilot)
        fill(
            screen, name="Own", client_id=client.client_id, client_secret=client.client_secret or ""
        )
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: screen.chosen)
        # Leaving now would throw the token away: the app asks, and Stay is the default.
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, YesNoScreen))
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.screen is screen)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ConnectionsScreen))
        [conn] = service.connections()
        assert conn.name == "Own" and conn.kind is Kind.CUSTOM
        await app.workers.wait_for_complete()


async def test_demo_journey_with_the_approve_key() -> None:
    from xero_tui.demo import start_demo

    demo = start_demo()
    try:
        service = Service(insecure_storage=True)
        assert service.paths.config_dir == demo.config_path
        app = XeroTuiApp(service, demo=demo)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            assert "DEMO" in screen_text(app)
            await pilot.press("n")
            await wait_for(pilot, lambda: isinstance(app.screen, FormScreen))
            await pilot.press("ctrl+f")
            assert form(app).query_one("#redirect-uri", Input).value == demo.redirect_uri
            await pilot.press("ctrl+g")
            await wait_for(pilot, lambda: isinstance(app.screen, ConsentScreen))
            await wait_for(pilot, lambda: "approve" in footer_keys(app))
            await pilot.press("a")
            await wait_for(pilot, lambda: isinstance(app.screen, OrganisationsScreen), timeout=30)
            await pilot.press("space", "down", "space", "enter")
            await wait_for(
                pilot, lambda: isinstance(app.screen, FormScreen) and len(form(app).chosen) == 2
            )
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: isinstance(app.screen, ConnectionsScreen))
            await wait_for(pilot, lambda: home(app).query_one(DataTable).row_count == 2)
            assert (demo.config_path / "secrets.toml").exists()
            await app.workers.wait_for_complete()
    finally:
        demo.close()
    assert not demo.config_path.exists()


async def test_crash_report_leaves_out_local_variables(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("XERO_TUI_DEBUG", raising=False)

    class Crashing(XeroTuiApp):
        BINDINGS: ClassVar[list[BindingType]] = [("x", "crash")]

        def action_crash(self) -> None:
            # Built at run time, so that only a locals dump could show the value.
            client_secret = "-".join(["a", "secret", "in", "a", "local"])
            raise RuntimeError(f"boom {len(client_secret)}")

    app = Crashing(Service())
    with pytest.raises(RuntimeError):
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            await pilot.press("x")
            await pilot.pause()
    report = capfd.readouterr().err
    assert "RuntimeError" in report
    assert "a-secret-in-a-local" not in report


def test_links_are_osc8_for_https_only() -> None:
    from xero_tui.widgets import link_content

    linked = link_content("https://developer.xero.com/myapps")
    assert [span.style.link for span in linked.spans if hasattr(span.style, "link")] == [
        "https://developer.xero.com/myapps"
    ]
    assert not link_content("http://localhost:8719/callback").spans


async def test_delete_of_a_connection_removed_elsewhere_says_so(emulator: Emulator) -> None:
    service = Service()
    await connect(service, emulator, "Gone soon")
    app = XeroTuiApp(service)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: home(app).selected_name() == "Gone soon")
        await app.workers.wait_for_complete()
        # Another process removes it while the table still shows it.
        await service.remove("Gone soon")
        home(app).delete("Gone soon")
        await wait_for(pilot, lambda: "no longer saved" in screen_text(app))
        assert isinstance(app.screen, ConnectionsScreen)
        await wait_for(pilot, lambda: home(app).query_one(DataTable).row_count == 0)
        await app.workers.wait_for_complete()
