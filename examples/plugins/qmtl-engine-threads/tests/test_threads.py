"""The threads engine gives the local engine's results and history, with branches overlapping."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from qmtl_engine_threads import ThreadPoolEngine, ThreadsEngineSettings

from qmtl import Node, Pipeline, QueryNode
from qmtl.errors import NodeExecutionError, PipelineTimeoutError
from qmtl.plugins import load_plugins
from qmtl.state import MemoryStateBackend

DAY = 86_400.0
T0 = 1_767_571_200.0  # 2026-01-05 00:00 UTC


class RecordingState(MemoryStateBackend):
    """The memory backend, remembering every write in order."""

    def __init__(self) -> None:
        super().__init__(clock=lambda: T0)
        self.writes: list[tuple[str, str, float, Any]] = []

    def write(self, key: Any, timestamp: float, value: Any, **kwargs: Any) -> None:
        self.writes.append((key.node_id, key.interval, timestamp, value))
        super().write(key, timestamp, value, **kwargs)


def branching_pipeline(fail_on: str | None = None) -> Pipeline:
    """Two symbols, each with a price, a windowed average and a signal; a query over signals."""
    pipeline = Pipeline("branches", default_intervals={"1d": {"interval": "1d", "period": 3}})
    counters = {"A": iter(range(100, 200)), "B": iter(range(500, 600))}
    for symbol, counter in counters.items():

        def price(counter: Any = counter, symbol: str = symbol) -> int:
            if fail_on == f"{symbol}_price":
                raise ValueError(f"no quote for {symbol}")
            return next(counter)

        pipeline.add_node(Node(name=f"{symbol}_price", fn=price, tags=["PRICE"]))
        pipeline.add_node(
            Node(
                name=f"{symbol}_avg",
                fn=lambda values: sum(values) / len(values),
                upstreams=[f"{symbol}_price"],
                window=3,
            )
        )

        def signal(avg: float, price: int, symbol: str = symbol) -> str:
            if fail_on == f"{symbol}_signal":
                raise RuntimeError(f"signal {symbol} broke")
            return "long" if price > avg else "flat"

        pipeline.add_node(
            Node(
                name=f"{symbol}_signal",
                fn=signal,
                upstreams=[f"{symbol}_avg", f"{symbol}_price"],
                tags=["SIGNAL"],
            )
        )
    pipeline.add_node(Node(name="spread", fn=lambda a, b: b - a, upstreams=["A_price", "B_price"]))
    pipeline.add_query_node(QueryNode(name="signals", tags=["SIGNAL"]))
    return pipeline


def run_days(
    engine: Any, days: int, fail_on: str | None = None
) -> tuple[list[Any], RecordingState]:
    pipeline = branching_pipeline(fail_on)
    state = RecordingState()
    outcomes: list[Any] = []
    for day in range(days):
        try:
            results = pipeline.execute(ts=T0 + day * DAY, engine=engine, state=state)
            outcomes.append(list(results.items()))
        except NodeExecutionError as error:
            outcomes.append((type(error), str(error), error.node, type(error.__cause__)))
    return outcomes, state


def test_results_and_history_writes_equal_the_local_engines() -> None:
    local, local_state = run_days("local", 5)
    threads, threads_state = run_days(ThreadPoolEngine(), 5)

    assert threads == local  # same values, same keys, same order, warm-up days included
    assert threads_state.writes == local_state.writes  # same writes in the same order
    assert "A_avg" not in dict(local[0]) and "A_signal" not in dict(local[0])  # warm-up
    assert dict(local[4])["signals"] == {"A_signal": "long", "B_signal": "long"}


@pytest.mark.parametrize("fail_on", ["A_price", "A_signal", "B_signal"])
def test_a_failing_node_is_named_and_nothing_after_it_is_recorded(fail_on: str) -> None:
    local, local_state = run_days("local", 4, fail_on)
    threads, threads_state = run_days(
        ThreadPoolEngine(ThreadsEngineSettings(max_workers=8)), 4, fail_on
    )

    assert threads == local
    error_type, message, node, cause = threads[-1]
    assert (error_type, node) == (NodeExecutionError, fail_on)
    assert f"node '{fail_on}'" in message
    assert cause in (ValueError, RuntimeError)
    assert threads_state.writes == local_state.writes


def test_a_node_error_is_not_wrapped_twice() -> None:
    inner = NodeExecutionError("elsewhere", ValueError("x"))
    pipeline = Pipeline("nested")
    pipeline.add_node(Node(name="outer", fn=lambda: (_ for _ in ()).throw(inner)))

    with pytest.raises(NodeExecutionError) as caught:
        pipeline.execute(engine=ThreadPoolEngine())

    assert caught.value is inner


def test_independent_branches_run_at_the_same_time() -> None:
    barrier = threading.Barrier(4, timeout=10)  # passes only if four nodes run concurrently
    pipeline = Pipeline("fan_out")
    pipeline.add_node(Node(name="root", fn=lambda: 1))
    for i in range(4):
        pipeline.add_node(
            Node(
                name=f"leg{i}",
                fn=lambda root, i=i: (barrier.wait(), root + i)[1],
                upstreams=["root"],
            )
        )
    pipeline.add_node(
        Node(name="total", fn=lambda *legs: sum(legs), upstreams=[f"leg{i}" for i in range(4)])
    )

    started = time.perf_counter()
    results = pipeline.execute(engine=ThreadPoolEngine(ThreadsEngineSettings(max_workers=4)))

    assert results["total"] == 1 + 2 + 3 + 4
    assert list(results) == ["root", "leg0", "leg1", "leg2", "leg3", "total"]
    assert time.perf_counter() - started < 5


def test_timeout_names_the_running_node_and_records_nothing_more() -> None:
    release = threading.Event()
    pipeline = Pipeline("slow")
    pipeline.add_node(Node(name="fast", fn=lambda: 1))
    pipeline.add_node(Node(name="stuck", fn=lambda fast: release.wait(5), upstreams=["fast"]))
    pipeline.add_node(Node(name="after", fn=lambda stuck: 2, upstreams=["stuck"]))
    state = RecordingState()

    with pytest.raises(PipelineTimeoutError, match="'stuck'") as caught:
        pipeline.execute(engine=ThreadPoolEngine(), state=state, timeout=0.2)
    release.set()

    assert caught.value.node == "stuck"
    assert [node_id for node_id, *_ in state.writes] == [pipeline.build().node("fast").node_id]


def test_inputs_replace_values_like_the_local_engine() -> None:
    local = branching_pipeline().execute(inputs={"A_price": 7}, engine="local", ts=T0)
    threads = branching_pipeline().execute(inputs={"A_price": 7}, engine=ThreadPoolEngine(), ts=T0)

    assert list(threads.items()) == list(local.items())
    assert threads["spread"] == 500 - 7


def test_the_plugin_registers_threads_with_its_settings_model() -> None:
    registration = load_plugins().engines.get("threads")

    assert registration.distribution == "qmtl-engine-threads"
    engine = registration.create({"max_workers": 2})
    assert isinstance(engine, ThreadPoolEngine)
    assert engine.options.max_workers == 2
    assert branching_pipeline().execute(engine="threads", ts=T0)["spread"] == 400
