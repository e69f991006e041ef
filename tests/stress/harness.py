"""Set-up and inspection helpers shared by the stress scenarios."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from tests.stress.registry import output
from tests.support.cli import ROOT, Result, cli_env
from tests.support.net import free_port
from tests.support.session import connect_new
from xero_tui.core.consent import ConnectionDraft
from xero_tui.core.models import Connection, Kind, TokenSet, default_scopes
from xero_tui.core.service import Service
from xero_tui.emulator import Emulator
from xero_tui.emulator import model as emulator_model

Standing = Literal["current", "grace", "dead", "unknown"]


async def connect(emu: Emulator, name: str, *, file_store: bool = False) -> Connection:
    """A real consent against the emulator through the Service (the CLI's own path), saved.

    With `file_store` the config opts in to the plain secrets file, so later commands use it too.
    """
    client = emu.web_client
    redirect = f"http://localhost:{free_port()}/callback"
    emu.register_client(
        client.client_id, client.client_secret, client.kind, redirect_uris=(redirect,)
    )
    svc = Service()
    if file_store:
        svc.use_file_storage()
    draft = ConnectionDraft(
        Kind.WEB, client.client_id, client.client_secret, redirect, default_scopes(Kind.WEB)
    )
    return await connect_new(svc, draft, name)


def stored_tokens(grant_id: str) -> TokenSet | None:
    """What the configured store (keyring or file, as the config says) holds for a grant."""
    return Service().secrets.get_tokens(grant_id)


def issued_secrets(emu: Emulator) -> set[str]:
    """The client secrets and the refresh and access tokens this emulator still knows of."""
    state = emu._state
    with state._lock:
        values = set(state._refresh) | set(state._access)
        values |= {c.client_secret for c in state._clients.values() if c.client_secret}
    return values


def standing(emu: Emulator, refresh_token: str | None) -> Standing:
    """How the emulator would treat a refresh token now: the current one, honoured in the
    30-minute grace after rotation, or refused."""
    state = emu._state
    with state._lock:
        record = state._refresh.get(refresh_token or "")
        if record is None:
            return "unknown"
        grant = state._grants[record.grant_id]
        if grant.revoked:
            return "dead"
        if grant.current_refresh_token == refresh_token:
            return "current"
        if (
            record.superseded is not None
            and state.now() - record.superseded <= emulator_model.REFRESH_GRACE
        ):
            return "grace"
        return "dead"


def access_token_valid(emu: Emulator, access_token: str) -> bool:
    state = emu._state
    with state._lock:
        record = state._access.get(access_token)
        return record is not None and state.now() < record.expires


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    prefix: tuple[str, ...] = ("-m", "xero_tui"),
) -> Result:
    """The real `xero-tui` in a child process; its output is kept for the leak scan.

    `token`'s stdout is the one place an access token may appear, so it is not kept.
    """
    proc = subprocess.run(
        [sys.executable, *prefix, *args],
        capture_output=True,
        text=True,
        env=env or cli_env(),
        cwd=ROOT,
        timeout=timeout,
    )
    label = "xero-tui " + " ".join(args)
    if "token" not in args:
        output(label + " (stdout)", proc.stdout)
    output(label + " (stderr)", proc.stderr)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def temps(directory: Path) -> list[Path]:
    """Leftover temporary files of atomic writes in the config dir."""
    return sorted(directory.glob(".*.tmp")) if directory.exists() else []


def token_workers(
    envs: Sequence[dict[str, str]], calls: int, seeds: Sequence[int], force_rate: float
) -> list[subprocess.Popen[str]]:
    """One `tests.stress.workers token acme` child per (env, seed), each making `calls` calls;
    returned once every one is ready and all have been let go together."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.stress.workers",
                "token",
                "acme",
                str(calls),
                str(seed),
                str(force_rate),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for env, seed in zip(envs, seeds, strict=True)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.close()
    return procs


def worker_calls(
    procs: Sequence[subprocess.Popen[str]], label: str, timeout: float
) -> list[dict[str, object]]:
    """Every call the workers made, in their order; their stderr goes to the leak scan."""
    calls: list[dict[str, object]] = []
    for proc in procs:
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.read(), proc.stderr.read()
        proc.wait(timeout=timeout)
        output(f"{label} (stderr)", err)
        assert proc.returncode == 0, err
        calls += json.loads(out.splitlines()[-1])
    for call in calls:
        output(f"{label} call (stderr)", str(call["err"]))
    return calls
