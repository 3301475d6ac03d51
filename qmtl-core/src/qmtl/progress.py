"""Progress of a streaming run on stderr: events in, buckets out, event-time position, rate.

``pipeline.run(progress=True)`` (and ``qmtl run --stream`` on a terminal) shows one live line,
drawn by rich on stderr a few times a second::

    momentum ▸ 1,204,311 events in · 60,215 buckets out · event time 2024-03-01 12:00:00Z ·
    811,402 events/s · 1.5 s

It is shown only when stderr is a terminal (or a Jupyter notebook with ipywidgets); in pipes, CI
logs and files the run is exactly the run without progress, so nothing is written and nothing
is counted. When shown, counting costs one increment per event (each source's events pass
through a counting wrapper, engine-neutral: any engine taking ``sources=`` is counted) and one
per bucket out; the line is drawn by rich's refresh thread, not by the run.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from qmtl.sources import Watermark, source_events

#: Redraws per second of the progress line.
REFRESH_PER_SECOND = 4


class RunCounters:
    """What a run has done so far (read by the display thread, written by the run)."""

    __slots__ = ("buckets", "events", "position", "started")

    def __init__(self) -> None:
        self.events = 0
        self.buckets = 0
        self.position = -float("inf")  #: highest event time seen, epoch seconds
        self.started = time.perf_counter()

    def line(self, pipeline: str) -> str:
        """The progress line."""
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        parts = [f"{self.events:,} events in", f"{self.buckets:,} buckets out"]
        if self.position > -float("inf"):
            when = datetime.fromtimestamp(self.position, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
            parts.append(f"event time {when}")
        parts.append(f"{self.events / elapsed:,.0f} events/s")
        parts.append(f"{elapsed:.1f} s")
        return f"{pipeline} ▸ " + " · ".join(parts)


class _Counted:
    """A source whose events are counted on their way to the engine."""

    def __init__(
        self, raw: Any, name: str, counters: RunCounters, clock: Callable[[], float]
    ) -> None:
        self.raw, self.name, self.counters, self.clock = raw, name, counters, clock
        self.bounded = isinstance(raw, list | tuple) or bool(getattr(raw, "bounded", False))

    def events(self) -> Iterator[tuple[float, Any]]:
        counters = self.counters
        for ts, value in source_events(self.raw, self.name, clock=self.clock):
            if value.__class__ is not Watermark:
                counters.events += 1
                if ts > counters.position:
                    counters.position = ts
            yield ts, value


def _count_explicit(
    events: Iterable[tuple[str, Any, Any]], counters: RunCounters
) -> Iterator[tuple[str, Any, Any]]:
    for name, ts, value in events:
        counters.events += 1
        if isinstance(ts, int | float) and ts > counters.position:
            counters.position = ts
        yield name, ts, value


def _takes_sources(engine: Any) -> bool:
    try:
        parameters = inspect.signature(engine.run).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "sources" or p.kind is p.VAR_KEYWORD for p in parameters)


def counted_options(plan: Any, options: Mapping[str, Any], counters: RunCounters) -> dict[str, Any]:
    """``options`` with every source (or the explicit ``events``) counted into ``counters``."""
    counted = dict(options)
    events = counted.get("events")
    if events is not None:
        counted["events"] = _count_explicit(events, counters)
        return counted
    clock = counted.get("clock", time.time)
    sources = dict(counted.get("sources") or {})
    for node in plan.nodes:
        if node.upstreams or node.kind == "query":
            continue
        declared = getattr(node.node, "source", getattr(node.node, "fn", None))
        raw = sources.get(node.name, declared)
        sources[node.name] = _Counted(raw, node.name, counters, clock)
    counted["sources"] = sources
    return counted


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _shown(console: Any) -> bool:
    if console.is_jupyter:
        return importlib.util.find_spec("ipywidgets") is not None
    return bool(console.is_terminal)


def run_with_progress(
    pipeline: str,
    engine: Any,
    plan: Any,
    state: Any,
    on_output: Callable[[Any], None] | None,
    options: Mapping[str, Any],
    *,
    console: Any = None,
) -> Any:
    """Run ``engine.run(plan, ...)`` with the progress line on stderr when it is a terminal."""
    console = _console() if console is None else console
    if not _shown(console):
        return engine.run(plan, state=state, on_output=on_output, **options)
    from rich.live import Live
    from rich.text import Text

    counters = RunCounters()
    if _takes_sources(engine):
        options = counted_options(plan, options, counters)

    def counted(event: Any) -> None:
        counters.buckets += 1
        if on_output is not None:
            on_output(event)

    live = Live(
        get_renderable=lambda: Text(counters.line(pipeline)),
        console=console,
        refresh_per_second=REFRESH_PER_SECOND,
        redirect_stdout=sys.stdout.isatty(),  # a terminal shared with stdout stays tidy
        redirect_stderr=False,
    )
    with live:
        return engine.run(plan, state=state, on_output=counted, **options)


__all__ = ["RunCounters", "counted_options", "run_with_progress"]
