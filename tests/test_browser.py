"""Browser launch decisions and detached launching: security.md properties 5 and 36-40."""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
import time
from pathlib import Path

import pytest

from xero_tui.core import browser
from xero_tui.core.browser import (
    NO_BROWSER,
    NO_DISPLAY,
    OPENED,
    SSH_SESSION,
    LaunchPlan,
    is_ssh,
    launch,
    plan_launch,
    ssh_tunnel_command,
    tunnel_note,
)

URL = (
    "https://login.xero.com/identity/connect/authorize?response_type=code"
    "&client_id=6E4D953BAAE949D1A1B399307AD58B94&redirect_uri=http%3A%2F%2Flocalhost%3A8719"
    "%2Fcallback&scope=openid%20offline_access&state=abc123"
)
CONSOLE = ("lynx", "w3m", "www-browser", "links", "elinks", "sensible-browser", "x-www-browser")


def fake_program(bindir: Path, name: str, markers: Path) -> Path:
    """A program that only leaves a marker file behind when it runs."""
    bindir.mkdir(parents=True, exist_ok=True)
    path = bindir / name
    path.write_text(f'#!/bin/sh\necho "$@" > {shlex.quote(str(markers / name))}\n')
    path.chmod(0o755)
    return path


def ran(markers: Path, wait: float = 0.3) -> list[str]:
    time.sleep(wait)
    return sorted(p.name for p in markers.iterdir())


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    path = tmp_path / "markers"
    path.mkdir()
    return path


@pytest.fixture
def console_path(tmp_path: Path, markers: Path) -> str:
    bindir = tmp_path / "bin"
    for name in CONSOLE:
        fake_program(bindir, name, markers)
    return f"{bindir}{os.pathsep}/usr/bin{os.pathsep}/bin"


def clean_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> dict[str, str]:
    """The process environment for this test: display, SSH and browser variables removed."""
    for name in (
        "DISPLAY",
        "WAYLAND_DISPLAY",
        "BROWSER",
        "SSH_CONNECTION",
        "SSH_TTY",
        "SSH_CLIENT",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return dict(os.environ)


# --- Property 36: no console browser ------------------------------------------------------------


@pytest.mark.parametrize("platform", ["linux", "freebsd13"])
def test_no_console_browser_without_display(
    monkeypatch: pytest.MonkeyPatch, console_path: str, markers: Path, platform: str
) -> None:
    env = clean_env(monkeypatch, TERM="xterm", PATH=console_path)
    for plan in (plan_launch(URL, env, platform), plan_launch(URL, platform=platform)):
        assert plan == LaunchPlan(False, None, NO_DISPLAY)
        assert launch(plan, URL) is False
    assert ran(markers) == []


def test_no_console_browser_with_display_but_no_graphical_opener(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, markers: Path
) -> None:
    bindir = tmp_path / "only-console"
    for name in CONSOLE:
        fake_program(bindir, name, markers)
    env = clean_env(monkeypatch, TERM="xterm", DISPLAY=":0", PATH=str(bindir))
    plan = plan_launch(URL, env, "linux")
    assert plan == LaunchPlan(False, None, NO_BROWSER)
    assert launch(plan, URL) is False
    assert ran(markers) == []


@pytest.mark.parametrize("display", ["DISPLAY", "WAYLAND_DISPLAY"])
def test_graphical_opener_used_with_display(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, markers: Path, display: str
) -> None:
    bindir = tmp_path / "gui"
    for name in CONSOLE:
        fake_program(bindir, name, markers)
    opener = fake_program(bindir, "xdg-open", markers)
    env = clean_env(monkeypatch, TERM="xterm", PATH=str(bindir), **{display: ":0"})
    plan = plan_launch(URL, env, "linux")
    assert plan == LaunchPlan(True, (str(opener), URL), OPENED)
    assert launch(plan, URL) is True
    for _ in range(50):
        if ran(markers, 0.05):
            break
    assert ran(markers, 0) == ["xdg-open"]
    assert (markers / "xdg-open").read_text().strip() == URL


def test_gio_open_when_no_xdg_open(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, markers: Path
) -> None:
    gio = fake_program(tmp_path / "gio-bin", "gio", markers)
    env = clean_env(monkeypatch, DISPLAY=":1", PATH=str(gio.parent))
    assert plan_launch(URL, env, "linux").command == (str(gio), "open", URL)


# --- Property 37/38: never blocks, detached ------------------------------------------------------

RECORDER = """
import json, os, sys, time
null = os.stat(os.devnull)
fds = {}
for fd in (0, 1, 2):
    try:
        st = os.fstat(fd)
        fds[fd] = {"devnull": (st.st_dev, st.st_ino) == (null.st_dev, null.st_ino), "tty": os.isatty(fd)}
    except OSError as exc:
        fds[fd] = {"error": str(exc)}
try:
    own_session = os.getsid(0) == os.getpid()
except OSError:
    own_session = None
record = {
    "pid": os.getpid(), "argv": sys.argv[1:], "fds": fds, "own_session": own_session,
    "env": dict(os.environ),
}
out = sys.argv[1]
with open(out + ".tmp", "w") as f:
    json.dump(record, f)
os.replace(out + ".tmp", out)
time.sleep(float(sys.argv[2]))
"""


def _recorder(tmp_path: Path, sleep: float) -> tuple[str, Path]:
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    out = tmp_path / "record.json"
    command = shlex.join([sys.executable, str(script), str(out), str(sleep)])
    return command, out


def _read_record(out: Path) -> dict[str, object]:
    for _ in range(200):
        if out.exists():
            return dict(json.loads(out.read_text()))
        time.sleep(0.025)
    raise AssertionError("the browser command never ran")


def test_browser_launch_never_blocks_and_is_detached(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    command, out = _recorder(tmp_path, 10)
    # BROWSER is honoured even with no graphical display: it is the user's explicit choice.
    env = clean_env(monkeypatch, TERM="xterm", BROWSER=command)
    plan = plan_launch(URL, env, "linux")
    assert plan.launch and plan.command is not None and plan.command[-1] == URL
    began = time.monotonic()
    assert launch(plan, URL) is True
    elapsed = time.monotonic() - began
    record = _read_record(out)
    try:
        assert elapsed < 0.5, f"launch() took {elapsed:.3f}s"
        fds = record["fds"]
        assert isinstance(fds, dict)
        for fd in ("0", "1", "2"):
            assert fds[fd] == {"devnull": True, "tty": False}, fds
        if sys.platform != "win32":
            assert record["own_session"] is True
        assert record["argv"] == [str(out), "10", URL]
    finally:
        pid = record["pid"]
        assert isinstance(pid, int)
        os.kill(pid, 15)


def test_the_browser_child_inherits_no_secret_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A browser started from BROWSER gets no XERO_CLIENT_SECRET and nothing else named like a
    secret, and keeps what a graphical browser needs."""
    command, out = _recorder(tmp_path, 0)
    secrets = {
        "XERO_CLIENT_SECRET": "s3cr3t-client-secret",
        "XERO_ACCESS_TOKEN": "eyJ.a.b",
        "GITHUB_TOKEN": "ghp_x",
        "AWS_SECRET_ACCESS_KEY": "aws-x",
        "MY_PASSWORD": "hunter2",
        "OPENAI_API_KEY": "sk-x",
        "PGPASSWORD": "pg-x",
    }
    kept = {
        "DISPLAY": ":0",
        "XAUTHORITY": "/run/user/1000/xauth",
        "LANG": "C.UTF-8",
        "XERO_TUI_TEST_CONSENT": "cancel",
    }
    env = clean_env(monkeypatch, BROWSER=command, **secrets, **kept)
    assert launch(plan_launch(URL, env, "linux"), URL) is True
    child = _read_record(out)["env"]
    assert isinstance(child, dict)
    # Only names are compared and reported, never the values of this machine's environment.
    inherited = sorted(name for name in secrets if name in child)
    carrying = sorted(name for name, value in child.items() if value in secrets.values())
    assert inherited == [] and carrying == []
    assert all(child.get(name) == value for name, value in kept.items())
    assert child.get("PATH") == os.environ["PATH"]


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc to see zombies")
def test_browser_child_is_reaped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    command, out = _recorder(tmp_path, 0)
    env = clean_env(monkeypatch, BROWSER=command)
    assert launch(plan_launch(URL, env, "linux"), URL) is True
    pid = _read_record(out)["pid"]
    for _ in range(200):
        status = Path(f"/proc/{pid}/stat")
        if not status.exists():
            return
        time.sleep(0.025)
    raise AssertionError(f"child {pid} was not reaped: {status.read_text()}")


def test_launch_returns_false_when_executable_cannot_start(tmp_path: Path) -> None:
    assert launch(LaunchPlan(True, (str(tmp_path / "missing"), URL), OPENED), URL) is False
    not_exec = tmp_path / "not-exec"
    not_exec.write_text("#!/bin/sh\n")
    not_exec.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert launch(LaunchPlan(True, (str(not_exec), URL), OPENED), URL) is False


def test_launch_refuses_plan_for_another_url(tmp_path: Path) -> None:
    plan = LaunchPlan(True, ("/bin/true", "https://other.example/"), OPENED)
    with pytest.raises(ValueError):
        launch(plan, URL)


# --- BROWSER ------------------------------------------------------------------------------------


def test_browser_var_first_entry_and_percent_s(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, markers: Path
) -> None:
    bindir = tmp_path / "b"
    firefox = fake_program(bindir, "firefox", markers)
    fake_program(bindir, "chromium", markers)
    env = clean_env(monkeypatch, PATH=str(bindir), BROWSER="firefox --new-window --url=%s:chromium")
    plan = plan_launch(URL, env, "linux")
    assert plan == LaunchPlan(True, (str(firefox), "--new-window", f"--url={URL}"), OPENED)
    env["BROWSER"] = "chromium"
    assert plan_launch(URL, env, "linux").command == (str(bindir / "chromium"), URL)


def test_browser_var_quoted_path_with_space(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, markers: Path
) -> None:
    prog = fake_program(tmp_path / "My Apps", "browse", markers)
    env = clean_env(monkeypatch, BROWSER=f"{shlex.quote(str(prog))} --private")
    assert plan_launch(URL, env, "linux").command == (str(prog), "--private", URL)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("w3m", "text-mode browser"),
        ("lynx -accept_all_cookies", "text-mode browser"),
        ("/usr/bin/www-browser", "text-mode browser"),
        ("no-such-browser-here", "which was not found"),
        ("'unbalanced", "is not a command"),
    ],
)
def test_browser_var_refused(
    monkeypatch: pytest.MonkeyPatch, console_path: str, markers: Path, value: str, reason: str
) -> None:
    env = clean_env(monkeypatch, PATH=console_path, DISPLAY=":0", BROWSER=value)
    plan = plan_launch(URL, env, "linux")
    assert not plan.launch and plan.command is None
    assert plan.reason.startswith("Not opening a browser:") and reason in plan.reason
    assert launch(plan, URL) is False
    assert ran(markers) == []


# --- Other platforms -----------------------------------------------------------------------------


def test_macos_uses_open(monkeypatch: pytest.MonkeyPatch) -> None:
    env = clean_env(monkeypatch, PATH="/nonexistent")
    assert plan_launch(URL, env, "darwin") == LaunchPlan(True, ("/usr/bin/open", URL), OPENED)


def test_windows_uses_startfile(monkeypatch: pytest.MonkeyPatch) -> None:
    env = clean_env(monkeypatch)
    plan = plan_launch(URL, env, "win32")
    assert plan == LaunchPlan(True, None, OPENED)
    opened: list[str] = []
    monkeypatch.setattr(browser.os, "startfile", opened.append, raising=False)
    assert launch(plan, URL) is True
    assert opened == [URL]

    def broken(url: str) -> None:
        raise OSError("no association")

    monkeypatch.setattr(browser.os, "startfile", broken, raising=False)
    assert launch(plan, URL) is False


# --- Property 40: SSH ---------------------------------------------------------------------------


def test_ssh_tunnel_command_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"SSH_CONNECTION": "10.0.0.5 52311 192.0.2.10 22", "USER": "ana"}
    assert ssh_tunnel_command(8719, env) == "ssh -L 8719:localhost:8719 ana@192.0.2.10"


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"SSH_CONNECTION": "10.0.0.5 52311 192.0.2.10 2222"},
            "ssh -p 2222 -L 8719:localhost:8719 ana@192.0.2.10",
        ),
        # SSH_CLIENT alone names the server's port third.
        ({"SSH_CLIENT": "10.0.0.5 52311 2222"}, "ssh -p 2222 -L 8719:localhost:8719 ana@box"),
        ({"SSH_CLIENT": "10.0.0.5 52311 22"}, "ssh -L 8719:localhost:8719 ana@box"),
        # A port that is not one is left out rather than guessed.
        (
            {"SSH_CONNECTION": "10.0.0.5 52311 192.0.2.10 ²²"},
            "ssh -L 8719:localhost:8719 ana@192.0.2.10",
        ),
        (
            {"SSH_CONNECTION": "10.0.0.5 52311 192.0.2.10 70000"},
            "ssh -L 8719:localhost:8719 ana@192.0.2.10",
        ),
        (
            {"SSH_CONNECTION": "10.0.0.5 52311 192.0.2.10"},
            "ssh -L 8719:localhost:8719 ana@192.0.2.10",
        ),
    ],
)
def test_ssh_tunnel_command_goes_through_the_port_sshd_answered_on(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], line: str
) -> None:
    monkeypatch.setattr(browser.socket, "gethostname", lambda: "box")
    assert ssh_tunnel_command(8719, {"USER": "ana", **env}) == line


def test_ssh_tunnel_command_can_forward_more_ports() -> None:
    env = {"SSH_CONNECTION": "10.0.0.5 52311 192.0.2.10 2222", "USER": "ana"}
    assert ssh_tunnel_command(8719, env, also=(41234,)) == (
        "ssh -p 2222 -L 8719:localhost:8719 -L 41234:127.0.0.1:41234 ana@192.0.2.10"
    )
    with pytest.raises(ValueError):
        ssh_tunnel_command(8719, env, also=(0,))


def test_tunnel_note_names_the_port_on_the_users_own_computer() -> None:
    assert tunnel_note(8745) == (
        "Port 8745 must be free on your own computer: the browser goes to exactly localhost:8745."
    )


@pytest.mark.parametrize(
    ("connection", "host"),
    [
        ("2001:db8::5 52311 2001:db8::10 22", "2001:db8::10"),
        ("::ffff:10.0.0.5 52311 ::ffff:192.0.2.10 22", "192.0.2.10"),
    ],
)
def test_ssh_tunnel_command_ipv6_without_brackets(connection: str, host: str) -> None:
    # OpenSSH keeps brackets in user@[addr] literally and then cannot resolve it.
    env = {"SSH_CONNECTION": connection, "LOGNAME": "ana"}
    assert ssh_tunnel_command(8719, env) == f"ssh -L 8719:localhost:8719 ana@{host}"


def test_ssh_tunnel_command_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(browser.getpass, "getuser", lambda: "bo")
    monkeypatch.setattr(browser.socket, "gethostname", lambda: "build-box")
    assert (
        ssh_tunnel_command(9000, {"SSH_TTY": "/dev/pts/3"})
        == "ssh -L 9000:localhost:9000 bo@build-box"
    )
    assert (
        ssh_tunnel_command(9000, {"SSH_CONNECTION": "garbage"})
        == "ssh -L 9000:localhost:9000 bo@build-box"
    )
    # Whatever is in the environment, the line stays one safe shell word.
    line = ssh_tunnel_command(
        9000, {"USER": "a b;rm -rf ~\x1b[2J", "SSH_CONNECTION": "1 2 192.0.2.1 22"}
    )
    assert line == "ssh -L 9000:localhost:9000 'a b;rm -rf ~@192.0.2.1'"
    with pytest.raises(ValueError):
        ssh_tunnel_command(0, {})


@pytest.mark.parametrize("var", ["SSH_CONNECTION", "SSH_TTY", "SSH_CLIENT"])
def test_no_launch_over_ssh(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, markers: Path, var: str
) -> None:
    bindir = tmp_path / "gui"
    fake_program(bindir, "xdg-open", markers)
    fake_program(bindir, "firefox", markers)
    value = "10.0.0.5 52311 192.0.2.10 22" if var != "SSH_TTY" else "/dev/pts/1"
    env = clean_env(
        monkeypatch, PATH=str(bindir), DISPLAY=":10", BROWSER="firefox", USER="ana", **{var: value}
    )
    assert is_ssh(env) and is_ssh()
    for platform in ("linux", "darwin", "win32"):
        plan = plan_launch(URL, env, platform)
        assert plan == LaunchPlan(False, None, SSH_SESSION)
        assert launch(plan, URL) is False
    assert ran(markers) == []


def test_is_ssh_false_without_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env(monkeypatch)
    assert not is_ssh()
    assert not is_ssh({"SSH_TTY": ""})


# --- Property 5: http(s) only -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript:alert(document.cookie)",
        "file:///etc/passwd",
        "data:text/html,<script>alert(1)</script>",
        "ftp://example.com/x",
        "",
        "login.xero.com/identity",
        "https:/no-host",
        "http://",
        "https://example.com/a b",
        "https://example.com/\nX",
        "-https://example.com",
    ],
)
def test_only_http_urls_handed_to_browser(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, markers: Path, url: str
) -> None:
    opener = fake_program(tmp_path / "gui", "xdg-open", markers)
    env = clean_env(monkeypatch, DISPLAY=":0", PATH=str(opener.parent))
    with pytest.raises(ValueError):
        plan_launch(url, env, "linux")
    with pytest.raises(ValueError):
        launch(LaunchPlan(True, (str(opener), url), OPENED), url)
    assert ran(markers, 0.1) == []


def test_http_and_https_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    env = clean_env(monkeypatch, PATH="/nonexistent")
    for url in ("http://localhost:8719/x", "HTTPS://login.xero.com/"):
        assert plan_launch(url, env, "darwin").command == ("/usr/bin/open", url)
