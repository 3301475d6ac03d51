"""Event-time streaming semantics (SPEC §5.2) as pure objects every engine reuses.

Vocabulary. For an interval of ``seconds``, bucket ``b`` holds event times
``[b * seconds, (b + 1) * seconds)``; ``b = floor(ts / seconds)`` and the bucket's timestamp
everywhere (state, outputs) is its end ``(b + 1) * seconds``. A series is *final through* ``f``
when no bucket ``<= f`` can change any more; a watermark ``wm`` (epoch seconds) makes every
bucket whose end is ``<= wm`` final (:func:`final_through`).

The objects:

- :class:`SourceBucketer` turns one source's events into final buckets: a bucket's value is the
  last event in it (by ts, ties by arrival); the source's watermark is the highest ts seen minus
  ``allowed_lateness``; an event whose bucket (at the source's finest interval) is already
  final is *late*: counted and dropped, never merged. :meth:`SourceBucketer.flush` ends the
  stream.
- :class:`NodeAligner` is one node at one interval: it receives its upstreams' final buckets
  and watermarks and returns the buckets that became computable, with their arguments (as-of
  join; ``window=N`` buffers with warm-up gating). Buckets come out in increasing order.
- :class:`StreamRunner` wires a whole :class:`~qmtl.plan.ExecutionPlan` in one process (the
  local and mock engines, and the oracle of :mod:`qmtl.testing`).

Both state objects are bounded (pending buckets wait only for slower upstreams; windows keep
``N`` values; the as-of join keeps one) and serialise to plain JSON with ``to_dict`` /
``from_dict`` (node values must then be JSON values; ``-inf`` is ``null``, an ended stream
``"end"``), so a distributed engine can persist them between batches.

Failure policy: a node that raises stops the run with :class:`~qmtl.errors.NodeExecutionError`
naming the node; every bucket written before stays, the failing bucket and everything after it
is not written.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from qmtl.errors import NodeExecutionError
from qmtl.sources import all_bounded, merged_events

if TYPE_CHECKING:
    from qmtl.plan import ExecutionPlan, PlanNode
    from qmtl.state import StateBackend

#: "Final through" of a stream that has ended: every bucket is final.
END = math.inf
_NEVER = -math.inf
_MISSING: Any = object()
_NOTHING: tuple[Any, ...] = ()
#: ``(interval position, [(bucket, value), ...], final through)`` of one interval.
Closure = tuple[int, list[tuple[int, Any]], float]
STATE_VERSION = 1
#: Source events per propagation step when every source is bounded (see run_in_process).
AUTO_BATCH = 256


def final_through(watermark: float, seconds: int) -> float:
    """The last bucket index a watermark makes final (``-inf`` if none, ``END`` stays END)."""
    if watermark == END or watermark == _NEVER:
        return watermark
    return int(watermark // seconds) - 1


def _enc(x: float) -> Any:
    if x == END:
        return "end"
    if x == _NEVER:
        return None
    return x


def _dec(x: Any) -> float:
    if x == "end":
        return END
    if x is None:
        return _NEVER
    return x  # type: ignore[no-any-return]


class OutputEvent(NamedTuple):
    """A final bucket of one node at one interval."""

    node: str
    interval: str
    ts: float  #: the bucket end, epoch seconds
    value: Any
    bucket: int  #: ``floor(event ts / interval seconds)``


# -- sources --------------------------------------------------------------------------------
class SourceBucketer:
    """One source at all its intervals: events in, final buckets out.

    :meth:`on_event` returns ``None`` for a late event, else a (possibly empty) list of
    ``(interval_position, [(bucket, value), ...], final_through)`` for every interval whose
    final bucket advanced (buckets in increasing order; the list may be empty when the
    watermark crossed a bucket that had no event).
    """

    __slots__ = ("_closes", "_finest", "_late_before", "_next", "events", "final", "late",
                 "lateness", "open", "pairs", "seconds", "watermark")

    def __init__(self, seconds: Sequence[int], allowed_lateness: float | None = None) -> None:
        if not seconds:
            raise ValueError("a source needs at least one interval")
        self.seconds = tuple(int(s) for s in seconds)
        self.lateness = float(allowed_lateness or 0.0)
        self.watermark = _NEVER  #: highest event ts seen
        self.final: list[float] = [_NEVER] * len(self.seconds)
        self.open: list[dict[int, tuple[float, Any]]] = [{} for _ in self.seconds]
        self.pairs = tuple(zip(self.seconds, self.open, strict=True))
        self.events = 0
        self.late = 0
        self._finest = min(range(len(self.seconds)), key=self.seconds.__getitem__)
        self._bounds()

    def _bounds(self) -> None:
        # Per interval, the watermark that closes its next bucket; an event before
        # _late_before is late.
        self._closes = [(f + 2) * s for f, s in zip(self.final, self.seconds, strict=True)]
        self._next = min(self._closes)
        f = self._finest
        self._late_before = (self.final[f] + 1) * self.seconds[f]

    def on_event(self, ts: float, value: Any) -> list[Closure] | tuple[()] | None:
        self.events += 1
        if ts < self._late_before:
            self.late += 1
            return None
        for s, opened in self.pairs:
            b = int(ts // s)
            slot = opened.get(b)
            if slot is None or ts >= slot[0]:
                opened[b] = (ts, value)
        if ts <= self.watermark:
            return _NOTHING
        self.watermark = ts
        wm = ts - self.lateness
        if wm < self._next:
            return _NOTHING
        return self._advance(wm)

    def on_watermark(self, watermark: float) -> list[Closure]:
        """Move the watermark without an event (idle flush by wall clock): every bucket ending
        ``<= watermark - allowed_lateness`` becomes final."""
        if watermark <= self.watermark:
            return []
        self.watermark = watermark
        return self._advance(watermark - self.lateness if watermark != END else END)

    def flush(self) -> list[Closure]:
        """End of stream: every open bucket becomes final."""
        return self._advance(END)

    def _advance(self, wm: float) -> list[Closure]:
        closed: list[Closure] = []
        final, closes = self.final, self._closes
        for i, (s, opened) in enumerate(self.pairs):
            if wm < closes[i]:
                continue
            through = END if wm == END else int(wm // s) - 1
            final[i] = through
            closes[i] = (through + 2) * s
            if len(opened) == 1:
                (b,) = opened
                if b <= through:
                    closed.append((i, [(b, opened.pop(b)[1])], through))
                else:
                    closed.append((i, [], through))
                continue
            ready = sorted(b for b in opened if b <= through)
            closed.append((i, [(b, opened.pop(b)[1]) for b in ready], through))
        self._next = min(closes)
        f = self._finest
        self._late_before = (final[f] + 1) * self.seconds[f]
        return closed

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (values must be JSON values)."""
        return {
            "version": STATE_VERSION,
            "seconds": list(self.seconds),
            "allowed_lateness": self.lateness,
            "watermark": _enc(self.watermark),
            "final": [_enc(f) for f in self.final],
            "open": [[[b, ts, v] for b, (ts, v) in sorted(o.items())] for o in self.open],
            "events": self.events,
            "late": self.late,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SourceBucketer:
        self = cls(data["seconds"], data["allowed_lateness"])
        self.watermark = _dec(data["watermark"])
        self.final = [_dec(f) for f in data["final"]]
        self.open = [{int(b): (ts, v) for b, ts, v in o} for o in data["open"]]
        self.pairs = tuple(zip(self.seconds, self.open, strict=True))
        self.events, self.late = data["events"], data["late"]
        self._bounds()
        return self


# -- nodes ----------------------------------------------------------------------------------
class NodeAligner:
    """One node at one interval: aligns its upstreams' final buckets (SPEC §5.2).

    Bucket ``b`` is computed once it is final for every upstream, some upstream has a value in
    ``b`` and every upstream has a value at or before ``b``; an upstream without a value in
    ``b`` contributes its latest earlier value (as-of join). With ``window=N`` each upstream
    contributes the list of its own last ``N`` values at buckets ``<= b`` (oldest first) and
    ``b`` is computed only once every list is full.

    Methods return ``None`` when the node's own final bucket did not advance, else the list of
    ``(bucket, args)`` to compute (``args`` in upstream order), possibly empty; afterwards
    :attr:`done` is the node's own *final through* (its watermark, in buckets), which an engine
    forwards to the node's readers. A bucket from upstream ``i`` also means that upstream is
    final through that bucket (every engine emits a series in bucket order). Buckets ``<=
    done`` are ignored as replays.
    """

    __slots__ = ("done", "final", "last", "missing", "pending", "seconds", "size", "width",
                 "windows")

    def __init__(self, upstreams: int, seconds: int, window: int | None = None) -> None:
        self.seconds = int(seconds)
        self.size = window
        self.width = upstreams
        self.final: list[float] = [_NEVER] * upstreams
        #: bucket -> one value per upstream (``_MISSING`` where it has none): buckets not final
        #: for every upstream yet.
        self.pending: dict[int, list[Any]] = {}
        self.last: list[Any] = [_MISSING] * upstreams
        self.missing = upstreams
        self.windows: list[deque[Any]] | None = (
            [deque(maxlen=window) for _ in range(upstreams)] if window else None
        )
        self.done: float = _NEVER

    # -- the API for engines ----------------------------------------------------------------
    def on_bucket(self, upstream: int, bucket: int, value: Any) -> list[tuple[int, Any]] | None:
        """A final bucket of upstream ``upstream``."""
        return self.push(upstream, ((bucket, value),), bucket)

    def on_watermark(self, upstream: int, watermark: float) -> list[tuple[int, Any]] | None:
        """Upstream ``upstream``'s watermark (epoch seconds; ``END`` when it has ended)."""
        return self.push(upstream, _NOTHING, final_through(watermark, self.seconds))

    def on_end(self, upstream: int) -> list[tuple[int, Any]] | None:
        """Upstream ``upstream`` has ended: all its buckets are final."""
        return self.push(upstream, _NOTHING, END)

    def push(
        self, upstream: int, buckets: Sequence[tuple[int, Any]], through: float
    ) -> list[tuple[int, Any]] | None:
        """Buckets of ``upstream`` (increasing) and its new *final through*, in one call."""
        done = self.done
        if buckets:
            pending = self.pending
            for b, value in buckets:
                if b > done:
                    row = pending.get(b)
                    if row is None:
                        row = pending[b] = [_MISSING] * self.width
                    row[upstream] = value
            if buckets[-1][0] > through:
                through = buckets[-1][0]
        final = self.final
        if through <= final[upstream]:
            return None
        final[upstream] = through
        frontier = min(final) if self.width > 1 else through
        if frontier <= done:
            return None
        self.done = frontier
        pending = self.pending
        if not pending:
            return []
        if len(pending) == 1:
            (b,) = pending
            if b > frontier:
                return []
            keys = [b]
        else:
            keys = sorted(b for b in pending if b <= frontier)
        ready: list[tuple[int, Any]] = []
        last = self.last
        windows = self.windows
        for b in keys:
            row = pending.pop(b)
            for i, value in enumerate(row):
                if value is not _MISSING:
                    if last[i] is _MISSING:
                        self.missing -= 1
                    last[i] = value
                    if windows is not None:
                        windows[i].append(value)
            if windows is not None:
                size = self.size
                if all(len(w) == size for w in windows):
                    ready.append((b, [list(w) for w in windows]))
            elif not self.missing:
                ready.append((b, last.copy()))
        return ready

    @property
    def watermark(self) -> float:
        """The node's own watermark in epoch seconds (end of its last final bucket)."""
        return (self.done + 1) * self.seconds if self.done not in (END, _NEVER) else self.done

    # -- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (values must be JSON values; ``[]`` marks "no value")."""
        return {
            "version": STATE_VERSION,
            "seconds": self.seconds,
            "window": self.size,
            "done": _enc(self.done),
            "final": [_enc(f) for f in self.final],
            "pending": [[b, [_held(v) for v in row]] for b, row in sorted(self.pending.items())],
            "last": [_held(v) for v in self.last],
            "windows": [list(w) for w in self.windows] if self.windows is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeAligner:
        self = cls(len(data["final"]), data["seconds"], data["window"])
        self.done = _dec(data["done"])
        self.final = [_dec(f) for f in data["final"]]
        self.pending = {int(b): [_unheld(v) for v in row] for b, row in data["pending"]}
        self.last = [_unheld(v) for v in data["last"]]
        self.missing = sum(1 for v in self.last if v is _MISSING)
        if data["windows"] is not None:
            self.windows = [deque(w, maxlen=self.size) for w in data["windows"]]
        return self


def _held(value: Any) -> list[Any]:
    return [] if value is _MISSING else [value]


def _unheld(held: list[Any]) -> Any:
    return held[0] if held else _MISSING


# -- run summary ----------------------------------------------------------------------------
@dataclass
class NodeSummary:
    """What one node did in a run."""

    events_in: int = 0
    late_events: int = 0
    buckets_out: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "events_in": self.events_in,
            "late_events": self.late_events,
            "buckets_out": dict(self.buckets_out),
        }


@dataclass
class RunSummary:
    """What a streaming run did: source events in, late events dropped, final buckets out."""

    pipeline: str
    engine: str
    nodes: dict[str, NodeSummary]
    elapsed_seconds: float = 0.0

    @property
    def events_in(self) -> int:
        return sum(n.events_in for n in self.nodes.values())

    @property
    def late_events(self) -> int:
        return sum(n.late_events for n in self.nodes.values())

    @property
    def buckets_out(self) -> int:
        return sum(sum(n.buckets_out.values()) for n in self.nodes.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "engine": self.engine,
            "events_in": self.events_in,
            "late_events": self.late_events,
            "buckets_out": self.buckets_out,
            "elapsed_seconds": round(self.elapsed_seconds, 6),
            "nodes": {name: n.to_dict() for name, n in self.nodes.items()},
        }


# -- the in-process runner ------------------------------------------------------------------
#: ``hook(node, args) -> value``: replaces how a node is invoked (the mock engine).
InvokeHook = Callable[["PlanNode", Sequence[Any]], Any]


class _Series:
    """One node's series at one interval, as the runner needs it on the hot path."""

    __slots__ = ("count", "interval", "key", "max_items", "name", "readers", "seconds", "ttl")

    def __init__(self, node: PlanNode, k: int) -> None:
        spec = node.series[k]
        self.name = node.name
        self.interval = spec.interval.value
        self.key = spec.key
        self.seconds = spec.seconds
        self.max_items = spec.max_items
        self.ttl = spec.ttl
        self.count = 0
        #: (reader's aligner, position among its upstreams, reader's series, reader's invoke)
        self.readers: list[tuple[NodeAligner, int, _Series, Callable[[Any], Any]]] = []


class StreamRunner:
    """Runs a plan's streaming semantics in one process.

    Feed it with :meth:`on_event` (a source's event), :meth:`end_source` and :meth:`finish`.
    Every final bucket is written to ``state`` (key and bounds of the node's series spec) and
    passed to ``on_output`` as an :class:`OutputEvent`. Nothing is looked up per event: series,
    readers and invokers are bound here.
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
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.plan = plan
        self.state = state
        self.on_output = on_output
        self.engine = engine
        self.batch = batch
        self._held: dict[_Series, list[Any]] = {}
        self._waiting = 0
        nodes = plan.nodes
        self.bucketers: list[SourceBucketer | None] = [None] * len(nodes)
        self.aligners: list[list[NodeAligner]] = [[] for _ in nodes]
        self.series: list[list[_Series]] = [
            [_Series(n, k) for k in range(len(n.series))] for n in nodes
        ]
        for node in nodes:
            invoke = node.invoke if invoke_hook is None else _hooked(invoke_hook, node)
            if not node.upstreams:
                lateness = getattr(node.node, "allowed_lateness", None)
                self.bucketers[node.index] = SourceBucketer(
                    [s.seconds for s in node.series], lateness
                )
                continue
            for j, spec in enumerate(node.series):
                aligner = NodeAligner(len(node.upstreams), spec.seconds, node.window_size(spec))
                self.aligners[node.index].append(aligner)
                for pos, up in enumerate(node.upstream_index):
                    k = next(k for k, s in enumerate(nodes[up].series) if s.seconds == spec.seconds)
                    self.series[up][k].readers.append(
                        (aligner, pos, self.series[node.index][j], invoke)
                    )
        self.started = time.perf_counter()

    def on_event(self, source: int, ts: float, value: Any) -> None:
        """One event of the source at plan index ``source``."""
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
        if self._waiting >= self.batch:
            self.flush()

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
        for series, (buckets, through) in held.items():
            self._emit(series, buckets, through)

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
        return RunSummary(self.plan.pipeline, self.engine, nodes,
                          time.perf_counter() - self.started)

    def _emit(self, series: _Series, buckets: list[tuple[int, Any]], through: float) -> None:
        # An explicit stack instead of recursion: any DAG depth works.
        stack = [(series, buckets, through)]
        write = self._write
        while stack:
            series, buckets, through = stack.pop()
            if buckets:
                write(series, buckets)
            for aligner, pos, target, invoke in series.readers:
                ready = aligner.push(pos, buckets, through)
                if ready is None:
                    continue
                if ready:
                    out = []
                    try:
                        for b, args in ready:
                            out.append((b, invoke(args)))
                    except Exception as error:
                        # The failing node's buckets before the failing one are kept.
                        if out:
                            write(target, out)
                        if isinstance(error, NodeExecutionError):
                            raise
                        raise NodeExecutionError(target.name, error) from error
                    ready = out
                stack.append((target, ready, aligner.done))

    def _write(self, series: _Series, buckets: list[tuple[int, Any]]) -> None:
        write, on_output = self.state.write, self.on_output
        key, seconds = series.key, series.seconds
        max_items, ttl = series.max_items, series.ttl
        for b, value in buckets:
            end = float((b + 1) * seconds)
            write(key, end, value, max_items=max_items, ttl=ttl)
            if on_output is not None:
                on_output(OutputEvent(series.name, series.interval, end, value, b))
        series.count += len(buckets)


def _hooked(hook: InvokeHook, node: PlanNode) -> Callable[[Any], Any]:
    return lambda args: hook(node, args)


def drive(runner: StreamRunner, events: Iterable[tuple[int, float, Any]]) -> RunSummary:
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
    # Batched: the same steps as on_event, with the lookups hoisted out of the loop.
    handlers = [b.on_event if b is not None else None for b in runner.bucketers]
    hold, flush = runner.hold, runner.flush
    waiting = 0
    try:
        for index, ts, value in events:
            if ts is None:
                if value is None:
                    runner.end_source(index)
                else:
                    runner.on_watermark(index, value)
                waiting = 0
                continue
            closed = handlers[index](ts, value)  # type: ignore[misc]
            if closed:
                hold(index, closed)
            waiting += 1
            if waiting >= batch:
                flush()
                waiting = 0
    except Exception:
        # A source failed: the buckets that were final before it are written, as unbatched.
        flush()
        raise
    return runner.finish()


class OutputStream(Iterator[OutputEvent]):
    """The notebook form of a run: iterate final buckets as they are produced.

    ``summary`` is set once the iterator is exhausted.
    """

    def __init__(self, runner: StreamRunner, events: Iterable[tuple[int, float, Any]]) -> None:
        self.summary: RunSummary | None = None
        self._buffer: deque[OutputEvent] = deque()
        user = runner.on_output
        buffer = self._buffer

        def collect(event: OutputEvent) -> None:
            buffer.append(event)
            if user is not None:
                user(event)

        runner.on_output = collect
        self._runner = runner
        self._events = iter(events)

    def __next__(self) -> OutputEvent:
        buffer = self._buffer
        while not buffer:
            if self.summary is not None:
                raise StopIteration
            item = next(self._events, None)
            if item is None:
                self.summary = self._runner.finish()
            elif item[1] is None and item[2] is None:
                self._runner.end_source(item[0])
            elif item[1] is None:
                self._runner.on_watermark(item[0], item[2])
            else:
                self._runner.on_event(*item)
        return buffer.popleft()


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
) -> RunSummary:
    """Run ``plan``'s sources to their end in this process (the local engine's semantics).

    ``sources`` replaces named sources' inputs; ``events`` (``(source name, ts, value)`` in
    arrival order) replaces all of them; ``clock`` stamps values that come without a ts.
    ``batch`` propagates source buckets every that many events (default: ``AUTO_BATCH`` when
    every source's data is at hand, else 1 so live outputs are never held back); results do
    not depend on it.
    """
    if batch is None:
        batch = AUTO_BATCH if all_bounded(plan, sources=sources, events=events) else 1
    runner = StreamRunner(plan, state, on_output=on_output, invoke_hook=invoke_hook,
                          engine=engine, batch=batch)
    return drive(runner, merged_events(plan, sources=sources, events=events, clock=clock))


def stream_in_process(
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
) -> OutputStream:
    """The iterator form of :func:`run_in_process`; work happens as you iterate."""
    if batch is None:
        batch = AUTO_BATCH if all_bounded(plan, sources=sources, events=events) else 1
    runner = StreamRunner(plan, state, on_output=on_output, invoke_hook=invoke_hook,
                          engine=engine, batch=batch)
    return OutputStream(runner, merged_events(plan, sources=sources, events=events, clock=clock))


class _Stop(Exception):
    """Raised inside a threaded run when its reader went away."""


class ThreadedOutputStream(Iterator[OutputEvent]):
    """Iterator form of any engine's ``run(on_output=...)``: the run happens in a thread and
    hands final buckets over a bounded queue. Closing the iterator (or dropping it) stops the
    run at its next output. ``summary`` is set once the iterator is exhausted; an error of the
    run is raised by ``next``."""

    def __init__(self, run: Callable[[Callable[[OutputEvent], None]], Any],
                 on_output: Callable[[OutputEvent], None] | None = None) -> None:
        self.summary: Any = None
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1024)
        self._stopped = threading.Event()
        self._finished = False

        def emit(event: OutputEvent) -> None:
            if on_output is not None:
                on_output(event)
            while True:
                if self._stopped.is_set():
                    raise _Stop
                try:
                    self._queue.put(("event", event), timeout=0.1)
                    return
                except queue.Full:
                    continue

        def work() -> None:
            try:
                result = run(emit)
            except _Stop:
                return
            except BaseException as error:  # handed to the reader's thread
                self._queue.put(("error", error))
                return
            self._queue.put(("done", result))

        self._thread = threading.Thread(target=work, name="qmtl-stream", daemon=True)
        self._thread.start()

    def __next__(self) -> OutputEvent:
        if self._finished:
            raise StopIteration
        kind, item = self._queue.get()
        if kind == "event":
            return item  # type: ignore[no-any-return]
        self._finished = True
        if kind == "error":
            raise item
        self.summary = item
        raise StopIteration

    def close(self) -> None:
        """Stop the run (at its next output) and release the thread."""
        self._stopped.set()
        self._finished = True

    def __del__(self) -> None:
        self._stopped.set()
