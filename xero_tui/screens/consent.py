"""Consent: sign in to Xero in a browser and bring the answer back, locally or over SSH.

The screen first checks that the tokens can be kept (a consent is wasted if they cannot), then
starts an attempt whose loopback listener is already bound, and shows everything needed to finish
it from anywhere: the authorize URL, whether a browser was opened, the `ssh -L` line and a field
for the address the browser ended on. The listener and the field stay live together; whichever
answers first wins.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Vertical, VerticalScroll
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Static

from xero_tui.core.browser import ssh_tunnel_command
from xero_tui.core.consent import ConsentOutcome
from xero_tui.core.errors import (
    CallbackError,
    ConsentCancelled,
    ConsentTimeout,
    OAuthError,
    PortInUse,
    clean_text,
)
from xero_tui.core.models import MYAPPS_URL
from xero_tui.core.secrets import ProbeResult
from xero_tui.core.storage import StorageMove
from xero_tui.core.xero import oauth_error
from xero_tui.screens import error_sentence, sign_in_guard
from xero_tui.widgets.values import link_content

if TYPE_CHECKING:
    from xero_tui.core.connect import ConnectSession
    from xero_tui.core.consent import ConsentAttempt
    from xero_tui.core.service import Service
    from xero_tui.demo import DemoContext

PROBE_TIMEOUT = 5.0
DEFAULT_TIMEOUT = 300.0
# Xero shows "Invalid redirect_uri" on its own page and never redirects; after this long without
# an answer, the screen says what to check.
REDIRECT_HINT_AFTER = 30.0

PHASES = ("probe", "storage", "starting", "waiting", "exchanging", "error")


def countdown(seconds: float) -> str:
    whole = max(0, int(seconds + 0.5))
    return f"{whole // 60}:{whole % 60:02d}"


class ConsentScreen(ModalScreen[ConsentOutcome | None]):
    """Sign in to Xero for `session`; dismisses with the outcome, or None when cancelled.

    The session keeps what Xero issues before the outcome comes back: a screen closed in
    between (or an app hung up) leaves an unfinished sign-in, not a lost one.
    """

    # Absolute, so that subclasses defined elsewhere find it too.
    CSS_PATH = Path(__file__).with_name("consent.tcss")

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", tooltip="Stop waiting and free the port."),
        Binding("c", "copy_url", "Copy URL", tooltip="Copy the sign-in address (OSC 52)."),
        Binding("s", "copy_ssh", "Copy ssh", tooltip="Copy the ssh -L command (OSC 52)."),
        Binding("p", "focus_paste", "Paste URL", tooltip="Type or paste the address here."),
        Binding("a", "approve", "Approve", tooltip="Press Allow on the demo's page."),
        Binding("f", "file_storage", "Use a file", tooltip="Keep secrets in a 0600 file."),
        Binding("r", "retry", "Try again"),
    ]

    DEFAULT_CSS = """
    #consent-moved {
        display: none;
        height: auto;
        color: $text-warning;
    }
    """

    phase: reactive[str] = reactive("probe", init=False)

    def __init__(
        self,
        service: Service,
        session: ConnectSession,
        *,
        demo: DemoContext | None = None,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__()
        self.service = service
        self.session = session
        self.draft = session.draft
        self.demo = demo
        self.env = env
        self.clock = clock
        self.timeout = timeout
        self.attempt: ConsentAttempt | None = None
        # The `ssh -L` line as shown (the demo's forwards its emulator's port too).
        self._ssh_line: str | None = None
        self._storage_ok = False
        self._deadline = 0.0
        self._started = 0.0

    # Layout --------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Vertical(id="consent-dialog") as dialog:
            dialog.border_title = "Sign in to Xero"
            with VerticalScroll(id="consent-body"):
                # What switching to the file store left to do; kept through every phase.
                yield Static(id="consent-moved", markup=False)
                yield Static(id="consent-status", markup=False)
                yield Static(id="consent-next", markup=False)
                with Vertical(id="consent-storage"):
                    yield Static(id="storage-problem", markup=False)
                    yield Static("Choose one:", classes="step")
                    with Grid(id="storage-choices"):
                        yield Static("r", classes="choice-key")
                        yield Static(
                            "Start or unlock the keyring (a Secret Service such as "
                            "gnome-keyring), then try again."
                        )
                        yield Static("f", classes="choice-key")
                        yield Static(id="storage-file-choice", markup=False)
                        yield Static("esc", classes="choice-key")
                        yield Static("Cancel; nothing is stored and no sign-in starts.")
                with Vertical(id="consent-wait"):
                    yield Static(id="consent-browser", markup=False)
                    yield Static(id="consent-hint", markup=False)
                    with Vertical(id="consent-ssh"):
                        yield Static(id="consent-ssh-step", classes="step", markup=False)
                        yield Static(id="consent-ssh-line", markup=False)
                        yield Static(id="consent-ssh-port", markup=False)
                    yield Static(id="consent-url-step", classes="step", markup=False)
                    yield Static(id="consent-url")
                    with Vertical(id="consent-paste"):
                        yield Static(id="consent-paste-step", classes="step", markup=False)
                        # Compact: at 80x24 the field and its error fit below the long URL.
                        yield Input(
                            id="consent-paste-input",
                            placeholder=f"{self.draft.redirect_uri}?code=…&state=…",
                            compact=True,
                        )
                        yield Static(id="consent-paste-error", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(1.0, self._tick)
        self._start()

    def watch_phase(self, phase: str) -> None:
        # Only the parts that change are touched: a class on the screen would restyle the whole
        # dialog (about 50 ms) between Xero's callback and the token exchange.
        status = self.query_one("#consent-status")
        status.display = phase != "waiting"
        status.set_class(phase == "error", "-error")
        self.query_one("#consent-next").display = phase == "error"
        self.query_one("#consent-storage").display = phase == "storage"
        self.query_one("#consent-wait").display = phase == "waiting"
        if phase != "waiting":
            self.query_one("#consent-dialog").border_subtitle = ""
        self.refresh_bindings()

    def _status(self, text: str) -> None:
        self.query_one("#consent-status", Static).update(text)

    # The flow ------------------------------------------------------------------------------------

    @work(exclusive=True, group="consent", exit_on_error=False)
    async def _start(self, use_file: bool = False) -> None:
        if use_file:
            self._status("Switching to the plain-file secret store…")
            try:
                move = await asyncio.to_thread(self.service.use_file_storage)
            except Exception as exc:
                self._fail(error_sentence(exc))
                return
            self._show_move(move)
        if not self._storage_ok:
            self.phase = "probe"
            self._status("Checking that the secrets can be kept before you sign in…")
            probe = await self._probe()
            if not probe.ok and probe.shared:
                # A shared store's key or database: the plain file is no way on there.
                self._fail(probe.message)
                return
            if not probe.ok:
                self._show_storage(probe)
                return
            self._storage_ok = True
        await self._consent()

    def _show_move(self, move: StorageMove) -> None:
        """Say what the switch did with the secrets saved so far: saved connections that now
        need reconnecting (or their client secret again) must not find out only later."""
        notice = move.notice
        if notice is not None:
            line = self.query_one("#consent-moved", Static)
            line.update(notice)
            line.display = True
        elif move.moved:
            plural = "s" if move.moved != 1 else ""
            self.notify(
                f"Moved {move.moved} saved secret{plural} from the keyring to the plain file.",
                timeout=5,
                markup=False,
            )

    async def _probe(self) -> ProbeResult:
        # The keyring call itself runs in a thread with a limit of its own; this bound keeps
        # the screen's promise even if that thread never answers.
        try:
            return await asyncio.wait_for(self.session.probe_storage(), PROBE_TIMEOUT)
        except TimeoutError:
            return ProbeResult(
                False,
                "keyring",
                f"The keyring did not answer within {PROBE_TIMEOUT:g} seconds (is it locked?).",
            )
        except Exception as exc:
            return ProbeResult(False, "keyring", error_sentence(exc))

    def _show_storage(self, probe: ProbeResult) -> None:
        self.phase = "storage"
        self._status("The tokens cannot be kept yet, so signing in now would be wasted.")
        # The choices below are the ways on: the problem alone is said above them.
        self.query_one("#storage-problem", Static).update(probe.problem or probe.message)
        self.query_one("#storage-file-choice", Static).update(
            "Keep secrets in a plain file only you can read (mode 0600): "
            f"{self.service.paths.secrets_file}"
        )

    async def _consent(self) -> None:
        self.phase = "starting"
        self._status("Starting the sign-in…")
        env = dict(self.env) if self.env is not None else None
        try:
            attempt = await self.session.begin_consent(timeout=self.timeout, env=env)
        except Exception as exc:
            self._fail(self._begin_error(exc))
            return
        self.attempt = attempt
        outcome: ConsentOutcome | None = None
        with sign_in_guard(self.app):
            try:
                self._show_attempt(attempt)
                try:
                    result = await attempt.wait()
                except ConsentCancelled:
                    return
                except OAuthError as exc:
                    self._fail(self._callback_error(exc))
                    return
                except ConsentTimeout as exc:
                    self._fail(f"{exc} {self._redirect_hint()}")
                    return
                except CallbackError as exc:
                    self._fail(str(exc))
                    return
                self.phase = "exchanging"
                self._status("Xero answered. Exchanging the code for tokens…")
                try:
                    outcome = await self.session.complete_consent(attempt, result)
                except Exception as exc:
                    self._fail(error_sentence(exc))
                    return
            finally:
                self.attempt = None
                if outcome is None:
                    await attempt.close()
                else:
                    # The browser already has its page; it may take a second to hang up, and the
                    # organisations need not wait for that.
                    attempt.close_in_background()
        # dismiss() pops the top screen: wait out a dialog on top (the quit question) first.
        while not self.is_active:
            await asyncio.sleep(0.05)
        self.dismiss(outcome)

    def _begin_error(self, exc: Exception) -> str:
        sentence = error_sentence(exc)
        # In the demo, the port can be worked around without leaving the app.
        demo_uri = self.demo.redirect_uri if self.demo is not None else self.draft.redirect_uri
        if isinstance(exc, PortInUse) and demo_uri != self.draft.redirect_uri:
            sentence += (
                f" The demo apps also accept {demo_uri}, on a free port: put it in the form's "
                "Redirect URI."
            )
        return sentence

    def _callback_error(self, exc: OAuthError) -> str:
        """Xero's `error=` answer, as a sentence that says what to do."""
        sentence = oauth_error(exc.error, exc.description, "code").message
        if exc.description and exc.description not in sentence:
            sentence += f" Xero said: {exc.description}"
        return sentence

    def _redirect_hint(self) -> str:
        return (
            f"If Xero showed “Invalid redirect_uri”, add exactly {self.draft.redirect_uri} as a "
            f"redirect URI of the app at {MYAPPS_URL}."
        )

    def _fail(self, sentence: str) -> None:
        self.phase = "error"
        self._status(sentence)
        self.query_one("#consent-next", Static).update("Press r to try again, or escape to close.")

    # Showing the attempt -------------------------------------------------------------------------

    def _show_attempt(self, attempt: ConsentAttempt) -> None:
        self._started = self.clock()
        self._deadline = self._started + attempt.remaining()
        browser = self.query_one("#consent-browser", Static)
        browser.update(attempt.browser_note)
        browser.set_class(attempt.launched, "-launched")
        steps = iter(range(1, 4))
        ssh = self._ssh_line = attempt.ssh_command
        note = attempt.tunnel_note or ""
        self.query_one("#consent-ssh").display = ssh is not None
        if ssh is not None:
            what = "the redirect"
            if self.demo is not None:
                # The demo's sign-in page is this machine's emulator: the browser on the user's
                # own computer needs a tunnel to it as well, unless `a` answers it from here.
                page = self.demo.sign_in_port
                ssh = self._ssh_line = ssh_tunnel_command(attempt.port, self.env, also=(page,))
                what = "the redirect and the demo's sign-in page"
                note += " Or skip the tunnel: a approves in the demo."
            self.query_one("#consent-ssh-step", Static).update(
                f"{next(steps)}. On your own computer, run this to tunnel {what} here "
                "(s copies it):"
            )
            self.query_one("#consent-ssh-line", Static).update(ssh)
            self.query_one("#consent-ssh-port", Static).update(note)
        url_step = self.query_one("#consent-url-step", Static)
        if attempt.launched:
            url_step.update(
                "Sign in and allow access in the browser. If it shows nothing, open this "
                "address (c copies it):"
            )
        else:
            url_step.update(
                f"{next(steps)}. Open this address in a browser, sign in and allow access "
                "(c copies it):"
            )
        self.query_one("#consent-url", Static).update(link_content(attempt.url))
        self.query_one("#consent-paste").display = not attempt.launched
        # The field's placeholder shows how the address starts.
        self.query_one("#consent-paste-step", Static).update(
            f"{next(steps)}. If the browser then cannot load the page, paste its address here (p):"
        )
        self.query_one("#consent-paste-input", Input).value = ""
        self._paste_error("")
        self.query_one("#consent-hint", Static).display = False
        self.phase = "waiting"
        self._tick()

    def _tick(self) -> None:
        dialog = self.query_one("#consent-dialog")
        if self.phase != "waiting":
            dialog.border_subtitle = ""
            return
        now = self.clock()
        dialog.border_subtitle = f"Waiting for Xero: {countdown(self._deadline - now)} left"
        if now - self._started >= REDIRECT_HINT_AFTER:
            hint = self.query_one("#consent-hint", Static)
            hint.update(f"Nothing yet? {self._redirect_hint()}")
            hint.display = True

    # Paste -----------------------------------------------------------------------------------

    @on(Input.Submitted, "#consent-paste-input")
    def _submitted(self, event: Input.Submitted) -> None:
        self.submit_pasted(event.value)

    def submit_pasted(self, text: str) -> None:
        attempt = self.attempt
        if attempt is None or self.phase != "waiting" or not text.strip():
            return
        try:
            attempt.submit_pasted_url(text)
        except CallbackError as exc:
            self._paste_error(str(exc))
            return
        self._paste_error("")

    def _paste_error(self, sentence: str) -> None:
        error = self.query_one("#consent-paste-error", Static)
        error.update(sentence)
        error.display = bool(sentence)
        if sentence:
            # On a short terminal the URL above can push it out of view.
            self.call_after_refresh(error.scroll_visible, animate=False)

    def on_paste(self, event: events.Paste) -> None:
        # A paste anywhere on the screen is meant for the field: there is nothing else to paste.
        paste = self.query_one("#consent-paste-input", Input)
        if self.phase != "waiting" or not paste.display or paste.has_focus:
            return
        event.stop()
        paste.value = event.text.strip()
        paste.focus()
        self.submit_pasted(paste.value)

    # Keys ------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        waiting = self.phase == "waiting" and self.attempt is not None
        if action == "copy_url":
            return waiting
        if action == "copy_ssh":
            return waiting and self.attempt is not None and self.attempt.ssh_command is not None
        if action == "focus_paste":
            return waiting and bool(self.query_one("#consent-paste").display)
        if action == "approve":
            return waiting and self.demo is not None
        if action == "file_storage":
            return self.phase == "storage"
        if action == "retry":
            return self.phase in ("storage", "error")
        return True

    def action_cancel(self) -> None:
        if self.attempt is not None:
            # Frees the port now; the worker then closes what is left.
            self.attempt.cancel()
        self.dismiss(None)

    def action_copy_url(self) -> None:
        if self.attempt is not None:
            self.app.copy_to_clipboard(self.attempt.url)
            self.notify("Copied the sign-in address.", timeout=3)

    def action_copy_ssh(self) -> None:
        if self.attempt is not None and self._ssh_line:
            self.app.copy_to_clipboard(self._ssh_line)
            self.notify("Copied the ssh command.", timeout=3)

    def action_focus_paste(self) -> None:
        self.query_one("#consent-paste-input", Input).focus()

    def action_retry(self) -> None:
        self._start()

    def action_file_storage(self) -> None:
        self._start(use_file=True)

    def action_approve(self) -> None:
        if self.demo is not None and self.attempt is not None:
            self._approve(self.demo, self.attempt.url)

    @work(thread=True, exclusive=True, group="demo-approve", exit_on_error=False)
    def _approve(self, demo: DemoContext, url: str) -> None:
        from xero_tui.emulator.consent import ConsentError

        try:
            demo.approve(url)
        except ConsentError as exc:
            # The page's own words: text from outside, not markup.
            self._approve_failed(clean_text(exc.message))
        except Exception as exc:
            self._approve_failed(error_sentence(exc))

    def _approve_failed(self, sentence: str) -> None:
        self.app.call_from_thread(
            self.notify,
            f"The demo could not approve: {sentence}",
            severity="error",
            markup=False,
        )
