"""Child processes in tests: waiting for a killed one, and running one without root's privileges."""

from __future__ import annotations

import os
import time

# The start of a `python -c` script. Root ignores permission bits, so a test of a read-only file
# or folder has its child drop the capabilities that let it do so first.
DROP_ROOT_FILE_CAPS = r"""
import ctypes, os, sys
if os.geteuid() == 0:
    libc = ctypes.CDLL(None, use_errno=True)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    assert libc.capget(header, data) == 0
    data[0] &= ~((1 << 1) | (1 << 2) | (1 << 3))  # DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER
    assert libc.capset(header, data) == 0, ctypes.get_errno()
"""


def wait_gone(pid: int) -> None:
    """Until the (killed) process `pid` no longer exists; at most 5 s."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.001)
    raise AssertionError(f"process {pid} did not die")


FOREIGN_UID = 65534  # `nobody`: another local user, whatever this machine calls it


def require_root(why: str) -> None:
    """Skip a test that needs root (to give a file to another user), but fail under CI=true,
    which runs as root."""
    if os.geteuid() == 0:
        return
    import pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI runs as root, but this run is not: {why}", pytrace=False)
    pytest.skip(f"needs root: {why}")
