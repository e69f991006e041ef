"""Create the Xero app: the steps at developer.xero.com/myapps, with the exact values to paste.

The text follows the app type: no secret for the PKCE type, scopes and the authorising user
instead of a redirect URI for custom connections. Values are copied with OSC 52 (which works
over SSH) and URLs are OSC 8 links.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, ProgressBar, RadioButton, RadioSet, Static

from xero_tui.core.models import (
    MYAPPS_URL,
    PAID_TIER_LIMITS,
    STARTER_TIER_LIMIT,
    Kind,
    default_scopes,
)
from xero_tui.core.validate import redirect_uri_note
from xero_tui.widgets import CopyableValue, link_content

_URL = re.compile(r"https://[^\s)]+[^\s).,]")

# When to pick each type, shown for all of them whichever is chosen.
KIND_WHY = {
    Kind.WEB: (
        "with a client secret; pick it for a job on a server you control, "
        "where the secret can be kept."
    ),
    Kind.PKCE: (
        "no client secret; pick it when the secret could not be kept safe. Xero's form may "
        "call it “Mobile or desktop app”."
    ),
    Kind.CUSTOM: (
        "one organisation, no browser sign-in, the token comes from the secret; pick it for "
        "a single organisation's own integration (a paid Xero feature, for organisations in "
        "AU, NZ, UK and US only)."
    ),
}


@dataclass(frozen=True)
class Step:
    """One thing to do at Xero; `value` is what to paste there (or copy from there)."""

    key: str
    title: str
    body: str
    value_label: str | None = None
    value: str | None = None


def steps_for(kind: Kind, redirect_uri: str, scopes: Sequence[str] = ()) -> list[Step]:
    """The checklist for this app type, in the order Xero's pages ask for things."""
    kinds = "\n".join(
        f"{'▸' if k is kind else ' '} {k.label}: {why}" for k, why in KIND_WHY.items()
    )
    steps = [
        Step(
            "login",
            f"Log in at {MYAPPS_URL.removeprefix('https://')}",
            "Use the Xero login that should own the app.",
            "Page",
            MYAPPS_URL,
        ),
        Step("new-app", "Press “New app”", "It opens the form for the new app."),
        Step(
            "name",
            "Name the app",
            "A name you will recognise, e.g. “Acme nightly sync”. It may not contain the word "
            "“Xero”: Xero refuses such names.",
        ),
        Step("type", f"Choose the integration type “{kind.label}”", kinds),
        Step(
            "url",
            "Fill in the company or application URL",
            "Any https address of your company or product, e.g. https://example.com.",
        ),
    ]
    if kind is Kind.CUSTOM:
        steps += [
            Step("create", "Tick the terms and press “Create app”", "The app's page opens."),
            Step(
                "scopes",
                "Choose the scopes",
                "Tick the scopes the connection asks for (the form's Scopes field):",
                "Scopes",
                " ".join(scopes or default_scopes(kind)),
            ),
            Step(
                "user",
                "Choose the authorising user",
                "The person who approves the connection for their organisation. Xero emails "
                "them; the connection works once they have approved it.",
            ),
            Step(
                "client-id",
                "Copy the client ID",
                "Shown on the app's Configuration page: 32 characters. Paste it into the "
                "form's Client ID.",
            ),
        ]
    else:
        steps += [
            Step(
                "redirect",
                "Enter the redirect URI, exactly",
                "It must match byte for byte the address xero-tui listens on. Keep localhost "
                "even over SSH: the ssh -L line carries it to this machine."
                + (f" {note}" if (note := redirect_uri_note(redirect_uri)) else ""),
                "Redirect URI",
                redirect_uri,
            ),
            Step(
                "create",
                "Tick the terms and press “Create app”",
                "The app's page opens. A new app is on Xero's free Starter tier, which connects "
                f"at most {STARTER_TIER_LIMIT} organisations; the paid tiers connect more "
                f"({PAID_TIER_LIMITS}).",
            ),
            Step(
                "client-id",
                "Copy the client ID",
                "On the Configuration page: 32 characters. Paste it into the form's Client ID."
                + (" This type has no secret, so that is all." if kind is Kind.PKCE else ""),
            ),
        ]
    if kind.has_secret:
        steps.append(
            Step(
                "secret",
                "Generate a secret and copy it now",
                "Press “Generate a secret” on the Configuration page and paste it into the "
                "form's Client Secret right away: Xero shows it once. If it is lost, generate "
                "another.",
            )
        )
    return steps


def _linked(text: str) -> Content:
    """Plain text with every http(s) URL in it turned into a clickable link."""
    parts: list[Content] = []
    last = 0
    for match in _URL.finditer(text):
        parts += [Content(text[last : match.start()]), link_content(match.group())]
        last = match.end()
    parts.append(Content(text[last:]))
    return Content("").join(parts)


class StepRow(Vertical, can_focus=True):
    """One step: a tick box, the title, what to do, and the value to paste."""

    def __init__(self, number: int, step: Step, ticked: bool) -> None:
        super().__init__(classes="step")
        self.number = number
        self.step = step
        self.ticked = ticked

    def compose(self) -> ComposeResult:
        yield Static(self._title(), classes="step-title")
        yield Static(_linked(self.step.body), classes="step-body")
        if self.step.value is not None and self.step.value_label is not None:
            yield CopyableValue(
                self.step.value_label,
                self.step.value,
                hint="c copies",
                focusable=False,
                classes="step-value",
            )

    def on_mount(self) -> None:
        self.set_class(self.ticked, "-done")

    def _title(self) -> Content:
        box = "[x]" if self.ticked else "[ ]"
        return Content.assemble(f"{box} {self.number}. ", (self.step.title, "bold"))

    def toggle(self) -> None:
        self.ticked = not self.ticked
        self.set_class(self.ticked, "-done")
        self.query_one(".step-title", Static).update(self._title())


class ChecklistScreen(Screen[Kind]):
    """Dismisses with the app type chosen here, so the form can follow it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "tick", "Tick"),
        Binding("c", "copy", "Copy value"),
        Binding("t", "choose_type", "App type"),
        # Priority: the scrolling container would otherwise take the arrows for scrolling.
        Binding("down,j", "move(1)", "Next", show=False, priority=True),
        Binding("up,k", "move(-1)", "Previous", show=False, priority=True),
        Binding("escape", "close", "Back"),
    ]

    def __init__(
        self,
        kind: Kind,
        redirect_uri: str,
        scopes: Sequence[str] = (),
        ticks: set[str] | None = None,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.redirect_uri = redirect_uri
        self.scopes = tuple(scopes)
        # The caller's set, so that ticks outlive this screen.
        self.ticks = set() if ticks is None else ticks

    def compose(self) -> ComposeResult:
        yield Static("Create the Xero app", classes="screen-title")
        with Horizontal(id="checklist-kind"):
            yield Static("App type", classes="field-label")
            with RadioSet(id="checklist-kinds", compact=True):
                for kind in Kind:
                    yield RadioButton(kind.label, value=kind is self.kind, name=kind.value)
        with Horizontal(id="checklist-progress"):
            yield ProgressBar(show_eta=False, show_percentage=False)
            yield Static(id="checklist-count")
        yield VerticalScroll(id="checklist-steps")
        yield Footer(compact=True)

    async def on_mount(self) -> None:
        await self._rebuild()
        self._focus_first_open()

    async def _rebuild(self) -> None:
        container = self.query_one("#checklist-steps", VerticalScroll)
        await container.remove_children()
        steps = steps_for(self.kind, self.redirect_uri, self.scopes)
        rows = [StepRow(n, step, step.key in self.ticks) for n, step in enumerate(steps, 1)]
        await container.mount_all(rows)
        self._update_progress()

    def _rows(self) -> list[StepRow]:
        return list(self.query(StepRow).results(StepRow))

    def _focus_first_open(self) -> None:
        rows = self._rows()
        target = next((row for row in rows if not row.ticked), rows[0] if rows else None)
        if target is not None:
            target.focus()

    def _update_progress(self) -> None:
        rows = self._rows()
        done = sum(row.ticked for row in rows)
        self.query_one(ProgressBar).update(total=len(rows), progress=done)
        self.query_one("#checklist-count", Static).update(f"{done} of {len(rows)} steps done")

    def _current(self) -> StepRow | None:
        focused = self.focused
        return focused if isinstance(focused, StepRow) else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        row = self._current()
        if action == "tick":
            return row is not None
        if action == "copy":
            return row is not None and row.step.value is not None
        return True

    @on(RadioSet.Changed)
    async def _kind_changed(self, event: RadioSet.Changed) -> None:
        name = event.pressed.name
        if name is None or name == self.kind.value:
            return
        self.kind = Kind(name)
        await self._rebuild()

    def on_descendant_focus(self) -> None:
        self.refresh_bindings()

    def action_tick(self) -> None:
        row = self._current()
        if row is None:
            return
        row.toggle()
        if row.ticked:
            self.ticks.add(row.step.key)
        else:
            self.ticks.discard(row.step.key)
        self._update_progress()

    def action_copy(self) -> None:
        row = self._current()
        if row is not None:
            for value in row.query(CopyableValue).results(CopyableValue):
                value.copy()

    def action_move(self, delta: int) -> None:
        rows = self._rows()
        row = self._current()
        if row is None:
            if rows:
                rows[0 if delta > 0 else -1].focus()
            return
        index = rows.index(row) + delta
        if 0 <= index < len(rows):
            rows[index].focus()

    def action_choose_type(self) -> None:
        self.query_one("#checklist-kinds", RadioSet).focus()

    def action_close(self) -> None:
        self.dismiss(self.kind)
