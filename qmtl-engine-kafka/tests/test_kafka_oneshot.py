"""One-shot runs over Kafka (SPEC §5.1) give the local engine's results and history."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from qmtl.errors import NodeExecutionError, PipelineTimeoutError
from qmtl.node import Node, SourceNode
from qmtl.pipeline import Pipeline
from qmtl.state import MemoryStateBackend
from qmtl.testing.engine_contract import history
from qmtl.testing.pipelines import BASE, CASES
from qmtl_engine_local import LocalExecutionEngine

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(kafka_bootstrap: str) -> Iterator[Any]:
    from qmtl_engine_kafka.engine import KafkaEngine

    engine = KafkaEngine(bootstrap_servers=kafka_bootstrap, connect_timeout_s=10)
    yield engine
    engine.close()


@pytest.fixture
def redis_state(redis_url: str) -> Iterator[Any]:
    from qmtl_state_redis import RedisStateBackend

    state = RedisStateBackend(url=redis_url)
    yield state
    state.close()


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.fails is None])
def test_results_and_history_equal_the_local_engine(
    name: str, engine: Any, redis_state: Any
) -> None:
    pipeline = CASES[name].build()
    redis_state.delete(pipeline.name)
    memory = MemoryStateBackend()
    stamps = [BASE + 60 * i + 5 for i in range(4)]  # windows warm up over these runs
    local = [pipeline.execute(engine=LocalExecutionEngine(), state=memory, ts=ts) for ts in stamps]
    kafka = [pipeline.execute(engine=engine, state=redis_state, ts=ts) for ts in stamps]
    assert kafka == local
    assert history(pipeline, redis_state) == history(pipeline, memory)


def _failing(unique: str) -> Pipeline:
    p = Pipeline(f"oneshot-fail-{unique}")
    p.add_node(SourceNode("price", source=lambda: 10.0))
    p.add_node(Node("ok", fn=lambda price: price + 1, upstreams=["price"]))
    p.add_node(Node("boom", fn=lambda ok: 1 / 0, upstreams=["ok"]))
    p.add_node(Node("after", fn=lambda boom: boom, upstreams=["boom"]))
    return p


def test_a_failing_node_is_named_and_nothing_from_it_on_is_recorded(
    engine: Any, redis_state: Any, unique: str
) -> None:
    pipeline = _failing(unique)
    with pytest.raises(NodeExecutionError) as caught:
        pipeline.execute(engine=engine, state=redis_state, ts=BASE)
    assert caught.value.node == "boom"
    assert isinstance(caught.value.__cause__, ZeroDivisionError)
    assert [h["value"] for h in pipeline.get_history("ok", state=redis_state)] == [11.0]
    assert pipeline.get_history("boom", state=redis_state) == []
    redis_state.delete(pipeline.name)


def test_timeout_names_the_running_node(engine: Any, redis_state: Any, unique: str) -> None:
    p = Pipeline(f"oneshot-slow-{unique}")
    p.add_node(SourceNode("price", source=lambda: 1.0))
    p.add_node(Node("slow", fn=lambda price: time.sleep(3) or price, upstreams=["price"]))
    started = time.monotonic()
    with pytest.raises(PipelineTimeoutError) as caught:
        p.execute(engine=engine, state=redis_state, timeout=1.5)
    assert caught.value.node == "slow"
    assert time.monotonic() - started < 8
    redis_state.delete(p.name)


def test_seed_keywords_parallel_brokers_redis_uri(
    kafka_bootstrap: str, redis_url: str, unique: str
) -> None:
    p = Pipeline(f"oneshot-seed-{unique}")
    p.add_node(SourceNode("price", source=lambda: 100.0))
    p.add_node(Node("double", fn=lambda price: price * 2, upstreams=["price"]))
    results = p.execute(parallel=True, brokers=kafka_bootstrap, redis_uri=redis_url, ts=BASE)
    assert results == {"price": 100.0, "double": 200.0}
    assert p.get_interval_data("double", interval="1d") == [200.0]
    p.clear_history()


def test_a_seed_fetch_source_is_read_once_per_run(
    engine: Any, redis_state: Any, unique: str
) -> None:
    """The seed's SourceProcessor (fetch()) on the Kafka engine: one read per execute."""
    from qmtl.sdk.node import SourceProcessor

    class Feed(SourceProcessor):
        calls = 0

        def fetch(self) -> float:
            Feed.calls += 1
            return 100.0 + Feed.calls

    p = Pipeline(f"oneshot-fetch-{unique}")
    p.add_node(SourceNode("price", source=Feed()))
    p.add_node(Node("double", fn=lambda price: price * 2, upstreams=["price"]))
    assert p.execute(engine=engine, state=redis_state, ts=BASE) == {
        "price": 101.0,
        "double": 202.0,
    }
    assert Feed.calls == 1
    assert p.execute(engine=engine, state=redis_state, ts=BASE + 86_400)["double"] == 204.0
    assert Feed.calls == 2
    redis_state.delete(p.name)
