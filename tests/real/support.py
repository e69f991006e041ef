"""Helpers shared by the real-part tests: the CLI against the emulator, and reading the stores."""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

import httpx

from tests.support.cli import ROOT, Connecting, Result
from xero_tui.emulator import Emulator
from xero_tui.emulator.consent import answer_consent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def register_redirect(emu: Emulator, client_id: str) -> str:
    """A fresh loopback redirect URI, registered for the emulator's app `client_id`."""
    uri = f"http://localhost:{free_port()}/callback"
    client = next(c for c in (emu.web_client, emu.pkce_client) if c.client_id == client_id)
    emu.register_client(client.client_id, client.client_secret, client.kind, redirect_uris=(uri,))
    return uri


class Connect(Connecting):
    """`xero-tui [OPTIONS] connect ARGS` (Connecting has no place for the global options)."""

    def __init__(self, *args: str, env: dict[str, str], options: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xero_tui", *options, "connect", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.err_lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()


def start_connect(
    emu: Emulator,
    env: dict[str, str],
    name: str,
    *extra: str,
    options: tuple[str, ...] = (),
    redirect: str | None = None,
) -> Connect:
    """`xero-tui connect NAME` for the emulator's web app; the secret comes from the env."""
    client = emu.web_client
    redirect = redirect or register_redirect(emu, client.client_id)
    env = {**env, "XERO_CLIENT_SECRET": client.client_secret or ""}
    return Connect(
        name,
        "--client-id",
        client.client_id,
        "--redirect-uri",
        redirect,
        *extra,
        env=env,
        options=options,
    )


def connect_web(
    emu: Emulator,
    env: dict[str, str],
    name: str = "acme",
    *extra: str,
    options: tuple[str, ...] = (),
) -> Result:
    """A whole `connect` with the test answering the consent page (no real browser)."""
    proc = start_connect(emu, env, name, "--no-browser", *extra, options=options)
    answer_consent(proc.url(), follow_redirect=True)
    return proc.finish()


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
