"""`xero-tui --demo`: the app against the built-in Xero emulator, with a throwaway config.

Nothing here reaches Xero or the user's keyring: the endpoints point at an emulator on
127.0.0.1, the config lives in a temporary directory and secrets go to a plain file inside it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

from xero_tui.core.config import Config, ConfigStore
from xero_tui.core.endpoints import ENV_API, ENV_IDENTITY, ENV_LOGIN
from xero_tui.core.models import Kind
from xero_tui.core.paths import ENV_CONFIG_DIR, Paths
from xero_tui.emulator import Emulator

DEMO_TENANTS = 4
_ENV_NAMES = (ENV_CONFIG_DIR, ENV_LOGIN, ENV_IDENTITY, ENV_API)


@dataclass
class DemoContext:
    """A running emulator, its demo apps and the temporary config dir the app uses."""

    emulator: Emulator
    config_dir: TemporaryDirectory[str]
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
        """Answer the emulator's consent page as a user pressing Allow would (blocking)."""
        from xero_tui.emulator.consent import answer_consent

        answer_consent(url, follow_redirect=True)

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
    emulator = Emulator(tenants=tenants).start()
    config_dir = TemporaryDirectory(prefix="xero-tui-demo-")
    context = DemoContext(emulator, config_dir, {name: os.environ.get(name) for name in _ENV_NAMES})
    os.environ.update(emulator.env)
    os.environ[ENV_CONFIG_DIR] = config_dir.name

    def file_storage(config: Config) -> None:
        config.secret_storage = "file"

    ConfigStore(Paths(Path(config_dir.name))).update(file_storage)
    return context
