"""How a worker applies one batch, with stand-ins for the broker's clients (no server needed):
buckets before their end markers, watermarks never ahead of the buckets they cover, end
markers only after the history is stored, time-bounded batches, replays skipped, the
producer's ordering guarantees, a fatal producer error ending the worker."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError

from qmtl import codec
from qmtl.errors import EngineError
from qmtl.node import Node, SourceNode
from qmtl.pending import MemoryPendingStore
from qmtl.pipeline import Pipeline
from qmtl.state import MemoryStateBackend
from qmtl_engine_kafka import KafkaEngineSettings, run_topics
from qmtl_engine_kafka._partition import Partition
from qmtl_engine_kafka._wire import events as columns
from qmtl_engine_kafka._wire import pack
from qmtl_engine_kafka.worker import Worker, WorkerContext

MINUTE = {"1m": {"interval": "1m", "period": 10, "max_history": 100}}
BUCKETS = 10


class _Message:
    def __init__(self, topic: str, offset: int, payload: bytes, partition: int = 0) -> None:
        self._topic, self._offset, self._payload, self._partition = (
            topic,
            offset,
            payload,
            partition,
        )

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._payload

    def key(self) -> None:
        return None


class _Consumer:
    """Records seeks and commits."""

    def __init__(self) -> None:
        self.seeks: list[tuple[str, int, int]] = []
        self.commits: list[list[tuple[str, int, int]]] = []

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def commit(self, *, offsets: list[Any], asynchronous: bool) -> None:
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])

    def consume(self, *_: Any) -> list[Any]:
        return []

    def close(self) -> None:
        """Nothing to close."""


class _Producer:
    """Records every produced message's kind with how many buckets the history held then."""

    def __init__(self, state: MemoryStateBackend, key: Any) -> None:
        self.state, self.key = state, key
        self.produced: list[tuple[str, int, dict[str, Any]]] = []

    def produce(self, topic: str, payload: bytes, partition: int = 0, **_: Any) -> None:
        stored = len(self.state.read(self.key, count=1000))
        message = codec.decode(payload)
        self.produced.append((message.get("k", "?"), stored, message))

    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float) -> int:
        return 0


def _pipeline(delay: float = 0.0) -> Pipeline:
    def slow(src: float) -> float:
        time.sleep(delay)
        return src * 2

    pipeline = Pipeline("batches-unit")
    pipeline.add_node(SourceNode("src", source=[(0, 1.0)], interval_settings=MINUTE))
    pipeline.add_node(Node("slow", fn=slow, upstreams=["src"], interval_settings=MINUTE))
    pipeline.add_node(
        Node(
            "other",
            fn=lambda slow: -slow,
            upstreams=["slow"],
            shard="far",
            interval_settings=MINUTE,
        )
    )
    return pipeline


@pytest.fixture
def worker() -> Any:
    plan = _pipeline(0.03).build()
    settings = KafkaEngineSettings(
        bootstrap_servers="127.0.0.1:1", connect_timeout_s=1, partitions=1
    )
    state = MemoryStateBackend()
    ctx = WorkerContext(
        plan, settings, state, MemoryPendingStore(), run_topics(plan.pipeline, "r1"), 1
    )
    worker = Worker(ctx)
    worker.consumer.close()  # the real one never reaches a broker; stand-ins take its place
    worker.consumer = _Consumer()
    key = plan.by_name["slow"].spec("1m").key
    worker.sender.producer = _Producer(state, key)
    worker.dlq.producer = worker.sender.producer
    worker.partitions[0] = Partition(worker.layout, ctx.store, ctx.topics.scope(0), 0, "t", state)
    yield worker


def _events(worker: Any, per_message: int = 1) -> list[_Message]:
    """src's events (one per minute bucket), then its end marker, on the shard topic."""
    common = {"r": "r1", "h": worker.layout.hash}
    topic = worker.topics.shard
    events = [["src", b * 60.0 + 1, float(b)] for b in range(BUCKETS)]
    payloads = [
        pack(columns("E", common)(events[i : i + per_message]))
        for i in range(0, BUCKETS, per_message)
    ]
    payloads.append(pack({"k": "X", **common, "s": ["src"]}))
    return [_Message(topic, offset, payload) for offset, payload in enumerate(payloads)]


def _apply_all(worker: Any, messages: list[_Message]) -> list[int]:
    """Feed the batches as the consumer would return them after each seek; the sizes."""
    sizes = []
    while messages:
        applied = worker.process(messages)
        sizes.append(applied)
        messages = messages[applied:]
    return sizes


def test_end_markers_follow_the_stored_history_and_buckets_carry_their_through(
    worker: Any,
) -> None:
    worker.slice_s = 60.0  # one batch
    assert _apply_all(worker, _events(worker, per_message=5)) == [3]
    produced = worker.sender.producer.produced
    kinds = [kind for kind, _stored, _m in produced]
    assert kinds.index("N") > max(i for i, k in enumerate(kinds) if k in ("B", "O"))
    end_stored = [stored for kind, stored, _m in produced if kind == "N"]
    assert end_stored == [BUCKETS]  # produced once every bucket of 'slow' was stored
    [cross] = [m for kind, _s, m in produced if kind == "B"]
    [[node, interval, buckets, through, failed]] = cross["b"]
    assert (node, interval, failed) == ("slow", "1m", None)
    assert [b for b, _v in buckets] == list(range(BUCKETS)) and through == "end"


def test_a_batch_longer_than_its_time_slice_commits_what_it_applied_and_seeks_back(
    worker: Any,
) -> None:
    worker.slice_s = 0.1  # ~3 calls of 30 ms
    messages = _events(worker)
    topic = messages[0].topic()
    sizes = _apply_all(worker, messages)
    assert len(sizes) > 1 and all(size >= 1 for size in sizes), sizes
    assert sum(sizes) == BUCKETS + 1
    consumer = worker.consumer
    ends = [sum(sizes[: i + 1]) for i in range(len(sizes))]
    assert consumer.commits == [[(topic, 0, end)] for end in ends]
    assert consumer.seeks == [(topic, 0, end) for end in ends[:-1]]
    # watermarks only move forward, and no bucket is ever sent at or below a through sent
    told = -1
    for kind, _stored, message in worker.sender.producer.produced:
        if kind != "B":
            continue
        for _node, _interval, buckets, through, _failed in message["b"]:
            assert all(b > told for b, _v in buckets)
            told = BUCKETS if through == "end" else through
    assert told == BUCKETS
    history = worker.ctx.state.read(worker.layout.plan.by_name["slow"].spec("1m").key, count=1000)
    assert len(history) == BUCKETS


def test_one_message_longer_than_the_time_slice_is_resumed_where_it_was_cut(
    worker: Any,
) -> None:
    """All ten events in one message, 30 ms of work each, a 0.1 s slice: the worker stops in
    the middle of the message, saves how far it got, seeks back to it and resumes there (even
    as another owner): nothing is applied twice, and the committed offset passes the message
    only once all of it is applied."""
    worker.slice_s = 0.1
    worker.applier.budget = 0.1 / 8
    worker.applier.chunk = 2  # as after a slow chunk: time is checked every 2 events
    messages = _events(worker, per_message=BUCKETS)  # [the events], [the end]
    topic = messages[0].topic()
    assert worker.process(messages) == 0  # cut inside the first message
    owned = worker.partitions[0]
    assert owned.next_offset == 0 and owned.resume is not None
    assert 0 < owned.resume[1] < BUCKETS
    assert worker.consumer.seeks == [(topic, 0, 0)]
    assert worker.consumer.commits == [[(topic, 0, 0)]]
    # another worker takes the partition over from the saved position
    moved = Partition(worker.layout, worker.ctx.store, owned.scope, 0, "t2", worker.ctx.state)
    assert moved.resume == owned.resume
    worker.partitions[0] = moved
    sizes = _apply_all(worker, messages)
    assert sum(sizes) == 2
    sent = [
        b
        for kind, _s, m in worker.sender.producer.produced
        if kind == "B"
        for _n, _i, bk, _t, _f in m["b"]
        for b, _v in bk
    ]
    assert sent == list(range(BUCKETS))  # each bucket once, in order
    assert worker.consumer.commits[-1] == [(topic, 0, 2)]


def test_messages_below_the_saved_offset_are_skipped_after_a_restart(worker: Any) -> None:
    worker.slice_s = 60.0
    messages = _events(worker)
    worker.process(messages[:4])
    owned = worker.partitions[0]
    assert owned.next_offset == 4
    # a new owner starts from the saved state; the broker hands it messages from offset 2
    again = Partition(worker.layout, worker.ctx.store, owned.scope, 0, "t2", worker.ctx.state)
    worker.partitions[0] = again
    before = len(worker.sender.producer.produced)
    worker.process(messages[2:])
    assert worker.stats["replayed"] == 2
    produced = worker.sender.producer.produced[before:]
    sent = [
        b
        for kind, _s, m in produced
        if kind == "B"
        for _n, _i, bk, _t, _f in m["b"]
        for b, _v in bk
    ]
    assert sent == list(range(3, BUCKETS))  # buckets 0-2 went out before; none twice


def test_the_producer_is_idempotent_with_the_gapless_guarantee() -> None:
    from qmtl_engine_kafka._send import producer_config

    config = producer_config(KafkaEngineSettings(), None, None)
    assert config["enable.idempotence"] is True
    assert config["enable.gapless.guarantee"] is True
    off = producer_config(KafkaEngineSettings(idempotent_producer=False), None, None)
    assert off["enable.idempotence"] is False and off["enable.gapless.guarantee"] is False


def test_a_fatal_producer_error_ends_the_worker(worker: Any) -> None:
    fatal = KafkaError(KafkaError._GAPLESS_GUARANTEE, "gap in the produced series", fatal=True)
    worker.sender._error(fatal)
    stop = threading.Event()
    with pytest.raises(EngineError, match=r"fatal error.*gap in the produced series"):
        worker.run_until(stop)
    benign = KafkaError(KafkaError._TRANSPORT, "broker down", fatal=False)
    worker.fatal = None
    worker.sender._error(benign)
    assert worker.fatal is None
