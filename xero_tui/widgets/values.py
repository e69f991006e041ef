"""Values the user pastes elsewhere: shown as clickable links, copied with OSC 52.

OSC 52 goes through the terminal, so copying works over SSH where no local clipboard exists.
"""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.content import Content
from textual.style import Style
from textual.widgets import Static

MASK = "•" * 12


def mask(value: str) -> str:
    """A fixed-width stand-in, so the length of a secret is not shown either."""
    return MASK if value else ""


def link_content(text: str, url: str | None = None) -> Content:
    """`text` as an OSC 8 hyperlink to `url` (or to itself when it is an https URL).

    Plain http is left unlinked: here it is a loopback address to paste, not a page to open.
    """
    target = url or text
    if not target.startswith("https://"):
        return Content(text)
    return Content.styled(text, Style(link=target))


class CopyableValue(Static):
    """`Label  value`; `c` copies the value (when focused), a https URL is a clickable link.

    Inside a focusable container the container's own key can call `copy()` instead.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("c", "copy", "Copy")]

    def __init__(
        self,
        label: str,
        value: str,
        *,
        hint: str = "",
        focusable: bool = True,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        content = Content.assemble((f"{label}  ", "bold"), link_content(value))
        if hint:
            content = Content.assemble(content, (f"   {hint}", "dim"))
        super().__init__(content, id=id, classes=classes)
        self.label = label
        self.value = value
        self.can_focus = focusable

    def copy(self) -> None:
        """Put the value on the clipboard with OSC 52, which works over SSH too."""
        self.app.copy_to_clipboard(self.value)
        self.notify(f"{self.label} copied to the clipboard.", timeout=3)

    def action_copy(self) -> None:
        self.copy()
