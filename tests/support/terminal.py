"""The real `xero-tui` command on a pseudo-terminal, as a person runs it.

stdin, stdout and stderr are the terminal; it is the child's controlling terminal, so Ctrl-C
typed there reaches it as SIGINT through the line discipline, and closing the terminal hangs it
up. Nothing reaches stdin unless the test types it.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import termios
import threading
import time

from tests.support.cli import ROOT


def _controlling_terminal() -> None:
    # In the child, after setsid: the terminal on stdin becomes the session's.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """One command on its own pseudo-terminal; `screen` is everything it has written."""

    def __init__(self, *args: str, env: dict[str, str], size: tuple[int, int] = (80, 24)) -> None:
        self.master, slave = os.openpty()
        columns, rows = size
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xero_tui", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**env, "TERM": "xterm-256color"},
            cwd=ROOT,
            start_new_session=True,
            preexec_fn=_controlling_terminal,
        )
        os.close(slave)
        self._output = bytearray()
        self._closed = False
        self._changed = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                data = b""
            with self._changed:
                if not data:
                    self._closed = True
                    self._changed.notify_all()
                    return
                self._output += data
                self._changed.notify_all()

    @property
    def screen(self) -> str:
        with self._changed:
            return self._output.decode("utf-8", "replace")

    def wait_for(self, needle: str, timeout: float = 20) -> float:
        """Until `needle` has been written; returns the moment (time.monotonic) it was seen."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while needle.encode() not in self._output:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {needle!r} on the terminal:\n{self.screen}")
                self._changed.wait(min(left, 0.05))
        return time.monotonic()

    def type(self, text: str) -> None:
        """Keys, as typed: a newline is the Enter key."""
        os.write(self.master, text.replace("\n", "\r").encode())

    def interrupt(self) -> None:
        """Ctrl-C, typed at the terminal."""
        os.write(self.master, b"\x03")

    def signal(self, signum: int) -> None:
        os.killpg(self.proc.pid, signum)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s:\n{self.screen}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
