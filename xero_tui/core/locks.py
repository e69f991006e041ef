"""Cross-process locks over lock files in the app's private lock directory.

An exclusive `flock` on the lock file, retried until a deadline: what the filelock package does
on POSIX, without importing it (about 10 ms, 5% of a whole `token --force-refresh`). Like
the rest of the config code (owners, modes), this is POSIX only. A lock belongs to its open file,
not to a thread, so it may be taken in a worker thread and released on the event loop; the OS
drops it when the process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from xero_tui.core.errors import ConfigError, StorageError
from xero_tui.core.fsutil import PRIVATE_FILE, ensure_private_dir

# Waiting polls with a growing pause: quick when the holder is quick (a config write takes a few
# milliseconds), without spinning through a long refresh.
_FIRST_PAUSE = 0.001
_LONGEST_PAUSE = 0.025


class LockTimeout(Exception):
    """Another process still held the lock when the time was up."""


class FileLock:
    """An exclusive lock on `path` (created 0600), waited for at most `timeout` seconds."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None

    def acquire(self) -> None:
        """Blocking. Raises LockTimeout, or OSError when the lock file cannot be opened."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already locked by this FileLock")
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self.path, flags, PRIVATE_FILE)
        try:
            deadline = time.monotonic() + self.timeout
            pause = _FIRST_PAUSE
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except (BlockingIOError, PermissionError):
                    # EWOULDBLOCK, or EACCES on filesystems that report a held lock that way.
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise LockTimeout(str(self.path)) from None
                    time.sleep(min(pause, left))
                    pause = min(pause * 2, _LONGEST_PAUSE)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __del__(self) -> None:
        # Taken in a worker thread for a caller that was cancelled meanwhile: nobody is left to
        # release it, and other processes must not wait for this one to exit.
        with contextlib.suppress(Exception):
            self.release()


@contextmanager
def file_lock(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created 0600 in a 0700 dir) for the `with` block.

    Blocking: async callers run the whole locked section in `asyncio.to_thread`. Raises
    StorageError naming the file when the lock is not acquired within `timeout` seconds.
    """
    try:
        ensure_private_dir(path.parent)
    except ConfigError as exc:
        raise StorageError(str(exc)) from None
    lock = FileLock(path, timeout)
    try:
        lock.acquire()
    except LockTimeout:
        raise StorageError(f"Another xero-tui process holds {path}; try again.") from None
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise StorageError(f"Could not lock {path}: {reason}.") from None
    try:
        yield
    finally:
        lock.release()
