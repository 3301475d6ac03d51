"""Forwarding input topics into shards: how external producers feed a deployment.

A deployment's workers also consume the sources' input topics: the seed ones
``qmtl.input.{pipeline}.{source}`` (the seed's JSON envelope, one source per topic) and the
user's own topics of :class:`~qmtl_engine_kafka.external.TopicSource` sources (the user's JSON,
each message routed by its key to the sources that take it). The worker owning an input
partition (an *origin*) forwards each message to the partition of its source's shard as an
``F`` message tagged with the origin and its offset (the source's
:class:`~qmtl.streaming.MergedSource` applies each offset once, so a forward repeated after a
crash changes nothing); ends become ``OX``. For a user's keyed topic, every batch also sends
each origin's clock (the highest event time forwarded from it) as an ``OW`` to every source of
the topic: sources routed from one input partition share its watermark. The input offsets are
committed only after the forwards are acknowledged. A message that cannot be used is
dead-lettered with the reason.

**Idle flush** (``idle_flush_s``): an input partition silent that long gets a watermark at the
wall clock, produced into the shards' partitions as an ``OW`` message before it takes effect,
so a replay of the log decides exactly the same way.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from qmtl.errors import SourceError
from qmtl.plan import ExecutionPlan
from qmtl_engine_kafka import envelope as envelopes
from qmtl_engine_kafka._layout import Layout
from qmtl_engine_kafka._wire import LIVE_RUN
from qmtl_engine_kafka.dead_letter import DeadLetterQueue
from qmtl_engine_kafka.errors import EnvelopeError, MalformedEnvelopeError
from qmtl_engine_kafka.external import TopicSource, parse_message
from qmtl_engine_kafka.topics import input_topic

__all__ = ["Forwarder", "external_topics"]


class Forward:
    """An ``F`` message being built: events of one origin, in columns (see
    :mod:`qmtl_engine_kafka._wire`). ``at`` stays ``None`` while every event is of one source
    (a seed input topic's), so the hot path appends to three lists only."""

    __slots__ = ("at", "count", "keyed", "names", "offsets", "origin", "stamps", "values")

    def __init__(self, origin: str, count: int, keyed: bool) -> None:
        self.origin = origin
        self.count = count
        self.keyed = keyed
        self.names: dict[str, int] = {}
        self.at: list[int] | None = None
        self.offsets: list[int] = []
        self.stamps: list[float] = []
        self.values: list[Any] = []

    def only(self, source: str) -> bool:
        """Whether ``source`` is (now) the message's one source: its events may be appended
        to the columns directly."""
        names = self.names
        if not names:
            names[source] = 0
        return self.at is None and len(names) == 1 and source in names

    def add(self, source: str, offset: int, ts: float, value: Any) -> None:
        index = self.names.get(source)
        if index is None:
            index = self.names[source] = len(self.names)
            if index and self.at is None:
                self.at = [0] * len(self.stamps)
        if self.at is not None:
            self.at.append(index)
        self.offsets.append(offset)
        self.stamps.append(ts)
        self.values.append(value)

    def message(self, run: str, plan_hash: str) -> dict[str, Any]:
        """The ``F`` message: ``i`` only when it holds several sources, and the offsets as the
        first one (``f0``) when they follow each other (as an input partition's do)."""
        message: dict[str, Any] = {
            "k": "F",
            "r": run,
            "h": plan_hash,
            "o": self.origin,
            "c": self.count,
            "n": list(self.names),
            "t": self.stamps,
            "x": self.values,
        }
        if self.at is not None:
            message["i"] = self.at
        offsets = self.offsets
        first = offsets[0]
        if offsets[-1] - first == len(offsets) - 1 and offsets == list(
            range(first, offsets[-1] + 1)
        ):
            message["f0"] = first
        else:
            message["f"] = offsets
        if self.keyed:
            message["m"] = 1
        return message


#: per ``(shard partition, run)``, the messages to produce there in order
Out = dict[tuple[int, str], list[Forward | dict[str, Any]]]


def external_topics(plan: ExecutionPlan) -> dict[str, list[tuple[str, TopicSource]]]:
    """The user topics a plan's sources read: topic -> ``[(source, its TopicSource)]``."""
    found: dict[str, list[tuple[str, TopicSource]]] = defaultdict(list)
    for node in plan.nodes:
        source = getattr(node.node, "source", None)
        if not node.upstreams and isinstance(source, TopicSource):
            found[source.topic].append((node.name, source))
    return dict(found)


class Forwarder:
    """Turns input-topic messages into shard-topic messages (see the module doc)."""

    def __init__(
        self,
        plan: ExecutionPlan,
        layout: Layout,
        *,
        consumer: Any,
        dlq: DeadLetterQueue,
        max_bytes: int,
        idle_flush_s: float | None,
        connect_timeout_s: float,
    ) -> None:
        self.layout = layout
        self.consumer = consumer
        self.dlq = dlq
        self.max_bytes = max_bytes
        self.idle_flush_s = idle_flush_s
        self.connect_timeout_s = connect_timeout_s
        #: seed input topic -> the source it feeds
        self.sources = {
            input_topic(plan.pipeline, node.name): node.name
            for node in plan.nodes
            if not node.upstreams and node.kind != "query"
        }
        #: seed input topic -> the reader of the events encode() writes for its source
        self.readers = {
            topic: envelopes.event_reader(plan.pipeline, source)
            for topic, source in self.sources.items()
        }
        #: user topic -> its sources
        self.external = external_topics(plan)
        self._counts: dict[str, int] = {}
        #: (topic, partition) -> wall time of its last message (or of its assignment)
        self.heard: dict[tuple[str, int], float] = {}
        #: (topic, partition) -> next offset to commit once the forwards are acknowledged
        self.offsets: dict[tuple[str, int], int] = {}
        #: (user topic, partition) -> its clock, not broadcast yet
        self.clocks: dict[tuple[str, int], float] = {}
        self._clock_of: dict[tuple[str, int], float] = {}
        #: input partitions that delivered messages in this batch
        self.seen: set[tuple[str, int]] = set()
        self._origins: dict[tuple[str, int], str] = {}

    def topics(self) -> list[str]:
        """The user topics to subscribe to (the seed ones come by pattern)."""
        return sorted(self.external)

    def assigned(self, topic: str, partition: int) -> None:
        self.heard[(topic, partition)] = time.time()

    def revoked(self, topic: str, partition: int) -> None:
        self.heard.pop((topic, partition), None)
        self.offsets.pop((topic, partition), None)

    def owns(self, topic: str) -> bool:
        return topic in self.sources or topic in self.external

    def _count(self, topic: str) -> int:
        count = self._counts.get(topic)
        if count is None:
            metadata = self.consumer.list_topics(topic, timeout=self.connect_timeout_s)
            count = self._counts[topic] = len(metadata.topics[topic].partitions)
        return count

    def _open(
        self, out: Out, source: str, run: str, origin: str, count: int, keyed: bool
    ) -> Forward:
        """The ``F`` message of ``origin`` open at the end of ``source``'s queue (a new one when
        something else came last)."""
        queue = out[(self.layout.partition_of(source), run)]
        last = queue[-1] if queue else None
        if type(last) is Forward and last.origin == origin:
            return last
        forward = Forward(origin, count, keyed)
        queue.append(forward)
        return forward

    def take(self, message: Any, out: Out) -> None:
        """Forward one input message: appended to ``out[(partition, run)]`` in order."""
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        where = (topic, partition)
        self.offsets[where] = offset + 1
        self.seen.add(where)
        if topic in self.external:
            self._external(message, out)
            return
        source = self.sources.get(topic)
        if source is None:
            return
        try:
            env = envelopes.decode(message.value(), self.max_bytes)
        except EnvelopeError as error:
            self.dlq.send_envelope_error(message, error, node=source)
            return
        run = env.run or LIVE_RUN
        origin = self._origins.get(where) or self._origin(where)
        count = self._count(topic)
        if env.kind == "event":
            self._open(out, source, run, origin, count, False).add(
                source, offset, env.ts, env.value
            )
            return
        queue = out[(self.layout.partition_of(source), run)]
        if env.kind == "watermark":
            mark = env.watermark if env.watermark is not None else env.ts
            queue.append({"k": "OW", "o": origin, "c": count, "s": [source], "w": mark})
        else:
            queue.append({"k": "OX", "o": origin, "c": count, "s": [source]})

    def take_all(self, messages: list[Any], out: Out, on_error: Callable[[Any], None]) -> int:
        """:meth:`take` every message in order (``on_error`` gets those carrying a consumer
        error); returns how many were forwarded. The hot path: an event in the layout
        :func:`~qmtl_engine_kafka.envelope.encode` writes is read by its topic's
        :func:`~qmtl_engine_kafka.envelope.event_reader` straight into the columns of its
        origin's open ``F`` message; anything else goes through :meth:`take`."""
        errors, last, source = 0, -1, ""
        where = topic_at, partition_at = ("", -1)  # the partition of the messages being taken
        read: envelopes.EventReader | None = None
        forward: Forward | None = None
        offsets: list[int] = []  # the open F message's columns
        stamps: list[float] = []
        values: list[Any] = []
        for message in messages:
            if message.error() is not None:
                on_error(message)
                errors += 1
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if partition != partition_at or topic != topic_at:
                if partition_at >= 0:
                    self.offsets[where] = last + 1
                where = topic_at, partition_at = (topic, partition)
                self.seen.add(where)
                read = self.readers.get(topic)
                source = self.sources.get(topic, "")
                forward = None
            last = offset
            event = None if read is None else read(message.value() or b"")
            if event is None:
                self.take(message, out)
                forward = None
                continue
            if forward is None:
                origin = self._origins.get(where) or self._origin(where)
                forward = self._open(out, source, LIVE_RUN, origin, self._count(topic), False)
                if not forward.only(source):  # never for a seed topic: one source each
                    forward.add(source, offset, *event)
                    forward = None
                    continue
                offsets, stamps, values = forward.offsets, forward.stamps, forward.values
            offsets.append(offset)
            stamps.append(event[0])
            values.append(event[1])
        if partition_at >= 0:
            self.offsets[where] = last + 1
        return len(messages) - errors

    def _external(self, message: Any, out: Out) -> None:
        """A user's JSON message: to every source its key routes it to."""
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        obj = parse_message(message.value(), topic)
        if obj is None:
            self.dlq.send_envelope_error(
                message,
                MalformedEnvelopeError(f"A message of topic '{topic}' is not a JSON object"),
            )
            return
        origin, count = f"{topic}/{partition}", self._count(topic)
        key = message.key()
        for source, spec in self.external[topic]:
            if not spec.route(key, obj):
                continue
            try:
                ts, value = spec.event(obj)
            except SourceError as error:
                self.dlq.send_envelope_error(
                    message, MalformedEnvelopeError(str(error)), node=source
                )
                return
            self._open(out, source, LIVE_RUN, origin, count, True).add(source, offset, ts, value)
            if ts > self._clock_of.get((topic, partition), -float("inf")):
                self._clock_of[(topic, partition)] = ts
                self.clocks[(topic, partition)] = ts

    def _broadcast(self, out: Out, topic: str, partition: int, mark: float) -> None:
        """Origin ``topic/partition``'s watermark to every source of the user topic ``topic``."""
        by_partition: dict[int, list[str]] = defaultdict(list)
        for source, _spec in self.external[topic]:
            by_partition[self.layout.partition_of(source)].append(source)
        for destination, sources in by_partition.items():
            out[(destination, LIVE_RUN)].append(
                {
                    "k": "OW",
                    "o": f"{topic}/{partition}",
                    "c": self._count(topic),
                    "s": sources,
                    "w": mark,
                    "m": 1,
                }
            )

    def _origin(self, where: tuple[str, int]) -> str:
        origin = self._origins[where] = f"{where[0]}/{where[1]}"
        return origin

    def finish(self, out: Out) -> None:
        """After a batch: the user topics' partition clocks, and idle flushes."""
        if self.seen:
            now = time.time()
            for where in self.seen:
                self.heard[where] = now
            self.seen.clear()
        for (topic, partition), mark in self.clocks.items():
            self._broadcast(out, topic, partition, mark)
        self.clocks.clear()
        if self.idle_flush_s is None:
            return
        now = time.time()
        for (topic, partition), last in self.heard.items():
            if now - last < self.idle_flush_s:
                continue
            if topic in self.external:
                self.heard[(topic, partition)] = now
                self._broadcast(out, topic, partition, now)
                continue
            source = self.sources.get(topic)
            if source is None:
                continue
            self.heard[(topic, partition)] = now
            out[(self.layout.partition_of(source), LIVE_RUN)].append(
                {
                    "k": "OW",
                    "o": f"{topic}/{partition}",
                    "c": self._count(topic),
                    "s": [source],
                    "w": now,
                }
            )

    def grouped(self) -> Out:
        return defaultdict(list)
