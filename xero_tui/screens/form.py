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

from xero_tui.core.connect import ConnectSession, Phase, clone_draft, connection_names
from xero_tui.core.consent import ConnectionDraft, ConsentOutcome
from xero_tui.core.errors import UsageError, XeroTuiError
from xero_tui.core.models import (
    DEFAULT_REDIRECT_URI,
    Connection,
    Kind,
    PendingSignIn,
    Tenant,
    default_scopes,
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
    """Create, open or reconnect a connection, or finish an unfinished sign-in; dismisses with
    what was saved. The sign-in itself is a `ConnectSession`: this screen only drives it."""

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
        resume: PendingSignIn | None = None,
    ) -> None:
        super().__init__()
        self.service = service
        self.demo = demo
        self.existing = existing
        self.reconnecting = reconnect and existing is not None
        self.resuming = resume
        known = existing or resume
        self.kind = known.kind if known is not None else Kind.WEB
        # The sign-in under way, once Generate (or a token check) has started one.
        self.session: ConnectSession | None = None
        self.chosen: list[Tenant] = []
        self.saved = False
        self._loaded_secret: str | None = None
        # A pasted token's check is under way: its answer must arrive before anything else.
        self._checking = False
        # The saved connections, read once off the UI thread (None until then) and the names
        # again on Save: the name field is checked against them on every keystroke.
        self._saved_connections: dict[str, Connection] | None = None
        self._taken: frozenset[str] | None = None

    @property
    def outcome(self) -> ConsentOutcome | None:
        """What the current sign-in reaches, while the fields still describe its app."""
        return self.session.outcome if self.session is not None else None

    @property
    def renewing(self) -> bool:
        """A sign-in here renews the saved connections that share this one's grant."""
        if self.session is not None:
            return bool(self.session.renewing)
        return self.existing is not None or bool(self.resuming and self.resuming.renewing)

    # Layout ------------------------------------------------------------------------------------

    def _title(self) -> str:
        if self.resuming is not None:
            return f"Finish the sign-in {self.resuming.name!r}"
        if self.existing is None:
            return "New connection"
        verb = "Reconnect" if self.reconnecting else "Connection"
        return f"{verb} {self.existing.name!r}"

    def compose(self) -> ComposeResult:
        conn = self.existing or self.resuming
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
                    disabled=self.existing is not None,
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
                        if self.existing
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
        self.query_one("#reuse-row").display = False
        self._show_organisations()
        self._load_saved()
        if self.existing is not None:
            self._load_existing()
        elif self.resuming is not None:
            self._resume(self.resuming)
        else:
            self.query_one("#name", Input).focus()

    def _read_saved(self) -> dict[str, Connection] | None:
        """Blocking: the saved connections (None if the config cannot be read)."""
        try:
            return {c.name: c for c in self.service.connections()}
        except XeroTuiError:
            return None

    def _read_taken(self) -> frozenset[str] | None:
        saved = self._read_saved()
        return None if saved is None else frozenset(saved)

    @work(thread=True, exclusive=True, group="taken", exit_on_error=False)
    def _load_saved(self) -> None:
        saved = self._read_saved()
        self.app.call_from_thread(self._show_saved, saved)

    def _show_saved(self, saved: dict[str, Connection] | None) -> None:
        self._saved_connections = saved
        self._taken = None if saved is None else frozenset(saved)
        self._fill_reuse_choices(list((saved or {}).values()))
        # A name typed before the names were read is checked against them now.
        if self._value("name"):
            self._show_hint("name", self._check("name"))

    def _fill_reuse_choices(self, saved: list[Connection]) -> None:
        seen: dict[str, Connection] = {}
        for conn in saved:
            seen.setdefault(conn.client_id, conn)
        select = self.query_one("#reuse", Select)
        select.set_options(
            (f"{conn.name} ({conn.kind.label}, …{conn.client_id[-6:]})", conn.name)
            for conn in seen.values()
        )
        shown = bool(seen) and self.existing is None and self.resuming is None
        self.query_one("#reuse-row").display = shown

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
        # Names made for several organisations are numbered past saved ones: only a plain
        # name can clash.
        if self.existing is not None or taken is None or len(self.chosen) > 1:
            return None
        if name in taken:
            return f"A connection named {name!r} already exists; choose another name."
        return None

    def _token_waiting(self) -> bool:
        """The Refresh Token field holds a token that has given no organisations here yet:
        pasted, or kept from a check that failed or no longer applies."""
        return (
            self.kind.uses_browser and self.outcome is None and bool(self._value("refresh-token"))
        )

    def _kept_token(self) -> str | None:
        """The refresh token the current sign-in keeps (the field shows it), if any."""
        session = self.session
        if session is None or not session.holds_tokens or session.tokens is None:
            return None
        return session.tokens.refresh_token

    def _problems(self, *, saving: bool) -> dict[str, str]:
        fields = ["client-id", "client-secret", "redirect-uri", "scopes"]
        if saving:
            fields.insert(0, "name")
        problems = {f: p for f in fields if (p := self._check(f)) is not None}
        if not saving:
            return problems
        unchecked = self._token_waiting()
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
            # Only an edit by hand voids the sign-in; the token it keeps is shown there too.
            if event.value.strip() != self._kept_token():
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
        if event.input.id == "refresh-token" and self._token_waiting():
            if not self._still_checking():
                self.check_pasted_token()
        else:
            self.focus_next()

    @on(Select.Changed, "#reuse")
    def _reuse_chosen(self, event: Select.Changed) -> None:
        conn = (self._saved_connections or {}).get(str(event.value))
        if event.value is Select.NULL or conn is None:
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
        session = self.session
        return session is not None and self._describes_another_app(session.draft)

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
        edits to those void its organisations. What Xero issued stays kept (an unfinished
        sign-in) until a new sign-in or check replaces it."""
        session = self.session
        if session is None or session.outcome is None:
            return
        session.set_aside()
        self.chosen = []
        self._show_organisations()
        if reason and self._kept_token():
            self._say(
                f"{reason}, so the organisations no longer apply: Generate again, or press "
                "enter in the Refresh Token field to have the kept token checked again with "
                "the new details."
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
        taken = self._taken or ()
        if self.session is not None:
            return self.session.names_for(self.chosen, name, taken)
        return connection_names(name, self.chosen, taken)

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
                "Xero is checking the pasted token and will answer with a new one: wait for it "
                "to be kept, then save.",
                error=True,
            )
        return self._checking

    def action_generate(self) -> None:
        if not self._still_checking():
            self.generate()

    @on(Button.Pressed, "#generate")
    def _generate_pressed(self) -> None:
        self.action_generate()

    async def _session_for(self, what: str) -> ConnectSession | None:
        """The session a sign-in (or a token check) runs in, for the app the fields describe:
        this form's, or a new one once its name is checked. None, said, when a field is wrong."""
        try:
            draft = self._draft()
            name = check_name(self._value("name"))
        except UsageError as exc:
            problems = self._problems(saving=False)
            if not problems:
                problems = {"name": str(exc)}
            self._show_problems(problems)
            self._say(f"{what} needs the app's details first. {exc}", error=True)
            return None
        session = self.session
        if session is not None and session.phase not in (Phase.SAVED, Phase.DISCARDED):
            # Signing in again from this form replaces its earlier sign-in.
            session.draft = draft
            session.name = name
            return session
        try:
            session = await asyncio.to_thread(
                self.service.start_session, draft, name, reconnect=self.existing is not None
            )
        except XeroTuiError as exc:
            self._say(error_sentence(exc), error=True)
            return None
        self.session = session
        return session

    @work(exclusive=True, group="generate", exit_on_error=False)
    async def generate(self) -> None:
        """Sign in (or, for a custom connection, fetch a token), then choose organisations."""
        session = await self._session_for("Generate")
        if session is None:
            return
        self._show_problems({})
        self._say("")
        try:
            outcome = await self._sign_in(session)
        except XeroTuiError as exc:
            self._say(error_sentence(exc), error=True)
            return
        finally:
            self._progress(None)
        if outcome is None:
            kept = " Xero's answer is kept as an unfinished sign-in." if session.pending else ""
            self._say(f"Sign-in cancelled; nothing was saved.{kept}")
            return
        await self._after_sign_in(session)

    async def _after_sign_in(self, session: ConnectSession) -> None:
        self.chosen = []
        if session.draft.kind.uses_browser and session.tokens and session.tokens.refresh_token:
            self._set_value("refresh-token", session.tokens.refresh_token)
        self._show_hint("refresh-token", None)
        self.refresh_bindings()
        await self._choose_organisations()
        if self.renewing and self.chosen and (self.reconnecting or self.resuming):
            await self._save()

    async def _sign_in(self, session: ConnectSession) -> ConsentOutcome | None:
        if session.draft.kind is Kind.CUSTOM:
            self._progress("Fetching a token with the client secret…")
            return await session.client_credentials()
        from xero_tui.screens.consent import ConsentScreen

        outcome: ConsentOutcome | None = await self.app.push_screen_wait(
            ConsentScreen(self.service, session, demo=self.demo)
        )
        return outcome

    @work(exclusive=True, group="generate", exit_on_error=False)
    async def _resume(self, pending: PendingSignIn) -> None:
        """Finish an unfinished sign-in: its tokens are kept, so no new sign-in is needed."""
        self._fill_from(clone_draft(pending, None))
        self._progress("Reading the organisations this sign-in reaches…")
        try:
            session = await asyncio.to_thread(self.service.resume_session, pending)
            self.session = session
            secret = session.draft.client_secret
            if secret:
                self._loaded_secret = secret
                self._set_value("client-secret", secret)
            await session.organisations()
        except XeroTuiError as exc:
            self._say(error_sentence(exc), error=True)
            return
        finally:
            self._progress(None)
        await self._after_sign_in(session)

    def _fill_from(self, draft: ConnectionDraft) -> None:
        self._select_kind(draft.kind)
        self._set_value("client-id", draft.client_id)
        self._set_value("redirect-uri", draft.redirect_uri)
        self._set_value("scopes", " ".join(draft.scopes))

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

            saved = await asyncio.to_thread(self._saved_tenant_ids)
            # Not push_screen_wait: that first waits until the consent dialog is taken down, and
            # meanwhile this screen comes back and is drawn (about 80 ms), only to be covered.
            # The shield keeps a cancelled worker from cancelling the screen's result.
            chosen = await asyncio.shield(
                self.app.push_screen(OrganisationsScreen(outcome, saved), wait_for_dismiss=True)
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
        assert self.session is not None
        pairs = self.session.renewed()
        if not pairs:
            self.chosen = []
            self._say(
                f"This sign-in did not include the organisation of {self.session.name!r}: "
                "choose it on Xero's page and Generate again.",
                error=True,
            )
        else:
            self.chosen = [t for _, t in pairs]
            self._say("Signed in again. ctrl+s saves.")
        self._show_organisations()

    def _saved_tenant_ids(self) -> frozenset[str]:
        """Blocking: the organisations this app already has saved connections for."""
        assert self.session is not None
        client_id = self.session.draft.client_id
        saved = self._read_saved() or {}
        return frozenset(c.tenant_id for c in saved.values() if c.client_id == client_id)

    @work(exclusive=True, group="generate", exit_on_error=False)
    async def action_organisations(self) -> None:
        await self._choose_organisations()

    @work(exclusive=True, group="generate", exit_on_error=False)
    async def check_pasted_token(self, then_save: bool = False) -> None:
        """A refresh token from another tool: using it proves it works (and rotates it).

        Only an explicit action (enter in the field, or Save) runs this. The session keeps the
        new token Xero answers with before anything else; a token it already keeps, for the
        app the fields still describe, only has its organisations read again.
        """
        token = self._value("refresh-token")
        # A token this form keeps, for the app the fields still describe: no need to use it.
        relist = token == self._kept_token() and not self._draft_changed()
        session = await self._session_for("Checking the token")
        if session is None:
            return
        self._progress("Checking the refresh token with Xero…")
        self._checking = True
        try:
            with sign_in_guard(self.app):
                if relist:
                    await session.organisations()
                else:
                    await session.check_refresh_token(token)
        except XeroTuiError as exc:
            kept = self._kept_token()
            if kept is not None and kept != token:
                # Xero replaced the pasted token before the failure: the new one is kept.
                self._set_value("refresh-token", kept)
                self._show_hint(
                    "refresh-token",
                    f"{error_sentence(exc)} Xero has already replaced the pasted token; the new "
                    "one is kept and the field holds it: press enter to check it again.",
                )
            else:
                self._show_hint("refresh-token", error_sentence(exc))
            return
        finally:
            self._checking = False
            self._progress(None)
        await self._after_sign_in(session)
        if then_save and self.chosen and not self.saved:
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
        if self._still_checking() or self.saved:
            return
        if self._draft_changed():
            self._forget_outcome("The app's details changed")
        if self.existing is None:
            # Another process may have saved a connection since the form opened.
            self._taken = await asyncio.to_thread(self._read_taken)
        problems = self._problems(saving=True)
        only_token = set(problems) <= {"refresh-token", "organisation"}
        if self._token_waiting() and "refresh-token" in problems and only_token:
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
        session = self.session
        if session is None or session.outcome is None:
            await self._save_secret_only()
            return
        self._progress("Saving…")
        try:
            saved = await asyncio.to_thread(session.save, self.chosen, self._value("name"))
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
            # `secrets` reads the config, so it is asked for in the thread too.
            await asyncio.to_thread(
                lambda: self.service.secrets.put_client_secret(conn.client_id, secret)
            )
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
        """Whether Xero has issued tokens here (a sign-in, or a checked paste) not yet saved."""
        if self.saved:
            return False
        return self._checking or (self.session is not None and self.session.holds_tokens)

    def action_back(self) -> None:
        if self._still_checking():
            return
        if not self.holds_unsaved_token and not self._typed_secret():
            self.dismiss(None)
            return
        self._confirm_leave()

    def _typed_secret(self) -> bool:
        """A new form holds a client secret typed or pasted by hand, which leaving would lose."""
        secret = self._value("client-secret")
        return (
            self.existing is None
            and self.kind.has_secret
            and bool(secret)
            and secret != self._loaded_secret
        )

    @work(exclusive=True, group="leave", exit_on_error=False)
    async def _confirm_leave(self) -> None:
        if self.holds_unsaved_token:
            question = (
                "Leave without saving? Xero's answer is kept as an unfinished sign-in: the home "
                "screen offers to finish it (f) or discard it."
            )
        else:
            question = "Leave without saving? The client secret you typed is not kept."
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
