"""`xero-tui --demo`: the app against the built-in Xero emulator, with a throwaway config.

Nothing here reaches Xero or the user's keyring: the endpoints point at an emulator on
127.0.0.1, the config lives in a temporary directory and secrets go to a plain file inside it.
The emulator takes any free port; the sign-in's redirect URI keeps the default port when it is
free and moves to a free one when it is not, and the demo apps are registered with that URI.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from urllib.parse import urlsplit

from xero_tui.core.config import Config, ConfigStore
from xero_tui.core.endpoints import ENV_API, ENV_IDENTITY, ENV_LOGIN
from xero_tui.core.loopback import loopback_port_free
from xero_tui.core.models import DEFAULT_REDIRECT_URI, Kind
from xero_tui.core.paths import ENV_CONFIG_DIR, Paths
from xero_tui.emulator import Emulator

DEMO_TENANTS = 4
_ENV_NAMES = (ENV_CONFIG_DIR, ENV_LOGIN, ENV_IDENTITY, ENV_API)


def demo_redirect_uri(preferred: str = DEFAULT_REDIRECT_URI) -> str:
    """`preferred` if its port is free on loopback, else the same URI on a port that is."""
    parts = urlsplit(preferred)
    if parts.port is not None and loopback_port_free(parts.port):
        return preferred
    for _ in range(20):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if loopback_port_free(port):
            host = parts.hostname or "localhost"
            host = f"[{host}]" if ":" in host else host
            return parts._replace(netloc=f"{host}:{port}").geturl()
    raise OSError(errno.EADDRINUSE, "no free loopback port for the demo's redirect URI")


@dataclass
class DemoContext:
    """A running emulator, its demo apps and the temporary config dir the app uses.

    `redirect_uri` is the one the demo apps are registered with: the default, or one on a free
    port when another program holds the default port.
    """

    emulator: Emulator
    config_dir: TemporaryDirectory[str]
    redirect_uri: str = DEFAULT_REDIRECT_URI
    _saved_env: dict[str, str | None] = field(default_factory=dict, repr=False)

    @property
    def client_id(self) -> str:
        return self.emulator.web_client.client_id

    @property
    def client_secret(self) -> str:
        secret = self.emulator.web_client.client_secret
        assert secret is not None
        return secret

    @property
    def sign_in_port(self) -> int:
        """The emulator's port on this machine's loopback: the browser signs in there."""
        port = urlsplit(self.emulator.url).port
        assert port is not None
        return port

    @property
    def config_path(self) -> Path:
        return Path(self.config_dir.name)

    def credentials(self, kind: Kind) -> tuple[str, str | None]:
        """The demo app of this kind: (client ID, client secret or None)."""
        client = {
            Kind.WEB: self.emulator.web_client,
            Kind.PKCE: self.emulator.pkce_client,
            Kind.CUSTOM: self.emulator.custom_client,
        }[kind]
        return client.client_id, client.client_secret

    def approve(self, url: str) -> None:
        """Answer the emulator's consent page as a user pressing Allow would (blocking).

        Every organisation is ticked, so the picker that follows has several to choose from.
        """
        from xero_tui.emulator.consent import answer_consent

        tenant_ids = [tenant.tenant_id for tenant in self.emulator.tenants]
        answer_consent(url, tenant_ids=tenant_ids, follow_redirect=True)

    def close(self) -> None:
        self.emulator.stop()
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self.config_dir.cleanup()


def start_demo(tenants: int = DEMO_TENANTS) -> DemoContext:
    """Start the emulator on loopback and point this process at it and at a fresh config dir."""
    # The emulator binds first, so the redirect port found free cannot turn out to be its own.
    emulator = Emulator(tenants=tenants).start()
    redirect_uri = demo_redirect_uri()
    # The default stays registered too, for a form that still shows it once its port is free.
    redirect_uris = tuple(dict.fromkeys((redirect_uri, DEFAULT_REDIRECT_URI)))
    for client in (emulator.web_client, emulator.pkce_client):
        emulator.register_client(client.client_id, client.client_secret, client.kind, redirect_uris)
    config_dir = TemporaryDirectory(prefix="xero-tui-demo-")
    context = DemoContext(
        emulator,
        config_dir,
        redirect_uri,
        {name: os.environ.get(name) for name in _ENV_NAMES},
    )
    os.environ.update(emulator.env)
    os.environ[ENV_CONFIG_DIR] = config_dir.name

    def file_storage(config: Config) -> None:
        config.secret_storage = "file"

    ConfigStore(Paths(Path(config_dir.name))).update(file_storage)
    return context
