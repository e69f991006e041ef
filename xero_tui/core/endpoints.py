"""Where Xero lives: its own https URLs unless the documented variables point elsewhere."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

LOGIN_URL = "https://login.xero.com"
IDENTITY_URL = "https://identity.xero.com"
API_URL = "https://api.xero.com"

ENV_LOGIN = "XERO_TUI_LOGIN_URL"
ENV_IDENTITY = "XERO_TUI_IDENTITY_URL"
ENV_API = "XERO_TUI_API_URL"


@dataclass(frozen=True)
class Endpoints:
    login_url: str = LOGIN_URL
    identity_url: str = IDENTITY_URL
    api_url: str = API_URL

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Endpoints:
        env = os.environ if env is None else env
        return cls(
            login_url=(env.get(ENV_LOGIN) or LOGIN_URL).rstrip("/"),
            identity_url=(env.get(ENV_IDENTITY) or IDENTITY_URL).rstrip("/"),
            api_url=(env.get(ENV_API) or API_URL).rstrip("/"),
        )

    @classmethod
    def single_host(cls, base_url: str) -> Endpoints:
        """All three on one server, as the emulator serves them."""
        base = base_url.rstrip("/")
        return cls(login_url=base, identity_url=base, api_url=base)

    @property
    def authorize_url(self) -> str:
        return f"{self.login_url}/identity/connect/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.identity_url}/connect/token"

    @property
    def revocation_url(self) -> str:
        return f"{self.identity_url}/connect/revocation"

    @property
    def connections_url(self) -> str:
        return f"{self.api_url}/connections"

    @property
    def organisation_url(self) -> str:
        return f"{self.api_url}/api.xro/2.0/Organisation"

    @property
    def overridden(self) -> bool:
        return (self.login_url, self.identity_url, self.api_url) != (
            LOGIN_URL,
            IDENTITY_URL,
            API_URL,
        )

    def override_notice(self) -> str | None:
        """The line every command prints (and every screen shows) when Xero's URLs are not in use."""
        if not self.overridden:
            return None
        hosts = sorted({self.login_url, self.identity_url, self.api_url})
        return "Xero endpoints overridden: talking to " + ", ".join(hosts) + " instead of Xero."
