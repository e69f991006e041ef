"""Fixtures for the tests that use real system parts: a Secret Service keyring, Chromium, tmux.

Each system part comes from a Debian package. On a developer machine without it the test skips
and names the package; under CI=true a missing package fails the run, since CI installs them all
(.ci/run) and a skip there would hide that nothing real was tested.

The keyring fixtures never touch the user's own keyring or session bus: each starts a private
dbus-daemon with its own socket directory and no service activation from the system's service
files (which would start the user's gnome-keyring), and a gnome-keyring-daemon inside it with a
temporary HOME and XDG_DATA_HOME.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.real.support import Tmux
from tests.support.capability import missing
from tests.support.cli import cli_env

SECRET_SERVICE_BACKEND = "keyring.backends.SecretService.Keyring"
KEYRING_PASSWORD = "xero-tui-test-password"
_START_TIMEOUT = 10.0


def require(binary: str, package: str) -> str:
    """The path of `binary`; skip (fail under CI=true) naming the Debian package when missing."""
    found = shutil.which(binary)
    if found is None:
        missing(f"{binary} not found: install the Debian package {package}")
    assert found is not None
    return found


def require_module(module: str, hint: str) -> None:
    """Like `require`, for a Python package (from the `test` extra)."""
    if importlib.util.find_spec(module) is None:
        missing(f"the Python package {module} is not installed: {hint}")


def console_script() -> Path:
    """The installed `xero-tui` entry point beside this interpreter (what users run)."""
    script = Path(sys.executable).parent / "xero-tui"
    if not script.exists():
        missing(f"{script} is not installed: pip install -e '.[test]'")
    return script


# ---------------------------------------------------------------------------------------------
# A private D-Bus session bus with an optional gnome-keyring-daemon


_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={socket_dir}</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{service_dir}</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""

# A prompter that is started but never answers: what a locked keyring looks like when its unlock
# dialog cannot be seen (a headless session, or a desktop the user is not looking at). The
# daemon's unlock then waits on it, and so does every client call.
_SILENT_PROMPTER = """[D-BUS Service]
Name=org.gnome.keyring.SystemPrompter
Exec={script}
"""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """End a process we started in its own session, and whatever it started in that group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    else:
        # The leader is gone but activated children may remain in its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


@dataclass
class SessionBus:
    """A dbus-daemon of our own, and the environment that points child processes at it."""

    root: Path
    address: str = ""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    extra_pids: list[Path] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def data_home(self) -> Path:
        return self.home / ".local" / "share"

    @property
    def keyrings(self) -> Path:
        return self.data_home / "keyrings"

    @property
    def runtime_dir(self) -> Path:
        return self.root / "run"

    @property
    def service_dir(self) -> Path:
        return self.root / "services"

    @property
    def env(self) -> dict[str, str]:
        """What a child needs to reach this bus (and nothing of the user's)."""
        return {
            "DBUS_SESSION_BUS_ADDRESS": self.address,
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "XDG_DATA_HOME": str(self.data_home),
        }

    def start(self) -> SessionBus:
        dbus = require("dbus-daemon", "dbus")
        for path in (self.home, self.data_home, self.runtime_dir, self.service_dir):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o700)
        config = self.root / "bus.conf"
        config.write_text(
            _BUS_CONFIG.format(socket_dir=self.runtime_dir, service_dir=self.service_dir)
        )
        proc = subprocess.Popen(
            [dbus, f"--config-file={config}", "--nofork", "--print-address=1"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs.append(proc)
        self.address = _read_line(proc, "dbus-daemon")
        return self

    def add_silent_prompter(self) -> None:
        script = self.root / "silent-prompter.sh"
        pid_file = self.root / "silent-prompter.pid"
        # Bounded, in case the fixture's clean-up never runs.
        script.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 300\n")
        script.chmod(0o755)
        (self.service_dir / "org.gnome.keyring.SystemPrompter.service").write_text(
            _SILENT_PROMPTER.format(script=script)
        )
        self.extra_pids.append(pid_file)

    def start_keyring(self, *, unlock: bool) -> None:
        """gnome-keyring-daemon's Secret Service on this bus; `unlock` creates/unlocks `login`."""
        daemon = require("gnome-keyring-daemon", "gnome-keyring")
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            **self.env,
        }
        argv = [daemon, "--foreground", "--components=secrets"]
        if unlock:
            argv.append("--unlock")
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self.procs.append(proc)
        assert proc.stdin is not None
        # The login password goes in on stdin, as a PAM module would hand it over.
        proc.stdin.write(KEYRING_PASSWORD.encode() if unlock else b"")
        proc.stdin.close()
        self._wait_for_name("org.freedesktop.secrets")

    def _wait_for_name(self, name: str) -> None:
        send = require("dbus-send", "dbus")
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            out = subprocess.run(
                [
                    send,
                    "--session",
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                    f"string:{name}",
                ],
                capture_output=True,
                text=True,
                env={**os.environ, **self.env},
                timeout=5,
            )
            if "boolean true" in out.stdout:
                return
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not appear on the private session bus")

    def stop(self) -> None:
        for pid_file in self.extra_pids:
            with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
        for proc in reversed(self.procs):
            _kill_group(proc)
        self.procs.clear()


def _read_line(proc: subprocess.Popen[bytes], name: str) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], _START_TIMEOUT)
    if not ready:
        _kill_group(proc)
        raise RuntimeError(f"{name} printed no address within {_START_TIMEOUT:g} s")
    line = proc.stdout.readline().decode().strip()
    if not line:
        _kill_group(proc)
        raise RuntimeError(f"{name} exited without printing its address")
    return line


@contextlib.contextmanager
def session_bus(root: Path) -> Iterator[SessionBus]:
    bus = SessionBus(root)
    try:
        yield bus.start()
    finally:
        bus.stop()


@dataclass(frozen=True)
class SecretServiceEnv:
    """A running Secret Service: `env` selects it for a child process."""

    bus: SessionBus
    env: dict[str, str]

    def child_env(self, **extra: str) -> dict[str, str]:
        """The CLI's environment for a child, with this keyring instead of the test backend."""
        env = cli_env(**extra)
        env.pop("XERO_TUI_TEST_KEYRING", None)
        env.update(self.env)
        return env


@pytest.fixture(scope="session")
def secret_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecretServiceEnv]:
    """An unlocked gnome-keyring on a private bus, shared by the session's keyring tests."""
    with session_bus(tmp_path_factory.mktemp("secret-service")) as bus:
        bus.start_keyring(unlock=True)
        yield SecretServiceEnv(bus, {**bus.env, "PYTHON_KEYRING_BACKEND": SECRET_SERVICE_BACKEND})


@pytest.fixture
def terminal() -> Iterator[list[Tmux]]:
    """The tmux servers a test starts (append them); each is killed when the test ends."""
    require("tmux", "tmux")
    started: list[Tmux] = []
    yield started
    for tmux in started:
        tmux.close()
