"""`python -m tests.mutate [-k WORD] [--list]`: can the tests fail? Each mutant below changes one
line of the product the way a plausible bug would; the tests named beside it must then fail.

The mutants are applied, one at a time, to a temporary copy of this tree (never to the tree
itself), and only the named tests run there, with this interpreter; the copy's `xero_tui` is
the one imported, also by the child processes the tests start. Before the first mutant of a
group of tests runs, those tests run once unmutated: a mutant counts as killed only against
tests that pass without it. Each mutant is found by an exact piece of text that must occur once
in its file; when a change elsewhere moves that text, the mutant is reported as not applied
rather than silently skipped.

Prints one line per mutant (killed, SURVIVED or NOT APPLIED) and a total. Exit status 1 when a
mutant survived or could not be applied. Not part of CI: a full run takes several minutes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What a copy of the tree leaves out: environments, caches and reports, none of them needed.
IGNORED = (
    ".git",
    ".venv",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "snapshot_report.html",
    "dist",
    "build",
    "*.egg-info",
)
TIMEOUT = 600


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    find: str
    replace: str
    tests: tuple[str, ...]


LOCKS = "xero_tui/core/locks.py"
SECRETS = "xero_tui/core/secrets.py"
LOOPBACK = "xero_tui/core/loopback.py"
FSUTIL = "xero_tui/core/fsutil.py"
CONFIG = "xero_tui/core/config.py"
PGSTORE = "xero_tui/core/pgstore.py"
SHARING = "xero_tui/core/sharing.py"
STOREKEY = "xero_tui/core/storekey.py"
TOKENS = "xero_tui/core/tokens.py"
CONNECT = "xero_tui/core/connect.py"
CONTEXT = "xero_tui/core/context.py"

CONFIG_TESTS = ("tests/test_config.py",)
SECRETS_TESTS = ("tests/test_secrets.py",)
LOOPBACK_TESTS = ("tests/test_loopback.py",)

MUTANTS = (
    # Cross-process locks (security.md 20, 34, 44).
    Mutant(
        "locks: a shared flock instead of an exclusive one",
        LOCKS,
        "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)",
        "fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)",
        CONFIG_TESTS,
    ),
    Mutant(
        "locks: a held lock is waited for without end",
        LOCKS,
        "if left <= 0:",
        "if left <= -3600:",
        ("tests/test_config.py::test_update_waits_for_the_lock_and_names_it_on_timeout",),
    ),
    Mutant(
        "locks: the lock file is opened through a symlink",
        LOCKS,
        ' | getattr(os, "O_NOFOLLOW", 0)\n        fd = os.open(self.path',
        "\n        fd = os.open(self.path",
        CONFIG_TESTS,
    ),
    # Secret stores (security.md 26-30).
    Mutant(
        "secrets: a keyring write is not read back",
        SECRETS,
        'if self._call("save", key, write_and_read, _hidden_parts(value)) != value:',
        'if self._call("save", key, write_and_read, _hidden_parts(value)) is None and False:',
        SECRETS_TESTS,
    ),
    Mutant(
        "secrets: the plain file's writes are not read back",
        SECRETS,
        "if kept.get(key) != value:",
        "if kept.get(key) is None and False:",
        SECRETS_TESTS,
    ),
    Mutant(
        "secrets: the null backend counts as a keyring",
        SECRETS,
        "if isinstance(backend, null.Keyring):",
        "if isinstance(backend, null.Keyring) and False:",
        SECRETS_TESTS,
    ),
    Mutant(
        "secrets: backends below priority 1 count as a keyring",
        SECRETS,
        "if priority < 1:",
        "if priority < 0:",
        SECRETS_TESTS,
    ),
    Mutant(
        "secrets: the probe does not check its read-back",
        SECRETS,
        "if got != value:\n            return refused(",
        "if got is None and False:\n            return refused(",
        SECRETS_TESTS,
    ),
    # The loopback listener (security.md 6-16).
    Mutant(
        "loopback: any state is accepted",
        LOOPBACK,
        "return secrets.compare_digest(values[0].encode(), self._state.encode())",
        "return True",
        LOOPBACK_TESTS,
    ),
    Mutant(
        "loopback: any path is a callback but the favicon",
        LOOPBACK,
        "if path != self._path:",
        'if path == "/favicon.ico":',
        LOOPBACK_TESTS,
    ),
    Mutant(
        "loopback: any method but POST is a callback",
        LOOPBACK,
        'if request.method != "GET":',
        'if request.method == "POST":',
        LOOPBACK_TESTS,
    ),
    Mutant(
        "loopback: a callback after the answer is not refused",
        LOOPBACK,
        "if self._outcome is None or self._outcome.done():\n            await self._answer(",
        "if self._outcome is None:\n            await self._answer(",
        LOOPBACK_TESTS,
    ),
    Mutant(
        "loopback: the page's message is not HTML-escaped",
        LOOPBACK,
        'f"<p>{html.escape(message)}</p></body></html>\\n"',
        'f"<p>{message}</p></body></html>\\n"',
        LOOPBACK_TESTS,
    ),
    Mutant(
        "loopback: the port is shared (SO_REUSEADDR on)",
        LOOPBACK,
        "sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)\n        exclusive",
        "sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n        exclusive",
        LOOPBACK_TESTS,
    ),
    Mutant(
        "loopback: no Content-Security-Policy header",
        LOOPBACK,
        '    ("Content-Security-Policy", CSP),\n',
        "",
        LOOPBACK_TESTS,
    ),
    Mutant(
        "loopback: an attempt never times out",
        LOOPBACK,
        "self._timer = loop.call_later(self.timeout, self._on_timeout)",
        "self._timer = None",
        LOOPBACK_TESTS,
    ),
    # Private, atomic files (security.md 30, 32, 33, 45, 46).
    Mutant(
        "fsutil: the temp file is created 0644",
        FSUTIL,
        "fd = os.open(temp, flags, mode)",
        "fd = os.open(temp, flags, 0o644)",
        (*CONFIG_TESTS, *SECRETS_TESTS),
    ),
    Mutant(
        "fsutil: the file is written in place, not replaced",
        FSUTIL,
        "        os.replace(temp, path)\n",
        "        path.write_bytes(data)\n        os.unlink(temp)\n",
        CONFIG_TESTS,
    ),
    Mutant(
        "fsutil: a symlinked config is replaced by a file",
        FSUTIL,
        "    if not stat.S_ISLNK(info.st_mode):\n        return path\n",
        "    return path\n",
        CONFIG_TESTS,
    ),
    Mutant(
        "fsutil: a new private dir keeps what the umask left",
        FSUTIL,
        "        os.chmod(directory, PRIVATE_DIR)",
        "        pass",
        (*CONFIG_TESTS, *SECRETS_TESTS),
    ),
    Mutant(
        "fsutil: an existing dir open to others is left open",
        FSUTIL,
        "        if mode & 0o077:\n            os.chmod(path, mode & 0o700)\n    except OSError",
        "        if False:\n            os.chmod(path, mode & 0o700)\n    except OSError",
        (*CONFIG_TESTS, *SECRETS_TESTS),
    ),
    # The config store (security.md 32-35).
    Mutant(
        "config: updates take no lock",
        CONFIG,
        "with file_lock(self.paths.config_lock, self.lock_timeout):",
        'with memoryview(b""):',
        CONFIG_TESTS,
    ),
    Mutant(
        "config: an unknown schema version is read",
        CONFIG,
        "        if schema != SCHEMA:",
        "        if schema != SCHEMA and False:",
        CONFIG_TESTS,
    ),
    Mutant(
        "config: what would not read back is written",
        CONFIG,
        "                parse(after, path)\n",
        "                pass\n",
        CONFIG_TESTS,
    ),
    Mutant(
        "config: a loose existing file is not tightened",
        CONFIG,
        "            elif text is not None:\n                tighten_file(path)",
        "            elif text is None:\n                tighten_file(path)",
        CONFIG_TESTS,
    ),
    # The refresh path (security.md 20-24).
    Mutant(
        "refresh: another process's rotation is not reused",
        TOKENS,
        "(rotated or not force)",
        "not force",
        ("tests/stress/test_concurrent_refresh.py",),
    ),
    Mutant(
        "refresh: invalid_grant does not mark the connection",
        TOKENS,
        "await in_thread(mark, ctx, grant.grant_id, Status.NEEDS_RECONNECT)\n",
        "pass\n",
        ("tests/test_cli.py::test_invalid_grant_marks_needs_reconnect_and_keeps_config",),
    ),
    Mutant(
        "refresh: the new tokens are handed out without being stored",
        TOKENS,
        "await _store_rotated(ctx, conn, lock, grant.grant_id, stored, fresh)\n",
        "\n",
        ("tests/test_cli.py::test_cached_token_makes_no_refresh_and_force_refresh_rotates",),
    ),
    Mutant(
        "refresh: Ctrl-C during the request drops what Xero rotated in",
        TOKENS,
        "    fresh = await settle(renew())",
        "    fresh = await renew()",
        ("tests/test_keepalive.py",),
    ),
    Mutant(
        "refresh: a failing store of the rotated token is not retried",
        TOKENS,
        "for wait in (0.0, *STORE_RETRY_WAITS):",
        "for wait in (0.0,):",
        ("tests/test_tokens.py",),
    ),
    # The connect session: what Xero issues is kept before anything else.
    Mutant(
        "connect: issued tokens are not written ahead",
        CONNECT,
        "await in_thread(self._write_pending, pending, tokens, superseded)\n",
        "return\n",
        (
            "tests/test_connect.py",
            "tests/test_cli_terminal.py::test_a_failing_connections_call_keeps_the_sign_in_for_the_next_connect",
        ),
    ),
    Mutant(
        "connect: the browser hears connected before the tokens are kept",
        CONNECT,
        "        try:\n            await settle(exchange())",
        '        attempt.listener.answer(True, "Connected to Xero.")\n        try:\n            await settle(exchange())',
        ("tests/test_connect.py",),
    ),
    Mutant(
        "connect: a cancelled caller abandons the token request",
        CONTEXT,
        "            result = await asyncio.shield(task)",
        "            result = await task",
        ("tests/test_connect.py", "tests/test_keepalive.py"),
    ),
    Mutant(
        "connect: the organisation prompt takes 0",
        CONNECT,
        "1 <= int(part) <= count",
        "0 <= int(part) <= count",
        ("tests/test_connect.py",),
    ),
    Mutant(
        "connect: derived names are not numbered apart",
        CONNECT,
        "        while candidate in used:",
        "        while False:",
        ("tests/test_connect.py",),
    ),
    # The shared store (issue: several hosts, one grant).
    Mutant(
        "pgstore: a grant's row is read without FOR UPDATE",
        PGSTORE,
        '"SELECT grant_id FROM xero_tui.grant_locks WHERE grant_id = %s FOR UPDATE"',
        '"SELECT grant_id FROM xero_tui.grant_locks WHERE grant_id = %s"',
        (
            "tests/test_shared_store.py::test_a_lock_wait_is_bounded_and_names_what_it_waited_for",
            "tests/stress/test_shared_store.py::test_hosts_refreshing_one_grant_together_never_get_invalid_grant",
        ),
    ),
    Mutant(
        "pgstore: secrets are sent in clear",
        PGSTORE,
        'token = fernet.encrypt(value.encode("utf-8")).decode("ascii")',
        "token = value",
        (
            "tests/test_shared_store.py::test_pg_dump_of_the_store_holds_no_token_secret_or_key_in_clear",
        ),
    ),
    Mutant(
        "pgstore: a writer does not check the store's key",
        PGSTORE,
        "        return self.cipher(key_id).for_id(key_id, self.db.address)",
        "        return self.cipher(key_id).for_id(None, self.db.address)",
        ("tests/test_shared_store.py::test_a_writer_with_another_key_is_refused_before_it_writes",),
    ),
    Mutant(
        "pgstore: the rotated token is committed after the lock is let go",
        PGSTORE,
        "            upsert_secret(conn, self.secrets.writer(conn), key, encode_tokens(tokens))\n"
        "            conn.commit()",
        "            conn.rollback()\n            self.secrets.put_tokens(self.grant_id, tokens)",
        (
            "tests/stress/test_shared_store.py::test_hosts_refreshing_one_grant_together_never_get_invalid_grant",
        ),
    ),
    Mutant(
        "pgstore: a read after a restart is not tried again",
        PGSTORE,
        "                if not (read and reused):",
        "                if True:",
        (
            "tests/test_shared_store.py::test_a_commit_that_fails_after_xero_rotated_keeps_the_token_and_says_by_when",
        ),
    ),
    Mutant(
        "sharing: push deletes the local copies without switching the config to the store",
        SHARING,
        "            config.store = url\n",
        "            pass\n",
        (
            "tests/test_shared_store.py::test_push_moves_a_working_host_into_the_store_and_pull_moves_it_back",
        ),
    ),
    Mutant(
        "storekey: rotation leaves a row under the old key",
        STOREKEY,
        "            for key, value in rows:",
        "            for key, value in rows[1:]:",
        (
            "tests/test_shared_store.py::test_key_rotation_reencrypts_every_secret_and_the_old_key_alone_then_opens_nothing",
        ),
    ),
)


def copy_tree(into: Path) -> Path:
    tree = into / "tree"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(*IGNORED), symlinks=True)
    return tree


def child_env(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    # Before the editable install's path: the copy's `xero_tui` is the one imported.
    env["PYTHONPATH"] = str(tree) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def imports_the_copy(tree: Path) -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", "import xero_tui; print(xero_tui.__file__)"],
        cwd=tree,
        env=child_env(tree),
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.returncode == 0 and Path(probe.stdout.strip()).is_relative_to(tree)


def run_tests(tree: Path, tests: Sequence[str]) -> tuple[bool, float]:
    """Whether the tests passed in `tree`, and how long they took; a timeout is a failure."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    start = time.monotonic()
    try:
        done = subprocess.run(
            command,
            cwd=tree,
            env=child_env(tree),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, time.monotonic() - start
    return done.returncode == 0, time.monotonic() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutate", description=__doc__)
    parser.add_argument("-k", metavar="WORD", help="only the mutants whose name has WORD")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    args = parser.parse_args(argv)
    mutants = [m for m in MUTANTS if args.k is None or args.k in m.name]
    if args.list:
        for mutant in mutants:
            print(f"{mutant.name}  ({mutant.path}; {' '.join(mutant.tests)})")
        return 0

    counts = {"killed": 0, "SURVIVED": 0, "NOT APPLIED": 0}
    with tempfile.TemporaryDirectory(prefix="xero-tui-mutants-") as tmp:
        tree = copy_tree(Path(tmp))
        if not imports_the_copy(tree):
            print("the copy's xero_tui is not the one imported; nothing was tried", file=sys.stderr)
            return 2
        baseline: dict[tuple[str, ...], bool] = {}
        for mutant in mutants:
            target = tree / mutant.path
            original = target.read_text()
            if original.count(mutant.find) != 1:
                verdict, detail = "NOT APPLIED", "its text is not in the file exactly once"
            else:
                if mutant.tests not in baseline:
                    baseline[mutant.tests], _ = run_tests(tree, mutant.tests)
                if not baseline[mutant.tests]:
                    verdict, detail = "NOT APPLIED", "its tests fail without it"
                else:
                    target.write_text(original.replace(mutant.find, mutant.replace))
                    try:
                        passed, seconds = run_tests(tree, mutant.tests)
                    finally:
                        target.write_text(original)
                    verdict = "SURVIVED" if passed else "killed"
                    detail = f"{seconds:.0f} s"
            counts[verdict] += 1
            print(f"{verdict:<11}  {mutant.name}  ({' '.join(mutant.tests)}; {detail})", flush=True)
    print(
        f"\n{len(mutants)} mutants: {counts['killed']} killed, {counts['SURVIVED']} survived, "
        f"{counts['NOT APPLIED']} not applied"
    )
    return 0 if counts["killed"] == len(mutants) else 1


if __name__ == "__main__":
    sys.exit(main())
