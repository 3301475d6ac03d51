"""StreamProcessor: the public stream API over Kafka.

Publish values (plain JSON, or QMTL envelopes to a source node's input topic), subscribe to
topics or node outputs, and register triggers ("when node X emits, call f")::

    with StreamProcessor("localhost:9092", pipeline="prices") as sp:
        sp.publish_event("ticks", {"price": 101.5}, ts=1_700_000_000)
        sp.on("moving_average", lambda event: print(event["ts"], event["value"]))
        sp.run(max_messages=10, timeout=30)

``consume()`` follows the seed SDK: a dict for a usable message, ``None`` for no message,
end of partition, a transient client error, undecodable JSON or a poll failure. Undecodable
messages (and envelopes that fail validation) go to the dead-letter topic when one is set.
Offsets are stored only after the message's triggers returned, and committed in the background
and on ``close()``: a crash re-delivers a message whose trigger did not finish (at least once).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson

from qmtl.errors import EngineError
from qmtl.logs import get_logger
from qmtl.sources import to_timestamp
from qmtl_engine_kafka import envelope as envelopes
from qmtl_engine_kafka._client import check_broker, consume_error, kafka_module, new_client
from qmtl_engine_kafka.dead_letter import DeadLetterQueue
from qmtl_engine_kafka.errors import (
    EnvelopeError,
    PublishError,
    TriggerError,
)
from qmtl_engine_kafka.settings import KafkaEngineSettings
from qmtl_engine_kafka.topics import input_topic, output_topic

__all__ = ["Event", "StreamProcessor", "Trigger"]

log = get_logger(__name__)

#: What consume() returns: topic, partition, offset, key, value, timestamp, headers; for QMTL
#: envelopes also kind, pipeline, node, node_id, interval, ts, bucket, watermark, envelope.
Event = dict[str, Any]
Trigger = Callable[[Event], Any]

_ENVELOPE_KEYS = ("v", "pipeline", "node")


class StreamProcessor:
    """Publish to and consume from Kafka topics, with triggers on node outputs.

    ``brokers`` is a bootstrap string, a list of host:port, or a :class:`KafkaEngineSettings`
    (which also carries security options). The constructor fails within
    ``settings.connect_timeout_s`` with :class:`~qmtl_engine_kafka.errors.BrokerUnavailableError`
    when no broker answers (``check_connection=False`` skips that).
    """

    def __init__(
        self,
        brokers: str | Sequence[str] | KafkaEngineSettings = "localhost:9092",
        group_id: str | None = None,
        client_id: str | None = None,
        *,
        pipeline: str | None = None,
        auto_offset_reset: str = "earliest",
        dead_letter_topic: str | None = None,
        check_connection: bool = True,
        producer_options: dict[str, Any] | None = None,
        consumer_options: dict[str, Any] | None = None,
    ) -> None:
        self._kafka = kafka_module("StreamProcessor")
        if isinstance(brokers, KafkaEngineSettings):
            self.settings = brokers
        else:
            self.settings = KafkaEngineSettings(bootstrap_servers=brokers)
        self.group_id = group_id or f"qmtl-group-{uuid.uuid4().hex[:12]}"
        self.client_id = client_id or f"qmtl-client-{uuid.uuid4().hex[:12]}"
        self.pipeline = pipeline
        self.stats: Counter[str] = Counter()
        self._auto_offset_reset = auto_offset_reset
        self._consumer_options = dict(consumer_options or {})
        self._triggers: dict[str, list[Trigger]] = {}
        self._topics: list[str] = []
        self._consumer: Any = None
        self._stop = threading.Event()
        self._closed = False
        self._delivery_errors: list[str] = []
        self._producer = new_client(
            "Producer",
            self.settings,
            {
                "client.id": self.client_id,
                "linger.ms": 5,
                "message.timeout.ms": int(self.settings.delivery_timeout_s * 1000),
                **(producer_options or {}),
            },
            what="StreamProcessor",
        )
        if check_connection:
            check_broker(self.settings, "StreamProcessor")
        self.dead_letters = (
            DeadLetterQueue(self._producer, dead_letter_topic) if dead_letter_topic else None
        )

    # ---------------------------------------------------------------------------- publishing

    def publish(
        self,
        topic: str,
        value: Any,
        key: str | bytes | None = None,
        headers: dict[str, str | bytes] | None = None,
    ) -> None:
        """Produce ``value`` (JSON; bytes are sent as they are) to ``topic`` and wait for it."""
        self._produce(topic, _to_bytes(value), key, headers)
        self.flush()

    def publish_many(
        self, topic: str, values: Iterable[Any], key: str | bytes | None = None
    ) -> int:
        """Produce every value to ``topic``, then wait once for all of them; returns the count."""
        count = 0
        for value in values:
            self._produce(topic, _to_bytes(value), key, None)
            count += 1
        self.flush()
        return count

    def publish_event(
        self,
        node: str,
        value: Any,
        ts: float | datetime | str | None = None,
        *,
        pipeline: str | None = None,
        key: str | bytes | None = None,
        flush: bool = True,
    ) -> None:
        """Send one event (event time ``ts``, default now) to source ``node``'s input topic.

        ``ts`` is read as a source's event time is (:func:`qmtl.sources.to_timestamp`: epoch
        seconds of any real type, a datetime or an ISO 8601 string). The key defaults to the
        node name, so one source's events stay in order on one partition.
        """
        pipeline = self._pipeline(pipeline)
        stamp = time.time() if ts is None else to_timestamp(ts, f"source '{node}'")
        event = envelopes.Envelope(pipeline=pipeline, node=node, ts=stamp, value=value)
        self._produce(input_topic(pipeline, node), envelopes.encode(event), key or node, None)
        if flush:
            self.flush()

    def publish_end(self, node: str, ts: float, *, pipeline: str | None = None) -> None:
        """Mark the end of a finite stream into source ``node``, on every input partition."""
        pipeline = self._pipeline(pipeline)
        topic = input_topic(pipeline, node)
        marker = envelopes.encode(
            envelopes.Envelope(pipeline=pipeline, node=node, ts=ts, watermark=ts, kind="end")
        )
        for partition in self._partitions(topic):
            self._produce(topic, marker, node, None, partition=partition)
        self.flush()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything produced is acknowledged; raise PublishError otherwise."""
        # A little longer than message.timeout.ms, so a failed delivery reports its own error.
        timeout = self.settings.delivery_timeout_s + 5.0 if timeout is None else timeout
        remaining = self._producer.flush(timeout)
        errors, self._delivery_errors = self._delivery_errors, []
        if remaining:
            errors.append(f"{remaining} message(s) unacknowledged after {timeout:g}s")
        if errors:
            raise PublishError(
                f"Kafka at {self.settings.bootstrap_servers} did not accept "
                f"{len(errors)} message(s): {'; '.join(errors[:5])}; check that the topic "
                "exists (QMTL creates its topics with TopicManager and never relies on "
                "auto-creation) and that the broker is up"
            )

    def _produce(
        self,
        topic: str,
        payload: bytes,
        key: str | bytes | None,
        headers: dict[str, str | bytes] | None,
        partition: int | None = None,
    ) -> None:
        extra = {} if partition is None else {"partition": partition}
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=payload,
                    key=key,
                    headers=headers,
                    on_delivery=self._delivered,
                    **extra,
                )
                break
            except BufferError:
                self._producer.poll(0.1)  # the local queue is full: let deliveries drain
            except self._kafka.KafkaException as e:
                raise PublishError(f"Could not produce to topic '{topic}': {e.args[0]}") from e
        self._producer.poll(0)

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._delivery_errors.append(f"topic '{msg.topic()}': {err.str()}")

    def _partitions(self, topic: str) -> list[int]:
        metadata = self._producer.list_topics(topic, timeout=self.settings.connect_timeout_s)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise PublishError(
                f"Topic '{topic}' does not exist; create the pipeline's topics "
                "first (TopicManager.create_topics)"
            )
        return sorted(found.partitions)

    # ----------------------------------------------------------------------------- consuming

    def subscribe(self, topics: Iterable[str]) -> None:
        """Consume ``topics`` (plus the topics of registered triggers)."""
        self._topics = list(topics)
        self._resubscribe()

    def subscribe_outputs(self, nodes: Iterable[str], *, pipeline: str | None = None) -> None:
        """Consume the output topics of ``nodes``."""
        pipeline = self._pipeline(pipeline)
        self.subscribe([output_topic(pipeline, node) for node in nodes])

    def on(self, node: str, fn: Trigger | None = None, *, pipeline: str | None = None) -> Any:
        """Call ``fn(event)`` whenever ``node`` emits a value; usable as a decorator."""
        topic = output_topic(self._pipeline(pipeline), node)
        if fn is None:
            return lambda f: self.on_topic(topic, f)
        return self.on_topic(topic, fn)

    def on_topic(self, topic: str, fn: Trigger) -> Trigger:
        """Call ``fn(event)`` for every message consumed from ``topic``."""
        self._triggers.setdefault(topic, []).append(fn)
        self._resubscribe()
        return fn

    def consume(self, timeout: float = 1.0) -> Event | None:
        """Poll once: an event dict, or None (no message, EOF, transient error, poison)."""
        consumer = self._ensure_consumer()
        try:
            message = consumer.poll(timeout)
        except (self._kafka.KafkaException, RuntimeError) as e:
            self.stats["poll_errors"] += 1
            log.warning("qmtl.kafka.poll_failed", error=str(e))
            return None
        if message is None:
            return None
        return self._handle(message)

    def consume_batch(self, max_messages: int = 500, timeout: float = 1.0) -> list[Event]:
        """Poll up to ``max_messages`` at once (waiting at most ``timeout``); skips poison."""
        consumer = self._ensure_consumer()
        try:
            messages = consumer.consume(max_messages, timeout)
        except (self._kafka.KafkaException, RuntimeError) as e:
            self.stats["poll_errors"] += 1
            log.warning("qmtl.kafka.poll_failed", error=str(e))
            return []
        events = []
        for message in messages:
            event = self._handle(message)
            if event is not None:
                events.append(event)
        return events

    def run(
        self,
        *,
        max_messages: int | None = None,
        timeout: float | None = None,
        batch_size: int = 500,
    ) -> int:
        """Consume and fire triggers until ``stop()``, ``max_messages`` or ``timeout`` seconds.

        Returns the number of events handled. ``stop()`` (from a signal handler or another
        thread) ends the loop after the current batch.
        """
        self._stop.clear()
        deadline = None if timeout is None else time.monotonic() + timeout
        handled = 0
        while not self._stop.is_set():
            wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if wait <= 0:
                break
            want = batch_size if max_messages is None else min(batch_size, max_messages - handled)
            handled += len(self.consume_batch(want, wait))
            if max_messages is not None and handled >= max_messages:
                break
        return handled

    def stop(self) -> None:
        """Ask a running ``run()`` loop to finish its batch and return (thread-safe)."""
        self._stop.set()

    def commit(self) -> None:
        """Commit the offsets of every handled message now (they are also committed on close)."""
        if self._consumer is None:
            return
        try:
            self._consumer.commit(asynchronous=False)
        except self._kafka.KafkaException as e:
            if e.args[0].code() != self._kafka.KafkaError._NO_OFFSET:
                raise EngineError(
                    f"Committing offsets of group '{self.group_id}' failed: {e.args[0]}"
                ) from e

    def _handle(self, message: Any) -> Event | None:
        error = message.error()
        if error is not None:
            if consume_error(self._kafka, error, self.group_id):
                self.stats["errors"] += 1
            return None
        try:
            event = _event(message, self.settings.max_message_bytes)
        except EnvelopeError as e:
            self.stats[e.reason] += 1
            if self.dead_letters is not None:
                self.dead_letters.send_envelope_error(message, e, flush=True)
            self._store(message)
            return None
        self.stats["consumed"] += 1
        if event.get("kind", "event") == "event":
            for fn in self._triggers.get(event["topic"], ()):
                try:
                    fn(event)
                except Exception as e:
                    name = getattr(fn, "__qualname__", repr(fn))
                    raise TriggerError(
                        f"Trigger {name} on topic '{event['topic']}' raised "
                        f"{type(e).__name__}: {e} (offset {event['offset']} will be "
                        "re-delivered after a restart)"
                    ) from e
        self._store(message)
        return event

    def _store(self, message: Any) -> None:
        with contextlib.suppress(self._kafka.KafkaException):
            self._consumer.store_offsets(message=message)

    def _ensure_consumer(self) -> Any:
        if self._closed:
            raise EngineError("This StreamProcessor is closed; create a new one")
        if self._consumer is None:
            self._consumer = new_client(
                "Consumer",
                self.settings,
                {
                    "group.id": self.group_id,
                    "client.id": self.client_id,
                    "auto.offset.reset": self._auto_offset_reset,
                    "enable.auto.commit": True,
                    "enable.auto.offset.store": False,
                    "enable.partition.eof": False,
                    **self._consumer_options,
                },
                what="StreamProcessor",
            )
        return self._consumer

    def _resubscribe(self) -> None:
        topics = list(dict.fromkeys([*self._topics, *self._triggers]))
        if not topics:
            return
        try:
            self._ensure_consumer().subscribe(topics)
        except self._kafka.KafkaException as e:
            raise EngineError(
                f"Subscribing group '{self.group_id}' to {topics} failed: {e.args[0]}"
            ) from e

    def _pipeline(self, pipeline: str | None) -> str:
        name = pipeline or self.pipeline
        if not name:
            raise EngineError(
                "Name the pipeline: StreamProcessor(..., pipeline='name') or pipeline= on this call"
            )
        return name

    # ------------------------------------------------------------------------------ closing

    def close(self) -> None:
        """Flush what was produced, commit handled offsets, and close both clients.

        Raises PublishError (after closing) when produced messages were not acknowledged.
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        try:
            self.flush()
        finally:
            if self._consumer is not None:
                self._consumer.close()

    def __enter__(self) -> StreamProcessor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"StreamProcessor(bootstrap_servers={self.settings.bootstrap_servers!r}, "
            f"group_id={self.group_id!r}, client_id={self.client_id!r})"
        )


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    try:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    except TypeError as e:
        raise PublishError(f"A {type(value).__name__} cannot be published as JSON: {e}") from e


def _event(message: Any, max_bytes: int) -> Event:
    """The consume() dict of a message; raises EnvelopeError for poison."""
    parsed = envelopes.parse(message.value(), max_bytes)
    key = message.key()
    if isinstance(key, bytes):
        with contextlib.suppress(UnicodeDecodeError):
            key = key.decode("utf-8")
    kind, stamp = message.timestamp()
    event: Event = {
        "topic": message.topic(),
        "partition": message.partition(),
        "offset": message.offset(),
        "key": key,
        "value": parsed,
        "timestamp": stamp if kind != 0 else None,
        "headers": dict(message.headers() or []),
    }
    if type(parsed) is dict and all(k in parsed for k in _ENVELOPE_KEYS):
        env = envelopes.from_object(parsed)
        event.update(
            value=env.value,
            kind=env.kind,
            pipeline=env.pipeline,
            node=env.node,
            node_id=env.node_id,
            interval=env.interval,
            ts=env.ts,
            bucket=env.bucket,
            watermark=env.watermark,
            envelope=env,
        )
    return event
