"""Every file location the app uses, each with the environment override the tests use."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENV_CONFIG_DIR = "XERO_TUI_CONFIG_DIR"
APP_NAME = "xero-tui"


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
        return self.lock_dir / f"grant-{grant_id}.lock"

    @property
    def config_lock(self) -> Path:
        return self.lock_dir / "config.lock"

    @property
    def secrets_lock(self) -> Path:
        return self.lock_dir / "secrets.lock"
