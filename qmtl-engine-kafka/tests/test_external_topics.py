"""External topics: a trades topic in the user's own JSON, keyed by symbol, feeding one source
per symbol (with the partition's shared watermark), and a node's values published to a user
topic with headers for de-duplication. Unit checks need no broker; the rest runs on one."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from qmtl.errors import PipelineValidationError, SourceError
from qmtl.node import Node, SourceNode
from qmtl.pipeline import Pipeline
from qmtl.state import MemoryStateBackend
from qmtl_engine_kafka import TopicSink, TopicSource

BASE_MS = 1_700_006_400_000
MINUTE = {"1m": {"interval": "1m", "period": 120, "max_history": 1000}}


def test_a_topic_source_routes_by_key_and_converts_the_time_unit() -> None:
    aapl = TopicSource("trades", key="AAPL", ts_field="time", ts_unit="ms", value_field="px")
    trade = {"sym": "AAPL", "px": 187.25, "time": BASE_MS + 1500}
    assert aapl.route(b"AAPL", trade) and not aapl.route(b"MSFT", trade)
    assert aapl.event(trade) == (BASE_MS / 1000 + 1.5, 187.25)
    by_field = TopicSource("trades", key="AAPL", key_field="sym", ts_field="time", ts_unit="ms")
    assert by_field.route(None, trade) and not by_field.route(None, {"sym": "MSFT"})
    assert by_field.event(trade) == (BASE_MS / 1000 + 1.5, trade)  # the whole object
    every = TopicSource("trades", ts_field="t", ts_unit="ns")
    assert every.route(b"anything", {}) and every.event({"t": 2_000_000_000})[0] == 2.0


def test_a_message_without_its_time_or_value_field_is_a_clear_error() -> None:
    source = TopicSource("trades", ts_field="time", value_field="px")
    with pytest.raises(SourceError, match=r"TopicSource\('trades'\): field 'time' is None"):
        source.event({"px": 1.0})
    with pytest.raises(SourceError, match=r"no field 'px'.*fix value_field"):
        source.event({"time": 1.0})
    with pytest.raises(PipelineValidationError, match="ts_unit must be one of"):
        TopicSource("trades", ts_unit="minutes")  # type: ignore[arg-type]
    with pytest.raises(SourceError, match="pass bootstrap_servers"):
        list(TopicSource("trades").events())


def test_two_symbols_of_one_topic_are_two_series() -> None:
    p = Pipeline("ids")
    p.add_node(SourceNode("a", source=TopicSource("trades", key="A")))
    p.add_node(SourceNode("b", source=TopicSource("trades", key="B")))
    plan = p.build()
    assert plan.by_name["a"].node_id != plan.by_name["b"].node_id


def test_a_topic_sink_formats_keys_and_is_a_node_of_its_own_per_topic() -> None:
    p = Pipeline("sinks")
    p.add_node(SourceNode("px", source=[(0, 1.0)]))
    first = TopicSink("out1", "px", "signals", format=lambda v: {"px": v}, key=lambda v: "k")
    second = TopicSink("out2", "px", "other", format=lambda v: {"px": v}, key=lambda v: "k")
    p.add_node(first)
    p.add_node(second)
    plan = p.build()
    assert plan.by_name["out1"].node_id != plan.by_name["out2"].node_id
    assert first.payload({"px": 2.5}) == b'{"px":2.5}'
    assert first.payload("text") == b"text" and first.payload(b"\x00") == b"\x00"
    assert first.key_of(1.0) == "k" and TopicSink("s", "px", "t").key_of(1.0) == "s"
    results = p.execute(engine="local", state=MemoryStateBackend(), ts=60)
    assert results["out1"] == {"px": 1.0}  # the formatted value is the sink's own value


# -- against a broker ------------------------------------------------------------------------
SYMBOLS = {"A": 0, "B": 1, "C": 0}  # symbol -> partition: C shares A's partition


def _trades() -> list[tuple[str, dict[str, Any]]]:
    trades = []
    for i in range(180):  # A and B every 7 s for 21 minutes; C trades once, at the start
        for symbol, offset in (("A", 0), ("B", 3)):
            ms = BASE_MS + (7 * i + offset) * 1000
            trades.append(
                (symbol, {"sym": symbol, "px": 100.0 + (i * 7 + offset) % 11, "time": ms})
            )
    trades.append(("C", {"sym": "C", "px": 50.0, "time": BASE_MS + 2000}))
    return sorted(trades, key=lambda t: t[1]["time"])


def _pipeline(name: str, topic: str, signals: str, bootstrap: str) -> Pipeline:
    p = Pipeline(name)
    for symbol in SYMBOLS:
        source = TopicSource(
            topic,
            key=symbol,
            ts_field="time",
            ts_unit="ms",
            value_field="px",
            bootstrap_servers=bootstrap,
        )
        p.add_node(SourceNode(f"{symbol}_px", source=source, interval_settings=MINUTE))
    p.add_node(
        Node(
            "basket",
            fn=lambda a, b, c: round(a + b + c, 4),
            upstreams=["A_px", "B_px", "C_px"],
            interval_settings=MINUTE,
        )
    )
    p.add_node(
        TopicSink(
            "basket_out",
            "basket",
            signals,
            format=lambda v: {"basket": v},
            interval_settings=MINUTE,
        )
    )
    return p


@pytest.fixture
def redis_state(redis_url: str) -> Iterator[Any]:
    from qmtl_state_redis import RedisStateBackend

    state = RedisStateBackend(url=redis_url)
    yield state
    state.close()


def _history(pipeline: Pipeline, node: str, state: Any) -> list[tuple[float, Any]]:
    items = pipeline.get_history(node, "1m", count=None, state=state)
    return [(float(i["timestamp"]), i["value"]) for i in reversed(items)]


@pytest.mark.integration
def test_a_keyed_trades_topic_feeds_one_source_per_symbol_and_a_sink_publishes(
    kafka_bootstrap: str, redis_state: Any, serve: Any
) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    from qmtl_engine_kafka import KafkaEngineSettings, TopicManager
    from qmtl_engine_kafka.engine import KafkaEngine

    unique = uuid.uuid4().hex[:8]
    topic, signals = f"trades-{unique}", f"signals-{unique}"
    TopicManager(KafkaEngineSettings(bootstrap_servers=kafka_bootstrap)).create_topics(
        [topic], partitions=2
    )
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for symbol, trade in _trades():
        producer.produce(topic, orjson.dumps(trade), key=symbol, partition=SYMBOLS[symbol])
    assert producer.flush(20) == 0
    pipeline = _pipeline(f"ext-{unique}", topic, signals, kafka_bootstrap)

    # the local engine reads the topic itself: the oracle (every bucket flushed at the end)
    oracle = MemoryStateBackend()
    pipeline.run(engine="local", state=oracle)
    expected = _history(pipeline, "basket", oracle)
    assert len(expected) == 21

    engine = KafkaEngine(bootstrap_servers=kafka_bootstrap, connect_timeout_s=10, partitions=2)
    serve(engine, pipeline, redis_state)
    deadline = time.monotonic() + 60
    while len(_history(pipeline, "basket", redis_state)) < 20:
        assert time.monotonic() < deadline, "the live basket stalled"
        time.sleep(0.2)
    live = _history(pipeline, "basket", redis_state)
    # C traded once, at the start; its buckets still closed with its partition's clock, so
    # the basket ran to the last minute both partitions have passed (the last stays open)
    assert live == expected[:20]

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"read-{unique}"})
    consumer.assign([TopicPartition(signals, 0, 0)])
    published: dict[int, Any] = {}
    deadline = time.monotonic() + 30
    while len(published) < 20 and time.monotonic() < deadline:
        for message in consumer.consume(100, 0.5):
            if message.error() is None:
                headers = {k: v.decode() for k, v in message.headers() or []}
                assert headers["qmtl-node"] == "basket_out" and headers["qmtl-interval"] == "1m"
                assert message.key() == b"basket_out"
                published[int(headers["qmtl-bucket"])] = (
                    float(headers["qmtl-ts"]),
                    orjson.loads(message.value() or b"null"),
                )  # a repeated bucket (at-least-once) is dropped by its headers
    consumer.close()
    assert sorted(published.values()) == [(ts, {"basket": v}) for ts, v in expected[:20]]
    redis_state.delete(pipeline.name)

    # a finite run over the topic (in-process workers) gives the local engine's buckets
    state = MemoryStateBackend()
    pipeline.run(engine=engine, state=state)
    assert _history(pipeline, "basket", state) == expected
