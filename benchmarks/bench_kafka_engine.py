"""Benchmark ``kafka_engine``: the baseline a Kafka worker is measured against.

The raw loop is the least any at-least-once worker must do per batch: consume a batch from an
input topic, produce one message per input to an output topic, wait until the broker has
acknowledged them, then commit the consumed offsets synchronously. It runs twice over the same
N pre-produced QMTL envelopes: once forwarding the bytes untouched (``raw_*``), once decoding
and re-encoding each envelope as a node hop must (``raw_envelope_*``).

Not measured yet: the engine itself (pass-through node and 5-node pipeline, node-executions per
second, per-hop latency, one and two workers, and the ratio to ``raw_events_per_s``). Those come
with the Kafka engine's worker; this module keeps the same topics and event shape for them.

Needs ``QMTL_TEST_KAFKA_BOOTSTRAP`` (``make bench`` starts a broker). ``QMTL_BENCH_KAFKA_EVENTS``
sets N (default 200,000).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, Producer, TopicPartition

from qmtl_engine_kafka import Envelope, KafkaEngineSettings, TopicManager, decode, encode

BATCH = 1000


def _fill(bootstrap: str, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "batch.num.messages": 10_000, "queue.buffering.max.messages": 200_000})
    for i in range(count):
        payload = encode(Envelope(pipeline="bench", node="ticks", ts=1_700_000_000.0 + i,
                                  value={"px": 100.0 + (i % 50) * 0.01, "i": i}))
        while True:
            try:
                producer.produce(topic, payload, key=b"ticks")
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60) != 0:
        raise RuntimeError(f"could not pre-produce {count} events to {topic}")


def _loop(bootstrap: str, source: str, sink: str, count: int,
          transform: Callable[[bytes], bytes]) -> float:
    """Consume -> produce -> flush -> commit over ``count`` messages; returns elapsed seconds."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
        "fetch.min.bytes": 1, "queued.min.messages": 100_000,
    })
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1,
                         "batch.num.messages": 10_000, "queue.buffering.max.messages": 200_000})
    consumer.subscribe([source])
    done = 0
    started = None
    deadline = time.monotonic() + 300
    try:
        while done < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"raw loop stalled after {done} of {count} events")
            messages = consumer.consume(BATCH, 1.0)
            if not messages:
                continue
            if started is None:
                started = time.perf_counter()  # from the first batch: group join excluded
            last: dict[int, int] = {}
            for message in messages:
                if message.error() is not None:
                    continue
                producer.produce(sink, transform(message.value()), key=message.key())
                last[message.partition()] = message.offset()
            producer.poll(0)
            if producer.flush(30) != 0:
                raise RuntimeError("output not acknowledged within 30s")
            consumer.commit(
                offsets=[TopicPartition(source, p, o + 1) for p, o in last.items()],
                asynchronous=False,
            )
            done += len(messages)
        return time.perf_counter() - (started or time.perf_counter())
    finally:
        consumer.close()


def _envelope_hop(payload: bytes) -> bytes:
    event = decode(payload)
    return encode(Envelope(event.pipeline, "out", event.ts, event.value, "bench-out"))


def run() -> dict:
    bootstrap = os.environ.get("QMTL_TEST_KAFKA_BOOTSTRAP")
    if not bootstrap:
        raise RuntimeError("QMTL_TEST_KAFKA_BOOTSTRAP is unset: run through "
                           "`python scripts/services.py --kafka -- ...` or `make bench`")
    count = int(os.environ.get("QMTL_BENCH_KAFKA_EVENTS", "200000"))
    tag = uuid.uuid4().hex[:8]
    source = f"qmtl.input.bench-{tag}.ticks"
    sinks = [f"qmtl.output.bench-{tag}.raw", f"qmtl.output.bench-{tag}.env"]
    TopicManager(KafkaEngineSettings(bootstrap_servers=bootstrap)).create_topics([source, *sinks])

    began = time.perf_counter()
    _fill(bootstrap, source, count)
    fill_s = time.perf_counter() - began
    raw_s = _loop(bootstrap, source, sinks[0], count, lambda payload: payload)
    envelope_s = _loop(bootstrap, source, sinks[1], count, _envelope_hop)
    return {
        "events": count,
        "batch": BATCH,
        "produce_events_per_s": round(count / fill_s),
        "raw_events_per_s": round(count / raw_s),
        "raw_envelope_events_per_s": round(count / envelope_s),
        "envelope_vs_raw": round(raw_s / envelope_s, 3),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
