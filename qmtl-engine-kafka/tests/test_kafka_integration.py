"""The transport layer against a real Kafka broker (``kafka_bootstrap``)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from qmtl_engine_kafka import (
    Envelope,
    KafkaEngineSettings,
    StreamProcessor,
    TopicManager,
    TriggerError,
    dead_letter_headers,
    encode,
    input_topic,
    output_topic,
    pipeline_topics,
)

pytestmark = pytest.mark.integration


def _partitions(bootstrap: str, topic: str) -> int:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return len(metadata.topics[topic].partitions)


def _drain(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{topic}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                found.append(message)
    finally:
        consumer.close()
    return found


def _events(sp: StreamProcessor, count: int, timeout: float = 20.0) -> list[dict]:
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(events) < count and time.monotonic() < deadline:
        events.extend(sp.consume_batch(count - len(events), 0.5))
    return events


def test_topic_creation_is_idempotent_with_the_requested_partitions(
    kafka_settings: KafkaEngineSettings, unique: str
) -> None:
    topics = pipeline_topics(f"idem-{unique}", ["A", "B"]).all()
    manager = TopicManager(kafka_settings)
    assert manager.create_topics(topics, partitions=3) == {t: True for t in topics}
    assert manager.create_topics(topics, partitions=3) == {t: True for t in topics}
    assert manager.create_topic(topics[0]) is True
    for topic in topics:
        assert _partitions(kafka_settings.bootstrap_servers, topic) == 3


def test_publish_then_consume_returns_value_and_key(
    kafka_settings: KafkaEngineSettings, unique: str
) -> None:
    topic = f"plain-{unique}"
    TopicManager(kafka_settings).create_topic(topic)
    with StreamProcessor(kafka_settings) as sp:
        sp.publish(topic, {"foo": 1}, key="bar")
        sp.subscribe([topic])
        [event] = _events(sp, 1)
    assert event["value"] == {"foo": 1}
    assert event["key"] == "bar"
    assert event["topic"] == topic and event["offset"] == 0


def test_trigger_fires_when_a_node_emits_and_events_reach_a_source(
    kafka_settings: KafkaEngineSettings, unique: str
) -> None:
    pipeline = f"trig-{unique}"
    topics = pipeline_topics(pipeline, ["ticks", "sma"])
    TopicManager(kafka_settings).create_topics(topics.all())
    seen: list[tuple[float, Any]] = []
    with StreamProcessor(kafka_settings, pipeline=pipeline) as sp:
        sp.on("sma", lambda event: seen.append((event["ts"], event["value"])))
        sp.publish_event("ticks", {"px": 100.5}, ts=1_700_000_001.5)
        # What a worker emits for node "sma": one envelope per computed bucket.
        for minute, value in enumerate([10.0, 10.5, 11.0]):
            emitted = Envelope(
                pipeline=pipeline,
                node="sma",
                node_id="id-sma",
                interval="1m",
                ts=60.0 * (minute + 1),
                bucket=minute,
                value=value,
            )
            sp.publish(topics.outputs["sma"], encode(emitted), key="sma")
        handled = sp.run(max_messages=3, timeout=20)

        reader = StreamProcessor(kafka_settings)
        reader.subscribe([input_topic(pipeline, "ticks")])
        [tick] = _events(reader, 1)
        reader.close()
    assert handled == 3
    assert seen == [(60.0, 10.0), (120.0, 10.5), (180.0, 11.0)]
    assert tick["node"] == "ticks" and tick["ts"] == 1_700_000_001.5
    assert tick["value"] == {"px": 100.5} and tick["key"] == "ticks"


def test_poison_goes_to_the_dead_letter_topic_and_the_stream_continues(
    kafka_settings: KafkaEngineSettings, unique: str
) -> None:
    pipeline = f"dlq-{unique}"
    topics = pipeline_topics(pipeline, ["sma"])
    TopicManager(kafka_settings).create_topics(topics.all())
    producer = Producer({"bootstrap.servers": kafka_settings.bootstrap_servers})
    good = Envelope(pipeline=pipeline, node="sma", ts=60.0, value=1.0)
    poison = b'{"v": 2, "pipeline": "' + pipeline.encode() + b'", "node": "sma", "ts": "soon"}'
    for payload in (
        encode(good),
        b"\x00\xffnot json",
        poison,
        b'{"v":1,"pip',
        encode(good._replace(ts=120.0, value=2.0)),
    ):
        producer.produce(topics.outputs["sma"], payload, key=b"k")
    assert producer.flush(10) == 0

    values: list[float] = []
    with StreamProcessor(
        kafka_settings, pipeline=pipeline, dead_letter_topic=topics.dead_letter
    ) as sp:
        sp.on("sma", lambda event: values.append(event["value"]))
        sp.run(max_messages=2, timeout=20)
        assert sp.dead_letters is not None
        assert sp.dead_letters.count == 3
        assert sp.dead_letters.reasons == {"undecodable": 1, "malformed": 1, "truncated": 1}
    assert values == [1.0, 2.0]

    letters = _drain(kafka_settings.bootstrap_servers, topics.dead_letter, 3)
    assert [m.value() for m in letters] == [b"\x00\xffnot json", poison, b'{"v":1,"pip']
    headers = dead_letter_headers(letters[1])
    assert headers["qmtl.dlq.reason"] == "malformed"
    assert "'ts' must be a finite number" in headers["qmtl.dlq.error"]
    assert headers["qmtl.dlq.topic"] == topics.outputs["sma"]
    assert headers["qmtl.dlq.offset"] == "2"


def test_batches_publish_and_consume_in_order(
    kafka_settings: KafkaEngineSettings, unique: str
) -> None:
    topic = f"batch-{unique}"
    TopicManager(kafka_settings).create_topic(topic)
    with StreamProcessor(kafka_settings) as sp:
        assert sp.publish_many(topic, ({"i": i} for i in range(2000)), key="one") == 2000
        sp.subscribe([topic])
        events = _events(sp, 2000)
    assert [e["value"]["i"] for e in events] == list(range(2000))


def test_end_of_stream_marker_reaches_every_input_partition(
    kafka_settings: KafkaEngineSettings, unique: str
) -> None:
    pipeline = f"end-{unique}"
    topic = input_topic(pipeline, "ticks")
    TopicManager(kafka_settings).create_topic(topic, partitions=3)
    with StreamProcessor(kafka_settings, pipeline=pipeline) as sp:
        sp.publish_end("ticks", ts=1_700_000_100.0)
        sp.subscribe([topic])
        markers = _events(sp, 3)
    assert sorted(m["partition"] for m in markers) == [0, 1, 2]
    assert {(m["kind"], m["watermark"]) for m in markers} == {("end", 1_700_000_100.0)}


def test_a_failing_trigger_stops_the_loop_naming_it_and_is_redelivered(
    kafka_settings: KafkaEngineSettings, unique: str
) -> None:
    pipeline = f"fail-{unique}"
    topic = output_topic(pipeline, "sma")
    TopicManager(kafka_settings).create_topic(topic)
    group = f"qmtl-group-{unique}"

    def broken(event: dict) -> None:
        raise ZeroDivisionError("bad model")

    with StreamProcessor(kafka_settings, group, pipeline=pipeline) as sp:
        sp.publish(topic, encode(Envelope(pipeline=pipeline, node="sma", ts=60.0, value=1)))
        sp.on("sma", broken)
        with pytest.raises(TriggerError, match=r"broken.*ZeroDivisionError: bad model"):
            sp.run(timeout=20)
    with StreamProcessor(kafka_settings, group, pipeline=pipeline) as again:
        again.subscribe([topic])
        [event] = _events(again, 1)
    assert event["value"] == 1 and event["offset"] == 0


def test_publishing_to_a_missing_topic_raises_within_the_delivery_timeout(
    kafka_bootstrap: str, unique: str
) -> None:
    settings = KafkaEngineSettings(bootstrap_servers=kafka_bootstrap, delivery_timeout_s=3)
    began = time.monotonic()
    with StreamProcessor(settings) as sp, pytest.raises(Exception, match=f"missing-{unique}"):
        sp.publish(f"missing-{unique}", {"x": 1})
    assert time.monotonic() - began < 10


def test_stop_ends_a_running_loop_promptly(
    kafka_settings: KafkaEngineSettings, unique: str
) -> None:
    pipeline = f"stop-{unique}"
    topic = output_topic(pipeline, "sma")
    TopicManager(kafka_settings).create_topic(topic)
    with StreamProcessor(kafka_settings, pipeline=pipeline) as sp:
        sp.publish(topic, encode(Envelope(pipeline=pipeline, node="sma", ts=60.0, value=1)))
        sp.on("sma", lambda event: sp.stop())
        began = time.monotonic()
        handled = sp.run(timeout=60)
    assert handled == 1
    assert time.monotonic() - began < 15
