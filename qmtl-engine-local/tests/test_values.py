"""The local and mock engines refuse what another engine could not carry (SPEC §5.4), and
``check_values=False`` turns the check off."""

from __future__ import annotations

from typing import Any

import pytest

from qmtl import Node, Pipeline, SourceNode
from qmtl.errors import ValueEncodeError
from qmtl.mock import MockEngineSettings, MockExecutionEngine
from qmtl.state import MemoryStateBackend
from qmtl_engine_local import LocalExecutionEngine
from qmtl_engine_local.engine import LocalEngineSettings

BOTH = {"1m": {"interval": "1m", "period": 10}, "1h": {"interval": "1h", "period": 10}}
T = 1_700_006_400


def _oneshot() -> Pipeline:
    p = Pipeline("values-oneshot")
    p.add_node(Node("px", fn=lambda: 101.5, interval_settings=BOTH))
    p.add_node(
        Node(
            "levels",
            fn=lambda px: {"px": px, "seen": {px}},
            upstreams=["px"],
            interval_settings=BOTH,
        )
    )
    return p


def test_a_set_deep_in_a_value_is_refused_on_the_local_engine_naming_everything() -> None:
    pipeline = _oneshot()
    state = MemoryStateBackend()
    with pytest.raises(ValueEncodeError) as caught:
        pipeline.execute(engine="local", state=state, ts=T)
    error = caught.value
    assert (error.node, error.interval, error.type_name) == ("levels", "1m, 1h", "set")
    assert str(error).startswith(
        "Node 'levels' returned a value at interval 1m, 1h that QMTL cannot carry between "
        "processes: value['seen']: set; return sorted(value) (a list) or a tuple instead"
    )
    assert pipeline.get_interval_data("px", "1m", state=state) == [101.5]
    assert pipeline.get_interval_data("levels", "1m", state=state) == []  # nothing recorded


def test_check_values_false_is_an_engine_option() -> None:
    pipeline = _oneshot()
    engine = LocalExecutionEngine(LocalEngineSettings(check_values=False))
    results = pipeline.execute(engine=engine, state=MemoryStateBackend(), ts=T)
    assert results["levels"] == {"px": 101.5, "seen": {101.5}}
    by_option = pipeline.execute(engine_options={"check_values": False}, ts=T)
    assert by_option["levels"]["seen"] == {101.5}


def test_inputs_are_checked_like_computed_values() -> None:
    with pytest.raises(ValueEncodeError, match=r"Node 'px' returned a value .*value: frozenset"):
        _oneshot().execute(inputs={"px": frozenset()}, engine="local", ts=T)


def test_a_mock_value_cannot_hide_what_a_deployment_refuses() -> None:
    pipeline = _oneshot()
    engine = MockExecutionEngine(mocks={"levels": {"px": 1.0, "when": object()}})
    with pytest.raises(ValueEncodeError, match=r"Node 'levels' .*value\['when'\]: object"):
        pipeline.execute(engine=engine, state=MemoryStateBackend(), ts=T)
    assert engine.calls["levels"] == [{"px": 101.5}]
    relaxed = MockExecutionEngine(MockEngineSettings(mocks={"levels": {1, 2}}, check_values=False))
    assert pipeline.execute(engine=relaxed, ts=T)["levels"] == {1, 2}


def _stream(bad_at: int) -> Pipeline:
    p = Pipeline("values-stream")
    events: list[tuple[float, Any]] = [(T + 60 * i + 1, float(i)) for i in range(5)]
    p.add_node(SourceNode("px", source=events, interval_settings={"1m": BOTH["1m"]}))
    p.add_node(
        Node(
            "tagged",
            fn=lambda px: (px, {"x"}) if px >= bad_at else (px, "x"),
            upstreams=["px"],
            interval_settings={"1m": BOTH["1m"]},
        )
    )
    return p


@pytest.mark.parametrize("engine", ["local", "mock"])
def test_streaming_refuses_at_the_bucket_and_keeps_the_buckets_before(engine: str) -> None:
    pipeline = _stream(bad_at=3)
    state = MemoryStateBackend()
    with pytest.raises(ValueEncodeError, match=r"Node 'tagged' .*interval 1m .*: value\[1\]: set"):
        pipeline.run(engine=engine, state=state)
    assert pipeline.get_interval_data("tagged", "1m", state=state) == [
        (2.0, "x"),
        (1.0, "x"),
        (0.0, "x"),
    ]


@pytest.mark.parametrize("engine", ["local", "mock"])
def test_streaming_with_check_values_false_lets_any_value_through(engine: str) -> None:
    pipeline = _stream(bad_at=3)
    summary = pipeline.run(engine=engine, state=MemoryStateBackend(), check_values=False)
    assert summary.nodes["tagged"].buckets_out == {"1m": 5}


def test_memory_state_refuses_the_same_values_when_written_directly() -> None:
    state = MemoryStateBackend()
    key = _oneshot().build().node("px").series[0].key
    with pytest.raises(ValueEncodeError, match=r"value\['seen'\]: set"):
        state.write(key, T, {"seen": {1}}, max_items=10, ttl=None)
    assert state.read(key) == []
