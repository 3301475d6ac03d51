"""A library of pipelines and event streams every engine must run identically.

Each case is a module-level factory (``qmtl.testing.pipelines:chain`` etc.), so a distributed
engine's workers can rebuild the same pipeline from code. Sources hold their events as lists of
``(ts, value)`` pairs (event time, epoch seconds), so a pipeline can run any number of times;
values are JSON values (floats, ints, strings, dicts, lists) so they survive any transport.
:func:`events_of` gives each source's events, :data:`CASES` lists the cases.

The cases: a chain, a diamond, a three-source join at different paces (as-of join), windows
(``window=N``, ``window=True``, a two-upstream window), two intervals (1m and 1h), query nodes
with a node downstream of a query, sources with out-of-order events and ``allowed_lateness``,
calendar buckets (a time zone's session close across daylight saving, Monday weeks), and a
node that fails mid-stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qmtl.node import Node, QueryNode, SourceNode
from qmtl.pipeline import Pipeline

#: A day-aligned epoch second (2023-11-15T00:00:00Z): every bucket of the cases is aligned.
BASE = 1_700_006_400


def _prices(
    count: int, step: float, start: float, seed: int, offset: float = 0.0
) -> list[tuple[float, float]]:
    """Deterministic pseudo prices: a small integer recurrence, no randomness."""
    events = []
    x = seed
    price = start
    for i in range(count):
        x = (x * 1103515245 + 12345) % 2147483648
        price = round(price + ((x >> 16) % 21 - 10) / 4, 2)
        events.append((BASE + offset + i * step, price))
    return events


def _minute(period: int = 30, max_history: int = 1000) -> dict[str, Any]:
    return {"1m": {"interval": "1m", "period": period, "max_history": max_history}}


def plus_one(x: float) -> float:
    return x + 1


def double(x: float) -> float:
    return x * 2


def chain() -> Pipeline:
    """src -> plus_one -> double -> label (strings)."""
    p = Pipeline("contract-chain")
    p.add_node(SourceNode("src", source=_prices(200, 13, 100.0, 1), interval_settings=_minute()))
    p.add_node(Node("plus_one", fn=plus_one, upstreams=["src"], interval_settings=_minute()))
    p.add_node(Node("double", fn=double, upstreams=["plus_one"], interval_settings=_minute()))
    p.add_node(
        Node(
            "label",
            fn=lambda double: f"v={double:.2f}",
            upstreams=["double"],
            interval_settings=_minute(),
        )
    )
    return p


def diamond() -> Pipeline:
    """A -> B, C -> D(B, C) -> E(D, A)."""
    p = Pipeline("contract-diamond")
    p.add_node(SourceNode("A", source=_prices(150, 20, 50.0, 2), interval_settings=_minute()))
    p.add_node(Node("B", fn=lambda A: A / 2, upstreams=["A"], interval_settings=_minute()))
    p.add_node(Node("C", fn=lambda A: A * 3, upstreams=["A"], interval_settings=_minute()))
    p.add_node(
        Node(
            "D", fn=lambda B, C: round(B * C, 4), upstreams=["B", "C"], interval_settings=_minute()
        )
    )
    p.add_node(
        Node(
            "E", fn=lambda D, A: {"d": D, "a": A}, upstreams=["D", "A"], interval_settings=_minute()
        )
    )
    return p


def multi_source_join() -> Pipeline:
    """Three sources at their own paces; an as-of join; a sparse source that starts late."""
    p = Pipeline("contract-join")
    p.add_node(SourceNode("fast", source=_prices(300, 7, 10.0, 3), interval_settings=_minute()))
    p.add_node(
        SourceNode("slow", source=_prices(50, 45, 20.0, 4, offset=30), interval_settings=_minute())
    )
    p.add_node(
        SourceNode(
            "sparse", source=_prices(6, 300, 30.0, 5, offset=400), interval_settings=_minute()
        )
    )
    p.add_node(
        Node(
            "spread",
            fn=lambda fast, slow: round(slow - fast, 4),
            upstreams=["fast", "slow"],
            interval_settings=_minute(),
        )
    )
    p.add_node(
        Node(
            "basket",
            fn=lambda fast, slow, sparse: [fast, slow, sparse],
            upstreams=["fast", "slow", "sparse"],
            interval_settings=_minute(),
        )
    )
    return p


def windows() -> Pipeline:
    """window=3 mean, window=True (the period, 4), a two-upstream window."""
    p = Pipeline("contract-windows")
    p.add_node(SourceNode("px", source=_prices(120, 25, 70.0, 6), interval_settings=_minute()))
    p.add_node(
        SourceNode(
            "vol",
            source=[(BASE + 90 * i + 5, float(i % 7)) for i in range(30)],
            interval_settings=_minute(),
        )
    )
    p.add_node(
        Node(
            "mean3",
            fn=lambda px: round(sum(px) / 3, 6),
            upstreams=["px"],
            window=3,
            interval_settings=_minute(),
        )
    )
    p.add_node(
        Node(
            "lastn",
            fn=lambda px: px,
            upstreams=["px"],
            window=True,
            interval_settings={"1m": {"interval": "1m", "period": 4}},
        )
    )
    p.add_node(
        Node(
            "both",
            fn=lambda px, vol: [px, vol],
            upstreams=["px", "vol"],
            window=2,
            interval_settings=_minute(),
        )
    )
    return p


def multi_interval() -> Pipeline:
    """A 1m source rolled into 1h bars; nodes at 1m and 1h; a 1h-only window node."""
    p = Pipeline("contract-intervals")
    both = {
        "1m": {"interval": "1m", "period": 60, "max_history": 500},
        "1h": {"interval": "1h", "period": 24},
    }
    p.add_node(SourceNode("tick", source=_prices(900, 17, 200.0, 7), interval_settings=both))
    p.add_node(
        Node(
            "ret",
            fn=lambda tick: round(tick / 200 - 1, 6),
            upstreams=["tick"],
            interval_settings=both,
        )
    )
    p.add_node(
        Node(
            "hourly_range",
            fn=lambda tick: [min(tick), max(tick)],
            upstreams=["tick"],
            window=2,
            interval_settings={"1h": {"interval": "1h", "period": 24}},
        )
    )
    return p


def query() -> Pipeline:
    """Tagged price nodes, a query over them, and a node downstream of the query."""
    p = Pipeline("contract-query")
    for i, name in enumerate(["btc", "eth", "sol"]):
        p.add_node(
            SourceNode(
                name,
                source=_prices(60 + 20 * i, 23 + 11 * i, 100.0 * (i + 1), 10 + i, offset=3 * i),
                tags=["price"],
                interval_settings=_minute(),
            )
        )
    p.add_node(
        SourceNode(
            "noise", source=_prices(40, 31, 1.0, 20), tags=["other"], interval_settings=_minute()
        )
    )
    p.add_query_node(QueryNode("prices", tags=["price"]))
    p.add_node(
        Node(
            "best",
            fn=lambda prices: max(prices, key=prices.__getitem__),
            upstreams=["prices"],
            interval_settings=_minute(),
        )
    )
    return p


def _jittered(count: int, seed: int) -> list[tuple[float, float]]:
    """In-order events with some arriving up to 50 s out of order (some within lateness)."""
    events = _prices(count, 11, 40.0, seed)
    for i in range(3, count - 1, 5):
        events[i], events[i + 1] = events[i + 1], events[i]
    for i in range(7, count, 13):
        ts, value = events[i]
        events[i] = (ts - 50, value)
    return events


def lateness() -> Pipeline:
    """Sources with out-of-order events: one with allowed_lateness=30 s, one with none."""
    p = Pipeline("contract-lateness")
    p.add_node(
        SourceNode(
            "lenient", source=_jittered(160, 8), allowed_lateness=30, interval_settings=_minute()
        )
    )
    p.add_node(SourceNode("strict", source=_jittered(160, 9), interval_settings=_minute()))
    p.add_node(
        Node(
            "diff",
            fn=lambda lenient, strict: round(lenient - strict, 4),
            upstreams=["lenient", "strict"],
            interval_settings=_minute(),
        )
    )
    return p


def _around(start: int, count: int, seed: int) -> list[tuple[float, float]]:
    """``count`` prices every 2 h 13 min from ``start``: they cross hour, day and week ends."""
    return [(start + ts - BASE, v) for ts, v in _prices(count, 7980, 50.0, seed)]


def calendars() -> Pipeline:
    """``bucket_offset="America/New_York 16:00"``: 1h bars on epoch multiples, 1d bars closing
    at 16:00 New York time and Monday-to-Sunday weeks of them, over both 2024 clock changes
    (23- and 25-hour days); a node at every interval and a 1d window."""
    every = {
        "1h": {"interval": "1h", "period": 48, "max_history": 500},
        "1d": {"interval": "1d", "period": 10},
        "1w": {"interval": "1w", "period": 4},
    }
    p = Pipeline("contract-calendars", bucket_offset="America/New_York 16:00")
    march, october = 1_709_683_200, 1_730_246_400  # 2024-03-06T00:00Z, 2024-10-30T00:00Z
    events = _around(march, 90, 31) + _around(october, 90, 32)
    p.add_node(SourceNode("px", source=events, interval_settings=every))
    p.add_node(
        Node("x10", fn=lambda px: round(px * 10, 4), upstreams=["px"], interval_settings=every)
    )
    p.add_node(
        Node(
            "avg2",
            fn=lambda px: round(sum(px) / 2, 4),
            upstreams=["px"],
            window=2,
            interval_settings={"1d": {"interval": "1d", "period": 10}},
        )
    )
    return p


#: The value at which :func:`failing`'s node ``explode`` raises.
FAIL_AT = 7.0


def explode(counter: float) -> float:
    if counter >= FAIL_AT:
        raise ValueError(f"counter reached {counter}")
    return counter * 10


def failing() -> Pipeline:
    """``explode`` raises at the bucket whose counter reaches :data:`FAIL_AT`."""
    p = Pipeline("contract-failing")
    p.add_node(
        SourceNode(
            "counter",
            source=[(BASE + 60 * i + 1, float(i)) for i in range(20)],
            interval_settings=_minute(),
        )
    )
    p.add_node(Node("explode", fn=explode, upstreams=["counter"], interval_settings=_minute()))
    return p


#: Seconds :func:`slow`'s node sleeps per bucket.
SLOW_S = 0.5


def _sleepy(src: float) -> float:
    import time

    time.sleep(SLOW_S)
    return src


def slow() -> Pipeline:
    """Six one-minute buckets through a node that takes :data:`SLOW_S` seconds each (for
    timeouts; not in :data:`CASES`)."""
    p = Pipeline("contract-slow")
    p.add_node(
        SourceNode(
            "src",
            source=[(BASE + 60 * i + 1, float(i)) for i in range(6)],
            interval_settings=_minute(),
        )
    )
    p.add_node(Node("sleepy", fn=_sleepy, upstreams=["src"], interval_settings=_minute()))
    return p


def _breaking_feed() -> Any:
    for i in range(3):
        yield (BASE + 60 * i + 1, float(i))
    raise ConnectionError("feed dropped")


def broken_feed() -> Pipeline:
    """A source whose generator raises after three events (not in :data:`CASES`)."""
    p = Pipeline("contract-broken-feed")
    p.add_node(SourceNode("feed", source=_breaking_feed, interval_settings=_minute()))
    p.add_node(Node("copy", fn=plus_one, upstreams=["feed"], interval_settings=_minute()))
    return p


@dataclass(frozen=True)
class Case:
    """One library case: ``build()`` returns a fresh pipeline; ``target`` is its
    ``module:attribute`` for workers; ``fails`` names the node that raises, if any."""

    name: str
    build: Callable[[], Pipeline]
    fails: str | None = None

    @property
    def target(self) -> str:
        return f"{__name__}:{self.build.__name__}"


CASES: dict[str, Case] = {
    case.name: case
    for case in [
        Case("chain", chain),
        Case("diamond", diamond),
        Case("multi_source_join", multi_source_join),
        Case("windows", windows),
        Case("multi_interval", multi_interval),
        Case("query", query),
        Case("lateness", lateness),
        Case("calendars", calendars),
        Case("failing", failing, fails="explode"),
    ]
}


def events_of(pipeline: Pipeline) -> dict[str, list[tuple[float, Any]]]:
    """Each source's events, in its own order."""
    from qmtl.sources import source_events

    plan = pipeline.build()
    return {
        node.name: list(source_events(node.node.source, node.name))  # type: ignore[union-attr]
        for node in plan.sources
        if node.kind == "source"
    }


__all__ = ["BASE", "CASES", "FAIL_AT", "SLOW_S", "Case", "broken_feed", "events_of", "slow"]
