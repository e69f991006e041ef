"""Run `xero-tui keepalive` every day without a person: a systemd user timer where a user manager
answers, otherwise a crontab line for the user to add (we never edit a crontab ourselves).

The unit files name the absolute interpreter and the config folder of the run that installed
them, so the timer keeps the very connections that run sees, whatever the timer's environment.
Everything that asks the machine something goes through a `Runner`, so tests fake systemctl.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from xero_tui.core.errors import ConfigError, XeroTuiError, clean_text
from xero_tui.core.fsutil import atomic_write, ensure_private_dir
from xero_tui.core.paths import ENV_CONFIG_DIR, ENV_STORE, Paths

UNIT = "xero-tui-keepalive"
SERVICE = f"{UNIT}.service"
TIMER = f"{UNIT}.timer"
# Only a file that starts with this line is ours to replace or remove.
MARKER = "# Written by `xero-tui keepalive --install`; `xero-tui keepalive --uninstall` removes it."
# Cron has no random delay; a fixed minute off the hour avoids the crowd at :00.
CRON_SCHEDULE = "23 4 * * *"
LOG_NAME = "keepalive.log"
UNIT_FILE_MODE = 0o644  # unit files hold a command and a folder, never a secret
SYSTEMD_BOOTED = Path("/run/systemd/system")  # what sd_booted() checks
_UP_STATES = frozenset({"initializing", "starting", "running", "degraded"})
# Secrets a run may take from its environment; a unit file or crontab is no place for them.
_NOT_CARRIED = ("XERO_TUI_STORE_KEY", "PGPASSWORD")


class ScheduleError(XeroTuiError):
    """The timer could not be installed or removed; the message says what is left to do."""


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str]], Ran]


def run_command(args: Sequence[str]) -> Ran:
    """Run a systemd tool, bounded in time: a hung bus must not hang the install."""
    try:
        proc = subprocess.run(
            list(args), capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30
        )
    except FileNotFoundError:
        return Ran(127, "", f"{args[0]}: command not found")
    except subprocess.TimeoutExpired:
        return Ran(124, "", f"{args[0]} did not answer within 30 s")
    except OSError as exc:
        return Ran(126, "", f"{args[0]}: {exc.strerror or type(exc).__name__}")
    return Ran(proc.returncode, proc.stdout, proc.stderr)


@dataclass(frozen=True)
class Host:
    """What this machine offers for running a daily job."""

    user_manager: bool  # `systemctl --user` reaches a running systemd user manager
    systemd_booted: bool  # systemd is the init, so lingering could give the user a manager
    lingering: bool | None  # the user manager outlives logouts; None when logind did not say
    user: str
    has_crontab: bool


def _user_name() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return os.environ.get("USER") or os.environ.get("LOGNAME") or "$USER"


def probe(
    run: Runner = run_command,
    *,
    booted_marker: Path = SYSTEMD_BOOTED,
    which: Callable[[str], str | None] = shutil.which,
) -> Host:
    """Ask systemd whether a user manager answers and whether it outlives logouts."""
    state = run(["systemctl", "--user", "is-system-running"])
    words = state.stdout.split()
    # Exit status is non-zero for "degraded" too, so the printed state decides.
    user_manager = bool(words) and words[0] in _UP_STATES
    booted = booted_marker.is_dir()
    lingering: bool | None = None
    if user_manager or booted:
        linger = run(["loginctl", "show-user", str(os.getuid()), "--property=Linger", "--value"])
        answer = linger.stdout.strip() if linger.returncode == 0 else ""
        lingering = {"yes": True, "no": False}.get(answer)
    return Host(user_manager, booted, lingering, _user_name(), which("crontab") is not None)


def unit_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where a user's own systemd units live: $XDG_CONFIG_HOME/systemd/user, or
    ~/.config/systemd/user when that is unset or (as the XDG spec says to ignore) relative."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    return root / "systemd" / "user"


def _printable(value: str, what: str) -> str:
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ConfigError(
            f"{what} {clean_text(value, 200)!r} holds a control character (a newline?), which a "
            "unit file or crontab cannot carry: use a folder without one."
        )
    return value


_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+,:=@")


def _unit_quote(value: str, *, command: bool) -> str:
    """`value` as one word of a unit file line (systemd.syntax): quoted when it holds anything
    but plain characters, `\\` and `"` escaped, `%` doubled so it is not a specifier, and in a
    command line `$` doubled so it is not a variable."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    if command:
        escaped = escaped.replace("$", "$$")
    return escaped if value and set(value) <= _PLAIN else f'"{escaped}"'


@dataclass(frozen=True)
class Job:
    """The daily command, the config folder it keeps, and where its unit files go."""

    argv: tuple[str, ...]
    config_dir: Path
    unit_dir: Path
    # Secrets this run has from its environment that the job will not (see _NOT_CARRIED).
    left_out: tuple[str, ...] = ()

    @classmethod
    def for_this_run(
        cls,
        older_than_days: float,
        *,
        insecure_storage: bool = False,
        store_url: str | None = None,
        env: Mapping[str, str] | None = None,
        executable: str | None = None,
    ) -> Job:
        """The job this very xero-tui would run: the same interpreter (not resolved, so a
        virtualenv's stays), the same limit, config folder and shared store."""
        env = os.environ if env is None else env
        python = executable or sys.executable
        if not python:
            raise ScheduleError(
                "Could not tell which Python runs xero-tui, so no timer was set up."
            )
        python = os.path.abspath(python)
        # -P: a xero_tui folder in the job's working directory is never imported instead.
        argv = [python, "-P", "-m", "xero_tui", "keepalive", "--older-than", f"{older_than_days:g}"]
        if insecure_storage:
            argv.append("--insecure-storage")
        store_url = store_url or env.get(ENV_STORE) or None
        if store_url:
            from xero_tui.core.pgstore import parse_address

            # Refuses a URL holding a password: the unit file and crontab are readable.
            parse_address(store_url)
            argv += ["--store", store_url]
        config_dir = Paths.from_env(env).config_dir.absolute()
        for arg in argv:
            _printable(arg, "The command")
        _printable(str(config_dir), "The config folder")
        left_out = tuple(name for name in _NOT_CARRIED if env.get(name))
        return cls(tuple(argv), config_dir, unit_dir(env), left_out)

    @property
    def service_file(self) -> Path:
        return self.unit_dir / SERVICE

    @property
    def timer_file(self) -> Path:
        return self.unit_dir / TIMER

    @property
    def log_file(self) -> Path:
        return self.config_dir / LOG_NAME


def service_text(job: Job) -> str:
    command = " ".join(_unit_quote(arg, command=True) for arg in job.argv)
    env = _unit_quote(f"{ENV_CONFIG_DIR}={job.config_dir}", command=False)
    return (
        f"{MARKER}\n"
        "[Unit]\n"
        "Description=Refresh Xero connections before their 60 days run out (xero-tui keepalive)\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"ExecStart={command}\n"
        f"Environment={env}\n"
        # A hung run would keep the timer from starting the next one.
        "TimeoutStartSec=30min\n"
    )


def timer_text() -> str:
    return (
        f"{MARKER}\n"
        "[Unit]\n"
        "Description=Daily xero-tui keepalive, so no Xero refresh token goes unused for 60 days\n"
        "\n"
        "[Timer]\n"
        "OnCalendar=daily\n"
        # A day missed while the machine was off runs at the next start.
        "Persistent=true\n"
        "RandomizedDelaySec=1h\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )


def crontab_line(job: Job) -> str:
    """One crontab line running the job daily, its output appended to the config folder's log.

    Cron hands the command to /bin/sh, so each word is shell-quoted; an unescaped `%` would end
    the command there, so every `%` is written `\\%` (cron removes the backslash).
    """
    words = [
        f"{ENV_CONFIG_DIR}={shlex.quote(str(job.config_dir))}",
        *(shlex.quote(arg) for arg in job.argv),
        f">>{shlex.quote(str(job.log_file))}",
        "2>&1",
    ]
    return f"{CRON_SCHEDULE} " + " ".join(words).replace("%", "\\%")


def _ours(path: Path) -> bool | None:
    """True for a unit file we wrote, False for anyone else's, None when there is none."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"Could not read {path}: {exc.strerror}.") from None
    if not stat.S_ISREG(info.st_mode):
        return False
    try:
        with path.open(encoding="utf-8", errors="replace") as file:
            return file.readline().rstrip("\n") == MARKER
    except OSError as exc:
        raise ConfigError(f"Could not read {path}: {exc.strerror}.") from None


def _refuse_foreign(paths: Sequence[Path], doing: str) -> list[Path]:
    """The files among `paths` that exist (all ours); a file we did not write stops everything."""
    found: list[Path] = []
    for path in paths:
        owner = _ours(path)
        if owner is False:
            raise ScheduleError(
                f"{path} was not written by xero-tui (its first line is not xero-tui's marker), "
                f"so it was left alone and nothing was {doing}: move it aside and try again."
            )
        if owner:
            found.append(path)
    return found


def _make_unit_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(
            f"Could not create {directory}: a file of that name is in the way; move it aside."
        ) from None
    except OSError as exc:
        raise ConfigError(f"Could not create {directory}: {exc.strerror}.") from None
    if not directory.is_dir():
        raise ConfigError(f"{directory} is not a folder; move it aside and try again.")


def _systemctl(run: Runner, *args: str) -> Ran:
    return run(["systemctl", "--user", *args])


def _failed(ran: Ran) -> str:
    said = clean_text(" ".join((ran.stderr or ran.stdout).split()), 300)
    return said or f"exit status {ran.returncode}"


def _linger_hint(host: Host) -> str:
    return f"`loginctl enable-linger {host.user}`"


def _left_out_line(job: Job) -> list[str]:
    if not job.left_out:
        return []
    names = " and ".join(job.left_out)
    verb = "are" if len(job.left_out) > 1 else "is"
    return [
        f"{names} {verb} set here but not given to the daily job, since it is a secret: keep the "
        "store key in this host's secret store (`xero-tui store key --import`) and a password "
        "in ~/.pgpass, or the job cannot reach the store."
    ]


def _cron_lines(job: Job, host: Host) -> list[str]:
    lines = [
        "No systemd user session answers here, so no timer was installed. To run keepalive "
        "daily from cron instead, add this line with `crontab -e`:",
        "",
        f"    {crontab_line(job)}",
        "",
        f"Its output is appended to {job.log_file}.",
    ]
    if not host.has_crontab:
        lines.append("There is no `crontab` command on this machine: install cron first.")
    lines += _left_out_line(job)
    if host.systemd_booted:
        if host.lingering:
            lines.append(
                "Your systemd user manager runs but did not answer this shell (`su` and `sudo` "
                "shells lack XDG_RUNTIME_DIR): log in as yourself and run "
                "`xero-tui keepalive --install` again for a timer instead."
            )
        else:
            lines.append(
                f"Or, for a systemd timer that runs whether or not you are logged in: run "
                f"{_linger_hint(host)}, log in again, and run `xero-tui keepalive --install` again."
            )
    return lines


def install(job: Job, host: Host, run: Runner = run_command) -> list[str]:
    """Write and enable the timer, or (with no user manager) say the crontab line to add.

    Returns the lines to show. Raises ConfigError for a folder that cannot be used and
    ScheduleError for a unit file we did not write or a systemctl that refused.
    """
    # The job would fail daily on a folder xero-tui refuses: refuse it now, while someone looks.
    ensure_private_dir(job.config_dir, follow_symlinks=True)
    if not host.user_manager:
        return _cron_lines(job, host)
    _make_unit_dir(job.unit_dir)
    replaced = _refuse_foreign([job.service_file, job.timer_file], "installed")
    atomic_write(job.service_file, service_text(job).encode(), UNIT_FILE_MODE)
    atomic_write(job.timer_file, timer_text().encode(), UNIT_FILE_MODE)
    wrote = "Replaced" if replaced else "Wrote"
    lines = [f"{wrote} {job.service_file} and {job.timer_file}."]
    for step in (("daemon-reload",), ("enable", "--now", TIMER)):
        ran = _systemctl(run, *step)
        if ran.returncode != 0:
            hint = ""
            if job.unit_dir != unit_dir({}):
                hint = (
                    " If XDG_CONFIG_HOME is set only in your shell, systemd looks in "
                    "~/.config/systemd/user instead: unset it and install again."
                )
            raise ScheduleError(
                f"Wrote {job.service_file} and {job.timer_file}, but `systemctl --user "
                f"{' '.join(step)}` failed: {_failed(ran)}.{hint}"
            )
    lines.append(
        f"Enabled {TIMER}: keepalive runs daily (within an hour after midnight, or at the next "
        f"start after a missed day) for the connections in {job.config_dir}."
    )
    lines.append(
        f"`systemctl --user list-timers {TIMER}` shows the next run; "
        f"`journalctl --user -u {SERVICE}` shows what the runs said."
    )
    lines += _left_out_line(job)
    if host.lingering is False:
        lines.append(
            "Your user manager stops when you log out, and the timer with it. On a server, run "
            f"{_linger_hint(host)} to keep it running."
        )
    return lines


def uninstall(directory: Path, host: Host, run: Runner = run_command) -> list[str]:
    """Disable the timer and remove the unit files we wrote; returns the lines to show."""
    service, timer = directory / SERVICE, directory / TIMER
    found = _refuse_foreign([timer, service], "removed")
    # What `systemctl enable` made; with no manager to ask, it is removed by hand.
    wants = directory / "timers.target.wants" / TIMER
    enabled = wants.is_symlink() and os.readlink(wants) == str(timer)
    if not found and not enabled:
        return [
            f"No keepalive timer is installed in {directory}; nothing was removed. A crontab "
            "line, if you added one instead, goes with `crontab -e`."
        ]
    lines: list[str] = []
    if host.user_manager:
        ran = _systemctl(run, "disable", "--now", TIMER)
        if ran.returncode != 0:
            raise ScheduleError(
                f"`systemctl --user disable --now {TIMER}` failed: {_failed(ran)}; "
                "nothing was removed."
            )
    elif enabled:
        with contextlib.suppress(FileNotFoundError):
            wants.unlink()
        lines.append(f"Removed {wants} (no systemd user session answered to disable it).")
    for path in found:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError(f"Could not remove {path}: {exc.strerror}.") from None
        lines.append(f"Removed {path}.")
    if host.user_manager:
        _systemctl(run, "daemon-reload")
        lines.insert(0, f"Stopped and disabled {TIMER}.")
    return lines
