"""Typed dialogs: delete a connection, leave while something would be lost, finish a sign-in.

Each defaults to the answer that loses nothing: focus starts on No, escape means No.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Footer, Static

from xero_tui.core.models import Connection, Kind, PendingSignIn, Status


class YesNoScreen(ModalScreen[bool]):
    """A question with two buttons; dismisses True only for the explicit yes."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "no", "Cancel")]

    def __init__(self, question: str, *, yes: str = "Yes", no: str = "No") -> None:
        super().__init__(classes="dialog-screen")
        self.question = question
        self.yes_label = yes
        self.no_label = no

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="dialog-question", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.no_label, id="no", variant="primary", compact=True)
                yield Button(self.yes_label, id="yes", variant="error", compact=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed, "#yes")
    def action_yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def action_no(self) -> None:
        self.dismiss(False)


@dataclass(frozen=True)
class DeleteChoice:
    """What to do at Xero besides forgetting the connection here."""

    disconnect: bool = False
    revoke: bool = False


class DeleteScreen(ModalScreen[DeleteChoice | None]):
    """Confirm removing a saved connection; None means keep it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "keep", "Keep it")]

    def __init__(self, connection: Connection, sharing: Sequence[str] = ()) -> None:
        super().__init__(classes="dialog-screen")
        self.connection = connection
        self.sharing = sorted(sharing)

    def compose(self) -> ComposeResult:
        conn = self.connection
        reachable = conn.status is not Status.NEEDS_RECONNECT
        with Vertical(classes="dialog"):
            yield Static(
                f"Delete the connection {conn.name!r}?", classes="dialog-question", markup=False
            )
            yield Static(
                f"{conn.tenant_name}, {conn.kind.label}. Its settings and stored tokens are "
                "removed from this machine.",
                classes="dialog-detail",
                markup=False,
            )
            yield Checkbox(
                f"Also disconnect {conn.tenant_name} from the app at Xero",
                id="disconnect",
                disabled=not (reachable and conn.connection_id),
                compact=True,
            )
            if conn.kind is not Kind.CUSTOM:
                yield Checkbox(
                    "Also revoke the sign-in (the refresh token) at Xero",
                    id="revoke",
                    disabled=not reachable or bool(self.sharing),
                    compact=True,
                )
            if self.sharing:
                yield Static(
                    "The sign-in is kept: "
                    + ", ".join(self.sharing)
                    + (" still uses it." if len(self.sharing) == 1 else " still use it."),
                    classes="dialog-detail",
                    markup=False,
                )
            if not reachable:
                yield Static(
                    "Xero no longer accepts this connection's sign-in, so only the copy on "
                    "this machine can be removed.",
                    classes="dialog-detail",
                    markup=False,
                )
            with Horizontal(classes="dialog-buttons"):
                yield Button("No, keep it", id="keep", variant="primary", compact=True)
                yield Button("Delete", id="delete", variant="error", compact=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#keep", Button).focus()

    def _ticked(self, checkbox_id: str) -> bool:
        found = self.query(f"#{checkbox_id}").results(Checkbox)
        return any(box.value and not box.disabled for box in found)

    @on(Button.Pressed, "#delete")
    def _delete(self) -> None:
        self.dismiss(DeleteChoice(self._ticked("disconnect"), self._ticked("revoke")))

    @on(Button.Pressed, "#keep")
    def action_keep(self) -> None:
        self.dismiss(None)


class PendingScreen(ModalScreen[Literal["finish", "discard"] | None]):
    """Offer an unfinished sign-in: finish it (no new sign-in), discard it, or decide later."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "finish", "Finish"),
        Binding("x", "discard", "Discard"),
        Binding("escape", "later", "Later"),
    ]

    def __init__(self, pending: PendingSignIn, more: int = 0) -> None:
        super().__init__(classes="dialog-screen")
        self.pending = pending
        self.more = more

    def compose(self) -> ComposeResult:
        pending = self.pending
        issued = pending.issued.astimezone().strftime("%Y-%m-%d %H:%M")
        expires = pending.expires().astimezone().strftime("%Y-%m-%d")
        with Vertical(classes="dialog"):
            yield Static(
                f"The sign-in {pending.name!r} was not finished.",
                classes="dialog-question",
                markup=False,
            )
            yield Static(
                f"Xero answered at {issued} ({pending.kind.label}, client ID "
                f"…{pending.client_id[-6:]}), and its tokens are kept here. Finishing lists the "
                f"organisations and saves, without signing in again; it can be finished until "
                f"{expires}. Discarding revokes it at Xero.",
                classes="dialog-detail",
                markup=False,
            )
            if self.more:
                plural = "s wait" if self.more != 1 else " waits"
                yield Static(
                    f"{self.more} more unfinished sign-in{plural} after this one.",
                    classes="dialog-detail",
                    markup=False,
                )
            with Horizontal(classes="dialog-buttons"):
                yield Button("Finish", id="finish", variant="primary", compact=True)
                yield Button("Later", id="later", compact=True)
                yield Button("Discard", id="discard", variant="error", compact=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#finish", Button).focus()

    @on(Button.Pressed, "#finish")
    def action_finish(self) -> None:
        self.dismiss("finish")

    @on(Button.Pressed, "#discard")
    def action_discard(self) -> None:
        self.dismiss("discard")

    @on(Button.Pressed, "#later")
    def action_later(self) -> None:
        self.dismiss(None)
