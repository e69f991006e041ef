"""Every full screen says where secrets live (security property 30), and keeps saying it truly.

The line is checked on each screen at 80x24, with its footer still in view, for the keyring and
for the plain-file store; dialogs (test result, consent) show it on the screen under them.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from rich.cells import cell_len
from textual.pilot import Pilot
from textual.screen import Screen

from tests.support.tui import (
    consent_screen,
    no_display_env,
    run_from_palette,
    screen_text,
    wait_for,
)
from xero_tui.app import XeroTuiApp
from xero_tui.core.consent import ConnectionDraft, ConsentOutcome
from xero_tui.core.models import Kind, Tenant, TokenSet, default_scopes
from xero_tui.core.secrets import FileStore
from xero_tui.core.service import Service
from xero_tui.screens.checklist import ChecklistScreen
from xero_tui.screens.connections import ConnectionsScreen
from xero_tui.screens.consent import ConsentScreen
from xero_tui.screens.form import FormScreen
from xero_tui.screens.organisations import OrganisationsScreen
from xero_tui.screens.test_result import TestResultScreen
from xero_tui.widgets import StorageLine
from xero_tui.widgets.storage import elide_middle

SIZE = (80, 24)


def lines_of(screen: Screen[object]) -> list[str]:
    return [line.text for line in screen.query(StorageLine)]


def outcome() -> ConsentOutcome:
    tenants = tuple(Tenant(f"c{i}", f"t{i}", f"Org {i} Ltd", "ORGANISATION") for i in range(40))
    return ConsentOutcome(TokenSet("not-shown", 0.0, "not-shown"), tenants, frozenset({"t1"}))


def draft() -> ConnectionDraft:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return ConnectionDraft(
        kind=Kind.WEB,
        client_id="0" * 32,
        client_secret="not-shown",
        redirect_uri=f"http://localhost:{port}/callback",
        scopes=default_scopes(Kind.WEB),
    )


async def shows(pilot: Pilot[None], expected: str, footer_key: str) -> None:
    """The current screen (or the one under a dialog) has one line saying `expected`, and
    both it and the footer fit on the terminal."""
    app = pilot.app
    assert isinstance(app, XeroTuiApp)

    def in_view() -> bool:
        # A path too long for the line loses its middle; the start and the file name show.
        shown = screen_text(app)
        return elide_middle(expected, SIZE[0] - 2) in shown and footer_key in shown

    await wait_for(pilot, in_view)
    full = next(s for s in reversed(app.screen_stack) if s.query(StorageLine))
    assert lines_of(full) == [expected]


async def walk_every_screen(app: XeroTuiApp, pilot: Pilot[None], expected: str) -> None:
    await shows(pilot, expected, "n New")
    assert isinstance(app.screen, ConnectionsScreen)
    await pilot.press("k")
    await wait_for(pilot, lambda: isinstance(app.screen, ChecklistScreen))
    await shows(pilot, expected, "esc Back")
    await pilot.press("escape", "n")
    await wait_for(pilot, lambda: isinstance(app.screen, FormScreen))
    await shows(pilot, expected, "^s Save")
    form = app.screen
    app.push_screen(OrganisationsScreen(outcome(), frozenset()))
    await wait_for(pilot, lambda: isinstance(app.screen, OrganisationsScreen))
    await shows(pilot, expected, "tab Select")
    await pilot.press("escape")
    await wait_for(pilot, lambda: app.screen is form)
    # Dialogs: the line stays in view on the screen beneath.
    app.push_screen(consent_screen(app.service, draft(), env=no_display_env()))
    await wait_for(pilot, lambda: isinstance(app.screen, ConsentScreen))
    await wait_for(pilot, lambda: app.screen.phase in ("waiting", "storage", "error"))
    await shows(pilot, expected, "esc")
    await pilot.press("escape")
    await wait_for(pilot, lambda: app.screen is form)
    await pilot.press("escape")
    await wait_for(pilot, lambda: isinstance(app.screen, ConnectionsScreen))
    app.push_screen(TestResultScreen(app.service, "nothing-saved"))
    await wait_for(pilot, lambda: isinstance(app.screen, TestResultScreen))
    await shows(pilot, expected, "esc")
    await app.workers.wait_for_complete()


async def test_storage_line_names_the_keyring_on_every_screen() -> None:
    service = Service()
    expected = f"Secrets: {Service().secrets.description}"
    assert expected.startswith("Secrets: keyring (")
    app = XeroTuiApp(service)
    async with app.run_test(size=SIZE) as pilot:
        await walk_every_screen(app, pilot, expected)


async def test_storage_line_names_the_plain_file_on_every_screen() -> None:
    service = Service(insecure_storage=True)
    expected = f"Secrets: plain file {service.paths.secrets_file}"
    app = XeroTuiApp(service)
    async with app.run_test(size=SIZE) as pilot:
        await walk_every_screen(app, pilot, expected)


async def test_storage_line_names_the_shared_store_on_every_screen(store_url: str) -> None:
    from tests.support.saved import save_offline

    service = Service()
    save_offline(service, "acme", Kind.WEB, "1" * 32, "a")
    expected = f"Secrets: {service.secrets.description}"
    assert expected.startswith("Secrets: PostgreSQL xero_") and expected.endswith("(encrypted)")
    assert "postgres@" not in expected
    app = XeroTuiApp(service)
    async with app.run_test(size=(100, 24)) as pilot:
        await wait_for(pilot, lambda: "shared" in screen_text(app))
        assert "acme" in screen_text(app)
    app = XeroTuiApp(Service())
    async with app.run_test(size=SIZE) as pilot:
        await walk_every_screen(app, pilot, expected)


class WatchedService(Service):
    """Notes which thread asks the secret store where it keeps things."""

    def __init__(self) -> None:
        super().__init__(insecure_storage=True)
        self.asked_on: list[str] = []
        store = FileStore(self.paths)
        service = self

        class Watched(FileStore):
            @property
            def description(self) -> str:
                service.asked_on.append(threading.current_thread().name)
                return store.description

        self._watched = Watched(self.paths)

    @property
    def secrets(self) -> FileStore:  # type: ignore[override]
        return self._watched


async def test_storage_line_is_worked_out_off_the_ui_thread() -> None:
    service = WatchedService()
    app = XeroTuiApp(service)
    async with app.run_test(size=SIZE) as pilot:
        await shows(pilot, f"Secrets: plain file {service.paths.secrets_file}", "n New")
        await pilot.press("k")
        await wait_for(pilot, lambda: isinstance(app.screen, ChecklistScreen))
        await app.workers.wait_for_complete()
        await pilot.pause()
    # Once for the home screen's load, once more for the checklist: never on the UI thread.
    assert len(service.asked_on) >= 2
    assert threading.main_thread().name not in service.asked_on


@pytest.mark.usefixtures("failing_keyring")
async def test_opting_into_the_file_on_the_consent_screen_updates_every_line() -> None:
    service = Service()
    app = XeroTuiApp(service)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "Secrets: keyring" in screen_text(app))
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, FormScreen))
        form = app.screen
        app.push_screen(consent_screen(service, draft(), env=no_display_env()))
        await wait_for(pilot, lambda: getattr(app.screen, "phase", "") == "storage")
        await pilot.press("f")
        await wait_for(pilot, lambda: getattr(app.screen, "phase", "") == "waiting")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is form)
        expected = f"Secrets: plain file {service.paths.secrets_file}"
        await shows(pilot, expected, "^s Save")
        # The home screen under the form says so too.
        assert lines_of(app.screen_stack[0]) == [expected]
        await app.workers.wait_for_complete()


async def test_where_things_live_reports_a_corrupt_config_instead_of_raising(
    isolated_env: Path,
) -> None:
    isolated_env.mkdir(parents=True)
    (isolated_env / "config.toml").write_text("schema = 1\n[connections\n")
    app = XeroTuiApp(Service())
    async with app.run_test(size=(100, 36)) as pilot:
        await wait_for(pilot, lambda: "config.toml line 2" in screen_text(app))
        await run_from_palette(pilot, "where config", "Where config and secrets live")
        await wait_for(pilot, lambda: app._notifications)
        notes = list(app._notifications)
        assert notes and notes[-1].severity == "error"
        assert "config.toml line 2" in notes[-1].message
        assert str(isolated_env / "config.toml") in notes[-1].message
        assert "Secrets: not known until the config file can be read" in screen_text(app)
        await app.workers.wait_for_complete()


async def test_where_things_live_names_the_config_and_the_store() -> None:
    service = Service(insecure_storage=True)
    app = XeroTuiApp(service)
    async with app.run_test(size=(100, 36)) as pilot:
        await pilot.pause()
        await run_from_palette(pilot, "where config", "Where config and secrets live")
        await wait_for(pilot, lambda: app._notifications)
        message = list(app._notifications)[-1].message
        assert str(service.paths.config_file) in message
        assert f"plain file {service.paths.secrets_file}" in message
        await app.workers.wait_for_complete()


@pytest.mark.parametrize("width", [1, 2, 3, 10, 25, 40, 79])
def test_a_path_with_wide_characters_fits_its_cells_and_keeps_its_file_name(width: int) -> None:
    text = "Secrets: plain file /home/用户/配置文件夹/非常长的目录名称/xero-tui/secrets.toml"
    shown = elide_middle(text, width)
    assert cell_len(shown) <= width
    # At most one cell is left over, where a wide character would not fit.
    assert cell_len(shown) >= width - 1
    if width >= 40:
        assert shown.endswith("/secrets.toml") and shown.startswith("Secrets: ")
    assert elide_middle(text, cell_len(text)) == text
