"""The project's static checks hold over the whole tree: ruff (pyproject `[tool.ruff.lint]`)
and mypy (pyproject `[tool.mypy]`). Both run here so that `./run-tests` (CI) keeps them green.

To list what a branch introduced: `ruff check --output-format concise .` and `mypy` (from the
repo root; both read pyproject).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_reports_nothing_with_the_project_settings() -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install '.[test]')")
    res = subprocess.run([ruff, "check", "--output-format", "concise", "."], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-4000:]


def test_mypy_reports_nothing_with_the_project_settings() -> None:
    # Through the interpreter running the tests, so it sees the same site-packages (stubs);
    # the cache dir (pyproject) makes reruns incremental: ~5 s warm, ~20 s cold, alone.
    try:
        import mypy  # noqa: F401
    except ImportError:
        pytest.skip("mypy is not installed (pip install '.[test]')")
    res = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:]
