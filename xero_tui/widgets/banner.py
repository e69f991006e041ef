"""The strip on every screen that says when the app is not talking to Xero itself."""

from __future__ import annotations

from textual.widgets import Static


class Banner(Static):
    """Demo mode or overridden endpoints, always in view (security property 4)."""

    def __init__(self, text: str, *, demo: bool = False) -> None:
        super().__init__(text, markup=False, classes="-demo" if demo else "")
