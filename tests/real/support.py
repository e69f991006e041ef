"""Helpers shared by the real-part tests: the CLI against the emulator, and reading the stores."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.support.cli import ROOT
from xero_tui.core.models import DEFAULT_REDIRECT_URI
from xero_tui.emulator import Emulator


def read_config(config_dir: Path) -> dict[str, Any]:
    return tomllib.loads((config_dir / "config.toml").read_text())


def organisation(emu: Emulator, token: str, tenant_id: str) -> httpx.Response:
    return httpx.get(
        emu.url + "/api.xro/2.0/Organisation",
        headers={"Authorization": f"Bearer {token}", "xero-tenant-id": tenant_id},
        timeout=10,
    )


_READ_KEYRING = """
import json, sys
import keyring
backend = keyring.get_keyring()
print(json.dumps({
    "backend": f"{type(backend).__module__}.{type(backend).__name__}",
    "value": backend.get_password(sys.argv[1], sys.argv[2]),
}))
"""


def keyring_lookup(env: dict[str, str], username: str, service: str = "xero-tui") -> Any:
    """What the `keyring` API returns for (service, username), in a child with `env`."""
    proc = subprocess.run(
        [sys.executable, "-c", _READ_KEYRING, service, username],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def secret_tool_lookup(env: dict[str, str], username: str) -> subprocess.CompletedProcess[str]:
    """libsecret's own view of the item: `secret-tool lookup service xero-tui username KEY`."""
    return subprocess.run(
        ["secret-tool", "lookup", "service", "xero-tui", "username", username],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


# ---------------------------------------------------------------------------------------------
# A real terminal: a private tmux server


_TMUX_CONF = """\
set -g default-terminal "xterm-256color"
set -g status off
set -g remain-on-exit on
set -g set-clipboard on
set -s escape-time 0
"""


# The app's default redirect port: the demo and a new connection in the app listen on it.
APP_PORT = urlsplit(DEFAULT_REDIRECT_URI).port or 80


def wait_port_free(port: int, timeout: float = 30.0) -> None:
    """Wait until `port` can be bound on loopback: the app's fixed redirect port must be free.

    Another program on it (a demo left running, say) would make the app say "port in use";
    name that plainly instead of failing later on the screen.
    """
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
                return
            except OSError:
                pass
        if time.monotonic() > deadline:
            raise AssertionError(f"port {port} stayed in use by another program for {timeout} s")
        time.sleep(0.2)


def terminal_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A plain login environment: no display, no SSH, nothing of the test runner's terminal."""
    home = tmp_path / "home"
    tmp = tmp_path / "tmp"
    for path in (home, tmp):
        path.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TERM": "xterm-256color",
        "TMPDIR": str(tmp),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XERO_TUI_CONFIG_DIR": os.environ["XERO_TUI_CONFIG_DIR"],
        # Demo mode keeps secrets in a file; should anything reach for a keyring, it is the test's.
        "PYTHON_KEYRING_BACKEND": os.environ["PYTHON_KEYRING_BACKEND"],
        "XERO_TUI_TEST_KEYRING": os.environ["XERO_TUI_TEST_KEYRING"],
        "PYTHONPATH": str(ROOT),
    }
    env.update(extra)
    return env


class Tmux:
    """One program in a private tmux server, driven only by keys and read only from the screen.

    `status off` gives the program the whole size; `set-clipboard on` turns what it copies with
    OSC 52 into a tmux buffer, so a test reads the clipboard as a terminal would fill it.
    """

    def __init__(self, root: Path, width: int, height: int, env: dict[str, str]) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.socket = root / "tmux.sock"
        self.conf = root / "tmux.conf"
        self.conf.write_text(_TMUX_CONF)
        self.width, self.height, self.env = width, height, env
        self.target = "app"

    def _tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-S", str(self.socket), "-f", str(self.conf), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=30,
            check=check,
        )

    def start(self, argv: list[str]) -> None:
        self._tmux(
            "new-session",
            "-d",
            "-s",
            self.target,
            "-x",
            str(self.width),
            "-y",
            str(self.height),
            "--",
            "sh",
            "-c",
            '"$@"; echo "[exit status $?]"',
            "sh",
            *argv,
        )

    def size(self) -> tuple[int, int]:
        out = self.display("#{pane_width} #{pane_height}").split()
        return int(out[0]), int(out[1])

    def display(self, fmt: str) -> str:
        return self._tmux("display-message", "-p", "-t", self.target, fmt).stdout.strip()

    def keys(self, *keys: str) -> None:
        """Named keys (Enter, Escape, C-g, Tab, Space...), one at a time as a person types."""
        for key in keys:
            self._tmux("send-keys", "-t", self.target, key)
            time.sleep(0.05)

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-t", self.target, "-l", text)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", self.target).stdout

    def clipboard(self) -> str:
        return self._tmux("show-buffer").stdout

    def wait_for(self, *needles: str, timeout: float = 20.0) -> str:
        """The screen once it shows every needle; fails with the screen as it last was."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if all(n in text for n in needles):
                return text
            if time.monotonic() > deadline:
                missing = [n for n in needles if n not in text]
                raise AssertionError(f"{missing} not on the screen after {timeout} s:\n{text}")
            time.sleep(0.1)

    def wait_gone(self, needle: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if needle not in text:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} still on the screen after {timeout} s:\n{text}")
            time.sleep(0.1)

    def wait_exit(self, timeout: float = 20.0) -> int:
        """The program's exit status, as the wrapper shell printed it after the program ended.

        tmux's own #{pane_dead_status} is sometimes still empty when the pane is dead, so the
        shell says it; the line may have scrolled into the history, which is searched too.
        """
        deadline = time.monotonic() + timeout
        while True:
            shown = self._tmux("capture-pane", "-p", "-t", self.target, "-S", "-200").stdout
            found = re.search(r"\[exit status (\d+)\]", shown)
            if found:
                return int(found.group(1))
            if time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout} s:\n{shown}")
            time.sleep(0.1)

    def close(self) -> None:
        self._tmux("kill-server", check=False)
