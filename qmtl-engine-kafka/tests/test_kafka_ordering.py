"""The ordering rules of SPEC §6, read back from the real log: a watermark never overtakes a
bucket it covers and watermarks only move forward; an idle flush by wall clock is written into
the log before it takes effect (so a replay decides the same way)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from qmtl import codec
from qmtl.node import Node, SourceNode
from qmtl.pipeline import Pipeline
from qmtl.testing.pipelines import BASE
from qmtl_engine_kafka import deployment_topics

pytestmark = pytest.mark.integration

MINUTE = {"1m": {"interval": "1m", "period": 60, "max_history": 1000}}
SECOND = {"1s": {"interval": "1s", "period": 600, "max_history": 1000}}


@pytest.fixture
def redis_state(redis_url: str) -> Iterator[Any]:
    from qmtl_state_redis import RedisStateBackend

    state = RedisStateBackend(url=redis_url)
    yield state
    state.close()


def _log(bootstrap: str, topic: str, partitions: int) -> list[tuple[int, dict[str, Any]]]:
    """Every message of ``topic`` as ``(partition, message)``, each partition in log order."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "ordering-check"})
    found: list[tuple[int, dict[str, Any]]] = []
    for partition in range(partitions):
        tp = TopicPartition(topic, partition)
        _low, high = consumer.get_watermark_offsets(tp, timeout=10)
        consumer.assign([TopicPartition(topic, partition, 0)])
        read = 0
        while read < high:
            for message in consumer.consume(1000, 1.0):
                if message.error() is None:
                    read = (message.offset() or 0) + 1
                    found.append((partition, codec.decode(message.value() or codec.encode({}))))
    consumer.close()
    return found


def _symbols(name: str) -> Pipeline:
    p = Pipeline(name)
    for i, symbol in enumerate(("A", "B", "C")):
        p.add_node(
            SourceNode(
                f"{symbol}_px",
                source=[(BASE + 7 * j + i, 100.0 + (j * (i + 2)) % 13) for j in range(200)],
                interval_settings=MINUTE,
            )
        )
        p.add_node(
            Node(
                f"{symbol}_ret",
                fn=lambda w: round(w[-1] / w[0] - 1, 6),
                upstreams=[f"{symbol}_px"],
                window=2,
                interval_settings=MINUTE,
            )
        )
    p.add_node(
        Node(
            "basket",
            fn=lambda a, b, c: round(a + b + c, 6),
            upstreams=["A_ret", "B_ret", "C_ret"],
            interval_settings=MINUTE,
        )
    )
    return p


def test_a_watermark_never_overtakes_a_bucket_it_covers_and_only_moves_forward(
    kafka_bootstrap: str, redis_state: Any, serve: Any, unique: str
) -> None:
    """Three symbols fed event by event through their input topics (small batches, so every
    series crosses into the basket's shard in many messages)."""
    from qmtl_engine_kafka import StreamProcessor
    from qmtl_engine_kafka.engine import KafkaEngine

    engine = KafkaEngine(
        bootstrap_servers=kafka_bootstrap, connect_timeout_s=10, partitions=3, batch_size=7
    )
    pipeline = _symbols(f"order-{unique}")
    plan = pipeline.build()
    engine.seed_topics(plan)
    serve(engine, pipeline, redis_state)
    events = sorted(
        (ts, node.name, value)
        for node in plan.sources
        for ts, value in node.node.source  # type: ignore[union-attr]
    )
    with StreamProcessor(engine.settings, pipeline=pipeline.name) as sp:
        for ts, source, value in events:
            sp.publish_event(source, value, ts=ts, flush=False)
        sp.flush()
        for node in plan.sources:
            sp.publish_end(node.name, ts=0.0)
    deadline = time.monotonic() + 60
    while len(pipeline.get_history("basket", "1m", count=None, state=redis_state)) < 23:
        assert time.monotonic() < deadline, "the live run never computed every basket bucket"
        time.sleep(0.2)
    crossing: dict[tuple[str, str], list[tuple[list[int], Any]]] = {}
    for _partition, message in _log(kafka_bootstrap, deployment_topics(plan).shard, 3):
        if message.get("r") != "live" or message.get("k") != "B":
            continue
        for node, interval, buckets, through, _failed in message["b"]:
            crossing.setdefault((node, interval), []).append(([b for b, _ in buckets], through))
    assert set(crossing) == {("A_ret", "1m"), ("B_ret", "1m"), ("C_ret", "1m")}
    for series, messages in crossing.items():
        told = -1.0
        delivered: list[int] = []
        for buckets, through in messages:
            # every bucket arrives before (or with) the final-through that covers it
            assert all(b > told for b in buckets), (series, buckets, told)
            delivered += buckets
            now = float("inf") if through == "end" else float(through)
            assert now >= told, f"{series}: a watermark moved back"
            told = now
        assert told == float("inf")
        assert delivered == sorted(set(delivered))  # in order, none twice (no restart here)
        assert len(messages) > 2, series  # the small batches really cut the series
    redis_state.delete(pipeline.name)


def test_an_idle_flush_is_written_into_the_log_before_it_closes_a_bucket(
    kafka_bootstrap: str, redis_state: Any, serve: Any, unique: str
) -> None:
    from qmtl_engine_kafka import StreamProcessor
    from qmtl_engine_kafka.engine import KafkaEngine

    engine = KafkaEngine(
        bootstrap_servers=kafka_bootstrap, connect_timeout_s=10, partitions=1, idle_flush_s=1.0
    )
    name = f"idle-{unique}"
    pipeline = Pipeline(name)
    pipeline.add_node(SourceNode("tick", source=[(0, 0.0)], interval_settings=SECOND))
    pipeline.add_node(
        Node("double", fn=lambda tick: tick * 2, upstreams=["tick"], interval_settings=SECOND)
    )
    plan = pipeline.build()
    engine.seed_topics(plan)
    serve(engine, pipeline, redis_state)
    stamp = float(int(time.time()) - 3)  # a second that is over on the wall clock
    with StreamProcessor(engine.settings, pipeline=name) as sp:
        sp.publish_event("tick", 21.0, ts=stamp + 0.25)
    # no later event ever comes: only the idle flush can close bucket `stamp`
    deadline = time.monotonic() + 30
    while not pipeline.get_history("double", "1s", state=redis_state):
        assert time.monotonic() < deadline, "the idle source's bucket never closed"
        time.sleep(0.2)
    [item] = pipeline.get_history("double", "1s", state=redis_state)
    assert (item["timestamp"], item["value"]) == (stamp + 1, 42.0)
    log = [
        m
        for _p, m in _log(kafka_bootstrap, deployment_topics(plan).shard, 1)
        if m.get("r") == "live"
    ]
    kinds = [m["k"] for m in log]
    assert "F" in kinds and "OW" in kinds
    flush = log[kinds.index("OW")]
    assert flush["o"] == f"qmtl.input.{name}.tick/0" and flush["w"] >= stamp + 1
    assert kinds.index("F") < kinds.index("OW")
    redis_state.delete(name)
