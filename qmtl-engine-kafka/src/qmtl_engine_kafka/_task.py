"""A task: one node of a run in one worker — its consumer, its slots, and its batch loop.

The consumer joins the node's group ``qmtl.{pipeline}.{node}`` and reads the node's inputs (a
source's input topic, plus its merge topic with more than one partition; otherwise its
upstreams' output topics). :meth:`Task.process` applies one batch for at most ``slice_s``
seconds, in this order:

1. decode, skip other runs and offsets already applied, feed the slots (which call the node);
2. hand the outputs to the producer; write the buckets (``write_many``, overlapping their
   delivery); produce end markers only now; flush and check every delivery;
3. save every touched slot's pending state, fenced by its owner token;
4. commit the applied offsets (asynchronously), and seek back to the messages left when the
   slice's time ran out, so the next poll returns them;
5. report the batch to the worker's monitor (:mod:`qmtl_engine_kafka.operations`): its time,
   the source events and late events it applied, the buckets it wrote, its newest event time.

When the node's function raises, the monitor's failure policy decides: end the node with its
error (the batch goes on as above), or drop the batch uncommitted and replay it after a back-off
(:mod:`qmtl_engine_kafka.operations.policy`).
"""

from __future__ import annotations

import math
import os
import time
import uuid
from typing import Any

from qmtl.errors import EngineError
from qmtl.logs import get_logger
from qmtl.plan import PlanNode
from qmtl_engine_kafka import envelope as envelopes
from qmtl_engine_kafka._batch import Batch
from qmtl_engine_kafka._client import consume_error, new_client
from qmtl_engine_kafka._context import LIVE_RUN, RunContext
from qmtl_engine_kafka._slots import MergeSlot, NodeFailed, NodeSlot, Slot, SourceSlot
from qmtl_engine_kafka.dead_letter import DeadLetterQueue
from qmtl_engine_kafka.errors import EnvelopeError, PublishError
from qmtl_engine_kafka.operations.monitor import WorkerMonitor
from qmtl_engine_kafka.topics import group_id, merge_topic

__all__ = ["Task"]

log = get_logger(__name__)


def _caused_upstream(failed: str) -> bool:
    """A node's saved failure that an upstream caused (``NodeSlot`` writes it so; its own
    failures start with the exception's type name)."""
    return failed.startswith("upstream '")


class Task:
    """One node of the run in this worker: its consumer, its slots, its batch loop."""

    def __init__(
        self,
        ctx: RunContext,
        node: PlanNode,
        kafka: Any,
        stats: dict[str, int],
        monitor: WorkerMonitor | None = None,
    ) -> None:
        self.ctx = ctx
        self.node = node
        self.kafka = kafka
        self.stats = stats
        self.monitor = monitor or WorkerMonitor(ctx.pipeline)
        self.live = ctx.run == LIVE_RUN
        #: the failure policy replays a failing batch after a back-off: no poll before this
        self.resume_at = 0.0
        self.failing = False
        #: source slot -> (events, late) already reported to the monitor
        self._counted: dict[str, tuple[int, int]] = {}
        self.source = not node.upstreams
        self.partitions = ctx.input_partitions.get(node.name, 1) if self.source else 1
        topics = ctx.topics
        if self.source:
            self.topics = [topics.inputs[node.name]]
            if self.partitions > 1:
                self.topics.append(merge_topic(ctx.pipeline, node.name))
        else:
            self.topics = list(dict.fromkeys(topics.outputs[u] for u in node.upstreams))
        self.merge = self.topics[1] if len(self.topics) > 1 and self.source else None
        self.group = group_id(ctx.pipeline, node.name)
        self.slots: dict[str, Slot] = {}
        self.assigned: list[tuple[str, int]] = []
        #: longest a batch applies messages before it commits; the Worker sets it
        self.slice_s = ctx.settings.batch_time_s
        self.consumer = new_client(
            "Consumer",
            ctx.settings,
            {
                "group.id": self.group,
                "client.id": f"qmtl-worker-{os.getpid()}-{node.name}"[:200],
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "range",
                "enable.partition.eof": False,
                "session.timeout.ms": int(ctx.settings.session_timeout_s * 1000),
                "heartbeat.interval.ms": max(100, int(ctx.settings.session_timeout_s * 1000) // 5),
                "max.poll.interval.ms": int(ctx.settings.max_poll_interval_s * 1000),
                "fetch.wait.max.ms": 10,
                "fetch.min.bytes": 1,
                "on_commit": self._committed,
            },
            what=f"The Kafka worker of node '{node.name}'",
        )
        self.consumer.subscribe(
            self.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )

    # rebalance callbacks run inside consume(), between batches
    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self.slots.clear()
        self.assigned = [(p.topic, p.partition) for p in partitions]
        log.info(
            "qmtl.kafka.assigned",
            node=self.node.name,
            group=self.group,
            partitions=[f"{t}/{p}" for t, p in self.assigned],
        )

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self.slots.clear()
        self.assigned = []
        log.info(
            "qmtl.kafka.revoked",
            node=self.node.name,
            group=self.group,
            partitions=[f"{p.topic}/{p.partition}" for p in partitions],
        )

    def _slot_name(self, topic: str, partition: int) -> str:
        if not self.source:
            return self.node.name
        if topic == self.merge:
            return f"{self.node.name}#merge"
        return f"{self.node.name}#{partition}"

    def _slot(self, topic: str, partition: int) -> Slot:
        name = self._slot_name(topic, partition)
        slot = self.slots.get(name)
        if slot is None:
            if not self.source:
                slot = NodeSlot(self)
            elif topic == self.merge:
                slot = MergeSlot(self)
            else:
                slot = SourceSlot(self, partition)
            slot.token = uuid.uuid4().hex
            store = self.ctx.store
            store.claim(self.ctx.pipeline, self.ctx.run, name, slot.token)
            data = store.load(self.ctx.pipeline, self.ctx.run, name)
            if data is not None:
                slot.load(data)
            slot.name = name
            self.slots[name] = slot
            if isinstance(slot, SourceSlot):
                self._counted[name] = (slot.bucketer.events, slot.bucketer.late)
            elif isinstance(slot, NodeSlot) and slot.failed and not _caused_upstream(slot.failed):
                self.monitor.stopped_earlier(self.node.name, slot.failed, live=self.live)
        return slot

    def poll(self, timeout: float) -> list[Any]:
        if self.resume_at and time.monotonic() < self.resume_at:
            return []  # a failed batch waits for its replay
        return self.consumer.consume(self.ctx.batch_size, timeout)  # type: ignore[no-any-return]

    def process(
        self, messages: list[Any], producer: Any, dlq: DeadLetterQueue, delivery_errors: list[str]
    ) -> int:
        """Apply one batch and commit it; returns the number of messages applied.

        A batch applies messages for at most ``slice_s`` seconds (at least one message): the
        messages left are fetched again (the consumer seeks back to them) and applied in the
        worker's next round, after its other nodes have polled.
        """
        ctx = self.ctx
        run = ctx.run
        batch = Batch()
        touched: dict[str, Slot] = {}
        applied = 0
        max_bytes = ctx.settings.max_message_bytes
        failure: BaseException | None = None
        dead = dlq.count
        current: tuple[str, int] | None = None
        slot: Slot | None = None
        where = ""
        offsets: dict[str, int] = {}
        applied_floor = 0
        parse, from_object = envelopes.parse, envelopes.from_object
        clock = time.monotonic
        deadline = clock() + self.slice_s
        rest: list[Any] = []
        for i, message in enumerate(messages):
            if i and clock() > deadline:
                rest = messages[i:]
                break
            error = message.error()
            if error is not None:
                if consume_error(self.kafka, error, self.group):
                    self.stats["consume_errors"] += 1
                continue
            partition = message.partition()
            if current is None or current[1] != partition or current[0] != message.topic():
                topic = message.topic()
                current = (topic, partition)
                where = f"{topic}/{partition}"
                slot = touched.get(where)
                if slot is None:
                    slot = touched[where] = self._slot(topic, partition)
                offsets = slot.offsets
                applied_floor = offsets.get(where, 0)
            assert slot is not None
            offset = message.offset()
            if offset < applied_floor:
                self.stats["replayed"] += 1
                continue  # already applied before a restart or rebalance
            offsets[where] = offset + 1
            if failure is not None:
                continue
            try:
                env = from_object(parse(message.value(), max_bytes))
            except EnvelopeError as e:
                dlq.send_envelope_error(message, e, node=self.node.name)
                continue
            if (env.run or LIVE_RUN) != run:
                self.stats["other_runs"] += 1
                continue
            applied += 1
            try:
                slot.handle(env, partition, batch)
            except NodeFailed as failed:
                failure = failed.error
                log.error(
                    "qmtl.kafka.node_failed",
                    node=self.node.name,
                    error=f"{type(failure).__name__}: {failure}",
                )
                verdict = self.monitor.failed(self.node.name, failure, live=self.live)
                if verdict.retry_after_s is not None:
                    self._replay(messages, verdict.retry_after_s)
                    return 0
                assert isinstance(slot, NodeSlot)
                slot.fail(batch, failure)
        for slot in touched.values():
            slot.finish_batch(batch)
        # Outputs are handed to the producer first, so the state write's round trip overlaps
        # their delivery. End markers follow only once the write is stored: a node's end on
        # Kafka (what ends a run) implies its whole history is stored. Outputs that escaped
        # before a crash are recomputed and written by the next owner (this batch's pending
        # state was never saved) before it can reach the end marker.
        self._produce(batch.messages, producer)
        if batch.writes:
            ctx.state.write_many(batch.writes)
        if batch.ends:
            self._produce(batch.ends, producer)
        self._acknowledged(batch, producer, delivery_errors, dlq.count > dead, dlq)
        fenced = [
            name
            for name, slot in {s.name: s for s in touched.values()}.items()
            if not ctx.store.save(ctx.pipeline, run, name, slot.dump(), slot.token)
        ]
        if fenced:
            # Another worker claimed these inputs while this one was busy (it was paused past
            # the session timeout): drop the batch uncommitted; the new owner redoes it.
            self.stats["fenced"] += 1
            log.warning("qmtl.kafka.fenced", node=self.node.name, slots=fenced)
            self.slots.clear()
            return 0
        if rest:
            self._rewind(rest)
        self._commit(touched)
        self.stats["messages"] += applied
        self.stats["buckets"] += len(batch.writes)
        self._report(touched, len(batch.writes), clock() - (deadline - self.slice_s))
        if failure is not None and ctx.on_failure is not None:
            ctx.on_failure(self.node.name, failure)
        return applied

    def _report(self, touched: dict[str, Slot], buckets: int, seconds: float) -> None:
        """The committed batch, to the monitor: per batch, from the slots' own counters."""
        events = late = 0
        newest = -math.inf
        counted = self._counted
        for slot in touched.values():
            if isinstance(slot, SourceSlot):
                bucketer = slot.bucketer
                before = counted.get(slot.name, (0, 0))
                events += bucketer.events - before[0]
                late += bucketer.late - before[1]
                counted[slot.name] = (bucketer.events, bucketer.late)
                seen = bucketer.watermark
            else:  # a node's (or a merge's) final-through, as the end of its last final bucket
                emitter = slot.emitter  # type: ignore[attr-defined]
                seen = max(
                    (
                        (t + 1) * spec.seconds
                        for t, spec in zip(emitter.through, emitter.series, strict=True)
                    ),
                    default=-math.inf,
                )
            if math.isfinite(seen) and seen > newest:
                newest = seen
        monitor = self.monitor
        monitor.batch(
            seconds,
            events=events,
            buckets=buckets,
            late=late,
            watermark=newest if math.isfinite(newest) else None,
        )
        if self.failing:
            self.failing = False
            monitor.recovered(self.node.name)

    def _replay(self, messages: list[Any], after_s: float) -> None:
        """Drop this batch (nothing of it was produced, written, saved or committed): forget
        the slots, which reload their saved state, seek back to the batch's first messages,
        and poll them again after ``after_s``."""
        self.slots.clear()
        self._rewind(messages)
        self.failing = True
        self.resume_at = time.monotonic() + after_s

    def _produce(self, messages: list[tuple[str, bytes]], producer: Any) -> None:
        produce = producer.produce
        for topic, payload in messages:
            try:
                produce(topic, payload, partition=0)
            except BufferError:  # the local queue is full: let deliveries drain, then retry
                while True:
                    producer.poll(0.05)
                    try:
                        produce(topic, payload, partition=0)
                        break
                    except BufferError:
                        continue
        producer.poll(0)

    def _acknowledged(
        self, batch: Batch, producer: Any, errors: list[str], dead: bool, dlq: DeadLetterQueue
    ) -> None:
        if batch.messages or batch.ends or dead:
            remaining = producer.flush(self.ctx.settings.delivery_timeout_s + 5)
            if dead:
                dlq.flush()
            if remaining or errors:
                failed = list(errors)
                errors.clear()
                raise PublishError(
                    f"Node '{self.node.name}': {remaining} output message(s) unacknowledged, "
                    f"errors: {failed[:3]}; the batch will be replayed after a restart"
                )

    def _rewind(self, rest: list[Any]) -> None:
        """Seek back to the first of ``rest`` in each partition: the next poll returns them."""
        first: dict[tuple[str, int], int] = {}
        for message in rest:
            if message.error() is None:
                first.setdefault((message.topic(), message.partition()), message.offset())
        for (topic, partition), offset in first.items():
            try:
                self.consumer.seek(self.kafka.TopicPartition(topic, partition, offset))
            except self.kafka.KafkaException as e:
                # Going on would skip these messages until the next rebalance: stop instead
                # (a restarted worker resumes from the saved pending state).
                raise EngineError(
                    f"Node '{self.node.name}': could not seek {topic}/{partition} back to "
                    f"offset {offset} after a time-bounded batch: {e.args[0]}"
                ) from e

    def _commit(self, touched: dict[str, Slot]) -> None:
        # The offsets the saved pending state holds, committed asynchronously: the pending
        # state is what a next owner trusts, so a failed commit (a rebalance started, the
        # coordinator moved) only means it skips a little more; _committed counts failures.
        tps = []
        for where, slot in touched.items():
            offset = slot.offsets.get(where)
            if offset is not None:
                topic, _, partition = where.rpartition("/")
                tps.append(self.kafka.TopicPartition(topic, int(partition), offset))
        if not tps:
            return
        try:
            self.consumer.commit(offsets=tps, asynchronous=True)
        except self.kafka.KafkaException as e:
            self._committed(e.args[0], tps)

    def _committed(self, error: Any, partitions: list[Any]) -> None:
        if error is not None and error.code() != self.kafka.KafkaError._NO_OFFSET:
            self.stats["commit_failures"] += 1
            log.warning("qmtl.kafka.commit_failed", group=self.group, error=error.str())

    def lag(self) -> int:
        """Messages waiting in this node's assigned partitions (-1: the broker did not say)."""
        lags = self.lags()
        return -1 if any(v < 0 for v in lags.values()) else sum(lags.values())

    def lags(self) -> dict[tuple[str, int], int]:
        """Messages not yet applied in each assigned partition: its high watermark minus the
        next offset this worker will apply. That offset is the slot's (exact, also right after
        a time-sliced batch sought back, when librdkafka's position reads -1001); else the
        consumer's position; else the committed offset; else the low watermark (where
        ``auto.offset.reset=earliest`` starts). -1 when the broker gave no watermark."""
        kafka, consumer = self.kafka, self.consumer
        lags: dict[tuple[str, int], int] = {}
        missing: list[Any] = []
        for topic, partition in self.assigned:
            tp = kafka.TopicPartition(topic, partition)
            slot = self.slots.get(self._slot_name(topic, partition))
            offset = slot.offsets.get(f"{topic}/{partition}", -1) if slot is not None else -1
            if offset < 0:
                try:
                    offset = consumer.position([tp])[0].offset
                except kafka.KafkaException:
                    offset = -1
            if offset < 0:
                missing.append(tp)
            lags[(topic, partition)] = offset
        if missing:
            try:
                for tp in consumer.committed(missing, timeout=2.0):
                    lags[(tp.topic, tp.partition)] = tp.offset
            except kafka.KafkaException:
                pass  # the low watermark below
        for (topic, partition), offset in lags.items():
            tp = kafka.TopicPartition(topic, partition)
            try:
                low, high = consumer.get_watermark_offsets(tp, timeout=1.0, cached=True)
                if high < 0 or (offset < 0 and low < 0):
                    low, high = consumer.get_watermark_offsets(tp, timeout=1.0, cached=False)
            except kafka.KafkaException:
                lags[(topic, partition)] = -1
                continue
            lags[(topic, partition)] = max(0, high - (offset if offset >= 0 else low))
        return lags

    def close(self) -> None:
        self.consumer.close()
