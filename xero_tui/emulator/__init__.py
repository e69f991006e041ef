"""A local Xero emulator: consent page, token, revocation, connections and Organisation endpoints.

Demo mode, `xero-tui emulator` and the tests run against it. The server side uses the standard
library only; `xero_tui.emulator.consent` (the scripted "browser") is imported separately.
"""

from xero_tui.emulator.model import DemoClient, DemoTenant, EmulatorStats
from xero_tui.emulator.server import DEFAULT_PORT, Emulator, serve

__all__ = ["DEFAULT_PORT", "DemoClient", "DemoTenant", "Emulator", "EmulatorStats", "serve"]
