"""Warm start on Kafka and Redis (``run(warm_start=True)``): a run over the data after a cut,
started from the Redis history of the data before it, gives the outputs and history of one
uninterrupted local run over all of it, whether the run's shards are served by in-process
workers or by a standing deployment, over several partitions (shards start at different
times, and must all seed from the same history)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from qmtl.node import Node, SourceNode
from qmtl.pipeline import Pipeline
from qmtl.state import MemoryStateBackend
from qmtl.testing.pipelines import BASE

pytestmark = pytest.mark.integration

MIN = {"1m": {"interval": "1m", "period": 60, "max_history": 1000}}
CUT = BASE + 30 * 60
NODES = ("px", "vol", "sma", "notional", "signal", "mix")


def _events() -> dict[str, list[tuple[float, float]]]:
    px = [(BASE + 20.0 * i, 100.0 + (i * 7) % 13) for i in range(180)]
    vol = [(BASE + 170.0 * i + 5, 1.0 + i % 4) for i in range(21)]
    return {"px": px, "vol": vol}


def _pipeline(name: str) -> Pipeline:
    p = Pipeline(name)
    p.add_node(SourceNode("px", source=[(BASE, 0.0)], interval_settings=MIN))
    p.add_node(SourceNode("vol", source=[(BASE, 1.0)], interval_settings=MIN))
    p.add_node(
        Node("sma", fn=lambda px: sum(px) / 5, upstreams=["px"], window=5, interval_settings=MIN)
    )
    p.add_node(
        Node(
            "notional", fn=lambda px, vol: px * vol, upstreams=["px", "vol"], interval_settings=MIN
        )
    )
    p.add_node(
        Node(
            "signal",
            fn=lambda sma: sma[-1] - sma[0],
            upstreams=["sma"],
            window=3,
            interval_settings=MIN,
        )
    )
    p.add_node(
        Node(
            "mix",
            fn=lambda sma, notional: round(sma - notional / 10, 6),
            upstreams=["sma", "notional"],
            interval_settings=MIN,
        )
    )
    return p


def _split(before: bool) -> dict[str, Any]:
    return {k: [e for e in v if (e[0] < CUT) == before] for k, v in _events().items()}


def _history(pipeline: Pipeline, state: Any, node: str, namespace: str) -> list[Any]:
    rows = pipeline.get_history(node, "1m", count=10_000, state=state, namespace=namespace)
    return [(r["timestamp"], r["value"]) for r in rows]


@pytest.fixture
def engine(kafka_bootstrap: str) -> Iterator[Any]:
    from qmtl_engine_kafka.engine import KafkaEngine

    engine = KafkaEngine(
        bootstrap_servers=kafka_bootstrap, connect_timeout_s=10, run_timeout_s=90, partitions=4
    )
    yield engine
    engine.close()


@pytest.mark.parametrize("workers", [1, 0], ids=["in-process", "deployment"])
def test_a_warm_started_kafka_run_continues_redis_history_as_an_uninterrupted_run(
    engine: Any, redis_url: str, serve: Any, unique: str, workers: int
) -> None:
    from qmtl_state_redis import RedisStateBackend

    pipeline = _pipeline(f"warm-{unique}")
    oracle = MemoryStateBackend()
    expected: dict[str, list[Any]] = {}
    pipeline.run(
        lambda e: expected.setdefault(e.node, []).append((e.ts, e.value)),
        engine="local",
        state=oracle,
        sources=_events(),
    )
    state = RedisStateBackend(url=redis_url)
    namespace = f"bt-{unique}"
    if workers == 0:
        serve(engine, pipeline, state)
    try:
        pipeline.run(
            engine=engine, state=state, sources=_split(True), workers=workers, namespace=namespace
        )
        seen: dict[str, list[Any]] = {}
        summary = pipeline.run(
            lambda e: seen.setdefault(e.node, []).append((e.ts, e.value)),
            engine=engine,
            state=state,
            sources=_split(False),
            workers=workers,
            namespace=namespace,
            warm_start=True,
        )
        for node in NODES:
            assert seen.get(node, []) == [o for o in expected[node] if o[0] > CUT], node
            assert _history(pipeline, state, node, namespace) == _history(
                pipeline, oracle, node, pipeline.name
            ), node
        assert summary.nodes["px"].late_events == 0
    finally:
        state.delete(namespace)
        state.close()
