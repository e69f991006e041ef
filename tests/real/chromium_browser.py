"""A BROWSER for tests: Debian's Chromium, headless through Playwright, answering the consent page.

Usage: BROWSER="python tests/real/chromium_browser.py %s". xero-tui starts it detached with the
authorize URL. It opens the URL, presses Allow (or Cancel) on the emulator's consent page, waits
until the redirect has reached xero-tui's loopback listener and that page has rendered, then
writes a record and exits. Set by the environment:

- XERO_TUI_TEST_RECORD: where to write the record (JSON); the screenshot goes beside it (.png)
  and this process's pid to `.pid`, so a test can end it.
- XERO_TUI_TEST_CONSENT: `allow` (default), `cancel`, or `callback`: skip the consent page and
  open the listener's address directly with XERO_TUI_TEST_CALLBACK_QUERY plus the state read
  from the authorize URL, as a forged or error redirect would arrive.

Never downloads a browser: it runs /usr/bin/chromium (or XERO_TUI_TEST_CHROMIUM).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

CHROMIUM = os.environ.get("XERO_TUI_TEST_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling Google's hosts, which this
# closed network refuses; none of that is the page's own traffic.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def run(url: str, record_path: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    mode = os.environ.get("XERO_TUI_TEST_CONSENT", "allow")
    params = parse_qs(urlsplit(url).query)
    redirect_uri = params["redirect_uri"][0]
    state = params["state"][0]
    record: dict[str, Any] = {"authorize_url": url, "mode": mode, "redirect_uri": redirect_uri}
    requests: list[dict[str, Any]] = []
    dialogs: list[str] = []
    console: list[str] = []

    # A short temp root: Chromium's singleton socket lives under TMPDIR and a Unix socket path
    # may not exceed about 100 bytes, which a test's deep TMPDIR can.
    with (
        sync_playwright() as pw,
        tempfile.TemporaryDirectory(prefix="xt-chromium-", dir="/tmp") as root,
    ):
        profile = Path(root) / "profile"
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            env={**os.environ, "TMPDIR": root},
        )
        try:
            by_request: dict[int, dict[str, Any]] = {}

            def on_request(request: Any) -> None:
                entry = {
                    "url": request.url,
                    "method": request.method,
                    "resource_type": request.resource_type,
                    "navigation": request.is_navigation_request(),
                    "redirected_from": request.redirected_from.url
                    if request.redirected_from
                    else None,
                    "sent_at": time.time(),
                }
                by_request[id(request)] = entry
                requests.append(entry)

            def on_response(response: Any) -> None:
                entry = by_request.get(id(response.request))
                if entry is not None:
                    entry["status"] = response.status
                    entry["answered_at"] = time.time()

            def on_failed(request: Any) -> None:
                entry = by_request.get(id(request))
                if entry is not None:
                    entry["failure"] = request.failure

            context.on("request", on_request)
            context.on("response", on_response)
            context.on("requestfailed", on_failed)
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(TIMEOUT_MS)

            def on_dialog(dialog: Any) -> None:
                dialogs.append(dialog.message)
                dialog.dismiss()

            page.on("dialog", on_dialog)
            page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))

            if mode == "callback":
                query = os.environ.get("XERO_TUI_TEST_CALLBACK_QUERY", "error=access_denied")
                from urllib.parse import urlencode

                extra = parse_qs(query, keep_blank_values=True)
                pairs = [(k, v) for k, values in extra.items() for v in values]
                target = f"{redirect_uri}?{urlencode([*pairs, ('state', state)])}"
                record["callback_url"] = target
                page.goto(target, wait_until="load")
            else:
                page.goto(url, wait_until="load")
                record["consent_text"] = page.inner_text("body")
                name = "Allow access" if mode == "allow" else "Cancel"
                button = page.get_by_role("button", name=name, exact=True)
                # The redirect lands on the listener, which answers once the exchange is done.
                with page.expect_navigation(
                    url=lambda u: u.startswith(redirect_uri), wait_until="load"
                ):
                    button.click()
            page.wait_for_load_state("load")
            record["final_url"] = page.url
            record["title"] = page.title()
            record["text"] = page.inner_text("body")
            record["html"] = page.content()
            record["script_ran"] = page.evaluate("() => typeof window.xeroTuiXss !== 'undefined'")
            page.screenshot(path=str(record_path.with_suffix(".png")), full_page=True)
        finally:
            context.close()
    record["requests"] = requests
    record["dialogs"] = dialogs
    record["console"] = console
    return record


def main(argv: list[str]) -> int:
    target = os.environ.get("XERO_TUI_TEST_RECORD")
    if len(argv) != 2 or not target:
        print("usage: XERO_TUI_TEST_RECORD=path chromium_browser.py URL", file=sys.stderr)
        return 2
    record_path = Path(target)
    record_path.with_suffix(".pid").write_text(str(os.getpid()))
    try:
        record = run(argv[1], record_path)
        record["ok"] = True
    except Exception:
        record = {"ok": False, "error": traceback.format_exc(), "authorize_url": argv[1]}
    _write_json(record_path, record)
    return 0 if record["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
