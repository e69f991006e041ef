"""The secret store: keyring (with timeouts and read-back) and the opt-in 0600 file.

Properties 26-30 of docs/security.md: secrets never in config or error text, the keyring probe,
timeouts on every keyring call, read-back after every write, and the private opt-in file.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from keyring.backends import fail, null

from tests.support.keyring_backend import read_all
from tests.support.keyring_faults import (
    DroppingKeyring,
    EmptyChainer,
    HangingKeyring,
    LowPriorityKeyring,
    MemoryKeyring,
    RaisingKeyring,
)
from xero_tui.core.config import ConfigStore
from xero_tui.core.errors import KeyringUnavailable, StorageError
from xero_tui.core.locks import file_lock
from xero_tui.core.models import Connection, Grant, Kind, TokenSet
from xero_tui.core.paths import Paths
from xero_tui.core.secrets import (
    SERVICE,
    FileStore,
    KeyringStore,
    open_store,
    probe_keyring,
)

CLIENT_SECRET = "cs-S3CRET-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
ACCESS = "eyJhbGciOiJSUzI1NiJ9.ACCESS-TOKEN-abcdef0123456789.sig"
REFRESH = "rt-REFRESH-0123456789abcdef0123456789abcdef"
ID_TOKEN = "eyJ.ID-TOKEN-not-kept.sig"
TOKENS = TokenSet(ACCESS, 1_800_000_000.5, REFRESH, ("offline_access", "openid"), ID_TOKEN)
SECRETS = (CLIENT_SECRET, ACCESS, REFRESH, ID_TOKEN)


@pytest.fixture
def paths(isolated_env: Path) -> Paths:
    return Paths.from_env()


@pytest.fixture
def hanging() -> Iterator[HangingKeyring]:
    HangingKeyring.release.clear()
    yield HangingKeyring()
    # Lets the abandoned worker threads finish instead of sleeping out their 30 s.
    HangingKeyring.release.set()


def error_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- keyring store -------------------------------------------------------------------------


def test_keyring_store_round_trips_tokens_and_client_secret(keyring_file: Path) -> None:
    store = KeyringStore()
    assert store.kind == "keyring"
    assert store.description == "keyring (FileKeyring)"
    assert store.get_tokens("g1") is None

    store.put_tokens("g1", TOKENS)
    store.put_client_secret("client-1", CLIENT_SECRET)

    got = store.get_tokens("g1")
    assert got is not None
    assert (got.access_token, got.expires_at, got.refresh_token, got.scopes) == (
        ACCESS,
        TOKENS.expires_at,
        REFRESH,
        TOKENS.scopes,
    )
    assert got.id_token is None  # not kept
    assert store.get_client_secret("client-1") == CLIENT_SECRET

    stored = read_all(keyring_file)[SERVICE]
    assert set(stored) == {"grant:g1", "client-secret:client-1"}
    raw = stored["grant:g1"]
    assert json.loads(raw) == {
        "access_token": ACCESS,
        "expires_at": TOKENS.expires_at,
        "refresh_token": REFRESH,
        "scopes": ["offline_access", "openid"],
    }
    assert " " not in raw and ID_TOKEN not in raw

    store.delete_tokens("g1")
    store.delete_client_secret("client-1")
    store.delete_tokens("g1")  # deleting what is not there is fine
    assert store.get_tokens("g1") is None
    assert store.get_client_secret("client-1") is None
    assert read_all(keyring_file)[SERVICE] == {}


def test_keyring_calls_time_out_on_hung_backend(hanging: HangingKeyring) -> None:
    store = KeyringStore(timeout=0.3, backend=hanging)
    calls = [
        lambda: store.get_tokens("g1"),
        lambda: store.put_tokens("g1", TOKENS),
        lambda: store.delete_tokens("g1"),
        lambda: store.put_client_secret("c1", CLIENT_SECRET),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(StorageError) as caught:
            call()
        assert time.monotonic() - started < 1.5
        message = str(caught.value)
        assert "did not answer within 0.3 s (is it locked?)" in message
        assert "--insecure-storage" in message
        assert_no_secret(error_text(caught.value))


def test_hung_keyring_does_not_block_interpreter_exit(tmp_path: Path) -> None:
    script = (
        "from xero_tui.core.secrets import KeyringStore\n"
        "from xero_tui.core.errors import StorageError\n"
        "try:\n"
        "    KeyringStore(timeout=0.3).get_client_secret('c1')\n"
        "except StorageError as exc:\n"
        "    print(exc)\n"
    )
    env = dict(os.environ, PYTHON_KEYRING_BACKEND="tests.support.keyring_faults.HangingKeyring")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=20
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "did not answer within 0.3 s" in result.stdout
    assert elapsed < 5  # the backend hangs for 30 s; the process must not wait for it


def test_probe_keyring_answers_within_timeout_on_hung_backend(hanging: HangingKeyring) -> None:
    started = time.monotonic()
    result = probe_keyring(0.5, backend=hanging)
    assert time.monotonic() - started < 1.5
    assert not result.ok
    assert result.backend == "HangingKeyring"
    assert "did not answer within 0.5 s" in result.message
    assert "--insecure-storage" in result.message
    assert "gnome-keyring" in result.message


def test_probe_keyring_passes_on_working_backend_and_leaves_nothing(keyring_file: Path) -> None:
    result = probe_keyring()
    assert result.ok, result.message
    assert result.backend == "FileKeyring"
    assert read_all(keyring_file).get(SERVICE, {}) == {}

    memory = MemoryKeyring()
    assert probe_keyring(backend=memory).ok
    assert memory.values == {}


@pytest.mark.parametrize(
    ("backend", "words"),
    [
        (null.Keyring(), "null backend"),
        (fail.Keyring(), "No keyring is available: no Secret Service runs here"),
        (LowPriorityKeyring(), "priority 0.5"),
        (EmptyChainer(), "No usable keyring backend"),
        (DroppingKeyring(), "did not keep a test value"),
        (RaisingKeyring(), "failed a test write"),
    ],
    ids=["null", "fail", "low-priority", "empty-chainer", "dropping", "raising"],
)
def test_probe_keyring_rejects_unusable_backends(backend: object, words: str) -> None:
    result = probe_keyring(1.0, backend=backend)  # type: ignore[arg-type]
    assert not result.ok
    assert words in result.message
    assert 'secret_storage = "file"' in result.message
    # What is wrong, alone, for a screen that lists its own ways on.
    assert words in result.problem and "To go on" not in result.problem


def test_no_keyring_at_all_is_said_in_plain_words() -> None:
    store = KeyringStore(timeout=2.0, backend=fail.Keyring())
    assert store.description == "keyring (none available)"
    with pytest.raises(KeyringUnavailable) as caught:
        store.get_many_tokens(["g1", "g2"])
    message = str(caught.value)
    assert (
        caught.value.problem
        == "No keyring is available: no Secret Service runs here (usual over SSH)."
    )
    assert message.startswith(caught.value.problem)
    assert "gnome-keyring" in message and "--insecure-storage" in message
    # keyring's own advice is for developers, not for someone on an SSH session.
    for developer_words in ("NoKeyringError", "keyrings.alt", "recommended"):
        assert developer_words not in message
    # Within 80 columns it takes three lines at most.
    assert len(textwrap.wrap(message, 78)) <= 3


def test_read_back_mismatch_is_an_error_on_dropping_backend() -> None:
    store = KeyringStore(timeout=1.0, backend=DroppingKeyring())
    with pytest.raises(StorageError) as caught:
        store.put_tokens("g1", TOKENS)
    assert "did not keep the value for grant:g1" in str(caught.value)
    assert_no_secret(error_text(caught.value))
    with pytest.raises(StorageError, match="did not keep the value"):
        store.put_client_secret("c1", CLIENT_SECRET)


def test_raising_backend_gives_storage_error_without_the_secret() -> None:
    store = KeyringStore(timeout=1.0, backend=RaisingKeyring())
    for call in (
        lambda: store.put_client_secret("c1", CLIENT_SECRET),
        lambda: store.put_tokens("g1", TOKENS),
        lambda: store.get_tokens("g1"),
        lambda: store.delete_client_secret("c1"),
    ):
        with pytest.raises(StorageError) as caught:
            call()
        message = str(caught.value)
        assert "KeyringLocked" in message
        assert "--insecure-storage" in message
        assert_no_secret(error_text(caught.value))


def test_unreadable_stored_tokens_give_storage_error_without_the_value() -> None:
    backend = MemoryKeyring()
    backend.set_password(SERVICE, "grant:g1", f"not json {REFRESH}")
    with pytest.raises(StorageError, match="cannot be read") as caught:
        KeyringStore(backend=backend).get_tokens("g1")
    assert_no_secret(error_text(caught.value))


# --- file store ----------------------------------------------------------------------------


def test_file_store_is_created_0600_in_0700_dir_at_creation(paths: Paths) -> None:
    old_umask = os.umask(0)  # the loosest umask: the modes must not depend on it
    try:
        store = FileStore(paths)
        assert not paths.secrets_file.exists()  # nothing is written until a secret is
        store.put_client_secret("c1", CLIENT_SECRET)
    finally:
        os.umask(old_umask)
    assert mode_of(paths.secrets_file) == 0o600
    assert mode_of(paths.config_dir) == 0o700
    assert mode_of(paths.lock_dir) == 0o700
    assert store.description == f"plain file {paths.secrets_file}"
    assert store.kind == "file"


def test_file_store_round_trips_and_rereads_before_modify(paths: Paths) -> None:
    one, two = FileStore(paths), FileStore(paths)
    one.put_tokens("g1", TOKENS)
    two.put_client_secret("c1", CLIENT_SECRET)  # written by a second store: neither is lost
    one.put_client_secret('c2 "quoted" ü', "s2")
    assert two.get_tokens("g1") is not None
    assert one.get_client_secret("c1") == CLIENT_SECRET
    assert two.get_client_secret('c2 "quoted" ü') == "s2"
    one.delete_client_secret("c1")
    one.delete_client_secret("never-there")
    assert two.get_client_secret("c1") is None
    assert two.get_tokens("g1") == TokenSet(ACCESS, TOKENS.expires_at, REFRESH, TOKENS.scopes)


def test_file_store_read_removes_a_killed_writers_temp_only_when_idle(paths: Paths) -> None:
    # A writer killed inside atomic_write leaves a temp file that holds secrets; the next start
    # may only read (a token that is still fresh), so reading must tidy it too.
    store = FileStore(paths)
    store.put_tokens("g1", TOKENS)
    stale = paths.config_dir / ".secrets.toml.deadbeef.tmp"
    stale.write_text(f'schema = 1\n[secrets]\n"grant:g1" = "{REFRESH}"\n')
    with file_lock(paths.secrets_lock, 1):
        assert store.get_tokens("g1") is not None
        assert stale.exists()  # could be a live writer's
    assert store.get_tokens("g1") is not None
    assert not stale.exists()


def test_file_store_tightens_a_loose_existing_file(paths: Paths) -> None:
    paths.config_dir.mkdir(parents=True)
    paths.secrets_file.write_text('schema = 1\n[secrets]\n"client-secret:old" = "x"\n')
    paths.secrets_file.chmod(0o644)
    FileStore(paths).put_client_secret("c1", CLIENT_SECRET)
    assert mode_of(paths.secrets_file) == 0o600
    assert FileStore(paths).get_client_secret("old") == "x"  # kept while adding c1


def test_file_store_corrupt_file_error_does_not_quote_secrets(paths: Paths) -> None:
    paths.config_dir.mkdir(parents=True)
    paths.secrets_file.write_text(
        f'schema = 1\n[secrets]\n"client-secret:c1" = "{CLIENT_SECRET}"\n"grant:g1" = {REFRESH}\n'
    )
    before = paths.secrets_file.read_bytes()
    store = FileStore(paths)
    for call in (lambda: store.get_client_secret("c1"), lambda: store.put_tokens("g2", TOKENS)):
        with pytest.raises(StorageError) as caught:
            call()
        assert str(paths.secrets_file) in str(caught.value)
        assert "line 4" in str(caught.value)
        assert_no_secret(error_text(caught.value))
    assert paths.secrets_file.read_bytes() == before


def test_open_store_uses_file_only_when_opted_in(paths: Paths) -> None:
    assert isinstance(open_store(paths, "keyring"), KeyringStore)
    assert isinstance(open_store(paths, "file"), FileStore)
    assert isinstance(open_store(paths, "keyring", insecure=True), FileStore)
    assert open_store(paths, "keyring", timeout=0.7).timeout == 0.7  # type: ignore[attr-defined]
    with pytest.raises(StorageError, match="Unknown secret storage"):
        open_store(paths, "vault")


# --- secrets never leak ------------------------------------------------------------------------


def test_secrets_never_appear_in_config_or_error_text(
    paths: Paths, hanging: HangingKeyring
) -> None:
    when = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    for store in (KeyringStore(), FileStore(paths)):
        store.put_client_secret("client-1", CLIENT_SECRET)
        store.put_tokens("g1", TOKENS)

    def save(config):  # type: ignore[no-untyped-def]
        config.grants["g1"] = Grant("g1", Kind.WEB, "client-1", TOKENS.scopes, when)
        config.connections["Acme"] = Connection(
            "Acme", Kind.WEB, "client-1", "t1", "Acme Ltd", "g1", created=when
        )

    ConfigStore(paths).update(save)
    config_text = paths.config_file.read_text()
    assert "client-1" in config_text
    assert_no_secret(config_text)

    errors: list[BaseException] = []
    for backend, timeout in (
        (hanging, 0.3),
        (RaisingKeyring(), 1.0),
        (DroppingKeyring(), 1.0),
    ):
        store = KeyringStore(timeout=timeout, backend=backend)
        for call in (
            lambda store=store: store.put_client_secret("client-1", CLIENT_SECRET),
            lambda store=store: store.put_tokens("g1", TOKENS),
        ):
            with pytest.raises(StorageError) as caught:
                call()
            errors.append(caught.value)
    for probe_backend in (RaisingKeyring(), DroppingKeyring()):
        assert_no_secret(probe_keyring(1.0, backend=probe_backend).message)
    assert len(errors) == 6
    for exc in errors:
        assert_no_secret(str(exc))
        assert_no_secret(repr(exc))
        assert_no_secret(error_text(exc))


def test_file_store_puts_many_values_in_one_write_and_reads_them_back(tmp_path: Path) -> None:
    store = FileStore(Paths(tmp_path / "cfg"))
    store.put_many({"client-secret:a": CLIENT_SECRET, "grant:g": "{}"})
    assert store.get_many(["client-secret:a", "grant:g"]) == {
        "client-secret:a": CLIENT_SECRET,
        "grant:g": "{}",
    }
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    store.delete_many(["client-secret:a", "grant:g", "not-there"])
    assert store.get_many(["client-secret:a", "grant:g"]) == {
        "client-secret:a": None,
        "grant:g": None,
    }


def test_file_store_write_that_is_not_kept_is_an_error(tmp_path: Path) -> None:
    """The plain file is read back after every write too (security.md 29)."""

    class LosingFileStore(FileStore):
        def _modify(self, change: Callable[[dict[str, str]], None]) -> None:
            """The write is lost: the file stays as it was."""

    store = LosingFileStore(Paths(tmp_path / "cfg"))
    with pytest.raises(StorageError, match="did not keep the value for client-secret:a"):
        store.put_many({"client-secret:a": CLIENT_SECRET, "grant:g": "{}"})
    with pytest.raises(StorageError, match="did not keep"):
        store.put_tokens("g", TokenSet("access", time.time() + 600, "refresh"))


def test_keyring_deletes_many_keys_and_says_which_it_could_not() -> None:
    backend = MemoryKeyring()
    store = KeyringStore(backend=backend)
    store.set("a", "1")
    store.set("b", "2")
    store.delete_many(["a", "b", "never-saved"])
    assert backend.values == {}
    with pytest.raises(StorageError, match="could not delete 2 keys"):
        KeyringStore(backend=RaisingKeyring()).delete_many(["a", "b"])


def test_the_secrets_a_health_check_needs_come_in_one_read() -> None:
    store = KeyringStore(backend=MemoryKeyring())
    store.put_client_secret("app", CLIENT_SECRET)
    store.put_tokens("g1", TOKENS)
    real = store.get_many
    reads: list[list[str]] = []

    def counted(keys: list[str]) -> dict[str, str | None]:
        reads.append(keys)
        return real(keys)

    store.get_many = counted  # type: ignore[method-assign]
    tokens, secrets = store.get_tokens_and_secrets(["g1", "g2"], ["app", "other"])
    assert len(reads) == 1
    assert tokens == {"g1": TokenSet(ACCESS, TOKENS.expires_at, REFRESH, TOKENS.scopes), "g2": None}
    assert secrets == {"app": CLIENT_SECRET, "other": None}
