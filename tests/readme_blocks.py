"""Extract the ```python code blocks of a Markdown file, so documentation runs as tests."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The user's original document, kept in the repo so its examples always run as tests.
SEED_README = ROOT / "docs" / "seed-README.ko.md"
_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def python_blocks(path: Path) -> list[str]:
    """Every ```python block of ``path``, in order."""
    return _BLOCK.findall(path.read_text(encoding="utf-8"))


def block_containing(path: Path, text: str) -> str:
    """The one ```python block of ``path`` that contains ``text``."""
    found = [block for block in python_blocks(path) if text in block]
    assert len(found) == 1, f"{len(found)} python blocks of {path.name} contain {text!r}"
    return found[0]
