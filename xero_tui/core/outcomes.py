"""What Service's calls take and give: drafts, consent outcomes, health, test and removal results.

Kept apart from `service` so that a cached `token`, which needs none of them, does not pay for
building these classes at start-up; `service` still exports every name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xero_tui.core.errors import clean_text
from xero_tui.core.models import (
    REFRESH_TOKEN_LIFETIME_DAYS,
    REFRESH_TOKEN_WARN_DAYS,
    Connection,
    Kind,
    Organisation,
    Status,
    Tenant,
    TokenSet,
)

if TYPE_CHECKING:
    from xero_tui.core.browser import LaunchPlan
    from xero_tui.core.loopback import CallbackListener, CallbackResult
    from xero_tui.core.oauth import AuthRequest


@dataclass(frozen=True)
class ConsentOutcome:
    """The result of one consent (or of validating a pasted refresh token)."""

    tokens: TokenSet
    tenants: tuple[Tenant, ...]
    new_tenant_ids: frozenset[str]
    auth_event_id: str | None = None

    def ordered(self) -> list[Tenant]:
        """Tenants this consent just granted first, then the rest, each part by name."""
        return sorted(
            self.tenants,
            key=lambda t: (t.tenant_id not in self.new_tenant_ids, t.tenant_name.casefold()),
        )


@dataclass(frozen=True)
class ConnectionDraft:
    """What the form (or `connect`) knows about the app before consent."""

    kind: Kind
    client_id: str
    client_secret: str | None
    redirect_uri: str
    scopes: tuple[str, ...]
    pkce: bool = True


@dataclass(frozen=True)
class TestResult:
    connection: Connection
    organisation: Organisation
    expires_at: float


@dataclass(frozen=True)
class Health:
    """What `status` and the home screen show for one connection (no network involved)."""

    connection: Connection
    storage: str
    access_expires_at: float | None
    refresh_age_days: float | None
    # The grant's tokens are not in the secret store: only a reconnect brings new ones.
    secret_missing: bool = False
    # The app's client secret is not in the secret store: it has to be entered again.
    client_secret_missing: bool = False

    @property
    def refresh_days_left(self) -> float | None:
        if self.refresh_age_days is None:
            return None
        return REFRESH_TOKEN_LIFETIME_DAYS - self.refresh_age_days

    @property
    def label(self) -> str:
        if self.secret_missing:
            return "tokens missing: reconnect"
        if self.connection.status is Status.NEEDS_RECONNECT:
            return "needs reconnect"
        if self.client_secret_missing:
            return "client secret missing: enter it again"
        if self.refresh_age_days is not None and self.refresh_age_days > REFRESH_TOKEN_WARN_DAYS:
            return f"refresh token unused {self.refresh_age_days:.0f} days"
        return "ok"


@dataclass(frozen=True)
class StorageMove:
    """What switching to the plain-file store did with the secrets already saved."""

    moved: int
    # Connections whose tokens stayed behind (the keyring did not give them): reconnect them.
    reconnect: tuple[str, ...] = ()
    # Connections whose app's client secret stayed behind: enter it again.
    reenter_secret: tuple[str, ...] = ()
    keyring_problem: str | None = None
    # Connections whose moved secret is also still in the keyring: it changed there during the
    # move, or the keyring would not delete it. The file's copy is the one used from now on.
    left_in_keyring: tuple[str, ...] = ()

    @property
    def notice(self) -> str | None:
        """What the user has to know or do after the switch, in a few lines; None if nothing."""
        parts = []
        if self.reconnect or self.reenter_secret:
            # The problem's first sentence: the rest advises the switch just made.
            why = (self.keyring_problem or "").split(". ", 1)[0].rstrip(".")
            parts.append(_sentence(why or "The keyring holds no secrets for some connections"))
            todo = []
            if self.reconnect:
                todo.append(f"reconnect {quoted_names(self.reconnect)}")
            if self.reenter_secret:
                todo.append(
                    f"enter the client secret again for {quoted_names(self.reenter_secret)}"
                )
            parts.append(_sentence("; ".join(todo)))
        if self.left_in_keyring:
            parts.append(
                f"The keyring still holds a copy for {quoted_names(self.left_in_keyring)}; the file's "
                "copy is the one used now."
            )
        if not parts:
            return None
        if self.moved:
            plural = "s" if self.moved != 1 else ""
            parts.insert(0, f"Moved {self.moved} secret{plural} to the plain file.")
        return clean_text(" ".join(parts), 600)


def quoted_names(names: Sequence[str]) -> str:
    """Connection names as messages quote them: `'A', 'B'`."""
    return ", ".join(repr(n) for n in names)


@dataclass(frozen=True)
class Removal:
    """What removing a connection did, and what it was asked to do at Xero but could not."""

    name: str
    done: tuple[str, ...] = ()
    not_done: tuple[str, ...] = ()
    # Something asked for was skipped because the grant no longer works.
    needs_reconnect: bool = False

    @property
    def done_text(self) -> str:
        return f"Removed {self.name!r}" + (": " + "; ".join(self.done) + "." if self.done else ".")

    @property
    def summary(self) -> str:
        return " ".join([self.done_text, *(_sentence(n) for n in self.not_done)])


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


@dataclass
class ConsentAttempt:
    """A live authorization attempt: the listener is bound before `url` is shown."""

    request: AuthRequest
    listener: CallbackListener
    plan: LaunchPlan
    ssh_command: str | None
    launched: bool = False
    launch_tried: bool = False

    @property
    def url(self) -> str:
        return self.request.url

    @property
    def port(self) -> int:
        return self.listener.port

    @property
    def browser_note(self) -> str:
        """Whether a browser was opened, and if not, why not."""
        if self.launch_tried and not self.launched:
            from xero_tui.core.browser import LAUNCH_FAILED

            return LAUNCH_FAILED
        if self.plan.launch and not self.launch_tried:
            return "Not opening a browser, as asked."
        return self.plan.reason

    def remaining(self) -> float:
        return self.listener.remaining()

    async def wait(self) -> CallbackResult:
        return await self.listener.wait()

    def submit_pasted_url(self, url: str) -> None:
        self.listener.submit_pasted_url(url)

    def cancel(self) -> None:
        self.listener.cancel()

    async def close(self) -> None:
        await self.listener.close()

    def close_in_background(self) -> None:
        self.listener.close_in_background()
