"""A second local user: foreign or loose config folders, planted symlinks, umask 000, and grant
ids that would move a lock file out of its folder (issue 11, item 1; security.md 45-47).

Another user is simulated by giving files to uid 65534 (`nobody`), which needs root; CI runs as
root, so these fail there rather than skip.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.cli import cli_env, run_cli
from tests.support.procs import FOREIGN_UID, require_root
from xero_tui.core.config import Config, ConfigStore, parse
from xero_tui.core.errors import EXIT_STORAGE, ConfigError, StorageError
from xero_tui.core.models import Connection, Grant, Kind
from xero_tui.core.paths import Paths
from xero_tui.core.secrets import FileStore

WHEN = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
VICTIM_TEXT = b"# the victim's own shell start-up file\n"


def add_connection(config: Config) -> None:
    config.grants["g1"] = Grant("g1", Kind.WEB, "C" * 32, ("openid",), WHEN)
    config.connections["acme"] = Connection(
        "acme", Kind.WEB, "C" * 32, "t1", "Acme", "g1", created=WHEN
    )


def victim_file(tmp_path: Path, name: str = ".bashrc") -> Path:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    target = home / name
    target.write_bytes(VICTIM_TEXT)
    return target


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_config_folder_another_user_owns_is_refused_and_nothing_is_written_through_it(
    tmp_path: Path,
) -> None:
    """A config folder owned by another user is refused with a sentence naming it (exit 5), and
    its planted `config.toml -> ~/.bashrc` never replaces the victim's file."""
    require_root("the folder must belong to another user")
    bashrc = victim_file(tmp_path)
    planted = tmp_path / "shared"
    planted.mkdir()
    (planted / "config.toml").symlink_to(bashrc)
    os.chmod(planted, 0o777)
    os.chown(planted, FOREIGN_UID, FOREIGN_UID)
    os.lchown(planted / "config.toml", FOREIGN_UID, FOREIGN_UID)
    store = ConfigStore(Paths(planted))
    with pytest.raises(ConfigError, match="belongs to another user") as caught:
        store.update(add_connection)
    assert str(planted) in str(caught.value)
    with pytest.raises(ConfigError, match="belongs to another user"):
        store.load()
    assert bashrc.read_bytes() == VICTIM_TEXT
    result = run_cli("list", env=cli_env(XERO_TUI_CONFIG_DIR=str(planted)))
    assert result.code == EXIT_STORAGE
    assert str(planted) in result.err and "another user" in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err


@pytest.mark.parametrize("loose", [0o777, 0o770, 0o722], ids=["0777", "0770", "0722"])
def test_a_config_folder_others_can_write_is_refused_and_its_planted_link_not_followed(
    tmp_path: Path, loose: int
) -> None:
    """The user's own config folder writable by group or others is refused, and a planted
    `secrets.toml -> ~/.profile` leaves the victim's file as it was."""
    profile = victim_file(tmp_path, ".profile")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "secrets.toml").symlink_to(profile)
    os.chmod(folder, loose)
    paths = Paths(folder)
    with pytest.raises(StorageError, match="can be written by other users") as caught:
        FileStore(paths).put_client_secret("C" * 32, "s3cr3t-value")
    assert str(folder) in str(caught.value) and "chmod 700" in str(caught.value)
    with pytest.raises(ConfigError, match="can be written by other users"):
        ConfigStore(paths).update(add_connection)
    with pytest.raises(ConfigError, match="can be written by other users"):
        ConfigStore(paths).load()
    assert profile.read_bytes() == VICTIM_TEXT
    assert mode_of(folder) == loose  # refused, not silently "fixed" with a plant inside


def test_secrets_and_lock_files_are_never_opened_through_a_symlink(tmp_path: Path) -> None:
    """In a private folder, a symlinked `secrets.toml` is refused for reading and writing, and
    a symlinked `locks` folder is refused, each leaving the link's target untouched."""
    profile = victim_file(tmp_path, ".profile")
    paths = Paths(tmp_path / "config")
    ConfigStore(paths).update(add_connection)
    paths.secrets_file.symlink_to(profile)
    store = FileStore(paths)
    with pytest.raises(StorageError, match="symbolic link"):
        store.put_client_secret("C" * 32, "s3cr3t-value")
    with pytest.raises(StorageError, match="symbolic link"):
        store.get_client_secret("C" * 32)
    assert profile.read_bytes() == VICTIM_TEXT
    paths.secrets_file.unlink()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    for entry in paths.lock_dir.iterdir():
        entry.unlink()
    paths.lock_dir.rmdir()
    paths.lock_dir.symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="symbolic link") as caught:
        ConfigStore(paths).update(lambda c: c.connections.pop("acme"))
    assert str(paths.lock_dir) in str(caught.value)
    assert list(elsewhere.iterdir()) == []
    assert "acme" in ConfigStore(paths).load().connections


def test_config_toml_is_written_through_a_symlink_only_when_the_user_owns_link_and_target(
    tmp_path: Path,
) -> None:
    """`config.toml` as a user-owned link to a user-owned file (a dotfiles checkout) is written
    through; a link to another user's file is refused and that file is left as it was."""
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir(mode=0o700)
    kept = dotfiles / "xero-tui.toml"
    kept.write_text("schema = 1\n")
    paths = Paths(tmp_path / "config")
    paths.config_dir.mkdir(mode=0o700)
    paths.config_file.symlink_to(kept)
    ConfigStore(paths).update(add_connection)
    assert paths.config_file.is_symlink()
    assert "acme" in parse(kept.read_text(), kept).connections

    require_root("the link's target must belong to another user")
    foreign = victim_file(tmp_path)
    os.chown(foreign, FOREIGN_UID, FOREIGN_UID)
    paths.config_file.unlink()
    paths.config_file.symlink_to(foreign)
    with pytest.raises(ConfigError, match="another user owns") as caught:
        ConfigStore(paths).update(lambda c: c.connections.pop("acme"))
    assert str(paths.config_file) in str(caught.value)
    with pytest.raises(ConfigError, match="another user owns"):
        ConfigStore(paths).load()
    assert foreign.read_bytes() == VICTIM_TEXT


def test_a_foreign_lock_folder_is_refused_at_once_instead_of_waiting_on_its_held_lock(
    tmp_path: Path,
) -> None:
    """A `locks` folder another user made, holding a lock, is refused with a sentence at once,
    not after the lock wait runs out."""
    require_root("the lock folder must belong to another user")
    paths = Paths(tmp_path / "config")
    ConfigStore(paths).update(add_connection)
    os.chown(paths.lock_dir, FOREIGN_UID, FOREIGN_UID)
    fd = os.open(paths.config_lock, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        started = time.monotonic()
        with pytest.raises(ConfigError, match="belongs to another user") as caught:
            ConfigStore(paths, lock_timeout=30).update(lambda c: c.connections.pop("acme"))
        assert time.monotonic() - started < 2
        assert str(paths.lock_dir) in str(caught.value)
    finally:
        os.close(fd)


def test_missing_parents_of_the_config_folder_are_made_0700_whatever_the_umask(
    tmp_path: Path,
) -> None:
    """Under umask 000, a missing config folder and each missing parent are created 0700."""
    paths = Paths(tmp_path / "home" / ".config" / "xero-tui")
    old = os.umask(0)
    try:
        ConfigStore(paths).update(add_connection)
    finally:
        os.umask(old)
    for folder in (tmp_path / "home", tmp_path / "home" / ".config", paths.config_dir):
        assert mode_of(folder) == 0o700, folder
    assert mode_of(paths.lock_dir) == 0o700


@pytest.mark.parametrize("bad", ["../../pwn", "..", "a/b", ".hidden", "x" * 65, "tab\tid"])
def test_grant_ids_read_from_the_config_are_validated_before_they_name_a_lock_file(
    tmp_path: Path, bad: str
) -> None:
    """A grant id from the config that could move its lock file (`../../pwn`) is refused with
    the file and line, and never becomes a path."""
    path = tmp_path / "config.toml"
    quoted = bad.replace("\t", "\\t")
    as_grant = (
        f'schema = 1\n\n[grants."{quoted}"]\nkind = "web"\nclient_id = "c"\n'
        "created = 2026-11-28T10:00:00Z\n"
    )
    with pytest.raises(ConfigError, match="grant id") as caught:
        parse(as_grant, path)
    assert f"{path} line 3" in str(caught.value)
    as_field = (
        'schema = 1\n\n[connections.acme]\nkind = "web"\nclient_id = "c"\ntenant_id = "t"\n'
        f'tenant_name = "Acme"\ngrant = "{quoted}"\ncreated = 2026-11-28T10:00:00Z\n'
    )
    with pytest.raises(ConfigError, match="grant id") as caught:
        parse(as_field, path)
    assert f"{path} line 8" in str(caught.value)
    with pytest.raises(ConfigError, match="grant id"):
        Paths(tmp_path).grant_lock(bad)
    assert Paths(tmp_path).grant_lock("0123abcd.e_f-9").parent == tmp_path / "locks"
