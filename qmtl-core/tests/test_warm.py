"""qmtl.warm: seeding a runner from the history in a state backend (the rule every engine uses).

The oracle is one uninterrupted cold run over all the events; the warm runs see only the events
after a cut and the history the state backend holds."""

from __future__ import annotations

from typing import Any

from qmtl.node import Node, SourceNode
from qmtl.pipeline import Pipeline
from qmtl.state import MemoryStateBackend
from qmtl.stream_runner import run_in_process
from qmtl.testing.pipelines import BASE

MIN = {"1m": {"interval": "1m", "period": 60, "max_history": 1000}}
CUT = BASE + 20 * 60


def _pipeline() -> Pipeline:
    p = Pipeline("warm-core")
    p.add_node(SourceNode("px", source=[(BASE, 0.0)], interval_settings=MIN))
    p.add_node(Node("sma", fn=lambda px: sum(px) / 3, upstreams=["px"], window=3,
                    interval_settings=MIN))  # fmt: skip
    p.add_node(Node("diff", fn=lambda sma, px: round(px - sma, 6), upstreams=["sma", "px"],
                    interval_settings=MIN))  # fmt: skip
    return p


def _events() -> list[tuple[float, float]]:
    return [(BASE + 30.0 * i, 100.0 + (i * 5) % 9) for i in range(80)]  # 40 minutes


def _series(plan: Any, state: Any) -> dict[str, list[tuple[float, Any]]]:
    return {
        n.name: [(r["timestamp"], r["value"]) for r in state.read(n.series[0].key)]
        for n in plan.nodes
    }


def test_a_node_whose_history_stops_short_of_its_upstreams_computes_the_gap_first() -> None:
    plan = _pipeline().build()
    oracle = MemoryStateBackend()
    run_in_process(plan, oracle, sources={"px": _events()})
    expected = _series(plan, oracle)
    # the history an old deployment left: px through minute 19, but sma and diff only through
    # minute 16 (it stopped between the writes of its shards)
    state = MemoryStateBackend()
    for node in plan.nodes:
        spec = node.series[0]
        last = CUT if node.name == "px" else CUT - 3 * 60
        for ts, value in reversed(expected[node.name]):
            if ts <= last:
                state.write(spec.key, ts, value, max_items=spec.max_items, ttl=None)
    seen: list[Any] = []
    after = [e for e in _events() if e[0] >= CUT]
    run_in_process(plan, state, sources={"px": after}, on_output=seen.append, warm_start=True)
    assert _series(plan, state) == expected
    # the gap (minutes 17-19 of sma and diff) came first, computed from px's stored buckets
    gap = {(node, CUT - 60 * k) for node in ("sma", "diff") for k in (2, 1, 0)}
    assert {(e.node, e.ts) for e in seen[:6]} == gap


def test_without_history_a_warm_start_is_a_cold_start() -> None:
    plan = _pipeline().build()
    cold, warm = MemoryStateBackend(), MemoryStateBackend()
    run_in_process(plan, cold, sources={"px": _events()})
    run_in_process(plan, warm, sources={"px": _events()}, warm_start=True)
    assert _series(plan, warm) == _series(plan, cold)
