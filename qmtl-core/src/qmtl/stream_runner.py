"""Running a plan's streaming semantics in one process: the local and mock engines' core.

:class:`StreamRunner` binds a :class:`~qmtl.plan.ExecutionPlan` once (one
:class:`~qmtl.streaming.SourceBucketer` per source, one :class:`~qmtl.streaming.NodeAligner`
per node and interval, readers and the plan's calls pre-bound) and then does no lookup per event.
:func:`run_in_process` orders the sources' events (:func:`qmtl.sources.merged_events`) and
drives it; :class:`qmtl.threaded_stream.ThreadedOutputStream` is the iterator form of any
engine's ``run`` (``pipeline.stream()``).

Bounded sources (lists, CSV files) are propagated in batches of ``AUTO_BATCH`` events, which
changes no result (buckets are final or not whatever the batching); live sources go event by
event so no output is held back. A batch never holds a closed bucket longer than ``HOLD_SECONDS``
of wall time either: a bounded source that is slow to read (a file on a network share, a paged
API) still delivers its buckets to ``on_output`` as they close, not at the end of the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from qmtl.codec import PLAIN_TYPES, check
from qmtl.engine import raise_named
from qmtl.errors import IntervalError, NodeExecutionError, StateBackendError, ValueEncodeError
from qmtl.sources import all_bounded, merged_events
from qmtl.state import column_writer, writer
from qmtl.streaming import (
    END,
    Closure,
    NodeAligner,
    NodeSummary,
    OutputEvent,
    RunSummary,
    SourceBucketer,
)

if TYPE_CHECKING:
    from qmtl.plan import ExecutionPlan, PlanNode
    from qmtl.state import SeriesKey, StateBackend

#: Source events per propagation step when every source is bounded (see run_in_process).
AUTO_BATCH = 256
#: Wall-clock seconds a batch may hold closed buckets before they are propagated anyway,
#: checked every ``HOLD_CHECK`` events (so the per-event loop pays one comparison, as before).
HOLD_SECONDS = 0.05
HOLD_CHECK = 4
#: Up to this many series' buckets are written one by one (a live event's), more in bulk.
_SMALL = 16


#: ``hook(node, args) -> value``: replaces how a node is invoked (the mock engine).
InvokeHook = Callable[["PlanNode", Sequence[Any]], Any]


class _Series:
    """One node's series at one interval, as the runner needs it on the hot path."""

    __slots__ = (
        "calendar",
        "count",
        "interval",
        "key",
        "max_items",
        "name",
        "readers",
        "seconds",
        "ttl",
    )

    def __init__(self, node: PlanNode, k: int) -> None:
        spec = node.series[k]
        self.name = node.name
        self.interval = spec.interval.value
        self.key = spec.key
        self.seconds = float(spec.seconds)  # bucket ends come out as floats
        #: None for epoch multiples (the end is (b + 1) * seconds), else the interval's calendar
        self.calendar = None if spec.calendar.aligned else spec.calendar
        self.max_items = spec.max_items
        self.ttl = spec.ttl
        self.count = 0
        #: (reader's aligner, position among its upstreams, reader's series, reader's call)
        self.readers: list[tuple[NodeAligner, int, _Series, Callable[..., Any]]] = []


class StreamRunner:
    """Runs a plan's streaming semantics in one process.

    Feed it with :meth:`on_event` (a source's event), :meth:`end_source` and :meth:`finish`.
    Every final bucket is written to ``state`` (key and bounds of the node's series spec) and
    passed to ``on_output`` as an :class:`OutputEvent`. Nothing is looked up per event: series,
    readers and the calls of the plan are bound here. ``check_values``: every source event and
    node output goes through :func:`qmtl.codec.check` (a refused one is a ValueEncodeError
    naming node and interval; buckets before it stay written, as for a raising node). The
    buckets one propagation step produces are written in one bulk write
    (:func:`qmtl.state.column_writer`), before ``on_output`` sees them.

    A sharded engine runs one shard of a pipeline per runner (:func:`qmtl.subplans.shard_plan`):
    the nodes at the plan indices in ``remote`` are computed elsewhere; the runner keeps no
    state for them and writes none of their buckets, which arrive through :meth:`on_upstream`.
    ``on_buckets(node, interval, buckets, ends)`` is told every list of final
    ``(bucket, value)`` pairs of a series, with their bucket ends, right after they are written
    (one call per list, not per bucket: what an engine that ships buckets in bulk needs).
    :meth:`snapshot` / :meth:`restore` carry the runner's pending state between processes.
    """

    def __init__(
        self,
        plan: ExecutionPlan,
        state: StateBackend,
        *,
        on_output: Callable[[OutputEvent], None] | None = None,
        invoke_hook: InvokeHook | None = None,
        engine: str = "local",
        batch: int = 1,
        check_values: bool = True,
        remote: Collection[int] = (),
        on_buckets: Callable[[str, str, list[tuple[int, Any]], list[float]], None] | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.plan = plan
        self.state = state
        self.on_output = on_output
        self.on_buckets = on_buckets
        self.engine = engine
        self.batch = batch
        self.check_values = check_values
        self._store = writer(state)  # values are checked here, not again by memory state
        self._held: dict[_Series, list[Any]] = {}
        self._flushed = time.perf_counter()
        self._check = HOLD_CHECK
        self._waiting = 0
        self._pending: list[tuple[_Series, list[tuple[int, Any]]]] = []
        self._write = column_writer(state, checked=True)
        nodes = plan.nodes
        self.bucketers: list[SourceBucketer | None] = [None] * len(nodes)
        self.aligners: list[list[NodeAligner]] = [[] for _ in nodes]
        self.series: list[list[_Series]] = [
            [_Series(n, k) for k in range(len(n.series))] for n in nodes
        ]
        for node in nodes:
            if node.index in remote:
                continue
            call = node.call if invoke_hook is None else _hooked(invoke_hook, node)
            if not node.upstreams:
                lateness = getattr(node.node, "allowed_lateness", None)
                self.bucketers[node.index] = SourceBucketer(
                    [s.seconds for s in node.series], lateness, [s.calendar for s in node.series]
                )
                continue
            for j, spec in enumerate(node.series):
                aligner = NodeAligner(
                    len(node.upstreams), spec.seconds, node.window_size(spec), spec.calendar
                )
                self.aligners[node.index].append(aligner)
                for pos, up in enumerate(node.upstream_index):
                    k = _series_at(nodes[up], spec.seconds, node.name)
                    self.series[up][k].readers.append(
                        (aligner, pos, self.series[node.index][j], call)
                    )
        #: (node, intervals) of each plan node, named by a refused value's error
        self.where = [(n.name, ", ".join(s.interval.value for s in n.series)) for n in nodes]
        self.started = time.perf_counter()

    def on_event(self, source: int, ts: float, value: Any) -> None:
        """One event of the source at plan index ``source``."""
        if self.check_values and type(value) not in PLAIN_TYPES:
            check(value, node=self.where[source][0], interval=self.where[source][1])
        closed = self.bucketers[source].on_event(ts, value)  # type: ignore[union-attr]
        if self.batch == 1:
            if closed:
                series = self.series[source]
                for k, buckets, through in closed:
                    self._emit(series[k], buckets, through)
            return
        if closed:
            self.hold(source, closed)
        self._waiting += 1
        if self._waiting >= self._check:
            self._checkpoint()

    def hold(self, source: int, closed: list[Closure]) -> None:
        """Keep a source's closed buckets until the next :meth:`flush`."""
        held = self._held
        series = self.series[source]
        for k, buckets, through in closed:
            target = series[k]
            slot = held.get(target)
            if slot is None:
                held[target] = [buckets, through]
            else:
                slot[0].extend(buckets)
                slot[1] = through

    def flush(self) -> None:
        """Propagate the source buckets held back by batching (see ``batch``)."""
        held, self._held, self._waiting = self._held, {}, 0
        self._check = HOLD_CHECK
        for series, (buckets, through) in held.items():
            self._propagate(series, buckets, through)
        self._commit()
        self._flushed = time.perf_counter()

    def _checkpoint(self) -> None:
        """Every ``HOLD_CHECK`` events of a batch: flush when the batch is full or has held
        its buckets for ``HOLD_SECONDS`` (a bounded source that is slow to read)."""
        waiting = self._waiting
        if waiting >= self.batch or time.perf_counter() - self._flushed >= HOLD_SECONDS:
            self.flush()
        else:
            self._check = waiting + HOLD_CHECK

    def on_watermark(self, source: int, watermark: float) -> None:
        """The source at plan index ``source`` promises no event before ``watermark``."""
        self.flush()
        closed = self.bucketers[source].on_watermark(watermark)  # type: ignore[union-attr]
        for k, buckets, through in closed:
            self._emit(self.series[source][k], buckets, through)

    def end_source(self, source: int) -> None:
        """The source at plan index ``source`` has no more events."""
        bucketer = self.bucketers[source]
        assert bucketer is not None
        self.flush()
        for k, buckets, through in bucketer.flush():
            self._emit(self.series[source][k], buckets, through)

    def on_upstream(
        self, index: int, k: int, buckets: list[tuple[int, Any]], through: float
    ) -> None:
        """Final buckets (increasing) and the new *final through* of series ``k`` of the remote
        node at plan index ``index``: passed to its readers here, not written."""
        self.flush()
        self._emit(self.series[index][k], buckets, through, write=False)

    def snapshot(self) -> dict[str, Any]:
        """The pending state of every source and node run here, as plain data that
        :func:`qmtl.codec.encode` carries (string keys): see :meth:`restore`."""
        self.flush()
        return {
            "sources": {str(i): b.to_dict() for i, b in enumerate(self.bucketers) if b is not None},
            "nodes": {
                str(i): [a.to_dict() for a in al] for i, al in enumerate(self.aligners) if al
            },
            "counts": {str(i): [s.count for s in ss] for i, ss in enumerate(self.series) if ss},
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        """Continue from a :meth:`snapshot` of a runner over the same plan."""
        for index, state in data["sources"].items():
            built = self.bucketers[int(index)]
            assert built is not None, f"plan index {index} is not a source run here"
            self.bucketers[int(index)] = SourceBucketer.from_dict(state, built.calendars)
        swapped: dict[int, NodeAligner] = {}
        for index, states in data["nodes"].items():
            aligners = self.aligners[int(index)]
            for k, state in enumerate(states):
                fresh = NodeAligner.from_dict(state, aligners[k].calendar)
                swapped[id(aligners[k])] = fresh
                aligners[k] = fresh
        for series in self.series:
            for item in series:
                item.readers = [
                    (swapped.get(id(aligner), aligner), position, target, invoke)
                    for aligner, position, target, invoke in item.readers
                ]
        for index, counts in data["counts"].items():
            for item, count in zip(self.series[int(index)], counts, strict=True):
                item.count = count

    def finish(self) -> RunSummary:
        """End every source still open; return the run's summary."""
        self.flush()
        for index, bucketer in enumerate(self.bucketers):
            if bucketer is not None and bucketer.final[0] != END:
                self.end_source(index)
        return self.summary()

    def summary(self) -> RunSummary:
        nodes = {}
        for node in self.plan.nodes:
            b = self.bucketers[node.index]
            nodes[node.name] = NodeSummary(
                events_in=b.events if b else 0,
                late_events=b.late if b else 0,
                buckets_out={s.interval: s.count for s in self.series[node.index]},
            )
        return RunSummary(
            self.plan.pipeline, self.engine, nodes, time.perf_counter() - self.started
        )

    def _emit(
        self, series: _Series, buckets: list[tuple[int, Any]], through: float, write: bool = True
    ) -> None:
        self._propagate(series, buckets, through, write)
        self._commit()

    def _propagate(
        self, series: _Series, buckets: list[tuple[int, Any]], through: float, write: bool = True
    ) -> None:
        """Push final buckets to their readers, computing what became computable; the buckets
        produced wait in ``_pending`` for :meth:`_commit`. ``write=False``: the first series
        is another shard's (:meth:`on_upstream`), written there."""
        # An explicit stack instead of recursion: any DAG depth works.
        stack = [(series, buckets, through)]
        pending, checking, plain = self._pending, self.check_values, PLAIN_TYPES
        while stack:
            series, buckets, through = stack.pop()
            if buckets and write:
                pending.append((series, buckets))
            write = True
            for aligner, pos, target, call in series.readers:
                ready = aligner.push(pos, buckets, through)
                if ready is None:
                    continue
                if ready:
                    out = []
                    try:
                        for b, args in ready:
                            value = call(*args)
                            if checking and type(value) not in plain:
                                check(value, node=target.name, interval=target.interval)
                            out.append((b, value))
                    except Exception as error:
                        # The failing node's buckets before the failing one are kept.
                        if out:
                            pending.append((target, out))
                        self._commit()
                        if isinstance(error, NodeExecutionError | ValueEncodeError):
                            raise
                        raise NodeExecutionError(target.name, error) from error
                    ready = out
                stack.append((target, ready, aligner.done))

    def _commit(self) -> None:
        """Write the pending buckets in one bulk write, then hand each to ``on_output``, in the
        order they were produced."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if len(pending) <= _SMALL:  # a live event's few buckets: one write each is cheaper
            write = self._store
            for series, buckets in pending:
                key, max_items, ttl = series.key, series.max_items, series.ttl
                seconds, calendar = series.seconds, series.calendar
                try:
                    for b, value in buckets:
                        end = (b + 1) * seconds if calendar is None else calendar.end(b)
                        write(key, end, value, max_items=max_items, ttl=ttl)
                except StateBackendError as error:  # the backend knows the node by its id
                    raise StateBackendError(
                        f"Node '{series.name}' at {series.interval}: {error}"
                    ) from error
                series.count += len(buckets)
        else:
            self._write_bulk(pending)
        on_output = self.on_output
        if on_output is not None:
            for series, buckets in pending:
                name, interval = series.name, series.interval
                seconds, calendar = series.seconds, series.calendar
                for b, value in buckets:
                    end = (b + 1) * seconds if calendar is None else calendar.end(b)
                    on_output(OutputEvent(name, interval, end, value, b))
        on_buckets = self.on_buckets
        if on_buckets is not None:
            for series, buckets in pending:
                on_buckets(series.name, series.interval, buckets, _ends(series, buckets))

    def _write_bulk(self, pending: list[tuple[_Series, list[tuple[int, Any]]]]) -> None:
        keys: list[SeriesKey] = []
        stamps: list[float] = []
        values: list[Any] = []
        caps: list[int | None] = []
        ttls: list[int | None] = []
        names: list[str] = []
        for series, buckets in pending:
            n = len(buckets)
            keys += [series.key] * n
            stamps += _ends(series, buckets)
            values += [value for _, value in buckets]
            caps += [series.max_items] * n
            ttls += [series.ttl] * n
            names += [series.name] * n
            series.count += n
        try:
            self._write(keys, stamps, values, caps, ttls)
        except StateBackendError as error:
            raise_named(self.state, error, names, keys, stamps, values, caps, ttls)


def _ends(series: _Series, buckets: list[tuple[int, Any]]) -> list[float]:
    """The bucket ends (state timestamps) of ``buckets`` of ``series``: ``(b + 1) * seconds``
    on epoch multiples, else its calendar's."""
    calendar = series.calendar
    if calendar is None:
        seconds = series.seconds
        return [(b + 1) * seconds for b, _ in buckets]
    return [calendar.end(b) for b, _ in buckets]


def _series_at(upstream: PlanNode, seconds: int, reader: str) -> int:
    for k, spec in enumerate(upstream.series):
        if spec.seconds == seconds:
            return k
    raise IntervalError(
        f"Node '{reader}' reads '{upstream.name}' at a {seconds}s interval that "
        f"'{upstream.name}' does not keep (it has {[s.interval.value for s in upstream.series]}); "
        "add that interval to it"
    )


def _warmed(runner: StreamRunner, state: StateBackend, warm: bool) -> StreamRunner:
    if warm:
        from qmtl.warm import warm_start

        warm_start(runner, state)
    return runner


def _hooked(hook: InvokeHook, node: PlanNode) -> Callable[..., Any]:
    return lambda *args: hook(node, args)


def drive(runner: StreamRunner, events: Iterable[tuple[int, float | None, Any]]) -> RunSummary:
    """Feed ``(source index, ts, value)`` events; ``(index, None, None)``: that source ended;
    ``(index, None, wm)``: its watermark moved to ``wm``."""
    batch = runner.batch
    if batch == 1:
        on_event, end_source = runner.on_event, runner.end_source
        for index, ts, value in events:
            if ts is not None:
                on_event(index, ts, value)
            elif value is None:
                end_source(index)
            else:
                runner.on_watermark(index, value)
        return runner.finish()
    # Batched: each source's events of a batch are bucketed together (SourceBucketer.on_events)
    # before the batch is propagated; sources are independent, so this is what on_event per
    # event would do.
    buffers: list[list[tuple[float, Any]]] = [[] for _ in runner.bucketers]
    bucketers = runner.bucketers
    hold, flush, clock = runner.hold, runner.flush, time.perf_counter
    checking, plain, where = runner.check_values, PLAIN_TYPES, runner.where

    def bucket() -> None:
        for index, buffered in enumerate(buffers):
            if buffered:
                closed = bucketers[index].on_events(buffered)  # type: ignore[union-attr]
                buffered.clear()
                if closed:
                    hold(index, closed)

    waiting, every = 0, HOLD_CHECK
    try:
        for index, ts, value in events:
            if checking and type(value) not in plain and ts is not None:
                check(value, node=where[index][0], interval=where[index][1])
            if ts is None:
                bucket()
                if value is None:
                    runner.end_source(index)
                else:
                    runner.on_watermark(index, value)
                waiting, every = 0, HOLD_CHECK
                continue
            buffers[index].append((ts, value))
            waiting += 1
            if waiting >= every:  # see StreamRunner._checkpoint
                if waiting >= batch or clock() - runner._flushed >= HOLD_SECONDS:
                    bucket()
                    flush()
                    waiting, every = 0, HOLD_CHECK
                else:
                    every = waiting + HOLD_CHECK
    except Exception:
        # A source failed: the buckets that were final before it are written, as unbatched.
        bucket()
        flush()
        raise
    bucket()
    return runner.finish()


def run_in_process(
    plan: ExecutionPlan,
    state: StateBackend,
    *,
    on_output: Callable[[OutputEvent], None] | None = None,
    sources: Mapping[str, Any] | None = None,
    events: Iterable[tuple[str, Any, Any]] | None = None,
    clock: Callable[[], float] = time.time,
    invoke_hook: InvokeHook | None = None,
    engine: str = "local",
    batch: int | None = None,
    timeout: float | None = None,
    check_values: bool = True,
    warm_start: bool = False,
) -> RunSummary:
    """Run ``plan``'s sources to their end in this process (the local engine's semantics).

    ``sources`` replaces named sources' inputs; ``events`` (``(source name, ts, value)`` in
    arrival order) replaces all of them; ``clock`` stamps values that come without a ts.
    ``batch`` propagates source buckets every that many events (default: ``AUTO_BATCH`` when
    every source's data is at hand, else 1 so live outputs are never held back); results do
    not depend on it. ``timeout`` bounds the whole run (:mod:`qmtl.deadline`: the run moves to
    a worker thread, which also calls ``on_output``). ``check_values=False`` skips
    :func:`qmtl.codec.check` of every value. ``warm_start``: continue the history in ``state``
    (:mod:`qmtl.warm`).
    """
    if batch is None:
        batch = AUTO_BATCH if all_bounded(plan, sources=sources, events=events) else 1
    merged = merged_events(plan, sources=sources, events=events, clock=clock)
    if timeout is None:
        runner = StreamRunner(
            plan,
            state,
            on_output=on_output,
            invoke_hook=invoke_hook,
            engine=engine,
            batch=batch,
            check_values=check_values,
        )
        return drive(_warmed(runner, state, warm_start), merged)
    from qmtl.deadline import run_with_deadline

    return run_with_deadline(
        plan.pipeline,
        timeout,
        lambda deadline: drive(
            _warmed(
                StreamRunner(
                    plan,
                    deadline.state(state),
                    on_output=deadline.output(on_output),
                    invoke_hook=deadline.hook(invoke_hook),
                    engine=engine,
                    batch=batch,
                    check_values=check_values,
                ),
                state,
                warm_start,
            ),
            deadline.events(merged),
        ),
    )
