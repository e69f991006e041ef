"""The browser round trip with a real browser: Debian's Chromium, driven by Playwright.

`xero-tui connect` runs with BROWSER set to tests/real/chromium_browser.py, which xero-tui starts
detached with the authorize URL, exactly as it would start the user's browser. The script presses
Allow or Cancel on the emulator's consent page; the redirect then travels through Chromium to the
loopback listener, and the script records the page the listener returned, every request the
browser made, and a screenshot.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.real.conftest import console_script, require, require_module
from tests.real.support import (
    APP_PORT,
    Tmux,
    organisation,
    read_config,
    terminal_env,
    wait_port_free,
)
from tests.support.cli import ROOT, cli_env, run_cli, start_connect
from xero_tui.emulator import Emulator

pytestmark = pytest.mark.real

SCRIPT = ROOT / "tests" / "real" / "chromium_browser.py"
RECORD_TIMEOUT = 90.0
XSS = "<script>window.xeroTuiXss=1;alert('xss')</script><img src=/xss-probe onerror=alert(2)>"


@dataclass
class BrowserRun:
    """One run of the Chromium BROWSER script: its environment and, afterwards, its record."""

    path: Path

    def env(self, consent: str = "allow", **extra: str) -> dict[str, str]:
        env = cli_env(
            BROWSER=f"{shlex.quote(sys.executable)} {shlex.quote(str(SCRIPT))} %s",
            XERO_TUI_TEST_RECORD=str(self.path),
            XERO_TUI_TEST_CONSENT=consent,
            **extra,
        )
        # BROWSER is honoured without a display; none is needed for headless Chromium.
        for name in ("DISPLAY", "WAYLAND_DISPLAY"):
            env.pop(name, None)
        return env

    def record(self) -> dict[str, Any]:
        deadline = time.monotonic() + RECORD_TIMEOUT
        while not self.path.exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"the browser script wrote no record in {RECORD_TIMEOUT} s")
            time.sleep(0.1)
        data: dict[str, Any] = json.loads(self.path.read_text())
        assert data["ok"], data.get("error")
        return data

    @property
    def screenshot(self) -> Path:
        return self.path.with_suffix(".png")

    def stop(self) -> None:
        """End the script if a failed test left it running (it is in its own session)."""
        pid_file = self.path.with_suffix(".pid")
        if self.path.exists() or not pid_file.exists():
            return
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserRun]:
    require("chromium", "chromium")
    require_module("playwright", "pip install -e '.[test]'")
    run = BrowserRun(tmp_path / "browser-record.json")
    yield run
    run.stop()


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def listener_requests(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Every request that went anywhere but the emulator (Xero's stand-in)."""
    xero = origin(record["authorize_url"])
    return [r for r in record["requests"] if origin(r["url"]) != xero]


def assert_only_the_listener_document(record: dict[str, Any]) -> dict[str, Any]:
    """The listener page loads nothing: the one document request, nothing after it."""
    others = listener_requests(record)
    assert len(others) == 1, others
    (doc,) = others
    assert doc["url"].startswith(record["redirect_uri"] + "?")
    assert doc["resource_type"] == "document"
    assert doc["navigation"] is True
    assert doc["method"] == "GET"
    assert record["requests"][-1]["url"] == doc["url"], "a request followed the listener page"
    return doc


def test_allow_in_chromium_saves_a_working_connection(
    browser: BrowserRun, emulator: Emulator, isolated_env: Path
) -> None:
    # A slow token endpoint: the page must wait for the exchange before it says "connected".
    emulator.inject("token", "delay", delay=2.0)
    proc = start_connect(emulator, "acme", env=browser.env())
    proc.wait_for_line("Opened your browser.")
    result = proc.finish(timeout=RECORD_TIMEOUT)
    assert result.code == 0, result.err
    assert "Saved 'acme'" in result.out

    record = browser.record()
    assert "wants access to your Xero organisations" in record["consent_text"]
    assert record["final_url"].startswith(record["redirect_uri"] + "?")
    assert "Connected to Xero" in record["text"]
    assert record["title"] == "xero-tui: Connected to Xero"
    doc = assert_only_the_listener_document(record)
    # Reached through the real browser: Chromium followed the consent page's redirect.
    assert doc["redirected_from"].startswith(origin(record["authorize_url"]))
    assert doc["status"] == 200
    assert doc["answered_at"] - doc["sent_at"] >= 1.8, "answered before the exchange finished"
    assert record["dialogs"] == []
    assert browser.screenshot.read_bytes().startswith(b"\x89PNG")
    # Neither the code nor the state is echoed in the page.
    params = parse_qs(urlsplit(record["final_url"]).query)
    for name in ("code", "state"):
        assert params[name][0] not in record["html"]

    conn = read_config(isolated_env)["connections"]["acme"]
    token = run_cli("token", "acme")
    assert token.code == 0, token.err
    assert organisation(emulator, token.out.strip(), conn["tenant_id"]).status_code == 200


def test_cancel_in_chromium_says_you_cancelled(
    browser: BrowserRun, emulator: Emulator, isolated_env: Path
) -> None:
    proc = start_connect(emulator, "acme", env=browser.env("cancel"))
    result = proc.finish(timeout=RECORD_TIMEOUT)
    assert result.code == 6, result.err
    assert "You cancelled in Xero, so no connection was made." in result.err
    assert "Traceback" not in result.err

    record = browser.record()
    assert "You cancelled in Xero" in record["text"]
    assert "Connected" not in record["text"]
    assert "error=access_denied" in record["final_url"]
    assert_only_the_listener_document(record)
    assert not (isolated_env / "config.toml").exists() or "acme" not in read_config(
        isolated_env
    ).get("connections", {})


def test_failed_exchange_page_does_not_say_connected(
    browser: BrowserRun, emulator: Emulator, isolated_env: Path
) -> None:
    emulator.inject("token", "status", count=20, status=503)
    env = browser.env(XERO_TUI_HTTP_BACKOFF="0.01")
    proc = start_connect(emulator, "acme", env=env)
    result = proc.finish(timeout=RECORD_TIMEOUT)
    assert result.code == 4, result.err

    record = browser.record()
    assert "The sign-in did not finish" in record["text"]
    assert "Connected" not in record["text"]
    assert_only_the_listener_document(record)


@pytest.mark.parametrize("error", ["access_denied", "invalid_scope"])
def test_script_in_error_description_shows_as_text(
    browser: BrowserRun, emulator: Emulator, error: str
) -> None:
    """A forged redirect with the right state and a <script> in error_description."""
    query = f"error={error}&error_description={XSS.replace('&', '%26').replace(';', '%3B')}"
    env = browser.env("callback", XERO_TUI_TEST_CALLBACK_QUERY=query)
    proc = start_connect(emulator, "acme", env=env)
    result = proc.finish(timeout=RECORD_TIMEOUT)
    assert result.code == 6, result.err

    record = browser.record()
    assert record["dialogs"] == []
    assert record["script_ran"] is False
    # The <img> was not an element either: it would have requested /xss-probe.
    doc = assert_only_the_listener_document(record)
    assert doc["status"] == 200
    assert "<script" not in record["html"].split("<body>", 1)[-1].split("</body>", 1)[0]
    if error == "access_denied":
        assert "You cancelled in Xero" in record["text"]
        assert "You cancelled in Xero" in result.err
    else:
        assert "<script>window.xeroTuiXss=1;alert('xss')</script>" in record["text"]
        assert "Xero did not grant access" in record["text"]
        assert "invalid_scope" in result.err


def test_tui_opens_chromium_and_shows_the_organisations(
    browser: BrowserRun,
    emulator: Emulator,
    isolated_env: Path,
    terminal: list[Tmux],
    tmp_path: Path,
) -> None:
    """The app itself (not the demo) starts the BROWSER; Chromium's redirect brings it the orgs."""
    client = emulator.web_client
    assert client.client_secret
    env = terminal_env(tmp_path, **emulator.env)
    env.update(
        {k: v for k, v in browser.env().items() if k.startswith(("BROWSER", "XERO_TUI_TEST"))}
    )
    wait_port_free(APP_PORT)
    tmux = Tmux(tmp_path / "tmux", 100, 30, env)
    terminal.append(tmux)
    tmux.start([str(console_script())])
    tmux.wait_for("Xero connections", "No connections yet.", "n New")
    tmux.keys("n")
    tmux.wait_for("New connection", "^g Generate")
    for text, shown in (
        ("Chromium", "Name           Chromium"),
        (client.client_id, f"Client ID      {client.client_id}"),
        (client.client_secret, "•" * len(client.client_secret)),
    ):
        if text != "Chromium":
            tmux.keys("Tab")
        tmux.type(text)
        tmux.wait_for(shown)
    tmux.keys("C-g")
    tmux.wait_for("Sign in to Xero", "Opened your browser.")

    first = emulator.tenants[0].name
    try:
        tmux.wait_for("Choose organisations", first, "tab Select", timeout=60)
    except AssertionError:
        if browser.path.exists():
            browser.record()  # says why the browser did not get there
        raise
    tmux.keys("Space")
    tmux.wait_for("1 selected")
    tmux.keys("Enter")
    tmux.wait_for("Signed in.", "→ saved as 'Chromium'", "^s Save")
    tmux.keys("C-s")
    tmux.wait_for("Saved 'Chromium'.", first, "t Test")
    tmux.keys("C-q")
    assert tmux.wait_exit() == 0

    record = browser.record()
    assert "Connected to Xero" in record["text"]
    assert_only_the_listener_document(record)
    conn = read_config(isolated_env)["connections"]["Chromium"]
    token = run_cli("token", "Chromium")
    assert token.code == 0, token.err
    assert organisation(emulator, token.out.strip(), conn["tenant_id"]).status_code == 200
