"""The tree stays lint-clean, formatted and typed: ruff (check, format) and mypy as configured
in the root pyproject.toml.

Both run as `make lint` runs them, from the workspace root with this environment's tools, so
`make test` and CI fail on a lint finding or a type error like on any failing test. mypy keeps
its cache in .mypy_cache (a cold run takes seconds, a warm one well under one).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240

pytestmark = [pytest.mark.slow, pytest.mark.timeout(TIMEOUT_S + 30)]


def _check(*command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode == 0, (
        f"`{' '.join(command)}` exited with {result.returncode}:\n{result.stdout}{result.stderr}"
    )


def test_ruff_finds_nothing() -> None:
    _check("ruff", "check", ".")


def test_ruff_format_changes_nothing() -> None:
    _check("ruff", "format", "--check", ".")


def test_mypy_finds_nothing() -> None:
    _check("mypy")
