"""`qmtl graph` and `qmtl history` (SPEC §9)."""

from __future__ import annotations

import importlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner

from qmtl.cli import cli

STRATEGY = """
from qmtl import Node, Pipeline, QueryNode

pipeline = Pipeline("cli-demo")
pipeline.add_node(Node("price", fn=lambda: 10.0, tags=["PRICE"]))
pipeline.add_node(Node("volume", fn=lambda: 5, tags=["VOLUME", "PRICE"]))
pipeline.add_query_node(QueryNode("prices", ["PRICE"]))
pipeline.add_node(Node("total", fn=lambda prices: sum(prices.values()), upstreams=["prices"]))
"""

_counter = itertools.count()


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()  # the CLI configures logging onto the runner's streams


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A strategy module importable under a fresh name."""
    name = f"cli_strategy_{next(_counter)}"
    (tmp_path / f"{name}.py").write_text(STRATEGY, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_graph_prints_mermaid_by_default(module: str) -> None:
    code, out, _ = invoke("graph", f"{module}:pipeline")
    assert code == 0
    assert out.startswith("flowchart LR\n")
    assert "prices<br/>query: PRICE" in out
    assert out.count("-. match .->") == 2


def test_graph_json_and_dot(module: str) -> None:
    code, out, _ = invoke("graph", f"{module}:pipeline", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["pipeline"] == "cli-demo"
    assert {n["name"]: n.get("matches") for n in data["nodes"]}["prices"] == ["price", "volume"]
    code, out, _ = invoke("graph", f"{module}:pipeline", "--format", "dot")
    assert code == 0 and '"prices" -> "total";' in out


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")
def test_graph_svg_and_png_files(module: str, tmp_path: Path) -> None:
    svg = tmp_path / "g.svg"
    code, _, err = invoke("graph", f"{module}:pipeline", "--format", "svg", "--output", str(svg))
    assert code == 0 and f"wrote {svg}" in err
    titles = {t.text for t in ET.parse(svg).iter("{http://www.w3.org/2000/svg}title")}
    assert {"price", "volume", "prices", "total"} <= titles
    png = tmp_path / "g.png"
    code, _, _ = invoke("graph", f"{module}:pipeline", "--format", "png", "-o", str(png))
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_graph_png_needs_an_output_file(module: str) -> None:
    code, _, err = invoke("graph", f"{module}:pipeline", "--format", "png")
    assert code == 2 and "--output" in err


def test_graph_without_graphviz_exits_with_the_reason(
    module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    code, _, err = invoke("graph", f"{module}:pipeline", "--format", "svg")
    assert code == 1
    assert "error:" in err and "install Graphviz" in err


def test_history_prints_the_configured_state(module: str) -> None:
    pipeline = importlib.import_module(module).pipeline
    day = 86_400
    for n in range(3):
        pipeline.execute(ts=day * (n + 1) + 60)
    code, out, _ = invoke(
        "history", f"{module}:pipeline", "prices", "--interval", "1d", "--count", "2"
    )
    assert code == 0
    assert out.splitlines() == [
        '1970-01-05T00:00:00Z  {"price": 10.0, "volume": 5}',
        '1970-01-04T00:00:00Z  {"price": 10.0, "volume": 5}',
    ]
    code, out, _ = invoke("history", f"{module}:pipeline", "total", "--json")
    assert code == 0
    assert json.loads(out) == [{"timestamp": (n + 2.0) * day, "value": 15.0} for n in (2, 1, 0)]


def test_history_on_the_memory_backend_explains_where_history_lives(module: str) -> None:
    """Memory state lives in the process that ran the pipeline: a new `qmtl history` process
    cannot see it, and says so (non-zero) instead of "no history"."""
    for extra in ([], ["--json"]):
        code, out, err = invoke("history", f"{module}:pipeline", "price", *extra)
        assert code == 1 and out == ""
        assert "state backend 'memory' keeps history inside the process" in err
        assert "--state redis" in err and "Traceback" not in err
    code, _, err = invoke("history", f"{module}:pipeline", "nope")
    assert code == 1 and "has no node 'nope'" in err


def test_qmtl_graph_console_script(module: str, tmp_path: Path) -> None:
    """The installed `qmtl` entry point, in a real process."""
    qmtl = Path(sys.executable).with_name("qmtl")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "QMTL_PLUGIN_AUTOLOAD": "0"}
    done = subprocess.run(
        [str(qmtl), "graph", f"{module}:pipeline", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["pipeline"] == "cli-demo"


ANALYZER = """
from qmtl import Node, QueryNode
from qmtl.analyzer import Analyzer

analyzer = Analyzer("cli-analyzer-{suffix}", tags=["CORRELATION"])
analyzer.add_node(Node("a", fn=lambda: 1.5, tags=["F"]))
analyzer.add_node(Node("b", fn=lambda: 2.5, tags=["F"]))
analyzer.add_query_node(QueryNode("q", ["F"]))
"""


@pytest.mark.integration
def test_history_reads_analyzer_results_from_redis_in_another_process(
    redis_url: str, tmp_path: Path
) -> None:
    """Analyzer results recorded in Redis are read back by `qmtl history` in a new process."""
    pytest.importorskip("qmtl_state_redis", reason="qmtl-state-redis is not installed")
    name = f"cli_analyzer_{next(_counter)}"
    suffix = os.urandom(4).hex()
    (tmp_path / f"{name}.py").write_text(ANALYZER.format(suffix=suffix), encoding="utf-8")
    sys.path.insert(0, str(tmp_path))
    try:
        analyzer = importlib.import_module(name).analyzer
        day = 86_400
        try:
            for n in range(2):
                assert analyzer.execute(
                    state="redis", state_options={"url": redis_url}, ts=day * (n + 1)
                ) == {"q": {"a": 1.5, "b": 2.5}}
            [latest, _] = analyzer.get_result_history("q")
            assert [r.status for r in latest["results"]] == ["OK", "OK"]
            env = {
                **os.environ,
                "PYTHONPATH": str(tmp_path),
                "QMTL_STATE": "redis",
                "QMTL_REDIS__URL": redis_url,
            }
            done = subprocess.run(
                [
                    str(Path(sys.executable).with_name("qmtl")),
                    "history",
                    f"{name}:analyzer",
                    "q",
                    "--interval",
                    "1d",
                    "--json",
                ],
                capture_output=True,
                text=True,
                cwd=tmp_path,
                env=env,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout) == [
                {"timestamp": 3.0 * day, "value": {"a": 1.5, "b": 2.5}},
                {"timestamp": 2.0 * day, "value": {"a": 1.5, "b": 2.5}},
            ]
        finally:
            analyzer.clear_history()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)
