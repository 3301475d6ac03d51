"""Streaming: minute prices of three symbols rolled into 1h and 1d bars, a windowed momentum
indicator per symbol, and a cross-symbol signal through a query node.

The prices are a generated minute stream per symbol (a seeded random walk, no download), each
symbol with its own pace (one symbol trades every minute, the others every 2 and 3 minutes).
``pipeline.run`` consumes the three sources in event time; every node's output is bucketed per
interval and a bucket is computed once every upstream has finished it, so the bars and signals
are the same on any engine. Run it with ``python examples/streaming_strategy.py``.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

from qmtl import Node, Pipeline, QueryNode, SourceNode
from qmtl.streaming import OutputEvent

SYMBOLS = {"AAPL": (190.0, 60), "MSFT": (410.0, 120), "NVDA": (120.0, 180)}  # start, pace (s)
START = datetime(2026, 1, 5, tzinfo=UTC).timestamp()
DAYS = 3
MOMENTUM_HOURS = 6


def minute_prices(symbol: str, start: float, every: int) -> list[tuple[float, float]]:
    """``(ts, price)`` events every ``every`` seconds for :data:`DAYS` days."""
    rng = random.Random(symbol)
    price, events = start, []
    for i in range(DAYS * 86_400 // every):
        price *= 1 + rng.gauss(0.00002, 0.001)
        events.append((START + i * every + rng.random() * every / 2, round(price, 2)))
    return events


def momentum(close: list[float]) -> float:
    """Return over the window of hourly closes (oldest first)."""
    return round(close[-1] / close[0] - 1, 5)


def long_short(moves: dict[str, float]) -> dict[str, str | float]:
    """Long the strongest symbol, short the weakest."""
    ranked = sorted(moves, key=moves.__getitem__)
    return {
        "long": ranked[-1].removesuffix("_momentum"),
        "short": ranked[0].removesuffix("_momentum"),
        "spread": round(moves[ranked[-1]] - moves[ranked[0]], 5),
    }


def build() -> Pipeline:
    pipeline = Pipeline("streaming_strategy")
    bars = {
        "1m": {"interval": "1m", "period": 120, "max_history": 500},
        "1h": {"interval": "1h", "period": "2d"},
        "1d": {"interval": "1d", "period": 7},
    }
    for symbol, (start, every) in SYMBOLS.items():
        pipeline.add_node(
            SourceNode(
                symbol,
                source=minute_prices(symbol, start, every),
                tags=["price"],
                interval_settings=bars,
            )
        )
        pipeline.add_node(
            Node(
                f"{symbol}_momentum",
                fn=momentum,
                upstreams=[symbol],
                window=MOMENTUM_HOURS,
                tags=["momentum"],
                interval_settings={"1h": {"interval": "1h", "period": "2d"}},
            )
        )
    pipeline.add_query_node(QueryNode("momenta", tags=["momentum"], interval="1h"))
    pipeline.add_node(
        Node(
            "signal",
            fn=long_short,
            upstreams=["momenta"],
            interval_settings={"1h": {"interval": "1h", "period": "2d"}},
        )
    )
    return pipeline


def when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def main() -> None:
    pipeline = build()
    flips: list[str] = []
    last_long: list[str | None] = [None]

    def on_output(event: OutputEvent) -> None:
        """Called with every final bucket as it is produced; keeps the signal's changes."""
        if event.node == "signal" and event.value["long"] != last_long[0]:
            last_long[0] = event.value["long"]
            flips.append(
                f"  {when(event.ts)}  long {event.value['long']:<5} short {event.value['short']:<5}"
            )

    summary = pipeline.run(on_output, engine="local", state="memory")
    print(
        f"{summary.events_in} price events -> {summary.buckets_out} final bars and values "
        f"({summary.late_events} late) in {summary.elapsed_seconds:.2f}s\n"
    )
    print("Signal changes (bar end, UTC):")
    print("\n".join(flips[-8:]))
    print("\nLast signals:")
    for item in pipeline.get_history("signal", "1h", count=3):
        print(f"  {when(item['timestamp'])}  {item['value']}")
    for interval, count in (("1h", 3), ("1d", DAYS)):
        print(f"\nRecent {interval} closes:")
        for symbol in SYMBOLS:
            closes = pipeline.get_history(symbol, interval, count=count)
            print(
                f"  {symbol:<5}"
                + "".join(f"  {when(c['timestamp'])} {c['value']:>8.2f}" for c in reversed(closes))
            )


if __name__ == "__main__":
    main()
