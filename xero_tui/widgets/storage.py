"""The line on every full screen that says where this app keeps secrets (security property 30)."""

from __future__ import annotations

from rich.cells import cell_len
from textual.content import Content
from textual.widget import Widget

UNKNOWN = "Secrets: …"


def storage_text(description: str) -> str:
    return f"Secrets: {description}"


def _head(text: str, cells: int) -> str:
    """The start of `text` that fits in `cells` terminal cells."""
    used = 0
    for index, char in enumerate(text):
        used += cell_len(char)
        if used > cells:
            return text[:index]
    return text


def _tail(text: str, cells: int) -> str:
    """The end of `text` that fits in `cells` terminal cells."""
    return _head(text[::-1], cells)[::-1]


def elide_middle(text: str, width: int) -> str:
    """`text` in `width` cells: a long one loses its middle, so a path keeps its file name.

    Counted in terminal cells, not characters: a wide (CJK) character takes two.
    """
    if width <= 0 or cell_len(text) <= width:
        return text
    if width < 3:
        return _head(text, width)
    tail = (width - 1) // 2
    return _head(text, width - 1 - tail) + "…" + _tail(text, tail)


class StorageLine(Widget):
    """`Secrets: keyring (…)` or `Secrets: plain file PATH`; the app keeps every copy current.

    One row whatever the path, so that every screen keeps its layout at 80x24 and a dialog
    in the middle of the screen does not hide it.
    """

    def __init__(self, text: str | None = None) -> None:
        super().__init__()
        self.text = text or UNKNOWN

    def update(self, text: str) -> None:
        if text != self.text:
            self.text = text
            self.refresh()

    def render(self) -> Content:
        return Content(elide_middle(self.text, self.content_size.width))
