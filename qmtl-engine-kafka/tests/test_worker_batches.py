"""How a worker applies one batch, with stand-ins for the broker's clients (no server needed):
end markers only after the history is stored, time-bounded batches, offsets committed."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from qmtl.node import Node, SourceNode
from qmtl.pipeline import Pipeline
from qmtl.state import MemoryStateBackend
from qmtl_engine_kafka import Envelope, KafkaEngineSettings, decode, encode
from qmtl_engine_kafka._client import kafka_module
from qmtl_engine_kafka._task import Task
from qmtl_engine_kafka.dead_letter import DeadLetterQueue
from qmtl_engine_kafka.pending import MemoryPendingStore
from qmtl_engine_kafka.worker import RunContext

MINUTE = {"1m": {"interval": "1m", "period": 10, "max_history": 100}}
BUCKETS = 10


class _Message:
    def __init__(self, topic: str, offset: int, payload: bytes) -> None:
        self._topic, self._offset, self._payload = topic, offset, payload

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._payload


class _Consumer:
    """Records seeks and commits."""

    def __init__(self) -> None:
        self.seeks: list[tuple[str, int, int]] = []
        self.commits: list[list[tuple[str, int, int]]] = []

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def commit(self, *, offsets: list[Any], asynchronous: bool) -> None:
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])

    def close(self) -> None:
        """Nothing to close."""


class _Producer:
    """Records every produced envelope with how many buckets the history held just then."""

    def __init__(self, state: MemoryStateBackend, key: Any) -> None:
        self.state, self.key = state, key
        self.produced: list[tuple[str, int]] = []

    def produce(self, topic: str, payload: bytes, partition: int = 0, **_: Any) -> None:
        stored = len(self.state.read(self.key, count=1000))
        self.produced.append((decode(payload).kind, stored))

    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float) -> int:
        return 0


@pytest.fixture
def task() -> Any:
    def slow(src: float) -> float:
        time.sleep(0.03)
        return src * 2

    pipeline = Pipeline("batches-unit")
    pipeline.add_node(SourceNode("src", source=[(0, 1.0)], interval_settings=MINUTE))
    pipeline.add_node(Node("slow", fn=slow, upstreams=["src"], interval_settings=MINUTE))
    plan = pipeline.build()
    settings = KafkaEngineSettings(bootstrap_servers="127.0.0.1:1", connect_timeout_s=1)
    ctx = RunContext(plan, "r1", settings, MemoryStateBackend(), MemoryPendingStore(), {})
    task = Task(ctx, plan.by_name["slow"], kafka_module("test"), Counter())
    task.consumer.close()  # the real one never reaches a broker; stand-ins take its place
    task.consumer = _Consumer()
    yield task


def _upstream(task: Any) -> list[_Message]:
    """src's output topic: one event per bucket, then its end marker."""
    topic = task.ctx.topics.outputs["src"]
    src = task.ctx.plan.by_name["src"]
    envelopes = [
        Envelope("batches-unit", "src", (b + 1) * 60.0, float(b), src.node_id, "1m", b, run="r1")
        for b in range(BUCKETS)
    ]
    envelopes.append(
        Envelope(
            "batches-unit",
            "src",
            0.0,
            {"buckets": {"1m": BUCKETS}},
            src.node_id,
            kind="end",
            run="r1",
        )
    )
    return [_Message(topic, offset, encode(env)) for offset, env in enumerate(envelopes)]


def _apply_all(task: Any, messages: list[_Message], producer: _Producer) -> list[int]:
    """Feed the batches as the consumer would return them after each seek; the sizes."""
    dlq = DeadLetterQueue(producer, task.ctx.topics.dead_letter)
    sizes = []
    while messages:
        applied = task.process(messages, producer, dlq, [])
        sizes.append(applied)
        messages = messages[applied:]
    return sizes


def test_the_end_marker_is_produced_only_once_every_bucket_is_stored(task: Any) -> None:
    task.slice_s = 60.0  # one batch
    key = task.node.spec("1m").key
    producer = _Producer(task.ctx.state, key)
    assert _apply_all(task, _upstream(task), producer) == [BUCKETS + 1]
    assert producer.produced[-1] == ("end", BUCKETS)  # after the write, and last
    assert [kind for kind, _ in producer.produced].count("end") == 1
    assert [(i["timestamp"], i["value"]) for i in reversed(task.ctx.state.read(key))] == [
        ((b + 1) * 60.0, 2.0 * b) for b in range(BUCKETS)
    ]


def test_a_batch_longer_than_its_time_slice_commits_what_it_applied_and_seeks_back(
    task: Any,
) -> None:
    task.slice_s = 0.1  # ~3 calls of 30 ms
    key = task.node.spec("1m").key
    producer = _Producer(task.ctx.state, key)
    messages = _upstream(task)
    topic = messages[0].topic()
    sizes = _apply_all(task, messages, producer)
    assert len(sizes) > 1 and all(size >= 1 for size in sizes), sizes
    assert sum(sizes) == BUCKETS + 1
    consumer = task.consumer
    # Each slice committed the offsets it applied, and seeked back to the first it did not.
    ends = [sum(sizes[: i + 1]) for i in range(len(sizes))]
    assert consumer.commits == [[(topic, 0, end)] for end in ends]
    assert consumer.seeks == [(topic, 0, end) for end in ends[:-1]]
    assert producer.produced[-1] == ("end", BUCKETS)
    assert len(task.ctx.state.read(key, count=1000)) == BUCKETS
