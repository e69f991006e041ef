"""`xero-tui --demo`: a redirect port that works even when the default one is taken, and an
approve that grants every organisation of the demo user."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.support.net import port_is_free
from tests.support.tui import (
    ConsentApp,
    consent_screen,
    no_display_env,
    until_dismissed,
    until_phase,
)
from xero_tui.core.consent import ConnectionDraft, ConsentOutcome
from xero_tui.core.endpoints import ENV_API
from xero_tui.core.models import DEFAULT_REDIRECT_URI, Kind, default_scopes
from xero_tui.core.service import Service
from xero_tui.demo import DEMO_TENANTS, DemoContext, demo_redirect_uri, start_demo

DEFAULT_PORT = urlsplit(DEFAULT_REDIRECT_URI).port


@pytest.fixture
def default_port_held() -> Iterator[None]:
    """Another program listens on the default redirect port for the length of the test."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", DEFAULT_PORT or 0))
            sock.listen()
        except OSError:
            pass  # something else holds it already, which is all the test needs
        assert not port_is_free(DEFAULT_PORT or 0)
        yield


@pytest.fixture
def demo(default_port_held: None) -> Iterator[DemoContext]:
    context = start_demo()
    try:
        yield context
    finally:
        context.close()


def draft_for(demo: DemoContext, kind: Kind, redirect_uri: str | None = None) -> ConnectionDraft:
    client_id, secret = demo.credentials(kind)
    return ConnectionDraft(
        kind=kind,
        client_id=client_id,
        client_secret=secret,
        redirect_uri=redirect_uri or demo.redirect_uri,
        scopes=default_scopes(kind),
    )


def test_the_preferred_redirect_uri_is_kept_while_its_port_is_free() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    preferred = f"http://localhost:{port}/callback"
    assert demo_redirect_uri(preferred) == preferred


def test_a_held_port_moves_the_redirect_uri_to_a_free_one() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        held = sock.getsockname()[1]
        moved = urlsplit(demo_redirect_uri(f"http://localhost:{held}/callback"))
        assert (moved.scheme, moved.hostname, moved.path) == ("http", "localhost", "/callback")
        assert moved.port is not None and moved.port != held and port_is_free(moved.port)


def test_with_the_default_port_held_the_demo_apps_use_a_free_one(demo: DemoContext) -> None:
    assert demo.redirect_uri != DEFAULT_REDIRECT_URI
    port = urlsplit(demo.redirect_uri).port
    assert port is not None and port_is_free(port)
    for client in (demo.emulator.web_client, demo.emulator.pkce_client):
        assert demo.redirect_uri in client.redirect_uris
    assert os.environ[ENV_API] == demo.emulator.url


def test_closing_the_demo_puts_the_environment_back(default_port_held: None) -> None:
    before = os.environ.get(ENV_API)
    context = start_demo()
    assert os.environ[ENV_API] == context.emulator.url
    context.close()
    assert os.environ.get(ENV_API) == before
    assert not context.config_path.exists()


@pytest.mark.parametrize("kind", [Kind.WEB, Kind.PKCE])
async def test_with_the_default_port_held_approve_signs_in_to_every_organisation(
    demo: DemoContext, kind: Kind
) -> None:
    draft = draft_for(demo, kind)
    app = ConsentApp(
        lambda: consent_screen(
            Service(insecure_storage=True), draft, demo=demo, env=no_display_env()
        )
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until_phase(pilot, "waiting")
        await pilot.press("a")
        result = await until_dismissed(pilot)
        assert isinstance(result, ConsentOutcome)
        everyone = {tenant.tenant_id for tenant in demo.emulator.tenants}
        assert len(everyone) == DEMO_TENANTS
        assert {tenant.tenant_id for tenant in result.tenants} == everyone
        assert result.new_tenant_ids == everyone
        await app.workers.wait_for_complete()


async def test_a_held_default_port_in_the_demo_names_the_uri_that_works(
    demo: DemoContext,
) -> None:
    draft = draft_for(demo, Kind.WEB, DEFAULT_REDIRECT_URI)
    app = ConsentApp(
        lambda: consent_screen(
            Service(insecure_storage=True), draft, demo=demo, env=no_display_env()
        )
    )
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await until_phase(pilot, "error")
        status = str(screen.query_one("#consent-status").render())
        assert f"Port {DEFAULT_PORT} is in use" in status
        assert f"The demo apps also accept {demo.redirect_uri}" in status
        await pilot.press("escape")
        await app.workers.wait_for_complete()
