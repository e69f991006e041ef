"""Cross-process locks over lock files in the app's private lock directory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from xero_tui.core.errors import ConfigError, StorageError
from xero_tui.core.fsutil import PRIVATE_FILE, ensure_private_dir


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
    # Imported here: filelock takes ~20 ms to import and only writers take this lock.
    import filelock

    lock = filelock.FileLock(path, timeout=timeout, mode=PRIVATE_FILE)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise StorageError(f"Another xero-tui process holds {path}; try again.") from None
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise StorageError(f"Could not lock {path}: {reason}.") from None
    try:
        yield
    finally:
        lock.release()
