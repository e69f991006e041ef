"""Every file location the app uses, each with the environment override the tests use."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENV_CONFIG_DIR = "XERO_TUI_CONFIG_DIR"
# A shared store's URL, over the one config.toml may name.
ENV_STORE = "XERO_TUI_STORE"
APP_NAME = "xero-tui"
# A grant id names a lock file: no separator, no leading dot, nothing that could leave lock_dir.
GRANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def is_grant_id(value: str) -> bool:
    return GRANT_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class Paths:
    config_dir: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Paths:
        env = os.environ if env is None else env
        override = env.get(ENV_CONFIG_DIR)
        if override:
            return cls(Path(override).expanduser())
        from platformdirs import user_config_dir

        return cls(Path(user_config_dir(APP_NAME, appauthor=False, roaming=True)))

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def secrets_file(self) -> Path:
        return self.config_dir / "secrets.toml"

    @property
    def lock_dir(self) -> Path:
        return self.config_dir / "locks"

    def grant_lock(self, grant_id: str) -> Path:
        """The refresh lock of a grant; raises ConfigError for an id that could leave lock_dir."""
        if not is_grant_id(grant_id):
            from xero_tui.core.errors import ConfigError

            raise ConfigError(
                f"{self.config_file}: the grant id {grant_id[:80]!r} is not one xero-tui makes "
                "(letters, digits, '.', '_' and '-'); fix or remove that grant and reconnect."
            )
        return self.lock_dir / f"grant-{grant_id}.lock"

    @property
    def config_lock(self) -> Path:
        return self.lock_dir / "config.lock"

    @property
    def secrets_lock(self) -> Path:
        return self.lock_dir / "secrets.lock"
