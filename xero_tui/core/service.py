"""One front for the screens: the use cases of `core`, each in its own module, behind a few calls.

`Service` is a `Context` (the config, the secret store, the grant locks and Xero's client) whose
methods hand over to the module that owns each use case: `tokens`, `storage`, `connect`,
`health` and `removal`. The CLI calls those modules directly.
"""

from __future__ import annotations

from collections.abc import Iterable

from xero_tui.core import health as health_module
from xero_tui.core import removal as removal_module
from xero_tui.core import storage, tokens
from xero_tui.core.config import Config
from xero_tui.core.connect import ConnectSession, discard
from xero_tui.core.consent import ConnectionDraft
from xero_tui.core.context import Context
from xero_tui.core.health import Health, TestResult
from xero_tui.core.models import Connection, PendingSignIn, TokenSet
from xero_tui.core.removal import Removal
from xero_tui.core.secrets import ProbeResult
from xero_tui.core.storage import StorageMove


class Service(Context):
    """One user's connections: config file, secret store and Xero, behind a few typed calls."""

    async def probe_storage(self) -> ProbeResult:
        return await storage.probe_storage(self)

    def use_file_storage(self) -> StorageMove:
        """Blocking: see `storage.use_file_storage`."""
        return storage.use_file_storage(self)

    def start_session(
        self, draft: ConnectionDraft, name: str, *, reconnect: bool = False
    ) -> ConnectSession:
        """Blocking: see `ConnectSession.start`."""
        return ConnectSession.start(self, draft, name, reconnect=reconnect)

    def resume_session(self, pending: PendingSignIn) -> ConnectSession:
        """Blocking: see `ConnectSession.resume`."""
        return ConnectSession.resume(self, pending)

    async def access_token(self, name: str, *, force: bool = False) -> tuple[Connection, TokenSet]:
        return await tokens.access_token(self, name, force=force)

    def cached_token(self, name: str) -> tuple[Connection, TokenSet] | None:
        return tokens.cached_token(self, name)

    def health(
        self,
        names: Iterable[str] | None = None,
        *,
        read_secrets: bool = True,
        config: Config | None = None,
    ) -> list[Health]:
        return health_module.health(self, names, read_secrets=read_secrets, config=config)

    async def discard(self, pending: PendingSignIn) -> str:
        """Forget an unfinished sign-in and revoke it at Xero; a sentence."""
        return await discard(self, pending)

    async def test(self, name: str) -> TestResult:
        return await health_module.test(self, name)

    async def still_connected(self, name: str) -> bool:
        return await health_module.still_connected(self, name)

    async def remove(self, name: str, *, disconnect: bool = False, revoke: bool = False) -> str:
        """`removal`, as one sentence for a screen: what was done, and what could not be."""
        return (await self.removal(name, disconnect=disconnect, revoke=revoke)).summary

    async def removal(
        self, name: str, *, disconnect: bool = False, revoke: bool = False
    ) -> Removal:
        return await removal_module.removal(self, name, disconnect=disconnect, revoke=revoke)
