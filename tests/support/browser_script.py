#!/usr/bin/env python3
"""A stand-in browser for tests: `BROWSER="python /path/browser_script.py %s"`.

It answers the emulator's consent page for the URL it is given and then opens the redirect, as
a person and their browser would, which delivers the callback to the app's loopback listener.

Environment:
  XERO_TUI_TEST_CONSENT      "cancel" presses Cancel; anything else (or unset) presses Allow
  XERO_TUI_TEST_TENANTS      comma-separated tenant ids to tick; unset: the page's default
  XERO_TUI_TEST_BROWSER_LOG  file to append errors to (stderr is not seen when run detached)

Exits 0 once the redirect was opened, 1 on any error, 2 on bad usage.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path


def _log(text: str) -> None:
    path = os.environ.get("XERO_TUI_TEST_BROWSER_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(text.rstrip("\n") + "\n")
    else:
        sys.stderr.write(text)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        _log(f"usage: {Path(argv[0]).name} URL\n")
        return 2
    url = argv[1]
    # Runnable from anywhere: the repository root holds the xero_tui package.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    try:
        from xero_tui.emulator.consent import answer_consent

        tenants = os.environ.get("XERO_TUI_TEST_TENANTS", "")
        answer_consent(
            url,
            allow=os.environ.get("XERO_TUI_TEST_CONSENT") != "cancel",
            tenant_ids=[t.strip() for t in tenants.split(",") if t.strip()] or None,
            follow_redirect=True,
        )
    except Exception:
        _log(f"browser_script could not answer {url}:\n{traceback.format_exc()}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
