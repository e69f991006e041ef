"""The TUI scenarios and their floors, one per child process: `python -m tests.bench.tui NAME SIDE`.

SIDE is `ours` (xero-tui's screens) or `floor` (a bare Textual app doing the least the same view
needs). Each child prints one JSON line. "Painted" means the compositor rendered an update of the
screen in which the awaited content was present: the headless driver renders every update as a
terminal would, it only skips writing the bytes out.
"""

from __future__ import annotations

import time

# Before any import: "start" counts importing the app, as a user starting it pays for it.
STARTED = time.perf_counter()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402
from urllib.parse import parse_qs, urlencode, urlsplit  # noqa: E402

if TYPE_CHECKING:
    from textual.app import App

    from xero_tui.core.models import Tenant

SIZE = (120, 40)
COLUMNS = ("Name", "Organisation", "Kind", "Status", "Secrets")
# Filter keys: narrowing, widening with backspace, a space inside the query (names have spaces;
# in an empty filter a space would select instead), and a query that matches nothing.
FILTER_KEYS = [
    *["h", "o", "t", "backspace", "backspace", "backspace"] * 3,
    *["t", "r", "a", "d", "i", "n", "g", "space", "0", *["backspace"] * 9],
    *["0", "4", "2", "1", *["backspace"] * 4],
    *["x", "y", "z", *["backspace"] * 3],
]


def home_rows() -> list[tuple[str, str, str, str, str]]:
    """What the home table shows, read from the same `config.toml` the app reads (with tomllib,
    as the app does): the rows come from the file on both sides."""
    import tomllib

    path = os.path.join(os.environ["XERO_TUI_CONFIG_DIR"], "config.toml")
    with open(path, "rb") as file:
        connections = tomllib.load(file).get("connections", {})
    return [
        (name, conn["tenant_name"], conn["kind"], conn.get("status", "ok"), "keyring")
        for name, conn in connections.items()
    ]


def many_tenants(count: int) -> list[Tenant]:
    from xero_tui.core.models import Tenant

    words = ("Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel")
    return [
        Tenant(
            f"conn-{i}",
            f"tenant-{i}",
            f"{words[i % 8]} {words[(i // 8) % 8]} Trading {i:05d} Ltd",
            "PRACTICE" if i % 97 == 0 else "ORGANISATION",
        )
        for i in range(count)
    ]


class Painted:
    """Notes when the app first paints a screen in which `ready(app)` holds."""

    def __init__(self, app: App[Any], ready: Callable[[App[Any]], bool]) -> None:
        self.app = app
        self.ready = ready
        self.at: float | None = None
        self.cpu_at = 0.0
        self.event = asyncio.Event()
        display = app._display

        def spy(screen: Any, renderable: Any) -> None:
            display(screen, renderable)
            # The update was rendered just before this call, from the state checked here.
            if renderable is not None and self.at is None and self.ready(app):
                self.at, self.cpu_at = time.perf_counter(), time.process_time()
                self.event.set()

        app._display = spy  # type: ignore[method-assign]

    def rearm(self, ready: Callable[[App[Any]], bool]) -> None:
        self.ready, self.at = ready, None
        self.event.clear()

    async def wait(self, timeout: float = 60.0) -> float:
        await asyncio.wait_for(self.event.wait(), timeout)
        assert self.at is not None
        return self.at


# Home screen --------------------------------------------------------------------------------


def home(side: str, count: int) -> dict[str, Any]:
    from textual.widgets import DataTable

    app: App[Any]
    if side == "ours":
        from xero_tui.app import XeroTuiApp
        from xero_tui.core.service import Service

        app = XeroTuiApp(Service())
    else:
        from textual.app import App, ComposeResult

        class BareTable(App[None]):
            def compose(self) -> ComposeResult:
                yield DataTable(cursor_type="row")

            def on_mount(self) -> None:
                table = self.query_one(DataTable)
                table.add_columns(*COLUMNS)
                table.add_rows(home_rows())

        app = BareTable()

    def ready(app: App[Any]) -> bool:
        return any(t.row_count >= count for t in app.screen.query(DataTable))

    async def go() -> float:
        painted = Painted(app, ready)
        async with app.run_test(size=SIZE):
            at = await painted.wait()
            await app.workers.wait_for_complete()
        return at - STARTED

    return {"seconds": asyncio.run(go())}


# Organisation picker --------------------------------------------------------------------------


def _picker_app(side: str, tenants: list[Tenant]) -> tuple[App[Any], Callable[[], None], Any]:
    """A host app, a function that opens the picker (or the bare list), and the ready check."""
    from textual.app import App, ComposeResult
    from textual.screen import Screen
    from textual.widgets import OptionList

    class Host(App[None]):
        pass

    app = Host()
    if side == "ours":
        from xero_tui.core.consent import ConsentOutcome
        from xero_tui.core.models import TokenSet
        from xero_tui.screens.organisations import OrganisationsScreen, TenantList

        tokens = TokenSet("not-used", 0.0, "not-used")
        outcome = ConsentOutcome(tokens, tuple(tenants), frozenset({tenants[-1].tenant_id}))

        def open_ours() -> None:
            app.push_screen(OrganisationsScreen(outcome, frozenset({tenants[1].tenant_id})))

        def ready_ours(app: App[Any]) -> bool:
            shown = app.screen.query(TenantList)
            return bool(shown) and shown.first().size.height > 0

        return app, open_ours, ready_ours

    names = [t.tenant_name for t in tenants]

    class BareList(Screen[None]):
        CSS = "OptionList { height: 1fr; }"

        def compose(self) -> ComposeResult:
            yield OptionList(*names)

    def open_floor() -> None:
        app.push_screen(BareList())

    def ready_floor(app: App[Any]) -> bool:
        shown = app.screen.query(OptionList)
        return bool(shown) and shown.first().size.height > 0

    return app, open_floor, ready_floor


def picker(side: str, count: int) -> dict[str, Any]:
    tenants = many_tenants(count)
    app, open_it, ready = _picker_app(side, tenants)

    async def go() -> float:
        painted = Painted(app, lambda app: False)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            painted.rearm(ready)
            start = time.perf_counter()
            open_it()
            at = await painted.wait()
            await app.workers.wait_for_complete()
        return at - start

    return {"seconds": asyncio.run(go())}


def filter_keys(side: str, count: int) -> dict[str, Any]:
    """CPU and wall time from each filter key reaching the app to the repainted list.

    Keys go straight to the driver's queue, as a terminal's would, without Pilot's waits; the
    next key is sent once the app is idle again.
    """
    from textual import events
    from textual.widgets import Input

    from xero_tui.screens.organisations import OrganisationsScreen

    tenants = many_tenants(count)
    app, open_it, ready = _picker_app("ours", tenants)

    async def go() -> dict[str, Any]:
        painted = Painted(app, lambda app: False)
        cpu, wall = [], []
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            painted.rearm(ready)
            open_it()
            await painted.wait()
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, OrganisationsScreen)
            folded = [t.tenant_name.casefold() for t in screen.tenants]
            text = ""
            for key in FILTER_KEYS:
                if key == "backspace":
                    text, char = text[:-1], None
                else:
                    char = " " if key == "space" else key
                    text += char
                query = text.casefold()
                shown = sum(query in name for name in folded)

                def filtered(app: App[Any], text: str = text, shown: int = shown) -> bool:
                    tenant_list = screen.tenant_list
                    value = screen.query_one(Input).value
                    return value == text and len(tenant_list.rows) == shown

                painted.rearm(filtered)
                event = events.Key(key, char)
                event.set_sender(app)
                wall_start, cpu_start = time.perf_counter(), time.process_time()
                assert app._driver is not None
                app._driver.send_message(event)
                await painted.wait()
                cpu.append(painted.cpu_at - cpu_start)
                wall.append(painted.at - wall_start if painted.at else 0.0)
                await pilot.pause()
            await app.workers.wait_for_complete()
        return {"cpu": cpu, "wall": wall}

    return asyncio.run(go())


def memory(side: str, count: int) -> dict[str, Any]:
    """Peak resident memory (ru_maxrss) once 10,000 organisations are on screen."""
    tenants = many_tenants(count)
    if side == "ours":
        from xero_tui.app import XeroTuiApp
        from xero_tui.core.consent import ConsentOutcome
        from xero_tui.core.models import TokenSet
        from xero_tui.core.service import Service
        from xero_tui.screens.organisations import OrganisationsScreen, TenantList

        app: App[Any] = XeroTuiApp(Service())
        tokens = TokenSet("not-used", 0.0, "not-used")
        outcome = ConsentOutcome(tokens, tuple(tenants), frozenset())

        def open_it() -> None:
            app.push_screen(OrganisationsScreen(outcome, frozenset()))

        def ready(app: App[Any]) -> bool:
            shown = app.screen.query(TenantList)
            return bool(shown) and shown.first().size.height > 0

    else:
        app, open_it, ready = _picker_app("floor", tenants)

    async def go() -> None:
        painted = Painted(app, lambda app: False)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            painted.rearm(ready)
            open_it()
            await painted.wait()
            await pilot.pause()
            await app.workers.wait_for_complete()

    asyncio.run(go())
    # Linux reports kilobytes.
    return {"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


# Consent: callback received to organisations shown ------------------------------------------


def _browser_get(url: str) -> None:
    """The browser's request to the loopback callback: a GET, its answer read, then closed."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), 30) as sock:
        target = parts.path + ("?" + parts.query if parts.query else "")
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        head, _, body = received.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += sock.recv(65536)


def _keep_floor(token_answer: str, client_secret: str) -> None:
    """The floor's write-ahead, the same work as the product's: the token set and the client
    secret into the keyring, each read back, then a record in a config file, written whole and
    synced with its folder."""
    import keyring

    for key, value in (("grant:bench", token_answer), ("client-secret:bench", client_secret)):
        keyring.set_password("xero-tui-floor", key, value)
        if keyring.get_password("xero-tui-floor", key) != value:
            raise RuntimeError("the keyring did not keep the value")
    folder = Path(os.environ["XERO_TUI_CONFIG_DIR"])
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    config = folder / "floor.toml"
    before = config.read_text() if config.exists() else ""
    temp = folder / ".floor.toml.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (before + '[pending.bench]\nname = "Bench"\n').encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, config)
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def consent(side: str, count: int) -> dict[str, Any]:
    from xero_tui.emulator.consent import answer_consent

    client_id, redirect_uri = os.environ["BENCH_CLIENT_ID"], os.environ["BENCH_REDIRECT_URI"]
    client_secret = os.environ["BENCH_CLIENT_SECRET"]
    tenant_ids = os.environ["BENCH_TENANT_IDS"].split(",")
    base = os.environ["XERO_TUI_LOGIN_URL"]
    if side == "ours":
        return {"seconds": _consent_ours(client_id, client_secret, redirect_uri, tenant_ids)}

    from textual.app import App, ComposeResult
    from textual.widgets import OptionList

    class BareConsent(App[None]):
        def compose(self) -> ComposeResult:
            yield OptionList()

    scopes = "offline_access openid profile email accounting.settings"
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": scopes,
            "state": "bench-state",
        }
    )
    app = BareConsent()

    async def go() -> float:
        import httpx

        location = await asyncio.to_thread(
            answer_consent, f"{base}/identity/connect/authorize?{query}", tenant_ids=tenant_ids
        )
        code = parse_qs(urlsplit(location).query)["code"][0]

        def ready(app: App[Any]) -> bool:
            return app.query_one(OptionList).option_count >= len(tenant_ids)

        painted = Painted(app, lambda app: False)
        # Built before the timed window (its TLS context costs 20-35 ms), as the app builds its
        # own while the user is still in the browser.
        async with app.run_test(size=SIZE) as pilot, httpx.AsyncClient() as client:
            await pilot.pause()
            painted.rearm(ready)
            start = time.perf_counter()
            answer = await client.post(
                f"{base}/connect/token",
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": redirect_uri,
                },
                auth=(client_id, client_secret),
            )
            access = answer.json()["access_token"]
            # What Xero issued is kept before anything else, as the product keeps it.
            await asyncio.to_thread(_keep_floor, answer.text, client_secret)
            listed = await client.get(
                f"{base}/connections", headers={"Authorization": f"Bearer {access}"}
            )
            app.query_one(OptionList).add_options([c["tenantName"] for c in listed.json()])
            at = await painted.wait()
        return at - start

    return {"seconds": asyncio.run(go())}


def _consent_ours(
    client_id: str, client_secret: str, redirect_uri: str, tenant_ids: list[str]
) -> float:
    """The real flow: home, n, the form, Generate, the consent screen, then the picker."""
    from textual.widgets import Input

    from xero_tui.app import XeroTuiApp
    from xero_tui.core.connect import forget_pending
    from xero_tui.core.service import Service
    from xero_tui.emulator.consent import answer_consent
    from xero_tui.screens.consent import ConsentScreen
    from xero_tui.screens.organisations import OrganisationsScreen, TenantList

    app = XeroTuiApp(Service())

    def ready(app: App[Any]) -> bool:
        screen = app.screen
        if not isinstance(screen, OrganisationsScreen):
            return False
        shown = screen.query(TenantList)
        tenant_list = shown.first() if shown else None
        return tenant_list is not None and len(tenant_list.rows) >= len(tenant_ids)

    async def go() -> float:
        painted = Painted(app, lambda app: False)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            await pilot.press("n")
            await pilot.pause()
            form = app.screen
            for field, value in (
                ("name", "Bench"),
                ("client-id", client_id),
                ("client-secret", client_secret),
                ("redirect-uri", redirect_uri),
            ):
                form.query_one(f"#{field}", Input).value = value
            await pilot.pause()
            await pilot.press("ctrl+g")
            while not (
                isinstance(app.screen, ConsentScreen)
                and app.screen.attempt is not None
                and app.screen.phase == "waiting"
            ):
                await pilot.pause(0.01)
            url = app.screen.attempt.url
            location = await asyncio.to_thread(answer_consent, url, tenant_ids=tenant_ids)
            painted.rearm(ready)
            start = time.perf_counter()
            browser = threading.Thread(target=_browser_get, args=(location,), daemon=True)
            browser.start()
            try:
                at = await painted.wait(30)
            except TimeoutError:
                raise RuntimeError(
                    f"no organisations shown; the screen says: {_texts(app)}"
                ) from None
            browser.join(10)
            # The form's sign-in worker waits for the picker's answer.
            await pilot.press("escape")
            await app.workers.wait_for_complete()
        # The sign-in was kept as unfinished; the next round starts without it.
        service = Service()
        for grant_id in list(service.load().pending):
            forget_pending(service, grant_id)
        return at - start

    return asyncio.run(go())


def _texts(app: App[Any]) -> str:
    from textual.widgets import Static

    return " / ".join(str(w.render()) for w in app.screen.query(Static) if w.display)[:2000]


SCENARIOS = {
    "home": home,
    "picker": picker,
    "filter": filter_keys,
    "memory": memory,
    "consent": consent,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("side", choices=("ours", "floor"))
    parser.add_argument("count", type=int)
    args = parser.parse_args()
    result = SCENARIOS[args.scenario](args.side, args.count)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
