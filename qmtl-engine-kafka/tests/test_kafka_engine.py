"""The Kafka engine's failure behaviour: poison input, an unreachable broker, external workers
without shared state; the contract squeezed into one partition; producers' ordering."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from qmtl import codec
from qmtl.node import Node, SourceNode
from qmtl.pipeline import Pipeline
from qmtl.state import MemoryStateBackend
from qmtl.testing.engine_contract import EngineContract, collect
from qmtl.testing.pipelines import BASE

try:
    from qmtl.stream_runner import run_in_process
except ImportError:  # before the runner moved out of qmtl.streaming
    from qmtl.streaming import run_in_process  # type: ignore[attr-defined,no-redef]


def _minute() -> dict[str, Any]:
    return {"1m": {"interval": "1m", "period": 60, "max_history": 1000}}


def _pipeline(name: str) -> Pipeline:
    p = Pipeline(name)
    p.add_node(
        SourceNode(
            "px",
            source=[(BASE + 13 * i, 100.0 + i % 7) for i in range(120)],
            interval_settings=_minute(),
        )
    )
    p.add_node(
        Node(
            "ret",
            fn=lambda px: round(px / 100 - 1, 6),
            upstreams=["px"],
            interval_settings=_minute(),
        )
    )
    return p


@pytest.fixture
def engine(kafka_bootstrap: str) -> Iterator[Any]:
    from qmtl_engine_kafka.engine import KafkaEngine

    engine = KafkaEngine(bootstrap_servers=kafka_bootstrap, connect_timeout_s=10, run_timeout_s=60)
    yield engine
    engine.close()


@pytest.mark.integration
def test_poison_messages_go_to_the_dead_letter_topic_and_the_stream_completes(
    engine: Any, kafka_bootstrap: str, redis_url: str, serve: Any, unique: str
) -> None:
    """Poison on a source's input topic and on the pipeline's shard topic is dead-lettered with
    its reason; the deployment keeps serving (a finite run sent to it completes)."""
    import confluent_kafka

    from qmtl_engine_kafka import dead_letter_headers, deployment_topics
    from qmtl_state_redis import RedisStateBackend

    pipeline = _pipeline(f"poison-{unique}")
    plan = pipeline.build()
    state = RedisStateBackend(url=redis_url)
    engine.seed_topics(plan)
    serve(engine, pipeline, state)
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})
    topic = f"qmtl.input.poison-{unique}.px"
    for poison in (
        b"\xff\xfe not json",
        b'{"v": 1, "kind": "event", "pipe',
        b'{"v": 99, "pipeline": "x", "node": "px", "ts": 1}',
    ):
        producer.produce(topic, poison, partition=0)
    # an engine message of no known plan (internal messages are qmtl.codec bytes)
    stray = codec.encode({"v": 2, "k": "E", "r": "x"})
    shard_topic = deployment_topics(plan).shard
    producer.produce(shard_topic, stray, partition=0)
    producer.flush(10)

    events: list[Any] = []
    pipeline.run(events.append, engine=engine, state=state, workers=0, namespace=f"bt-{unique}")
    expected: list[Any] = []
    run_in_process(plan, MemoryStateBackend(), on_output=expected.append)
    assert collect(events) == collect(expected)

    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": f"dlq-{unique}"}
    )
    consumer.assign([confluent_kafka.TopicPartition(f"qmtl.dlq.poison-{unique}", 0, 0)])
    letters = []
    deadline = time.monotonic() + 20
    while len(letters) < 4 and time.monotonic() < deadline:
        letters += [m for m in consumer.consume(10, 0.5) if m.error() is None]
    consumer.close()
    reasons = sorted(dead_letter_headers(m)["qmtl.dlq.reason"] for m in letters)
    assert reasons == ["plan_mismatch", "truncated", "undecodable", "unsupported_version"]
    by_reason = {dead_letter_headers(m)["qmtl.dlq.reason"]: dead_letter_headers(m) for m in letters}
    assert by_reason["undecodable"]["qmtl.dlq.node"] == "px"
    assert by_reason["plan_mismatch"]["qmtl.dlq.topic"] == shard_topic
    state.delete(f"bt-{unique}")
    state.close()


def test_an_unreachable_broker_is_a_clear_error_within_the_connect_timeout() -> None:
    from qmtl_engine_kafka import BrokerUnavailableError
    from qmtl_engine_kafka.engine import KafkaEngine

    engine = KafkaEngine(bootstrap_servers="127.0.0.1:1", connect_timeout_s=2)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError) as caught:
        _pipeline("unreachable").run(engine=engine, state=MemoryStateBackend())
    assert time.monotonic() - started < 10
    assert "127.0.0.1:1" in str(caught.value)
    with pytest.raises(BrokerUnavailableError):
        _pipeline("unreachable").execute(engine=engine, state=MemoryStateBackend())


def test_external_workers_need_a_shared_state_backend(kafka_bootstrap: str) -> None:
    from qmtl.errors import ConfigurationError
    from qmtl_engine_kafka.engine import KafkaEngine

    engine = KafkaEngine(bootstrap_servers=kafka_bootstrap, connect_timeout_s=10)
    with pytest.raises(ConfigurationError, match="state='redis'"):
        _pipeline(f"external-{time.time_ns()}").run(
            engine=engine, state=MemoryStateBackend(), workers=0
        )


@pytest.mark.integration
class TestOnePartition(EngineContract):
    """The contract on a pipeline squeezed into one partition: every shard on one partition,
    buckets crossing shards through the same partition they came from."""

    cases = (
        "multi_source_join",
        "windows",
        "query",
        "lateness",
        "multi_interval",
        "failing",
        # values through buckets crossing shards and through the pending state
        "value_types",
        "numpy_values",
        "refuse_set",
        "refuse_source_set",
    )
    max_examples = 1

    @pytest.fixture
    def contract_engine(self, kafka_bootstrap: str) -> Iterator[Any]:
        from qmtl_engine_kafka.engine import KafkaEngine

        engine = KafkaEngine(
            bootstrap_servers=kafka_bootstrap, connect_timeout_s=10, partitions=1, run_timeout_s=90
        )
        yield engine
        engine.close()

    @pytest.fixture
    def contract_state(self, redis_url: str) -> Iterator[Any]:
        from qmtl_state_redis import RedisStateBackend

        state = RedisStateBackend(url=redis_url)
        yield state
        state.close()


@pytest.mark.integration
@pytest.mark.parametrize("idempotent", [True, False])
def test_producers_are_idempotent_unless_turned_off(
    kafka_bootstrap: str, unique: str, monkeypatch: pytest.MonkeyPatch, idempotent: bool
) -> None:
    """A retried produce must not reorder a partition (an end marker overtaking a bucket)."""
    from qmtl_engine_kafka import _client, _send, _session
    from qmtl_engine_kafka.engine import KafkaEngine

    producers: list[dict[str, Any]] = []

    def recording(kind: str, settings: Any, overrides: Any = None, *, what: str) -> Any:
        if kind == "Producer":
            producers.append(_client.base_config(settings, dict(overrides or {})))
        return _client.new_client(kind, settings, overrides, what=what)  # type: ignore[arg-type]

    monkeypatch.setattr(_session, "new_client", recording)
    monkeypatch.setattr(_send, "new_client", recording)
    kafka = KafkaEngine(
        bootstrap_servers=kafka_bootstrap,
        connect_timeout_s=10,
        run_timeout_s=60,
        idempotent_producer=idempotent,
    )
    try:
        pipeline = _pipeline(f"idempotent-{unique}")
        summary = pipeline.run(engine=kafka, state=MemoryStateBackend())
    finally:
        kafka.close()
    local = run_in_process(_pipeline("idempotent-oracle").build(), MemoryStateBackend())
    assert summary.nodes["ret"].buckets_out == local.nodes["ret"].buckets_out == {"1m": 26}
    assert len(producers) >= 2  # the run's (source events) and the worker's (outputs)
    assert all(config["enable.idempotence"] is idempotent for config in producers)
    assert all(config["enable.gapless.guarantee"] is idempotent for config in producers)
