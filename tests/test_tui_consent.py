"""The consent screen against the emulator: browser, paste-back, SSH, cancel, errors, keyring."""

from __future__ import annotations

import asyncio
import shlex
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest
from keyring.backends import fail
from textual import events
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import Input, Static

from tests.support.net import free_port, port_is_free
from tests.support.saved import WEB_ID, save_offline
from tests.support.tui import (
    ConsentApp,
    consent,
    consent_screen,
    no_display_env,
    until_dismissed,
    until_phase,
    wait_for,
)
from xero_tui.core import browser
from xero_tui.core.browser import LAUNCH_FAILED, OPENED, SSH_SESSION, LaunchPlan
from xero_tui.core.connect import ConnectSession
from xero_tui.core.consent import ConnectionDraft, ConsentAttempt, ConsentOutcome
from xero_tui.core.errors import ConsentCancelled, OAuthError
from xero_tui.core.loopback import CallbackListener, CallbackResult
from xero_tui.core.models import Kind, default_scopes
from xero_tui.core.oauth import AuthRequest
from xero_tui.core.paths import Paths
from xero_tui.core.secrets import ProbeResult, probe_keyring
from xero_tui.core.service import Service
from xero_tui.demo import DemoContext
from xero_tui.emulator import Emulator
from xero_tui.emulator.consent import ConsentError, answer_consent
from xero_tui.screens.consent import ConsentScreen

ROOT = Path(__file__).resolve().parent.parent
BROWSER_SCRIPT = (
    f"{shlex.quote(sys.executable)} {shlex.quote(str(ROOT / 'tests/support/browser_script.py'))} %s"
)


def python_browser(code: str) -> str:
    """A BROWSER value that runs `code` with this interpreter (the URL is its argv[1])."""
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} %s"


def web_draft(emu: Emulator) -> ConnectionDraft:
    """The demo web app with a redirect URI on a free port, registered with the emulator."""
    client = emu.web_client
    redirect = f"http://localhost:{free_port()}/callback"
    emu.register_client(client.client_id, client.client_secret, client.kind, (redirect,))
    return ConnectionDraft(
        kind=Kind.WEB,
        client_id=client.client_id,
        client_secret=client.client_secret,
        redirect_uri=redirect,
        scopes=default_scopes(Kind.WEB),
    )


class PhaseRecorder(ConsentScreen):
    """Keeps every phase and status line, however briefly each was shown."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[str] = []
        self.statuses: list[str] = []

    def watch_phase(self, phase: str) -> None:
        self.seen.append(phase)
        super().watch_phase(phase)

    def _status(self, text: str) -> None:
        self.statuses.append(text)
        super()._status(text)


def text_of(app: App[None], selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def test_browser_completes_consent_and_dismisses_with_the_outcome(
    emulator: Emulator,
) -> None:
    draft = web_draft(emulator)
    env = no_display_env(BROWSER=BROWSER_SCRIPT)
    app = ConsentApp(lambda: consent_screen(Service(), draft, env=env))
    async with app.run_test(size=(80, 24)) as pilot:
        result = await until_dismissed(pilot)
        assert isinstance(result, ConsentOutcome)
        names = sorted(t.tenant_name for t in result.tenants)
        assert names and result.new_tenant_ids
        await app.workers.wait_for_complete()
    port = int(draft.redirect_uri.split(":")[2].split("/")[0])
    assert port_is_free(port)


async def test_launched_browser_is_reported_and_the_screen_never_shows_tokens(
    emulator: Emulator,
) -> None:
    draft = web_draft(emulator)
    # A browser that opens nothing and exits: the screen must still be waiting, URL shown.
    env = no_display_env(BROWSER=python_browser("pass"))
    app = ConsentApp(lambda: consent_screen(Service(), draft, screen=PhaseRecorder, env=env))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await until_phase(pilot, "waiting")
        assert isinstance(screen, PhaseRecorder)
        attempt = screen.attempt
        assert attempt is not None and attempt.launched
        assert text_of(app, "#consent-browser") == OPENED
        assert attempt.url in text_of(app, "#consent-url").replace("\n", "")
        # No paste field when the browser runs here; the listener does the work.
        assert not screen.query_one("#consent-paste").display
        redirect = await asyncio.to_thread(answer_consent, attempt.url)
        attempt.submit_pasted_url(redirect)
        result = await until_dismissed(pilot)
        assert screen.seen == ["starting", "waiting", "exchanging"]
        assert "Exchanging the code" in screen.statuses[-1]
        assert isinstance(result, ConsentOutcome)
        assert result.tokens.access_token not in app.export_screenshot()
        await app.workers.wait_for_complete()


async def test_a_browser_that_would_not_start_is_said_once_with_the_attempts_note(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    draft = web_draft(emulator)
    monkeypatch.setattr(browser, "launch", lambda plan, url: False)
    env = no_display_env(BROWSER=python_browser("pass"))
    app = ConsentApp(lambda: consent_screen(Service(), draft, env=env))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await until_phase(pilot, "waiting")
        attempt = screen.attempt
        assert attempt is not None and attempt.launch_tried and not attempt.launched
        assert text_of(app, "#consent-browser") == attempt.browser_note == LAUNCH_FAILED
        assert screen.query_one("#consent-paste").display
        await pilot.press("escape")
        await app.workers.wait_for_complete()


async def test_pasted_redirect_url_completes_consent(emulator: Emulator) -> None:
    draft = web_draft(emulator)
    app = ConsentApp(lambda: consent_screen(Service(), draft, env=no_display_env()))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await until_phase(pilot, "waiting")
        attempt = screen.attempt
        assert attempt is not None and not attempt.launched
        assert "no graphical display" in text_of(app, "#consent-browser")
        assert not screen.query_one("#consent-ssh").display
        # Keyboard only: p reaches the field; a wrong address is explained and waiting goes on.
        await pilot.press("p")
        field = screen.query_one("#consent-paste-input", Input)
        assert app.focused is field
        await pilot.press(*"http://localhost:1/x", "enter")
        assert "not " + draft.redirect_uri in text_of(app, "#consent-paste-error")
        assert screen.phase == "waiting"
        # The real redirect, as the browser's address bar shows it, pasted into the field.
        redirect = await asyncio.to_thread(answer_consent, attempt.url, follow_redirect=False)
        assert redirect.startswith(draft.redirect_uri + "?")
        field.value = ""
        app.post_message(events.Paste(redirect))
        await pilot.pause()
        assert field.value == redirect
        await pilot.press("enter")
        result = await until_dismissed(pilot)
        assert isinstance(result, ConsentOutcome)
        await app.workers.wait_for_complete()


async def test_a_paste_anywhere_goes_to_the_field_and_is_submitted(emulator: Emulator) -> None:
    draft = web_draft(emulator)
    app = ConsentApp(lambda: consent_screen(Service(), draft, env=no_display_env()))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await until_phase(pilot, "waiting")
        assert screen.attempt is not None
        assert not isinstance(app.focused, Input)
        redirect = await asyncio.to_thread(answer_consent, screen.attempt.url)
        app.post_message(events.Paste(redirect))
        result = await until_dismissed(pilot)
        assert isinstance(result, ConsentOutcome)
        await app.workers.wait_for_complete()


async def test_over_ssh_nothing_is_launched_and_the_ssh_line_is_exact(
    emulator: Emulator, tmp_path: Path
) -> None:
    draft = web_draft(emulator)
    marker = tmp_path / "browser-ran"
    env = no_display_env(
        SSH_CONNECTION="198.51.100.7 52100 203.0.113.10 2222",
        USER="deploy",
        DISPLAY=":0",
        BROWSER=python_browser(f"open({str(marker)!r}, 'w').close()"),
    )
    app = ConsentApp(lambda: consent_screen(Service(), draft, env=env))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await until_phase(pilot, "waiting")
        attempt = screen.attempt
        assert attempt is not None and not attempt.launched
        port = attempt.port
        expected = f"ssh -p 2222 -L {port}:localhost:{port} deploy@203.0.113.10"
        assert attempt.ssh_command == expected
        assert text_of(app, "#consent-ssh-line") == expected
        assert text_of(app, "#consent-ssh-port") == (
            f"Port {port} must be free on your own computer: the browser goes to exactly "
            f"localhost:{port}."
        )
        assert text_of(app, "#consent-browser") == SSH_SESSION
        assert screen.query_one("#consent-paste").display
        # Copy keys put the exact values on the clipboard (OSC 52 in a real terminal).
        await pilot.press("s")
        assert app.clipboard == expected
        await pilot.press("c")
        assert app.clipboard == attempt.url
        # The tunnel delivers the browser's redirect to the listener, which is live meanwhile.
        await asyncio.to_thread(answer_consent, attempt.url, follow_redirect=True)
        result = await until_dismissed(pilot)
        assert isinstance(result, ConsentOutcome)
        await app.workers.wait_for_complete()
    await asyncio.sleep(0.3)
    assert not marker.exists()


async def test_escape_cancels_and_frees_the_port_at_once(emulator: Emulator) -> None:
    draft = web_draft(emulator)
    app = ConsentApp(lambda: consent_screen(Service(), draft, env=no_display_env()))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await until_phase(pilot, "waiting")
        assert screen.attempt is not None
        port = screen.attempt.port
        assert not port_is_free(port)
        await pilot.press("escape")
        assert port_is_free(port)
        assert app.result is None
        await app.workers.wait_for_complete()


async def test_access_denied_says_you_cancelled_and_r_starts_a_fresh_attempt(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    draft = web_draft(emulator)
    monkeypatch.setenv("XERO_TUI_TEST_CONSENT", "cancel")
    env = no_display_env(BROWSER=BROWSER_SCRIPT)
    app = ConsentApp(lambda: consent_screen(Service(), draft, env=env))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await until_phase(pilot, "error")
        status = text_of(app, "#consent-status")
        assert "You cancelled in Xero" in status
        assert "Press r to try again" in text_of(app, "#consent-next")
        assert screen.attempt is None
        assert "r" in app.active_bindings
        monkeypatch.setenv("XERO_TUI_TEST_CONSENT", "allow")
        await pilot.press("r")
        result = await until_dismissed(pilot)
        assert isinstance(result, ConsentOutcome)
        await app.workers.wait_for_complete()


async def test_xero_error_codes_become_sentences_that_say_what_to_do(
    emulator: Emulator,
) -> None:
    draft = web_draft(emulator)
    app = ConsentApp(lambda: consent_screen(Service(), draft, env=no_display_env()))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await until_phase(pilot, "waiting")
        assert screen.attempt is not None
        state = screen.attempt.request.state
        screen.submit_pasted(
            f"{draft.redirect_uri}?error=invalid_scope&error_description=bad+scope&state={state}"
        )
        await until_phase(pilot, "error")
        status = text_of(app, "#consent-status")
        assert "legacy scopes" in status and "Xero said: bad scope" in status
        await pilot.press("r")
        screen = await until_phase(pilot, "waiting")
        assert screen.attempt is not None
        state = screen.attempt.request.state
        screen.submit_pasted(f"{draft.redirect_uri}?error=unauthorized_client&state={state}")
        await until_phase(pilot, "error")
        assert "Check the app type" in text_of(app, "#consent-status")
        await app.workers.wait_for_complete()


async def test_timeout_says_so_and_reminds_about_the_redirect_uri(emulator: Emulator) -> None:
    draft = web_draft(emulator)
    app = ConsentApp(
        lambda: consent_screen(
            Service(),
            draft,
            screen=PhaseRecorder,
            env=no_display_env(),
            clock=lambda: 0.0,
            timeout=1.0,
        )
    )
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await until_phase(pilot, "error")
        assert isinstance(screen, PhaseRecorder)
        assert screen.seen == ["starting", "waiting", "error"]
        status = text_of(app, "#consent-status")
        assert "Timed out" in status
        assert f"add exactly {draft.redirect_uri}" in status
        assert screen.query_one("#consent-dialog").border_subtitle == ""
        await app.workers.wait_for_complete()


async def test_countdown_follows_the_clock_and_the_redirect_hint_appears(
    emulator: Emulator,
) -> None:
    draft = web_draft(emulator)
    now = [1000.0]
    app = ConsentApp(
        lambda: consent_screen(Service(), draft, env=no_display_env(), clock=lambda: now[0])
    )
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await until_phase(pilot, "waiting")
        dialog = screen.query_one("#consent-dialog")
        assert dialog.border_subtitle == "Waiting for Xero: 5:00 left"
        assert not screen.query_one("#consent-hint").display
        now[0] += 61
        await wait_for(pilot, lambda: dialog.border_subtitle == "Waiting for Xero: 3:59 left")
        assert screen.query_one("#consent-hint").display
        assert "Invalid redirect_uri" in text_of(app, "#consent-hint")
        await pilot.press("escape")
        await app.workers.wait_for_complete()


async def test_port_in_use_is_explained_and_r_retries(emulator: Emulator) -> None:
    draft = web_draft(emulator)
    port = int(draft.redirect_uri.split(":")[2].split("/")[0])
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    app = ConsentApp(lambda: consent_screen(Service(), draft, env=no_display_env()))
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await until_phase(pilot, "error")
            assert f"Port {port} is in use" in text_of(app, "#consent-status")
            blocker.close()
            await pilot.press("r")
            await until_phase(pilot, "waiting")
            await pilot.press("escape")
            await app.workers.wait_for_complete()
    finally:
        blocker.close()


@pytest.mark.usefixtures("failing_keyring")
async def test_unusable_keyring_shows_the_choices_before_anything_else(
    emulator: Emulator,
) -> None:
    draft = web_draft(emulator)
    port = int(draft.redirect_uri.split(":")[2].split("/")[0])
    service = Service()
    app = ConsentApp(lambda: consent_screen(service, draft, env=no_display_env()))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await until_phase(pilot, "storage")
        choices = " ".join(
            str(part.render()) for part in app.screen.query("#consent-storage Static")
        )
        assert "No keyring is available: no Secret Service runs here" in choices
        # The choices below say the ways on; the problem above them does not repeat them.
        assert "To go on" not in choices
        assert "Start or unlock the keyring" in choices
        assert "mode 0600" in choices and str(service.paths.secrets_file) in choices
        assert "esc" in choices
        # Nothing was started: no URL, no listener.
        assert screen.attempt is None and port_is_free(port)
        assert {"r", "f", "escape"} <= set(app.active_bindings)
        assert "c" not in app.active_bindings
        await pilot.press("r")
        await until_phase(pilot, "storage")
        await pilot.press("f")
        await until_phase(pilot, "waiting")
        assert service.uses_file_storage()
        await pilot.press("escape")
        await app.workers.wait_for_complete()


@pytest.mark.usefixtures("failing_keyring")
async def test_switching_to_a_file_says_which_saved_connections_it_could_not_move(
    emulator: Emulator,
) -> None:
    from tests.support.keyring_faults import MemoryKeyring
    from xero_tui.core.secrets import KeyringStore

    # Saved while the keyring worked; now it has none to give.
    save_offline(
        Service(secrets=KeyringStore(backend=MemoryKeyring())), "web", Kind.WEB, WEB_ID, "t1"
    )
    draft = web_draft(emulator)
    service = Service()
    app = ConsentApp(lambda: consent_screen(service, draft, env=no_display_env(SSH_CONNECTION="x")))
    async with app.run_test(size=(80, 24)) as pilot:
        await until_phase(pilot, "storage")
        await pilot.press("f")
        screen = await until_phase(pilot, "waiting")
        line = screen.query_one("#consent-moved", Static)
        said = text_of(app, "#consent-moved")
        assert "Reconnect 'web'" in said and "No keyring is available" in said
        assert "To go on" not in said
        # Seen beside the sign-in, whole, on an 80x24 terminal.
        assert line.display and line.region.height >= 1 and line.region.bottom <= 24
        assert screen.query_one("#consent-url").region.height >= 1
        await pilot.press("escape")
        await app.workers.wait_for_complete()
    assert service.connection("web").status.value == "needs_reconnect"


async def test_keys_stay_responsive_while_the_browser_command_sleeps(
    emulator: Emulator,
) -> None:
    draft = web_draft(emulator)
    env = no_display_env(BROWSER=python_browser("import time; time.sleep(10)"))
    app = ConsentApp(lambda: consent_screen(Service(), draft, env=env))
    async with app.run_test(size=(80, 24)) as pilot:
        started = time.monotonic()
        screen = await until_phase(pilot, "waiting")
        assert screen.attempt is not None and screen.attempt.launched
        await pilot.press("c")
        assert app.clipboard == screen.attempt.url
        await pilot.press("escape")
        assert app.result is None
        # Well under the browser's 10 s: nothing waited for it.
        assert time.monotonic() - started < 8.0
        await app.workers.wait_for_complete()


class EmulatorDemo:
    """What the demo's approve does: press Allow on the emulator's page and follow the redirect."""

    def __init__(self) -> None:
        self.approved: list[str] = []

    def approve(self, url: str) -> None:
        self.approved.append(url)
        answer_consent(url, follow_redirect=True)


async def test_demo_key_approves_in_the_background(emulator: Emulator) -> None:
    draft = web_draft(emulator)
    demo = EmulatorDemo()
    app = ConsentApp(
        lambda: consent_screen(Service(), draft, demo=cast(DemoContext, demo), env=no_display_env())
    )
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await until_phase(pilot, "waiting")
        assert "a" in app.active_bindings
        await pilot.press("a")
        result = await until_dismissed(pilot)
        assert isinstance(result, ConsentOutcome)
        assert demo.approved and screen.attempt is None
        await app.workers.wait_for_complete()


class FailingDemo:
    """A demo whose approve fails the way `failure` says."""

    def __init__(self, failure: Exception) -> None:
        self.failure = failure

    def approve(self, url: str) -> None:
        raise self.failure


@pytest.mark.parametrize(
    ("failure", "sentence"),
    [
        (
            ConsentError("Error: unauthorized_client : Invalid redirect_uri"),
            "The demo could not approve: Error: unauthorized_client : Invalid redirect_uri",
        ),
        (
            RuntimeError("token=secret-value"),
            "The demo could not approve: Unexpected RuntimeError; rerun with XERO_TUI_DEBUG=1 "
            "to see why.",
        ),
    ],
)
async def test_a_failed_demo_approve_says_why_in_a_sentence(
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
    sentence: str,
) -> None:
    monkeypatch.delenv("XERO_TUI_DEBUG", raising=False)
    draft = web_draft(emulator)
    demo = FailingDemo(failure)
    app = ConsentApp(
        lambda: consent_screen(Service(), draft, demo=cast(DemoContext, demo), env=no_display_env())
    )
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await until_phase(pilot, "waiting")
        await pilot.press("a")
        await wait_for(pilot, lambda: bool(app._notifications))
        [note] = list(app._notifications)
        assert note.message == sentence and note.severity == "error"
        assert screen.phase == "waiting"
        await pilot.press("escape")
        await app.workers.wait_for_complete()


async def test_a_failed_demo_approve_is_shown_as_plain_text(emulator: Emulator) -> None:
    draft = web_draft(emulator)
    demo = FailingDemo(ConsentError("Invalid [b]redirect_uri[/b]\x1b[31m here"))
    app = ConsentApp(
        lambda: consent_screen(Service(), draft, demo=cast(DemoContext, demo), env=no_display_env())
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until_phase(pilot, "waiting")
        await pilot.press("a")
        await wait_for(pilot, lambda: bool(app._notifications))
        [note] = list(app._notifications)
        assert note.message == "The demo could not approve: Invalid [b]redirect_uri[/b] here"
        assert note.markup is False
        await pilot.press("escape")
        await app.workers.wait_for_complete()


def test_a_redirect_that_cannot_be_opened_is_named_without_its_code_or_state(
    emulator: Emulator,
) -> None:
    from xero_tui.core.endpoints import Endpoints
    from xero_tui.core.oauth import build_auth_request

    draft = web_draft(emulator)  # nothing listens on its redirect port
    request = build_auth_request(
        Endpoints.from_env(), draft.client_id, draft.redirect_uri, draft.scopes
    )
    with pytest.raises(ConsentError) as failed:
        answer_consent(request.url, follow_redirect=True)
    message = failed.value.message
    assert f"could not open the redirect to {draft.redirect_uri}:" in message
    assert "code=" not in message and request.state not in message


async def test_the_demo_key_is_hidden_outside_demo_mode(emulator: Emulator) -> None:
    draft = web_draft(emulator)
    app = ConsentApp(lambda: consent_screen(Service(), draft, env=no_display_env()))
    async with app.run_test(size=(80, 24)) as pilot:
        await until_phase(pilot, "waiting")
        assert "a" not in app.active_bindings
        await pilot.press("a")
        assert consent(app).phase == "waiting"
        await pilot.press("escape")
        await app.workers.wait_for_complete()


# Snapshots: a frozen attempt, so the URL (with its random state), port and clock are fixed --------

FROZEN_REDIRECT = "http://localhost:8719/callback"
FROZEN_CLIENT_ID = "0123456789ABCDEF0123456789ABCDEF"
FROZEN_STATE = "snapshot-state-not-random-0123456789abcdefg"
FROZEN_URL = (
    "https://login.xero.com/identity/connect/authorize?response_type=code"
    f"&client_id={FROZEN_CLIENT_ID}"
    "&redirect_uri=http%3A%2F%2Flocalhost%3A8719%2Fcallback"
    "&scope=" + "%20".join(default_scopes(Kind.WEB)) + f"&state={FROZEN_STATE}"
    "&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"
)
FROZEN_SSH = "ssh -p 2222 -L 8719:localhost:8719 deploy@203.0.113.10"


class FrozenAttempt(ConsentAttempt):
    """The real attempt with a fixed URL and port. Its listener is never bound (the port may be
    in use on this machine) and its time does not run; it waits until cancelled, or fails."""

    def __init__(self, failure: Exception | None = None) -> None:
        request = AuthRequest(
            FROZEN_CLIENT_ID,
            FROZEN_REDIRECT,
            default_scopes(Kind.WEB),
            FROZEN_STATE,
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            FROZEN_URL,
        )
        listener = CallbackListener(FROZEN_REDIRECT, FROZEN_STATE)
        # Not bound, yet waiting for its answer as a started one does: a pasted URL is then
        # judged by the listener's own rules.
        listener._outcome = asyncio.get_running_loop().create_future()
        super().__init__(request, listener, LaunchPlan(False, None, SSH_SESSION), FROZEN_SSH)
        self.failure = failure
        self.ended = asyncio.Event()

    def remaining(self) -> float:
        return self.listener.timeout

    async def wait(self) -> CallbackResult:
        if self.failure is not None:
            raise self.failure
        await self.ended.wait()
        raise ConsentCancelled("Cancelled; no connection was made.")

    def cancel(self) -> None:
        super().cancel()
        self.ended.set()

    async def close(self) -> None:
        await super().close()
        self.ended.set()


class FrozenSession(ConnectSession):
    """The real connect session, with a fixed probe answer and the frozen attempt."""

    def __init__(
        self,
        service: Service,
        draft: ConnectionDraft,
        probe: ProbeResult,
        failure: Exception | None = None,
    ) -> None:
        super().__init__(service, draft, "Snapshot")
        self.probe = probe
        self.failure = failure

    async def probe_storage(self) -> ProbeResult:
        return self.probe

    async def begin_consent(self, **_: Any) -> ConsentAttempt:
        return FrozenAttempt(self.failure)


def frozen_app(probe_ok: bool = True, failure: Exception | None = None) -> ConsentApp:
    probe = (
        ProbeResult(True, "test keyring", "Secrets will be kept in the keyring.")
        if probe_ok
        else probe_keyring(backend=fail.Keyring())
    )
    # The real Service for a fixed home folder: the screen shows where the file store would be.
    service = Service(Paths(Path("/home/deploy/.config/xero-tui")))
    draft = ConnectionDraft(
        Kind.WEB,
        FROZEN_CLIENT_ID,
        None,
        FROZEN_REDIRECT,
        default_scopes(Kind.WEB),
    )
    session = FrozenSession(service, draft, probe, failure)
    return ConsentApp(lambda: ConsentScreen(service, session, clock=lambda: 0.0))


def settle_in(phase: str) -> Callable[[Pilot[None]], Awaitable[None]]:
    async def run_before(pilot: Pilot[None]) -> None:
        await until_phase(pilot, phase)
        for field in pilot.app.screen.query(Input):
            field.cursor_blink = False
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
def test_snapshot_waiting_over_ssh(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(frozen_app(), terminal_size=size, run_before=settle_in("waiting"))


def test_snapshot_paste_error_is_in_view_at_80x24(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await settle_in("waiting")(pilot)
        await pilot.press("p")
        for key in f"{FROZEN_REDIRECT}?code=abc":
            await pilot.press(key)
        await pilot.press("enter")
        await pilot.pause()
        error = pilot.app.screen.query_one("#consent-paste-error", Static)
        # In the picture, and not only in the widget tree below the fold.
        assert error.display and error.region.height > 0
        assert pilot.app.screen.query_one("#consent-dialog").region.contains_region(error.region)

    assert snap_compare(frozen_app(), terminal_size=(80, 24), run_before=run_before)


def test_snapshot_keyring_choices(snap_compare: Any) -> None:
    app = frozen_app(probe_ok=False)
    assert snap_compare(app, terminal_size=(80, 24), run_before=settle_in("storage"))


def test_snapshot_access_denied(snap_compare: Any) -> None:
    denied = OAuthError("You cancelled in Xero.", "access_denied")
    app = frozen_app(failure=denied)
    assert snap_compare(app, terminal_size=(80, 24), run_before=settle_in("error"))
