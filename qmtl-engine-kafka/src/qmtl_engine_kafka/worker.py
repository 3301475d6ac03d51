"""The Kafka engine's worker: one consumer, one producer, every shard of its partitions.

A :class:`Worker` joins its pipeline's consumer group (``cooperative-sticky``), so Kafka's group
protocol spreads the shard topic's partitions — and with them the shards — over the workers,
and moves a dead worker's share to the survivors. Whatever the pipeline's size, a worker has
one consumer, one producer and one thread. Per batch (at most ``batch_size`` messages, applied
for at most ``batch_time_s``; the consumer seeks back to the rest), in this order:

1. apply each message to the shards of its partition (:mod:`qmtl_engine_kafka._shard`: the
   core's runner over each shard, state per run and shard; :mod:`qmtl_engine_kafka._apply`),
   skipping offsets already in the saved state, writing final buckets to the state backend in
   bulk as they come; forward input-topic messages (:mod:`qmtl_engine_kafka._forward`);
   dead-letter what cannot be used, with the reason (another plan's: ``plan_mismatch``);
2. once every bucket of the batch is written, produce what the batch produced — buckets
   crossing into other shards' partitions (with their final-through in the same message, so a
   watermark never overtakes a bucket it covers), outputs to the output topic — and then the
   end markers: a node's end on Kafka implies its history is stored; flush and check every
   delivery;
3. save each touched partition's shards and next offset (one fenced call per partition);
4. commit those offsets and the forwarded input offsets.

A deployment's worker has a second consumer, for the seed input topics, in a group of its own
(``qmtl.{pipeline}.input``): cooperative-sticky balances the *number* of partitions each
member holds, not their topics, so in one group a worker could get every input partition and
another every shard partition.

A crash anywhere replays from the saved offsets: the recomputation is deterministic, bucket
writes overwrite themselves, and readers drop buckets they have passed. The producer is
idempotent with librdkafka's gapless guarantee; a fatal producer error ends the worker (a
restart replays).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qmtl.errors import EngineError
from qmtl.logs import get_logger
from qmtl.pending import PendingStore
from qmtl.plan import ExecutionPlan
from qmtl.state import StateBackend
from qmtl_engine_kafka import _wire
from qmtl_engine_kafka._apply import Applier
from qmtl_engine_kafka._client import consume_error, kafka_module, new_client
from qmtl_engine_kafka._forward import Forwarder
from qmtl_engine_kafka._layout import Layout
from qmtl_engine_kafka._partition import Partition
from qmtl_engine_kafka._send import Sender
from qmtl_engine_kafka._shard import Produced
from qmtl_engine_kafka._wire import LIVE_RUN
from qmtl_engine_kafka.dead_letter import DeadLetterQueue
from qmtl_engine_kafka.errors import EnvelopeError, MalformedEnvelopeError
from qmtl_engine_kafka.settings import KafkaEngineSettings
from qmtl_engine_kafka.topics import RunTopics, input_pattern

__all__ = ["HEARTBEAT_ENV", "LIVE_RUN", "Worker", "WorkerContext"]

log = get_logger(__name__)

HEARTBEAT_ENV = "QMTL_WORKER_HEARTBEAT_FILE"
#: How often a deployment's worker says its namespace is live (and for how long it holds).
_LIVE_NOTE_S, _LIVE_TTL_S = 30.0, 90


@dataclass
class WorkerContext:
    """What a worker serves: a deployment (``live``) or one in-process run's topics."""

    plan: ExecutionPlan
    settings: KafkaEngineSettings
    state: StateBackend
    store: PendingStore
    topics: RunTopics
    partitions: int
    #: a deployment: also forwards the seed input topics and says its namespace is live
    live: bool = False
    #: the namespace of the ``live`` run's history
    namespace: str = ""
    #: called (in the worker's thread) with a node and the exception its function raised
    on_failure: Callable[[str, BaseException], object] | None = None

    def __post_init__(self) -> None:
        self.namespace = self.namespace or self.plan.pipeline


class Worker:
    """Serves every run on its partitions until ``run_until``'s ``stop`` is set."""

    def __init__(
        self,
        ctx: WorkerContext,
        *,
        log_every_s: float = 10.0,
        heartbeat_file: str | None = None,
    ) -> None:
        self.ctx = ctx
        settings = ctx.settings
        self.settings = settings
        self.topics = ctx.topics
        self.layout = Layout(ctx.plan, ctx.partitions, settings.max_message_bytes)
        self.kafka = kafka_module("The Kafka engine's worker")
        self.stats: Counter[str] = Counter()
        self.fatal: Any = None
        what = f"The Kafka worker of pipeline '{ctx.plan.pipeline}'"
        self.sender = Sender(
            settings, self.layout, ctx.topics, live=ctx.live, what=what, on_fatal=self._fatal
        )
        self.dlq = DeadLetterQueue(self.sender.producer, ctx.topics.dead_letter)
        self.consumer = self._consumer(ctx.topics.group, what)
        #: a deployment's input consumer: the seed input topics, in a group of their own, so
        #: the shard partitions and the input partitions are each spread evenly over the
        #: workers (cooperative-sticky balances a member's total partition count, not per topic)
        self.inputs = self._consumer(f"{ctx.topics.group}.input", what) if ctx.live else None
        self.forwarder = (
            Forwarder(
                ctx.plan,
                self.layout,
                consumer=self.inputs,
                dlq=self.dlq,
                max_bytes=settings.max_message_bytes,
                idle_flush_s=settings.idle_flush_s,
                connect_timeout_s=settings.connect_timeout_s,
            )
            if ctx.live
            else None
        )
        self.partitions: dict[int, Partition] = {}
        self._rejected: set[str] = set()
        callbacks = {"on_assign": self._on_assign, "on_revoke": self._on_revoke}
        self.consumer.subscribe([ctx.topics.shard], **callbacks, on_lost=self._on_revoke)
        if self.inputs is not None and self.forwarder is not None:
            topics = [input_pattern(ctx.plan.pipeline), *self.forwarder.topics()]
            self.inputs.subscribe(topics, **callbacks, on_lost=self._on_revoke)
        self.slice_s = min(settings.batch_time_s, settings.max_poll_interval_s / 2)
        self.applier = Applier(self.layout, self.slice_s)
        self.log_every_s = log_every_s
        heartbeat = heartbeat_file or os.environ.get(HEARTBEAT_ENV)
        self.heartbeat = Path(heartbeat) if heartbeat else None
        self.error: BaseException | None = None

    def _consumer(self, group: str, what: str) -> Any:
        settings = self.settings
        return new_client(
            "Consumer",
            settings,
            {
                "group.id": group,
                "client.id": f"qmtl-worker-{os.getpid()}"[:200],
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                "enable.partition.eof": False,
                "session.timeout.ms": int(settings.session_timeout_s * 1000),
                "heartbeat.interval.ms": max(100, int(settings.session_timeout_s * 1000) // 5),
                "max.poll.interval.ms": int(settings.max_poll_interval_s * 1000),
                "fetch.wait.max.ms": 10,
                "fetch.min.bytes": 1,
                "topic.metadata.refresh.interval.ms": 5000,
                "on_commit": self._committed,
            },
            what=what,
        )

    # -- rebalances (inside consume(), between batches) --------------------------------------
    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            if tp.topic == self.topics.shard:
                owned = Partition(
                    self.layout,
                    self.ctx.store,
                    self.topics.scope(tp.partition),
                    tp.partition,
                    uuid.uuid4().hex,
                    self.ctx.state,
                )
                self.partitions[tp.partition] = owned
                if owned.next_offset >= 0:
                    tp.offset = owned.next_offset  # start where the saved state stops
            elif self.forwarder is not None:
                self.forwarder.assigned(tp.topic, tp.partition)
        consumer.incremental_assign(partitions)
        log.info(
            "qmtl.kafka.assigned",
            pipeline=self.ctx.plan.pipeline,
            group=self.topics.group,
            partitions=[f"{tp.topic}/{tp.partition}" for tp in partitions],
        )

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            if tp.topic == self.topics.shard:
                self.partitions.pop(tp.partition, None)
            elif self.forwarder is not None:
                self.forwarder.revoked(tp.topic, tp.partition)
        log.info(
            "qmtl.kafka.revoked",
            pipeline=self.ctx.plan.pipeline,
            group=self.topics.group,
            partitions=[f"{tp.topic}/{tp.partition}" for tp in partitions],
        )

    # -- the loop ------------------------------------------------------------------------------
    def _fatal(self, reason: str) -> None:
        """The producer hit a fatal error (librdkafka's thread): the loop stops on it."""
        self.fatal = reason

    def run_until(self, stop: threading.Event) -> None:
        """The poll loop; returns after ``stop`` is set (or raises what broke the worker)."""
        idle_wait = self.settings.poll_interval_s
        last_log = last_beat = last_note = 0.0
        processed_at_log = 0
        try:
            while not stop.is_set():
                if self.fatal is not None:
                    raise EngineError(
                        f"The producer of pipeline '{self.ctx.plan.pipeline}''s worker hit a "
                        f"fatal error: {self.fatal}; the worker stops (a restart replays from "
                        "the saved state)"
                    )
                messages = self._poll(self.consumer, idle_wait if self.inputs is None else 0)
                if self.inputs is not None:
                    messages += self._poll(self.inputs, 0 if messages else idle_wait)
                if messages or self.forwarder is not None:
                    self.process(messages)
                now = time.monotonic()
                if self.heartbeat is not None and now - last_beat >= 1.0:
                    self._beat()
                    last_beat = now
                if self.ctx.live and self.ctx.store.shared and now - last_note >= _LIVE_NOTE_S:
                    self.ctx.store.note(
                        self.topics.shard, f"live:{self.ctx.namespace}", "1", _LIVE_TTL_S
                    )
                    last_note = now
                if now - last_log >= self.log_every_s:
                    processed = self.applier.applied + self.stats["forwarded"]
                    log.info(
                        "qmtl.kafka.worker_progress",
                        pipeline=self.ctx.plan.pipeline,
                        processed=processed,
                        rate=round((processed - processed_at_log) / max(now - last_log, 1e-9), 1)
                        if last_log
                        else 0.0,
                        buckets=self.stats["buckets"],
                        dead_letters=self.dlq.count,
                        partitions=sorted(self.partitions),
                        lag=self.lag(),
                    )
                    processed_at_log, last_log = processed, now
        except BaseException as error:
            self.error = error
            raise
        finally:
            self.close()

    def _poll(self, consumer: Any, wait: float) -> list[Any]:
        """What ``consumer`` has (up to ``batch_size``), waiting at most ``wait`` for the first
        message only: ``consume(n, timeout)`` waits until its batch is full or the timeout, so a
        single blocking call would delay every message of a quiet stream by ``wait``."""
        batch = self.settings.batch_size
        messages: list[Any] = consumer.consume(batch, 0)
        if messages or not wait:
            return messages
        messages = consumer.consume(1, wait)
        if messages and batch > 1:
            messages += consumer.consume(batch - 1, 0)
        return messages

    def process(self, messages: list[Any]) -> int:
        """Apply one batch and commit it (see the module doc); returns messages applied."""
        produced = Produced()
        forwards = self.forwarder.grouped() if self.forwarder is not None else None
        touched: set[int] = set()
        shard_topic = self.topics.shard
        clock = time.monotonic
        deadline = clock() + self.slice_s
        rest: list[Any] = []
        applied = 0
        dead = self.dlq.count
        for i, message in enumerate(messages):
            if i and clock() > deadline:
                rest = messages[i:]
                break
            error = message.error()
            if error is not None:
                if self.ctx.live and error.code() == self.kafka.KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue  # the input pattern matches no topic yet: normal, not worth a log
                if consume_error(self.kafka, error, self.topics.group):
                    self.stats["consume_errors"] += 1
                continue
            topic = message.topic()
            if topic == shard_topic:
                owned = self.partitions.get(message.partition())
                if owned is None:
                    continue
                offset = message.offset()
                if offset < owned.next_offset:
                    self.stats["replayed"] += 1
                    continue  # its effect is in the saved state already
                touched.add(owned.partition)
                if not self._apply(owned, message, deadline):
                    owned.next_offset = offset  # part of it is applied: resume there
                    rest = messages[i:]
                    break
                owned.next_offset = offset + 1
                applied += 1
            elif forwards is not None and self.forwarder is not None:
                self.forwarder.take(message, forwards)
                self.stats["forwarded"] += 1
                applied += 1
        if forwards is not None and self.forwarder is not None:
            self.forwarder.finish(forwards)
        for partition in touched:
            for state, shard in self.partitions[partition].touched():
                shard.collect(produced, state.outputs)
        if self.ctx.on_failure is not None:  # before the end markers reach the caller
            for node, error in produced.failures:
                self.ctx.on_failure(node, error)
        self.sender.send(produced, forwards, dead=self.dlq.count > dead)
        commits = []
        for partition in touched:
            owned = self.partitions.get(partition)
            if owned is None:
                continue
            if owned.save():
                commits.append(self.kafka.TopicPartition(shard_topic, partition, owned.next_offset))
            else:
                # Another worker claimed the partition while this one was busy (paused past
                # the session timeout): drop it uncommitted; the new owner redoes the batch.
                self.stats["fenced"] += 1
                log.warning("qmtl.kafka.fenced", scope=owned.scope)
                del self.partitions[partition]
        forwarded = []
        if self.forwarder is not None:
            for (topic, partition), offset in self.forwarder.offsets.items():
                forwarded.append(self.kafka.TopicPartition(topic, partition, offset))
            self.forwarder.offsets.clear()
        if rest:
            self._rewind(rest)
        for consumer, offsets in ((self.consumer, commits), (self.inputs, forwarded)):
            if offsets and consumer is not None:
                try:
                    consumer.commit(offsets=offsets, asynchronous=True)
                except self.kafka.KafkaException as e:
                    self._committed(e.args[0], offsets)
        self.stats["messages"] += applied
        self.stats["buckets"] += produced.written
        for node, error in produced.failures:
            log.error("qmtl.kafka.node_failed", node=node, error=f"{type(error).__name__}: {error}")
        return applied

    def _apply(self, owned: Partition, message: Any, deadline: float) -> bool:
        """Apply one shard-topic message; ``False`` when the time slice cut it (its position
        is kept in ``owned.resume``: the next batch goes on from there)."""
        offset = message.offset()
        skip = owned.resume[1] if owned.resume is not None and owned.resume[0] == offset else 0
        owned.resume = None
        try:
            data = _wire.unpack(message.value(), self.settings.max_message_bytes)
            if data.get("h") != self.layout.hash:
                self._reject(message, data)
                return True
            state = owned.run(data["r"], data.get("ns") or self.ctx.plan.pipeline)
            if state is None:
                return True  # the run ended here: a late duplicate
            state.outputs = data.get("wo", 1) != 0
            done = self.applier.apply(state, data, skip, deadline)
        except EnvelopeError as error:
            self.dlq.send_envelope_error(message, error)
            return True
        except (KeyError, TypeError, ValueError, IndexError) as error:
            malformed = MalformedEnvelopeError(
                f"The message does not fit the engine's format: {type(error).__name__}: {error}"
            )
            self.dlq.send_envelope_error(message, malformed)
            return True
        if done is None:
            return True
        owned.resume = (offset, done)
        return False

    def _reject(self, message: Any, data: dict[str, Any]) -> None:
        from qmtl_engine_kafka.errors import PlanMismatchEnvelopeError

        why = (
            f"The message belongs to plan {data.get('h')!r} of pipeline "
            f"'{self.ctx.plan.pipeline}', but this worker runs plan {self.layout.hash!r}: the "
            "pipeline's code differs between the sender and the workers; deploy the same code "
            "to both"
        )
        self.dlq.send_envelope_error(message, PlanMismatchEnvelopeError(why))
        run = data.get("r")
        if isinstance(run, str) and run not in self._rejected:
            self._rejected.add(run)
            self.sender.reject(message.partition(), run, why)

    def _rewind(self, rest: list[Any]) -> None:
        """Seek back to the first of ``rest`` in each partition: the next poll returns them."""
        first: dict[tuple[str, int], int] = {}
        for message in rest:
            if message.error() is None:
                first.setdefault((message.topic(), message.partition()), message.offset())
        for (topic, partition), offset in first.items():
            consumer = self.consumer if topic == self.topics.shard else self.inputs
            assert consumer is not None
            try:
                consumer.seek(self.kafka.TopicPartition(topic, partition, offset))
            except self.kafka.KafkaException as e:
                raise EngineError(
                    f"Could not seek {topic}/{partition} back to offset {offset} after a "
                    f"time-bounded batch: {e.args[0]}"
                ) from e

    def _committed(self, error: Any, partitions: list[Any]) -> None:
        if error is not None and error.code() != self.kafka.KafkaError._NO_OFFSET:
            self.stats["commit_failures"] += 1
            log.warning("qmtl.kafka.commit_failed", group=self.topics.group, error=error.str())

    def lag(self) -> int:
        """Messages waiting in this worker's shard partitions (one offset lookup each)."""
        total = 0
        for partition, owned in list(self.partitions.items()):
            tp = self.kafka.TopicPartition(self.topics.shard, partition)
            try:
                _low, high = self.consumer.get_watermark_offsets(tp, timeout=1.0, cached=False)
            except self.kafka.KafkaException:
                return -1
            total += max(0, high - max(owned.next_offset, 0))
        return total

    def _beat(self) -> None:
        assert self.heartbeat is not None
        try:
            self.heartbeat.touch()
        except OSError as error:
            log.warning("qmtl.kafka.heartbeat_failed", path=str(self.heartbeat), error=str(error))

    def close(self) -> None:
        for consumer in (self.consumer, self.inputs):
            if consumer is None:
                continue
            try:
                consumer.close()  # leaves the group: partitions move at once
            except (RuntimeError, self.kafka.KafkaException) as error:
                log.warning("qmtl.kafka.close_failed", error=str(error))
        self.sender.producer.flush(5)
