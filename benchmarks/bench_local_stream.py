"""local_stream: one million source events through a 10-node pipeline at 1m and 1h, streamed on
the local engine into the memory state.

Two sources (500,000 events each, every 20 s, offset by 10 s) feed eight nodes: an as-of join
(spread, ratio, mid), two window nodes (window=5 and window=3), and a chain on top; every node
keeps 1m and 1h series. Reported, side by side in one run:

- ``node_buckets_per_s`` (wall) and ``node_buckets_per_cpu_s`` (process CPU time, the fair
  figure on a shared machine): final node buckets produced (sources' bars included) per second;
  ``computations_per_cpu_s`` counts only computed (non-source) buckets;
- ``overhead_us_per_event``: engine CPU time minus a plain-Python loop that computes the same
  bars with hand-written bucketing (the baseline), per source event;
- ``ratio_engine_to_baseline`` (CPU time);
- ``engine_cpu_s_check_off`` / ``value_check_cost_pct``: the same run with
  ``check_values=False`` (no :func:`qmtl.codec.check` of source events and node outputs), and
  what the check costs relative to it.

Goal: at least 200,000 node-bucket computations per second on one core.
``calibration_loop_10M_cpu_s`` says how fast the machine running the benchmark is.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from qmtl import Node, Pipeline, SourceNode
from qmtl.state import MemoryStateBackend

EVENTS_PER_SOURCE = 500_000
STEP = 20
BOTH = {"1m": {"interval": "1m", "period": 60}, "1h": {"interval": "1h", "period": 24}}


def _events(offset: int, seed: int) -> list[tuple[int, float]]:
    x, price, out = seed, 100.0, []
    for i in range(EVENTS_PER_SOURCE):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        price += ((x >> 16) % 21 - 10) * 0.01
        out.append((i * STEP + offset, price))
    return out


def spread(a: float, b: float) -> float:
    return b - a


def ratio(a: float, b: float) -> float:
    return a / b


def mid(a: float, b: float) -> float:
    return (a + b) / 2


def ma(mid: list[float]) -> float:
    return sum(mid) / 5


def mom(a: list[float]) -> float:
    return a[-1] - a[0]


def sig(spread: float, ratio: float) -> float:
    return spread * ratio


def combo(ma: float, sig: float, mom: float) -> float:
    return ma + sig + mom


def out(combo: float) -> bool:
    return combo > 100


def _pipeline(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> Pipeline:
    p = Pipeline("bench_stream", default_intervals=BOTH)
    p.add_node(SourceNode("a", source=a))
    p.add_node(SourceNode("b", source=b))
    p.add_node(Node("spread", fn=spread, upstreams=["a", "b"]))
    p.add_node(Node("ratio", fn=ratio, upstreams=["a", "b"]))
    p.add_node(Node("mid", fn=mid, upstreams=["a", "b"]))
    p.add_node(Node("ma", fn=ma, upstreams=["mid"], window=5))
    p.add_node(Node("mom", fn=mom, upstreams=["a"], window=3))
    p.add_node(Node("sig", fn=sig, upstreams=["spread", "ratio"]))
    p.add_node(Node("combo", fn=combo, upstreams=["ma", "sig", "mom"]))
    p.add_node(Node("out", fn=out, upstreams=["combo"]))
    return p


def _baseline(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> dict[str, list[Any]]:
    """The same bars with a hand-written loop: merge by time, last value per bucket, compute
    every node when a bucket closes (both sources have a value in every bucket here)."""
    results: dict[str, list[Any]] = {}
    for seconds in (60, 3600):
        series: dict[str, list[Any]] = {
            name: []
            for name in ("a", "b", "spread", "ratio", "mid", "ma", "mom", "sig", "combo", "out")
        }
        mids: deque[float] = deque(maxlen=5)
        moms: deque[float] = deque(maxlen=3)
        current = None
        last_a = last_b = 0.0
        ia = ib = 0
        while ia < len(a) or ib < len(b):
            if ib >= len(b) or (ia < len(a) and a[ia][0] <= b[ib][0]):
                ts, value, is_a = a[ia][0], a[ia][1], True
                ia += 1
            else:
                ts, value, is_a = b[ib][0], b[ib][1], False
                ib += 1
            bucket = ts // seconds
            if current is not None and bucket != current:
                _close(series, mids, moms, last_a, last_b)
            current = bucket
            if is_a:
                last_a = value
            else:
                last_b = value
        _close(series, mids, moms, last_a, last_b)
        for name, values in series.items():
            results[f"{name}@{seconds}"] = values
    return results


def _close(
    series: dict[str, list[Any]], mids: deque[float], moms: deque[float], av: float, bv: float
) -> None:
    series["a"].append(av)
    series["b"].append(bv)
    s, r, m = spread(av, bv), ratio(av, bv), mid(av, bv)
    series["spread"].append(s)
    series["ratio"].append(r)
    series["mid"].append(m)
    mids.append(m)
    moms.append(av)
    g = sig(s, r)
    series["sig"].append(g)
    if len(mids) == 5 and len(moms) == 3:
        mv, mo = ma(list(mids)), mom(list(moms))
        series["ma"].append(mv)
        series["mom"].append(mo)
        c = combo(mv, g, mo)
        series["combo"].append(c)
        series["out"].append(out(c))
    elif len(moms) == 3:
        series["mom"].append(mom(list(moms)))
    elif len(mids) == 5:
        series["ma"].append(ma(list(mids)))


def run() -> dict[str, Any]:
    from qmtl_engine_local import LocalExecutionEngine

    a, b = _events(0, 1), _events(10, 2)
    pipeline = _pipeline(a, b)
    pipeline.build()  # validation and node ids are not part of streaming
    engine, state = LocalExecutionEngine(), MemoryStateBackend()

    wall, cpu = time.perf_counter(), time.process_time()
    summary = pipeline.run(engine=engine, state=state)
    engine_s, engine_cpu = time.perf_counter() - wall, time.process_time() - cpu

    cpu = time.process_time()
    unchecked = pipeline.run(engine=engine, state=MemoryStateBackend(), check_values=False)
    unchecked_cpu = time.process_time() - cpu
    assert unchecked.buckets_out == summary.buckets_out

    wall, cpu = time.perf_counter(), time.process_time()
    expected = _baseline(a, b)
    base_s, base_cpu = time.perf_counter() - wall, time.process_time() - cpu

    produced = summary.buckets_out
    computed = produced - sum(sum(summary.nodes[s].buckets_out.values()) for s in ("a", "b"))
    assert produced == sum(len(v) for v in expected.values()), "engine and baseline disagree"
    assert pipeline.get_interval_data("out", "1h", count=1) == expected["out@3600"][-1:]
    events = summary.events_in
    return {
        "events": events,
        "nodes": len(pipeline.nodes),
        "intervals": 2,
        "node_buckets": produced,
        "engine_s": round(engine_s, 3),
        "engine_cpu_s": round(engine_cpu, 3),
        "baseline_s": round(base_s, 3),
        "baseline_cpu_s": round(base_cpu, 3),
        "node_buckets_per_s": round(produced / engine_s),
        "node_buckets_per_cpu_s": round(produced / engine_cpu),
        "computations_per_cpu_s": round(computed / engine_cpu),
        "overhead_us_per_event": round((engine_cpu - base_cpu) * 1e6 / events, 3),
        "ratio_engine_to_baseline": round(engine_cpu / base_cpu, 2),
        "engine_cpu_s_check_off": round(unchecked_cpu, 3),
        "value_check_cost_pct": round((engine_cpu / unchecked_cpu - 1) * 100, 1),
        "goal_node_buckets_per_s": 200_000,
        "calibration_loop_10M_cpu_s": round(_calibration(), 3),
    }


def _calibration() -> float:
    """CPU seconds of a bare 10-million-step Python loop: how fast this machine is (a typical
    2024 laptop core takes about 0.4 s)."""
    started = time.process_time()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.process_time() - started


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
