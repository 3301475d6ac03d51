"""The columnar run: rounds of source chunks pushed through the plan in topological order."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from qmtl.deadline import Stopped
from qmtl.errors import IntervalError, NodeExecutionError, ValueEncodeError
from qmtl.sources import merged_events, source_inputs
from qmtl.state import BucketWrite, MemoryStateBackend
from qmtl.streaming import NodeSummary, OutputEvent, RunSummary
from qmtl_engine_local.columnar._align import END, Col, ColumnAligner
from qmtl_engine_local.columnar._calendar import Grid
from qmtl_engine_local.columnar._nodes import ColumnNode, first_refused
from qmtl_engine_local.columnar._sources import Chunk, ColumnBucketer, SourceReader

if TYPE_CHECKING:
    from qmtl.deadline import Deadline
    from qmtl.plan import ExecutionPlan, PlanNode, SeriesSpec
    from qmtl.state import StateBackend

#: What one series delivered in a round: its new final buckets and its *final through*.
News = tuple[Col | None, float]


class _Series:
    """One node's series at one interval: where its buckets go."""

    __slots__ = ("count", "grid", "interval", "key", "max_items", "name", "ttl")

    def __init__(self, node: PlanNode, spec: SeriesSpec) -> None:
        self.name = node.name
        self.interval = spec.interval.value
        self.key = spec.key
        self.grid = Grid(spec.calendar)  #: where its buckets end
        self.max_items = spec.max_items
        self.ttl = spec.ttl
        self.count = 0


class _Step:
    """One node at one interval: its aligner, its series, where its upstreams' news is."""

    __slots__ = ("aligner", "inputs", "series", "window")

    def __init__(
        self,
        aligner: ColumnAligner,
        series: _Series,
        inputs: list[tuple[int, int]],
        window: int | None,
    ) -> None:
        self.aligner = aligner
        self.series = series
        self.inputs = inputs  #: (upstream plan index, its series position), in upstream order
        self.window = window


class ColumnRunner:
    """Runs a plan over chunks of its sources' events (see :mod:`qmtl_engine_local.columnar`)."""

    def __init__(
        self,
        plan: ExecutionPlan,
        state: StateBackend,
        *,
        on_output: Callable[[OutputEvent], None] | None = None,
        engine: str = "local",
        deadline: Deadline | None = None,
        check_values: bool = True,
    ) -> None:
        self.plan = plan
        self.check_values = check_values
        #: a ``timeout``: where the run says which node runs and stops once the caller gave up
        self.deadline = deadline
        self.state = state
        self.on_output = on_output
        self.engine = engine
        nodes = plan.nodes
        self.series = [[_Series(n, spec) for spec in n.series] for n in nodes]
        self.bucketers: dict[int, ColumnBucketer] = {}
        self.steps: list[tuple[int, ColumnNode, list[_Step]]] = []
        for node in nodes:
            if not node.upstreams:
                lateness = getattr(node.node, "allowed_lateness", None)
                self.bucketers[node.index] = ColumnBucketer(
                    [s.calendar for s in node.series], lateness
                )
                continue
            steps = []
            for j, spec in enumerate(node.series):
                window = node.window_size(spec)
                inputs = [
                    (up, _series_at(nodes[up], spec.seconds, node.name))
                    for up in node.upstream_index
                ]
                aligner = ColumnAligner(len(inputs), window)
                steps.append(_Step(aligner, self.series[node.index][j], inputs, window))
            self.steps.append((node.index, ColumnNode(node), steps))
        #: the memory backend's write without a second check (what the event path uses)
        self._unchecked = state.write_unchecked if type(state) is MemoryStateBackend else None
        self.started = time.perf_counter()

    def run(self, readers: Mapping[int, SourceReader], chunk: int) -> RunSummary:
        """Read every source to its end, ``chunk`` events at a time, and return the summary.

        Each round reads the sources whose watermark is lowest (all of them at first), so no
        source runs more than a chunk ahead of the others and the buckets a node holds while
        waiting for a slower upstream stay bounded.
        """
        with _collecting_between_rounds() as collect:
            return self._rounds(dict(readers), chunk, collect)

    def _rounds(
        self, live: dict[int, SourceReader], chunk: int, collect: Callable[[], object]
    ) -> RunSummary:
        news: dict[int, list[News]] = {}
        for index, bucketer in self.bucketers.items():
            if index not in live:  # a query that matched nothing: ended, no events
                news[index] = list(bucketer.end())
        while live:
            if self.deadline is not None and self.deadline.stopped.is_set():
                raise Stopped
            low = min(self.bucketers[i].watermark for i in live)
            error: Exception | None = None
            for index, reader in list(live.items()):
                bucketer = self.bucketers[index]
                if bucketer.watermark != low:
                    continue
                got = reader.read(chunk)
                if self.check_values:
                    got = self._checked(index, got)
                closed: list[News] = list(bucketer.push(got))
                if got.ended:
                    del live[index]
                    closed = [
                        (Col.join(col, tail) if col is not None else tail, END)
                        for (col, _), (tail, _) in zip(closed, bucketer.end(), strict=True)
                    ]
                news[index] = closed
                if got.error is not None:
                    error = got.error
                    break
            self._propagate(news)
            news = {}
            collect()
            if error is not None:
                raise error
        if news:
            self._propagate(news)
        return self.summary()

    def _propagate(self, news: dict[int, list[News]]) -> None:
        """Write the sources' news, then compute every node in topological order."""
        for index, items in news.items():
            for series, (delivered, _through) in zip(self.series[index], items, strict=True):
                if delivered is not None and len(delivered):
                    self._write(series, delivered)
        for index, node, steps in self.steps:
            produced: list[News] | None = None
            for j, step in enumerate(steps):
                inputs = [news[up][k] if up in news else None for up, k in step.inputs]
                if not any(inputs):
                    continue
                ready = step.aligner.push(inputs)
                if ready is None:
                    continue
                col: Col | None = None
                if len(ready.buckets):
                    deadline = self.deadline
                    if deadline is not None:
                        if deadline.stopped.is_set():
                            raise Stopped
                        deadline.running = node.name
                    checked = step.series.interval if self.check_values else None
                    col, error = node.compute(ready, step.window, checked)
                    if deadline is not None:
                        deadline.running = None
                    if len(col):
                        self._write(step.series, col)
                    if error is not None:
                        if isinstance(error, NodeExecutionError | ValueEncodeError):
                            raise error
                        raise NodeExecutionError(node.name, error) from error
                if produced is None:
                    produced = [(None, -np.inf)] * len(steps)
                produced[j] = (col, step.aligner.done)
            if produced is not None:
                news[index] = produced

    def _checked(self, index: int, chunk: Chunk) -> Chunk:
        """``chunk`` up to its first event whose value :func:`qmtl.codec.check` refuses, with
        that refusal as the chunk's error (the event path checks each event as it arrives)."""
        values = chunk.checked_values()
        if values is None:
            return chunk
        node = self.plan.nodes[index]
        intervals = ", ".join(s.interval.value for s in node.series)
        refused = first_refused(values, node.name, intervals)
        if refused is None:
            return chunk
        return chunk.head(refused[0], refused[1])

    def _write(self, series: _Series, col: Col) -> None:
        """Store a run of final buckets and hand them to ``on_output``. Only the last
        ``max_items`` are written: the store would trim the others right away, so the history
        is the same as writing every bucket (all of them when the history is kept whole)."""
        n = len(col)
        series.count += n
        ends = series.grid.ends(col.buckets)
        start = 0 if series.max_items is None else max(0, n - series.max_items)
        key, max_items, ttl = series.key, series.max_items, series.ttl
        pairs = zip(ends[start:].tolist(), col.values(start, n), strict=True)
        if self._unchecked is not None:  # the memory backend: values were checked here
            write = self._unchecked
            for end, value in pairs:
                write(key, end, value, max_items=max_items, ttl=ttl)
        else:
            self.state.write_many([BucketWrite(key, e, v, max_items, ttl) for e, v in pairs])
        on_output = self.on_output
        if on_output is not None:
            name, interval = series.name, series.interval
            for b, end, value in zip(col.buckets.tolist(), ends.tolist(), col.py(), strict=True):
                on_output(OutputEvent(name, interval, end, value, b))

    def summary(self) -> RunSummary:
        nodes = {}
        for node in self.plan.nodes:
            bucketer = self.bucketers.get(node.index)
            nodes[node.name] = NodeSummary(
                events_in=bucketer.events if bucketer else 0,
                late_events=bucketer.late if bucketer else 0,
                buckets_out={s.interval: s.count for s in self.series[node.index]},
            )
        return RunSummary(
            self.plan.pipeline, self.engine, nodes, time.perf_counter() - self.started
        )


@contextmanager
def _collecting_between_rounds() -> Iterator[Callable[[], object]]:
    """Pause Python's cyclic garbage collector during each round; collect its young
    generations between rounds.

    A round allocates a few hundred thousand short-lived objects at once (window lists,
    values); traced every 700 allocations, with the source data alive, that cost as much as
    the computation itself. Reference cycles a node function makes are collected at the next
    round boundary, so memory stays bounded by the chunk size as before.
    """
    if not gc.isenabled():
        yield lambda: None
        return
    gc.disable()
    try:
        yield lambda: gc.collect(1)
    finally:
        gc.enable()


def _series_at(upstream: PlanNode, seconds: int, reader: str) -> int:
    for k, spec in enumerate(upstream.series):
        if spec.seconds == seconds:
            return k
    raise IntervalError(
        f"Node '{reader}' reads '{upstream.name}' at a {seconds}s interval that "
        f"'{upstream.name}' does not keep (it has {[s.interval.value for s in upstream.series]}); "
        "add that interval to it"
    )


def readers(
    plan: ExecutionPlan,
    *,
    sources: Mapping[str, Any] | None,
    events: Iterable[tuple[str, Any, Any]] | None,
    clock: Callable[[], float],
) -> dict[int, SourceReader]:
    """A reader per source: its declared input, ``sources=`` overrides, or its share of
    ``events=`` (checked as the event path checks them, in each source's arrival order)."""
    if events is None:
        return {
            index: SourceReader(name, raw, clock)
            for index, name, raw in source_inputs(plan, sources=sources)
        }
    names = {n.index: n.name for n in plan.nodes if not n.upstreams and n.kind != "query"}
    split: dict[int, list[tuple[float, Any]]] = {index: [] for index in names}
    for index, ts, value in merged_events(plan, events=events, clock=clock):
        assert ts is not None  # explicit arrivals carry no end or watermark markers
        split[index].append((ts, value))
    return {
        index: SourceReader(names[index], items, clock, explicit=True)
        for index, items in split.items()
    }
