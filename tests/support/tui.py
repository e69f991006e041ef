"""Pilot helpers shared by the TUI tests: waiting, reading the screen, the form, the consent host."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from typing import Any, cast

from rich.console import Console
from textual.app import App
from textual.command import CommandList, CommandPalette
from textual.pilot import Pilot
from textual.widgets import Input, RadioButton

from tests.support.cli import ROOT
from xero_tui.app import XeroTuiApp
from xero_tui.core.connect import ConnectSession
from xero_tui.core.consent import ConnectionDraft, ConsentOutcome
from xero_tui.core.models import Kind
from xero_tui.core.service import Service
from xero_tui.screens.consent import ConsentScreen
from xero_tui.screens.form import FormScreen

SIZE = (100, 36)


async def wait_for(
    pilot: Pilot[None], condition: Callable[[], object], timeout: float = 15
) -> None:
    """Let the app run until `condition()` holds (workers and the browser run meanwhile)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            shown = screen_text(pilot.app) if isinstance(pilot.app, XeroTuiApp) else ""
            raise AssertionError(f"timed out on {pilot.app.screen!r}:\n{shown}")
        await pilot.pause(0.02)


def screen_text(app: XeroTuiApp) -> str:
    """Everything the terminal shows right now, as plain text."""
    width, height = app.size
    console = Console(
        width=width, height=height, file=io.StringIO(), force_terminal=True, record=True
    )
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return console.export_text()


async def run_from_palette(pilot: Pilot[None], query: str, title: str) -> None:
    """As a user does: open the command palette with its key, type `query`, and press Enter
    once the best hit (highlighted) is the command called `title`."""
    app = pilot.app
    await pilot.press(app.COMMAND_PALETTE_BINDING)
    await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
    palette = app.screen
    await pilot.press(*query)
    hits = palette.query_one(CommandList)

    def highlighted() -> str:
        if hits.highlighted is None:
            return ""
        return str(hits.get_option_at_index(hits.highlighted).prompt)

    await wait_for(pilot, lambda: highlighted().startswith(title))
    await pilot.press("enter")
    await wait_for(pilot, lambda: app.screen is not palette)


def form(app: XeroTuiApp) -> FormScreen:
    screen = app.screen
    assert isinstance(screen, FormScreen)
    return screen


def fill(screen: FormScreen, **values: str) -> None:
    for field, value in values.items():
        screen.query_one(f"#{field.replace('_', '-')}", Input).value = value


async def new_custom_connection_form(app: XeroTuiApp, pilot: Pilot[None]) -> FormScreen:
    """From home: a new connection, with Custom connection chosen as the app type."""
    await pilot.pause()
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(app.screen, FormScreen))
    screen = form(app)
    for button in screen.query("#kind RadioButton").results(RadioButton):
        button.value = button.name == Kind.CUSTOM.value
    await pilot.pause()
    return screen


UNSET = object()


def no_display_env(**extra: str) -> dict[str, str]:
    """A terminal with no graphical display and no BROWSER: nothing is launched."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.pop("BROWSER", None)
    env.update(extra)
    return env


class ConsentApp(App[None]):
    """Pushes the consent screen and keeps what it dismissed with."""

    # The app's own stylesheet too, as in xero-tui: its rules reach this screen as well.
    CSS_PATH = ROOT / "xero_tui" / "app.tcss"

    def __init__(self, make: Callable[[], ConsentScreen]) -> None:
        super().__init__()
        self.make = make
        self.result: object = UNSET

    def on_mount(self) -> None:
        self.push_screen(self.make(), self._done)

    def _done(self, outcome: ConsentOutcome | None) -> None:
        self.result = outcome


def consent(app: App[None]) -> ConsentScreen:
    screen = app.screen
    assert isinstance(screen, ConsentScreen), screen
    return screen


def consent_screen(
    service: Service,
    draft: ConnectionDraft,
    screen: type[ConsentScreen] = ConsentScreen,
    **options: Any,
) -> ConsentScreen:
    """The consent screen for a new sign-in of `draft`, as the form opens it."""
    return screen(service, ConnectSession(service, draft, "Consent test"), **options)


async def until_phase(pilot: Pilot[None], phase: str, timeout: float = 10.0) -> ConsentScreen:
    app = pilot.app
    await wait_for(
        pilot,
        lambda: isinstance(app.screen, ConsentScreen) and app.screen.phase == phase,
        timeout,
    )
    return consent(app)


async def until_dismissed(pilot: Pilot[None], timeout: float = 10.0) -> object:
    app = cast(ConsentApp, pilot.app)
    await wait_for(pilot, lambda: app.result is not UNSET, timeout)
    return app.result
