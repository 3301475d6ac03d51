"""A user's strategy module written for ``mypy --strict``, without the pydantic mypy plugin.

QMTL ships type information (``py.typed``) for every distribution, so a strategy checks like
any typed library code: nodes and pipelines, one-shot and streaming runs with their results
(``RunSummary``, ``OutputEvent``), history, settings models of the engines and state backends
(``KafkaEngineSettings``, ``RedisStateSettings``, ``LocalEngineSettings``, ``QmtlSettings``) and
the mock engine for unit tests. ``tests/test_user_typing.py`` runs ``mypy --strict`` on this
file with no configuration (``assert_type`` lines fail it if a result were ``Any``) and runs it.

Run it with ``uv run python examples/typed_strategy.py`` (local engine, memory state).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import assert_type

from pydantic import SecretStr

from qmtl import IntervalSettings, Node, Pipeline, QueryNode, SourceNode
from qmtl.mock import MockExecutionEngine
from qmtl.settings import QmtlSettings
from qmtl.streaming import OutputEvent, RunSummary
from qmtl_engine_kafka import KafkaEngineSettings
from qmtl_engine_local import LocalEngineSettings
from qmtl_state_redis import RedisStateSettings

HOUR = 3_600
Event = tuple[float, float]


def minute_prices(start: float, drift: float, minutes: int) -> Iterator[Event]:
    """A deterministic minute-price path: ``(epoch seconds, price)`` events."""
    price = start
    for minute in range(minutes):
        price *= 1 + drift * (1 if minute % 7 else -3)
        yield float(minute * 60), round(price, 4)


def ratio(btc: float, eth: float) -> float:
    return btc / eth


def momentum(values: Sequence[float]) -> float:
    return values[-1] - values[0]


def build_pipeline(minutes: int = 180) -> Pipeline:
    hourly = {"1h": IntervalSettings(interval="1h", period=24)}
    pipeline = Pipeline("typed_strategy", default_intervals=hourly)
    pipeline.add_node(SourceNode("btc", source=list(minute_prices(60_000.0, 0.0004, minutes))))
    pipeline.add_node(SourceNode("eth", source=list(minute_prices(3_000.0, 0.0003, minutes))))
    pipeline.add_node(Node("ratio", fn=ratio, upstreams=["btc", "eth"], tags=["FEATURE"]))
    pipeline.add_node(
        Node("trend", fn=momentum, upstreams=["ratio"], window=2, tags=["FEATURE", "SIGNAL"])
    )
    pipeline.add_query_node(QueryNode(name="signals", tags=["SIGNAL"]))
    return pipeline


def stream(pipeline: Pipeline) -> tuple[RunSummary, list[OutputEvent]]:
    """Stream the sources in event time; keep every final bucket."""
    bars: list[OutputEvent] = []
    summary = pipeline.run(bars.append)
    assert_type(summary, RunSummary)
    return summary, bars


def stream_in_a_notebook(pipeline: Pipeline) -> tuple[RunSummary | None, list[float]]:
    """The iterator form: bars as they close, then the run's summary."""
    bars = pipeline.stream()
    closes = [bar.value for bar in bars if bar.node == "ratio"]
    return bars.summary, closes


def settings_for_production() -> QmtlSettings:
    """The settings a deployment would use: every field typed, no plugin needed."""
    kafka = KafkaEngineSettings(
        bootstrap_servers="kafka-0:9092,kafka-1:9092",
        partitions=6,
        replication_factor=3,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="qmtl",
        sasl_password=SecretStr("from-a-secret-store"),
        workers=2,
    )
    redis = RedisStateSettings(url="rediss://redis:6380/0", max_connections=32)
    local = LocalEngineSettings(collect_stats=False)
    assert_type(kafka.partitions, int)
    return QmtlSettings(
        engine="kafka",
        state="redis",
        plugin_options={
            "kafka": kafka.model_dump(mode="json"),
            "redis": redis.model_dump(mode="json"),
            "local": local.model_dump(),
        },
    )


def unit_test_with_mocks() -> dict[str, object]:
    """The mock engine: replace a node's value, record its calls."""
    pipeline = Pipeline("typed_mock")
    pipeline.add_node(Node(name="price", fn=lambda: 101.5))
    pipeline.add_node(Node(name="double", fn=lambda price: price * 2, upstreams=["price"]))
    engine = MockExecutionEngine(mocks={"price": 10.0})
    results = pipeline.execute(engine=engine, ts=1_714_000_000)
    assert engine.calls["double"] == [{"price": 10.0}]
    return results


def main() -> None:
    pipeline = build_pipeline()
    summary, bars = stream(pipeline)
    trend = [bar for bar in bars if bar.node == "trend"]
    print(f"{summary.pipeline}: {summary.events_in} events in, {summary.buckets_out} buckets out")
    for bar in trend:
        print(f"  trend at {bar.ts:.0f} ({bar.interval}): {bar.value:+.6f}")
    history = pipeline.get_history("ratio", "1h", count=2)
    print(f"  last ratio buckets: {[round(item['value'], 4) for item in history]}")
    settings = settings_for_production()
    print(f"  production settings: engine={settings.engine.kind} state={settings.state.kind}")
    print(f"  mocked run: {unit_test_with_mocks()}")
    streamed, closes = stream_in_a_notebook(build_pipeline())
    assert streamed is not None  # the iterator is exhausted: its run's summary is there
    print(f"  streamed again: {len(closes)} ratio bars of {streamed.buckets_out} buckets")


if __name__ == "__main__":
    main()
