"""Every ```python block of the README runs, in order, in one namespace."""

from __future__ import annotations

import pytest
from readme_blocks import ROOT, python_blocks

BLOCKS = python_blocks(ROOT / "README.md")


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index: int) -> None:
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {})
