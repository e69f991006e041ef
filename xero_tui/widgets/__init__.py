"""Widgets shared by several screens."""

from xero_tui.widgets.banner import Banner
from xero_tui.widgets.storage import StorageLine, storage_text
from xero_tui.widgets.values import CopyableValue, link_content, mask

__all__ = ["Banner", "CopyableValue", "StorageLine", "link_content", "mask", "storage_text"]
