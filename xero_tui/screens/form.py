"""The connection form: the app's credentials, a sign-in (Generate), the organisations, Save.

It follows Zynk's form: Name, Client ID, Client Secret, Refresh Token with Generate, and
Organisation, plus the app type, scopes and redirect URI. The same screen opens a saved connection
and reconnects one (a new sign-in that replaces the connections sharing its grant).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import (
    Button,
    Checkbox,
    Footer,
    Input,
    LoadingIndicator,
    RadioButton,
    RadioSet,
    Select,
    Static,
)

from xero_tui.core.errors import UsageError, XeroTuiError
from xero_tui.core.models import (
    DEFAULT_REDIRECT_URI,
    Connection,
    Kind,
    Tenant,
    default_scopes,
)
from xero_tui.core.service import (
    ConnectionDraft,
    ConsentOutcome,
    TokenCheckFailed,
    clone_draft,
    connection_names,
    reconnect_names,
    renewed_pairs,
)
from xero_tui.core.validate import check_client_id, check_name, check_redirect_uri
from xero_tui.screens import Messages, PaletteCommand, error_sentence, sign_in_guard
from xero_tui.screens.confirm import YesNoScreen

if TYPE_CHECKING:
    from xero_tui.core.service import Service
    from xero_tui.demo import DemoContext

LABELS = {
    "name": "Name",
    "client-id": "Client ID",
    "client-secret": "Client Secret",
    "redirect-uri": "Redirect URI",
    "scopes": "Scopes",
    "refresh-token": "Refresh Token",
    "organisation": "Organisation",
}

# The fields a sign-in (or a checked token) was made with: editing one voids it.
DRAFT_FIELDS = ("client-id", "client-secret", "redirect-uri", "scopes")


class FormScreen(Messages, Screen[list[Connection] | None]):
    """Create, open or reconnect a connection; dismisses with what was saved."""

    message_prefix = "form"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+g", "generate", "Generate", tooltip="Sign in to Xero for a refresh token."),
        Binding("ctrl+s", "save", "Save", tooltip="Save one connection per organisation."),
        Binding("ctrl+o", "organisations", "Orgs", tooltip="Choose the organisations again."),
        Binding("ctrl+t", "reveal", "Reveal", tooltip="Show or hide the secret fields."),
        Binding("ctrl+f", "demo_fill", "Demo app", tooltip="Fill in the demo app's credentials."),
        Binding("ctrl+l", "checklist", "Setup", tooltip="How to create the app at Xero."),
        Binding("escape", "back", "Back"),
        # Priority, so focus moves before the next key is handed out: a password manager types
        # "id<TAB>secret" in one write, and the secret must not land in the ID field.
        Binding("tab", "app.focus_next", show=False, priority=True),
        Binding("shift+tab", "app.focus_previous", show=False, priority=True),
    ]

    def __init__(
        self,
        service: Service,
        *,
        demo: DemoContext | None = None,
        existing: Connection | None = None,
        reconnect: bool = False,
    ) -> None:
        super().__init__()
        self.service = service
        self.demo = demo
        self.existing = existing
        self.reconnecting = reconnect and existing is not None
        self.kind = existing.kind if existing else Kind.WEB
        self.outcome: ConsentOutcome | None = None
        self.outcome_draft: ConnectionDraft | None = None
        self.chosen: list[Tenant] = []
        self.saved = False
        # The connections a new sign-in renews (those sharing the saved one's grant).
        self.renewing: list[str] = []
        self._token_from_us = False
        self._pasted_token = False
        self._loaded_secret: str | None = None
        # Checking a pasted refresh token uses it: Xero answers with a new one, and the pasted
        # one stops working 30 minutes later. Until it is saved, this form holds the only copy.
        self._rotated: str | None = None
        self._checking = False
        # The names already saved, read once off the UI thread (None until then) and again on
        # Save: the name field is checked against them on every keystroke.
        self._taken: frozenset[str] | None = None

    # Layout ------------------------------------------------------------------------------------

    def _title(self) -> str:
        if self.existing is None:
            return "New connection"
        verb = "Reconnect" if self.reconnecting else "Connection"
        return f"{verb} {self.existing.name!r}"

    def compose(self) -> ComposeResult:
        conn = self.existing
        yield Static(self._title(), classes="screen-title", markup=False)
        with VerticalScroll(id="form"):
            with Horizontal(classes="field", id="kind-row"):
                yield Static("App type", classes="field-label")
                with RadioSet(id="kind", compact=True):
                    for kind in Kind:
                        yield RadioButton(kind.label, value=kind is self.kind, name=kind.value)
            yield from self._field(
                "name",
                Input(
                    conn.name if conn else "",
                    placeholder="e.g. Acme sync",
                    disabled=conn is not None,
                    id="name",
                    compact=True,
                ),
            )
            with Horizontal(classes="field", id="reuse-row"):
                yield Static("Reuse", classes="field-label")
                yield Select[str](
                    [],
                    prompt="the credentials of a saved connection (optional)",
                    id="reuse",
                    compact=True,
                )
            yield from self._field(
                "client-id",
                Input(
                    conn.client_id if conn else "",
                    placeholder="32 hexadecimal characters from developer.xero.com/myapps",
                    id="client-id",
                    compact=True,
                ),
            )
            yield from self._field(
                "client-secret",
                Input(
                    placeholder="shown once by Xero",
                    password=True,
                    id="client-secret",
                    compact=True,
                ),
            )
            yield from self._field(
                "redirect-uri",
                Input(
                    conn.redirect_uri if conn else DEFAULT_REDIRECT_URI,
                    id="redirect-uri",
                    compact=True,
                ),
            )
            scopes = conn.scopes if conn else default_scopes(self.kind)
            yield from self._field("scopes", Input(" ".join(scopes), id="scopes", compact=True))
            with Horizontal(classes="field", id="legacy-row"):
                yield Static("", classes="field-label")
                yield Checkbox(
                    "Legacy scopes, for apps created before 2 March 2026",
                    value=bool(conn) and set(scopes) == set(default_scopes(self.kind, True)),
                    id="legacy",
                    compact=True,
                )
            yield from self._field(
                "refresh-token",
                Input(
                    placeholder=(
                        "kept in the secret store; Generate replaces it"
                        if conn
                        else "filled by Generate, or paste one"
                    ),
                    password=True,
                    id="refresh-token",
                    compact=True,
                ),
                Button("Generate", id="generate", compact=True, variant="primary"),
            )
            with Horizontal(classes="field", id="organisation-row"):
                yield Static("Organisation", classes="field-label")
                yield Static(id="organisation", markup=False)
            yield Static(id="organisation-hint", classes="field-hint")
            with Horizontal(id="form-buttons"):
                yield Button("Save", id="save", compact=True, variant="success")
        with Horizontal(id="form-progress", classes="progress-line"):
            yield LoadingIndicator()
            yield Static(id="form-progress-text", markup=False)
        yield Static(id="form-message", classes="message-line", markup=False)
        yield Footer(compact=True)

    def _field(self, field: str, *widgets: Input | Button) -> ComposeResult:
        with Horizontal(classes="field", id=f"{field}-row"):
            yield Static(LABELS[field], classes="field-label")
            yield from widgets
        yield Static(id=f"{field}-hint", classes="field-hint", markup=False)

    def on_mount(self) -> None:
        self.query_one("#form-progress").display = False
        for hint in self.query(".field-hint"):
            hint.display = False
        self._apply_kind()
        self._fill_reuse_choices()
        self._show_organisations()
        if self.existing is not None:
            self.renewing = self._renewing_names()
            self._load_existing()
        else:
            self.query_one("#name", Input).focus()
            self._load_taken()

    def _read_taken(self) -> frozenset[str] | None:
        """Blocking: the names of the saved connections (None if the config cannot be read)."""
        try:
            return frozenset(self.service.load().connections)
        except XeroTuiError:
            return None

    @work(thread=True, exclusive=True, group="taken", exit_on_error=False)
    def _load_taken(self) -> None:
        taken = self._read_taken()
        self.app.call_from_thread(self._show_taken, taken)

    def _show_taken(self, taken: frozenset[str] | None) -> None:
        self._taken = taken
        # A name typed before the names were read is checked against them now.
        if self._value("name"):
            self._show_hint("name", self._check("name"))

    def _renewing_names(self) -> list[str]:
        assert self.existing is not None
        try:
            return reconnect_names(self.service.load(), self.existing.name)
        except (XeroTuiError, KeyError):
            return [self.existing.name]

    def _fill_reuse_choices(self) -> None:
        try:
            saved = self.service.connections()
        except XeroTuiError:
            saved = []
        seen: dict[str, Connection] = {}
        for conn in saved:
            seen.setdefault(conn.client_id, conn)
        select = self.query_one("#reuse", Select)
        select.set_options(
            (f"{conn.name} ({conn.kind.label}, …{conn.client_id[-6:]})", conn.name)
            for conn in seen.values()
        )
        self.query_one("#reuse-row").display = bool(seen) and self.existing is None

    # Reading the fields ------------------------------------------------------------------------

    def _value(self, field: str) -> str:
        return self.query_one(f"#{field}", Input).value.strip()

    def _set_value(self, field: str, value: str) -> None:
        self.query_one(f"#{field}", Input).value = value

    def _scopes(self) -> tuple[str, ...]:
        return tuple(self._value("scopes").split())

    def _draft(self) -> ConnectionDraft:
        """The app as the fields describe it; raises UsageError naming the first bad field."""
        problems = self._problems(saving=False)
        if problems:
            field, sentence = next(iter(problems.items()))
            raise UsageError(f"{LABELS[field]}: {sentence}")
        return self._fields_draft()

    def _fields_draft(self) -> ConnectionDraft:
        """The app as the fields describe it right now, checked or not."""
        kind = self.kind
        return ConnectionDraft(
            kind=kind,
            client_id=self._value("client-id"),
            client_secret=self._value("client-secret") if kind.has_secret else None,
            redirect_uri=self._value("redirect-uri") if kind.uses_browser else DEFAULT_REDIRECT_URI,
            scopes=self._scopes(),
            pkce=self.existing.pkce if self.existing else True,
        )

    def _check(self, field: str) -> str | None:
        """What is wrong with one field right now, or None."""
        kind = self.kind
        try:
            if field == "name":
                name = check_name(self._value("name"))
                return self._name_clash(name)
            if field == "client-id":
                check_client_id(self._value("client-id"))
            elif field == "client-secret" and kind.has_secret and not self._value(field):
                return "This app type needs its client secret (Xero shows it once; generate another if it is lost)."
            elif field == "redirect-uri" and kind.uses_browser:
                check_redirect_uri(self._value("redirect-uri"))
            elif field == "scopes" and not self._scopes():
                return "Ask for at least one scope."
        except UsageError as exc:
            return str(exc)
        return None

    def _name_clash(self, name: str) -> str | None:
        taken = self._taken
        if self.existing is not None or taken is None:
            return None
        names = [n for n, _ in connection_names(name, self.chosen)] if self.chosen else [name]
        clash = next((n for n in names if n in taken), None)
        return (
            f"A connection named {clash!r} already exists; choose another name." if clash else None
        )

    def _problems(self, *, saving: bool) -> dict[str, str]:
        fields = ["client-id", "client-secret", "redirect-uri", "scopes"]
        if saving:
            fields.insert(0, "name")
        problems = {f: p for f in fields if (p := self._check(f)) is not None}
        if not saving:
            return problems
        unchecked = self._pasted_token and self.kind.uses_browser
        if self.existing is not None and self.outcome is None and not unchecked:
            return problems
        if self.kind.uses_browser and self.outcome is None:
            problems["refresh-token"] = (
                "Press enter in the field, or ctrl+s once the other fields are right, to check "
                "the pasted token with Xero (Xero then replaces it with a new one)."
                if unchecked
                else "Press ctrl+g (Generate) to sign in to Xero, or paste a refresh token."
            )
        if not self.chosen:
            problems["organisation"] = (
                "Choose at least one organisation (ctrl+o)."
                if self.outcome is not None
                else "Generate first: it lists the organisations the app reaches."
            )
        return problems

    def _show_hint(self, field: str, text: str | None) -> None:
        hint = self.query_one(f"#{field}-hint", Static)
        hint.update(text or "")
        hint.display = bool(text)
        hint.set_class(bool(text), "-error")

    def _show_problems(self, problems: dict[str, str]) -> None:
        for field in LABELS:
            self._show_hint(field, problems.get(field))
        if problems:
            first = next(iter(problems))
            widget = self.query(f"#{first}").first()
            if widget.focusable:
                widget.focus()
            else:
                widget.scroll_visible()

    # Progress and messages ---------------------------------------------------------------------

    # Reacting to edits -------------------------------------------------------------------------

    def _apply_kind(self) -> None:
        kind = self.kind
        self.query_one("#client-secret-row").display = kind.has_secret
        for field in ("redirect-uri", "refresh-token"):
            self.query_one(f"#{field}-row").display = kind.uses_browser
            if not kind.uses_browser:
                self._show_hint(field, None)
        if not kind.has_secret:
            self._show_hint("client-secret", None)
        self.query_one("#generate", Button).label = "Generate" if kind.uses_browser else "Connect"
        self._show_organisations()
        self.refresh_bindings()

    @on(RadioSet.Changed, "#kind")
    def _kind_changed(self, event: RadioSet.Changed) -> None:
        name = event.pressed.name
        if name is None or name == self.kind.value:
            return
        old = self.kind
        self.kind = Kind(name)
        legacy = self.query_one("#legacy", Checkbox).value
        if set(self._scopes()) == set(default_scopes(old, legacy)):
            self._set_value("scopes", " ".join(default_scopes(self.kind, legacy)))
        self._forget_outcome("The app type changed")
        self._apply_kind()

    @on(Checkbox.Changed, "#legacy")
    def _legacy_changed(self, event: Checkbox.Changed) -> None:
        self._set_value("scopes", " ".join(default_scopes(self.kind, event.value)))

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        field = event.input.id
        if field is None:
            return
        if field == "refresh-token":
            if self._token_from_us:
                self._token_from_us = False
                return
            self._pasted_token = bool(event.value.strip())
            self._forget_outcome(None)
            return
        if field in DRAFT_FIELDS and self._draft_changed():
            self._forget_outcome(f"The {LABELS[field]} changed")
        if field == "name":
            self._show_organisations()
        # Only complain about what was typed; an empty field is reported on Save.
        problem = self._check(field) if event.value.strip() else None
        if field in LABELS:
            self._show_hint(field, problem)

    @on(Input.Submitted)
    def _input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "refresh-token" and self._pasted_token:
            if not self._still_checking():
                self.check_pasted_token()
        else:
            self.focus_next()

    @on(Select.Changed, "#reuse")
    def _reuse_chosen(self, event: Select.Changed) -> None:
        if event.value is Select.NULL:
            return
        try:
            conn = self.service.connection(str(event.value))
        except XeroTuiError as exc:
            self._say(error_sentence(exc), error=True)
            return
        self._select_kind(conn.kind)
        self._set_value("client-id", conn.client_id)
        self._set_value("redirect-uri", conn.redirect_uri)
        self._load_secret(conn.client_id)

    def _select_kind(self, kind: Kind) -> None:
        for button in self.query("#kind RadioButton").results(RadioButton):
            if button.name == kind.value:
                button.value = True
        if kind is not self.kind:
            self.kind = kind
            self._apply_kind()

    def _draft_changed(self) -> bool:
        """Whether the fields no longer describe the app the sign-in was made with."""
        return self.outcome_draft is not None and self._describes_another_app(self.outcome_draft)

    def _describes_another_app(self, draft: ConnectionDraft, *, with_secret: bool = True) -> bool:
        """Whether the fields describe an app other than `draft`'s (scopes in any order; the
        client secret only `with_secret`)."""
        fields = self._fields_draft()
        if not draft.kind.uses_browser:
            # As `_fields_draft` has it: an app without a browser sign-in has no redirect URI.
            draft = replace(draft, redirect_uri=DEFAULT_REDIRECT_URI)
        if not with_secret:
            fields, draft = replace(fields, client_secret=None), replace(draft, client_secret=None)
        if set(fields.scopes) != set(draft.scopes):
            return True
        return replace(fields, scopes=()) != replace(draft, scopes=())

    def _forget_outcome(self, reason: str | None) -> None:
        """A sign-in belongs to the app's type, client ID, secret, redirect URI and scopes;
        edits to those void it."""
        if self.outcome is None:
            return
        had_token = self.outcome_draft is not None and self.kind.uses_browser
        # A token from a check of a pasted one, still in its field (not edited by the user).
        rotated = (
            reason is not None
            and self._rotated is not None
            and self.outcome.tokens.refresh_token == self._rotated
        )
        self.outcome = None
        self.outcome_draft = None
        self.chosen = []
        if rotated:
            # The only live copy of the token: it stays, to be checked again with the new details.
            self._pasted_token = True
        elif reason and had_token and not self._pasted_token:
            self._token_from_us = bool(self._value("refresh-token"))
            self._set_value("refresh-token", "")
        self._show_organisations()
        if rotated:
            self._say(
                f"{reason}, so the checked token must be checked again: press enter in the "
                "Refresh Token field, or ctrl+s."
            )
        elif reason:
            self._say(f"{reason}, so the sign-in no longer applies: Generate again.")
        self.refresh_bindings()

    def _show_organisations(self) -> None:
        text: str
        if self.chosen:
            name = self._value("name") or "(name)"
            pairs = self._names_for_save(name)
            text = "\n".join(f"{t.tenant_name}  → saved as {n!r}" for n, t in pairs)
        elif self.existing is not None and self.outcome is None:
            text = f"{self.existing.tenant_name} (saved)"
        elif self.outcome is not None:
            text = "None chosen yet: ctrl+o lists them."
        elif self.kind.uses_browser:
            text = "None yet: Generate signs in to Xero and lists the organisations."
        else:
            text = "None yet: Connect fetches a token with the secret and lists the organisation."
        self.query_one("#organisation", Static).update(text)

    def _names_for_save(self, name: str) -> list[tuple[str, Tenant]]:
        if self.renewing:
            return self._renewed_pairs()
        return connection_names(name, self.chosen)

    def _renewed_pairs(self) -> list[tuple[str, Tenant]]:
        try:
            config = self.service.load()
        except XeroTuiError:
            return []
        return renewed_pairs(config, self.renewing, self.chosen)

    # Loading a saved connection ----------------------------------------------------------------

    @work(exclusive=True, group="load", exit_on_error=False)
    async def _load_existing(self) -> None:
        assert self.existing is not None
        if self.existing.kind.has_secret:
            await self._fetch_secret(self.existing.client_id)
        if self.reconnecting:
            self.generate()
        else:
            self.query_one("#client-id", Input).focus()

    @work(exclusive=True, group="load", exit_on_error=False)
    async def _load_secret(self, client_id: str) -> None:
        await self._fetch_secret(client_id)

    async def _fetch_secret(self, client_id: str) -> None:
        self._progress("Reading the client secret from the secret store…")
        try:
            secret = await asyncio.to_thread(self.service.client_secret_for, client_id)
        except XeroTuiError as exc:
            self._say(error_sentence(exc), error=True)
            return
        finally:
            self._progress(None)
        if secret:
            self._loaded_secret = secret
            self._set_value("client-secret", secret)
        elif self.kind.has_secret:
            self._show_hint(
                "client-secret", "No secret is stored for this client ID: paste it from Xero."
            )

    # Sign-in -----------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "organisations":
            return self.outcome is not None and not self.renewing
        if action == "demo_fill":
            return self.demo is not None
        if action == "reveal":
            return self.kind.has_secret or self.kind.uses_browser
        return True

    def _still_checking(self) -> bool:
        """Whether a token check is under way; it must finish, so other actions wait for it."""
        if self._checking:
            self._say(
                "Xero is checking the pasted token and will answer with a new one that only "
                "this form can keep: wait for it, then save.",
                error=True,
            )
        return self._checking

    def action_generate(self) -> None:
        if not self._still_checking():
            self.generate()

    @on(Button.Pressed, "#generate")
    def _generate_pressed(self) -> None:
        self.action_generate()

    @work(exclusive=True, group="generate", exit_on_error=False)
    async def generate(self) -> None:
        """Sign in (or, for a custom connection, fetch a token), then choose organisations."""
        try:
            draft = self._draft()
        except UsageError as exc:
            self._show_problems(self._problems(saving=False))
            self._say(f"Generate needs the app's details first. {exc}", error=True)
            return
        self._show_problems({})
        self._say("")
        try:
            outcome = await self._sign_in(draft)
        except XeroTuiError as exc:
            self._say(error_sentence(exc), error=True)
            return
        finally:
            self._progress(None)
        if outcome is None:
            self._say("Sign-in cancelled; nothing was saved.")
            return
        self._take_outcome(draft, outcome)
        await self._choose_organisations()
        if self.reconnecting and self.chosen:
            await self._save()

    async def _sign_in(self, draft: ConnectionDraft) -> ConsentOutcome | None:
        if draft.kind is Kind.CUSTOM:
            self._progress("Fetching a token with the client secret…")
            return await self.service.outcome_for_custom(draft)
        from xero_tui.screens.consent import ConsentScreen

        outcome: ConsentOutcome | None = await self.app.push_screen_wait(
            ConsentScreen(self.service, draft, demo=self.demo)
        )
        return outcome

    def _take_outcome(self, draft: ConnectionDraft, outcome: ConsentOutcome) -> None:
        self.outcome = outcome
        self.outcome_draft = draft
        self.chosen = []
        self._pasted_token = False
        if draft.kind.uses_browser and outcome.tokens.refresh_token:
            self._put_token(outcome.tokens.refresh_token)
        self._show_hint("refresh-token", None)
        self.refresh_bindings()

    def _put_token(self, token: str) -> None:
        """Show a refresh token from Xero in the field, without it counting as a paste."""
        box = self.query_one("#refresh-token", Input)
        if box.value != token:
            # Only a change posts Input.Changed, which is what clears the mark again.
            self._token_from_us = True
            box.value = token

    async def _choose_organisations(self) -> None:
        outcome = self.outcome
        if outcome is None:
            return
        tenants = outcome.ordered()
        if not tenants:
            self._say(
                "Xero lists no organisations for this app; there is nothing to save.", error=True
            )
            return
        if self.renewing:
            self._renew(tenants)
            return
        if self.kind is Kind.CUSTOM and len(tenants) == 1:
            chosen: list[Tenant] | None = tenants
        else:
            from xero_tui.screens.organisations import OrganisationsScreen

            # Not push_screen_wait: that first waits until the consent dialog is taken down, and
            # meanwhile this screen comes back and is drawn (about 80 ms), only to be covered.
            # The shield keeps a cancelled worker from cancelling the screen's result.
            chosen = await asyncio.shield(
                self.app.push_screen(
                    OrganisationsScreen(outcome, self._saved_tenant_ids()), wait_for_dismiss=True
                )
            )
        if chosen:
            self.chosen = list(chosen)
            self._show_hint("organisation", None)
            self._say("Signed in. Check the connection names, then ctrl+s saves.")
            self.query_one("#save", Button).focus()
        else:
            self._say("No organisation chosen yet: ctrl+o lists them again.")
        self._show_organisations()

    def _renew(self, tenants: list[Tenant]) -> None:
        """A reconnect keeps each renewed connection on its own organisation."""
        self.chosen = tenants
        pairs = self._renewed_pairs()
        if not pairs:
            assert self.existing is not None
            self.chosen = []
            self._say(
                f"This sign-in did not include {self.existing.tenant_name}: choose it on "
                "Xero's page and Generate again.",
                error=True,
            )
        else:
            self.chosen = [t for _, t in pairs]
            self._say("Signed in again. ctrl+s saves.")
        self._show_organisations()

    def _saved_tenant_ids(self) -> frozenset[str]:
        client_id = self._value("client-id")
        try:
            saved = self.service.connections()
        except XeroTuiError:
            return frozenset()
        return frozenset(c.tenant_id for c in saved if c.client_id == client_id)

    @work(exclusive=True, group="generate", exit_on_error=False)
    async def action_organisations(self) -> None:
        await self._choose_organisations()

    @work(exclusive=True, group="generate", exit_on_error=False)
    async def check_pasted_token(self, then_save: bool = False) -> None:
        """A refresh token from another tool: using it proves it works (and rotates it).

        Only an explicit action (enter in the field, or Save) runs this: the new token Xero
        answers with must reach the secret store, and the pasted one dies 30 minutes later.
        """
        token = self._value("refresh-token")
        try:
            draft = self._draft()
        except UsageError as exc:
            self._show_problems(self._problems(saving=False))
            self._say(f"Checking the token needs the app's details first. {exc}", error=True)
            return
        self._progress("Checking the refresh token with Xero…")
        self._checking = True
        try:
            with sign_in_guard(self.app):
                outcome = await self.service.outcome_from_refresh_token(draft, token)
        except TokenCheckFailed as exc:
            # Xero replaced the pasted token before the failure: the new one is the only copy.
            self._rotated = exc.tokens.refresh_token
            if exc.tokens.refresh_token:
                self._put_token(exc.tokens.refresh_token)
            self._show_hint(
                "refresh-token",
                f"{error_sentence(exc)} Xero has already replaced the pasted token; the field "
                "holds the new one: press enter to check it again.",
            )
            return
        except XeroTuiError as exc:
            self._show_hint("refresh-token", error_sentence(exc))
            return
        finally:
            self._checking = False
            self._progress(None)
        self._rotated = outcome.tokens.refresh_token
        self._take_outcome(draft, outcome)
        await self._choose_organisations()
        if then_save and self.chosen:
            await self._save()

    # Saving ------------------------------------------------------------------------------------

    def action_save(self) -> None:
        self.save()

    @on(Button.Pressed, "#save")
    def _save_pressed(self) -> None:
        self.save()

    @work(exclusive=True, group="save", exit_on_error=False)
    async def save(self) -> None:
        await self._save()

    async def _save(self) -> None:
        if self._still_checking():
            return
        if self._draft_changed():
            self._forget_outcome("The app's details changed")
        if self.existing is None:
            # Another process may have saved a connection since the form opened.
            self._taken = await asyncio.to_thread(self._read_taken)
        problems = self._problems(saving=True)
        only_token = set(problems) <= {"refresh-token", "organisation"}
        if (
            self._pasted_token
            and self.outcome is None
            and "refresh-token" in problems
            and only_token
        ):
            # Save is an explicit action: check the pasted token, then save what it gives.
            self._show_problems({})
            self.check_pasted_token(then_save=True)
            return
        self._show_problems(problems)
        if problems:
            listed = ", ".join(LABELS[f] for f in problems)
            first = next(iter(problems.values()))
            self._say(f"Not saved. Needs: {listed}. {first}", error=True)
            return
        draft = self.outcome_draft
        if self.outcome is None or draft is None:
            await self._save_secret_only()
            return
        # The draft the sign-in (or the token check) used, which the fields still match.
        pairs = self._names_for_save(self._value("name"))
        self._progress("Saving…")
        try:
            saved = await asyncio.to_thread(
                self.service.save_connections,
                draft,
                self.outcome,
                pairs,
                replace_existing=self.renewing,
            )
        except XeroTuiError as exc:
            self._say(error_sentence(exc), error=True)
            return
        finally:
            self._progress(None)
        self.saved = True
        self.dismiss(saved)

    async def _save_secret_only(self) -> None:
        """An opened connection without a new sign-in: only a changed client secret can be kept."""
        conn = self.existing
        assert conn is not None
        # The client secret is the one thing that can change without a sign-in.
        if self._describes_another_app(clone_draft(conn, None), with_secret=False):
            self._say(
                "The app type, client ID, redirect URI and scopes take effect with a new sign-in: "
                "press ctrl+g (Generate), then save.",
                error=True,
            )
            return
        secret = self._value("client-secret")
        if not self.kind.has_secret or secret == self._loaded_secret:
            self.dismiss(None)
            return
        self._progress("Storing the new client secret…")
        try:
            await asyncio.to_thread(self.service.secrets.put_client_secret, conn.client_id, secret)
        except XeroTuiError as exc:
            self._say(error_sentence(exc), error=True)
            return
        finally:
            self._progress(None)
        self.saved = True
        self.dismiss([conn])

    # Other keys --------------------------------------------------------------------------------

    def action_reveal(self) -> None:
        for field in ("client-secret", "refresh-token"):
            box = self.query_one(f"#{field}", Input)
            box.password = not box.password

    def action_demo_fill(self) -> None:
        if self.demo is None:
            return
        client_id, secret = self.demo.credentials(self.kind)
        if not self._value("name") and self.existing is None:
            self._set_value("name", "Demo")
        self._set_value("client-id", client_id)
        self._set_value("client-secret", secret or "")
        if self.kind.uses_browser:
            self._set_value("redirect-uri", self.demo.redirect_uri)
        self._say(f"Filled in the demo {self.kind.label}. ctrl+g signs in.")

    def action_checklist(self) -> None:
        from xero_tui.screens.checklist import ChecklistScreen

        def follow(kind: Kind | None) -> None:
            if kind is not None and kind is not self.kind:
                self._select_kind(kind)

        ticks = getattr(self.app, "checklist_ticks", None)
        screen = ChecklistScreen(
            self.kind,
            self._value("redirect-uri") or DEFAULT_REDIRECT_URI,
            self._scopes(),
            ticks,
        )
        self.app.push_screen(screen, follow)

    @property
    def holds_unsaved_token(self) -> bool:
        """Whether leaving now would lose a token Xero issued (a sign-in, or a checked paste)."""
        if self.saved:
            return False
        return self._checking or self.outcome is not None or self._rotated is not None

    def action_back(self) -> None:
        if self._still_checking():
            return
        if not self.holds_unsaved_token:
            self.dismiss(None)
            return
        self._confirm_leave()

    @work(exclusive=True, group="leave", exit_on_error=False)
    async def _confirm_leave(self) -> None:
        if self._rotated is not None:
            question = (
                "Leave without saving? Checking the pasted refresh token used it: Xero replaced "
                "it with a new one that only this form holds, and the pasted one stops working "
                "within 30 minutes. Leaving loses the connection."
            )
        else:
            question = "Leave without saving? The sign-in you just made is not kept."
        leave = await self.app.push_screen_wait(YesNoScreen(question, yes="Leave", no="Stay"))
        if leave:
            self.dismiss(None)

    def palette_commands(self) -> list[PaletteCommand]:
        commands: list[PaletteCommand] = []
        if self.demo is not None:
            commands.append(
                PaletteCommand(
                    "Fill in the demo app",
                    "The emulator's app of the chosen type.",
                    self.action_demo_fill,
                )
            )
        return commands
