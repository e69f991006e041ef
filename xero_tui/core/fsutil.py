"""Private, crash-safe file writes: a reader or a crash sees the old file or the new one, never a mix."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import stat
from pathlib import Path

from xero_tui.core.errors import ConfigError

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def _reason(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__


def _temp_pattern(path: Path) -> str:
    return f".{glob.escape(path.name)}.*.tmp"


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; some filesystems refuse to fsync a directory, and by
    # then the new file is in place, so a failure here is not worth failing the write for.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _own(info: os.stat_result) -> bool:
    return info.st_uid == os.getuid()


def _symlink_target(path: Path, *, through_symlink: bool) -> Path:
    """Where a write of `path` lands: `path` itself, or the target of a link the user owns.

    A link is followed only with `through_symlink` (config.toml in a dotfiles checkout) and only
    when both the link and an existing target belong to the user; any other link is refused,
    since a planted one would have the write replace whatever file it points at.
    """
    try:
        info = path.lstat()
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise ConfigError(f"Could not write {path}: {_reason(exc)}.") from None
    if not stat.S_ISLNK(info.st_mode):
        return path
    if not through_symlink:
        raise ConfigError(
            f"{path} is a symbolic link, and xero-tui never writes a secret or lock file through "
            "one: remove the link and try again."
        )
    target = path.resolve()
    target_info: os.stat_result | None
    try:
        target_info = target.stat()
    except FileNotFoundError:
        target_info = None
    except OSError as exc:
        raise ConfigError(f"Could not write {path}: {_reason(exc)}.") from None
    if not _own(info) or (target_info is not None and not _own(target_info)):
        raise ConfigError(
            f"{path} is a symbolic link to {target} that another user owns, so xero-tui will not "
            "write through it: remove the link (or replace it with a file of your own)."
        )
    return target


def atomic_write(
    path: Path, data: bytes, mode: int = PRIVATE_FILE, *, through_symlink: bool = False
) -> None:
    """Replace `path` with `data` so that it is either wholly old or wholly new, even on a crash.

    A symbolic link at `path` is refused, unless `through_symlink` allows a link that the user
    owns to a file the user owns (see `_symlink_target`). Raises ConfigError naming the file when
    it cannot be written; the old file is then untouched and no temporary file is left behind.
    """
    path = _symlink_target(path, through_symlink=through_symlink)
    directory = path.parent
    temp = directory / f".{path.name}.{os.urandom(8).hex()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        # The mode is given at creation, so the secret bytes never sit in a looser file.
        fd = os.open(temp, flags, mode)
    except OSError as exc:
        raise ConfigError(
            f"Could not write {path}: {_reason(exc)}; the file was left as it was."
        ) from None
    try:
        try:
            # The umask may have dropped bits we asked for; it can never have added any.
            os.fchmod(fd, mode)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError):
            raise ConfigError(
                f"Could not write {path}: {_reason(exc)}; the file was left as it was."
            ) from None
        raise
    # The replaced file already carries `mode`; this also covers a platform where replace
    # kept the target's old permission bits.
    with contextlib.suppress(OSError):
        os.chmod(path, mode)
    _fsync_dir(directory)


def read_private(path: Path, *, through_symlink: bool = False) -> bytes:
    """The bytes of `path`, opened without following a symbolic link unless `through_symlink`
    allows one the user owns (as `atomic_write` would write through it).

    Raises FileNotFoundError when there is no file, ConfigError when a link is refused, and
    OSError when it cannot be read.
    """
    if through_symlink:
        path = _symlink_target(path, through_symlink=True)
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(
                f"{path} is a symbolic link, and xero-tui never reads a secret through one: "
                "remove the link and try again."
            ) from None
        raise
    with os.fdopen(fd, "rb") as file:
        return file.read()


def _refuse_unsafe(path: Path, info: os.stat_result) -> None:
    """A folder that another user owns or can write to may hold planted files: refuse it."""
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(
            f"{path} is not a folder; move it aside or point XERO_TUI_CONFIG_DIR elsewhere."
        )
    if not _own(info):
        raise ConfigError(
            f"The folder {path} belongs to another user (uid {info.st_uid}), so xero-tui will not "
            "keep connections there: use a folder of your own (set XERO_TUI_CONFIG_DIR to one)."
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise ConfigError(
            f"The folder {path} can be written by other users (mode {mode:04o}), so files in it "
            f"may have been planted: check what it holds, then run `chmod 700 {path}`."
        )


def check_private_dir(path: Path, *, follow_symlinks: bool = True) -> bool:
    """Refuse (ConfigError) a folder another user owns or may write to; False when it is missing.

    Reading needs this as much as writing: a planted config or secrets file would be believed.
    """
    try:
        info = path.stat() if follow_symlinks else path.lstat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ConfigError(f"Could not read the folder {path}: {_reason(exc)}.") from None
    if stat.S_ISLNK(info.st_mode):
        raise ConfigError(
            f"{path} is a symbolic link, and xero-tui keeps its lock and secret files only in a "
            "real folder: remove the link and try again."
        )
    _refuse_unsafe(path, info)
    return True


def _make_dirs(path: Path) -> None:
    """Create `path` and its missing parents, each 0700 whatever the umask."""
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            if directory == path:
                raise
            continue
        # mkdir's mode went through the umask; set it exactly.
        os.chmod(directory, PRIVATE_DIR)


def ensure_private_dir(
    path: Path, *, for_file: Path | None = None, follow_symlinks: bool = False
) -> None:
    """Create `path` (and missing parents) as 0700, or take group and other read bits off it.

    A folder that another user owns, that others can write to, or (unless `follow_symlinks`, as
    for the config folder itself) that is a symbolic link is refused with a ConfigError that
    names it and the fix. Owner bits of an existing folder are left alone, so a folder made
    read-only stays read-only. With `for_file`, a failure to create names the file it was for.
    """

    def fail(reason: str) -> ConfigError:
        if for_file is None:
            return ConfigError(f"Could not create {path}: {reason}.")
        return ConfigError(f"Could not write {for_file}: could not create {path} ({reason}).")

    try:
        if not check_private_dir(path, follow_symlinks=follow_symlinks):
            try:
                _make_dirs(path)
                return
            except FileExistsError:
                # Made meanwhile by someone else: it gets the same checks as any other.
                if not check_private_dir(path, follow_symlinks=follow_symlinks):
                    raise fail("a file of that name is in the way") from None
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, mode & 0o700)
    except OSError as exc:
        raise fail(_reason(exc)) from None


def tighten_file(path: Path) -> None:
    """Take group and other bits off an existing file (a hand-made 0644 config); best effort."""
    with contextlib.suppress(OSError):
        info = path.stat()
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077 and info.st_uid == os.getuid():
            os.chmod(path, mode & 0o700)


def stale_temps(path: Path) -> list[Path]:
    """Temporary files an interrupted `atomic_write` of `path` left beside it."""
    try:
        return sorted(path.parent.glob(_temp_pattern(path)))
    except OSError:
        return []


def remove_stale_temps(path: Path) -> int:
    """Delete leftover temporary files of `path`; returns how many were removed.

    Call it only while holding the lock that writers of `path` take, or a live writer's temp
    file could vanish under it.
    """
    removed = 0
    for temp in stale_temps(path):
        try:
            temp.unlink()
        except OSError:
            continue
        removed += 1
    return removed
