"""Differential tests: the columnar path against the event-at-a-time path on random pipelines.

Hypothesis draws sources (event times out of order, ties, ``allowed_lateness``, watermarks,
ints and floats; as lists, numpy columns or generators), DAGs of scalar, by-name and vectorized
nodes with as-of joins and windows, query nodes, one or two intervals and a chunk size; the
event path (``run_in_process``, one event at a time) is the oracle for every series' outputs,
the stored history and the summary.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmtl import Node, Pipeline, QueryNode, SourceNode
from qmtl.columns import ArraySource
from qmtl.errors import NodeExecutionError
from qmtl.sources import Watermark
from qmtl.state import MemoryStateBackend
from qmtl.stream_runner import run_in_process
from qmtl.testing.engine_contract import collect, counts, history
from qmtl_engine_local.columnar import run_columnar

BASE = 1_700_006_400
INTERVALS = {
    "1m": {"1m": {"interval": "1m", "period": 3, "max_history": 40}},
    "1m+5m": {
        "1m": {"interval": "1m", "period": 3, "max_history": 40},
        "5m": {"interval": "5m", "period": 2, "max_history": 7},
    },
}


def scalar_sum(*values: Any, tag: int = 0) -> float:
    total = 0.0
    for value in values:
        total += sum(value) if isinstance(value, list) else value
    return round(total, 6)


def keyword_sum(tag: int = 0, **values: Any) -> float:
    return scalar_sum(*values.values())


def array_sum(*arrays: Any, tag: int = 0) -> Any:
    total = np.zeros(len(arrays[0]))
    for array in arrays:
        total = total + (array.sum(axis=1) if array.ndim > 1 else array)
    return np.round(total, 6)


def int_or_float(*values: Any, tag: int = 0) -> Any:
    """Ints for some buckets, floats for others: a column a reader cannot vectorize exactly."""
    total = scalar_sum(*values)
    return int(total) if int(total) % 3 == 0 else total


KINDS = {"scalar": scalar_sum, "keyword": keyword_sum, "mixed": int_or_float}


@st.composite
def source_events(draw: st.DrawFn, index: int) -> list[Any]:
    count = draw(st.integers(0, 60))
    events: list[Any] = [Watermark(BASE - 9_000 - index)]  # no effect but a distinct node id
    t = draw(st.integers(0, 600))
    for _ in range(count):
        t += draw(st.sampled_from([0, 0, 7, 13, 30, 61, 120, 400]))
        jitter = draw(st.sampled_from([0, 0, 0, -20, -75, -200]))
        ts: float = BASE + t + jitter
        if draw(st.booleans()):
            ts += draw(st.sampled_from([0.25, 0.5, 0.999]))
        if draw(st.integers(0, 9)) == 0:
            events.append(Watermark(ts + draw(st.sampled_from([0, 30, 90]))))
        value = draw(st.sampled_from([1.5, 2.0, -3.25, 10.0, 7.0]))
        events.append((ts, value if draw(st.integers(0, 7)) else int(value)))
    return events


FORMS = ["list", "list", "arrays", "generator"]


def as_form(events: list[Any], form: str, index: int) -> Any:
    """The same events as a list, as numpy columns (:class:`ArraySource`; watermarks become
    a distinct first event) or as a generator made on every run."""
    if form == "arrays":
        pairs = [(BASE - 9_000 - index, 0.0)] + [e for e in events if type(e) is tuple]
        return ArraySource(np.array([t for t, _ in pairs]), np.array([v for _, v in pairs]))
    if form == "generator":
        return lambda: iter(events)
    return events


@st.composite
def pipelines(draw: st.DrawFn) -> Pipeline:
    intervals = INTERVALS[draw(st.sampled_from(sorted(INTERVALS)))]
    p = Pipeline("differential", default_intervals=intervals)
    names: list[str] = []
    for i in range(draw(st.integers(1, 3))):
        name = f"s{i}"
        p.add_node(
            SourceNode(
                name,
                source=as_form(draw(source_events(i)), draw(st.sampled_from(FORMS)), i),
                allowed_lateness=draw(st.sampled_from([None, 0, 30, 90, 150.5])),
                tags=["src"] if draw(st.booleans()) else [],
            )
        )
        names.append(name)
    if any(node.tags for node in p.nodes.values()) and draw(st.booleans()):
        p.add_query_node(QueryNode("q", tags=["src"]))
        p.add_node(Node("after_q", fn=lambda q: sorted(q.items()), upstreams=["q"]))
    for i in range(draw(st.integers(1, 5))):
        ups = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
        window = draw(st.sampled_from([None, None, 1, 2, 4]))
        kind = draw(st.sampled_from(["scalar", "keyword", "mixed", "vector", "vector"]))
        if kind == "vector":
            node = Node(
                f"n{i}",
                fn=array_sum,
                upstreams=ups,
                window=window,
                vectorized=True,
                tag=i,
                key_params=["tag"],
            )
        else:
            node = Node(
                f"n{i}", fn=KINDS[kind], upstreams=ups, window=window, tag=i, key_params=["tag"]
            )
        p.add_node(node)
        names.append(node.name)
    return p


def both_paths(pipeline: Pipeline, chunk: int) -> tuple[Any, Any]:
    plan = pipeline.build()
    results = []
    for columnar in (False, True):
        state, events = MemoryStateBackend(), []
        if columnar:
            summary = run_columnar(plan, state, on_output=events.append, chunk_size=chunk)
        else:
            summary = run_in_process(plan, state, on_output=events.append, batch=1)
        results.append((collect(events), history(pipeline, state), counts(summary)))
    return results[0], results[1]


@pytest.mark.slow
@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(pipelines(), st.sampled_from([1, 2, 5, 16, 1000]))
def test_random_pipelines_match_the_event_path(pipeline: Pipeline, chunk: int) -> None:
    event_path, columnar = both_paths(pipeline, chunk)
    assert columnar[0] == event_path[0], "outputs differ"
    assert columnar[1] == event_path[1], "history differs"
    assert columnar[2] == event_path[2], "run summary differs"


def fails_above(limit: float) -> Any:
    def check(*values: Any) -> float:
        total = scalar_sum(*values)
        if total > limit:
            raise ValueError(f"{total} is above {limit}")
        return total

    return check


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.lists(st.floats(-5, 5, allow_nan=False).map(lambda x: round(x, 2)), max_size=40),
    st.sampled_from([1, 3, 8, 1000]),
    st.booleans(),
)
def test_a_failing_node_stops_at_the_same_bucket(
    values: list[float], chunk: int, vectorized: bool
) -> None:
    """The failing node is named, its buckets before the failing one are stored and no later
    one, on both paths (the node after it never sees the failing bucket)."""
    p = Pipeline("failing-differential", default_intervals=INTERVALS["1m"])
    p.add_node(SourceNode("s", source=[(BASE + 45 * i, v) for i, v in enumerate(values)]))
    p.add_node(Node("acc", fn=scalar_sum, upstreams=["s"], window=2))
    if vectorized:

        def guarded(acc: Any) -> Any:
            if (acc > 4).any():
                raise ValueError("above 4")
            return acc * 2

        p.add_node(Node("boom", fn=guarded, upstreams=["acc"], vectorized=True))
    else:
        p.add_node(Node("boom", fn=fails_above(4), upstreams=["acc"]))
    p.add_node(Node("after", fn=scalar_sum, upstreams=["boom"]))
    plan = p.build()
    outcomes = []
    for columnar in (False, True):
        state = MemoryStateBackend()
        try:
            if columnar:
                run_columnar(plan, state, chunk_size=chunk)
            else:
                run_in_process(plan, state, batch=1)
            failed = None
        except NodeExecutionError as error:
            failed = error.node
            assert isinstance(error.__cause__, ValueError)
        stored = history(p, state)
        outcomes.append((failed, stored[("boom", "1m")]))
        boom_stamps = {ts for ts, _value in stored[("boom", "1m")]}
        assert {ts for ts, _value in stored[("after", "1m")]} <= boom_stamps
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_explicit_arrivals_match_the_event_path(chunk: int) -> None:
    """``events=`` feeds sources in a given arrival order (late events depend on it)."""
    p = Pipeline("arrivals", default_intervals=INTERVALS["1m+5m"])
    p.add_node(SourceNode("a", source=[(BASE, 0.0)], allowed_lateness=20))  # events= replace
    p.add_node(SourceNode("b", source=[(BASE, 1.0)]))  # these declared inputs
    p.add_node(Node("ab", fn=scalar_sum, upstreams=["a", "b"], window=2))
    arrivals = [
        ("a", BASE + 10, 1.0),
        ("b", BASE + 400, 5.0),
        ("a", BASE + 130, 2.0),
        ("a", BASE + 100, 3.0),  # within a's lateness: kept
        ("b", BASE + 100, 9.0),  # b has no lateness: late
        ("a", BASE + 30, 4.0),  # late for a too
        ("a", BASE + 700, 6.0),
        ("b", BASE + 710, 7.0),
    ]
    plan = p.build()
    results = []
    for columnar in (False, True):
        state, events = MemoryStateBackend(), []
        run = run_columnar if columnar else run_in_process
        options = {"chunk_size": chunk} if columnar else {}
        summary = run(plan, state, on_output=events.append, events=arrivals, **options)
        results.append((collect(events), history(p, state), counts(summary)))
    assert results[1] == results[0]
    assert results[1][2]["b"]["late_events"] == 1 and results[1][2]["a"]["late_events"] == 1


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_a_value_the_codec_refuses_stops_both_paths_at_the_same_bucket(chunk: int) -> None:
    """A source event and a node output that no transport could carry (a set): the same
    ValueEncodeError, naming node and interval, and the same buckets stored before it."""
    from qmtl.errors import ValueEncodeError

    def label(px: float) -> Any:
        return {"odd"} if px == 7.0 else f"px={px}"  # a set for one bucket

    def repr_of(px: Any) -> str:
        return repr(px)

    outcomes = []
    for case in ("node", "source"):
        for columnar in (False, True):
            events: list[Any] = [(BASE + 40 * i, float(i)) for i in range(30)]
            if case == "source":
                events[20] = (BASE + 800, {1, 2})
            p = Pipeline(f"refused-{case}", default_intervals=INTERVALS["1m"])
            p.add_node(SourceNode("px", source=events))
            p.add_node(Node("label", fn=label if case == "node" else repr_of, upstreams=["px"]))
            state = MemoryStateBackend()
            plan = p.build()
            with pytest.raises(ValueEncodeError) as caught:
                if columnar:
                    run_columnar(plan, state, chunk_size=chunk)
                else:
                    run_in_process(plan, state, batch=1)
            stored = history(p, state)
            # a refused output: the node's own buckets before it (how far its sources got is
            # scheduling); a refused event: everything final before it, on both paths
            outcomes.append((case, str(caught.value), stored[("label", "1m")], stored))
    assert outcomes[0][:3] == outcomes[1][:3] and outcomes[2] == outcomes[3]
    assert "'label'" in outcomes[0][1] and "'px'" in outcomes[2][1]


DAYS = {
    "1h": {"interval": "1h", "period": 2, "max_history": 400},
    "1d": {"interval": "1d", "period": 2, "max_history": 60},
    "1w": {"interval": "1w", "period": 2, "max_history": 10},
}


@pytest.mark.slow
@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    st.sampled_from(
        [None, "-8h", "16h", "-5h30m", "America/New_York 16:00", "Europe/London 00:00"]
    ),
    st.booleans(),
    st.lists(
        st.tuples(
            st.sampled_from([0, 600, 2_000, 3_600, 14_400]),
            st.sampled_from([0, 0, -1_800, -10_800, -32_400]),
        ),
        min_size=1,
        max_size=80,
    ),
    st.sampled_from([None, 0, 7_200, 90_000]),
    st.sampled_from([1, 4, 1000]),
)
def test_calendars_match_the_event_path(
    offset: str | None,
    hourly: bool,
    steps: list[tuple[int, int]],
    lateness: int | None,
    chunk: int,
) -> None:
    """Monday weeks, duration offsets and session closes in a time zone (across the 2024
    clock changes): the same buckets, ends, late events and joins as one event at a time."""
    start = 1_709_647_200  # 2024-03-05 14:00Z, days before New York moves its clocks
    times, t = [], start
    for gap, back in steps:  # some events arrive minutes or hours behind the others
        t += gap
        times.append(t + back)
    intervals = DAYS if hourly else {k: v for k, v in DAYS.items() if k != "1h"}
    p = Pipeline("calendars-differential", default_intervals=intervals, bucket_offset=offset)
    p.add_node(
        SourceNode(
            "px", source=[(ts, float(i)) for i, ts in enumerate(times)], allowed_lateness=lateness
        )
    )
    p.add_node(SourceNode("fx", source=[(start + 86_400 * k, 1.0 + k) for k in range(30)]))
    p.add_node(Node("value", fn=lambda px, fx: px * fx, upstreams=["px", "fx"]))
    p.add_node(Node("trend", fn=array_sum, upstreams=["value"], window=2, vectorized=True))
    event_path, columnar = both_paths(p, chunk)
    assert columnar == event_path
