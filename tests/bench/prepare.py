"""What the benchmark runs against: the emulator, throwaway config dirs and test keyrings.

Nothing here touches the user's config or keyring: every process the benchmark starts gets a
temporary config dir, HOME and the file-backed test keyring, and points at the emulator.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from xero_tui.core.config import Config, dump
from xero_tui.core.models import Connection, Grant, Kind, TokenSet, default_scopes
from xero_tui.core.paths import Paths
from xero_tui.core.secrets import SERVICE, client_secret_key, encode_tokens, grant_key
from xero_tui.emulator import Emulator

ROOT = Path(__file__).resolve().parents[2]
KEYRING_BACKEND = "tests.support.keyring_backend.FileKeyring"
CLIENT_ID = "BE4C0FFEE0BE4C0FFEE0BE4C0FFEE000"
CLIENT_SECRET = "bench-client-secret-not-a-real-one"
# Xero's access tokens are JWTs of about this size; the keyring holds one per grant.
ACCESS_TOKEN_CHARS = 1200


@dataclass(frozen=True)
class Place:
    """One config dir with its own test keyring file, and the environment that selects both."""

    root: Path
    emulator_env: dict[str, str]

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def keyring(self) -> Path:
        return self.root / "keyring.json"

    @property
    def paths(self) -> Paths:
        return Paths(self.config_dir)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("XERO_")}
        for name in ("SSH_CONNECTION", "SSH_TTY", "SSH_CLIENT", "BROWSER", "PYTHONPATH"):
            env.pop(name, None)
        # The floors' modules (Python's, Textual's, httpx's) are installed compiled; with this set
        # by the caller, xero_tui's own would be compiled from source in every child instead.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.update(self.emulator_env)
        env.update(
            PYTHONPATH=str(ROOT),
            PYTHON_KEYRING_BACKEND=KEYRING_BACKEND,
            XERO_TUI_TEST_KEYRING=str(self.keyring),
            XERO_TUI_CONFIG_DIR=str(self.config_dir),
            HOME=str(self.root / "home"),
            XDG_CONFIG_HOME=str(self.root / "home" / ".config"),
        )
        return env

    def use_here(self) -> None:
        """Point this process's keyring and config at this place (for setting things up)."""
        os.environ["PYTHON_KEYRING_BACKEND"] = KEYRING_BACKEND
        os.environ["XERO_TUI_TEST_KEYRING"] = str(self.keyring)
        os.environ["XERO_TUI_CONFIG_DIR"] = str(self.config_dir)
        os.environ.update(self.emulator_env)


def register_bench_client(emulator: Emulator, redirect_uri: str) -> None:
    emulator.register_client(
        CLIENT_ID, CLIENT_SECRET, Kind.WEB, (redirect_uri,), name="xero-tui benchmark"
    )


def connect_for_real(place: Place, emulator: Emulator, name: str, redirect_uri: str) -> str:
    """A connection made by a real consent against the emulator; returns its grant id."""
    from tests.support.session import sign_in
    from xero_tui.core.consent import ConnectionDraft
    from xero_tui.core.service import Service

    place.use_here()
    service = Service(place.paths, emulator.endpoints)
    draft = ConnectionDraft(
        Kind.WEB, CLIENT_ID, CLIENT_SECRET, redirect_uri, default_scopes(Kind.WEB)
    )

    async def consent() -> list[Connection]:
        tenant_ids = [emulator.tenants[0].tenant_id]
        session, outcome = await sign_in(service, draft, name, tenant_ids=tenant_ids)
        return session.save([outcome.ordered()[0]])

    saved = asyncio.run(consent())
    return saved[0].grant_id


def write_many(place: Place, count: int, per_grant: int) -> None:
    """`count` saved connections, `per_grant` of them to a consent, with tokens in the keyring.

    Written directly (config through the app's own writer) rather than by `count` consents.
    """
    stamp = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
    expires = time.time() + 1800
    scopes = default_scopes(Kind.WEB)
    config = Config()
    secrets: dict[str, str] = {client_secret_key(CLIENT_ID): CLIENT_SECRET}
    grant_id = ""
    for i in range(count):
        if i % per_grant == 0:
            grant_id = f"{i // per_grant:032x}"
            config.grants[grant_id] = Grant(grant_id, Kind.WEB, CLIENT_ID, scopes, stamp, stamp)
            access = (f"eyJ{i:08d}" * ACCESS_TOKEN_CHARS)[:ACCESS_TOKEN_CHARS]
            tokens = TokenSet(access, expires, f"refresh-{i:058d}", scopes)
            secrets[grant_key(grant_id)] = encode_tokens(tokens)
        name = f"Client {i:04d}"
        config.connections[name] = Connection(
            name=name,
            kind=Kind.WEB,
            client_id=CLIENT_ID,
            tenant_id=f"{i:08d}-0000-4000-8000-000000000000",
            tenant_name=f"Organisation {i:04d} Trading Ltd",
            grant_id=grant_id,
            scopes=scopes,
            connection_id=f"{i:08d}-1111-4000-8000-000000000000",
            created=stamp,
            last_refreshed=stamp,
        )
    place.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    place.paths.config_file.write_text(dump(config))
    place.paths.config_file.chmod(0o600)
    place.keyring.write_text(json.dumps({SERVICE: secrets}))
