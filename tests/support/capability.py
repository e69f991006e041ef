"""A test that needs something the host lacks: a skip that says what, but a failure under CI=true.

CI (.ci/run) provides every capability the suite uses, so a skip there would hide that a
property went untested.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(what: str) -> NoReturn:
    """Skip naming `what` is missing; under CI=true, fail instead."""
    if in_ci():
        pytest.fail(f"{what} (CI provides it, so it must be there)", pytrace=False)
    pytest.skip(what)
