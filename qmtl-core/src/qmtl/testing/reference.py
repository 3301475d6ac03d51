"""A brute-force statement of the streaming semantics (SPEC §5.2), written for tests.

It is the independent reference the engine contract anchors its oracle to: it shares no code
with :mod:`qmtl.streaming`, :mod:`qmtl.stream_runner` or :mod:`qmtl.sources` (it uses only the
compiled plan for the graph, the series settings and how each function is called). Everything
is computed from whole lists after the stream has ended, in the most obvious way, with no
incremental state, so each rule reads as SPEC §5.2 states it:

- a source event is *late* when the bucket it falls in, at the source's finest interval, ends at
  or before the source's watermark (the highest event time seen before it, minus
  ``allowed_lateness``); late events are counted and dropped;
- a source's value for a bucket is its last event in the bucket by time, ties to the later
  arrival;
- a node computes bucket ``b`` of interval I when some upstream has a value in ``b`` and every
  upstream has a value at or before ``b``; an upstream without a value in ``b`` contributes its
  latest earlier value (as-of join); with ``window=N`` each upstream contributes its last N
  values at buckets ``<= b`` (its own buckets) and ``b`` is computed only once each has N;
- every bucket's timestamp is its end; history keeps the newest ``max_history`` buckets.

Only finite streams of ``(ts, value)`` pairs with numeric ``ts`` are handled (what the contract
cases use); quadratic time is fine at their size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from qmtl.plan import ExecutionPlan


class Buildable(Protocol):
    """A pipeline (anything with ``build()`` giving its plan)."""

    def build(self) -> ExecutionPlan: ...


Series = tuple[str, str]  # (node, interval)


@dataclass
class Reference:
    """What a run of a pipeline must produce."""

    outputs: dict[Series, list[tuple[float, Any]]]  #: per series, in bucket order
    history: dict[Series, list[tuple[float, Any]]]  #: per series, newest first, trimmed
    counts: dict[str, dict[str, Any]]  #: per node: events_in, late_events, buckets_out


def evaluate(
    pipeline: Buildable, events: Iterable[tuple[str, float, Any]] | None = None
) -> Reference:
    """Evaluate ``pipeline`` over its sources' declared lists, or over ``events``
    (``(source, ts, value)`` in arrival order; only each source's own order matters)."""
    plan = pipeline.build()
    arrivals: dict[str, list[tuple[float, Any]]] = {}
    if events is not None:
        for name, ts, value in events:
            arrivals.setdefault(name, []).append((float(ts), value))
    buckets: dict[Series, dict[int, Any]] = {}
    counts: dict[str, dict[str, Any]] = {}
    for node in plan.nodes:
        intervals = {spec.interval.value: spec.seconds for spec in node.series}
        if not node.upstreams:
            if events is not None:
                stream = arrivals.get(node.name, [])
            elif node.kind == "query":
                stream = []  # a query that matched nothing has no events
            else:
                stream = [(float(ts), value) for ts, value in node.node.source]  # type: ignore[union-attr]
            lateness = float(getattr(node.node, "allowed_lateness", None) or 0.0)
            kept, late = _drop_late(stream, min(intervals.values()), lateness)
            for interval, seconds in intervals.items():
                buckets[(node.name, interval)] = _last_by_time(kept, seconds)
            counts[node.name] = {"events_in": len(stream), "late_events": late}
        else:
            for spec in node.series:
                interval = spec.interval.value
                inputs = [buckets[(upstream, interval)] for upstream in node.upstreams]
                size = node.window_size(spec)
                buckets[(node.name, interval)] = {
                    b: node.invoke(args) for b, args in _computable(inputs, size)
                }
            counts[node.name] = {"events_in": 0, "late_events": 0}
        counts[node.name]["buckets_out"] = {
            interval: len(buckets[(node.name, interval)]) for interval in intervals
        }
    outputs: dict[Series, list[tuple[float, Any]]] = {}
    history: dict[Series, list[tuple[float, Any]]] = {}
    for node in plan.nodes:
        for spec in node.series:
            series = (node.name, spec.interval.value)
            ordered = [
                (float((b + 1) * spec.seconds), value)
                for b, value in sorted(buckets[series].items())
            ]
            if ordered:
                outputs[series] = ordered
            history[series] = list(reversed(ordered))[: spec.max_items]
    return Reference(outputs, history, counts)


def _drop_late(
    stream: list[tuple[float, Any]], finest: int, lateness: float
) -> tuple[list[tuple[float, Any]], int]:
    kept: list[tuple[float, Any]] = []
    late = 0
    highest = -math.inf
    for ts, value in stream:
        bucket_end = (math.floor(ts / finest) + 1) * finest
        if bucket_end <= highest - lateness:
            late += 1
            continue
        kept.append((ts, value))
        highest = max(highest, ts)
    return kept, late


def _last_by_time(events: list[tuple[float, Any]], seconds: int) -> dict[int, Any]:
    chosen: dict[int, tuple[float, Any]] = {}
    for ts, value in events:  # in arrival order: a later arrival at the same ts wins
        b = math.floor(ts / seconds)
        if b not in chosen or ts >= chosen[b][0]:
            chosen[b] = (ts, value)
    return {b: value for b, (_ts, value) in chosen.items()}


def _computable(
    inputs: list[dict[int, Any]], window: int | None
) -> Iterable[tuple[int, list[Any]]]:
    candidates = sorted(set().union(*(set(series) for series in inputs)))
    for b in candidates:
        if window is not None:
            windows = [[series[k] for k in sorted(series) if k <= b][-window:] for series in inputs]
            if all(len(values) == window for values in windows):
                yield b, windows
            continue
        args = []
        for series in inputs:
            earlier = [k for k in series if k <= b]
            if not earlier:
                break
            args.append(series[max(earlier)])
        else:
            yield b, args
