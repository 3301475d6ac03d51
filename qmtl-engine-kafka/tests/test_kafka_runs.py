"""Runs that cannot starve each other (SPEC §6 Runs, Isolation), against a real broker and Redis:
concurrent runs, finite runs against standing workers, no run waiting forever, plans that do
not mix, namespaces, the recorded partition count, values too large for the broker."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from qmtl.node import Node, SourceNode
from qmtl.pipeline import Pipeline
from qmtl.state import MemoryStateBackend
from qmtl.stream_runner import run_in_process
from qmtl.testing.engine_contract import collect, counts, history
from qmtl.testing.pipelines import BASE, CASES

pytestmark = pytest.mark.integration

MINUTE = {"1m": {"interval": "1m", "period": 60, "max_history": 1000}}


@pytest.fixture
def engine(kafka_bootstrap: str) -> Iterator[Any]:
    from qmtl_engine_kafka.engine import KafkaEngine

    engine = KafkaEngine(
        bootstrap_servers=kafka_bootstrap, connect_timeout_s=10, run_timeout_s=90, partitions=4
    )
    yield engine
    engine.close()


@pytest.fixture
def redis_state(redis_url: str) -> Iterator[Any]:
    from qmtl_state_redis import RedisStateBackend

    state = RedisStateBackend(url=redis_url)
    yield state
    state.close()


def _case(name: str, unique: str) -> Pipeline:
    pipeline = CASES[name].build()
    pipeline.name = f"{pipeline.name}-{unique}"
    return pipeline


def _oracle(pipeline: Pipeline) -> tuple[Any, Any, Any]:
    events: list[Any] = []
    state = MemoryStateBackend()
    summary = run_in_process(pipeline.build(), state, on_output=events.append)
    return collect(events), counts(summary), history(pipeline, state)


def _run(pipeline: Pipeline, engine: Any, state: Any, **options: Any) -> tuple[Any, Any]:
    events: list[Any] = []
    summary = pipeline.run(events.append, engine=engine, state=state, **options)
    return collect(events), counts(summary)


def test_two_concurrent_runs_of_one_pipeline_both_complete_with_local_results(
    engine: Any, unique: str
) -> None:
    pipeline = _case("multi_source_join", unique)
    expected = _oracle(pipeline)[:2]
    results: list[Any] = []
    errors: list[BaseException] = []

    def run_once() -> None:
        try:
            results.append(_run(pipeline, engine, MemoryStateBackend()))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=run_once) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert results == [expected, expected]


def test_finite_runs_against_standing_workers_complete_side_by_side(
    engine: Any, redis_state: Any, serve: Any, unique: str
) -> None:
    pipeline = _case("diamond", unique)
    outputs, summary, stored = _oracle(pipeline)
    serve(engine, pipeline, redis_state)
    serve(engine, pipeline, redis_state)  # two workers share the 4 partitions
    results: list[Any] = []
    errors: list[BaseException] = []

    def run_once(namespace: str) -> None:
        try:
            results.append(_run(pipeline, engine, redis_state, workers=0, namespace=namespace))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=run_once, args=(f"bt-{i}-{unique}",)) for i in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert results == [(outputs, summary), (outputs, summary)]
    for i in (1, 2):
        namespace = f"bt-{i}-{unique}"
        got = {
            (node.name, spec.interval.value): [
                (float(item["timestamp"]), item["value"])
                for item in pipeline.get_history(
                    node.name, spec.interval, count=None, state=redis_state, namespace=namespace
                )
            ]
            for node in pipeline.build().nodes
            for spec in node.series
        }
        assert got == stored
        redis_state.delete(namespace)


def test_a_run_without_any_worker_fails_clearly_instead_of_waiting_forever(
    kafka_bootstrap: str, redis_state: Any, unique: str
) -> None:
    from qmtl_engine_kafka import RunStalledError
    from qmtl_engine_kafka.engine import KafkaEngine

    engine = KafkaEngine(
        bootstrap_servers=kafka_bootstrap, connect_timeout_s=10, stall_timeout_s=3, partitions=2
    )
    pipeline = _case("chain", unique)
    began = time.monotonic()
    with pytest.raises(RunStalledError) as caught:
        pipeline.run(engine=engine, state=redis_state, workers=0)
    assert time.monotonic() - began < 30
    message = str(caught.value)
    assert "no worker serves it" in message and "qmtl worker" in message
    assert "label" in caught.value.waiting


def _two_plans(name: str) -> tuple[Pipeline, Pipeline]:
    made = []
    for factor in (2.0, 3.0):
        p = Pipeline(name)
        p.add_node(
            SourceNode(
                "px",
                source=[(BASE + 13 * i, 100.0 + i) for i in range(40)],
                interval_settings=MINUTE,
            )
        )
        p.add_node(
            Node(
                "scaled",
                fn=lambda px, factor: px * factor,
                upstreams=["px"],
                interval_settings=MINUTE,
                key_params=["factor"],
                factor=factor,
            )
        )
        made.append(p)
    return made[0], made[1]


def test_messages_of_another_plan_are_dead_lettered_and_the_run_is_told(
    engine: Any, kafka_bootstrap: str, redis_state: Any, serve: Any, unique: str
) -> None:
    import confluent_kafka

    from qmtl_engine_kafka import PlanMismatchError, dead_letter_headers

    deployed, changed = _two_plans(f"plans-{unique}")
    serve(engine, deployed, redis_state)
    with pytest.raises(PlanMismatchError, match="code differs between the sender and the workers"):
        changed.run(engine=engine, state=redis_state, workers=0, namespace=f"x-{unique}")
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": f"dlq-{unique}"}
    )
    consumer.assign([confluent_kafka.TopicPartition(f"qmtl.dlq.plans-{unique}", 0, 0)])
    letters: list[Any] = []
    deadline = time.monotonic() + 20
    while not letters and time.monotonic() < deadline:
        letters += [m for m in consumer.consume(10, 0.5) if m.error() is None]
    consumer.close()
    assert letters and dead_letter_headers(letters[0])["qmtl.dlq.reason"] == "plan_mismatch"
    # the deployed plan itself still runs
    summary = deployed.run(engine=engine, state=redis_state, workers=0, namespace=f"y-{unique}")
    assert summary.nodes["scaled"].buckets_out == {"1m": 9}
    redis_state.delete(f"y-{unique}")


def test_a_finite_run_writing_a_live_namespace_is_warned_about(
    engine: Any, redis_state: Any, serve: Any, unique: str
) -> None:
    from qmtl_engine_kafka import NamespaceInUseWarning

    pipeline = _case("chain", unique)
    serve(engine, pipeline, redis_state)  # a deployment: its live run writes the pipeline's name
    deadline = time.monotonic() + 20
    store = redis_state.pending_store()
    while store.recall(f"qmtl.{pipeline.name}", f"live:{pipeline.name}") is None:
        assert time.monotonic() < deadline, "the deployment never said its namespace is live"
        time.sleep(0.1)
    with pytest.warns(NamespaceInUseWarning, match="namespace=") as warned:
        pipeline.run(engine=engine, state=redis_state, workers=0)
    assert pipeline.name in str(warned[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a namespace of its own: no warning
        pipeline.run(engine=engine, state=redis_state, namespace=f"bt-{unique}")
    assert (
        len(pipeline.get_history("label", "1m", state=redis_state, namespace=f"bt-{unique}")) == 10
    )
    redis_state.delete(pipeline.name)
    redis_state.delete(f"bt-{unique}")


def test_a_partition_count_differing_from_the_recorded_one_is_refused(
    kafka_bootstrap: str, redis_state: Any, unique: str
) -> None:
    from qmtl_engine_kafka import PartitionCountError, deployment_topics
    from qmtl_engine_kafka.engine import KafkaEngine

    plan = _case("chain", unique).build()
    two = KafkaEngine(bootstrap_servers=kafka_bootstrap, connect_timeout_s=10, partitions=2)
    four = KafkaEngine(bootstrap_servers=kafka_bootstrap, connect_timeout_s=10, partitions=4)
    assert two.deploy(plan, redis_state).partitions == 2
    with pytest.raises(PartitionCountError, match=r"partitions=4.*has 2 partitions.*reset"):
        four.deploy(plan, redis_state)
    # the topic is gone (deleted by hand) but the pending state remembers 2 partitions
    two._delete([deployment_topics(plan).shard])
    time.sleep(1)
    with pytest.raises(PartitionCountError, match=r"recorded with 2.*partitions=2.*reset"):
        four.deploy(plan, redis_state)
    four.reset(plan, redis_state)
    time.sleep(1)
    assert four.deploy(plan, redis_state).partitions == 4
    four.reset(plan, redis_state)


def test_a_value_too_large_for_the_broker_names_the_node_and_the_setting(
    engine: Any, unique: str
) -> None:
    from qmtl_engine_kafka import OversizedValueError

    p = Pipeline(f"big-{unique}")
    p.add_node(
        SourceNode(
            "px", source=[(BASE + 60 * i, float(i)) for i in range(5)], interval_settings=MINUTE
        )
    )
    p.add_node(
        Node(
            "blob",
            fn=lambda px: "x" * (300_000 if px < 2 else 3_000_000),
            upstreams=["px"],
            interval_settings=MINUTE,
        )
    )
    state = MemoryStateBackend()
    with pytest.raises(OversizedValueError) as caught:  # a ValueEncodeError, as the codec's
        p.run(engine=engine, state=state)
    assert (caught.value.node, caught.value.interval) == ("blob", "1m")
    message = str(caught.value)
    assert "over the Kafka engine's limit of 1,000,000" in message
    assert "max_message_bytes (QMTL_KAFKA__MAX_MESSAGE_BYTES)" in message
    # the buckets before the one too large were kept (a node failure, not a crashed worker)
    assert len(p.get_history("blob", "1m", state=state, count=None)) == 2
