"""Private, crash-safe file writes: a reader or a crash sees the old file or the new one, never a mix."""

from __future__ import annotations

import contextlib
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


def atomic_write(path: Path, data: bytes, mode: int = PRIVATE_FILE) -> None:
    """Replace `path` with `data` so that it is either wholly old or wholly new, even on a crash.

    Raises ConfigError naming the file when it cannot be written; the old file is then untouched
    and no temporary file is left behind.
    """
    # Write through a symlink (a dotfiles checkout, say) rather than replacing the link itself.
    if path.is_symlink():
        path = path.resolve()
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


def ensure_private_dir(path: Path, *, for_file: Path | None = None) -> None:
    """Create `path` as 0700 (parents get the usual mode), or take group and other bits off it.

    Only a directory owned by the current user is tightened: the config dir and its lock dir are
    the app's own, while a shared parent someone pointed us at is not ours to change. Owner bits
    of an existing directory are left alone, so a directory made read-only stays read-only.
    Raises ConfigError; with `for_file`, the message names the file the directory was for.
    """

    def fail(reason: str) -> ConfigError:
        if for_file is None:
            return ConfigError(f"Could not create {path}: {reason}.")
        return ConfigError(f"Could not write {for_file}: could not create {path} ({reason}).")

    try:
        try:
            path.mkdir(mode=PRIVATE_DIR, parents=True)
        except FileExistsError:
            info = path.stat()
            if not stat.S_ISDIR(info.st_mode):
                raise fail("a file of that name is in the way") from None
            mode = stat.S_IMODE(info.st_mode)
            if info.st_uid == os.getuid() and mode & 0o077:
                os.chmod(path, mode & 0o700)
        else:
            # mkdir's mode went through the umask; set it exactly.
            os.chmod(path, PRIVATE_DIR)
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
