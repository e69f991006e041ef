"""Snapshots of each screen at 80x24 and 120x36, from fixed sample data.

Nothing in the pictures depends on the clock, the host, a port or a blinking cursor: the service
is a stand-in with fixed connections and times, and the clock and time zone are pinned.
Update with `pytest tests/test_tui_snapshots.py --snapshot-update` after checking the report.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from xero_tui.app import XeroTuiApp
from xero_tui.core import health as core_health
from xero_tui.core.config import Config
from xero_tui.core.endpoints import Endpoints
from xero_tui.core.health import Health
from xero_tui.core.models import (
    Connection,
    Grant,
    Kind,
    Organisation,
    Status,
    default_scopes,
)
from xero_tui.core.secrets import no_keyring
from xero_tui.core.service import Service
from xero_tui.screens import test_result

SIZES = [(80, 24), (120, 36)]
NOW = datetime(2026, 11, 28, 9, 30, tzinfo=UTC).timestamp()
CREATED = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
SECRET = "fixed-secret-never-shown"


class FakeSecrets:
    """Where the fixed service says secrets live; nothing to warn about."""

    description = "keyring (SecretService)"

    def take_warning(self) -> str | None:
        return None


def sample_connections() -> list[Connection]:
    def conn(name: str, org: str, kind: Kind, grant: str, **extra: object) -> Connection:
        return Connection(
            name=name,
            kind=kind,
            client_id="0123456789ABCDEF0123456789ABCDEF",
            tenant_id=f"tenant-{org}",
            tenant_name=org,
            grant_id=grant,
            scopes=default_scopes(kind),
            connection_id=f"connection-{org}",
            created=CREATED,
            **extra,  # type: ignore[arg-type]
        )

    return [
        conn("Acme sync - Acme Ltd", "Acme Ltd", Kind.WEB, "g1"),
        conn("Acme sync - Beta Trading", "Beta Trading", Kind.WEB, "g1"),
        conn(
            "Payroll export",
            "Harbour Plumbing Pty Ltd",
            Kind.WEB,
            "g2",
            status=Status.NEEDS_RECONNECT,
        ),
        conn("Reports", "Demo Company (NZ)", Kind.PKCE, "g3"),
        conn("Own books", "Kiwi Cafe", Kind.CUSTOM, "g4"),
    ]


class FixedService(Service):
    """The service's answers, fixed: no files, keyring, network or clock involved."""

    def __init__(self, connections: Iterable[Connection] = (), endpoints: Endpoints | None = None):
        super().__init__(endpoints=endpoints or Endpoints())
        self._fixed = {c.name: c for c in connections}

    def load(self) -> Config:
        grants = {
            c.grant_id: Grant(c.grant_id, c.kind, c.client_id, c.scopes, CREATED)
            for c in self._fixed.values()
        }
        return Config(grants=grants, connections=dict(self._fixed))

    @property
    def secrets(self) -> FakeSecrets:  # type: ignore[override]
        return FakeSecrets()

    def uses_file_storage(self) -> bool:
        return False

    def client_secret_for(self, client_id: str) -> str | None:
        return SECRET

    def health(
        self,
        names: Iterable[str] | None = None,
        *,
        read_secrets: bool = True,
        config: Config | None = None,
    ) -> list[Health]:
        ages = {"Reports": 55.2}
        return [
            Health(
                connection=c,
                storage=FakeSecrets.description,
                access_expires_at=NOW + 1200,
                refresh_age_days=None if c.kind is Kind.CUSTOM else ages.get(c.name, 3.0),
            )
            for c in sorted(self._fixed.values(), key=lambda c: c.name.casefold())
        ]

    async def test(self, name: str) -> core_health.TestResult:
        org = Organisation("org-1", "Acme Ltd", "!AcMe1", "NZ", "NZD")
        return core_health.TestResult(self._fixed[name], org, NOW + 1800)


class NoKeyringService(FixedService):
    """No keyring at all, as on a server reached over SSH: the config reads, no secret does."""

    @property
    def secrets(self) -> FakeSecrets:  # type: ignore[override]
        secrets = FakeSecrets()
        secrets.description = "keyring (none available)"
        return secrets

    def health(
        self,
        names: Iterable[str] | None = None,
        *,
        read_secrets: bool = True,
        config: Config | None = None,
    ) -> list[Health]:
        if read_secrets:
            raise no_keyring()
        return super().health(names, read_secrets=False, config=config)

    async def test(self, name: str) -> core_health.TestResult:
        raise no_keyring()


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.setattr(test_result, "now", lambda: NOW)


@pytest.fixture(autouse=True, scope="module")
def restore_timezone() -> Iterable[None]:
    yield
    time.tzset()


def steady(pilot: Pilot[None]) -> None:
    """No blinking cursor in the picture."""
    for widget in pilot.app.screen.query(Input):
        widget.cursor_blink = False


def navigate(*keys: str) -> Callable[[Pilot[None]], Awaitable[None]]:
    async def run_before(pilot: Pilot[None]) -> None:
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        for key in keys:
            await pilot.press(key)
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()
        steady(pilot)
        await pilot.pause()

    return run_before


def app_with(connections: Iterable[Connection] = (), **kwargs: object) -> XeroTuiApp:
    return XeroTuiApp(FixedService(connections, **kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_home(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    app = app_with(sample_connections())
    assert snap_compare(app, terminal_size=size, run_before=navigate("down", "down"))


def test_home_empty(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(app_with(), terminal_size=(80, 24), run_before=navigate())


def test_home_with_overridden_endpoints(snap_compare: Callable[..., bool]) -> None:
    endpoints = Endpoints.single_host("https://xero-mock.example.com")
    app = app_with(sample_connections()[:2], endpoints=endpoints)
    assert snap_compare(app, terminal_size=(80, 24), run_before=navigate())


@pytest.mark.parametrize("keys", [(), ("t",)], ids=["home", "test"])
def test_no_keyring(snap_compare: Callable[..., bool], keys: tuple[str, ...]) -> None:
    """What is wrong and both ways on, whole, at 80x24: on the home screen and in the test."""
    app = XeroTuiApp(NoKeyringService(sample_connections()[:3]))  # type: ignore[arg-type]
    assert snap_compare(app, terminal_size=(80, 24), run_before=navigate(*keys))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_checklist(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    app = app_with()
    keys = ("k", "space", "down", "space", "down")
    assert snap_compare(app, terminal_size=size, run_before=navigate(*keys))


def test_checklist_custom_connection(snap_compare: Callable[..., bool]) -> None:
    app = app_with()
    keys = ("k", "t", "right", "right", "enter", "tab", "down", "down", "down", "down", "down")
    assert snap_compare(app, terminal_size=(80, 24), run_before=navigate(*keys))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_new_connection_form(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    assert snap_compare(app_with(), terminal_size=size, run_before=navigate("n"))


def test_form_refuses_to_save(snap_compare: Callable[..., bool]) -> None:
    keys = ("n", "A", "c", "m", "e", "tab", "1", "2", "3", "ctrl+s")
    assert snap_compare(app_with(), terminal_size=(120, 36), run_before=navigate(*keys))


def test_saved_connection_form(snap_compare: Callable[..., bool]) -> None:
    app = app_with(sample_connections())
    assert snap_compare(app, terminal_size=(80, 24), run_before=navigate("enter"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_test_result(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    app = app_with(sample_connections())
    assert snap_compare(app, terminal_size=size, run_before=navigate("t"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_delete_confirm(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    app = app_with(sample_connections())
    assert snap_compare(app, terminal_size=size, run_before=navigate("d"))


def test_no_secret_in_snapshots_or_screenshots() -> None:
    from pathlib import Path

    from xero_tui.emulator import Emulator

    root = Path(__file__).resolve().parent.parent
    pictures = [
        *(root / "tests" / "__snapshots__" / "test_tui_snapshots").glob("*.svg"),
        *(root / "screenshots").glob("*.svg"),
    ]
    assert pictures
    demo = Emulator()  # the demo apps are the same on every run (fixed seed)
    secrets = [SECRET, demo.web_client.client_secret, demo.custom_client.client_secret]
    for picture in pictures:
        text = picture.read_text(encoding="utf-8")
        for secret in secrets:
            assert secret and secret not in text, picture.name
