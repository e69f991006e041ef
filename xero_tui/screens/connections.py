"""Home: the saved connections, their health, and the keys that act on one of them."""

from __future__ import annotations

import asyncio
import threading
from functools import partial
from typing import TYPE_CHECKING, ClassVar, cast

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, LoadingIndicator, Static

from xero_tui.core.connect import pending_sign_ins, reconnect_names
from xero_tui.core.errors import StorageError, TenantNotConnected, XeroTuiError
from xero_tui.core.models import Connection, PendingSignIn, Status
from xero_tui.screens import Host, Messages, PaletteCommand, error_sentence, local_time
from xero_tui.widgets import StorageLine

# The screens opened from here are imported when first opened, so start-up does not pay for them.
if TYPE_CHECKING:
    from collections.abc import Callable

    from xero_tui.core.health import Health, TestResult
    from xero_tui.core.service import Service
    from xero_tui.screens.confirm import DeleteChoice

_COLOURS = {"ok": "success", "warning": "warning", "error": "error"}
COLUMNS = ("Name", "Organisation", "Kind", "Status", "Secrets")
# From this width on, the table has room for a column saying where each one's secrets live.
WIDE = 100
# Names and organisations are cut to no fewer cells than this.
MIN_NAME = 12
# Below this width the footer leaves out what the screen says otherwise: enter opens a row,
# ctrl+p the palette (and the line of unfinished sign-ins names f).
NARROW = 80
# The footer with an unfinished sign-in's key as well needs this much to show every key.
ROOM_WITH_PENDING = 100
# The screen's class while its footer has no room for every key (app.tcss hides the palette's).
TIGHT = "-tight-footer"
# How long the second read (the keyring's) waits for the first one's rows to be painted.
PAINT_WAIT = 1.0
# How long reading the config may take before the home screen says it is reading it.
SLOW_READ = 0.3


class Cell:
    """One cell of the table: plain text in one style, cut to its column with an ellipsis.

    It has no `__rich_measure__`, on purpose: the columns have fixed widths, yet DataTable
    measures every cell of each new row, and measuring is most of what a thousand connections
    cost to show. Its Text is made only when the cell is drawn: few of the rows are on screen.
    """

    __slots__ = ("style", "text")

    def __init__(self, text: str, style: str = "") -> None:
        self.text = text
        self.style = style

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text(self.text, style=self.style, overflow="ellipsis", no_wrap=True)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Cell):
            return NotImplemented
        return self.text == other.text and self.style == other.style

    def __hash__(self) -> int:
        return hash((self.text, self.style))


class ConnectionTable(DataTable[Cell]):
    """The table, with enter shown in the footer as what it does here."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open_row", "Open"),
        # Left out of a footer short of room (TIGHT); enter still opens (DataTable's own).
        Binding("enter", "select_cursor", "Open", show=False),
    ]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "open_row":
            return not self.screen.has_class(TIGHT)
        return super().check_action(action, parameters)

    def action_open_row(self) -> None:
        self.action_select_cursor()


class ConnectionsScreen(Messages, Screen[None]):
    """The table of saved connections; every action on a row has a key shown in the footer."""

    message_prefix = "home"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "new", "New", tooltip="Create a connection: client ID, secret, sign in."),
        Binding("t", "test", "Test", tooltip="Refresh the token and read the organisation."),
        Binding("r", "reconnect", "Reconnect", tooltip="Sign in to Xero again for this one."),
        Binding("d", "delete", "Delete", tooltip="Remove it (and optionally disconnect at Xero)."),
        Binding("c", "copy_token", "Token", tooltip="Copy a valid access token (OSC 52)."),
        Binding("k", "checklist", "Setup", tooltip="How to create the app at Xero."),
        Binding("f", "finish", "Finish sign-in", tooltip="Finish or discard a kept sign-in."),
        # Below 80 columns the footer has no room for it; the unfinished sign-ins' line names f.
        Binding("f", "finish_unlisted", "Finish sign-in", show=False),
        Binding("q", "app.quit", "Quit", show=False),
    ]
    ROW_ACTIONS: ClassVar[frozenset[str]] = frozenset(
        {"open", "test", "reconnect", "delete", "copy_token"}
    )

    def __init__(self, service: Service) -> None:
        super().__init__()
        self.service = service
        self._health: dict[str, Health] = {}
        # Connections whose organisation Xero no longer lists, as found during this session
        # (the config cannot hold it).
        self._disconnected: set[str] = set()
        # Sign-ins Xero answered whose connections are not saved yet, oldest first.
        self._pending: list[PendingSignIn] = []
        self._offered = False
        self._storage = ""
        # The secret store could not be read: each row's tokens are neither there nor missing.
        self._secrets_unknown = False
        # What the table shows: its columns (label, width) and its rows (key, cells).
        self._shown: tuple[list[tuple[str, int]], list[tuple[str, tuple[Cell, ...]]]] | None = None

    @property
    def xero_app(self) -> Host:
        return cast("Host", self.app)

    def compose(self) -> ComposeResult:
        yield Static("Xero connections", classes="screen-title")
        yield ConnectionTable(id="connections", cursor_type="row")
        yield Static(id="home-empty", classes="empty-state")
        yield Static(id="home-pending", classes="pending-line", markup=False)
        with Horizontal(id="home-progress", classes="progress-line"):
            yield LoadingIndicator()
            yield Static(id="home-progress-text", markup=False)
        yield Static(id="home-message", classes="message-line", markup=False)
        # Composed here rather than added by the app, so that it is in place in the first frame.
        yield StorageLine(self.xero_app.storage_line)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#home-empty").display = False
        self.query_one("#home-pending").display = False
        self._progress(None)
        # The config is usually read in milliseconds: the spinner shows only when it is not
        # (painting it meanwhile would only slow the reading down).
        self._reading = self.set_timer(
            SLOW_READ, partial(self._progress, "Reading the saved connections…")
        )
        self.reload()

    # Loading -----------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def reload(self) -> None:
        """Read the config and each connection's stored tokens (keyring calls: off the loop)."""
        try:
            # The config alone fills the table at once; the keyring may take a while to answer.
            config = self.service.load()
            listed = self.service.health(read_secrets=False, config=config)
        except XeroTuiError as exc:
            self.app.call_from_thread(self._show_load_error, exc)
            return
        pending = pending_sign_ins(config)
        if listed:
            painted = threading.Event()
            self.app.call_from_thread(
                self._show, listed, listed[0].storage, painted.set, config_only=True
            )
            # Reading the keyring (importing it, too) while those rows are painted would
            # hold the interpreter lock the painting needs.
            painted.wait(PAINT_WAIT)
        try:
            health = self.service.health(config=config)
            storage = self.service.secrets.description
        except StorageError as exc:
            # Only the secrets could not be read: the config's rows, and every key that acts
            # on them, stay; what the secret store would have said is shown as unknown.
            self.app.call_from_thread(self._show, listed, None, secrets_error=exc, pending=pending)
            # The storage line names the keyring as it is ("none available"), not only "keyring".
            try:
                storage = self.service.secrets.description
            except XeroTuiError:
                return
            self.app.call_from_thread(self.xero_app.show_storage, storage)
            return
        except XeroTuiError as exc:
            self.app.call_from_thread(self._show_load_error, exc)
            return
        self.app.call_from_thread(self._show, health, storage, pending=pending)

    def _show(
        self,
        health: list[Health],
        storage: str | None,
        painted: Callable[[], object] | None = None,
        *,
        config_only: bool = False,
        secrets_error: StorageError | None = None,
        pending: list[PendingSignIn] | None = None,
    ) -> None:
        """Show `health`; `storage` is where secrets live (None: the secret store failed, with
        `secrets_error`, so each row's secrets are unknown); `pending`, the unfinished sign-ins
        (None while only the config's rows are shown)."""
        if pending is not None:
            self._show_pending(pending)
        self._reading.stop()
        self._progress(None)
        self._health = {h.connection.name: h for h in health}
        self._secrets_unknown = secrets_error is not None
        if storage is not None:
            self._storage = storage
        elif health:
            self._storage = health[0].storage
        self._fill_table()
        empty = not health
        table = self.query_one(DataTable)
        table.display = not empty
        # Hidden, the table must not take focus back (after a dialog) and offer its enter key.
        table.disabled = empty
        self.query_one("#home-empty", Static).update(self._empty_text() if empty else "")
        self.query_one("#home-empty").display = empty
        if not empty:
            table.focus()
        self.refresh_bindings()
        if secrets_error is not None:
            self._say(error_sentence(secrets_error), error=True)
        elif storage is not None and (not config_only or self.xero_app.storage_line is None):
            # The config alone only knows "keyring", not which one: it does not replace a line
            # that already names the backend.
            self.xero_app.show_storage(storage)
        if painted is not None:
            self.call_after_refresh(self._when_painted, painted)
        self.call_after_refresh(self._when_painted, self.xero_app.settle)

    def _show_pending(self, pending: list[PendingSignIn]) -> None:
        self._pending = pending
        line = self.query_one("#home-pending", Static)
        line.display = bool(pending)
        if pending:
            names = ", ".join(repr(p.name) for p in pending)
            plural = "s" if len(pending) != 1 else ""
            line.update(
                f"Unfinished sign-in{plural}: {names}. Xero's answer is kept; f finishes or "
                "discards it without signing in again."
            )
        self._fit_footer()
        if pending and not self._offered:
            # Offered once a start: the key stays for later.
            self._offered = True
            self.action_finish()

    def _when_painted(self, callback: Callable[[], object]) -> None:
        """Run `callback` once the table's rows are on screen, not merely added.

        DataTable sizes new rows on its own next idle, which can come after this screen's.
        """
        table = self.query_one(DataTable)
        if table.display and table.virtual_size.height <= table.row_count:
            self.call_after_refresh(self._when_painted, callback)
            return
        callback()

    def _fill_table(self) -> None:
        """Rows sized to the terminal: names are cut before a status is.

        When only some cells differ from what the table shows (the keyring's answer after the
        config's, a status after a test), only those are replaced: refilling measures every cell.
        """
        table = self.query_one(DataTable)
        rows = list(self._health.values())
        # Cells that read the same are one object: there are thousands of rows, and few kinds.
        shared: dict[str, Cell] = {}
        statuses = [self._status_cell(h, shared) for h in rows]
        kind_cells = {kind: Cell(kind.short_label) for kind in {h.connection.kind for h in rows}}
        kinds = [kind_cells[h.connection.kind] for h in rows]
        if self._secrets_unknown:
            where = "unknown"
        elif self._storage.startswith("plain file"):
            where = "file"
        elif self._storage.startswith("PostgreSQL"):
            where = "shared"
        else:
            where = "keyring"
        storage = Cell(where)
        width = self.size.width or self.app.size.width
        # Each column has one cell of padding either side; the cursor column needs one more.
        show_storage = width >= WIDE
        kind_width = max([len(COLUMNS[2]), *(cell_len(k.text) for k in kind_cells.values())])
        status_width = max([len(COLUMNS[3]), *(cell_len(s.text) for s in shared.values())])
        fixed = [kind_width, status_width, *([len(COLUMNS[4])] if show_storage else [])]
        free = width - sum(fixed) - 2 * (2 + len(fixed)) - 2
        # Too narrow for names and statuses both to be read: the app type (shown in the form)
        # gives way first, so that a status is never cut.
        show_kind = free >= 2 * MIN_NAME
        if not show_kind:
            fixed.pop(0)
            free += kind_width + 2
        names = max([len(COLUMNS[0]), *(len(h.connection.name) for h in rows)])
        orgs = max([len(COLUMNS[1]), *(len(h.connection.tenant_name) for h in rows)])
        if names + orgs > free:
            orgs = min(orgs, max(MIN_NAME, free // 2))
            names = max(MIN_NAME, free - orgs)
        labels = [label for label in COLUMNS if label != "Kind" or show_kind]
        columns = list(zip(labels, [names, orgs, *fixed], strict=False))
        cells = [
            (
                h.connection.name,
                (
                    Cell(h.connection.name),
                    Cell(h.connection.tenant_name),
                    *([kind] if show_kind else []),
                    status,
                    *([storage] if show_storage else []),
                ),
            )
            for h, kind, status in zip(rows, kinds, statuses, strict=True)
        ]
        shown, self._shown = self._shown, (columns, cells)
        if shown is not None and shown[0] == columns and len(shown[1]) == len(cells):
            old_rows = shown[1]
            if all(old[0] == new[0] for old, new in zip(old_rows, cells, strict=True)):
                for (key, old), (_, new) in zip(old_rows, cells, strict=True):
                    for (label, _), before, after in zip(columns, old, new, strict=True):
                        if before != after:
                            table.update_cell(key, label.lower(), after)
                return
        selected = self.selected_name()
        table.clear(columns=True)
        for label, size in columns:
            table.add_column(label, width=size, key=label.lower())
        for key, row in cells:
            table.add_row(*row, key=key)
        if selected in self._health:
            table.move_cursor(row=table.get_row_index(selected))

    def on_resize(self) -> None:
        if self._health:
            self._fill_table()
        self._fit_footer()

    def _fit_footer(self) -> None:
        width = self.size.width
        room = ROOM_WITH_PENDING if self._pending else NARROW
        self.set_class(width < room, TIGHT)
        self.refresh_bindings()

    def _empty_text(self) -> Text:
        lines = [
            ("No connections yet.\n\n", "bold"),
            ("1. Create the app at Xero: press ", ""),
            ("k", "bold"),
            (" for the checklist (what to click, what to paste).\n", ""),
            ("2. Press ", ""),
            ("n", "bold"),
            (
                " for a new connection: paste the client ID and secret, then Generate to sign "
                "in to Xero and choose the organisations.",
                "",
            ),
        ]
        if self.xero_app.demo is not None:
            lines.append(
                (
                    "\n\nDemo: the app already exists. Press n, then ctrl+f to fill in its "
                    "credentials.",
                    "italic",
                )
            )
        return Text.assemble(*lines)

    def _show_load_error(self, error: XeroTuiError) -> None:
        self._reading.stop()
        self._progress(None)
        self._health = {}
        self._secrets_unknown = False
        table = self.query_one(DataTable)
        table.display = False
        # Hidden, the table must not take focus back (after a dialog) and offer its enter key.
        table.disabled = True
        empty = self.query_one("#home-empty", Static)
        empty.update(Text(error_sentence(error)))
        empty.display = True
        self.refresh_bindings()
        self.xero_app.refresh_storage()
        self.call_after_refresh(self.xero_app.settle)

    def _status_cell(self, health: Health, shared: dict[str, Cell]) -> Cell:
        if health.connection.name in self._disconnected:
            health = health.checked(False)
        label, severity = health.label, health.severity
        if self._secrets_unknown and severity == "ok":
            on_file = self._storage.startswith("plain file")
            label = "secrets file unreadable" if on_file else "keyring unavailable"
        if label in shared:
            return shared[label]
        # What the secret store would say is unknown: no row is known to be fine, or broken.
        colour = "warning" if self._secrets_unknown else _COLOURS[severity]
        cell = shared[label] = Cell(label, self.app.theme_variables.get(colour, ""))
        return cell

    # Selection ---------------------------------------------------------------------------------

    def selected_name(self) -> str | None:
        table = self.query_one(DataTable)
        if not self._health or table.row_count == 0:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return row_key.value

    def selected(self) -> Connection | None:
        name = self.selected_name()
        health = self._health.get(name) if name else None
        return health.connection if health else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "finish":
            return bool(self._pending) and self.size.width >= NARROW
        if action == "finish_unlisted":
            return bool(self._pending)
        if action not in self.ROW_ACTIONS:
            return True
        conn = self.selected()
        if conn is None:
            return False
        if action == "copy_token":
            # No token to copy until the connection is renewed, or while none is stored.
            health = self._health.get(conn.name)
            return (
                conn.status is not Status.NEEDS_RECONNECT
                and conn.name not in self._disconnected
                and not (health is not None and health.secret_missing)
            )
        return True

    @on(DataTable.RowHighlighted)
    def _row_changed(self) -> None:
        self.refresh_bindings()

    @on(DataTable.RowSelected)
    def _row_chosen(self) -> None:
        self.action_open()

    # Progress and messages ---------------------------------------------------------------------

    # Actions -----------------------------------------------------------------------------------

    def action_new(self) -> None:
        from xero_tui.screens.form import FormScreen

        self.app.push_screen(
            FormScreen(self.service, demo=self.xero_app.demo), partial(self._saved, "Saved")
        )

    def action_open(self) -> None:
        conn = self.selected()
        if conn is None:
            return
        from xero_tui.screens.form import FormScreen

        screen = FormScreen(self.service, demo=self.xero_app.demo, existing=conn)
        self.app.push_screen(screen, partial(self._saved, "Saved"))

    def action_reconnect(self) -> None:
        conn = self.selected()
        if conn is None:
            return
        self.reconnect(conn.name)

    @work(exclusive=True, group="open", exit_on_error=False)
    async def reconnect(self, name: str) -> None:
        found = await self._fresh(name)
        if found is None:
            return
        conn = found[0]
        from xero_tui.screens.form import FormScreen

        screen = FormScreen(self.service, demo=self.xero_app.demo, existing=conn, reconnect=True)
        self.app.push_screen(screen, partial(self._saved, "Reconnected"))

    def _saved(self, verb: str, saved: list[Connection] | None) -> None:
        if saved:
            for conn in saved:
                self._disconnected.discard(conn.name)
            names = ", ".join(repr(c.name) for c in saved)
            self._say(f"{verb} {names}.")
        self.reload()

    def action_test(self) -> None:
        conn = self.selected()
        if conn is not None:
            self.test(conn.name)

    def test(self, name: str) -> None:
        from xero_tui.screens.test_result import TestResultScreen

        def tested(result: TestResult | XeroTuiError | None) -> None:
            if isinstance(result, TenantNotConnected):
                self._disconnected.add(name)
            elif result is not None and not isinstance(result, XeroTuiError):
                self._disconnected.discard(name)
            self.reload()

        self.app.push_screen(TestResultScreen(self.service, name), tested)

    def action_delete(self) -> None:
        conn = self.selected()
        if conn is not None:
            self.delete(conn.name)

    async def _fresh(self, name: str) -> tuple[Connection, list[str]] | None:
        """The saved connection as it is now (another process may have changed the config),
        and the names of every connection sharing its grant."""
        try:
            config = await asyncio.to_thread(self.service.load)
        except XeroTuiError as exc:
            self._say(error_sentence(exc), error=True)
            return None
        if name not in config.connections:
            self._say(f"{name!r} is no longer saved.", error=True)
            self.reload()
            return None
        return config.connections[name], reconnect_names(config, name)

    @work(exclusive=True, group="open", exit_on_error=False)
    async def delete(self, name: str) -> None:
        found = await self._fresh(name)
        if found is None:
            return
        conn, grant_names = found
        from xero_tui.screens.confirm import DeleteScreen

        sharing = [n for n in grant_names if n != name]

        def chosen(choice: DeleteChoice | None) -> None:
            if choice is not None:
                self._remove(name, choice)

        self.app.push_screen(DeleteScreen(conn, sharing), chosen)

    @work(exclusive=True, group="remove", exit_on_error=False)
    async def _remove(self, name: str, choice: DeleteChoice) -> None:
        at_xero = choice.disconnect or choice.revoke
        self._progress(f"Removing {name!r}" + (" and telling Xero…" if at_xero else "…"))
        try:
            summary = await self.service.remove(
                name, disconnect=choice.disconnect, revoke=choice.revoke
            )
        except XeroTuiError as exc:
            self._say(error_sentence(exc), error=True)
        else:
            self._disconnected.discard(name)
            self._say(summary)
        finally:
            self._progress(None)
        self.reload()

    def action_copy_token(self) -> None:
        conn = self.selected()
        if conn is not None:
            self.copy_token(conn.name)

    @work(exclusive=True, group="token", exit_on_error=False)
    async def copy_token(self, name: str) -> None:
        """The user asked for this token explicitly: only then does a token reach the clipboard."""
        self._progress(f"Getting an access token for {name!r}…")
        try:
            _, tokens = await self.service.access_token(name)
        except XeroTuiError as exc:
            self._say(error_sentence(exc), error=True)
            self.reload()
            return
        finally:
            self._progress(None)
        self.app.copy_to_clipboard(tokens.access_token)
        self._say(
            f"Copied an access token for {name!r} to the clipboard; "
            f"it is valid until {local_time(tokens.expires_at)}."
        )

    @work(exclusive=True, group="check", exit_on_error=False)
    async def check_all(self) -> None:
        """Ask Xero whether each organisation is still connected to its grant."""
        names = list(self._health)
        problems = 0
        for index, name in enumerate(names, 1):
            self._progress(f"Asking Xero about {name!r} ({index} of {len(names)})…")
            try:
                connected = await self.service.still_connected(name)
            except XeroTuiError as exc:
                self._disconnected.discard(name)
                problems += 1
                self._say(f"{name}: {error_sentence(exc)}", error=True)
                continue
            if connected:
                self._disconnected.discard(name)
            else:
                self._disconnected.add(name)
                problems += 1
        self._progress(None)
        if not problems:
            self._say("Xero still lists the organisation of every connection.")
        self.reload()

    def action_checklist(self) -> None:
        self.xero_app.open_checklist()

    def action_finish_unlisted(self) -> None:
        self.action_finish()

    def action_finish(self) -> None:
        if not self._pending:
            return
        from xero_tui.screens.confirm import PendingScreen

        pending = self._pending[0]

        def chosen(choice: str | None) -> None:
            if choice == "finish":
                self._finish(pending)
            elif choice == "discard":
                self._discard(pending)

        self.app.push_screen(PendingScreen(pending, len(self._pending) - 1), chosen)

    def _finish(self, pending: PendingSignIn) -> None:
        from xero_tui.screens.form import FormScreen

        screen = FormScreen(self.service, demo=self.xero_app.demo, resume=pending)
        self.app.push_screen(screen, partial(self._saved, "Saved"))

    @work(exclusive=True, group="remove", exit_on_error=False)
    async def _discard(self, pending: PendingSignIn) -> None:
        self._progress(f"Discarding the sign-in {pending.name!r} and revoking it at Xero…")
        try:
            self._say(await self.service.discard(pending))
        except XeroTuiError as exc:
            self._say(error_sentence(exc), error=True)
        finally:
            self._progress(None)
        self.reload()

    def palette_commands(self) -> list[PaletteCommand]:
        commands = [
            PaletteCommand("New connection", "Client ID, secret, sign in.", self.action_new),
            PaletteCommand("Reload connections", "Read the config file again.", self.reload),
        ]
        if self._health:
            commands.append(
                PaletteCommand(
                    "Check every connection at Xero",
                    "Refresh each token and ask Xero whether its organisation is connected.",
                    self.check_all,
                )
            )
        for name in self._health:
            commands += [
                PaletteCommand(
                    f"Test {name}", "Refresh and read the organisation.", partial(self.test, name)
                ),
                PaletteCommand(
                    f"Reconnect {name}", "Sign in to Xero again.", partial(self.reconnect, name)
                ),
                PaletteCommand(f"Delete {name}", "Asks first.", partial(self.delete, name)),
            ]
        return commands
