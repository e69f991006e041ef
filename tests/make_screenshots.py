"""Write screenshots/*.svg for the README by walking the demo journey with the keyboard.

Run from the repository root: `python -m tests.make_screenshots`. The demo's client secret is
masked in the banner, and every picture is checked for the secret and the tokens before it is
written.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import Input, Static

from xero_tui.app import XeroTuiApp
from xero_tui.core.service import Service
from xero_tui.demo import DemoContext, start_demo
from xero_tui.screens.checklist import ChecklistScreen
from xero_tui.screens.connections import ConnectionsScreen
from xero_tui.screens.consent import ConsentScreen
from xero_tui.screens.form import FormScreen
from xero_tui.screens.organisations import OrganisationsScreen
from xero_tui.screens.test_result import TestResultScreen

OUT = Path(__file__).resolve().parent.parent / "screenshots"
SIZE = (100, 32)


async def _until(pilot: Pilot[None], condition: Callable[[], object], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        failed = getattr(pilot.app.screen, "phase", None) == "error"
        if time.monotonic() > deadline or failed:
            raise SystemExit(f"stuck on {pilot.app.screen!r}:\n{_text(pilot.app)}")
        await pilot.pause(0.05)


def _text(app: XeroTuiApp) -> str:
    statics = app.screen.query(Static).results(Static)
    return "\n".join(str(s.render()) for s in statics if s.display and str(s.render()))


class Shots:
    def __init__(self, app: XeroTuiApp, pilot: Pilot[None], demo: DemoContext) -> None:
        self.app = app
        self.pilot = pilot
        self.demo = demo
        self.written: list[Path] = []

    def _secrets(self) -> list[str]:
        values = [self.demo.client_secret]
        service = self.app.service
        for grant_id in service.load().grants:
            tokens = service.secrets.get_tokens(grant_id)
            if tokens is not None:
                values += [tokens.access_token, tokens.refresh_token or ""]
        return [v for v in values if v]

    async def take(self, name: str) -> None:
        for widget in self.app.screen.query(Input):
            widget.cursor_blink = False
        await self.pilot.pause(0.3)
        svg = self.app.export_screenshot(title=f"xero-tui: {name}")
        leaked = [value for value in self._secrets() if value in svg]
        if leaked:
            raise SystemExit(f"{name}.svg would show a secret; not written")
        path = OUT / f"{name}.svg"
        path.write_text(svg, encoding="utf-8")
        self.written.append(path)

    async def press(self, *keys: str) -> None:
        for key in keys:
            await self.pilot.press(key)
            await self.pilot.pause(0.05)


async def walk(demo: DemoContext) -> list[Path]:
    app = XeroTuiApp(Service(insecure_storage=True), demo=demo, show_demo_secret=False)
    async with app.run_test(size=SIZE) as pilot:
        shots = Shots(app, pilot, demo)
        await pilot.pause()
        await shots.press("k")
        await _until(pilot, lambda: isinstance(app.screen, ChecklistScreen))
        await shots.press("space", "down", "space", "down", "down", "down", "down")
        await shots.take("checklist")
        await shots.press("escape", "n")
        await _until(pilot, lambda: isinstance(app.screen, FormScreen))
        form = app.screen
        assert isinstance(form, FormScreen)
        await shots.press(*"Nightly sync", "ctrl+f", "ctrl+g")
        await _until(pilot, lambda: isinstance(app.screen, ConsentScreen))
        await _until(
            pilot,
            lambda: "approve" in {b.binding.action for b in app.screen.active_bindings.values()},
        )
        await shots.take("consent")
        await shots.press("a")
        await _until(pilot, lambda: isinstance(app.screen, OrganisationsScreen))
        await shots.press("space", "down", "space")
        await shots.take("organisations")
        await shots.press("enter")
        await _until(pilot, lambda: app.screen is form and len(form.chosen) == 2)
        await shots.take("form")
        await shots.press("ctrl+s")
        await _until(pilot, lambda: isinstance(app.screen, ConnectionsScreen))
        await app.workers.wait_for_complete()
        await shots.take("home")
        await shots.press("t")
        await _until(pilot, lambda: isinstance(app.screen, TestResultScreen))
        result = app.screen
        assert isinstance(result, TestResultScreen)
        await _until(pilot, lambda: result.outcome is not None)
        await shots.take("test")
        await shots.press("escape")
        await app.workers.wait_for_complete()
    return shots.written


def main() -> int:
    OUT.mkdir(exist_ok=True)
    demo = start_demo()
    try:
        written = asyncio.run(walk(demo))
    finally:
        demo.close()
    for path in written:
        print(path.relative_to(OUT.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
