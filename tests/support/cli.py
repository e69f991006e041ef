"""Running the real `xero-tui` command in child processes, as scripts and users do."""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import free_port
from xero_tui.emulator import Emulator
from xero_tui.emulator.consent import answer_consent

ROOT = Path(__file__).resolve().parents[2]


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env.pop("XERO_CLIENT_SECRET", None)
    env.update(extra)
    return env


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: str = "", timeout: float = 60
) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "xero_tui", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env or cli_env(),
        cwd=ROOT,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


class Connecting:
    """A `xero-tui [OPTIONS] connect ARGS` child: read its stderr for the URL, feed its stdin,
    wait for it. Global options (e.g. --insecure-storage) go before the command."""

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

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            self.err_lines.put(line)

    def wait_for_line(self, needle: str, timeout: float = 20) -> str:
        while True:
            try:
                line = self.err_lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(
                    f"no line with {needle!r} in: {''.join(self.stderr)}"
                ) from None
            if needle in line:
                return line

    def url(self) -> str:
        return self.wait_for_line("/identity/connect/authorize").strip()

    def paste(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 30) -> Result:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        out = self.proc.stdout.read() if self.proc.stdout else ""
        code = self.proc.wait(timeout=timeout)
        return Result(code, out, "".join(self.stderr))


def register_redirect(emu: Emulator, client_id: str) -> str:
    """A fresh loopback redirect URI, registered for the emulator's app `client_id`."""
    uri = f"http://localhost:{free_port()}/callback"
    client = next(c for c in (emu.web_client, emu.pkce_client) if c.client_id == client_id)
    emu.register_client(client.client_id, client.client_secret, client.kind, redirect_uris=(uri,))
    return uri


def start_connect(
    emu: Emulator,
    name: str,
    *extra: str,
    env: dict[str, str] | None = None,
    options: tuple[str, ...] = (),
    redirect: str | None = None,
) -> Connecting:
    """`xero-tui connect NAME` for the emulator's web app; the secret comes from the env."""
    client = emu.web_client
    redirect = redirect or register_redirect(emu, client.client_id)
    env = {**(cli_env() if env is None else env), "XERO_CLIENT_SECRET": client.client_secret or ""}
    return Connecting(
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
    name: str = "acme",
    *extra: str,
    env: dict[str, str] | None = None,
    options: tuple[str, ...] = (),
    tenants: list[str] | None = None,
) -> Result:
    """A whole `connect` for the emulator's web app, the test playing the browser."""
    proc = start_connect(emu, name, "--no-browser", *extra, env=env, options=options)
    answer_consent(proc.url(), tenant_ids=tenants, follow_redirect=True)
    return proc.finish()
