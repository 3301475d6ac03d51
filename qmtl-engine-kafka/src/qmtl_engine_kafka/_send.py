"""A worker's producer and the order in which a batch's effects leave it.

:meth:`Sender.send` runs once the batch's buckets are written to the state backend (the shards
write them in bulk while they compute): it produces (1) forwarded input events and buckets
crossing into other shards (each bucket list with its final-through in the same message: a
watermark never overtakes a bucket it covers), outputs, and the seed per-node output topics a
subscriber created; (2) the end markers, after them; then flushes and checks every delivery.
The producer is idempotent with librdkafka's gapless guarantee (``enable.gapless.guarantee``):
a retried message can neither be duplicated nor reordered nor skipped; a fatal error is
recorded and ends the worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from qmtl.logs import get_logger
from qmtl_engine_kafka import envelope as envelopes
from qmtl_engine_kafka._client import kafka_module, new_client
from qmtl_engine_kafka._forward import Forward, Out
from qmtl_engine_kafka._layout import Layout
from qmtl_engine_kafka._shard import Produced
from qmtl_engine_kafka._wire import LIVE_RUN, fit, fit_events, pack
from qmtl_engine_kafka.errors import PublishError
from qmtl_engine_kafka.external import TopicSink
from qmtl_engine_kafka.settings import KafkaEngineSettings
from qmtl_engine_kafka.topics import RunTopics, output_topic

__all__ = ["Sender", "producer_config"]

log = get_logger(__name__)

#: How often the seed output topics that exist are looked up again.
_SEED_REFRESH_S = 10.0


def producer_config(
    settings: KafkaEngineSettings, on_delivery: Any, error_cb: Any
) -> dict[str, Any]:
    """The engine's producer settings (workers and ``run()`` alike)."""
    return {
        "enable.idempotence": settings.idempotent_producer,
        "enable.gapless.guarantee": settings.idempotent_producer,
        "linger.ms": settings.linger_ms,
        "message.timeout.ms": int(settings.delivery_timeout_s * 1000),
        "queue.buffering.max.messages": 1_000_000,
        "message.max.bytes": max(settings.max_message_bytes + 4096, 1_000_000),
        "on_delivery": on_delivery,
        # every delivery callback only records failures: a report per acknowledged message
        # was a Python call per message inside flush()
        "delivery.report.only.error": True,
        "error_cb": error_cb,
    }


def _split_out(item: list[Any]) -> tuple[list[Any], list[Any]] | None:
    node, interval, buckets, ends, values = item
    if len(buckets) < 2:
        return None
    h = len(buckets) // 2
    return (
        [node, interval, buckets[:h], ends[:h], values[:h]],
        [node, interval, buckets[h:], ends[h:], values[h:]],
    )


def _split_cross(item: list[Any]) -> tuple[list[Any], list[Any]] | None:
    node, interval, buckets, through, failed = item
    if len(buckets) < 2:
        return None
    half = len(buckets) // 2
    # the first half's last bucket is final: it is that part's final-through
    first = [node, interval, buckets[:half], buckets[half - 1][0], None]
    return first, [node, interval, buckets[half:], through, failed]


def _name(item: list[Any]) -> tuple[str, str | None]:
    return str(item[0]), item[1] if isinstance(item[1], str) else None


def _wrap(kind: str, field: str, common: dict[str, Any]) -> Any:
    """``items -> message`` for :func:`fit`."""

    def make(items: list[Any]) -> dict[str, Any]:
        return {"k": kind, **common, field: items}

    return make


class Sender:
    """One worker's producer (see the module doc)."""

    def __init__(
        self,
        settings: KafkaEngineSettings,
        layout: Layout,
        topics: RunTopics,
        *,
        live: bool,
        what: str,
        on_fatal: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.layout = layout
        self.topics = topics
        self.pipeline = layout.plan.pipeline
        #: finite runs that warm start (their messages say so, and so do the buckets sent on)
        self.warm: set[str] = set()
        #: a deployment: outputs also go to the seed output topics and TopicSink topics
        self.live = live
        self.on_fatal = on_fatal
        self.kafka = kafka_module("The Kafka engine's worker")
        self.errors: list[str] = []
        self.producer = new_client(
            "Producer",
            self.settings,
            producer_config(self.settings, self._delivered, self._error),
            what=what,
        )
        self._seed: set[str] = set()
        #: (node, interval) -> its seed output topic and envelope writer
        self._seed_writers: dict[tuple[str, str], tuple[str, envelopes.EventWriter]] = {}
        self._has_sinks = any(isinstance(n.node, TopicSink) for n in layout.plan.nodes)
        self._seed_at = 0.0

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(f"topic '{msg.topic()}': {err.str()}")

    def _error(self, err: Any) -> None:
        if err.fatal():
            self.on_fatal(err.str())

    def _produce(self, topic: str, payload: bytes, partition: int, **extra: Any) -> None:
        produce = self.producer.produce
        while True:
            try:
                produce(topic, payload, partition=partition, **extra)
                return
            except BufferError:  # the local queue is full: let deliveries drain, then retry
                self.producer.poll(0.05)

    def _common(self, run: str, namespace: str) -> dict[str, Any]:
        common: dict[str, Any] = {"r": run, "h": self.layout.hash}
        if namespace != self.pipeline:
            common["ns"] = namespace
        if run in self.warm:
            common["ws"] = 1
        return common

    def send(
        self,
        produced: Produced,
        forwards: Out | None,
        *,
        dead: bool = False,
    ) -> None:
        topics = self.topics
        limit = self.settings.max_message_bytes
        if forwards:
            hash_ = self.layout.hash
            for (partition, run), messages in forwards.items():
                for message in messages:
                    if isinstance(message, Forward):
                        # a seed topic's values were decoded by the codec: no type walk
                        # again (a user topic's JSON is checked)
                        checked = not message.keyed
                        payloads = fit_events(message.message(run, hash_), limit, checked=checked)
                    else:
                        message.update(r=run, h=hash_)
                        payloads = [pack(message)]
                    for payload in payloads:
                        self._produce(topics.shard, payload, partition)
        for (partition, run, namespace), items in produced.cross.items():
            common = self._common(run, namespace)
            for payload in fit(_wrap("B", "b", common), items, limit, _split_cross, _name):
                self._produce(topics.shard, payload, partition)
        for (partition, run, namespace), items in produced.outputs.items():
            common = self._common(run, namespace)
            for payload in fit(_wrap("O", "o", common), items, limit, _split_out, _name):
                self._produce(topics.out, payload, partition)
        for (partition, run, namespace), values in produced.once_cross.items():
            message = {"k": "1V", **self._common(run, namespace), **values}
            self._produce(topics.shard, pack(message), partition)
        for (partition, run, namespace), values in produced.once_out.items():
            message = {"k": "1O", **self._common(run, namespace), **values}
            self._produce(topics.out, pack(message), partition)
        self._seed_outputs(produced)
        self.producer.poll(0)
        for (partition, run, namespace), ends in produced.ends.items():
            message = {"k": "N", **self._common(run, namespace), "n": ends}
            self._produce(topics.out, pack(message), partition)
        if (
            forwards
            or produced.cross
            or produced.outputs
            or produced.ends
            or dead
            or produced.once_out
        ):
            self.flush()

    def reject(self, partition: int, run: str, why: str) -> None:
        """Tell ``run()`` that this worker refuses its messages (another plan)."""
        message = {"k": "R", "r": run, "h": self.layout.hash, "why": why}
        self._produce(self.topics.out, pack(message), partition)

    def _sinks(self, produced: Produced) -> None:
        pipeline = self.pipeline
        by_name = self.layout.plan.by_name
        for event in produced.live:
            sink = by_name[event.node].node
            if not isinstance(sink, TopicSink):
                continue
            headers = [
                ("qmtl-pipeline", pipeline.encode()),
                ("qmtl-node", event.node.encode()),
                ("qmtl-interval", event.interval.encode()),
                ("qmtl-bucket", str(event.bucket).encode()),
                ("qmtl-ts", repr(float(event.ts)).encode()),
            ]
            self._produce_any(
                sink.topic, sink.payload(event.value), key=sink.key_of(event.value), headers=headers
            )

    def _produce_any(self, topic: str, payload: bytes, **extra: Any) -> None:
        """A message to a user topic (its partitioner chooses the partition)."""
        while True:
            try:
                self.producer.produce(topic, payload, **extra)
                return
            except BufferError:
                self.producer.poll(0.05)

    def flush(self) -> None:
        remaining = self.producer.flush(self.settings.delivery_timeout_s + 5)
        if remaining or self.errors:
            failed, self.errors = self.errors, []
            raise PublishError(
                f"Pipeline '{self.pipeline}': {remaining} message(s) "
                f"unacknowledged, errors: {failed[:3]}; the batch is replayed after a restart"
            )

    def _seed_outputs(self, produced: Produced) -> None:
        """The live run's outputs on the seed topics ``qmtl.output.{pipeline}.{node}`` that
        exist (a subscriber or ``prepare_pipeline`` created them), and the values of its
        :class:`~qmtl_engine_kafka.external.TopicSink` nodes on their topics."""
        if not self.live or not produced.live:
            return
        if self._has_sinks:
            self._sinks(produced)
        now = time.monotonic()
        pipeline = self.pipeline
        if now - self._seed_at >= _SEED_REFRESH_S:
            self._seed_at = now
            try:
                metadata = self.producer.list_topics(timeout=self.settings.connect_timeout_s)
                self._seed = set(metadata.topics)
            except self.kafka.KafkaException as error:  # keep the last list
                log.warning("qmtl.kafka.topic_lookup_failed", error=str(error))
        writers = self._seed_writers
        by_name = self.layout.plan.by_name
        seed = self._seed
        for event in produced.live:
            found = writers.get((event.node, event.interval))
            if found is None:
                writer = envelopes.event_writer(
                    pipeline, event.node, by_name[event.node].node_id, event.interval, LIVE_RUN
                )
                found = writers[(event.node, event.interval)] = (
                    output_topic(pipeline, event.node),
                    writer,
                )
            topic, write = found
            if topic in seed:
                self._produce(topic, write(event.ts, event.bucket, event.value), 0, key=event.node)
