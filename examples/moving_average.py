"""A moving-average crossover strategy over three symbols, run on the local engine.

Prices are a deterministic random walk per symbol (no data download). Each simulated trading day
the pipeline runs once at that day's timestamp; every node's value lands in its 1d bucket, so the
windowed nodes see the last N daily closes from the state backend. The signal nodes are tagged
``SIGNAL`` and a query node gathers them into one portfolio view.

Run it with ``make run`` (local engine, memory state, no server).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from qmtl import IntervalSettings, Node, Pipeline, QueryNode

SYMBOLS = {"AAPL": 190.0, "MSFT": 410.0, "NVDA": 120.0}
FAST, SLOW = 5, 20
DAYS = 60
START = datetime(2026, 1, 5, tzinfo=UTC).timestamp()
DAY = 86_400


def price_walk(symbol: str, start: float) -> Iterator[float]:
    """A reproducible daily close series: a seeded random walk."""
    rng = random.Random(symbol)
    price = start
    while True:
        price *= 1 + rng.gauss(0.0005, 0.015)
        yield round(price, 2)


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def crossover(fast: float, slow: float) -> dict[str, float | str]:
    """+1 long when the fast average is above the slow one, -1 short otherwise."""
    return {
        "position": "long" if fast > slow else "short",
        "spread_pct": round(100 * (fast - slow) / slow, 3),
    }


def build_pipeline() -> Pipeline:
    pipeline = Pipeline(
        name="ma_crossover",
        default_intervals={"1d": IntervalSettings(interval="1d", period=SLOW, max_history=250)},
    )
    for symbol, start in SYMBOLS.items():
        walk = price_walk(symbol, start)
        next_close: Callable[[], float] = lambda walk=walk: next(walk)  # noqa: E731
        price = pipeline.add_node(
            Node(name=f"{symbol}_close", fn=next_close, tags=["PRICE", symbol])
        )
        fast = pipeline.add_node(
            Node(name=f"{symbol}_ma{FAST}", fn=mean, upstreams=[price], window=FAST)
        )
        slow = pipeline.add_node(
            Node(name=f"{symbol}_ma{SLOW}", fn=mean, upstreams=[price], window=SLOW)
        )
        pipeline.add_node(
            Node(
                name=f"{symbol}_signal",
                fn=crossover,
                upstreams=[fast, slow],
                tags=["SIGNAL", symbol],
            )
        )
    pipeline.add_query_node(QueryNode(name="portfolio", tags=["SIGNAL"]))
    return pipeline


def main() -> None:
    pipeline = build_pipeline()
    results: dict[str, object] = {}
    for day in range(DAYS):
        results = pipeline.execute(ts=START + day * DAY)
    as_of = datetime.fromtimestamp(START + (DAYS - 1) * DAY, UTC).date()
    print(f"QMTL example: {pipeline.name}, {DAYS} daily runs on the local engine, as of {as_of}")
    print()
    print(f"{'symbol':<8}{'close':>10}{'MA' + str(FAST):>10}{'MA' + str(SLOW):>10}  signal")
    for symbol in SYMBOLS:
        signal = results[f"{symbol}_signal"]
        print(
            f"{symbol:<8}{results[f'{symbol}_close']:>10.2f}{results[f'{symbol}_ma{FAST}']:>10.2f}"
            f"{results[f'{symbol}_ma{SLOW}']:>10.2f}  {signal['position']} "
            f"({signal['spread_pct']:+.3f}%)"
        )
    print()
    print("portfolio (query node over tag SIGNAL):")
    for name, signal in results["portfolio"].items():
        print(f"  {name}: {signal}")
    print()
    print("recent history of the signal nodes (newest first):")
    for symbol in SYMBOLS:
        history = pipeline.get_history(f"{symbol}_signal", interval="1d", count=5)
        days = ", ".join(
            f"{datetime.fromtimestamp(item['timestamp'] - DAY, UTC):%m-%d} "
            f"{item['value']['position']}"
            for item in history
        )
        print(f"  {symbol}: {days}")


if __name__ == "__main__":
    main()
