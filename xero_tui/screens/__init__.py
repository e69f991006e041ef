"""One module a screen; each talks to the core through `Service` and returns a typed result."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

from textual.widgets import Static
from textual.worker import Worker, WorkerState

from xero_tui.core.errors import KeyringUnavailable, XeroTuiError, clean_text

if TYPE_CHECKING:
    from textual.app import App
    from textual.widget import Widget

    from xero_tui.demo import DemoContext

# With no keyring at all, the ways on as the app offers them: the sign-in's storage check has a
# key for the 0600 file.
KEYRING_WAYS_ON = (
    "Start one (such as gnome-keyring), or keep secrets in a 0600 file: press f when signing "
    "in, or start xero-tui --insecure-storage."
)


def error_sentence(error: BaseException) -> str:
    """What to tell the user about a failure: the core's own sentence, or only the error's type.

    The text of an unexpected error could carry anything, a secret included, so it is not shown.
    """
    if isinstance(error, KeyringUnavailable):
        return f"{error.problem} {KEYRING_WAYS_ON}"
    if isinstance(error, XeroTuiError):
        return clean_text(str(error), 1000)
    if os.environ.get("XERO_TUI_DEBUG"):
        return clean_text(f"{type(error).__name__}: {error}", 1000)
    return f"Unexpected {type(error).__name__}; rerun with XERO_TUI_DEBUG=1 to see why."


def local_time(timestamp: float) -> str:
    """A moment as the user's clock shows it, with the zone, e.g. `2026-11-28 15:04 NZDT`."""
    return datetime.fromtimestamp(timestamp).astimezone().strftime("%Y-%m-%d %H:%M %Z")


@dataclass(frozen=True)
class PaletteCommand:
    """One command palette entry a screen offers for what it shows right now."""

    title: str
    help: str
    run: Callable[[], object]


class Host(Protocol):
    """What screens need of the app that shows them; the app module is never imported here,
    since it imports the screens."""

    demo: DemoContext | None

    @property
    def storage_line(self) -> str | None: ...

    def show_storage(self, description: str) -> None: ...

    def refresh_storage(self) -> object: ...

    def settle(self) -> None: ...

    def open_checklist(self) -> None: ...

    def consent_guard(self) -> AbstractContextManager[None]: ...


def sign_in_guard(app: App[Any]) -> AbstractContextManager[None]:
    """While a sign-in or a token check is under way, the app asks before quitting."""
    guard = getattr(app, "consent_guard", None)
    return cast("Host", app).consent_guard() if callable(guard) else nullcontext()


class Messages:
    """The progress row and message line a screen composes as `#PREFIX-progress`,
    `#PREFIX-progress-text` and `#PREFIX-message`."""

    message_prefix: ClassVar[str]

    def _progress(self, text: str | None) -> None:
        screen = cast("Widget", self)
        screen.query_one(f"#{self.message_prefix}-progress").display = text is not None
        text_line = screen.query_one(f"#{self.message_prefix}-progress-text", Static)
        text_line.update(text or "")

    def _say(self, text: str, *, error: bool = False) -> None:
        message = cast("Widget", self).query_one(f"#{self.message_prefix}-message", Static)
        message.update(text)
        message.set_class(error, "-error")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A worker that failed with an error it did not handle says so on the message line.

        Worker.StateChanged goes to the screen that ran the worker and does not bubble, so
        without this an unexpected failure would leave the screen as it was, saying nothing.
        """
        if event.state is not WorkerState.ERROR or event.worker.error is None:
            return
        self._progress(None)
        self._say(error_sentence(event.worker.error), error=True)
