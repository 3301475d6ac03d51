"""The columnar path of the local engine: what a user sees (run(columnar=True))."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from qmtl import Node, Pipeline, SourceNode
from qmtl.columns import ArraySource
from qmtl.errors import ConfigurationError, PipelineTimeoutError, SourceError
from qmtl.extras import MissingExtraError
from qmtl.state import MemoryStateBackend
from qmtl.stream_runner import run_in_process
from qmtl.testing.engine_contract import collect, counts, history

BASE = 1_700_006_400
MINUTE = {"1m": {"interval": "1m", "period": 3, "max_history": 5000}}


def test_a_late_event_is_judged_by_events_of_an_earlier_chunk() -> None:
    """Chunks of two events: the event at +50 is late only because +130, read in the chunk
    before, made minute 0 final; ties in time go to the later arrival across chunks."""
    events = [
        (BASE + 10, 1.0),  # minute 0
        (BASE + 130, 2.0),  # minute 2; the watermark 130 makes minutes 0 and 1 final
        (BASE + 50, 3.0),  # minute 0 is final: late, dropped
        (BASE + 125, 4.0),  # minute 2, earlier than 130: not the minute's last event
        (BASE + 130, 5.0),  # ties with 2.0 and arrived later: minute 2's value
        (BASE + 200, 6.0),  # minute 3
    ]
    p = Pipeline("hand-late", default_intervals=MINUTE)
    p.add_node(SourceNode("px", source=events))
    p.add_node(Node("double", fn=lambda px: px * 2, upstreams=["px"]))
    out: list[Any] = []
    summary = p.run(out.append, columnar=True, chunk_size=2)
    assert collect(out) == {
        ("px", "1m"): [(BASE + 60.0, 1.0), (BASE + 180.0, 5.0), (BASE + 240.0, 6.0)],
        ("double", "1m"): [(BASE + 60.0, 2.0), (BASE + 180.0, 10.0), (BASE + 240.0, 12.0)],
    }
    assert (summary.events_in, summary.late_events) == (6, 1)
    assert summary.nodes["double"].buckets_out == {"1m": 3}


def test_outputs_arrive_as_chunks_close_while_the_source_is_still_read() -> None:
    read = [0]

    def feed() -> Iterator[tuple[int, float]]:
        for i in range(10_000):
            read[0] += 1
            yield BASE + 30 * i, float(i)

    p = Pipeline("chunks", default_intervals=MINUTE)
    p.add_node(SourceNode("px", source=feed))
    p.add_node(Node("inc", fn=lambda px: px + 1, upstreams=["px"]))
    seen: list[tuple[int, float]] = []  # (events read so far, bucket end) per output
    p.run(lambda event: seen.append((read[0], event.ts)), columnar=True, chunk_size=500)
    assert len(seen) == 2 * 5_000  # px and inc, one bucket per two events
    assert seen[0] == (500, BASE + 60.0)  # the first chunk's buckets, before reading on
    # a bucket comes out at most one chunk after its own events were read
    behind = [read_so_far - 2 * (ts - BASE) / 60 for read_so_far, ts in seen]
    assert max(behind) <= 500


def test_a_vectorized_node_is_called_once_per_chunk_not_per_bucket() -> None:
    calls: list[int] = []

    def rng(px: Any) -> Any:
        calls.append(len(px))
        return px.max(axis=1) - px.min(axis=1)

    p = Pipeline("per-chunk", default_intervals=MINUTE)
    p.add_node(SourceNode("px", source=[(BASE + 60 * i, float(i % 7)) for i in range(3_000)]))
    p.add_node(Node("rng", fn=rng, upstreams=["px"], window=3, vectorized=True))
    p.run(state=MemoryStateBackend(), columnar=True, chunk_size=1_000)
    # 3,000 minutes: the first chunk makes minutes 0..998 final, two of them warm-up; the
    # second 999..1998; the last chunk ends the source and flushes the rest
    assert calls == [997, 1_000, 1_001]
    columnar = p.get_interval_data("rng", "1m", count=3_000)
    calls.clear()
    p.run(state=MemoryStateBackend())
    assert len(calls) == 2_998 and set(calls) == {1}  # the event path: one row per call
    assert p.get_interval_data("rng", "1m", count=3_000) == columnar


def test_two_dimensional_rows_become_lists_on_both_paths() -> None:
    p = Pipeline("rows", default_intervals=MINUTE)
    p.add_node(SourceNode("px", source=[(BASE + 20 * i, float(i)) for i in range(30)]))
    p.add_node(
        Node(
            "span",
            fn=lambda px: np.stack([px.min(axis=1), px.max(axis=1)], axis=1),
            upstreams=["px"],
            window=2,
            vectorized=True,
        )
    )
    columnar: list[Any] = []
    p.run(columnar.append, columnar=True)
    event: list[Any] = []
    p.run(event.append)
    assert collect(columnar) == collect(event)
    # minutes close on the third event of each: 2, 5, 8, ...; windows of two minutes
    assert collect(columnar)[("span", "1m")][:2] == [
        (BASE + 120.0, [2.0, 5.0]),
        (BASE + 180.0, [5.0, 8.0]),
    ]


def test_a_source_error_stops_the_run_after_the_buckets_final_before_it() -> None:
    events: list[Any] = [(BASE + 30 * i, float(i)) for i in range(40)]
    events[25] = (float("nan"), 0.0)
    results = []
    for options in ({"columnar": True, "chunk_size": 8}, {}):
        p = Pipeline("bad-source", default_intervals=MINUTE)
        p.add_node(SourceNode("px", source=events))
        p.add_node(Node("inc", fn=lambda px: px + 1, upstreams=["px"]))
        state = MemoryStateBackend()
        with pytest.raises(SourceError, match="not a finite number"):
            p.run(state=state, **options)
        results.append(history(p, state))
    assert results[0] == results[1]
    assert len(results[0][("px", "1m")]) == 12  # events 0..24: minutes 0..11 final, 12 open


def test_array_sources_and_lists_give_the_same_run() -> None:
    ts = BASE + np.arange(0, 50_000, 7)
    px = np.round(np.sin(np.arange(len(ts)) / 50.0) * 100, 3)
    results = []
    for source, columnar in (
        (ArraySource(ts, px), True),
        (list(zip(ts.tolist(), px.tolist(), strict=True)), True),
        (ArraySource(ts, px), False),
    ):
        p = Pipeline("arrays-run", default_intervals=MINUTE)
        p.add_node(SourceNode("px", source=source))
        p.add_node(
            Node("mean", fn=lambda px: px.mean(axis=1), upstreams=["px"], window=4, vectorized=True)
        )
        p.add_node(Node("up", fn=lambda px, mean: px > mean, upstreams=["px", "mean"]))
        out: list[Any] = []
        summary = p.run(out.append, state=MemoryStateBackend(), columnar=columnar, chunk_size=1_000)
        results.append((collect(out), counts(summary)))
    assert results[0] == results[1] == results[2]
    assert all(type(v) is bool for _, v in results[0][0][("up", "1m")])


def test_the_iterator_form_streams_columnar_runs_too() -> None:
    p = Pipeline("iter", default_intervals=MINUTE)
    p.add_node(SourceNode("px", source=[(BASE + 30 * i, float(i)) for i in range(100)]))
    p.add_node(Node("inc", fn=lambda px: px + 1, upstreams=["px"]))
    stream = p.stream(columnar=True, chunk_size=16)
    got = [(e.node, e.ts, e.value) for e in stream]
    expected: list[Any] = []
    run_in_process(p.build(), MemoryStateBackend(), on_output=expected.append)
    assert sorted(got) == sorted((e.node, e.ts, e.value) for e in expected)
    assert stream.summary is not None and stream.summary.buckets_out == 100


def test_the_engine_setting_turns_the_columnar_path_on(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def double(px: Any) -> Any:
        calls.append(len(px))
        return px * 2

    def pipeline() -> Pipeline:
        p = Pipeline("by-setting", default_intervals=MINUTE)
        p.add_node(SourceNode("px", source=[(BASE + 60 * i, float(i)) for i in range(50)]))
        p.add_node(Node("double", fn=double, upstreams=["px"], vectorized=True))
        return p

    pipeline().run(engine_options={"columnar": True})
    assert calls == [50]  # the whole run in one call
    calls.clear()
    monkeypatch.setenv("QMTL_LOCAL__COLUMNAR", "true")
    monkeypatch.setenv("QMTL_LOCAL__CHUNK_SIZE", "20")
    p = pipeline()  # settings are read when a pipeline first picks its engine
    p.run()
    assert calls == [19, 20, 11]  # a chunk's last minute stays open until the next chunk
    calls.clear()
    p.run(columnar=False)  # the run's option wins over the setting
    assert calls == [1] * 50


def test_bad_chunk_sizes_and_a_missing_numpy_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    p = Pipeline("misuse", default_intervals=MINUTE)
    p.add_node(SourceNode("px", source=[(BASE, 1.0)]))
    with pytest.raises(ConfigurationError, match="chunk_size must be a positive number"):
        p.run(columnar=True, chunk_size=0)
    with pytest.raises(ConfigurationError, match="batch= tunes the event-at-a-time path"):
        p.run(columnar=True, batch=16)
    monkeypatch.setitem(sys.modules, "numpy", None)
    with pytest.raises(MissingExtraError) as caught:
        p.run(columnar=True)
    assert "columnar path (run(columnar=True)) needs numpy" in str(caught.value)
    assert "pip install 'qmtl-engine-local[columnar]'" in str(caught.value)


def test_a_timeout_names_the_running_node_and_nothing_is_written_after_it() -> None:
    def slow(px: Any) -> Any:
        time.sleep(0.5)
        return px

    p = Pipeline("columnar-timeout", default_intervals=MINUTE)
    p.add_node(SourceNode("px", source=[(BASE + 60 * i, float(i)) for i in range(20)]))
    p.add_node(Node("slow", fn=slow, upstreams=["px"], vectorized=True))
    p.add_node(Node("after", fn=lambda slow: slow, upstreams=["slow"]))
    state = MemoryStateBackend()
    with pytest.raises(PipelineTimeoutError) as caught:
        p.run(state=state, columnar=True, timeout=0.2)
    assert caught.value.node == "slow"
    time.sleep(0.6)  # the node finishes in the background; its buckets are not recorded
    assert history(p, state)[("slow", "1m")] == []
    assert history(p, state)[("after", "1m")] == []
    assert len(history(p, state)[("px", "1m")]) == 20  # written before the node started
