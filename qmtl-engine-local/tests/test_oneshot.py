"""The one-shot form on the local and mock engines (SPEC §5.1, §5.3; seed 13.3, 13.5)."""

from __future__ import annotations

import itertools
import time

import pytest

from qmtl import Node, Pipeline
from qmtl.errors import NodeExecutionError, PipelineTimeoutError, UnknownNodeError
from qmtl.mock import MockExecutionEngine
from qmtl.sdk.execution import LocalExecutionEngine
from qmtl.state import MemoryStateBackend, SeriesKey

DAY = 86_400


def chain(*specs) -> Pipeline:
    pipeline = Pipeline(name="chain")
    previous = None
    for name, fn in specs:
        pipeline.add_node(Node(name=name, fn=fn, upstreams=[previous] if previous else None))
        previous = name
    return pipeline


def test_chain_and_diamond() -> None:
    assert chain(("A", lambda: 1), ("B", lambda a: a + 1), ("C", lambda b: b * 2)).execute() == {
        "A": 1,
        "B": 2,
        "C": 4,
    }
    diamond = Pipeline(name="diamond")
    diamond.add_node(Node(name="A", fn=lambda: 10))
    diamond.add_node(Node(name="B", fn=lambda a: a // 2, upstreams=["A"]))
    diamond.add_node(Node(name="C", fn=lambda a: a * 2, upstreams=["A"]))
    diamond.add_node(Node(name="D", fn=lambda b: b - 1, upstreams=["B"]))
    diamond.add_node(Node(name="E", fn=lambda c: c + 5, upstreams=["C"]))
    diamond.add_node(Node(name="F", fn=lambda d, e: d * e, upstreams=["D", "E"]))
    assert diamond.execute() == {"A": 10, "B": 5, "C": 20, "D": 4, "E": 25, "F": 100}


def test_several_sources_and_strings() -> None:
    pipeline = Pipeline(name="strings")
    pipeline.add_node(Node(name="A", fn=lambda: 42))
    pipeline.add_node(Node(name="B", fn=lambda: "hello"))
    pipeline.add_node(Node(name="C", fn=lambda a: a * 2, upstreams=["A"]))
    pipeline.add_node(Node(name="D", fn=lambda b: f"{b} world", upstreams=["B"]))
    pipeline.add_node(Node(name="E", fn=lambda d, c: f"{d} ({c})", upstreams=["D", "C"]))
    assert pipeline.execute()["E"] == "hello world (84)"


def test_node_failure_names_the_node_and_stops_recording() -> None:
    pipeline = Pipeline(name="fails")
    pipeline.add_node(Node(name="A", fn=lambda: 1))
    pipeline.add_node(
        Node(
            name="B", fn=lambda a: (_ for _ in ()).throw(ValueError("의도적 오류")), upstreams=["A"]
        )
    )
    pipeline.add_node(Node(name="C", fn=lambda b: b, upstreams=["B"]))
    with pytest.raises(NodeExecutionError) as caught:
        pipeline.execute(ts=0)
    error = caught.value
    assert isinstance(error, RuntimeError)
    assert error.node == "B"
    assert "error occurred" in str(error) and "의도적 오류" in str(error)
    assert str(error).count("error occurred") == 1  # not double-wrapped
    assert isinstance(error.__cause__, ValueError)
    assert pipeline.get_interval_data("A") == [1]
    assert pipeline.get_interval_data("C") == []


def test_timeout_names_the_running_node_and_leaves_fn_untouched() -> None:
    def slow(a):
        time.sleep(0.5)
        return a + 1

    pipeline = chain(("A", lambda: 1), ("slow", slow), ("after", lambda s: s))
    started = time.perf_counter()
    with pytest.raises(PipelineTimeoutError, match="timeout") as caught:
        pipeline.execute(timeout=0.1, ts=0)
    assert time.perf_counter() - started < 0.45
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.node == "slow"
    assert "'slow'" in str(caught.value)
    time.sleep(0.6)  # let the abandoned node finish: nothing after the timeout is recorded
    assert pipeline.get_interval_data("slow") == []
    assert pipeline.get_interval_data("after") == []
    assert pipeline.execute(timeout=5, ts=0) == {"A": 1, "slow": 2, "after": 2}


def test_history_is_bucketed_per_interval_and_reruns_replace_the_bucket() -> None:
    counter = itertools.count(1)
    pipeline = Pipeline(name="hist")
    pipeline.add_node(
        Node(name="counter", fn=lambda: next(counter), interval_settings={"1d": {"period": 10}})
    )
    pipeline.execute(ts=5 * DAY + 10)
    pipeline.execute(ts=5 * DAY + 20)  # same bucket: replaced, not duplicated
    assert pipeline.get_history("counter") == [{"timestamp": 6.0 * DAY, "value": 2}]
    for day in range(6, 10):
        pipeline.execute(ts=day * DAY)
    assert pipeline.get_interval_data("counter", count=10) == [6, 5, 4, 3, 2]


def test_history_time_range_is_exclusive_start_inclusive_end() -> None:
    pipeline = Pipeline(name="range")
    values = iter(range(100))
    pipeline.add_node(
        Node(name="n", fn=lambda: next(values), interval_settings={"1d": {"period": 30}})
    )
    for day in range(5):
        pipeline.execute(ts=day * DAY)
    stamps = [
        item["timestamp"]
        for item in pipeline.get_history("n", count=None, start_ts=1 * DAY, end_ts=3 * DAY)
    ]
    assert stamps == [3 * DAY, 2 * DAY]


def test_max_history_per_interval() -> None:
    pipeline = Pipeline(name="trim")
    pipeline.add_node(
        Node(
            name="src",
            fn=lambda: {"price": 1.5},
            interval_settings={
                "1d": {"period": 30, "max_history": 2},
                "1h": {"period": 48, "max_history": 3},
            },
        )
    )
    for hour in range(50):
        pipeline.execute(ts=hour * 3600 * 12)
    assert len(pipeline.get_history("src", "1d", count=None)) == 2
    hourly = pipeline.get_history("src", "1h", count=None)
    assert len(hourly) == 3 and all(item["value"] == {"price": 1.5} for item in hourly)


def test_five_runs_source_keeps_all_processor_keeps_three() -> None:
    pipeline = Pipeline(name="runs")
    pipeline.add_node(Node(name="Source", fn=lambda: 42, interval_settings={"1d": {"period": 30}}))
    pipeline.add_node(
        Node(
            name="Processor",
            fn=lambda s: s * 2,
            upstreams=["Source"],
            interval_settings={"1d": {"period": 30, "max_history": 3}},
        )
    )
    for day in range(5):
        assert pipeline.execute(ts=day * DAY) == {"Source": 42, "Processor": 84}
    assert len(pipeline.get_history("Source", count=100)) == 5
    assert len(pipeline.get_history("Processor", count=100)) == 3
    meta = pipeline.get_node_metadata("Processor", "1d")
    assert (meta["count"], meta["max_items"], meta["ttl"]) == (3, 3, 30 * DAY)
    assert meta["node_id"] == pipeline.nodes["Processor"].node_id


def test_metadata_of_the_seed_example() -> None:
    pipeline = Pipeline(name="meta")
    pipeline.add_node(
        Node(
            name="price_source",
            fn=lambda: {"price": 100.5},
            interval_settings={
                "1d": {"interval": "1d", "period": "7d", "max_history": 100},
                "1h": {"interval": "1h", "period": "2d", "max_history": 50},
            },
        )
    )
    pipeline.execute(ts=0)
    assert {
        k: v
        for k, v in pipeline.get_node_metadata("price_source", "1d").items()
        if k in ("count", "max_items", "ttl")
    } == {"count": 1, "max_items": 100, "ttl": 604_800}
    assert pipeline.get_node_metadata("price_source", "1h")["ttl"] == 48 * 3600


def test_unknown_node_in_history_is_a_value_error() -> None:
    pipeline = chain(("A", lambda: 42))
    pipeline.execute()
    assert pipeline.get_interval_data("A") == [42]
    with pytest.raises(UnknownNodeError, match="no node 'nope'") as caught:
        pipeline.get_history("nope")
    assert isinstance(caught.value, ValueError)


def test_clear_history_scopes() -> None:
    pipeline = Pipeline(name="clear")
    pipeline.add_node(
        Node(name="a", fn=lambda: 1, interval_settings={"1d": {"period": 2}, "1h": {"period": 2}})
    )
    pipeline.add_node(
        Node(
            name="b",
            fn=lambda a: a,
            upstreams=["a"],
            interval_settings={"1d": {"period": 2}, "1h": {"period": 2}},
        )
    )
    pipeline.execute(ts=0)
    pipeline.clear_history("a", "1d")
    assert pipeline.get_interval_data("a", "1d") == [] and pipeline.get_interval_data(
        "a", "1h"
    ) == [1]
    pipeline.clear_history("a")
    assert pipeline.get_interval_data("a", "1h") == [] and pipeline.get_interval_data(
        "b", "1d"
    ) == [1]
    pipeline.clear_history()
    assert pipeline.get_interval_data("b", "1h") == []


def test_memory_state_ttl_expires_idle_series() -> None:
    now = [1000.0]
    state = MemoryStateBackend(clock=lambda: now[0])
    key, other = SeriesKey("p", "n", "1d"), SeriesKey("p", "m", "1d")
    state.write(key, 1.0, "expires", max_items=10, ttl=1)
    state.write(other, 1.0, "not_expired", max_items=10, ttl=None)
    assert state.read(key) == [{"timestamp": 1.0, "value": "expires"}]
    now[0] += 1.1
    assert state.read(key) == []
    assert state.read(other) == [{"timestamp": 1.0, "value": "not_expired"}]
    state.write(key, 2.0, "zero", max_items=10, ttl=0)
    assert state.read(key) == []


def test_memory_state_is_per_pipeline_instance() -> None:
    first, second = chain(("A", lambda: 1)), chain(("A", lambda: 1))
    first.execute(ts=0)
    assert second.get_interval_data("A") == []


def test_execution_stats() -> None:
    pipeline = Pipeline(name="stats")
    pipeline.add_node(Node(name="A", fn=lambda: 42))
    pipeline.add_node(Node(name="B", fn=lambda: time.sleep(0.1) or 100))
    pipeline.add_node(Node(name="C", fn=lambda a, b: a + b, upstreams=["A", "B"]))
    engine = LocalExecutionEngine()
    assert engine.execute_pipeline(pipeline) == {"A": 42, "B": 100, "C": 142}
    stats = engine.execution_stats
    assert set(stats["node_times"]) == {"A", "B", "C"}
    assert stats["node_times"]["A"] < stats["node_times"]["B"]
    assert stats["total_nodes"] == 3
    assert stats["total_time"] == pytest.approx(sum(stats["node_times"].values()))


def test_inputs_replace_a_node_value() -> None:
    pipeline = chain(("X", lambda: 1), ("Y", lambda x: x + 1))
    assert LocalExecutionEngine().execute_pipeline(pipeline, inputs={"X": 10}) == {"X": 10, "Y": 11}


def test_engine_selection_forms_agree() -> None:
    pipeline = chain(("A", lambda: 42), ("B", lambda a: a * 2))
    expected = {"A": 42, "B": 84}
    assert pipeline.execute() == expected
    assert pipeline.execute(test_mode=True) == expected
    assert pipeline.execute(engine="local") == expected
    assert pipeline.execute(engine="mock") == expected


def test_mock_engine_replaces_outputs_and_records_calls() -> None:
    pipeline = Pipeline(name="mocked")
    pipeline.add_node(Node(name="price_source", fn=lambda: 1 / 0))
    pipeline.add_node(Node(name="B", fn=lambda p: p * 2, upstreams=["price_source"]))
    engine = MockExecutionEngine(mocks={"price_source": 100.5})
    assert engine.execute_pipeline(pipeline) == {"price_source": 100.5, "B": 201.0}
    assert engine.calls["B"] == [{"price_source": 100.5}]
    engine.execute_pipeline(pipeline)
    assert len(engine.calls["B"]) == 2
    assert pipeline.execute(engine="mock", engine_options={"mocks": {"price_source": 1}})["B"] == 2


def test_windowed_node_waits_for_a_full_window() -> None:
    prices = iter([1.0, 2.0, 3.0, 4.0])
    pipeline = Pipeline(name="window")
    pipeline.add_node(
        Node(name="p", fn=lambda: next(prices), interval_settings={"1d": {"period": 5}})
    )
    pipeline.add_node(Node(name="ma", fn=lambda p: sum(p) / len(p), upstreams=["p"], window=3))
    pipeline.add_node(Node(name="sig", fn=lambda ma: ma > 1, upstreams=["ma"]))
    assert pipeline.execute(ts=0) == {"p": 1.0}
    assert pipeline.execute(ts=DAY) == {"p": 2.0}
    assert pipeline.execute(ts=2 * DAY) == {"p": 3.0, "ma": 2.0, "sig": True}
    assert pipeline.execute(ts=3 * DAY)["ma"] == 3.0


def test_debug_traces_each_node_and_shows_a_failing_nodes_inputs() -> None:
    """The seed's execute(debug=True) / LocalExecutionEngine(debug=True): a trace of the run."""
    from qmtl.errors import ConfigurationError

    pipeline = chain(("A", lambda: 2), ("B", lambda a: a * 21), ("C", lambda b: [b] * 2))
    assert pipeline.execute(debug=True, ts=0) == {"A": 2, "B": 42, "C": [42, 42]}
    trace = pipeline.last_engine.execution_stats["trace"]  # type: ignore[union-attr]
    assert [(step["node"], step["value"]) for step in trace] == [
        ("A", "2"),
        ("B", "42"),
        ("C", "[42, 42]"),
    ]
    assert all(step["seconds"] >= 0 for step in trace)
    engine = LocalExecutionEngine(debug=True)
    assert engine.execute_pipeline(pipeline) == {"A": 2, "B": 42, "C": [42, 42]}
    assert [step["node"] for step in engine.execution_stats["trace"]] == ["A", "B", "C"]
    failing = chain(("A", lambda: {"px": 3}), ("B", lambda a: a["qty"]))
    with pytest.raises(NodeExecutionError, match=r"node 'B' \(inputs: A=\{'px': 3\}\)"):
        failing.execute(debug=True, ts=0)
    with pytest.raises(NodeExecutionError) as plain:
        failing.execute(ts=0)
    assert "inputs" not in str(plain.value)  # off unless asked for
    with pytest.raises(ConfigurationError, match=r"LocalExecutionEngine\(debug=True\)"):
        pipeline.execute(debug=True, engine=LocalExecutionEngine())
