"""A user's own strategy type-checks under ``mypy --strict`` without the pydantic plugin.

mypy runs in a scratch folder with a configuration of its own (``[mypy]`` and nothing else: no
pydantic plugin, none of the workspace's settings), on the installed distributions' inline
types (``py.typed``), as in a user's project.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "typed_strategy.py"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def mypy_strict(folder: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    (folder / "mypy.ini").write_text("[mypy]\n")
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", "mypy.ini", *map(str, files)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )


def test_the_typed_example_passes_mypy_strict_without_the_pydantic_plugin(tmp_path: Path) -> None:
    done = mypy_strict(tmp_path, EXAMPLE)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found in 1 source file" in done.stdout
    assert "pydantic.mypy" not in (tmp_path / "mypy.ini").read_text()


MISTAKES = """
    from qmtl import IntervalSettings, Node, Pipeline
    from qmtl_engine_kafka import KafkaEngineSettings

    KafkaEngineSettings(bootstrap_server="kafka:9092")
    IntervalSettings(interval="1d", priod=5)
    pipeline = Pipeline("typos")
    pipeline.add_node(Node("a", fn=lambda: 1.0))
    summary = pipeline.run(lambda bar: print(bar.nod))
    print(summary.events_inn)
"""


def test_mistakes_in_a_strategy_are_reported_and_nothing_else(tmp_path: Path) -> None:
    module = tmp_path / "strategy.py"
    module.write_text(textwrap.dedent(MISTAKES))

    done = mypy_strict(tmp_path, module)

    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert [re.sub(r"^strategy\.py:(\d+): error: ", r"\1: ", e) for e in errors] == [
        '5: Unexpected keyword argument "bootstrap_server" for "KafkaEngineSettings"; '
        'did you mean "bootstrap_servers"?  [call-arg]',
        '6: Unexpected keyword argument "priod" for "IntervalSettings"; '
        'did you mean "period"?  [call-arg]',
        '9: "OutputEvent" has no attribute "nod"  [attr-defined]',
        '10: "RunSummary" has no attribute "events_inn"; maybe "events_in"?  [attr-defined]',
    ], done.stdout


def test_the_typed_example_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120, check=False
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("typed_strategy: 360 events in, ")
    assert "production settings: engine=kafka state=redis" in done.stdout
    assert "mocked run: {'price': 10.0, 'double': 20.0}" in done.stdout


def test_no_model_field_passes_its_default_positionally() -> None:
    """``Field(5, ...)``: pydantic takes it as the default, but type checkers without the
    plugin (PEP 681's field specifiers) only see ``default=``, so every such field became a
    required constructor argument (24 false errors for KafkaEngineSettings)."""
    found = []
    for path in sorted(ROOT.glob("qmtl-*/src/**/*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and node.args:
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                if name == "Field":
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")

    assert found == [], "use Field(default=...) in " + ", ".join(found)
