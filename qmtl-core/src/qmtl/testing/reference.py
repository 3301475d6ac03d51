"""A brute-force statement of the streaming semantics (SPEC §5.2), written for tests.

It is the independent reference the engine contract anchors its oracle to: it shares no code
with :mod:`qmtl.streaming`, :mod:`qmtl.stream_runner` or :mod:`qmtl.sources` (it uses only the
compiled plan for the graph, the series settings and how each function is called). Everything
is computed from whole lists after the stream has ended, in the most obvious way, with no
incremental state, so each rule reads as SPEC §5.2 states it:

- buckets follow SPEC §4.1: epoch multiples, weeks from Monday 00:00 UTC, and a pipeline's
  ``bucket_offset`` for ``1d``/``1w`` (a duration shifting the boundaries, or a time zone and
  session close: the session of date D ends at D's close, a week at its Sunday's close),
  computed per event from :mod:`zoneinfo` without :mod:`qmtl.buckets`; a bucket is named by its
  end;
- a source event is *late* when the bucket it falls in, at any of the source's intervals, ends
  at or before the source's watermark (the highest event time seen before it, minus
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
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

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
    offset = getattr(pipeline, "bucket_offset", None)
    rule = _bucket_rule(offset.text if offset is not None else "")
    arrivals: dict[str, list[tuple[float, Any]]] = {}
    if events is not None:
        for name, ts, value in events:
            arrivals.setdefault(name, []).append((float(ts), value))
    buckets: dict[Series, dict[float, Any]] = {}  # keyed by bucket end
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
            kept, late = _drop_late(stream, rule, list(intervals.values()), lateness)
            for interval, seconds in intervals.items():
                buckets[(node.name, interval)] = _last_by_time(kept, rule, seconds)
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
            ordered = [(float(end), value) for end, value in sorted(buckets[series].items())]
            if ordered:
                outputs[series] = ordered
            history[series] = list(reversed(ordered))[: spec.max_items]
    return Reference(outputs, history, counts)


Rule = Callable[[float, int], float]


def _bucket_rule(offset: str) -> Rule:
    """``end(ts, seconds)``: the end of the bucket holding ``ts`` (SPEC §4.1, stated directly)."""
    day, week, monday = 86_400, 604_800, 4 * 86_400  # 1970-01-05 is a Monday
    parts = offset.split()
    if len(parts) == 2:
        zone, close = ZoneInfo(parts[0]), time.fromisoformat(parts[1])

        def session_close(d: Any) -> float:  # the close that ends the session of date d
            when = d + timedelta(days=1) if close == time(0) else d
            return datetime.combine(when, close, tzinfo=zone).timestamp()

        def zoned(ts: float, seconds: int) -> float:
            if seconds not in (day, week):
                return (math.floor(ts / seconds) + 1) * seconds
            near = datetime.fromtimestamp(ts, zone).date()
            dates = [near + timedelta(days=k) for k in range(-2, 3)]
            session = next(d for d in dates if session_close(d) > ts)
            if seconds == week:  # the week's last session is its Sunday's
                session += timedelta(days=6 - session.weekday())
            return session_close(session)

        return zoned
    sign = -1 if offset.startswith("-") else 1
    units = {"d": day, "h": 3600, "m": 60, "s": 1}
    shift = sign * sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([dhms])", offset))

    def shifted(ts: float, seconds: int) -> float:
        origin = (monday if seconds == week else 0) + (shift if seconds in (day, week) else 0)
        return origin + (math.floor((ts - origin) / seconds) + 1) * seconds

    return shifted


def _drop_late(
    stream: list[tuple[float, Any]], end: Rule, intervals: list[int], lateness: float
) -> tuple[list[tuple[float, Any]], int]:
    kept: list[tuple[float, Any]] = []
    late = 0
    highest = -math.inf
    for ts, value in stream:
        if any(end(ts, seconds) <= highest - lateness for seconds in intervals):
            late += 1
            continue
        kept.append((ts, value))
        highest = max(highest, ts)
    return kept, late


def _last_by_time(events: list[tuple[float, Any]], end: Rule, seconds: int) -> dict[float, Any]:
    chosen: dict[float, tuple[float, Any]] = {}
    for ts, value in events:  # in arrival order: a later arrival at the same ts wins
        b = end(ts, seconds)
        if b not in chosen or ts >= chosen[b][0]:
            chosen[b] = (ts, value)
    return {b: value for b, (_ts, value) in chosen.items()}


def _computable(
    inputs: list[dict[float, Any]], window: int | None
) -> Iterable[tuple[float, list[Any]]]:
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
