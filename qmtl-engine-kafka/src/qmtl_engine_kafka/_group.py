"""A worker's membership in its pipeline's consumer groups.

:class:`GroupMember` holds a worker's consumers — the shard consumer in group
``qmtl.{pipeline}`` and, for a deployment, the input consumer in ``qmtl.{pipeline}.input.{plan}``
(both ``cooperative-sticky``, offsets committed by hand) — and what follows from the group
protocol: the shard-topic partitions it owns (a :class:`~qmtl_engine_kafka._partition.Partition`
each, claimed on assignment and started at its saved offset), seeking back to messages a batch
left, commits, every assigned partition's lag, and leaving the groups.
:class:`~qmtl_engine_kafka.worker.Worker` builds its loop on it.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qmtl.errors import EngineError
from qmtl.logs import get_logger
from qmtl.pending import PendingStore
from qmtl.plan import ExecutionPlan
from qmtl.state import StateBackend
from qmtl_engine_kafka._client import new_client
from qmtl_engine_kafka._forward import Forwarder
from qmtl_engine_kafka._layout import Layout
from qmtl_engine_kafka._partition import Partition
from qmtl_engine_kafka.settings import KafkaEngineSettings
from qmtl_engine_kafka.topics import RunTopics

__all__ = ["GroupMember", "WorkerContext"]

log = get_logger(__name__)


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


class GroupMember:
    """A worker's consumers and the partitions they hold (see the module doc)."""

    forwarder: Forwarder | None

    def __init__(self, ctx: WorkerContext, layout: Layout, kafka: Any, what: str) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.topics = ctx.topics
        self.layout = layout
        self.kafka = kafka
        self.stats: Counter[str] = Counter()
        self.forwarder = None
        self.partitions: dict[int, Partition] = {}
        self.consumer = self._consumer(ctx.topics.group, what)
        #: a deployment's input consumer: the seed input topics, in a group of their own, so
        #: the shard partitions and the input partitions are each spread evenly over the
        #: workers (cooperative-sticky balances a member's total partition count, not per topic)
        self.inputs = self._consumer(ctx.topics.inputs, what) if ctx.live else None

    def subscribe(self, inputs: list[str]) -> None:
        """Join the groups: the shard topic, and (a deployment) the input topics ``inputs``
        (patterns allowed)."""
        callbacks = {"on_assign": self._on_assign, "on_revoke": self._on_revoke}
        self.consumer.subscribe([self.topics.shard], **callbacks, on_lost=self._on_revoke)
        if self.inputs is not None:
            self.inputs.subscribe(inputs, **callbacks, on_lost=self._on_revoke)

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

    def lags(self) -> dict[tuple[str, int], int]:
        """Messages not applied yet in each assigned partition: the high watermark minus the
        next offset this worker applies (exact for shard partitions, also right after a
        time-sliced batch sought back; for input partitions the consumer's position, else the
        low watermark). -1 when the broker gave no watermark."""
        kafka = self.kafka
        wanted: list[tuple[Any, str, int, int]] = [
            (self.consumer, self.topics.shard, p, owned.next_offset)
            for p, owned in list(self.partitions.items())
        ]
        if self.inputs is not None and self.forwarder is not None:
            held = [kafka.TopicPartition(t, p) for t, p in self.forwarder.heard]
            try:
                positions = self.inputs.position(held) if held else []
            except kafka.KafkaException:
                positions = [kafka.TopicPartition(tp.topic, tp.partition, -1) for tp in held]
            wanted += [(self.inputs, tp.topic, tp.partition, tp.offset) for tp in positions]
        lags: dict[tuple[str, int], int] = {}
        for consumer, topic, partition, offset in wanted:
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

    def lag(self) -> int:
        """Messages waiting in this worker's partitions (-1: the broker did not say)."""
        lags = self.lags()
        return -1 if any(v < 0 for v in lags.values()) else sum(lags.values())

    def _commit(self, commits: list[Any], forwarded: list[Any]) -> None:
        for consumer, offsets in ((self.consumer, commits), (self.inputs, forwarded)):
            if offsets and consumer is not None:
                try:
                    consumer.commit(offsets=offsets, asynchronous=True)
                except self.kafka.KafkaException as e:
                    self._committed(e.args[0], offsets)

    def leave(self) -> None:
        """Close the consumers: they leave their groups, so their partitions move at once."""
        for consumer in (self.consumer, self.inputs):
            if consumer is None:
                continue
            try:
                consumer.close()
            except (RuntimeError, self.kafka.KafkaException) as error:
                log.warning("qmtl.kafka.close_failed", error=str(error))
