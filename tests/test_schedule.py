"""`xero-tui keepalive --install/--uninstall`: the unit files, what systemctl is asked, and the
crontab line where no systemd user session answers. No test reaches the machine's own
systemctl, loginctl, crontab or ~/.config: systemd is faked by an injected runner (or, for the
command itself, by scripts first on PATH) and every folder is a temporary one."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.support.capability import missing
from tests.support.cli import cli_env, run_cli
from tests.support.saved import connect
from xero_tui.core import schedule
from xero_tui.core.errors import EXIT_ERROR, EXIT_STORAGE, ConfigError
from xero_tui.core.schedule import Host, Job, Ran, ScheduleError
from xero_tui.core.service import Service
from xero_tui.emulator import Emulator


class FakeSystemd:
    """Answers as systemctl and loginctl would, and records every call."""

    def __init__(self, state: str = "running", linger: str = "yes", fail: str = "") -> None:
        self.state, self.linger, self.fail = state, linger, fail
        self.calls: list[list[str]] = []

    def __call__(self, args: Sequence[str]) -> Ran:
        args = list(args)
        self.calls.append(args)
        if args[0] == "loginctl":
            return Ran(0, f"{self.linger}\n", "")
        if args[2] == "is-system-running":
            return Ran(0 if self.state == "running" else 1, f"{self.state}\n", "")
        if args[2] == self.fail:
            return Ran(
                1, "", "Failed to enable unit: Unit file xero-tui-keepalive.timer does not exist."
            )
        return Ran(0, "", "")

    @property
    def changes(self) -> list[list[str]]:
        """The calls that change something (not the probing ones)."""
        return [c for c in self.calls if c[0] == "systemctl" and c[2] != "is-system-running"]


def host(manager: bool = True, *, booted: bool = True, lingering: bool | None = True) -> Host:
    return Host(manager, booted, lingering, "ada", has_crontab=True)


@pytest.fixture
def job(tmp_path: Path) -> Job:
    config_dir = tmp_path / 'conn ections 100% "$HOME"'
    env = {"XERO_TUI_CONFIG_DIR": str(config_dir), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    return Job.for_this_run(7, env=env, executable="/opt/my python/bin/python3")


def test_the_service_runs_this_python_with_the_same_limit_and_config_folder(job: Job) -> None:
    text = schedule.service_text(job)
    lines = text.splitlines()
    assert lines[0] == schedule.MARKER
    assert "Type=oneshot" in lines
    assert 'ExecStart="/opt/my python/bin/python3" -P -m xero_tui keepalive --older-than 7' in lines
    # systemd.syntax: `%` starts a specifier and `"` and `\` are escaped inside quotes; `$` is
    # a variable only in a command line.
    quoted = str(job.config_dir).replace('"', '\\"').replace("%", "%%")
    assert f'Environment="XERO_TUI_CONFIG_DIR={quoted}"' in lines
    assert job.unit_dir == job.config_dir.parent / "xdg" / "systemd" / "user"


def test_the_job_uses_the_same_shared_store_but_never_its_secrets(tmp_path: Path) -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing("psycopg (the postgres extra), which reads store URLs")
    url = "postgresql://ada@db.example:5432/xero"
    env = {"XERO_TUI_CONFIG_DIR": str(tmp_path), "XERO_TUI_STORE_KEY": "k", "PGPASSWORD": "p"}
    job = Job.for_this_run(30, env=env, store_url=url)
    assert job.argv[-2:] == ("--store", url)
    assert Job.for_this_run(30, env={**env, "XERO_TUI_STORE": url}).argv[-2:] == ("--store", url)
    text = schedule.service_text(job) + schedule.crontab_line(job)
    assert "=k" not in text and "=p" not in text
    lines = schedule.install(job, host(), FakeSystemd())
    assert any(line.startswith("XERO_TUI_STORE_KEY and PGPASSWORD are set") for line in lines)
    with pytest.raises(ConfigError, match="holds a password"):
        Job.for_this_run(30, env=env, store_url="postgresql://ada:secret@db.example/xero")


def test_the_timer_is_daily_persistent_and_spread() -> None:
    lines = schedule.timer_text().splitlines()
    assert lines[0] == schedule.MARKER
    for line in ("OnCalendar=daily", "Persistent=true", "RandomizedDelaySec=1h"):
        assert line in lines
    assert lines[-2:] == ["[Install]", "WantedBy=timers.target"]


def test_unit_quoting_escapes_backslashes_dollars_and_percents() -> None:
    assert schedule._unit_quote("/plain/path-1.2", command=True) == "/plain/path-1.2"
    assert schedule._unit_quote("a\\b $X 5%", command=True) == '"a\\\\b $$X 5%%"'
    assert schedule._unit_quote("a\\b $X 5%", command=False) == '"a\\\\b $X 5%%"'


def test_a_folder_with_a_newline_is_refused(tmp_path: Path) -> None:
    env = {"XERO_TUI_CONFIG_DIR": str(tmp_path / "a\nb")}
    with pytest.raises(ConfigError, match="control character"):
        Job.for_this_run(30, env=env)


def test_the_default_unit_folder_is_under_home_and_a_relative_xdg_is_ignored(
    tmp_path: Path,
) -> None:
    home = Path(os.environ["HOME"])
    assert schedule.unit_dir({}) == home / ".config" / "systemd" / "user"
    assert schedule.unit_dir({"XDG_CONFIG_HOME": "rel"}) == home / ".config" / "systemd" / "user"
    xdg = str(tmp_path / "x")
    assert schedule.unit_dir({"XDG_CONFIG_HOME": xdg}) == tmp_path / "x" / "systemd" / "user"


def test_systemd_analyze_verifies_the_unit_files(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing("systemd-analyze (Debian package systemd) is not installed")
    # The command must exist for verify to pass, so a wrongly split path fails it.
    bin_dir = tmp_path / "my env 100%"
    bin_dir.mkdir()
    python = bin_dir / "python3"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    config_dir = tmp_path / 'conn "odd" 50%'
    env = {"XERO_TUI_CONFIG_DIR": str(config_dir), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    job = Job.for_this_run(30, env=env, executable=str(python))
    schedule.install(job, host(), FakeSystemd())
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    # --user needs a runtime folder, which a root CI job without a session lacks.
    proc = subprocess.run(
        [analyze, "verify", "--user", "--man=no", str(job.timer_file), str(job.service_file)],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    # A bad Environment= line is only warned about, so the warnings count too.
    ours = [line for line in proc.stderr.splitlines() if schedule.UNIT in line]
    assert ours == [], proc.stderr


def test_install_writes_both_units_and_enables_the_timer(job: Job) -> None:
    systemd = FakeSystemd()
    lines = schedule.install(job, host(), systemd)
    assert systemd.changes == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", "xero-tui-keepalive.timer"],
    ]
    assert job.service_file.read_text() == schedule.service_text(job)
    assert job.timer_file.read_text() == schedule.timer_text()
    for path in (job.service_file, job.timer_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert lines[0] == f"Wrote {job.service_file} and {job.timer_file}."
    assert "Enabled xero-tui-keepalive.timer" in lines[1]
    assert not any("linger" in line for line in lines)
    assert sorted(p.name for p in job.unit_dir.iterdir()) == [schedule.SERVICE, schedule.TIMER]


def test_installing_again_replaces_and_says_so(job: Job) -> None:
    schedule.install(job, host(), FakeSystemd())
    changed = Job((*job.argv[:-1], "20"), job.config_dir, job.unit_dir)  # another --older-than
    systemd = FakeSystemd()
    lines = schedule.install(changed, host(), systemd)
    assert lines[0].startswith("Replaced ")
    assert "--older-than 20" in changed.service_file.read_text()
    assert len(systemd.changes) == 2
    assert sorted(p.name for p in job.unit_dir.iterdir()) == [schedule.SERVICE, schedule.TIMER]


def test_install_refuses_to_overwrite_a_unit_file_it_did_not_write(job: Job) -> None:
    job.unit_dir.mkdir(parents=True)
    job.timer_file.write_text("[Timer]\nOnCalendar=hourly\n")
    systemd = FakeSystemd()
    with pytest.raises(ScheduleError, match="not written by xero-tui") as caught:
        schedule.install(job, host(), systemd)
    assert caught.value.exit_code == EXIT_ERROR
    assert job.timer_file.read_text() == "[Timer]\nOnCalendar=hourly\n"
    assert not job.service_file.exists()
    assert systemd.changes == []


def test_install_refuses_a_config_folder_others_can_write(job: Job) -> None:
    job.config_dir.mkdir(mode=0o700)
    job.config_dir.chmod(0o777)
    with pytest.raises(ConfigError, match="can be written by other users") as caught:
        schedule.install(job, host(), FakeSystemd())
    assert caught.value.exit_code == EXIT_STORAGE
    assert not job.unit_dir.exists()


def test_a_file_in_the_way_of_the_unit_folder_is_named(job: Job) -> None:
    job.unit_dir.parent.mkdir(parents=True)
    job.unit_dir.write_text("")
    with pytest.raises(ConfigError, match="in the way"):
        schedule.install(job, host(), FakeSystemd())


def test_a_refusing_systemctl_is_an_error_that_says_what_it_said(job: Job) -> None:
    with pytest.raises(ScheduleError, match="does not exist") as caught:
        schedule.install(job, host(), FakeSystemd(fail="enable"))
    assert "XDG_CONFIG_HOME is set only in your shell" in str(caught.value)


def test_without_lingering_the_timer_is_installed_with_the_linger_command(job: Job) -> None:
    lines = schedule.install(job, host(lingering=False), FakeSystemd())
    assert "`loginctl enable-linger ada`" in lines[-1]
    assert "log out" in lines[-1]


def test_uninstall_disables_and_removes_what_install_wrote(job: Job) -> None:
    schedule.install(job, host(), FakeSystemd())
    systemd = FakeSystemd()
    lines = schedule.uninstall(job.unit_dir, host(), systemd)
    assert systemd.changes == [
        ["systemctl", "--user", "disable", "--now", "xero-tui-keepalive.timer"],
        ["systemctl", "--user", "daemon-reload"],
    ]
    assert lines == [
        "Stopped and disabled xero-tui-keepalive.timer.",
        f"Removed {job.timer_file}.",
        f"Removed {job.service_file}.",
    ]
    assert list(job.unit_dir.iterdir()) == []


def test_uninstall_with_nothing_installed_says_so_and_asks_nothing(job: Job) -> None:
    systemd = FakeSystemd()
    (lines,) = schedule.uninstall(job.unit_dir, host(), systemd)
    assert lines.startswith(f"No keepalive timer is installed in {job.unit_dir}; nothing")
    assert "crontab -e" in lines
    assert systemd.changes == []


def test_uninstall_leaves_a_unit_file_it_did_not_write(job: Job) -> None:
    job.unit_dir.mkdir(parents=True)
    job.service_file.write_text("[Service]\nExecStart=/bin/true\n")
    systemd = FakeSystemd()
    with pytest.raises(ScheduleError, match="not written by xero-tui"):
        schedule.uninstall(job.unit_dir, host(), systemd)
    assert job.service_file.exists()
    assert systemd.changes == []


def test_uninstall_without_a_user_manager_removes_the_enable_link_too(job: Job) -> None:
    schedule.install(job, host(), FakeSystemd())
    wants = job.unit_dir / "timers.target.wants"
    wants.mkdir()
    (wants / schedule.TIMER).symlink_to(job.timer_file)
    systemd = FakeSystemd(state="offline")
    lines = schedule.uninstall(job.unit_dir, host(manager=False), systemd)
    assert not (wants / schedule.TIMER).is_symlink()
    assert not job.timer_file.exists() and not job.service_file.exists()
    assert lines[0].startswith(f"Removed {wants / schedule.TIMER}")
    assert systemd.changes == []


def test_without_a_user_manager_it_prints_a_crontab_line_and_writes_no_unit(job: Job) -> None:
    systemd = FakeSystemd(state="offline")
    lines = schedule.install(job, host(manager=False, booted=False, lingering=None), systemd)
    text = "\n".join(lines)
    assert "`crontab -e`" in text
    assert schedule.crontab_line(job) in text
    assert f"appended to {job.log_file}" in text
    assert "linger" not in text
    assert systemd.changes == []
    assert not job.unit_dir.exists()
    # The log's folder must exist for cron's `>>` to work.
    assert job.config_dir.is_dir()


def test_with_systemd_but_no_user_manager_it_names_enable_linger(job: Job) -> None:
    lines = schedule.install(job, host(manager=False, lingering=False), FakeSystemd("offline"))
    assert "`loginctl enable-linger ada`" in lines[-1]
    lines = schedule.install(job, host(manager=False, lingering=True), FakeSystemd("offline"))
    assert "XDG_RUNTIME_DIR" in lines[-1]


def test_the_crontab_line_runs_the_job_through_sh_as_cron_would(tmp_path: Path) -> None:
    bin_dir = tmp_path / "my env 100%"
    bin_dir.mkdir()
    python = bin_dir / "python3"
    record = tmp_path / "record"
    python.write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        printf '%s\\n' "$XERO_TUI_CONFIG_DIR" "$@" > '{record}'
        echo ran
        """)
    )
    python.chmod(0o755)
    config_dir = tmp_path / "it's 50% $HOME"
    config_dir.mkdir()
    job = Job.for_this_run(30, env={"XERO_TUI_CONFIG_DIR": str(config_dir)}, executable=str(python))
    line = schedule.crontab_line(job)
    assert line.startswith("23 4 * * * ")
    command = line.split(" ", 5)[5]
    assert "%" not in command.replace("\\%", "")
    # crontab(5): an unescaped % ends the command; `\%` reaches the shell as `%`.
    subprocess.run(["/bin/sh", "-c", command.replace("\\%", "%")], check=True, timeout=30)
    assert record.read_text().splitlines() == [str(config_dir), *job.argv[1:]]
    assert job.log_file.read_text() == "ran\n"


@pytest.mark.parametrize(
    ("state", "code", "up"),
    [("running", 0, True), ("degraded", 1, True), ("offline", 1, False), ("", 127, False)],
)
def test_probe_trusts_the_state_systemctl_prints(
    tmp_path: Path, state: str, code: int, up: bool
) -> None:
    calls: list[list[str]] = []

    def run(args: Sequence[str]) -> Ran:
        calls.append(list(args))
        if args[0] == "loginctl":
            return Ran(0, "no\n", "")
        return Ran(code, f"{state}\n" if state else "", "")

    found = schedule.probe(run, booted_marker=tmp_path / "absent", which=lambda _: None)
    assert found.user_manager is up
    assert found.systemd_booted is False
    assert found.lingering is (False if up else None)
    assert found.has_crontab is False
    assert calls[0] == ["systemctl", "--user", "is-system-running"]


async def test_the_unit_files_hold_no_secret(emulator: Emulator, job: Job) -> None:
    svc = Service()
    await connect(svc, emulator, "acme")
    tokens = svc.secrets.get_tokens(svc.connection("acme").grant_id)
    assert tokens is not None
    schedule.install(job, host(), FakeSystemd())
    secrets = [emulator.web_client.client_secret, tokens.refresh_token, tokens.access_token]
    for path in (job.service_file, job.timer_file):
        text = path.read_text()
        for secret in secrets:
            assert secret and secret not in text


# The command itself, with fake systemctl and loginctl scripts first on PATH -----------------


def fake_tools(tmp_path: Path, state: str) -> tuple[dict[str, str], Path]:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    record = tmp_path / "systemctl-calls"
    code = 0 if state == "running" else 1
    (bin_dir / "systemctl").write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        echo "$*" >> '{record}'
        if [ "$2" = is-system-running ]; then echo {state}; exit {code}; fi
        exit 0
        """)
    )
    (bin_dir / "loginctl").write_text("#!/bin/sh\necho yes\n")
    for tool in ("systemctl", "loginctl"):
        (bin_dir / tool).chmod(0o755)
    env = cli_env(
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        XDG_CONFIG_HOME=str(tmp_path / "xdg"),
    )
    return env, record


def test_the_command_installs_and_uninstalls_through_systemctl(tmp_path: Path) -> None:
    env, record = fake_tools(tmp_path, "running")
    result = run_cli("keepalive", "--install", "--older-than", "7", env=env)
    assert result.code == 0, result.err
    units = tmp_path / "xdg" / "systemd" / "user"
    assert result.out.startswith(f"Wrote {units / schedule.SERVICE}")
    assert record.read_text().splitlines() == [
        "--user is-system-running",
        "--user daemon-reload",
        "--user enable --now xero-tui-keepalive.timer",
    ]
    service = (units / schedule.SERVICE).read_text()
    assert f"ExecStart={sys.executable} -P -m xero_tui keepalive --older-than 7\n" in service
    assert f"Environment=XERO_TUI_CONFIG_DIR={env['XERO_TUI_CONFIG_DIR']}\n" in service

    record.unlink()
    result = run_cli("keepalive", "--uninstall", env=env)
    assert result.code == 0, result.err
    assert "Stopped and disabled xero-tui-keepalive.timer." in result.out
    assert "--user disable --now xero-tui-keepalive.timer" in record.read_text()
    assert list(units.iterdir()) == []


def test_the_command_prints_a_crontab_line_where_no_user_manager_answers(tmp_path: Path) -> None:
    env, record = fake_tools(tmp_path, "offline")
    result = run_cli("keepalive", "--install", env=env)
    assert result.code == 0, result.err
    assert "crontab -e" in result.out
    assert f"{sys.executable} -P -m xero_tui keepalive --older-than 30 >>" in result.out
    assert record.read_text().splitlines() == ["--user is-system-running"]
    assert not (tmp_path / "xdg" / "systemd").exists()


def test_install_and_uninstall_together_is_a_usage_error() -> None:
    result = run_cli("keepalive", "--install", "--uninstall")
    assert result.code == 2
    assert "not allowed with" in result.err
