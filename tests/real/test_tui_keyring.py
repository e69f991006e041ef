"""The TUI (not the demo) saving into a real Secret Service, in tmux, driven only with keys.

The app talks to an emulator started by the test; the test plays the browser on the sign-in URL
that the app copied to the clipboard (OSC 52, caught by tmux). What the TUI saved is then read
back from gnome-keyring with the `keyring` API and with `secret-tool`. With the keyring locked,
the consent screen shows the choices before any sign-in, and the file store works from there.
"""

from __future__ import annotations

import json
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real.conftest import (
    SECRET_SERVICE_BACKEND,
    SecretServiceEnv,
    SessionBus,
    console_script,
    require,
    session_bus,
)
from tests.real.support import (
    APP_PORT,
    Tmux,
    keyring_lookup,
    read_config,
    secret_tool_lookup,
    terminal_env,
    wait_port_free,
)
from xero_tui.emulator import Emulator
from xero_tui.emulator.consent import answer_consent

pytestmark = pytest.mark.real

NAME = "Books"


def open_app(
    terminal: list[Tmux], tmp_path: Path, emulator: Emulator, bus_env: dict[str, str]
) -> Tmux:
    env = terminal_env(
        tmp_path, **emulator.env, **bus_env, PYTHON_KEYRING_BACKEND=SECRET_SERVICE_BACKEND
    )
    env.pop("XERO_TUI_TEST_KEYRING")
    wait_port_free(APP_PORT)
    tmux = Tmux(tmp_path / "tmux", 100, 30, env)
    terminal.append(tmux)
    tmux.start([str(console_script())])
    tmux.wait_for("Xero endpoints overridden", "Xero connections", "No connections yet.", "n New")
    return tmux


def fill_form(tmux: Tmux, emulator: Emulator) -> None:
    """Type the app's details into the form, one field at a time, as a person would."""
    client = emulator.web_client
    assert client.client_secret
    tmux.keys("n")
    tmux.wait_for("New connection", "^g Generate")
    tmux.type(NAME)
    tmux.wait_for(f"Name           {NAME}")
    tmux.keys("Tab")
    tmux.type(client.client_id)
    tmux.wait_for(f"Client ID      {client.client_id}")
    tmux.keys("Tab")
    tmux.type(client.client_secret)
    tmux.wait_for("Client Secret  " + "•" * len(client.client_secret))


def sign_in_and_save(tmux: Tmux, emulator: Emulator) -> str:
    """From the waiting consent screen to the saved connection; returns the storage line."""
    tmux.wait_for("Waiting for Xero", "c Copy URL")
    tmux.keys("c")
    tmux.wait_for("Copied the sign-in address.")
    url = tmux.clipboard()
    # The test is the browser: consent, then follow the redirect to the app's listener.
    answer_consent(url, follow_redirect=True)
    first = emulator.tenants[0].name
    tmux.wait_for("Choose organisations", first, "tab Select")
    tmux.keys("Space")
    tmux.wait_for("1 selected")
    tmux.keys("Enter")
    tmux.wait_for("Signed in.", f"→ saved as '{NAME}'", "^s Save")
    tmux.keys("C-s")
    home = tmux.wait_for(f"Saved '{NAME}'.", first, "Secrets: ", "t Test")
    line = next(x for x in home.splitlines() if x.strip().startswith("Secrets: "))
    return line.strip()


def quit_app(tmux: Tmux) -> None:
    tmux.keys("C-q")
    assert tmux.wait_exit() == 0


def test_tui_saves_into_the_secret_service(
    secret_service: SecretServiceEnv,
    emulator: Emulator,
    isolated_env: Path,
    terminal: list[Tmux],
    tmp_path: Path,
) -> None:
    require("secret-tool", "libsecret-tools")
    tmux = open_app(terminal, tmp_path, emulator, secret_service.bus.env)
    fill_form(tmux, emulator)
    tmux.keys("C-g")
    tmux.wait_for("Sign in to Xero", "Not opening a browser: no graphical display")
    storage = sign_in_and_save(tmux, emulator)
    # (A notification may still sit at the right end of the line.)
    assert storage.startswith("Secrets: keyring")

    # Test from the home screen: the token comes out of the keyring and Xero accepts it.
    tmux.keys("t")
    tmux.wait_for(f"Test '{NAME}'", emulator.tenants[0].name, "Test again")
    tmux.keys("Escape")
    tmux.wait_for("Xero connections", "t Test")
    quit_app(tmux)

    env = secret_service.child_env()
    conn = read_config(isolated_env)["connections"][NAME]
    key = f"grant:{conn['grant']}"
    stored = keyring_lookup(env, key)
    assert stored["backend"] == SECRET_SERVICE_BACKEND
    tokens = json.loads(stored["value"])
    assert tokens["refresh_token"] == emulator.current_refresh_token(emulator.web_client.client_id)
    assert secret_tool_lookup(env, key).stdout == stored["value"]
    client = emulator.web_client
    assert secret_tool_lookup(env, f"client-secret:{client.client_id}").stdout == (
        client.client_secret
    )
    config_text = (isolated_env / "config.toml").read_text()
    for value in (client.client_secret, tokens["access_token"], tokens["refresh_token"]):
        assert value and value not in config_text
    assert not (isolated_env / "secrets.toml").exists()


@pytest.fixture
def locked_bus(tmp_path: Path) -> Iterator[SessionBus]:
    """A keyring whose unlock dialog is never answered (see test_keyring_unavailable)."""
    with session_bus(tmp_path / "bus") as bus:
        bus.add_silent_prompter()
        bus.start_keyring(unlock=False)
        yield bus


def test_tui_on_a_locked_keyring_shows_the_choices_then_uses_the_file(
    locked_bus: SessionBus,
    emulator: Emulator,
    isolated_env: Path,
    terminal: list[Tmux],
    tmp_path: Path,
) -> None:
    tmux = open_app(terminal, tmp_path, emulator, locked_bus.env)
    fill_form(tmux, emulator)
    tmux.keys("C-g")
    # The probe gives up within its 5 s; the choices come before any sign-in URL.
    choices = tmux.wait_for(
        "The tokens cannot be kept yet",
        "Start or unlock the keyring",
        "plain file only you can read",
        "f Use a file",
        timeout=12,
    )
    assert "did not answer within 5" in choices
    assert "/identity/connect/authorize" not in choices

    tmux.keys("f")
    storage = sign_in_and_save(tmux, emulator)
    secrets_file = isolated_env / "secrets.toml"
    assert storage.startswith("Secrets: plain file")
    quit_app(tmux)

    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    config = read_config(isolated_env)
    assert config["secret_storage"] == "file"
    grant = config["connections"][NAME]["grant"]
    stored = tomllib.loads(secrets_file.read_text())["secrets"]
    tokens = json.loads(stored[f"grant:{grant}"])
    assert tokens["refresh_token"] == emulator.current_refresh_token(emulator.web_client.client_id)
