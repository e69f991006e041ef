"""The stress suite: every test here is marked `stress`, and the run ends with one table of figures.

`python -m pytest -m stress` runs just these and prints the table; a plain `pytest` run (CI) runs
them with everything else and prints it too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stress.harness import issued_secrets
from tests.stress.registry import FIGURES, SEEN, table
from xero_tui.emulator import Emulator
from xero_tui.emulator.replies import Reply

HERE = Path(__file__).resolve().parent
# The leak scan reads what every other scenario left behind, so it runs after all of them.
LAST_MODULE = "test_leaks.py"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    last = []
    for item in items:
        path = Path(item.path).resolve()
        if HERE in path.parents:
            item.add_marker(pytest.mark.stress)
            if path.name == LAST_MODULE:
                last.append(item)
    for item in last:
        items.remove(item)
    items.extend(last)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.write_sep("=", "stress figures")
    # In scenario order ("9a" after "8"), whatever order the modules ran in.
    ordered = sorted(FIGURES, key=lambda f: (int(re.match(r"\d+", f.scenario)[0]), f.scenario))
    for line in table(ordered):
        terminalreporter.write_line(line)
    total = sum(f.seconds for f in FIGURES)
    terminalreporter.write_line(f"scenario time in total: {total:.0f} s")


@pytest.fixture(autouse=True)
def scanned_dirs(tmp_path: Path) -> Iterator[None]:
    """Each test's temporary tree (config dir, keyring file, outputs) goes to the leak scan."""
    SEEN.dirs.append(tmp_path)
    yield


@pytest.fixture
def emu(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """The shared emulator fixture; every token it issues joins the secrets the leak scan looks
    for (recorded as issued, since revocation makes the emulator forget access tokens)."""
    state = emulator._state
    issue = state._issue

    def recording_issue(*args: Any, **kwargs: Any) -> Reply:
        reply = issue(*args, **kwargs)
        body = json.loads(reply.body)
        SEEN.secrets.update(
            body[key] for key in ("access_token", "refresh_token", "id_token") if body.get(key)
        )
        return reply

    monkeypatch.setattr(state, "_issue", recording_issue)
    try:
        yield emulator
    finally:
        SEEN.secrets |= issued_secrets(emulator)
