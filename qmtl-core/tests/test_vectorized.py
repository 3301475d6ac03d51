"""Vectorized nodes on the event path, and array sources (qmtl.vectorized, qmtl.columns)."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

from qmtl import Node, Pipeline, SourceNode
from qmtl.columns import ArraySource
from qmtl.errors import (
    NodeExecutionError,
    PipelineValidationError,
    QmtlError,
    SourceError,
    VectorizedOutputError,
)
from qmtl.extras import MissingExtraError
from qmtl.state import MemoryStateBackend
from qmtl.stream_runner import run_in_process
from qmtl.vectorized import column_array

BASE = 1_700_006_400
MINUTE = {"1m": {"interval": "1m", "period": 3}}


def bars(pipeline: Pipeline, **options: Any) -> dict[str, list[Any]]:
    got: dict[str, list[Any]] = {}
    pipeline.run(lambda e: got.setdefault(e.node, []).append(e.value), **options)
    return got


def test_the_event_path_calls_a_vectorized_node_with_one_row_arrays() -> None:
    seen: list[tuple[str, tuple[int, ...], str]] = []

    def spread(a: Any, b: Any) -> Any:
        seen.append(("spread", a.shape, a.dtype.name))
        return b - a

    def rng(a: Any) -> Any:
        seen.append(("rng", a.shape, a.dtype.name))
        return a.max(axis=1) - a.min(axis=1)

    p = Pipeline("vec-event", default_intervals=MINUTE)
    p.add_node(SourceNode("a", source=[(BASE + 60 * i, 1.0 + i) for i in range(4)]))
    p.add_node(SourceNode("b", source=[(BASE + 60 * i + 5, 10.0 * i) for i in range(4)]))
    p.add_node(Node("spread", fn=spread, upstreams=["b", "a"], vectorized=True))  # by name
    p.add_node(Node("rng", fn=rng, upstreams=["a"], window=2, vectorized=True))
    got = bars(p)
    # spread = b - a per minute: 0-1, 10-2, 20-3, 30-4; rng over windows of two a's: 1 each
    assert got["spread"] == [-1.0, 8.0, 17.0, 26.0]
    assert got["rng"] == [1.0, 1.0, 1.0]
    assert all(type(v) is float for v in got["spread"] + got["rng"])  # Python values, stored
    assert {(name, shape) for name, shape, _ in seen} == {("spread", (1,)), ("rng", (1, 2))}
    assert {dtype for _, _, dtype in seen} == {"float64"}


def test_one_shot_runs_call_a_vectorized_node_with_one_row() -> None:
    p = Pipeline("vec-once", default_intervals={"1d": {"interval": "1d", "period": 2}})
    p.add_node(Node("px", fn=lambda: 4.0))
    p.add_node(Node("sq", fn=lambda px: np.sqrt(px), upstreams=["px"], vectorized=True))
    assert p.execute(ts=BASE)["sq"] == 2.0


def test_vectorized_is_part_of_the_node_id_and_definition() -> None:
    def double(x: Any) -> Any:
        return x * 2

    def build(vectorized: bool) -> Pipeline:
        p = Pipeline("vec-id", default_intervals=MINUTE)
        p.add_node(SourceNode("x", source=[(BASE, 1.0)]))
        p.add_node(Node("y", fn=double, upstreams=["x"], vectorized=vectorized))
        return p

    scalar, vector = build(False), build(True)
    assert scalar.build().node("y").node_id != vector.build().node("y").node_id
    assert scalar.build().node("x").node_id == vector.build().node("x").node_id
    definitions = {n["name"]: n for n in vector.to_definition()["nodes"]}
    assert definitions["y"]["vectorized"] is True
    assert "vectorized" not in {n["name"]: n for n in scalar.to_definition()["nodes"]}["y"]


def test_a_vectorized_node_needs_upstreams_and_a_bool() -> None:
    with pytest.raises(PipelineValidationError, match="'src' is vectorized but has no upstreams"):
        SourceNode("src", source=[(BASE, 1.0)], vectorized=True)
    with pytest.raises(PipelineValidationError, match="vectorized must be True or False"):
        Node("n", fn=lambda x: x, upstreams=["x"], vectorized="yes")


def test_one_value_per_row_or_the_node_is_named() -> None:
    p = Pipeline("vec-rows", default_intervals=MINUTE)
    p.add_node(SourceNode("px", source=[(BASE + 60 * i, float(i)) for i in range(3)]))
    p.add_node(Node("mean", fn=lambda px: px.mean(), upstreams=["px"], vectorized=True))
    with pytest.raises(NodeExecutionError) as caught:
        p.run()
    assert caught.value.node == "mean"
    cause = caught.value.__cause__
    assert isinstance(cause, VectorizedOutputError)
    assert "Vectorized node 'mean' returned a scalar for 1 input rows" in str(cause)
    assert "axis=1" in str(cause)


def test_without_numpy_a_vectorized_node_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "numpy", None)  # import numpy now fails
    with pytest.raises(MissingExtraError) as caught:
        Node("n", fn=lambda x: x, upstreams=["x"], vectorized=True)
    assert isinstance(caught.value, QmtlError) and isinstance(caught.value, ImportError)
    assert "Node 'n' is vectorized" in str(caught.value)
    assert "pip install 'qmtl-engine-local[columnar]'" in str(caught.value)


def test_a_column_is_one_array_only_when_every_row_would_be() -> None:
    assert column_array([1.5, 2.0]).dtype.name == "float64"  # type: ignore[union-attr]
    assert column_array([1, 2]).dtype.name == "int64"  # type: ignore[union-attr]
    assert column_array([True, False]).dtype.name == "bool"  # type: ignore[union-attr]
    assert column_array([1, 2.5]) is None  # [1] alone is int64, the column would be float64
    assert column_array([2**64, 1]) is None  # beyond int64
    assert column_array(["a", "bb"]) is None  # text widths differ row by row
    assert column_array([[1.0], [2.0]]) is None  # not scalars
    assert column_array([]) is None


def test_an_array_source_streams_like_the_same_list() -> None:
    ts = np.array([BASE + 7, BASE + 65, BASE + 61, BASE + 200])
    px = np.array([1.5, 2.5, 3.5, 4.5])
    pairs = list(zip(ts.tolist(), px.tolist(), strict=True))
    source = ArraySource(ts, px)
    assert list(source.events()) == pairs
    assert all(type(t) is int and type(v) is float for t, v in source.events())
    assert source.latest() == 4.5 and len(source) == 4
    results = []
    for given in (source, pairs):
        p = Pipeline("arrays", default_intervals=MINUTE)
        p.add_node(SourceNode("px", source=given))
        p.add_node(Node("neg", fn=lambda px: -px, upstreams=["px"]))
        state: MemoryStateBackend = MemoryStateBackend()
        events: list[Any] = []
        run_in_process(p.build(), state, on_output=events.append)
        results.append([(e.node, e.ts, e.value) for e in events])
    assert results[0] == results[1]
    # minute 0: 1.5; minute 1: 2.5 (ts 65 beats 61); minute 3: 4.5
    assert [v for node, _, v in results[0] if node == "px"] == [1.5, 2.5, 4.5]


def test_array_sources_of_other_data_are_other_series() -> None:
    def node_id(values: list[float]) -> str:
        p = Pipeline("arrays-id", default_intervals=MINUTE)
        p.add_node(SourceNode("px", source=ArraySource(np.arange(3) + BASE, np.array(values))))
        return p.build().node("px").node_id

    assert node_id([1.0, 2.0, 3.0]) == node_id([1.0, 2.0, 3.0])
    assert node_id([1.0, 2.0, 3.0]) != node_id([1.0, 2.0, 4.0])


def test_an_array_source_needs_one_value_per_time() -> None:
    with pytest.raises(SourceError, match="ts has 2 rows but values has 3"):
        ArraySource([BASE, BASE + 1], [1.0, 2.0, 3.0])
    with pytest.raises(SourceError, match="no events"):
        ArraySource([], []).latest()
