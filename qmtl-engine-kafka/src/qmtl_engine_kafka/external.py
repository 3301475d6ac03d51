"""External topics: sources reading the user's own topics, nodes publishing to them.

:class:`TopicSource` feeds a source node from an existing topic in the user's own JSON::

    trades = "trades"  # keyed by symbol, {"sym": "AAPL", "px": 187.2, "time": 1700000000123}
    for symbol in ("AAPL", "MSFT"):
        pipeline.add_node(SourceNode(f"{symbol}_px", source=TopicSource(
            trades, key=symbol, ts_field="time", ts_unit="ms", value_field="px",
            bootstrap_servers="broker:9092",
        )))

- ``key`` routes each message to the source whose key equals the message's Kafka key (or, with
  ``key_field``, that JSON field): one trades topic keyed by symbol feeds one source per symbol.
  ``key=None`` takes every message of the topic.
- ``ts_field`` holds the event time in ``ts_unit`` (``s``, ``ms``, ``us``, ``ns``), converted to
  epoch seconds at the edge; ``value_field`` picks the value (default: the whole object).
- A deployment's workers read the topic (in their input consumer) and forward each message to
  its source's shard, tagged with its partition and offset. A keyed topic's sources share their
  partition's watermark: every worker broadcasts each partition's clock (the highest event time
  it has forwarded from it) to the sources of that topic, so an illiquid symbol's buckets close
  with its partition instead of waiting for its next trade (``qmtl.streaming.MergedSource``).
- On the local engine, and for a finite ``run()`` on any engine, the source reads the topic from
  its beginning to its end at the time of the call (``bootstrap_servers`` is then required), so a
  backtest over the topic's content gives the same buckets as the live deployment did.

:class:`TopicSink` is a node whose values a deployment publishes to a user topic, in the user's
format (``format(value)``: bytes, text or JSON data), keyed by ``key(value)`` (default: the node's
name), with headers ``qmtl-pipeline``, ``qmtl-node``, ``qmtl-interval``, ``qmtl-bucket`` and
``qmtl-ts``: delivery is at least once, and a consumer drops a repeated ``(node, interval,
bucket)``. Its value is also its history, on every engine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import orjson

from qmtl.errors import PipelineValidationError, SourceError
from qmtl.node import Node

__all__ = ["TimestampUnit", "TopicSink", "TopicSource", "parse_message"]

TimestampUnit = Literal["s", "ms", "us", "ns"]
_DIVISORS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


class TopicSource:
    """A source node's events from an existing topic in the user's JSON (module docstring)."""

    bounded = True  #: a finite run reads what the topic holds when it starts

    def __init__(
        self,
        topic: str,
        *,
        key: str | None = None,
        key_field: str | None = None,
        ts_field: str = "ts",
        ts_unit: TimestampUnit = "s",
        value_field: str | None = None,
        bootstrap_servers: str | None = None,
        read_timeout_s: float = 30.0,
    ) -> None:
        if not isinstance(topic, str) or not topic:
            raise PipelineValidationError(f"TopicSource needs a topic name, got {topic!r}")
        if ts_unit not in _DIVISORS:
            raise PipelineValidationError(
                f"TopicSource('{topic}'): ts_unit must be one of {list(_DIVISORS)}, got {ts_unit!r}"
            )
        self.topic = topic
        self.key = key
        self.key_field = key_field
        self.ts_field = ts_field
        self.ts_unit = ts_unit
        self.value_field = value_field
        self.bootstrap_servers = bootstrap_servers
        self.read_timeout_s = read_timeout_s

    def route(self, key: bytes | str | None, obj: Mapping[str, Any]) -> bool:
        """Whether a message with Kafka key ``key`` and JSON ``obj`` belongs to this source."""
        if self.key is None:
            return True
        if self.key_field is not None:
            return str(obj.get(self.key_field)) == self.key
        if isinstance(key, bytes):
            key = key.decode("utf-8", "replace")
        return key == self.key

    def event(self, obj: Mapping[str, Any]) -> tuple[float, Any]:
        """``(ts in epoch seconds, value)`` of one message; :class:`SourceError` naming the
        topic and the field when it has none."""
        raw = obj.get(self.ts_field)
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            raise SourceError(
                f"TopicSource('{self.topic}'): field '{self.ts_field}' is {raw!r}, not a number "
                f"of {self.ts_unit}; set ts_field= (and ts_unit=) to the message's event time"
            )
        ts = raw / _DIVISORS[self.ts_unit]
        if self.value_field is None:
            return ts, dict(obj)
        if self.value_field not in obj:
            raise SourceError(
                f"TopicSource('{self.topic}'): the message has no field '{self.value_field}' "
                f"(it has {sorted(obj)}); fix value_field="
            )
        return ts, obj[self.value_field]

    def events(self) -> Iterator[tuple[float, Any]]:
        """The topic's messages for this source, from its beginning to its end now (every
        partition; within one, in offset order; across partitions, as read)."""
        if self.bootstrap_servers is None:
            raise SourceError(
                f"TopicSource('{self.topic}') reads the topic itself on the local engine and in "
                "a finite run: pass bootstrap_servers='host:port'"
            )
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": "qmtl-topic-source",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )
        try:
            metadata = consumer.list_topics(self.topic, timeout=self.read_timeout_s)
            found = metadata.topics.get(self.topic)
            if found is None or found.error is not None:
                raise SourceError(
                    f"TopicSource('{self.topic}'): no such topic on {self.bootstrap_servers}"
                )
            ends = {}
            for partition in sorted(found.partitions):
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=self.read_timeout_s
                )
                if high > 0:
                    ends[partition] = high
            consumer.assign([TopicPartition(self.topic, p, 0) for p in ends])
            read = dict.fromkeys(ends, 0)
            progress = time.monotonic()
            while any(read[p] < ends[p] for p in ends):
                # consume() waits until its batch is full or the timeout: keep it short
                messages = consumer.consume(1000, 0.2)
                if not messages:
                    if time.monotonic() - progress > self.read_timeout_s:
                        raise SourceError(
                            f"TopicSource('{self.topic}'): nothing read for "
                            f"{self.read_timeout_s:g}s before the end of the topic "
                            f"({read} of {ends})"
                        )
                    continue
                progress = time.monotonic()
                for message in messages:
                    if message.error() is not None:
                        continue
                    partition = message.partition() or 0
                    read[partition] = (message.offset() or 0) + 1
                    obj = parse_message(message.value(), self.topic)
                    if obj is not None and self.route(message.key(), obj):
                        yield self.event(obj)
        except KafkaException as error:
            raise SourceError(
                f"TopicSource('{self.topic}'): reading {self.bootstrap_servers} failed: "
                f"{error.args[0]}"
            ) from error
        finally:
            consumer.close()

    def latest(self) -> Any:
        """The one-shot form: the last value of this source in the topic."""
        last: Any = None
        for last in self.events():  # noqa: B007 — the last item is the latest value
            pass
        if last is None:
            raise SourceError(f"TopicSource('{self.topic}') holds no message for this source")
        return last[1]

    def __repr__(self) -> str:
        return (
            f"TopicSource({self.topic!r}, key={self.key!r}, key_field={self.key_field!r}, "
            f"ts_field={self.ts_field!r}, ts_unit={self.ts_unit!r}, "
            f"value_field={self.value_field!r})"
        )


def parse_message(data: bytes | None, topic: str) -> dict[str, Any] | None:
    """A user message as a JSON object, ``None`` when it is not one (the worker dead-letters
    it; a finite read skips it)."""
    if not data:
        return None
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _identity(value: Any) -> Any:
    return value


class TopicSink(Node):
    """A node whose values a deployment publishes to ``topic`` (module docstring).

    ``upstream`` is the node whose values are published; ``format(value)`` gives what is
    published (bytes, text, or JSON data; default: the value itself); ``key(value)`` the
    message key (default: this node's name).
    """

    def __init__(
        self,
        name: str,
        upstream: str | Node,
        topic: str,
        *,
        format: Callable[[Any], Any] | None = None,
        key: Callable[[Any], str | bytes] | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(topic, str) or not topic:
            raise PipelineValidationError(f"TopicSink '{name}' needs a topic name, got {topic!r}")
        if "upstreams" in kwargs:
            raise PipelineValidationError(
                f"TopicSink '{name}' publishes one upstream: pass it as upstream="
            )
        self.topic = topic
        self.message_key = key
        super().__init__(name, format or _identity, upstreams=[upstream], **kwargs)

    def fingerprint(self) -> str:
        """The format function and the topic: two sinks publishing one node to two topics
        are two nodes."""
        return f"{super().fingerprint()}:{self.topic}"

    def payload(self, value: Any) -> bytes:
        """The bytes published for ``value``."""
        if isinstance(value, bytes | bytearray):
            return bytes(value)
        if isinstance(value, str):
            return value.encode("utf-8")
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)

    def key_of(self, value: Any) -> str | bytes:
        return self.message_key(value) if self.message_key is not None else self.name
