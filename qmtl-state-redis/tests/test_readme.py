"""The README's Python examples run as written (against the test Redis)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import qmtl_engine_local  # noqa: F401  (test-only: the README's pipeline runs on the local engine)

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


@pytest.mark.integration
@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(block: str, redis_url: str) -> None:
    code = block.replace("redis://localhost:6379/0", redis_url)
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2
