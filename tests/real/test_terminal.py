"""The installed `xero-tui --demo` in a real terminal (tmux), driven only with keys.

Every step is checked on the screen text as a person would read it: the setup checklist, the
connection form, the consent screen, the organisation picker and the saved connection on the home
screen. Over SSH no browser may start, and the screen shows the `ssh -L` line and the paste field;
the sign-in then finishes through that field.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.real.conftest import console_script
from tests.real.support import APP_PORT, Tmux, terminal_env, wait_port_free
from xero_tui.demo import DEMO_TENANTS
from xero_tui.emulator import Emulator
from xero_tui.emulator.consent import answer_consent

pytestmark = pytest.mark.real

# sshd on a port other than 22, as `ssh -p 2222` reached it: the tunnel line must say so.
SSH_CONNECTION = "198.51.100.4 50022 203.0.113.7 2222"
# The demo's emulator is seeded, so its organisations are known before it starts.
FIRST_ORG = Emulator(tenants=DEMO_TENANTS).tenants[0].name


def open_demo(terminal: list[Tmux], tmp_path: Path, width: int, height: int, **env: str) -> Tmux:
    wait_port_free(APP_PORT)
    tmux = Tmux(tmp_path / "tmux", width, height, terminal_env(tmp_path, **env))
    terminal.append(tmux)
    tmux.start([str(console_script()), "--demo"])
    assert tmux.size() == (width, height)
    assert tmux.display("#{pane_current_command}") != ""
    return tmux


def marker_browser(tmp_path: Path) -> tuple[Path, Path]:
    """A BROWSER that only leaves a marker file: proof of whether a launch happened."""
    marker = tmp_path / "browser-started"
    script = tmp_path / "browser.sh"
    script.write_text(f'#!/bin/sh\necho "$1" > {marker}\n')
    script.chmod(0o755)
    return script, marker


def wait_for_file(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.05)


def home_to_form(tmux: Tmux) -> None:
    """Home (empty) -> setup checklist -> back -> new connection form with the demo app."""
    # The footer names the keys this journey uses.
    tmux.wait_for("DEMO", "Xero connections", "No connections yet.", "n New", "k Setup")

    tmux.keys("k")
    tmux.wait_for("Create the Xero app", "developer.xero.com/myapps", "0 of 9 steps done")
    tmux.wait_for("space Tick", "esc Back")
    tmux.keys("Space")
    tmux.wait_for("1 of 9 steps done")
    tmux.keys("Escape")
    tmux.wait_for("No connections yet.")

    tmux.keys("n")
    tmux.wait_for("New connection", "Client ID", "http://localhost:8719/callback", "^f Demo app")
    tmux.keys("C-f")
    tmux.wait_for("Filled in the demo Web app", "DF366CCDF9FC2EFDAB384DA8CE3F7047")


def organisations_to_home(tmux: Tmux) -> None:
    """Organisation picker -> back in the form -> save -> the connection on the home screen."""
    picker = tmux.wait_for("Choose organisations", FIRST_ORG, "tab Select")
    assert "new" in picker
    tmux.keys("Space")
    tmux.wait_for("1 selected")
    tmux.keys("Enter")
    tmux.wait_for("Signed in.", f"{FIRST_ORG}  → saved as 'Demo'", "^s Save")

    tmux.keys("C-s")
    home = tmux.wait_for(
        "Xero connections", "Saved 'Demo'.", FIRST_ORG, "Secrets: plain file", "t Test"
    )
    row = next(line for line in home.splitlines() if line.strip().startswith("Demo "))
    assert FIRST_ORG in row
    assert " ok" in row
    assert "Secrets: plain file" in home
    assert "d Delete" in home

    tmux.keys("C-q")
    assert tmux.wait_exit() == 0


@pytest.mark.parametrize(("width", "height"), [(80, 24), (120, 36)])
def test_demo_journey_with_keys_only(
    terminal: list[Tmux], tmp_path: Path, width: int, height: int
) -> None:
    browser, marker = marker_browser(tmp_path)
    tmux = open_demo(terminal, tmp_path, width, height, BROWSER=str(browser))
    home_to_form(tmux)

    tmux.keys("C-g")
    # Not over SSH: the BROWSER the user named is started with the sign-in URL.
    consent = tmux.wait_for(
        "Sign in to Xero",
        "Opened your browser.",
        "/identity/connect/authorize",
        "Waiting for Xero",
        "a Approve",
    )
    assert "ssh -L" not in consent
    wait_for_file(marker)
    assert marker.read_text().strip().startswith("http://127.0.0.1:")

    tmux.keys("a")
    organisations_to_home(tmux)


def test_demo_over_ssh_starts_no_browser_and_takes_the_pasted_url(
    terminal: list[Tmux], tmp_path: Path
) -> None:
    browser, marker = marker_browser(tmp_path)
    tmux = open_demo(
        terminal,
        tmp_path,
        80,
        24,
        BROWSER=str(browser),
        SSH_CONNECTION=SSH_CONNECTION,
        USER="ana",
    )
    home_to_form(tmux)

    tmux.keys("C-g")
    consent = tmux.wait_for(
        "Sign in to Xero",
        "Not opening a browser: this is an SSH session.",
        "ssh -p 2222 -L 8719:localhost:8719 -L ",
        "Port 8719 must be free on your own computer",
        "a approves in the demo.",
        "Waiting for Xero",
        "s Copy ssh",
    )

    # The clipboard (OSC 52, through tmux) holds exactly the lines the user needs.
    tmux.keys("c")
    tmux.wait_for("Copied the sign-in address.")
    url = tmux.clipboard()
    page = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/identity/connect/authorize\?.+", url)
    assert page is not None, url
    # The demo's sign-in page is on this machine too: the line tunnels its port as well.
    line = f"ssh -p 2222 -L 8719:localhost:8719 -L {page[1]}:127.0.0.1:{page[1]} ana@203.0.113.7"
    assert line in consent
    tmux.keys("s")
    tmux.wait_for("Copied the ssh command.")
    assert tmux.clipboard() == line

    # The browser on the user's own computer ends on a page that cannot load (no tunnel); the
    # user copies its address into the paste field.
    landed = answer_consent(url, follow_redirect=False)
    assert landed.startswith("http://localhost:8719/callback?code=")
    tmux.keys("p")
    tmux.wait_for("http://localhost:8719/callback?code=…&state=…", "esc Cancel")
    tmux.type(landed)
    tmux.wait_gone("http://localhost:8719/callback?code=…&state=…")
    tmux.keys("Enter")
    organisations_to_home(tmux)
    # Give a launched BROWSER time to have left its marker: none may appear.
    time.sleep(1.0)
    assert not marker.exists()


def test_closing_the_terminal_removes_the_demos_throwaway_config(
    terminal: list[Tmux], tmp_path: Path
) -> None:
    tmux = open_demo(terminal, tmp_path, 80, 24)
    tmux.wait_for("DEMO", "No connections yet.")
    [config_dir] = (tmp_path / "tmp").glob("xero-tui-demo-*")
    # As a dropped SSH session does: the terminal goes away and the app gets SIGHUP.
    tmux.close()
    deadline = time.monotonic() + 15
    while config_dir.exists():
        assert time.monotonic() < deadline, f"{config_dir} left behind after the terminal closed"
        time.sleep(0.1)
