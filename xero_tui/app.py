"""The Textual app: screens, bindings, theme and the command palette.

Only the TUI imports Textual; the CLI imports this module only when it starts the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from textual import on, work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.screen import ModalScreen, Screen
from textual.worker import Worker, WorkerState

from xero_tui.core.errors import XeroTuiError
from xero_tui.core.models import DEFAULT_REDIRECT_URI, Kind
from xero_tui.screens import PaletteCommand, error_sentence
from xero_tui.screens.connections import ConnectionsScreen
from xero_tui.widgets import Banner, StorageLine, mask, storage_text

if TYPE_CHECKING:
    from xero_tui.core.service import Service
    from xero_tui.demo import DemoContext


class XeroCommands(Provider):
    """The rare actions: the app's own plus whatever the current screen offers."""

    def _commands(self) -> list[PaletteCommand]:
        app = self.app
        commands: list[PaletteCommand] = []
        offer = getattr(self.screen, "palette_commands", None)
        if callable(offer):
            commands.extend(offer())
        if isinstance(app, XeroTuiApp):
            commands.extend(app.palette_commands())
        return commands

    async def discover(self) -> Hits:
        for command in self._commands():
            yield DiscoveryHit(command.title, command.run, help=command.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in self._commands():
            score = matcher.match(command.title)
            if score > 0:
                yield Hit(score, matcher.highlight(command.title), command.run, help=command.help)


class XeroTuiApp(App[None]):
    """Saved Xero connections, and the screens that create, test, renew and remove them."""

    # Absolute, so that subclasses defined elsewhere (tests) find it too.
    CSS_PATH: ClassVar[list[str | PurePath]] = [Path(__file__).with_name("app.tcss")]
    # The consent and organisation screens keep their own CSS_PATH for other hosts, but find it
    # loaded here: a screen stylesheet first read on push makes Textual reparse every stylesheet
    # and restyle every screen (about 100 ms), which would sit between Xero's callback and the
    # picker. Read once the home screen has painted (`settle`), they do not delay start-up.
    LATER_CSS_PATH: ClassVar[list[PurePath]] = [
        Path(__file__).parent / "screens" / "consent.tcss",
        Path(__file__).parent / "screens" / "organisations.tcss",
    ]
    TITLE = "xero-tui"
    # Below 80 columns the screens lay out for the width (app.tcss's `Screen.-narrow` rules).
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (80, "-wide")]
    COMMANDS = App.COMMANDS | {XeroCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", priority=True, tooltip="Leave xero-tui."),
    ]

    def __init__(
        self,
        service: Service,
        *,
        demo: DemoContext | None = None,
        show_demo_secret: bool = True,
    ) -> None:
        super().__init__()
        self.service = service
        self.demo = demo
        self.show_demo_secret = show_demo_secret
        # Ticks of the setup checklist survive closing and reopening it.
        self.checklist_ticks: set[str] = set()
        self._consents_in_flight = 0
        self._asking_to_quit = False
        self._storage_line: str | None = None
        self._settled = False

    # Banner and storage line -------------------------------------------------------------------

    @property
    def banner_text(self) -> str | None:
        if self.demo is not None:
            secret = (
                self.demo.client_secret if self.show_demo_secret else mask(self.demo.client_secret)
            )
            return (
                "DEMO  Built-in Xero emulator, throwaway config; ctrl+f in the form fills in "
                f"the demo app: client ID {self.demo.client_id}  secret {secret}"
            )
        return self.service.endpoints.override_notice()

    def _decorate(self, screen: Screen[object]) -> None:
        """Every full screen, including ones this module does not compose, says where Xero is
        and where secrets live. A dialog shows the screen under it, and so both lines."""
        if isinstance(screen, ModalScreen):
            return
        text = self.banner_text
        if text is not None and not screen.query(Banner):
            screen.mount(Banner(text, demo=self.demo is not None))
        if not screen.query(StorageLine):
            screen.mount(StorageLine(self._storage_line))

    def _screen_changed(self, screen: Screen[object]) -> None:
        self._decorate(screen)
        # A screen may have changed where secrets live (the consent's opt-in to a plain file).
        if self._settled:
            self.refresh_storage()

    def on_mount(self) -> None:
        # A closed terminal or a dropped SSH session ends the app the normal way, so the demo's
        # throwaway config (and its emulator) are cleaned up as on ctrl+q.
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGHUP, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, self.exit)
        self.screen_change_signal.subscribe(self, self._screen_changed)
        # After the first screen's compose, so that a line it composes itself is found.
        self.call_after_refresh(self._decorate, self.screen)

    @property
    def storage_line(self) -> str | None:
        """What the storage lines say, once known."""
        return self._storage_line

    def show_storage(self, description: str) -> None:
        """Put where secrets live (a store's `description`) on every screen's storage line."""
        text = storage_text(description)
        if text == self._storage_line:
            return
        self._storage_line = text
        for screen in self.screen_stack:
            for line in screen.query(StorageLine):
                line.update(text)

    @work(thread=True, exclusive=True, group="storage", exit_on_error=False)
    def refresh_storage(self) -> None:
        """Ask the secret store where it keeps things: a keyring call, so off the UI thread."""
        warning = None
        try:
            secrets = self.service.secrets
            description = secrets.description
            warning = secrets.take_warning()
        except XeroTuiError:
            description = "not known until the config file can be read"
        self.call_from_thread(self.show_storage, description)
        if warning:
            self.call_from_thread(
                self.notify, warning, severity="warning", timeout=15, markup=False
            )

    def settle(self) -> None:
        """Work kept out of start-up, run once the home screen has painted: the stylesheets of
        the screens a sign-in opens, so that opening them later restyles nothing."""
        if self._settled:
            return
        self._settled = True
        stylesheet = self.stylesheet
        unread = [p for p in self.LATER_CSS_PATH if not stylesheet.has_source(str(p), "")]
        if not unread:
            return
        for path in unread:
            stylesheet.read(path)
        stylesheet.reparse()
        stylesheet.update(self)

    def get_default_screen(self) -> Screen[Any]:
        return ConnectionsScreen(self.service)

    # Consent in flight -------------------------------------------------------------------------

    @property
    def consent_in_flight(self) -> bool:
        return self._consents_in_flight > 0

    @contextmanager
    def consent_guard(self) -> Iterator[None]:
        """Marks a sign-in as under way, so quitting asks first instead of throwing it away."""
        self._consents_in_flight += 1
        try:
            yield
        finally:
            self._consents_in_flight -= 1

    def _quit_question(self) -> str | None:
        """What quitting now would throw away, as a question; None when nothing would be lost."""
        if self.consent_in_flight:
            return "A sign-in to Xero is in progress. Quit and abandon it?"
        if any(getattr(screen, "holds_unsaved_token", False) for screen in self.screen_stack):
            return (
                "A form holds a sign-in that is not saved yet. Xero's answer is kept, and the "
                "next start offers to finish it. Quit now?"
            )
        return None

    async def action_quit(self) -> None:
        if self._asking_to_quit:
            return  # the question is on screen already; its buttons decide
        question = self._quit_question()
        if question is None:
            self.exit()
            return
        self._confirm_quit(question)

    @work(group="quit")
    async def _confirm_quit(self, question: str) -> None:
        from xero_tui.screens.confirm import YesNoScreen

        self._asking_to_quit = True
        try:
            leave = await self.push_screen_wait(YesNoScreen(question, yes="Quit", no="Stay"))
        finally:
            self._asking_to_quit = False
        if leave:
            self.exit()

    # Screens reachable from anywhere -----------------------------------------------------------

    def open_checklist(
        self,
        kind: Kind = Kind.WEB,
        redirect_uri: str = DEFAULT_REDIRECT_URI,
        scopes: Sequence[str] = (),
        on_close: Callable[[Kind | None], None] | None = None,
    ) -> None:
        # Imported when first opened, so start-up does not pay for it.
        from xero_tui.screens.checklist import ChecklistScreen

        screen = ChecklistScreen(kind, redirect_uri, scopes, self.checklist_ticks)
        self.push_screen(screen, on_close)

    @work(thread=True, exclusive=True, group="paths", exit_on_error=False)
    def _show_paths(self) -> None:
        paths = self.service.paths
        try:
            # From the settings alone: a config read, and no keyring call.
            secrets = f"Secrets: {self.service.storage_summary()}"
            severity: Literal["information", "error"] = "information"
        except XeroTuiError as exc:
            secrets, severity = error_sentence(exc), "error"
        self.call_from_thread(
            self.notify,
            f"Config: {paths.config_file}\n{secrets}",
            title="Where things live",
            severity=severity,
            timeout=10,
        )

    def palette_commands(self) -> list[PaletteCommand]:
        return [
            PaletteCommand(
                "Create the Xero app (checklist)",
                "The steps at developer.xero.com/myapps, with the values to paste.",
                self.open_checklist,
            ),
            PaletteCommand(
                "Where config and secrets live",
                "Show the config file and the secret store this app uses.",
                self._show_paths,
            ),
        ]

    # Errors nobody else handled ----------------------------------------------------------------

    def _fatal_error(self) -> None:
        """Textual's crash report, without the local variables it normally prints.

        Locals can hold a client secret or a token, and this report goes to the terminal.
        """
        if os.environ.get("XERO_TUI_DEBUG"):
            super()._fatal_error()
            return
        import rich
        from rich.segment import Segments
        from rich.traceback import Traceback

        self.bell()
        report = Traceback(show_locals=False, width=None, suppress=[rich])
        self._exit_renderables.append(Segments(self.console.render(report, self.console.options)))
        self._close_messages_no_wait()

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state is not WorkerState.ERROR or event.worker.error is None:
            return
        self.notify(error_sentence(event.worker.error), severity="error", timeout=10)


def run(demo: bool = False, insecure_storage: bool = False, store_url: str | None = None) -> int:
    """Start the TUI (optionally against the built-in emulator) and return the exit code."""
    from xero_tui.core.service import Service

    context = None
    if demo:
        from xero_tui.demo import start_demo

        context = start_demo()
    try:
        service = Service(insecure_storage=insecure_storage or demo, store_url=store_url)
        app = XeroTuiApp(service, demo=context)
        app.run()
        return app.return_code or 0
    finally:
        if context is not None:
            context.close()
