"""Pick the organisations to connect after a consent: filter as you type, select several.

The list is a Line API widget rather than an OptionList: an OptionList measures every option on
each `set_options`, which costs 65-190 ms for 10,000 organisations, while this list only renders
the rows on screen, so a filter keystroke is a list comprehension over precomputed folded names.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress
from math import ceil
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import Reactive, reactive
from textual.screen import Screen
from textual.scroll_view import ScrollView
from textual.scrollbar import ScrollBar, ScrollBarRender
from textual.strip import Strip
from textual.widgets import Footer, Input, Static

from xero_tui.core.errors import clean_text
from xero_tui.core.models import Tenant, tier_notice

if TYPE_CHECKING:
    from xero_tui.core.consent import ConsentOutcome

CHECKED = "[x] "
UNCHECKED = "[ ] "
NEW_TAG = "new"
SAVED_TAG = "saved"
BLANK_NEW = " " * len(NEW_TAG)
BLANK_SAVED = " " * len(SAVED_TAG)
# Rendered rows kept: a few screens' worth for each query a keystroke goes back and forth between.
LINE_CACHE = 4096
ROW = ("tenant-list--row",)
CURSOR_ROW = ("tenant-list--row", "tenant-list--cursor")
TYPE_LABELS = {
    "ORGANISATION": "Organisation",
    "PRACTICE": "Practice",
    "PRACTICEMANAGER": "Practice Manager",
}


def type_label(tenant_type: str) -> str:
    return TYPE_LABELS.get(tenant_type, tenant_type.replace("_", " ").title())


def _thumb(bar: ScrollBar, rows: int) -> tuple[int, int] | None:
    """Where `bar` draws its thumb, at the top of `rows` rows, in eighths of a cell; None when
    the bar is not drawn (the rows fit). ScrollBarRender.render_bar's arithmetic."""
    window, height = bar.window_size, bar.size.height
    if not bar.display or not window or not height or rows <= window or rows == height:
        return None
    thumb = max(1.0, window / (rows / height))
    return 0, ceil(thumb * len(ScrollBarRender.VERTICAL_BARS))


def _fit(text: str, width: int) -> str:
    """Pad or cut `text` to exactly `width` cells, with an ellipsis when cut."""
    if width <= 0:
        return ""
    if cell_len(text) > width:
        return set_cell_size(text, width - 1) + "…"
    return set_cell_size(text, width)


@dataclass(frozen=True)
class Matches:
    """The organisations whose name contains `query`: indexes, with their folded names."""

    query: str
    rows: list[int]
    names: list[str]


class TenantList(ScrollView, can_focus=False):
    """One row per organisation; only the rows on screen are ever rendered.

    Focus stays in the filter above, so the screen drives the cursor and the selection.
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "tenant-list--row",
        "tenant-list--cursor",
        "tenant-list--checked",
        "tenant-list--new",
        "tenant-list--saved",
        "tenant-list--type",
        "tenant-list--empty",
    }

    cursor: reactive[int] = reactive(0, always_update=True, init=False)

    class Toggled(Message):
        """A row was clicked: the screen treats it like space on that row."""

        def __init__(self, row: int) -> None:
            super().__init__()
            self.row = row

    def __init__(
        self,
        tenants: Sequence[Tenant],
        new_ids: frozenset[str],
        saved_ids: frozenset[str],
        *,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.tenants = tenants
        self._new = [t.tenant_id in new_ids for t in tenants]
        self._saved = [t.tenant_id in saved_ids for t in tenants]
        self._types = [type_label(t.tenant_type) for t in tenants]
        self._type_width = max((cell_len(label) for label in set(self._types)), default=0)
        self.rows: list[int] = list(range(len(tenants)))
        self.checked: set[int] = set()
        self.empty_message = "No organisations."
        self._styles: dict[tuple[str, ...], Style] = {}
        # Rendered rows by (tenant, width, under the cursor, checked). A filter keystroke moves
        # rows rather than changing them, and a Strip reused keeps Textual's own caches of it.
        self._lines: dict[tuple[int, int, bool, bool], Strip] = {}

    # Data --------------------------------------------------------------------------------------

    def show_rows(self, rows: list[int]) -> None:
        """Replace the visible rows (indexes into `tenants`), keeping the cursor's tenant if shown."""
        current = self.current
        self.rows = rows
        self._set_row_count()
        cursor = 0
        if current is not None and rows:
            # The cursor's tenant keeps its place in a narrowed list when it is still there;
            # a bisect finds it because `rows` keeps the original (ascending) order.
            pos = bisect_left(rows, current)
            if pos < len(rows) and rows[pos] == current:
                cursor = pos
        self.scroll_to(y=0, animate=False, immediate=True)
        self.cursor = cursor
        self.refresh()

    @property
    def current(self) -> int | None:
        """The index into `tenants` of the row under the cursor."""
        if not self.rows:
            return None
        return self.rows[min(self.cursor, len(self.rows) - 1)]

    def toggle(self) -> None:
        index = self.current
        if index is None:
            return
        if index in self.checked:
            self.checked.remove(index)
        else:
            self.checked.add(index)
        self.refresh_row(self.cursor)

    def refresh_row(self, row: int) -> None:
        self.refresh(Region(0, row - self.scroll_offset.y, self.size.width, 1))

    # Cursor ------------------------------------------------------------------------------------

    def validate_cursor(self, cursor: int) -> int:
        return max(0, min(cursor, len(self.rows) - 1))

    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh_row(old)
        self.refresh_row(new)
        self.scroll_to_region(
            Region(0, new, max(self.size.width, 1), 1), animate=False, immediate=True, force=True
        )

    def move(self, delta: int) -> None:
        self.cursor = self.cursor + delta

    @property
    def page(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    # Rendering ---------------------------------------------------------------------------------

    def on_resize(self, event: events.Resize) -> None:
        self._set_row_count(resized=True)

    def _set_row_count(self, resized: bool = False) -> None:
        # Only the scrollbar depends on the row count, so a keystroke updates it without a
        # layout pass of the whole screen (which would double the work of each keystroke).
        size = Size(self.scrollable_content_region.width, len(self.rows))
        self.set_reactive(TenantList.virtual_size, size)
        bar = self.vertical_scrollbar
        old = bar.window_virtual_size
        if (
            not resized
            and self.scroll_offset.y == 0
            and _thumb(bar, old) == _thumb(bar, size.height)
        ):
            # The scrollbar would be drawn as it is (a long list's thumb is one cell at the top
            # whether 9,000 or 10,000 rows match): it learns the count without a repaint.
            bar.set_reactive(ScrollBar.window_virtual_size, size.height)
        else:
            self._scroll_update(size)
        self.refresh()

    def notify_style_update(self) -> None:
        self._styles.clear()
        self._lines.clear()
        super().notify_style_update()

    def _style(self, layer: tuple[str, ...], part: str | None = None) -> Style:
        """The row's style (`layer`), with the colour and weight of one `part` of it on top.

        Only the part's foreground is taken, so the cursor's background runs the full width.
        Cached: looking a component style up costs more than building a row.
        """
        key = (*layer, part or "")
        style = self._styles.get(key)
        if style is None:
            style = self.get_component_rich_style(*layer)
            if part is not None:
                fg = self.get_component_rich_style(part)
                style += Style(color=fg.color, bold=fg.bold, italic=fg.italic)
            self._styles[key] = style
        return style

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        row = self.scroll_offset.y + y
        base = self._style(ROW)
        if not self.rows:
            if y == 0:
                style = self._style(ROW, "tenant-list--empty")
                return Strip([Segment(_fit(" " + self.empty_message, width), style)], width)
            return Strip.blank(width, base)
        if row >= len(self.rows):
            return Strip.blank(width, base)
        index = self.rows[row]
        key = (index, width, row == self.cursor, index in self.checked)
        line = self._lines.get(key)
        if line is None:
            if len(self._lines) >= LINE_CACHE:
                self._lines.clear()
            layer = CURSOR_ROW if key[2] else ROW
            line = self._lines[key] = Strip(self._segments(index, width, layer, key[3]), width)
        return line

    def _segments(
        self, index: int, width: int, layer: tuple[str, ...], checked: bool
    ) -> list[Segment]:
        """The row's cells; neighbours of one style are one segment, which Textual's work on
        each line (cropping, filters) pays for per segment."""
        tenant = self.tenants[index]
        tags_width = 1 + len(NEW_TAG) + 1 + len(SAVED_TAG) + 1 + self._type_width + 1
        name_width = width - len(CHECKED) - 1 - tags_width
        if name_width < 12:
            # Too narrow for the tags: the name matters more than the type.
            name_width, tags_width = width - len(CHECKED) - 1, 0
        base = self._style(layer)
        parts = [
            (" ", base),
            (CHECKED, self._style(layer, "tenant-list--checked")) if checked else (UNCHECKED, base),
            (_fit(clean_text(tenant.tenant_name), name_width), base),
        ]
        if tags_width:
            new = self._new[index]
            saved = self._saved[index]
            parts += [
                (" ", base),
                (NEW_TAG, self._style(layer, "tenant-list--new")) if new else (BLANK_NEW, base),
                (" ", base),
                (SAVED_TAG, self._style(layer, "tenant-list--saved"))
                if saved
                else (BLANK_SAVED, base),
                (" ", base),
                (
                    _fit(self._types[index], self._type_width),
                    self._style(layer, "tenant-list--type"),
                ),
                (" ", base),
            ]
        return list(Segment.simplify(Segment(text, style) for text, style in parts))

    def on_click(self, event: events.Click) -> None:
        row = self.scroll_offset.y + event.y
        if 0 <= row < len(self.rows):
            self.cursor = row
            self.post_message(self.Toggled(row))


class FilterInput(Input):
    """The filter above the list; a keystroke in it repaints the two, and lays out nothing.

    Input sets its virtual size on every change, and Widget's `virtual_size` asks for a layout
    of the whole screen; the filter's size does not depend on its text, so that layout (and the
    repaint of every widget on the screen it brings) would be wasted on each keystroke.
    """

    virtual_size: Reactive[Size] = Reactive(Size(0, 0), layout=False)

    def check_consume_key(self, key: str, character: str | None) -> bool:
        # A space in an empty filter is the screen's (it selects); after text, it is typed.
        if key == "space" and not self.value:
            return False
        return super().check_consume_key(key, character)


class OrganisationsScreen(Screen[list[Tenant] | None]):
    """Every organisation the consent reaches: the ones it just granted first."""

    # Absolute, so that subclasses defined elsewhere find it too.
    CSS_PATH = Path(__file__).with_name("organisations.tcss")

    # Space selects while the filter is empty and types a space into it otherwise (names have
    # spaces); tab selects either way, as in fzf, and is the key the footer shows.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("tab", "toggle_row", "Select", priority=True),
        Binding("space", "toggle_row", "Select", show=False, priority=True),
        Binding("enter", "confirm", "Connect", priority=True),
        Binding("escape", "cancel", "Cancel"),
        Binding("up", "move(-1)", "Up", show=False, priority=True),
        Binding("down", "move(1)", "Down", show=False, priority=True),
        Binding("pageup", "page(-1)", "Page up", show=False, priority=True),
        Binding("pagedown", "page(1)", "Page down", show=False, priority=True),
        Binding("home", "jump(0)", "First", show=False, priority=True),
        Binding("end", "jump(-1)", "Last", show=False, priority=True),
    ]

    def __init__(self, outcome: ConsentOutcome, saved_tenant_ids: frozenset[str]) -> None:
        super().__init__()
        self.outcome = outcome
        self.tenants = outcome.ordered()
        self._saved_ids = saved_tenant_ids
        # The answers for the filter's text and each shorter start of it, the empty one first.
        self._matches = [
            Matches(
                "", list(range(len(self.tenants))), [t.tenant_name.casefold() for t in self.tenants]
            )
        ]

    def compose(self) -> ComposeResult:
        new = sum(t.tenant_id in self.outcome.new_tenant_ids for t in self.tenants)
        yield Static("Choose organisations", id="org-title")
        # Xero's text inside: not markup.
        yield Static(self._intro(new), id="org-intro", markup=False)
        yield FilterInput(
            placeholder="Type to filter by name; space or tab selects", id="org-filter"
        )
        yield TenantList(self.tenants, self.outcome.new_tenant_ids, self._saved_ids, id="org-list")
        yield Static(id="org-tier", markup=False)
        yield Static(id="org-status")
        yield Footer()

    def _intro(self, new: int) -> str:
        total = len(self.tenants)
        reach = f"This consent reaches {total:,} organisation{'s' if total != 1 else ''}"
        if new == 1:
            granted = "; the one it just granted comes first, marked new"
        elif new:
            granted = f"; the {new:,} it just granted come first, marked new"
        else:
            granted = ""
        user = self.outcome.user
        who = f"Signed in to Xero as {user}. " if user else ""
        return (
            f"{who}{reach}{granted}. Each one you choose becomes a connection sharing this consent."
        )

    def on_mount(self) -> None:
        tenant_list = self.query_one(TenantList)
        tenant_list.empty_message = (
            "No organisation matches the filter."
            if self.tenants
            else "Xero returned no organisations for this consent."
        )
        self._update_status()
        # A watcher rather than Input.Changed: the list is filtered in the same frame as the
        # keystroke is drawn in the filter, not in a second one.
        self.watch(self.query_one(FilterInput), "value", self.apply_filter, init=False)

    @property
    def tenant_list(self) -> TenantList:
        return self.query_one(TenantList)

    # Filter --------------------------------------------------------------------------------------

    def apply_filter(self, text: str) -> None:
        query = text.casefold()
        tenant_list = self.tenant_list
        # Typing narrows: only the rows of the query typed so far can still match. Backspace
        # goes back to the answer kept for the shorter query.
        matches = self._matches
        while not query.startswith(matches[-1].query):
            matches.pop()
        last = matches[-1]
        if last.query != query:
            hits = [query in name for name in last.names]
            last = Matches(query, list(compress(last.rows, hits)), list(compress(last.names, hits)))
            matches.append(last)
        rows = last.rows
        had_rows = bool(tenant_list.rows)
        tenant_list.show_rows(rows)
        self._update_status()
        if bool(rows) != had_rows:
            # The list keys (and their footer entries) apply only while a row is shown.
            self.refresh_bindings()

    def _update_status(self) -> None:
        tenant_list = self.tenant_list
        shown, total = len(tenant_list.rows), len(self.tenants)
        chosen = len(tenant_list.checked)
        parts = [f"{shown:,} of {total:,} shown" if shown != total else f"{total:,} shown"]
        parts.append(f"{chosen:,} selected" if chosen else "none selected")
        self.query_one("#org-status", Static).update(" · ".join(parts), layout=False)

    def _show_tier(self) -> None:
        """Past the Starter tier's limit the line appears and stays while it applies: said
        once, not at each selection, and nothing is refused here. The app's organisations
        already saved count too: the limit is the app's."""
        checked = self.tenant_list.checked
        count = (
            len({self.tenants[i].tenant_id for i in checked} | self._saved_ids) if checked else 0
        )
        notice = tier_notice(count)
        line = self.query_one("#org-tier", Static)
        if line.display != (notice is not None):
            line.update(notice or "")
            line.display = notice is not None

    # Keys ----------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("toggle_row", "move", "page", "jump"):
            return bool(self.tenant_list.rows)
        if action == "confirm":
            return bool(self.tenant_list.rows or self.tenant_list.checked)
        return True

    def action_move(self, delta: int) -> None:
        self.tenant_list.move(delta)

    def action_page(self, direction: int) -> None:
        tenant_list = self.tenant_list
        tenant_list.move(direction * tenant_list.page)

    def action_jump(self, row: int) -> None:
        tenant_list = self.tenant_list
        tenant_list.cursor = row if row >= 0 else len(tenant_list.rows) - 1

    def action_toggle_row(self) -> None:
        self.tenant_list.toggle()
        self._update_status()
        self._show_tier()
        self.refresh_bindings()

    @on(TenantList.Toggled)
    def _clicked(self, event: TenantList.Toggled) -> None:
        self.action_toggle_row()

    def action_confirm(self) -> None:
        tenant_list = self.tenant_list
        if tenant_list.checked:
            chosen = sorted(tenant_list.checked)
        elif tenant_list.current is not None:
            chosen = [tenant_list.current]
        else:
            return
        self.dismiss([self.tenants[i] for i in chosen])

    def action_cancel(self) -> None:
        self.dismiss(None)
