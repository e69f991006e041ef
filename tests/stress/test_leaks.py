"""Stress 8, run after every other scenario: no secret value used anywhere in the stress
suite appears in a file the app wrote, in any captured stdout/stderr or error text, in a log, or
in a snapshot or screenshot SVG of the repository (security.md 26).

Allowed places: the secret stores themselves (the test keyring file, the plain secrets file) and
the stdout of `xero-tui token`, whose job is to print the access token."""

from __future__ import annotations

import html
import re
from pathlib import Path

from tests.stress.harness import issued_secrets, run_cli
from tests.stress.registry import SEEN, output, record, timed
from tests.support.cli import ROOT, cli_env, connect_web
from xero_tui.emulator import Emulator
from xero_tui.emulator.state import EmulatorState

SVG_DIRS = (ROOT / "tests" / "__snapshots__", ROOT / "screenshots")
# A secret must be this long to be searched for: shorter strings would match by chance.
MIN_LENGTH = 16


def store_file(path: Path) -> bool:
    """The secret stores themselves, where secrets belong."""
    return path.name == "secrets.toml" or "keyring" in path.name


def svg_text(data: bytes) -> str:
    """The visible text of a terminal screenshot, joined across the spans it is split into."""
    text = html.unescape(re.sub(rb"<[^>]*>", b"", data).decode("utf-8", "replace"))
    return re.sub(r"\s+", "", text.replace("\u00a0", ""))


def full_workload(emu: Emulator) -> None:
    """Every command that handles secrets, with both stores, so the scan has fresh material even
    when this module runs on its own."""
    client = emu.web_client
    for storage in ((), ("--insecure-storage",)):
        name = "leaky" + ("-file" if storage else "")
        result = connect_web(emu, name, options=storage)
        output(f"connect {name} (stdout)", result.out)
        output(f"connect {name} (stderr)", result.err)
        assert result.code == 0, result.err
        for args in (
            ("token", name, "--json", "--force-refresh"),
            ("token", name, "--env"),
            ("list",),
            ("status", "--json"),
        ):
            assert run_cli(*storage, *args).code == 0
        assert run_cli(*storage, "remove", name, "--disconnect", "--revoke").code == 0
        run_cli(*storage, "token", "missing")
    # A refused client secret: the error must not repeat it.
    bad = cli_env(XERO_CLIENT_SECRET="not-" + (client.client_secret or ""))
    run_cli("connect", "x", "--kind", "custom", "--client-id", emu.custom_client.client_id, env=bad)


def test_no_secret_leaks_anywhere(emu: Emulator) -> None:
    with timed() as clock:
        full_workload(emu)
        secrets = {s for s in SEEN.secrets | issued_secrets(emu) if len(s) >= MIN_LENGTH}
        # The demo apps' secrets are the same in every emulator, demo mode's screenshots too.
        demo = EmulatorState(tenants=1, seed=0)
        secrets |= {c.client_secret for c in demo._clients.values() if c.client_secret}
        needles = [s.encode() for s in secrets]
        hits: list[str] = []
        files = 0
        for directory in dict.fromkeys(SEEN.dirs):
            if not directory.exists():
                continue
            for path in directory.rglob("*"):
                if not path.is_file() or store_file(path):
                    continue
                files += 1
                data = path.read_bytes()
                hits += [f"{path}" for n in needles if n in data][:1]
        outputs = 0
        for label, text in SEEN.outputs:
            outputs += 1
            hits += [f"output of {label}" for s in secrets if s in text][:1]
        svgs = 0
        for base in SVG_DIRS:
            for path in sorted(base.rglob("*.svg")) if base.exists() else []:
                svgs += 1
                data = path.read_bytes()
                flat = svg_text(data)
                hits += [
                    f"{path.relative_to(ROOT)}"
                    for s in secrets
                    if s.encode() in data or s in flat or s[:24] in flat
                ][:1]
    record(
        "8 secret leaks",
        f"{len(secrets)} secret values (client secrets, refresh and access tokens issued) "
        f"searched in {files} files the app wrote, {outputs} captured outputs and error texts, "
        f"{svgs} snapshot/screenshot SVGs; the app writes no log",
        files + outputs + svgs,
        len(hits),
        clock.seconds,
    )
    assert len(secrets) > 10
    assert files > 0 and outputs > 0 and svgs > 0
    assert not hits, hits[:10]
