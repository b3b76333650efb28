"""Programs some tests need (curl, Chromium, Mosquitto): skipped where missing, failed in CI.

On a developer's machine a missing program skips the tests that need it, saying how to install
it. In CI (`CI=true`, which `.ci/run` and the usual CI services set) every such program is
installed, so a missing one is a failure: a skip there would hide that the tests never ran.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> NoReturn:
    """Skip the test for `reason`, or fail it in CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: CI installs what the tests need)", pytrace=False)
    pytest.skip(reason)


def require_tool(*names: str, hint: str) -> str:
    """The path of the first of `names` found (on PATH, or a path as given); else `unavailable`
    with `hint` saying how to install it."""
    for name in names:
        found = shutil.which(name)
        if found is not None:
            return found
    unavailable(f"{' or '.join(names)} not found; {hint}")
