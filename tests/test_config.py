"""The connection store: `config.toml` round trips, private modes, atomic and locked writes.

Properties 32-35 of docs/security.md: atomic writes under kill -9, 0600/0700 after every write,
no lost change between two processes, and a corrupt or unknown-version file never overwritten.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import stat
import subprocess
import sys
import threading
import time
import tomllib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.procs import DROP_ROOT_FILE_CAPS, wait_gone
from tests.support.saved import WHEN, make_connection, make_grant
from xero_tui.core.config import Config, ConfigStore, dump, parse
from xero_tui.core.errors import ConfigError, StorageError
from xero_tui.core.fsutil import atomic_write, ensure_private_dir, remove_stale_temps
from xero_tui.core.locks import file_lock
from xero_tui.core.models import Kind, Status
from xero_tui.core.paths import Paths

NAMES = [
    "Acme Ltd",
    "Acme.Ltd.v2",
    'The "Quoted" Co',
    "Back\\slash 'n' apostrophes",
    "Ōtautahi Ngā Mahi 🥝",
    "[not a table]",
    "tab\there",
    "a = b # not a comment",
]


@pytest.fixture
def paths(isolated_env: Path) -> Paths:
    return Paths.from_env()


@pytest.fixture
def store(paths: Paths) -> ConfigStore:
    return ConfigStore(paths)


def sample_config() -> Config:
    nz = timezone(timedelta(hours=13))
    config = Config(secret_storage="file")
    config.grants["g1"] = make_grant("g1", auth_event_id="ae-1", last_refreshed=WHEN)
    config.grants["g.2"] = make_grant("g.2", kind=Kind.CUSTOM, scopes=("accounting.contacts",))
    for index, name in enumerate(NAMES):
        config.connections[name] = make_connection(name, "g1" if index % 2 else "g.2")
    config.connections["Acme Ltd"].last_refreshed = datetime(2026, 12, 1, 9, 30, 5, tzinfo=nz)
    config.connections["Acme Ltd"].status = Status.NEEDS_RECONNECT
    config.connections["Acme Ltd"].pkce = False
    config.connections["Acme Ltd"].connection_id = None
    config.connections["Acme Ltd"].tenant_type = "PRACTICE"
    return config


def replace_all(config: Config, target: Config) -> None:
    config.secret_storage = target.secret_storage
    config.grants = dict(target.grants)
    config.connections = dict(target.connections)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def temps_beside(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


# --- round trips and format ----------------------------------------------------------------


def test_config_round_trip_with_unicode_and_quoted_names(store: ConfigStore) -> None:
    config = sample_config()
    store.update(lambda c: replace_all(c, config))
    loaded = store.load()
    assert loaded == config
    for name, conn in loaded.connections.items():
        assert conn.name == name
        assert conn.created.tzinfo is not None
    assert loaded.grants["g1"].auth_event_id == "ae-1"
    assert loaded.grants["g.2"].last_refreshed is None
    assert loaded.connections["Acme Ltd"].connection_id is None
    assert loaded.connections["Acme Ltd"].status is Status.NEEDS_RECONNECT
    assert isinstance(loaded.connections["Acme Ltd"].kind, Kind)
    # A human-readable file in the documented shape.
    text = store.path.read_text()
    assert text.startswith('schema = 1\nsecret_storage = "file"\n\n[grants."g.2"]\nkind = "custom"')
    assert '[connections."Acme Ltd"]' in text
    assert 'grant = "g1"' in text
    assert "created = 2026-11-28T10:00:00Z" in text
    assert "last_refreshed = 2026-11-30T20:30:05Z" in text
    assert "connection_id" not in text.split('[connections."Acme Ltd"]')[1].split("\n\n")[0]


def test_dump_is_deterministic_and_sorted() -> None:
    config = sample_config()
    shuffled = Config(
        secret_storage="file",
        grants=dict(reversed(config.grants.items())),
        connections=dict(reversed(config.connections.items())),
    )
    text = dump(config)
    assert dump(shuffled) == text
    assert dump(parse(text, Path("config.toml"))) == text
    headers = [line for line in text.splitlines() if line.startswith("[connections.")]
    names = [next(iter(tomllib.loads(h)["connections"])) for h in headers]
    assert names == sorted(NAMES)


def test_dump_rejects_a_key_that_disagrees_with_the_name() -> None:
    config = Config(connections={"Old": make_connection("New")})
    with pytest.raises(ValueError, match="named 'New'"):
        dump(config)


text_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20
).filter(lambda s: s.strip() != "")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=st.lists(text_values, min_size=1, max_size=4, unique=True),
    tenant=text_values,
    scopes=st.lists(text_values, max_size=4),
    seconds=st.integers(min_value=0, max_value=4_000_000_000),
)
def test_config_round_trip_any_text(
    names: list[str], tenant: str, scopes: list[str], seconds: int
) -> None:
    when = datetime.fromtimestamp(seconds, UTC)
    config = Config()
    # Grant ids are the app's own (they name lock files); every other value is any text.
    config.grants["g1"] = make_grant("g1", scopes=tuple(scopes), created=when)
    for name in names:
        config.connections[name] = make_connection(
            name, "g1", tenant_name=tenant, tenant_id=tenant, scopes=tuple(scopes)
        )
    text = dump(config)
    assert parse(text, Path("config.toml")) == config
    assert dump(parse(text, Path("config.toml"))) == text


def test_missing_file_loads_empty_and_creates_nothing(store: ConfigStore, paths: Paths) -> None:
    assert store.load() == Config()
    assert not paths.config_dir.exists()
    assert store.update(lambda c: "nothing changed") == "nothing changed"
    assert not paths.config_file.exists()


def test_update_returns_result_and_writes_only_on_change(store: ConfigStore) -> None:
    assert store.update(lambda c: c.connections.setdefault("A", make_connection("A")).name) == "A"
    # A hand-edited file that means the same thing is left exactly as the user wrote it.
    text = store.path.read_text().replace('kind = "web"', 'kind = "web"   # edited by hand', 1)
    store.path.write_text(text)
    before = store.path.stat()
    store.update(lambda c: None)
    assert store.path.read_text() == text
    assert store.path.stat().st_ino == before.st_ino
    store.update(lambda c: setattr(c.connections["A"], "tenant_name", "Renamed"))
    assert store.path.stat().st_ino != before.st_ino
    assert store.load().connections["A"].tenant_name == "Renamed"


def test_load_of_1000_connections_is_fast(store: ConfigStore) -> None:
    def fill(config: Config) -> None:
        config.grants["g1"] = make_grant()
        for index in range(1000):
            name = f"Organisation {index:04d} Ltd"
            config.connections[name] = make_connection(name)

    started = time.perf_counter()
    store.update(fill)
    update_seconds = time.perf_counter() - started
    started = time.perf_counter()
    loaded = store.load()
    load_seconds = time.perf_counter() - started
    assert len(loaded.connections) == 1000
    assert load_seconds < 1.0, load_seconds
    assert update_seconds < 2.0, update_seconds


def test_a_hand_edit_of_a_large_config_is_read_at_once(store: ConfigStore, paths: Paths) -> None:
    """Whatever is read is the file as it is now: nothing parsed earlier is served instead."""

    def fill(config: Config) -> None:
        config.grants["g1"] = make_grant()
        for index in range(1000):
            name = f"Organisation {index:04d} Ltd"
            config.connections[name] = make_connection(name)

    store.update(fill)
    assert store.load().connections["Organisation 0007 Ltd"].tenant_name != "Edited by hand"
    text = paths.config_file.read_text()
    edited = text.replace(
        'tenant_name = "Organisation 0007 Ltd"', 'tenant_name = "Edited by hand"', 1
    )
    assert edited != text
    paths.config_file.write_text(edited)
    assert store.load().connections["Organisation 0007 Ltd"].tenant_name == "Edited by hand"
    assert set(paths.config_dir.iterdir()) <= {paths.config_file, paths.lock_dir}


# --- modes --------------------------------------------------------------------------------


def test_config_mode_0600_and_dir_0700_after_every_write(store: ConfigStore, paths: Paths) -> None:
    old_umask = os.umask(0)  # the loosest umask: the modes must not depend on it
    try:
        for index in range(3):
            store.update(
                lambda c, i=index: c.connections.update({f"c{i}": make_connection(f"c{i}")})
            )
            assert mode_of(paths.config_file) == 0o600
            assert mode_of(paths.config_dir) == 0o700
            assert mode_of(paths.lock_dir) == 0o700
            assert mode_of(paths.config_lock) == 0o600
        # A file and directory that already existed with looser bits are tightened on write.
        paths.config_file.chmod(0o644)
        paths.config_dir.chmod(0o755)
        store.update(lambda c: c.connections.pop("c0"))
        assert mode_of(paths.config_file) == 0o600
        assert mode_of(paths.config_dir) == 0o700
        # ... and by an update that changes nothing.
        paths.config_file.chmod(0o644)
        store.update(lambda c: None)
        assert mode_of(paths.config_file) == 0o600
    finally:
        os.umask(old_umask)


def test_config_file_is_never_visible_with_looser_mode(tmp_path: Path) -> None:
    target = tmp_path / "private" / "config.toml"
    target.parent.mkdir()
    seen: dict[str, int] = {}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for entry in os.scandir(target.parent):
                with contextlib.suppress(FileNotFoundError):  # replaced meanwhile
                    mode = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
                    seen[entry.name] = seen.get(entry.name, 0) | mode

    old_umask = os.umask(0)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        for index in range(200):
            atomic_write(target, b"x" * (20_000 + index))
    finally:
        stop.set()
        watcher.join()
        os.umask(old_umask)
    assert seen, "the watcher saw nothing"
    assert all(mode == 0o600 for mode in seen.values()), seen
    assert temps_beside(target) == []


# --- atomic under kill -9 ------------------------------------------------------------------

# A parent that imports once and forks a writer per kill, so 30 kills cost forks, not
# interpreter starts. "write" children loop on the raw write step under the lock (most of
# their time is inside atomic_write); "update" children loop on the full update path.
_WRITER_ZYGOTE = """
import os, signal, sys
from pathlib import Path
from xero_tui.core.config import ConfigStore, parse
from xero_tui.core.fsutil import atomic_write, ensure_private_dir, remove_stale_temps
from xero_tui.core.locks import file_lock
from xero_tui.core.paths import Paths

paths = Paths(Path(sys.argv[1]))
store = ConfigStore(paths)
contents = [Path(p).read_bytes() for p in sys.argv[2:4]]
configs = [parse(c.decode(), paths.config_file) for c in contents]
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed children are reaped by the kernel

def first_change():
    # Start with the content the file does not hold, so any finished write is visible.
    return 1 if paths.config_file.read_bytes() == contents[0] else 0

def write_loop():
    i = first_change()
    while True:
        with file_lock(paths.config_lock, 10):
            remove_stale_temps(paths.config_file)
            atomic_write(paths.config_file, contents[i % 2])
        i += 1

def update_loop():
    i = first_change()
    while True:
        target = configs[i % 2]
        def change(c, target=target):
            c.grants = dict(target.grants)
            c.connections = dict(target.connections)
        store.update(change)
        i += 1

print("ready", flush=True)
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        try:
            (write_loop if line.strip() == "write" else update_loop)()
        finally:
            os._exit(1)
    print(pid, flush=True)
"""


def test_config_write_is_atomic_under_kill(
    store: ConfigStore, paths: Paths, tmp_path: Path
) -> None:
    def build(count: int, tag: str) -> Config:
        config = Config()
        config.grants["g1"] = make_grant()
        for index in range(count):
            name = f"{tag} organisation {index:04d}"
            config.connections[name] = make_connection(name, tenant_name=tag * 40)
        return config

    config_a, config_b = build(150, "A"), build(100, "B")
    contents = {dump(config_a).encode(): "A", dump(config_b).encode(): "B"}
    files = []
    for data, tag in contents.items():
        files.append(tmp_path / f"{tag}.toml")
        files[-1].write_bytes(data)
    store.update(lambda c: replace_all(c, config_a))

    zygote = subprocess.Popen(
        [sys.executable, "-c", _WRITER_ZYGOTE, str(paths.config_dir), *map(str, files)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert zygote.stdin is not None and zygote.stdout is not None
    rng = random.Random(32)
    seen_content: set[str] = set()
    temps_left = 0
    try:
        assert zygote.stdout.readline().strip() == "ready"
        # At least 30 kills; on a loaded machine up to 90, until both contents were seen and a
        # kill has landed inside a write.
        for kill in range(90):
            if kill >= 30 and len(seen_content) == 2 and temps_left:
                break
            mode = "write" if kill % 3 else "update"
            zygote.stdin.write(mode + "\n")
            zygote.stdin.flush()
            pid = int(zygote.stdout.readline())
            # Later kills wait longer, so a busy machine still sees whole writes land.
            stretch = 1 + (kill % 30) / 5
            time.sleep(rng.uniform(0.001, (0.015 if mode == "write" else 0.08) * stretch))
            os.kill(pid, 9)
            wait_gone(pid)

            data = paths.config_file.read_bytes()
            assert data in contents, f"kill {kill}: the file is neither the old nor the new one"
            seen_content.add(contents[data])
            temps_left += bool(temps_beside(paths.config_file))
            assert mode_of(paths.config_file) == 0o600
            # The next reader tidies what the killed writer left, and reads a whole file.
            assert store.load() in (config_a, config_b)
            assert temps_beside(paths.config_file) == []
    finally:
        zygote.stdin.close()
        zygote.kill()
        zygote.wait()
    assert seen_content == {"A", "B"}, "the writers never got to write both contents"
    assert temps_left > 0, "no kill landed inside a write"


# --- two writers ---------------------------------------------------------------------------

_ADDER = """
import sys
from datetime import datetime, timezone
from pathlib import Path
from xero_tui.core.config import ConfigStore
from xero_tui.core.models import Connection, Kind
from xero_tui.core.paths import Paths

store = ConfigStore(Paths(Path(sys.argv[1])))
who = sys.argv[2]
when = datetime(2026, 11, 28, tzinfo=timezone.utc)
print("ready", flush=True)
sys.stdin.readline()
for i in range(30):
    name = f"{who}-{i:02d}"
    def add(config, name=name):
        config.connections[name] = Connection(name, Kind.WEB, "c", "t-" + name, name, "g1", created=when)
    store.update(add)
"""


def test_concurrent_updates_lose_no_change(store: ConfigStore, paths: Paths) -> None:
    store.update(lambda c: c.grants.update(g1=make_grant()))
    adders = [
        subprocess.Popen(
            [sys.executable, "-c", _ADDER, str(paths.config_dir), who],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("left", "right")
    ]
    for adder in adders:
        assert adder.stdout is not None and adder.stdout.readline().strip() == "ready"
    for adder in adders:  # both start together, so their updates interleave
        assert adder.stdin is not None
        adder.stdin.write("go\n")
        adder.stdin.flush()
    for adder in adders:
        _, err = adder.communicate(timeout=60)
        assert adder.returncode == 0, err
    names = set(store.load().connections)
    expected = {f"{who}-{i:02d}" for who in ("left", "right") for i in range(30)}
    assert names == expected
    assert "g1" in store.load().grants


def test_update_waits_for_the_lock_and_names_it_on_timeout(paths: Paths) -> None:
    store = ConfigStore(paths, lock_timeout=0.2)
    store.update(lambda c: c.grants.update(g1=make_grant()))
    with file_lock(paths.config_lock, 1):
        started = time.monotonic()
        with pytest.raises(StorageError) as caught:
            store.update(lambda c: c.connections.update(X=make_connection("X")))
        assert time.monotonic() - started < 1.0
        assert str(caught.value) == (
            f"Another xero-tui process holds {paths.config_lock}; try again."
        )
        assert store.load().grants  # readers need no lock
    assert "X" not in store.load().connections


def test_the_config_lock_is_never_opened_through_a_symlink(
    store: ConfigStore, paths: Paths, tmp_path: Path
) -> None:
    """A lock file planted as a symlink (security.md 46) stops the write; its target is untouched."""
    target = tmp_path / "someone-elses-file"
    target.write_text("theirs")
    paths.lock_dir.mkdir(parents=True)
    paths.config_lock.symlink_to(target)
    with pytest.raises(StorageError, match="Could not lock"):
        store.update(lambda config: setattr(config, "secret_storage", "file"))
    assert target.read_text() == "theirs"
    assert not paths.config_file.exists()


def test_a_symlinked_config_is_written_through_the_link(
    store: ConfigStore, paths: Paths, tmp_path: Path
) -> None:
    """A config.toml kept in a dotfiles checkout stays a link to it (security.md 46)."""
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir(mode=0o700)
    kept = dotfiles / "xero-tui.toml"
    kept.write_text("schema = 1\n")
    paths.config_dir.mkdir(parents=True, mode=0o700)
    paths.config_file.symlink_to(kept)
    store.update(lambda config: setattr(config, "secret_storage", "file"))
    assert paths.config_file.is_symlink() and paths.config_file.resolve() == kept
    assert 'secret_storage = "file"' in kept.read_text()


def test_the_mode_is_given_when_the_file_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only set afterwards: the bytes never sit in a looser file (security.md 30, 33)."""
    at_creation: list[int] = []
    fchmod = os.fchmod

    def noting_fchmod(fd: int, mode: int) -> None:
        at_creation.append(stat.S_IMODE(os.fstat(fd).st_mode))
        fchmod(fd, mode)

    monkeypatch.setattr(os, "fchmod", noting_fchmod)
    umask = os.umask(0)
    try:
        atomic_write(tmp_path / "secrets.toml", b"secret")
    finally:
        os.umask(umask)
    assert at_creation == [0o600]
    assert stat.S_IMODE((tmp_path / "secrets.toml").stat().st_mode) == 0o600


def test_a_change_that_would_not_read_back_is_not_written(store: ConfigStore, paths: Paths) -> None:
    def add(config: Config) -> None:
        config.grants["g1"] = make_grant()
        config.connections["Acme"] = make_connection("Acme")

    store.update(add)
    before = paths.config_file.read_bytes()
    with pytest.raises(ConfigError, match="would not read back"):
        store.update(lambda config: setattr(config.connections["Acme"], "tenant_name", ""))
    assert paths.config_file.read_bytes() == before
    assert store.load().connections["Acme"].tenant_name == "Acme"


def test_a_new_private_dir_is_0700_whatever_the_umask(tmp_path: Path) -> None:
    umask = os.umask(0o277)
    try:
        ensure_private_dir(tmp_path / "config")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "config").stat().st_mode) == 0o700


def test_stale_temps_are_removed_only_when_no_writer_holds_the_lock(
    store: ConfigStore, paths: Paths
) -> None:
    store.update(lambda c: c.grants.update(g1=make_grant()))
    stale = paths.config_dir / ".config.toml.deadbeef.tmp"
    stale.write_text("half a file")
    unrelated = paths.config_dir / ".other.toml.deadbeef.tmp"
    unrelated.write_text("not ours")
    with file_lock(paths.config_lock, 1):
        store.load()
        assert stale.exists()  # could be a live writer's
    store.load()
    assert not stale.exists()
    assert unrelated.exists()
    stale.write_text("again")
    store.update(lambda c: None)
    assert not stale.exists()
    assert remove_stale_temps(paths.config_file) == 0


# --- bad files are reported, never overwritten --------------------------------------------


def _write_sample(store: ConfigStore) -> str:
    store.update(lambda c: replace_all(c, sample_config()))
    return store.path.read_text()


def _assert_refused(store: ConfigStore, *fragments: str) -> ConfigError:
    before = store.path.read_bytes()
    with pytest.raises(ConfigError) as loaded:
        store.load()
    called = []
    with pytest.raises(ConfigError) as updated:
        store.update(lambda c: called.append(c))
    assert called == []
    assert str(updated.value) == str(loaded.value)
    message = str(loaded.value)
    assert str(store.path) in message
    for fragment in fragments:
        assert fragment in message, message
    assert store.path.read_bytes() == before
    assert temps_beside(store.path) == []
    return loaded.value


def test_corrupt_config_is_never_overwritten(store: ConfigStore) -> None:
    lines = _write_sample(store).splitlines()
    lines[6] = "tenant_id 'missing equals'"
    store.path.write_text("\n".join(lines) + "\n")
    _assert_refused(
        store,
        f"{store.path} line 7: Expected '='",
        "— fix or move the file; xero-tui will not overwrite it.",
    )


def test_config_that_is_not_utf8_is_never_overwritten(store: ConfigStore) -> None:
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(b'schema = 1\n\n[grants.g1]\nkind = "w\xffb"\n')
    _assert_refused(store, "line 4", "not UTF-8")


def test_unknown_schema_version_is_never_overwritten(store: ConfigStore) -> None:
    text = _write_sample(store)
    store.path.write_text(text.replace("schema = 1", "schema = 2", 1))
    _assert_refused(store, "line 1", "schema = 2 is not a version this xero-tui reads", "upgrade")


@pytest.mark.parametrize(
    ("old", "new", "fragments"),
    [
        (
            "tenant_id = ",
            "tenant_id = 5  # a number by mistake",
            ["[connections.\"Acme Ltd\"] field 'tenant_id' must be a string, not an integer"],
        ),
        ("tenant_name = ", None, ["[connections.\"Acme Ltd\"] is missing the field 'tenant_name'"]),
        ("tenant_type = ", 'tenant_typo = "PRACTICE"', ["unknown field 'tenant_typo'"]),
        ("kind = ", 'kind = "desktop"', ['field \'kind\' must be one of "web", "pkce", "custom"']),
        ("status = ", 'status = "broken"', ["field 'status' must be one of"]),
        ("pkce = ", 'pkce = "no"', ["field 'pkce' must be true or false, not a string"]),
        ("created = ", "created = 2026-11-28", ["field 'created' must be a date-time"]),
        ("secret_storage = ", 'secret_storage = "vault"', ["field 'secret_storage'"]),
    ],
    ids=[
        "wrong-type",
        "missing",
        "unknown",
        "bad-kind",
        "bad-status",
        "bad-bool",
        "date",
        "storage",
    ],
)
def test_invalid_field_is_named_with_table_and_line(
    store: ConfigStore, old: str, new: str | None, fragments: list[str]
) -> None:
    lines = _write_sample(store).splitlines()
    header = lines.index('[connections."Acme Ltd"]')
    # The field's line inside the "Acme Ltd" table, or at the top for top-level settings.
    start = 0 if old == "secret_storage = " else header
    index = next(i for i in range(start, len(lines)) if lines[i].startswith(old))
    if new is None:
        del lines[index]
        expected_line = header + 1
    else:
        lines[index] = new
        expected_line = index + 1
    store.path.write_text("\n".join(lines) + "\n")
    error = _assert_refused(store, *fragments)
    assert f"line {expected_line}:" in str(error), (expected_line, str(error))


def test_read_only_dir_gives_one_sentence_and_keeps_the_file(
    store: ConfigStore, paths: Paths
) -> None:
    _write_sample(store)
    before = paths.config_file.read_bytes()
    script = (
        DROP_ROOT_FILE_CAPS
        + r"""
from pathlib import Path
from xero_tui.core.config import ConfigStore
from xero_tui.core.errors import ConfigError
from xero_tui.core.paths import Paths
try:
    ConfigStore(Paths(Path(sys.argv[1]))).update(lambda c: c.connections.clear())
except ConfigError as exc:
    print(exc)
"""
    )

    def run() -> str:
        result = subprocess.run(
            [sys.executable, "-c", script, str(paths.config_dir)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    paths.config_dir.chmod(0o500)
    try:
        message = run()
        assert message == (
            f"Could not write {paths.config_file}: Permission denied; the file was left as it was."
        )
        # Without the lock dir, the sentence still names the config file.
        paths.config_dir.chmod(0o700)
        paths.config_lock.unlink()
        paths.lock_dir.rmdir()
        paths.config_dir.chmod(0o500)
        message = run()
        assert message == (
            f"Could not write {paths.config_file}: could not create {paths.lock_dir} "
            "(Permission denied)."
        )
    finally:
        paths.config_dir.chmod(0o700)
    assert paths.config_file.read_bytes() == before
    assert temps_beside(paths.config_file) == []


def test_disk_full_keeps_the_original_and_leaves_no_temp(store: ConfigStore, paths: Paths) -> None:
    store.update(lambda c: c.grants.update(g1=make_grant()))
    before = paths.config_file.read_bytes()

    def grow(config: Config) -> None:
        for index in range(200):
            config.connections[f"c{index}"] = make_connection(f"c{index}")

    # A file-size limit makes the write fail part-way with EFBIG, as a full disk fails it
    # with ENOSPC; Python already ignores SIGXFSZ, so the write returns the error.
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))
    try:
        with pytest.raises(ConfigError) as caught:
            store.update(grow)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(caught.value) == (
        f"Could not write {paths.config_file}: File too large; the file was left as it was."
    )
    assert paths.config_file.read_bytes() == before
    assert temps_beside(paths.config_file) == []


def test_an_unfinished_sign_in_round_trips_and_a_bad_field_names_its_line(tmp_path: Path) -> None:
    from xero_tui.core.models import Kind, PendingSignIn

    pending = PendingSignIn(
        "0123456789abcdef0123456789abcdef",
        "Acme sync",
        Kind.WEB,
        "0123456789ABCDEF0123456789ABCDEF",
        "http://localhost:8719/callback",
        ("openid", "offline_access"),
        WHEN,
        auth_event_id="event-1",
        renewing=("Acme sync - Beta",),
    )
    config = Config(pending={pending.grant_id: pending})
    text = dump(config)
    assert parse(text, tmp_path / "config.toml") == config
    broken = text.replace('renewing = ["Acme sync - Beta"]', "renewing = [1]")
    line = broken.splitlines().index("renewing = [1]") + 1
    with pytest.raises(ConfigError, match=f"line {line}.*renewing.*array of strings"):
        parse(broken, tmp_path / "config.toml")
