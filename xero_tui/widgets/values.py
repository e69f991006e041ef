"""Values the user pastes elsewhere: shown as clickable links, copied with OSC 52.

OSC 52 goes through the terminal, so copying works over SSH where no local clipboard exists.
"""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.content import Content
from textual.style import Style
from textual.widget import Widget

MASK = "•" * 12


def mask(value: str) -> str:
    """A fixed-width stand-in, so the length of a secret is not shown either."""
    return MASK if value else ""


def link_content(text: str, url: str | None = None) -> Content:
    """`text` as an OSC 8 hyperlink to `url` (or to itself when it is an http(s) URL)."""
    target = url or text
    if not target.startswith(("https://", "http://")):
        return Content(text)
    return Content.styled(text, Style(link=target))


class CopyableValue(Widget, can_focus=True):
    """`Label  value`, focusable; `c` copies the value, a URL is a clickable link."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("c", "copy", "Copy")]

    def __init__(
        self,
        label: str,
        value: str,
        *,
        secret: bool = False,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.label = label
        self.value = value
        self.secret = secret

    def render(self) -> Content:
        shown = mask(self.value) if self.secret else link_content(self.value)
        return Content.assemble((f"{self.label}  ", "bold"), shown)

    def set_value(self, value: str) -> None:
        self.value = value
        self.refresh(layout=True)

    def action_copy(self) -> None:
        if not self.value:
            return
        self.app.copy_to_clipboard(self.value)
        self.notify(f"Copied the {self.label.lower()} to the clipboard.", timeout=3)
