"""Warm start on the local engine: a run over the data after a cut, started from the history of
the data before it, gives what one uninterrupted run over all of it gives, from the first new
bucket on (windows full, as-of joins seeded), and a changed node starts a new series there."""

from __future__ import annotations

from typing import Any

import pytest

from qmtl.errors import ConfigurationError
from qmtl.node import Node, SourceNode
from qmtl.pipeline import Pipeline
from qmtl.state import MemoryStateBackend
from qmtl.testing.pipelines import BASE

MIN = {"1m": {"interval": "1m", "period": 60, "max_history": 1000}}
CUT = BASE + 30 * 60  # a bucket boundary: the second run starts with minute 30


def _events() -> dict[str, list[tuple[float, float]]]:
    px = [(BASE + 20.0 * i, 100.0 + (i * 7) % 13) for i in range(180)]  # 3 per minute
    vol = [(BASE + 170.0 * i + 5, 1.0 + i % 4) for i in range(21)]  # illiquid: ~1 in 3 minutes
    return {"px": px, "vol": vol}


def _pipeline(name: str, *, version: int = 1) -> Pipeline:
    p = Pipeline(name)
    # the runs pass their events with sources=; these lists only tell the two sources apart
    p.add_node(SourceNode("px", source=[(BASE, 0.0)], interval_settings=MIN))
    p.add_node(SourceNode("vol", source=[(BASE, 1.0)], interval_settings=MIN))
    p.add_node(Node("sma", fn=lambda px: sum(px) / len(px), upstreams=["px"], window=5,
                    interval_settings=MIN))  # fmt: skip
    p.add_node(Node("notional", fn=lambda px, vol: px * vol, upstreams=["px", "vol"],
                    interval_settings=MIN))  # fmt: skip
    if version == 1:
        signal = Node("signal", fn=lambda sma: sma[-1] - sma[0], upstreams=["sma"], window=3,
                      interval_settings=MIN)  # fmt: skip
    else:  # the changed node: same name, new code, so a new node id and a new series
        signal = Node("signal", fn=lambda sma: max(sma) - min(sma), upstreams=["sma"], window=3,
                      interval_settings=MIN)  # fmt: skip
    p.add_node(signal)
    p.add_node(Node("mix", fn=lambda sma, notional: round(sma - notional / 10, 6),
                    upstreams=["sma", "notional"], interval_settings=MIN))  # fmt: skip
    return p


def _split(events: dict[str, list[tuple[float, float]]], before: bool) -> dict[str, Any]:
    return {k: [e for e in v if (e[0] < CUT) == before] for k, v in events.items()}


def _history(pipeline: Pipeline, state: Any, node: str) -> list[tuple[float, Any]]:
    rows = pipeline.get_history(node, "1m", count=10_000, state=state)
    return [(r["timestamp"], r["value"]) for r in rows]


def _outputs(pipeline: Pipeline, **options: Any) -> tuple[dict[str, list[Any]], Any]:
    seen: dict[str, list[Any]] = {}
    summary = pipeline.run(
        lambda e: seen.setdefault(e.node, []).append((e.ts, e.value)), engine="local", **options
    )
    return seen, summary


def test_a_warm_started_run_continues_history_as_one_uninterrupted_run_would() -> None:
    events = _events()
    oracle_state = MemoryStateBackend()
    oracle = _pipeline("warm")
    expected, _ = _outputs(oracle, sources=events, state=oracle_state)

    state = MemoryStateBackend()
    pipeline = _pipeline("warm")
    _outputs(pipeline, sources=_split(events, True), state=state)
    cold, _ = _outputs(_pipeline("warm"), sources=_split(events, False), state=MemoryStateBackend())
    warm, summary = _outputs(pipeline, sources=_split(events, False), state=state, warm_start=True)

    for node in ("px", "vol", "sma", "notional", "signal", "mix"):
        after = [o for o in expected[node] if o[0] > CUT]
        assert warm.get(node, []) == after, node
        assert _history(pipeline, state, node) == _history(oracle, oracle_state, node), node
    # what warm start buys: without it, the window nodes wait and the as-of join lacks 'vol'
    assert len(cold["sma"]) == len(warm["sma"]) - 4
    assert len(cold["signal"]) == len(warm["signal"]) - 6
    assert cold["notional"][0][0] > warm["notional"][0][0]
    assert summary.nodes["px"].late_events == 0


def test_events_in_buckets_history_holds_are_late_and_change_nothing() -> None:
    events = _events()
    state = MemoryStateBackend()
    pipeline = _pipeline("warm-late")
    _outputs(pipeline, sources=_split(events, True), state=state)
    before = {n: _history(pipeline, state, n) for n in ("px", "sma", "mix")}
    again = {k: v[-6:] for k, v in _split(events, True).items()}  # the last two minutes again
    seen, summary = _outputs(pipeline, sources=again, state=state, warm_start=True)
    assert seen == {}
    assert summary.nodes["px"].late_events == 6
    assert {n: _history(pipeline, state, n) for n in ("px", "sma", "mix")} == before


def test_a_changed_node_starts_a_new_series_seeded_from_its_upstreams_history() -> None:
    events = _events()
    state = MemoryStateBackend()
    _outputs(_pipeline("warm-v", version=1), sources=_split(events, True), state=state)
    v2 = _pipeline("warm-v", version=2)
    oracle_state = MemoryStateBackend()
    oracle = _pipeline("warm-v", version=2)
    expected, _ = _outputs(oracle, sources=events, state=oracle_state)
    seen, _ = _outputs(v2, sources=_split(events, False), state=state, warm_start=True)
    new_series = _history(v2, state, "signal")
    # the new series starts at the first new bucket, with its window full at once
    assert new_series[-1][0] == CUT + 60
    assert new_series == [o for o in _history(oracle, oracle_state, "signal") if o[0] > CUT]
    assert seen["signal"] == [o for o in expected["signal"] if o[0] > CUT]
    # the unchanged nodes' series continue
    assert _history(v2, state, "sma") == _history(oracle, oracle_state, "sma")


def test_warm_start_needs_the_event_path() -> None:
    with pytest.raises(ConfigurationError, match="columnar=False"):
        _pipeline("warm-c").run(sources=_events(), columnar=True, warm_start=True)
