"""The tree stays lint-clean and typed: ruff and mypy as configured in the root pyproject.toml.

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
        f"`{' '.join(command)}` exited with {result.returncode}:\n"
        f"{result.stdout}{result.stderr}"
    )


def test_ruff_finds_nothing() -> None:
    _check("ruff", "check", ".")


def test_mypy_finds_nothing() -> None:
    _check("mypy")
