"""Deciding whether to open a browser for the authorize URL, and opening it without blocking.

A terminal app must never start a text-mode browser (it would fight the app for the terminal), must
not launch anything over SSH (the browser would open on the wrong machine), and must never wait on
the launched process. The authorize URL is always shown by the caller whatever happens here.
"""

from __future__ import annotations

import getpass
import ipaddress
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any
from urllib.parse import urlsplit

from xero_tui.core.errors import clean_text

OPENED = "Opened your browser."
SSH_SESSION = "Not opening a browser: this is an SSH session."
NO_DISPLAY = "Not opening a browser: no graphical display (DISPLAY/WAYLAND_DISPLAY unset)."
NO_BROWSER = "No graphical browser found."
LAUNCH_FAILED = "Could not start the browser; open the link yourself."

# Graphical openers only. sensible-browser, x-www-browser and www-browser may resolve to a
# console browser, so they are not on this list.
_OPENERS: tuple[tuple[str, ...], ...] = (("xdg-open",), ("gio", "open"))
# Text-mode browsers: never started, even when BROWSER names one.
CONSOLE_BROWSERS = frozenset(
    {"lynx", "w3m", "links", "links2", "elinks", "www-browser", "browsh", "netsurf-fb", "carbonyl"}
)
_SSH_VARS = ("SSH_CONNECTION", "SSH_TTY", "SSH_CLIENT")
# Environment variables a browser never gets: any whose name says it holds a secret,
# XERO_CLIENT_SECRET above all. XAUTHORITY and DBUS_SESSION_BUS_ADDRESS, which a graphical
# browser needs, match none of these.
_SECRET_NAME = re.compile(
    r"SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY"
    r"|SESSION_?KEY|_PAT$|^PGPASS|COOKIE",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class LaunchPlan:
    """What to do with the URL: `reason` is a sentence the UI shows as is."""

    launch: bool
    command: tuple[str, ...] | None
    reason: str


def check_url(url: str) -> str:
    """Only absolute http(s) URLs are ever handed to a browser or opener."""
    if any(ord(ch) <= 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in url):
        raise ValueError("refusing to open a URL with spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError("only http and https URLs are opened in a browser")
    return url


def is_ssh(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return any(env.get(name) for name in _SSH_VARS)


def plan_launch(
    url: str, env: Mapping[str, str] | None = None, platform: str = sys.platform
) -> LaunchPlan:
    """Decide how (and whether) to open `url`; raises ValueError for anything but http(s)."""
    check_url(url)
    env = os.environ if env is None else env
    if is_ssh(env):
        return LaunchPlan(False, None, SSH_SESSION)
    path = env.get("PATH", os.defpath)
    chosen = env.get("BROWSER", "").strip()
    if chosen:
        return _plan_from_browser_var(chosen, url, path, platform)
    if platform == "darwin":
        opener = shutil.which("open", path=path) or "/usr/bin/open"
        return LaunchPlan(True, (opener, url), OPENED)
    if platform == "win32":
        # os.startfile hands the URL to the user's default browser through the shell.
        return LaunchPlan(True, None, OPENED)
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        return LaunchPlan(False, None, NO_DISPLAY)
    for opener_argv in _OPENERS:
        found = shutil.which(opener_argv[0], path=path)
        if found:
            return LaunchPlan(True, (found, *opener_argv[1:], url), OPENED)
    return LaunchPlan(False, None, NO_BROWSER)


def _plan_from_browser_var(value: str, url: str, path: str, platform: str) -> LaunchPlan:
    """BROWSER is the user's choice: a list (first entry used), `%s` marks where the URL goes."""
    first = value.split(";" if platform == "win32" else ":")[0].strip()
    try:
        argv = _split(first, platform)
    except ValueError:
        argv = []
    shown = clean_text(first, 80)
    if not argv:
        return LaunchPlan(
            False, None, f"Not opening a browser: BROWSER ({shown}) is not a command."
        )
    name = PurePath(argv[0]).name.lower().removesuffix(".exe")
    if name in CONSOLE_BROWSERS:
        return LaunchPlan(
            False,
            None,
            f"Not opening a browser: BROWSER names {clean_text(name, 40)}, a text-mode browser "
            "that would take over this terminal.",
        )
    executable = shutil.which(argv[0], path=path)
    if executable is None:
        return LaunchPlan(
            False, None, f"Not opening a browser: BROWSER names {shown}, which was not found."
        )
    if any("%s" in arg for arg in argv[1:]):
        args = [arg.replace("%s", url) for arg in argv[1:]]
    else:
        args = [*argv[1:], url]
    return LaunchPlan(True, (executable, *args), OPENED)


def _split(command: str, platform: str) -> list[str]:
    if platform != "win32":
        return shlex.split(command)
    # POSIX quoting would eat the backslashes of Windows paths.
    return [part.strip('"') for part in shlex.split(command, posix=False)]


def launch(plan: LaunchPlan, url: str) -> bool:
    """Start the plan detached and return at once; False if nothing could be started."""
    check_url(url)
    if not plan.launch:
        return False
    if plan.command is None:
        startfile = getattr(os, "startfile", None)
        if startfile is None:
            return False
        try:
            startfile(url)
        except OSError:
            return False
        return True
    if not any(url in arg for arg in plan.command[1:]):
        raise ValueError("the launch plan was made for another URL")
    return _spawn(plan.command)


def child_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a launched browser gets: ours without anything that may be a secret."""
    env = os.environ if env is None else env
    return {name: value for name, value in env.items() if not _SECRET_NAME.search(name)}


def _spawn(command: Sequence[str]) -> bool:
    kwargs: dict[str, Any] = {
        "stdin": subprocess.DEVNULL,
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
        "close_fds": True,
        # A browser lives on after us and runs extensions and helpers: it gets no secret.
        "env": child_environment(),
    }
    if os.name == "posix":
        # Its own session: no controlling terminal, and no signals from the terminal's keys.
        kwargs["start_new_session"] = True
    else:
        kwargs["creationflags"] = getattr(subprocess, "DETACHED_PROCESS", 0) | getattr(
            subprocess, "CREATE_NEW_PROCESS_GROUP", 0
        )
    try:
        proc = subprocess.Popen(list(command), **kwargs)
    except (OSError, ValueError):
        return False
    # Reap the child whenever it exits so it never lingers as a zombie; never waited on here.
    threading.Thread(target=proc.wait, name="browser-reaper", daemon=True).start()
    return True


def ssh_tunnel_command(
    port: int, env: Mapping[str, str] | None = None, *, also: Sequence[int] = ()
) -> str:
    """The line to run on the user's own computer so the browser's redirect reaches this one.

    `also` are more ports of this machine's loopback for the browser to reach (the demo's
    emulator, which serves the sign-in page itself).
    """
    if not all(1 <= p <= 65535 for p in (port, *also)):
        raise ValueError("port must be from 1 to 65535")
    env = os.environ if env is None else env
    user = env.get("USER") or env.get("LOGNAME")
    if not user:
        try:
            user = getpass.getuser()
        except (OSError, KeyError, ImportError):
            user = None
    host = _ssh_server_address(env) or socket.gethostname()
    destination = f"{user}@{host}" if user else host
    ssh_port = _ssh_server_port(env)
    # The user logged in with `ssh -p PORT`: the tunnel has to go through the same port.
    option = f"-p {ssh_port} " if ssh_port not in (None, 22) else ""
    # The emulator listens on 127.0.0.1 only, and `localhost` may resolve to ::1 first.
    forwards = " ".join([f"-L {port}:localhost:{port}", *(f"-L {p}:127.0.0.1:{p}" for p in also)])
    return f"ssh {option}{forwards} {shlex.quote(clean_text(destination, 200))}"


def tunnel_note(port: int) -> str:
    """What the tunnel needs on the user's own computer, said next to the `ssh -L` line."""
    return (
        f"Port {port} must be free on your own computer: the browser goes to exactly "
        f"localhost:{port}."
    )


def _ssh_server_port(env: Mapping[str, str]) -> int | None:
    """The port sshd answered on: SSH_CONNECTION's fourth field, or SSH_CLIENT's third."""
    for name, index in (("SSH_CONNECTION", 3), ("SSH_CLIENT", 2)):
        fields = env.get(name, "").split()
        text = fields[index] if len(fields) > index else ""
        if text.isascii() and text.isdigit() and 1 <= int(text) <= 65535:
            return int(text)
    return None


def _ssh_server_address(env: Mapping[str, str]) -> str | None:
    """The address this machine was reached on, from SSH_CONNECTION's third field.

    ssh takes an IPv6 address after `user@` without brackets, so none are added.
    """
    fields = env.get("SSH_CONNECTION", "").split()
    if len(fields) < 3:
        return None
    text = fields[2]
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return text
