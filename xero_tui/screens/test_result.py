"""Test one connection end to end: refresh if needed, then read its organisation from Xero."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, LoadingIndicator, Static

from xero_tui.core.errors import NeedsReconnect, TenantNotConnected, XeroTuiError
from xero_tui.core.health import TestResult
from xero_tui.screens import error_sentence, local_time

if TYPE_CHECKING:
    from xero_tui.core.service import Service


def now() -> float:
    return time.time()


def until(timestamp: float) -> str:
    """`in 29 min`, `in 2 h 5 min` or `expired`."""
    minutes = round((timestamp - now()) / 60)
    if minutes <= 0:
        return "expired"
    hours, minutes = divmod(minutes, 60)
    return f"in {hours} h {minutes} min" if hours else f"in {minutes} min"


class TestResultScreen(ModalScreen[TestResult | XeroTuiError | None]):
    """Runs `Service.test` with progress shown; dismisses with what happened."""

    __test__ = False  # not a pytest class, despite the name

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,enter", "close", "Close"),
        Binding("t", "again", "Test again"),
    ]

    def __init__(self, service: Service, name: str) -> None:
        super().__init__(classes="dialog-screen")
        self.service = service
        self.connection_name = name
        self.outcome: TestResult | XeroTuiError | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="test-dialog"):
            yield Static(f"Test {self.connection_name!r}", classes="dialog-question", markup=False)
            with Horizontal(id="test-progress", classes="progress-line"):
                yield LoadingIndicator()
                yield Static("Refreshing the token and reading the organisation…")
            yield Static(id="test-result", markup=False)
            yield Static(id="test-error", classes="message-line -error", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.run_test()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "again":
            return self.outcome is not None
        return True

    @work(exclusive=True, group="test", exit_on_error=False)
    async def run_test(self) -> None:
        self.outcome = None
        self._show_running(True)
        try:
            result = await self.service.test(self.connection_name)
        except XeroTuiError as exc:
            self.outcome = exc
            self._show_error(exc)
        except Exception as exc:
            # Anything else still ends the wait with a sentence, never a blank dialog.
            self.outcome = XeroTuiError(error_sentence(exc))
            self._show_error(self.outcome)
        else:
            self.outcome = result
            self._show_result(result)
        finally:
            self._show_running(False)
            self.refresh_bindings()

    def _show_running(self, running: bool) -> None:
        self.query_one("#test-progress").display = running
        if running:
            self._show_outcome("", "")

    def _show_outcome(self, result: str, error: str) -> None:
        # An empty part takes no row: at 80x24 the error's every line is needed.
        for selector, text in (("#test-result", result), ("#test-error", error)):
            part = self.query_one(selector, Static)
            part.update(text)
            part.display = bool(text)

    def _show_result(self, result: TestResult) -> None:
        org = result.organisation
        rows = [
            ("Connection", result.connection.name),
            ("Organisation", org.name),
            ("Short code", org.short_code or "-"),
            ("Country", org.country_code or "-"),
            ("Base currency", org.base_currency or "-"),
            (
                "Token expires",
                f"{local_time(result.expires_at)} ({until(result.expires_at)})",
            ),
        ]
        width = max(len(label) for label, _ in rows) + 2
        text = "\n".join(f"{label.ljust(width)}{value}" for label, value in rows)
        self._show_outcome("Works.\n\n" + text, "")

    def _show_error(self, error: XeroTuiError) -> None:
        advice = ""
        if isinstance(error, NeedsReconnect | TenantNotConnected):
            advice = "\n\nPress escape, then r on the home screen to reconnect."
        self._show_outcome("", error_sentence(error) + advice)

    def action_again(self) -> None:
        self.run_test()

    def action_close(self) -> None:
        self.workers.cancel_group(self, "test")
        self.dismiss(self.outcome)
