"""The ``qmtl`` command line, run as a user would: a subprocess in a project folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

STRATEGY = """
from qmtl import Node, Pipeline

pipeline = Pipeline(name="cli_strategy")
pipeline.add_node(Node(name="A", fn=lambda: 42))
pipeline.add_node(Node(name="B", fn=lambda a: a * 2, upstreams=["A"]))

def make():
    return pipeline
"""


def qmtl(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    qmtl_bin = Path(sys.executable).with_name("qmtl")
    return subprocess.run(
        [str(qmtl_bin), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "strategy.py").write_text(textwrap.dedent(STRATEGY))
    return tmp_path


def test_run_prints_results(project: Path) -> None:
    result = qmtl("run", "strategy:pipeline", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"A": 42, "B": 84}
    factory = qmtl("run", "strategy:make", "--engine", "mock", cwd=project)
    assert factory.returncode == 0, factory.stderr
    assert "B: 84" in factory.stdout


def test_run_errors_are_one_clear_line(project: Path) -> None:
    missing = qmtl("run", "strategy:nothing", cwd=project)
    assert missing.returncode == 2 and "has no attribute 'nothing'" in missing.stderr
    unknown = qmtl("run", "strategy:pipeline", "--engine", "warp", cwd=project)
    assert unknown.returncode == 1
    assert "engine 'warp' is not installed" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_plugins_lists_kinds_with_distributions_and_versions(project: Path) -> None:
    result = qmtl("plugins", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    rows = {(row["category"], row["kind"]): row for row in json.loads(result.stdout)}
    assert rows[("engine", "local")]["distribution"] == "qmtl-engine-local"
    assert rows[("engine", "mock")]["distribution"] == "qmtl-core"
    assert rows[("state", "memory")]["distribution"] == "qmtl-core"
    assert all(row["version"] for row in rows.values())
    table = qmtl("plugins", cwd=project)
    assert "qmtl-engine-local" in table.stdout and "memory" in table.stdout


def test_settings_from_the_environment_select_the_engine(project: Path) -> None:
    result = qmtl("run", "strategy:pipeline", cwd=project, env={"QMTL_ENGINE": "nope"})
    assert result.returncode == 1 and "engine 'nope' is not installed" in result.stderr


def test_run_accepts_a_file_path(project: Path, tmp_path: Path) -> None:
    """`qmtl run ./strategy.py:pipeline` loads the file (its folder importable), from anywhere."""
    (project / "helpers.py").write_text("FACTOR = 3\n")
    (project / "strategy3.py").write_text(
        STRATEGY.replace("a * 2", "a * FACTOR").replace(
            "from qmtl import Node, Pipeline",
            "from helpers import FACTOR\nfrom qmtl import Node, Pipeline",
        )
    )
    here = qmtl("run", "./strategy3.py:pipeline", "--json", cwd=project)
    assert here.returncode == 0, here.stderr
    assert json.loads(here.stdout) == {"A": 42, "B": 126}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    far = qmtl("run", f"{project / 'strategy3.py'}:make", "--json", cwd=elsewhere)
    assert far.returncode == 0, far.stderr
    missing = qmtl("run", "./nope.py:pipeline", cwd=project)
    assert missing.returncode == 2 and "file 'nope.py' does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_python_dash_m_qmtl_is_the_cli(project: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "qmtl", "run", "strategy:pipeline", "--json"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"A": 42, "B": 84}
    helped = subprocess.run(
        [sys.executable, "-m", "qmtl", "--help"], capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0 and "Usage: qmtl" in helped.stdout
