"""Data out of a streaming run: buckets reach on_output as they close, `qmtl run --stream
--output jsonl|csv` writes every final bucket, progress shows on a terminal and never in a pipe,
and a pipeline draws itself in a notebook."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qmtl import Node, Pipeline, SourceNode
from qmtl.stream_runner import AUTO_BATCH, HOLD_CHECK

STRATEGY = """
from qmtl import Node, Pipeline, SourceNode

pipeline = Pipeline("cli_demo", default_intervals={"1h": {"interval": "1h", "period": 24}})
pipeline.add_node(SourceNode("px", source=[(1800 * i, 100.0 + i) for i in range(20)]))
pipeline.add_node(
    Node("signal", fn=lambda px: {"ret": px / 100 - 1, "up": px > 105}, upstreams=["px"])
)
"""


class SlowFile:
    """A bounded source that takes 60 ms per event to read (a file on a slow share): each
    event opens a new hourly bucket, so each closes the one before."""

    bounded = True

    def __init__(self, log: list[Any], count: int = 12) -> None:
        self.log, self.count = log, count

    def events(self) -> Iterator[tuple[float, float]]:
        for i in range(self.count):
            time.sleep(0.06)
            self.log.append(("read", i))
            yield 3600.0 * i, float(i)


def test_a_slow_bounded_source_delivers_each_bucket_as_it_closes() -> None:
    log: list[Any] = []
    pipeline = Pipeline("slow", default_intervals={"1h": {"interval": "1h", "period": 24}})
    pipeline.add_node(SourceNode("px", source=SlowFile(log)))
    pipeline.run(lambda bar: log.append(("out", bar.value)))
    assert 12 < AUTO_BATCH  # the whole stream fits in one batch: held to the end before
    reads_before = {}
    reads = 0
    for kind, item in log:
        if kind == "read":
            reads += 1
        else:
            reads_before[item] = reads
    # Bucket i closes when event i + 1 is read; it is delivered within HOLD_CHECK more reads.
    for i in range(11):
        assert reads_before[float(i)] <= i + 1 + HOLD_CHECK, (i, reads_before)
    assert reads_before[0.0] < 12


def _strategy(tmp_path: Path) -> Path:
    (tmp_path / "strategy.py").write_text(STRATEGY)
    return tmp_path


def _qmtl(args: list[str], cwd: Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from qmtl.cli import main; main()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,
    )


def _expected() -> list[tuple[str, str, float, Any]]:
    namespace: dict[str, Any] = {}
    exec(STRATEGY, namespace)
    out: list[tuple[str, str, float, Any]] = []
    namespace["pipeline"].run(lambda e: out.append((e.node, e.interval, e.ts, e.value)))
    return out


def test_output_jsonl_writes_every_final_bucket_and_nothing_else(tmp_path: Path) -> None:
    done = _qmtl(["run", "--stream", "strategy:pipeline", "--output", "jsonl"], _strategy(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # a pipe: no progress
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["node"], r["interval"], r["ts"], r["value"]) for r in rows] == _expected()
    assert rows[0] == {"node": "px", "interval": "1h", "ts": 3600, "value": 101.0}


def test_output_csv_has_a_header_and_json_cells_for_structured_values(tmp_path: Path) -> None:
    done = _qmtl(["run", "--stream", "strategy:pipeline", "--output", "csv"], _strategy(tmp_path))
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert list(rows[0]) == ["node", "interval", "ts", "value"]
    assert rows[0] == {"node": "px", "interval": "1h", "ts": "3600", "value": "101.0"}
    signal = next(r for r in rows if r["node"] == "signal")
    assert json.loads(signal["value"]) == {"ret": pytest.approx(0.01), "up": False}
    assert len(rows) == len(_expected())


def test_output_stops_quietly_when_the_reader_goes_away(tmp_path: Path) -> None:
    script = f"{sys.executable} -c 'from qmtl.cli import main; main()' run --stream "
    done = subprocess.run(
        script + "strategy:pipeline --output jsonl | head -1",
        shell=True,
        cwd=_strategy(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 1
    assert "Traceback" not in done.stderr


def _on_a_terminal(args: list[str], cwd: Path) -> tuple[str, str]:
    """Run with stderr on a pseudo-terminal and stdout on a pipe; return both."""
    primary, secondary = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "200"}
    process = subprocess.Popen(
        args, cwd=cwd, stdout=subprocess.PIPE, stderr=secondary, stdin=subprocess.DEVNULL, env=env
    )
    os.close(secondary)
    seen = b""
    while True:
        ready, _, _ = select.select([primary], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    stdout, _ = process.communicate(timeout=30)
    os.close(primary)
    assert process.returncode == 0, seen.decode(errors="replace")
    return stdout.decode(), seen.decode(errors="replace")


def test_the_cli_shows_progress_on_a_terminal_and_keeps_stdout_clean(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "from qmtl.cli import main; main()"]
    stdout, terminal = _on_a_terminal(
        [*command, "run", "--stream", "strategy:pipeline", "--output", "jsonl"],
        _strategy(tmp_path),
    )
    assert len(stdout.splitlines()) == len(_expected())
    assert "cli_demo ▸ 20 events in · 20 buckets out · event time 1970-01-01 09:30:00Z" in terminal
    assert "events/s" in terminal


RUN_WITH_PROGRESS = """
from strategy import pipeline
summary = pipeline.run(progress=True)
print("buckets", summary.buckets_out)
"""


def test_run_progress_true_draws_on_a_terminal_and_is_silent_in_a_pipe(tmp_path: Path) -> None:
    _strategy(tmp_path)
    args = [sys.executable, "-c", textwrap.dedent(RUN_WITH_PROGRESS)]
    stdout, terminal = _on_a_terminal(args, tmp_path)
    assert stdout == "buckets 20\n"
    assert "20 events in · 20 buckets out" in terminal
    piped = subprocess.run(
        args, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
    )
    assert (piped.stdout, piped.stderr) == ("buckets 20\n", "")


def _notebook_pipeline() -> Pipeline:
    pipeline = Pipeline("nb")
    pipeline.add_node(SourceNode("px", source=[(0, 1.0)], tags=["RAW"]))
    pipeline.add_node(Node("double", fn=lambda px: px * 2, upstreams=["px"]))
    return pipeline


def test_a_pipeline_renders_in_a_notebook_as_svg_and_mermaid() -> None:
    bundle = _notebook_pipeline()._repr_mimebundle_()
    assert bundle["text/plain"] == "Pipeline(name='nb', nodes=['px', 'double'])"
    assert bundle["text/markdown"].startswith("```mermaid\nflowchart LR\n")
    assert "double" in bundle["text/markdown"]
    assert bundle["image/svg+xml"].lstrip().startswith(("<?xml", "<svg"))  # Graphviz is here
    assert _notebook_pipeline()._repr_svg_() == bundle["image/svg+xml"]
    only = _notebook_pipeline()._repr_mimebundle_(include=["text/markdown"])
    assert list(only) == ["text/markdown"]


def test_without_graphviz_a_notebook_gets_the_mermaid_text(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` on it
    bundle = _notebook_pipeline()._repr_mimebundle_()
    assert "image/svg+xml" not in bundle and "text/markdown" in bundle
    assert _notebook_pipeline()._repr_svg_() is None


def test_a_pipeline_that_cannot_build_shows_why_instead_of_a_graph() -> None:
    pipeline = Pipeline("broken")
    pipeline.add_node(Node("orphan", fn=lambda ghost: ghost, upstreams=["ghost"]))
    bundle = pipeline._repr_mimebundle_()
    assert list(bundle) == ["text/plain"] and "cannot draw it" in bundle["text/plain"]
    assert "ghost" in bundle["text/plain"]
