"""The rule for missing system parts: a skip naming the package, but a failure under CI=true."""

from __future__ import annotations

import shutil

import pytest

from tests.real import conftest


@pytest.fixture
def nothing_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)


def test_missing_binary_skips_naming_the_package_on_a_developer_machine(
    nothing_installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="install the Debian package libsecret-tools"):
        conftest.require("secret-tool", "libsecret-tools")


def test_missing_binary_fails_under_ci(
    nothing_installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="install the Debian package chromium"):
        conftest.require("chromium", "chromium")


def test_missing_python_package_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no_such_module_here"):
        conftest.require_module("no_such_module_here", "pip install -e '.[test]'")


def test_present_binary_is_returned() -> None:
    assert conftest.require("sh", "dash").endswith("/sh")
