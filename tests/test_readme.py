"""The README's commands are the ones CI runs, and its CLI section matches the parser."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def _ci_test_command() -> str:
    text = (ROOT / ".ci" / "run").read_text()
    match = re.search(r'^TEST_COMMAND="(.+)"$', text, re.M)
    assert match, ".ci/run defines TEST_COMMAND"
    return match.group(1)


def test_readme_test_command_is_the_one_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"\n{_ci_test_command()}\n" in readme


def test_readme_first_command_runs_the_demo() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.+?)\n```", readme, re.S)
    assert blocks[0].endswith(".venv/bin/xero-tui --demo")
    assert blocks[0].startswith("python3 -m venv .venv && .venv/bin/pip install")


def test_readme_documents_every_subcommand() -> None:
    from xero_tui.cli import build_parser

    readme = (ROOT / "README.md").read_text()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in sub.choices:  # type: ignore[union-attr]
        assert f"xero-tui {name}" in readme
