"""Saved connections for tests: made offline (config and secrets written directly) or by a real
consent against the emulator through the connect session."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from tests.support.net import free_port
from tests.support.session import connect_new
from xero_tui.core.config import Config
from xero_tui.core.connect import ConnectSession
from xero_tui.core.consent import ConnectionDraft, ConsentOutcome
from xero_tui.core.models import Connection, Grant, Kind, Tenant, TokenSet, default_scopes
from xero_tui.core.service import Service
from xero_tui.emulator import Emulator

WHEN = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
SCOPES = ("offline_access", "openid", "profile", "email", "accounting.contacts")
WEB_ID = "0123456789abcdef0123456789abcdef"
CUSTOM_ID = "fedcba9876543210fedcba9876543210"


def make_grant(grant_id: str = "g1", **changes: object) -> Grant:
    grant = Grant(grant_id, Kind.WEB, "client-1", SCOPES, WHEN)
    for key, value in changes.items():
        setattr(grant, key, value)
    return grant


def make_connection(name: str, grant_id: str = "g1", **changes: object) -> Connection:
    conn = Connection(
        name=name,
        kind=Kind.WEB,
        client_id="client-1",
        tenant_id=f"tenant-{abs(hash(name)) % 10_000}",
        tenant_name=name,
        grant_id=grant_id,
        scopes=SCOPES,
        connection_id="conn-1",
        created=WHEN,
    )
    for key, value in changes.items():
        setattr(conn, key, value)
    return conn


def save_three_connections() -> Service:
    """A keyring-backed config with three connections, written without touching the keyring."""
    service = Service()

    def fill(config: Config) -> None:
        config.secret_storage = "keyring"
        config.grants["g1"] = make_grant("g1")
        for name in ("Alpha", "Bravo", "Charlie"):
            config.connections[name] = make_connection(name)

    service.store.update(fill)
    return service


def save_offline(svc: Service, name: str, kind: Kind, client_id: str, tenant: str) -> str:
    """A saved connection without Xero: the secrets go wherever `svc` keeps them."""
    draft = ConnectionDraft(
        kind, client_id, f"secret-of-{name}", "http://localhost:8080/callback", ("openid",)
    )
    tokens = TokenSet(f"access-of-{name}", time.time() + 1800, f"refresh-of-{name}", ("openid",))
    outcome = ConsentOutcome(tokens, (Tenant(f"c-{tenant}", tenant, f"Org {tenant}"),), frozenset())
    session = ConnectSession(svc, draft, name)
    session.outcome = outcome
    [conn] = session.save(outcome.tenants)
    return conn.grant_id


async def connect(svc: Service, emu: Emulator, name: str = "acme") -> ConnectionDraft:
    client = emu.web_client
    redirect = f"http://localhost:{free_port()}/callback"
    emu.register_client(client.client_id, client.client_secret, Kind.WEB, redirect_uris=(redirect,))
    draft = ConnectionDraft(
        Kind.WEB, client.client_id, client.client_secret, redirect, default_scopes(Kind.WEB)
    )
    await connect_new(svc, draft, name)
    return draft
