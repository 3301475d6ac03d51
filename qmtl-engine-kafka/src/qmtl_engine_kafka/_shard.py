"""One shard of one run in a worker: the core's runner over the shard's nodes.

A :class:`ShardRun` is exactly what the local engine runs — a
:class:`~qmtl.stream_runner.StreamRunner` over the shard's sub-plan
(:func:`qmtl.subplans.shard_plan`) — fed with the messages of its partition: source events of
``run()``, events forwarded from input topics (through a :class:`~qmtl.streaming.MergedSource`
per source: the multi-partition merge rule), and the final buckets and watermarks of the
upstreams it reads from other shards. Buckets are written to the state backend in bulk as they
are computed (``write_many``); after each batch :meth:`ShardRun.collect` hands the worker what
the batch produced: outputs, the buckets and final-throughs its readers in other shards need,
and end markers once every node of the shard has ended.

A node that raises stops the shard (``NodeExecutionError`` from the runner): buckets before it
are kept, its readers in other shards are told it failed, and every node of the shard ends with
an error marker.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from qmtl import codec
from qmtl.errors import NodeExecutionError, ValueEncodeError
from qmtl.state import SeriesKey, StateBackend, column_writer
from qmtl.stream_runner import StreamRunner
from qmtl.streaming import END, MergedSource, OutputEvent
from qmtl.warm import warm_start
from qmtl_engine_kafka._layout import Layout
from qmtl_engine_kafka._wire import LIVE_RUN, check_size

__all__ = ["Produced", "ShardRun"]

#: Source buckets wait in the runner until the end of a worker's batch (results do not depend
#: on when they are propagated).
_HOLD = 1 << 40
_NEVER = -float("inf")
_SCALARS = frozenset({int, float, bool, type(None)})
#: Buckets written to the state backend at once while a batch is applied.
_WRITE_BATCH = 1024


def through_out(x: float) -> Any:
    return "end" if x == END else (None if x == _NEVER else x)


def through_in(x: Any) -> float:
    return END if x == "end" else (_NEVER if x is None else x)


class _Writes:
    """The runner's state backend: bucket writes go to the real one in bulk (``write_many``
    every ``_WRITE_BATCH`` buckets, the rest when the batch is collected), kept in columns so
    no object is made per bucket (a tuple per bucket held for a while costs the garbage
    collector more than the write). A value too large for one Kafka message fails its node
    here, before it is stored or sent."""

    __slots__ = (
        "count",
        "keys",
        "limit",
        "limits",
        "names",
        "stamps",
        "state",
        "ttls",
        "values",
        "write_state",
    )

    def __init__(self, state: StateBackend, names: dict[str, str], limit: int) -> None:
        self.state = state
        #: the runner checked every value (qmtl.codec) before it reached here
        self.write_state = column_writer(state, checked=True)
        self.names = names
        self.limit = limit
        self.count = 0  #: buckets written since the last collect
        self._reset()

    def _reset(self) -> None:
        self.keys: list[SeriesKey] = []
        self.stamps: list[float] = []
        self.values: list[Any] = []
        self.limits: list[int] = []
        self.ttls: list[int | None] = []

    def write(
        self, key: SeriesKey, timestamp: float, value: Any, *, max_items: int, ttl: int | None
    ) -> None:
        if type(value) not in _SCALARS:
            check_size(self.names[key.node_id], key.interval, value, self.limit)
        self.keys.append(key)
        self.stamps.append(timestamp)
        self.values.append(value)
        self.limits.append(max_items)
        self.ttls.append(ttl)
        if len(self.keys) >= _WRITE_BATCH:
            self.flush()

    def write_columns(
        self,
        keys: Sequence[SeriesKey],
        timestamps: Sequence[float],
        values: Sequence[Any],
        max_items: Sequence[int],
        ttls: Sequence[int | None],
    ) -> None:
        """The runner's bulk write (:func:`qmtl.state.column_writer`): :meth:`write` by
        columns."""
        names, limit = self.names, self.limit
        for key, value in zip(keys, values, strict=True):
            if type(value) not in _SCALARS:
                check_size(names[key.node_id], key.interval, value, limit)
        self.keys += keys
        self.stamps += timestamps
        self.values += values
        self.limits += max_items
        self.ttls += ttls
        if len(self.keys) >= _WRITE_BATCH:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered."""
        if self.keys:
            self.write_state(self.keys, self.stamps, self.values, self.limits, self.ttls)
            self._reset()


def _raise(error: BaseException) -> Callable[[], None]:
    """A step that raises ``error`` (so :meth:`ShardRun.guarded` records it)."""

    def step() -> None:
        raise error

    return step


class Produced:
    """What a worker's batch produced, grouped by destination (``(partition, run, ns)``)."""

    def __init__(self) -> None:
        self.written = 0  #: buckets written to the state backend
        self.events = 0  #: source events applied (late ones included)
        self.late = 0  #: source events dropped as late
        self.newest = _NEVER  #: the newest event time the batch's shards reached
        self.outputs: dict[tuple[int, str, str], list[list[Any]]] = defaultdict(list)
        self.cross: dict[tuple[int, str, str], list[list[Any]]] = defaultdict(list)
        self.ends: dict[tuple[int, str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
        self.live: list[OutputEvent] = []  #: the live run's outputs (sinks, seed topics)
        self.failures: list[tuple[str, BaseException]] = []
        #: one-shot runs: values for the caller, and for readers in other shards
        self.once_out: dict[tuple[int, str, str], dict[str, Any]] = {}
        self.once_cross: dict[tuple[int, str, str], dict[str, Any]] = {}


class ShardRun:
    """Shard ``shard`` of run ``run`` (history under ``namespace``); see the module doc."""

    def __init__(
        self, layout: Layout, shard: int, run: str, namespace: str, state: StateBackend
    ) -> None:
        self.layout = layout
        self.shard = layout.plan.shards[shard]
        self.run = run
        self.namespace = namespace
        self.partition = layout.shard_partition[shard]
        sub = layout.shard_plan(namespace, shard)
        self.sub = sub
        self.local = {g: i for i, g in enumerate(sub.origin)}
        self.writes = _Writes(state, layout.names, layout.limit)
        #: ``(node, interval, [(bucket, value)], [bucket end])`` of every bucket list written
        self.emitted: list[tuple[str, str, list[tuple[int, Any]], list[float]]] = []
        self.runner = StreamRunner(
            sub.plan,
            self.writes,  # type: ignore[arg-type]  # only write() is used
            remote=sub.remote,
            engine="kafka",
            batch=_HOLD,
            on_buckets=self._written,
        )
        self.merged: dict[int, MergedSource] = {}
        self.told: dict[tuple[int, int], float] = {}
        #: nodes of this shard read by other shards
        self.exported = {
            layout.plan.nodes[i].name for i in self.shard.nodes if i in layout.destinations
        }
        #: the run reads its outputs (set by the worker from the run's messages) or is live
        self.outputs = run == LIVE_RUN
        self.failed: dict[str, Any] | None = None  #: the end marker's error fields
        self.error: tuple[str, BaseException] | None = None
        self.reported = False  #: failure or end markers already produced
        self.ended = False
        #: local indices of the shard's sources
        self.sources = [
            self.local[i] for i in self.shard.nodes if not layout.plan.nodes[i].upstream_index
        ]
        #: ``(events, late)`` already counted in a batch's :class:`Produced`
        self.counted = (0, 0)
        self.state = state
        #: a warm start's sources: local index -> the newest stored bucket per interval
        self.seeded: dict[int, list[float]] = {}

    def warm_start(self, record: str) -> None:
        """Continue the history under the run's namespace instead of starting cold
        (:mod:`qmtl.warm`), from the run's cuts ``record``; a fresh shard only, before its
        first input."""
        plan = self.layout.namespaced(self.namespace)
        origin = self.sub.origin
        cuts = warm_start(self.runner, self.state, plan=plan, origin=origin, record=record)
        for local in self.sources:
            series = plan.nodes[origin[local]].series
            self.seeded[local] = [cuts.cut(origin[local], k) for k in range(len(series))]

    def _written(
        self, node: str, interval: str, buckets: list[tuple[int, Any]], ends: list[float]
    ) -> None:
        # the runner has just written these buckets
        self.writes.count += len(buckets)
        if self.outputs or node in self.exported:  # else nothing needs them after the write
            self.emitted.append((node, interval, buckets, ends))

    # -- input ------------------------------------------------------------------------------
    def _source(self, name: str) -> int:
        return self.local[self.layout.index[name]]

    def guarded(self, step: Callable[[], Any]) -> None:
        """Apply one input; a node that raises stops the shard (see the module doc)."""
        if self.failed is not None or self.ended:
            return
        try:
            step()
        except NodeExecutionError as error:
            cause = error.__cause__ or error
            self.failed = {"error": f"{type(cause).__name__}: {cause}", "node": error.node}
            self.error = (error.node, cause)
        except ValueEncodeError as error:  # a value the codec or one message cannot carry
            node = error.node or "?"
            self.failed = {"error": str(error), "node": node, "value_error": error.fields()}
            self.error = (node, error)

    def on_event(self, name: str, ts: float, value: Any) -> None:
        if self.failed is not None or self.ended:
            return
        try:
            self.runner.on_event(self.local[self.layout.index[name]], ts, value)
        except (NodeExecutionError, ValueEncodeError) as error:
            self.guarded(_raise(error))

    def on_watermark(self, name: str, watermark: float) -> None:
        index = self._source(name)
        self.guarded(lambda: self.runner.on_watermark(index, watermark))

    def end_source(self, name: str) -> None:
        index = self._source(name)
        if self.runner.bucketers[index] is not None and index not in self.merged:
            self.guarded(lambda: self.runner.end_source(index))

    def _merged(self, index: int, origin: str, count: int, keyed: bool) -> MergedSource:
        merged = self.merged.get(index)
        if merged is None:
            node = self.sub.plan.nodes[index]
            topic = origin.rpartition("/")[0]
            merged = self.merged[index] = MergedSource(
                [s.seconds for s in node.series],
                getattr(node.node, "allowed_lateness", None),
                [f"{topic}/{p}" for p in range(count)],
                keyed=keyed,
                calendars=[s.calendar for s in node.series],
            )
            if index in self.seeded:
                merged.seed(self.seeded[index])
        return merged

    def on_forwarded(
        self,
        name: str,
        origin: str,
        count: int,
        offsets: Sequence[int],
        stamps: Sequence[float],
        values: Sequence[Any],
        keyed: bool = False,
    ) -> None:
        """Consecutive events of source ``name`` forwarded from ``origin`` (an input partition
        of ``count``), at its ``offsets``: an offset applied already is dropped."""
        index = self._source(name)
        closed = self._merged(index, origin, count, keyed).on_events(
            origin, offsets, stamps, values
        )
        if closed:
            self.runner.hold(index, closed)

    def on_origin(
        self, name: str, origin: str, count: int, watermark: float | None, keyed: bool = False
    ) -> None:
        """Origin ``origin`` moved its watermark (``None``: it ended)."""
        index = self._source(name)
        merged = self._merged(index, origin, count, keyed)
        closed = merged.end(origin) if watermark is None else merged.on_watermark(origin, watermark)
        if closed:
            self.runner.hold(index, closed)

    def on_upstream(
        self, node: str, interval: str, buckets: list[Any], through: Any, failed: str | None
    ) -> None:
        if failed is not None:
            if self.failed is None and not self.ended:
                self.failed = {
                    "error": f"upstream '{failed}' failed",
                    "upstream_failed": failed,
                }
            return
        index = self.layout.index[node]
        k = self.layout.series[index][interval]
        local = self.local[index]
        pairs = [(b, v) for b, v in buckets]
        self.guarded(lambda: self.runner.on_upstream(local, k, pairs, through_in(through)))

    # -- after a batch -------------------------------------------------------------------------
    def _through(self, index: int, k: int) -> float:
        local = self.local[index]
        merged = self.merged.get(local)
        if merged is not None:
            return merged.final[k]
        bucketer = self.runner.bucketers[local]
        if bucketer is not None:
            return bucketer.final[k]
        return self.runner.aligners[local][k].done

    def _all_ended(self) -> bool:
        runner = self.runner
        for index in self.shard.nodes:
            local = self.local[index]
            merged = self.merged.get(local)
            if merged is not None:
                if not merged.ended:
                    return False
            elif runner.bucketers[local] is not None:
                if runner.bucketers[local].final[0] != END:  # type: ignore[union-attr]
                    return False
            elif any(a.done != END for a in runner.aligners[local]):
                return False
        return True

    def collect(self, produced: Produced, outputs: bool = True) -> None:
        """Hand over what the batch produced (see the module doc); ``outputs``: the run reads
        the nodes' outputs (a run without ``on_output`` only needs the history)."""
        if self.failed is None and not self.ended:
            self.guarded(self.runner.flush)
        key = (self.partition, self.run, self.namespace)
        layout = self.layout
        by_series: dict[tuple[str, str], list[tuple[int, Any]]] = defaultdict(list)
        if self.emitted:
            live = self.run == LIVE_RUN
            items = produced.outputs[key]
            for node, interval, buckets, ends in self.emitted:
                by_series[(node, interval)].extend(buckets)
                if outputs or live:
                    values = [v for _b, v in buckets]
                    items.append([node, interval, [b for b, _v in buckets], ends, values])
                if live:
                    produced.live.extend(
                        OutputEvent(node, interval, end, v, b)
                        for (b, v), end in zip(buckets, ends, strict=True)
                    )
            self.emitted.clear()
        self.writes.flush()
        produced.written += self.writes.count
        self.writes.count = 0
        self._progress(produced)
        if self.reported:
            return
        for index in self.shard.nodes:
            destinations = layout.destinations.get(index)
            if not destinations:
                continue
            exported = layout.plan.nodes[index]
            for k, spec in enumerate(exported.series):
                interval = spec.interval.value
                item: list[Any]
                if self.failed is not None:
                    origin = self.failed.get("node") or self.failed.get("upstream_failed")
                    item = [exported.name, interval, [], "end", origin]
                else:
                    through = self._through(index, k)
                    pairs = by_series.get((exported.name, interval), ())
                    if not pairs and through <= self.told.get((index, k), _NEVER):
                        continue
                    self.told[(index, k)] = through
                    sent = [[b, v] for b, v in pairs]
                    item = [exported.name, interval, sent, through_out(through), None]
                for partition in destinations:
                    produced.cross[(partition, self.run, self.namespace)].append(item)
        if self.failed is not None:
            self._report(produced, key)
            if self.error is not None:
                produced.failures.append(self.error)
        elif self._all_ended():
            self.ended = True
            self._report(produced, key)

    def _totals(self) -> tuple[int, int, float]:
        """Source events and late events so far, and the newest event time reached: the
        highest source event, else the end of the last final bucket of a node."""
        events = late = 0
        newest = _NEVER
        runner = self.runner
        for local in self.sources:
            merged = self.merged.get(local)
            if merged is not None:
                events, late = events + merged.events, late + merged.late
                for part in merged.parts.values():
                    newest = max(newest, part.watermark)
                continue
            bucketer = runner.bucketers[local]
            if bucketer is not None:
                events, late = events + bucketer.events, late + bucketer.late
                newest = max(newest, bucketer.watermark)
        if newest == _NEVER:
            for index in self.shard.nodes:
                for aligner in runner.aligners[self.local[index]]:
                    if _NEVER < aligner.done < END:
                        newest = max(newest, aligner.calendar.end(aligner.done))
        return events, late, newest

    def _progress(self, produced: Produced) -> None:
        events, late, newest = self._totals()
        produced.events += events - self.counted[0]
        produced.late += late - self.counted[1]
        self.counted = (events, late)
        if newest > produced.newest and newest != END:
            produced.newest = newest

    def _report(self, produced: Produced, key: tuple[int, str, str]) -> None:
        """End markers for every node of the shard (with the error when it failed)."""
        self.reported = True
        runner = self.runner
        ends = produced.ends[key]
        for index in self.shard.nodes:
            local = self.local[index]
            node = self.sub.plan.nodes[local]
            counts: dict[str, Any] = {
                "buckets": {s.interval: s.count for s in runner.series[local]}
            }
            merged = self.merged.get(local)
            source = merged if merged is not None else runner.bucketers[local]
            if source is not None:
                counts["events"], counts["late"] = source.events, source.late
            if self.failed is not None:
                failed = self.failed
                if "upstream_failed" in failed:
                    counts.update(failed)
                elif failed["node"] == node.name:
                    counts["error"] = failed["error"]
                else:
                    counts.update(error=f"shard stopped: '{failed['node']}' failed")
                    counts["upstream_failed"] = failed["node"]
            ends[node.name] = counts

    # -- persistence ---------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        return codec.encode(
            {
                "runner": self.runner.snapshot(),
                "merged": {str(i): m.to_dict() for i, m in self.merged.items()},
                "failed": self.failed,
                "reported": self.reported,
                "ended": self.ended,
            }
        )

    def restore(self, blob: bytes) -> None:
        data = codec.decode(blob)
        self.runner.restore(data["runner"])
        nodes = self.sub.plan.nodes
        self.merged = {
            int(i): MergedSource.from_dict(m, [s.calendar for s in nodes[int(i)].series])
            for i, m in data["merged"].items()
        }
        self.failed = data["failed"]
        self.reported = data["reported"]
        self.ended = data["ended"]
        self.counted = self._totals()[:2]
