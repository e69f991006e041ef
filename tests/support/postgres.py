"""A throwaway PostgreSQL server for the shared-store tests: Debian's server binaries, a cluster
in a temporary folder, a Unix socket only (no TCP port), stopped at the end of the session.

PostgreSQL refuses to run as root, so under root (CI) the cluster belongs to the `postgres`
user and its commands run through `runuser`. Each test gets a database of its own.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.capability import missing

_counter = itertools.count()


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


class Postgres:
    def __init__(self, bin_dir: Path, root: Path, owner: str | None) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.socket_dir = root
        self.owner = owner

    def _as_owner(self, *args: str) -> list[str]:
        return ["runuser", "-u", self.owner, "--", *args] if self.owner else list(args)

    def run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._as_owner(str(self.bin_dir / tool), *args),
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
            cwd=self.root,
        )

    def init(self) -> None:
        self.run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def start(self) -> None:
        options = f"-k {self.socket_dir} -c listen_addresses='' -c fsync=off -c max_connections=200"
        self.run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@/{dbname}?host={self.socket_dir}"

    def psql(self, dbname: str, sql: str) -> str:
        return subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-h",
                str(self.socket_dir),
                "-U",
                "postgres",
                "-d",
                dbname,
                "-XtAq",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout

    def new_database(self) -> str:
        name = f"xero_{os.getpid()}_{next(_counter)}"
        self.psql("postgres", f"CREATE DATABASE {name}")
        return name

    def dump(self, dbname: str) -> str:
        """The database as pg_dump writes it, without the random lines it adds each time."""
        text = subprocess.run(
            [str(self.bin_dir / "pg_dump"), "-h", str(self.socket_dir), "-U", "postgres", dbname],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        return "".join(
            line
            for line in text.splitlines(keepends=True)
            if not line.startswith(("\\restrict", "\\unrestrict"))
        )


class Unavailable(Exception):
    """What this machine lacks to run PostgreSQL."""


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    """A PostgreSQL server for as long as the block runs; Unavailable when it cannot be had."""
    bin_dir = _bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        raise Unavailable("PostgreSQL server binaries (Debian package postgresql)")
    owner: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise Unavailable("the postgres user, to run PostgreSQL under root") from None
        owner = "postgres"
    root = Path(tempfile.mkdtemp(prefix="xero-pg-"))
    if owner:
        shutil.chown(root, owner)
    server = Postgres(bin_dir, root, owner)
    try:
        server.init()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    try:
        with running_postgres() as server:
            yield server
    except Unavailable as exc:
        missing(str(exc))


@pytest.fixture
def store_url(postgres_server: Postgres, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh database, named to every xero-tui in this test (and its children) through
    XERO_TUI_STORE, with a store key of this test's own in XERO_TUI_STORE_KEY."""
    from cryptography.fernet import Fernet

    url = postgres_server.url(postgres_server.new_database())
    monkeypatch.setenv("XERO_TUI_STORE", url)
    monkeypatch.setenv("XERO_TUI_STORE_KEY", Fernet.generate_key().decode())
    return url
