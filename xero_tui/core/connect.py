"""The connect session: one use case, from the app's details to saved connections.

The CLI's `connect` and the app's form both drive a `ConnectSession`; neither repeats a step.
Its phases run in order:

    READY    the name is checked and free; nothing from Xero yet
    ISSUED   Xero issued tokens (a code exchange, a pasted refresh token's check, or client
             credentials) and a refresh token is already kept as a pending sign-in
    LISTED   the organisations the tokens reach are known, this consent's marked
    SAVED    one connection per chosen organisation, on the pending sign-in's grant
    DISCARDED

A token Xero issues is written ahead: the secret store holds it (and the config the pending
sign-in's facts) before the organisations are asked for, before the browser page says
"connected", before anyone chooses. An interruption after that loses nothing: `resume` takes
the pending sign-in up again, for as long as Xero accepts its refresh token.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar

from xero_tui.core import consent
from xero_tui.core.config import Config
from xero_tui.core.consent import ConnectionDraft, ConsentAttempt, ConsentOutcome
from xero_tui.core.context import Context, app_in_use, in_thread, now_utc, settle
from xero_tui.core.errors import StorageError, UsageError, XeroTuiError, clean_text
from xero_tui.core.models import Connection, Grant, Kind, PendingSignIn, Tenant, TokenSet
from xero_tui.core.removal import drop_unused_grants
from xero_tui.core.secrets import ProbeResult
from xero_tui.core.storage import probe_storage
from xero_tui.core.validate import MAX_NAME, check_name

if TYPE_CHECKING:
    from xero_tui.core.context import GrantLock
    from xero_tui.core.loopback import CallbackResult

T = TypeVar("T")


class Phase(StrEnum):
    READY = "ready"
    ISSUED = "issued"
    LISTED = "listed"
    SAVED = "saved"
    DISCARDED = "discarded"


def _fit(text: str, suffix: str = "") -> str:
    room = MAX_NAME - len(suffix)
    if len(text) > room:
        text = text[: room - 1].rstrip() + "…"
    return text + suffix


def connection_names(
    name: str, tenants: Sequence[Tenant], taken: Collection[str] = ()
) -> list[tuple[str, Tenant]]:
    """One connection per organisation: the plain name for one, `NAME - Organisation` for more.

    Derived names are valid and unique by construction: cut to the name limit, and numbered
    when two organisations (or a saved connection in `taken`) would share one.
    """
    name = name.strip()
    if len(tenants) == 1:
        return [(name, tenants[0])]
    used = set(taken)
    out = []
    for tenant in tenants:
        base = _fit(f"{name} - {clean_text(tenant.tenant_name, MAX_NAME * 2)}")
        candidate, number = base, 2
        while candidate in used:
            candidate = _fit(base, f" ({number})")
            number += 1
        used.add(candidate)
        out.append((candidate, tenant))
    return out


def reconnect_names(config: Config, name: str) -> list[str]:
    """The connections a reconnect of `name` renews: every one sharing its grant."""
    conn = config.connections[name]
    return [c.name for c in config.connections.values() if c.grant_id == conn.grant_id]


def clone_draft(conn: Connection | PendingSignIn, secret: str | None) -> ConnectionDraft:
    return ConnectionDraft(
        kind=conn.kind,
        client_id=conn.client_id,
        client_secret=secret,
        redirect_uri=conn.redirect_uri,
        scopes=conn.scopes,
        pkce=conn.pkce,
    )


def parse_choice(answer: str, count: int) -> list[int]:
    """The organisations typed at a prompt ("1" or "1,3"), as indexes; raises UsageError."""
    parts = [part.strip() for part in answer.split(",") if part.strip()]
    if not parts or not all(part.isdigit() and 1 <= int(part) <= count for part in parts):
        raise UsageError(f"Type numbers from 1 to {count}, e.g. 1 or 1,3.")
    return list(dict.fromkeys(int(part) - 1 for part in parts))


def pending_sign_ins(config: Config) -> list[PendingSignIn]:
    """The unfinished sign-ins, oldest first."""
    return sorted(config.pending.values(), key=lambda p: (p.issued, p.name))


def find_pending(config: Config, name: str) -> PendingSignIn | None:
    """The newest unfinished sign-in made for `name`, if any."""
    named = [p for p in pending_sign_ins(config) if p.name == name]
    return named[-1] if named else None


def pending_sentence(pending: PendingSignIn) -> str:
    """What an unfinished sign-in is, and the two ways on, for `list`, `status` and the app."""
    issued = pending.issued.astimezone().strftime("%Y-%m-%d %H:%M")
    return (
        f"Unfinished sign-in {pending.name!r} (Xero answered at {issued}): "
        f"`xero-tui connect {pending.name!r}` finishes it without signing in again; "
        f"`xero-tui remove {pending.name!r}` discards it."
    )


@dataclass(frozen=True)
class Preselection:
    """The organisations a session saves without asking, and what `--tenant` named in vain."""

    tenants: tuple[Tenant, ...]
    unknown: tuple[str, ...] = ()

    @property
    def needs_choice(self) -> bool:
        return not self.tenants


class ConnectSession:
    """One sign-in's way from the app's details to saved connections (see the module)."""

    def __init__(
        self,
        ctx: Context,
        draft: ConnectionDraft,
        name: str,
        *,
        renewing: Mapping[str, str] | None = None,
        pending: PendingSignIn | None = None,
    ) -> None:
        self.ctx = ctx
        self.draft = draft
        self.name = name
        # The saved connections a reconnect replaces, each with its organisation's id.
        self.renewing: dict[str, str] = dict(renewing or {})
        self.pending = pending
        self.tokens: TokenSet | None = None
        self.outcome: ConsentOutcome | None = None
        self.saved: list[Connection] = []
        self.phase = Phase.ISSUED if pending is not None else Phase.READY

    # Starting ----------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        ctx: Context,
        draft: ConnectionDraft,
        name: str,
        *,
        reconnect: bool = False,
        config: Config | None = None,
    ) -> ConnectSession:
        """Blocking. A new session for `name`, checked before anything is spent on it: a valid
        name that no saved connection or unfinished sign-in has (`reconnect` renews the saved
        connection of that name and those sharing its grant)."""
        name = check_name(name)
        config = config or ctx.load()
        renewing: dict[str, str] = {}
        if reconnect:
            ctx.connection(name, config)
            renewing = {n: config.connections[n].tenant_id for n in reconnect_names(config, name)}
        elif name in config.connections:
            raise UsageError(f"A connection named {name!r} already exists; choose another name.")
        elif find_pending(config, name) is not None:
            raise UsageError(
                f"An unfinished sign-in is named {name!r}: finish it (xero-tui connect "
                f"{name!r}, or f on the home screen) or discard it first."
            )
        return cls(ctx, draft, name, renewing=renewing)

    @classmethod
    def resume(cls, ctx: Context, pending: PendingSignIn) -> ConnectSession:
        """Blocking. Take up an unfinished sign-in: its tokens, and its app's secret, are in the
        secret store."""
        config = ctx.load()
        renewing = {
            n: config.connections[n].tenant_id for n in pending.renewing if n in config.connections
        }
        secret = None
        if pending.kind.has_secret:
            secret = ctx.secrets_for(config).get_client_secret(pending.client_id)
        draft = clone_draft(pending, secret)
        return cls(ctx, draft, pending.name, renewing=renewing, pending=pending)

    def set_aside(self) -> None:
        """The app's details changed: the organisations listed no longer apply. What Xero
        issued stays kept until a new sign-in (or check) of this session replaces it."""
        self.outcome = None
        if self.phase is Phase.LISTED:
            self.phase = Phase.ISSUED

    @property
    def holds_tokens(self) -> bool:
        """Xero has issued tokens that are not saved as connections yet."""
        return self.phase in (Phase.ISSUED, Phase.LISTED)

    async def probe_storage(self) -> ProbeResult:
        """Whether what this sign-in gets can be kept, asked before anything is spent on it.

        The opt-in to the plain file for one command (`--insecure-storage`) is remembered in
        the config first, so that later commands without it find these secrets. Secrets saved
        in the keyring already are not split from the rest that way: the move to the file
        (which takes them along) is the way there.
        """
        # With a shared store the flag only says where this host keeps the store's key.
        if self.ctx.insecure_storage and await in_thread(self.ctx.shared_url) is None:
            await in_thread(self._remember_file_storage)
        return await probe_storage(self.ctx)

    def _remember_file_storage(self) -> None:
        """Blocking: see `probe_storage`."""

        def change(config: Config) -> None:
            if config.secret_storage == "file":
                return
            kept = len(config.connections) + len(config.pending)
            if kept:
                plural = "s" if kept != 1 else ""
                raise StorageError(
                    f"{self.ctx.paths.config_file} keeps the secrets of {kept} connection{plural} "
                    "or sign-in in the keyring, so --insecure-storage would split them from this "
                    "one: sign in without it, or move them all to the plain file first (f on "
                    "the app's sign-in screen)."
                )
            config.secret_storage = "file"

        self.ctx.store.update(change)

    # Getting tokens ----------------------------------------------------------------------------

    async def begin_consent(
        self,
        *,
        timeout: float = 300.0,
        allow_launch: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> ConsentAttempt:
        """Bind the listener, build the URL and (where it makes sense) open the browser."""
        return await consent.begin_consent(
            self.ctx.endpoints, self.draft, timeout=timeout, allow_launch=allow_launch, env=env
        )

    async def complete_consent(
        self, attempt: ConsentAttempt, result: CallbackResult
    ) -> ConsentOutcome:
        """Exchange the code, keep the tokens, then tell the browser and list the organisations.

        The page is answered but not waited for: the caller closes the attempt, and can let the
        browser hang up in the background while it shows the organisations.
        """
        request = attempt.request
        draft = self.draft

        async def exchange() -> None:
            async with self.ctx.client() as xero:
                tokens = await xero.exchange_code(
                    request.client_id,
                    draft.client_secret,
                    result.code,
                    request.redirect_uri,
                    request.code_verifier,
                )
            await self._keep(tokens, new_grant=True)

        try:
            await settle(exchange())
        except XeroTuiError as exc:
            attempt.listener.answer(False, str(exc))
            raise
        except BaseException:
            attempt.listener.answer(False, "xero-tui stopped before finishing.")
            raise
        attempt.listener.answer(True, "Connected to Xero.")
        return await self.organisations()

    async def check_refresh_token(self, refresh_token: str) -> ConsentOutcome:
        """A refresh token from another tool, proved by using it: Xero rotates it, and the new
        one is kept at once, since the pasted one stops working 30 minutes later."""
        draft = self.draft

        async def use() -> None:
            async with self.ctx.client() as xero:
                tokens = await xero.refresh(draft.client_id, draft.client_secret, refresh_token)
            await self._keep(tokens, new_grant=True)

        await settle(use())
        return await self.organisations()

    async def client_credentials(self) -> ConsentOutcome:
        """A custom connection's token and organisation; nothing to keep ahead: the secret
        fetches another at any time."""
        draft = self.draft
        if not draft.client_secret:
            raise UsageError("A custom connection needs its client secret.")
        async with self.ctx.client() as xero:
            tokens = await xero.client_credentials(
                draft.client_id, draft.client_secret, draft.scopes
            )
            self.tokens = tokens
            self.phase = Phase.ISSUED
            tenants = await xero.connections(tokens.access_token)
        self.outcome = ConsentOutcome(
            tokens, tuple(tenants), frozenset(t.tenant_id for t in tenants)
        )
        self.phase = Phase.LISTED
        return self.outcome

    async def organisations(self) -> ConsentOutcome:
        """What the kept tokens reach, this consent's first; again after a failure, or on
        resuming (renewing an access token that has expired meanwhile)."""
        tokens = await self._usable_tokens()
        event = self.pending.auth_event_id if self.pending is not None else None
        async with self.ctx.client() as xero:
            outcome = await consent.list_organisations(xero, tokens, event)
        self.outcome = outcome
        self.phase = Phase.LISTED
        return outcome

    async def _keep(self, tokens: TokenSet, *, new_grant: bool) -> None:
        """Write Xero's answer ahead of everything else (see the module)."""
        self.tokens = tokens
        self.phase = Phase.ISSUED
        if self.draft.kind is Kind.CUSTOM:
            return
        before = self.pending
        event = consent.auth_event_id(tokens)
        if before is not None and not new_grant:
            pending = replace(before, issued=now_utc(), auth_event_id=event or before.auth_event_id)
        else:
            pending = PendingSignIn(
                grant_id=uuid.uuid4().hex,
                name=self.name,
                kind=self.draft.kind,
                client_id=self.draft.client_id,
                redirect_uri=self.draft.redirect_uri,
                scopes=tokens.scopes or self.draft.scopes,
                issued=now_utc(),
                pkce=self.draft.pkce,
                auth_event_id=event,
                renewing=tuple(self.renewing),
            )
        superseded = before.grant_id if before is not None and new_grant else None
        await in_thread(self._write_pending, pending, tokens, superseded)
        self.pending = pending

    def _write_pending(
        self, pending: PendingSignIn, tokens: TokenSet, superseded: str | None
    ) -> None:
        """Blocking. The tokens (read back), the client secret, then the config's record.

        A sign-in made again from the same form supersedes the one before: that one's tokens
        are dropped here, not revoked, since revoking them could disconnect the organisations
        the new sign-in just granted.
        """
        secrets = self.ctx.secrets
        secrets.put_tokens(pending.grant_id, tokens)
        if self.draft.client_secret is not None:
            secrets.put_client_secret(self.draft.client_id, self.draft.client_secret)

        def change(config: Config) -> None:
            if superseded is not None:
                config.pending.pop(superseded, None)
            config.pending[pending.grant_id] = pending

        try:
            self.ctx.store.update(change)
        except XeroTuiError as exc:
            raise StorageError(
                f"{exc} Xero's tokens are kept in {secrets.description}, and the form (or this "
                "command) still holds them: save once the config can be written."
            ) from None
        if superseded is not None:
            secrets.delete_tokens(superseded)

    async def _usable_tokens(self) -> TokenSet:
        tokens = self.tokens
        pending = self.pending
        if pending is None:
            if tokens is None:
                raise UsageError("Sign in first: there are no tokens to list organisations with.")
            return tokens
        if tokens is not None and tokens.is_fresh():
            return tokens
        lock, current, secret = await in_thread(self._lock_pending, pending)
        try:
            if current.is_fresh():
                self.tokens = current
                return current
            if current.refresh_token is None:
                raise StorageError(
                    f"The unfinished sign-in {pending.name!r} has no refresh token; sign in again."
                )
            refresh_token = current.refresh_token
            client_secret = self.draft.client_secret or secret

            async def renew() -> None:
                async with self.ctx.client() as xero:
                    fresh = await xero.refresh(pending.client_id, client_secret, refresh_token)
                await self._keep(fresh, new_grant=False)

            await settle(renew())
        finally:
            lock.release()
        assert self.tokens is not None
        return self.tokens

    def _lock_pending(self, pending: PendingSignIn) -> tuple[GrantLock, TokenSet, str | None]:
        """Blocking. The pending grant's lock, held, with its stored tokens and client secret."""
        lock = self.ctx.acquire_grant_lock(
            pending.grant_id, lambda: f"the unfinished sign-in {pending.name!r}"
        )
        try:
            client_id = pending.client_id if pending.kind.has_secret else None
            current, secret = self.ctx.secrets.get_tokens_and_secret(pending.grant_id, client_id)
            if current is None:
                raise StorageError(
                    f"The tokens of the unfinished sign-in {pending.name!r} are missing from "
                    f"{self.ctx.secrets.description}; sign in again."
                )
        except BaseException:
            lock.release()
            raise
        return lock, current, secret

    # Choosing and saving -----------------------------------------------------------------------

    def _listed(self) -> ConsentOutcome:
        if self.outcome is None:
            raise UsageError("Sign in first: the organisations are not known yet.")
        return self.outcome

    def renewed(self) -> list[tuple[str, Tenant]]:
        """Which saved connection each organisation of this sign-in replaces in a reconnect."""
        by_id = {t.tenant_id: t for t in self._listed().tenants}
        return [(n, by_id[tid]) for n, tid in self.renewing.items() if tid in by_id]

    def preselect(self, wanted: Sequence[str] = ()) -> Preselection:
        """The organisations to save without asking: a reconnect's own, the ones `wanted` names
        (ids or names), else the ones this consent granted, else the only one there is."""
        tenants = self._listed().ordered()
        if not tenants:
            raise UsageError("Xero lists no organisations for this app; nothing to save.")
        if self.renewing:
            pairs = self.renewed()
            if not pairs:
                raise UsageError(
                    f"This sign-in did not include the organisation of {self.name!r}; choose it "
                    "on Xero's page and sign in again."
                )
            return Preselection(tuple(t for _, t in pairs))
        if wanted:
            picked: list[Tenant] = []
            unknown = []
            for want in wanted:
                match = [
                    t
                    for t in tenants
                    if t.tenant_id == want or t.tenant_name.casefold() == want.casefold()
                ]
                if match:
                    picked.append(match[0])
                else:
                    unknown.append(want)
            if unknown:
                return Preselection((), tuple(unknown))
            return Preselection(tuple(dict.fromkeys(picked)))
        outcome = self._listed()
        new = [t for t in tenants if t.tenant_id in outcome.new_tenant_ids]
        if not new and len(tenants) == 1:
            new = tenants
        return Preselection(tuple(new))

    def names_for(
        self, chosen: Sequence[Tenant], name: str | None = None, taken: Collection[str] = ()
    ) -> list[tuple[str, Tenant]]:
        """The connection each chosen organisation becomes (a reconnect keeps its names)."""
        if self.renewing:
            ids = {t.tenant_id for t in chosen}
            return [(n, t) for n, t in self.renewed() if t.tenant_id in ids]
        replaceable = set(self.renewing)
        return connection_names(
            name or self.name, chosen, [n for n in taken if n not in replaceable]
        )

    def save(self, chosen: Sequence[Tenant], name: str | None = None) -> list[Connection]:
        """Blocking. One connection per chosen organisation, on the kept sign-in's grant.

        `name` replaces the session's (the form's field may have changed since). A plain name
        that another process has saved meanwhile is refused; the sign-in stays pending.
        """
        outcome = self._listed()
        if self.phase is Phase.SAVED:
            raise UsageError("This sign-in is saved already.")
        if not chosen:
            raise UsageError("Choose at least one organisation.")
        name = check_name(name or self.name)
        pending = self.pending
        grant_id = pending.grant_id if pending is not None else uuid.uuid4().hex
        issued = pending.issued if pending is not None else now_utc()
        draft = self.draft
        secrets = self.ctx.secrets
        if pending is None:
            # A custom connection, or a write-ahead the config refused: stored only now.
            if draft.client_secret is not None:
                secrets.put_client_secret(draft.client_id, draft.client_secret)
            secrets.put_tokens(grant_id, outcome.tokens)
        scopes = outcome.tokens.scopes or draft.scopes
        grant = Grant(
            grant_id=grant_id,
            kind=draft.kind,
            client_id=draft.client_id,
            scopes=scopes,
            created=issued,
            last_refreshed=issued,
            auth_event_id=outcome.auth_event_id
            or (pending.auth_event_id if pending is not None else None),
        )
        saved: list[Connection] = []
        orphans: list[str] = []

        def change(config: Config) -> None:
            replaceable = set(self.renewing)
            pairs = self.names_for(chosen, name, config.connections)
            if not pairs:
                raise UsageError(f"None of the chosen organisations belongs to {name!r}.")
            clash = [n for n, _ in pairs if n in config.connections and n not in replaceable]
            if clash:
                raise UsageError(
                    f"A connection named {clash[0]!r} already exists; choose another name."
                )
            config.pending.pop(grant_id, None)
            config.grants[grant_id] = grant
            saved.clear()
            for conn_name, tenant in pairs:
                old = config.connections.get(conn_name)
                conn = Connection(
                    name=conn_name,
                    kind=draft.kind,
                    client_id=draft.client_id,
                    tenant_id=tenant.tenant_id,
                    tenant_name=clean_text(tenant.tenant_name, 1000),
                    tenant_type=tenant.tenant_type,
                    connection_id=tenant.connection_id,
                    grant_id=grant_id,
                    redirect_uri=draft.redirect_uri,
                    scopes=scopes,
                    created=old.created if old is not None else issued,
                    last_refreshed=issued,
                    pkce=draft.pkce,
                )
                config.connections[conn_name] = conn
                saved.append(conn)
            orphans.extend(drop_unused_grants(config))

        try:
            self.ctx.store.update(change)
        except BaseException:
            if pending is None:
                secrets.delete_tokens(grant_id)
            raise
        for orphan in orphans:
            secrets.delete_tokens(orphan)
        self.phase = Phase.SAVED
        self.pending = None
        self.saved = saved
        return saved

    async def discard(self, *, revoke: bool = True) -> str:
        """Drop the kept sign-in (revoking it at Xero unless told not to); a sentence."""
        pending = self.pending
        self.phase = Phase.DISCARDED
        self.outcome = None
        self.tokens = None
        if pending is None:
            return "Nothing was kept, so nothing is left to discard."
        self.pending = None
        return await discard(self.ctx, pending, revoke=revoke)


async def discard(ctx: Context, pending: PendingSignIn, *, revoke: bool = True) -> str:
    """Forget an unfinished sign-in and, with `revoke`, revoke its grant at Xero (no saved
    connection uses it). What happened, as a sentence."""

    def read() -> tuple[TokenSet | None, str | None]:
        client_id = pending.client_id if pending.kind.has_secret else None
        return ctx.secrets.get_tokens_and_secret(pending.grant_id, client_id)

    said = f"Discarded the unfinished sign-in {pending.name!r}"
    problem = None
    if revoke:
        try:
            tokens, secret = await in_thread(read)
            if tokens is not None and tokens.refresh_token:
                async with ctx.client() as xero:
                    await xero.revoke(pending.client_id, secret, tokens.refresh_token)
                said += " and revoked it at Xero"
        except XeroTuiError as exc:
            problem = clean_text(str(exc), 300).rstrip(".")
    await in_thread(forget_pending, ctx, pending.grant_id)
    if problem is not None:
        return f"{said}; it could not be revoked at Xero ({problem})."
    return said + "."


def forget_pending(ctx: Context, grant_id: str) -> None:
    """Blocking. Drop an unfinished sign-in's record, its tokens and an app secret left unused."""
    dropped: list[PendingSignIn] = []

    def change(config: Config) -> Config:
        gone = config.pending.pop(grant_id, None)
        if gone is not None:
            dropped.append(gone)
        return config

    remaining = ctx.store.update(change)
    secrets = ctx.secrets_for(remaining)
    secrets.delete_tokens(grant_id)
    for gone in dropped:
        if gone.kind.has_secret and not app_in_use(remaining, gone.client_id):
            secrets.delete_client_secret(gone.client_id)
