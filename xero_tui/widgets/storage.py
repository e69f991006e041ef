"""The line on every full screen that says where this app keeps secrets (security property 30)."""

from __future__ import annotations

from textual.widgets import Static

UNKNOWN = "Secrets: …"


def storage_text(description: str) -> str:
    return f"Secrets: {description}"


class StorageLine(Static):
    """`Secrets: keyring (…)` or `Secrets: plain file PATH`; the app keeps every copy current."""

    def __init__(self, text: str | None = None) -> None:
        super().__init__(text or UNKNOWN, markup=False)
