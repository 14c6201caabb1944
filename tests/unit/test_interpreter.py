"""The suite tests the Python it was asked to: pytest itself runs the X.Y that scripts/test was given.

`FITFLIX_PYTHON=python3.13 bash scripts/test` runs pytest on 3.13; tests/live/test_interpreter.py
checks that the servers it starts run that interpreter too."""

from __future__ import annotations

import os
import platform
import sys

import pytest

# Set by scripts/test: the X.Y the run was asked for (3.11 by default, FITFLIX_PYTHON's otherwise).
EXPECTED_PYTHON = os.environ.get("FITFLIX_EXPECT_PYTHON")


@pytest.mark.skipif(EXPECTED_PYTHON is None, reason="run by scripts/test, which says which Python it meant")
def test_the_suite_runs_the_python_scripts_test_asked_for():
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == EXPECTED_PYTHON, (
        f"scripts/test set the run up for Python {EXPECTED_PYTHON}, but pytest runs {platform.python_version()} "
        f"({sys.executable})"
    )
