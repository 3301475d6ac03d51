"""Slots: the unit of a node's pending state, and where event time is applied.

A task (one node in one worker, :mod:`qmtl_engine_kafka._task`) keeps one slot per assigned
input; each slot is saved to the pending store after every batch and loaded by whichever worker
is assigned that input next:

- :class:`NodeSlot` — a computing node: one :class:`~qmtl.streaming.NodeAligner` per interval
  over all its upstreams' output topics (the ``range`` assignor gives them to one member); it
  calls the node's function for every ready bucket (once, in a one-shot run);
- :class:`SourceSlot` — one input partition of a source (an *origin*) with its
  :class:`~qmtl.streaming.SourceBucketer`: with one partition its final buckets are the
  source's series, with more they go to the merge topic as partials;
- :class:`MergeSlot` — a multi-partition source's merge topic: bucket ``b`` is final once every
  partition is final through ``b``; its value is the latest event by ts, ties to the higher
  partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from qmtl.errors import ValueEncodeError
from qmtl.plan import PlanNode
from qmtl.streaming import END, NodeAligner, SourceBucketer
from qmtl_engine_kafka import envelope as envelopes
from qmtl_engine_kafka._batch import NEVER, Batch, Emitter, decode_through, encode_through
from qmtl_engine_kafka._context import RunContext
from qmtl_engine_kafka.envelope import Envelope
from qmtl_engine_kafka.topics import merge_topic


class Task(Protocol):
    """What a slot reads of its task (:class:`qmtl_engine_kafka._task.Task`)."""

    @property
    def node(self) -> PlanNode: ...
    @property
    def ctx(self) -> RunContext: ...
    @property
    def partitions(self) -> int: ...


__all__ = ["MergeSlot", "NodeFailed", "NodeSlot", "Slot", "SourceSlot"]

_UNSET: Any = object()
_SKIPPED: Any = object()


def _history_windows(
    ctx: RunContext, node: PlanNode, args: list[Any], now: float
) -> list[Any] | None:
    """One-shot windows as :func:`qmtl.engine.execute_plan` reads them: each upstream's last N
    values at the node's smallest interval up to this run's bucket, this run's value last."""
    spec = min(node.series, key=lambda s: s.seconds)
    size = node.window_size(spec)
    assert size is not None
    end = spec.bucket_end(now)
    windows = []
    for name, current in zip(node.upstreams, args, strict=True):
        key = ctx.plan.by_name[name].spec(spec.interval).key
        items = [i for i in ctx.state.read(key, count=size, end_ts=end) if i["timestamp"] != end]
        values = [i["value"] for i in reversed(items[: size - 1])] + [current]
        if len(values) < size:
            return None
        windows.append(values)
    return windows


class NodeFailed(Exception):
    """A node's function raised: the batch stops there (buckets before it stay)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class Slot:
    """Pending state for one assigned input (a partition, or all of a node's upstreams)."""

    name = "slot"
    token: str | None = None  #: this worker's claim on the slot (see pending.py: fencing)

    def __init__(self, task: Task) -> None:
        self.task = task
        self.offsets: dict[str, int] = {}

    def handle(self, env: Envelope, partition: int, batch: Batch) -> None:
        raise NotImplementedError

    def finish_batch(self, batch: Batch) -> None:
        """After the batch's messages: announce watermarks."""

    def dump(self) -> dict[str, Any]:
        raise NotImplementedError

    def load(self, data: dict[str, Any]) -> None:
        raise NotImplementedError


class NodeSlot(Slot):
    """A computing node: one NodeAligner per interval over its upstreams' output topics."""

    def __init__(self, task: Task) -> None:
        super().__init__(task)
        node = task.node
        plan = task.ctx.plan
        self.emitter = Emitter(task.ctx, node)
        self.oneshot = task.ctx.oneshot
        # One-shot: windows come from the state's history (as in execute_plan), not a buffer.
        self.aligners = [
            NodeAligner(
                len(node.upstreams),
                spec.seconds,
                None if self.oneshot else node.window_size(spec),
                spec.calendar,
            )
            for spec in node.series
        ]
        self.value: Any = _UNSET  # one-shot: the node's one value, computed once
        #: upstream name -> [(position, {interval: aligner index})]
        self.readers: dict[str, list[int]] = {}
        for pos, name in enumerate(node.upstreams):
            self.readers.setdefault(name, []).append(pos)
        self.by_interval = {spec.interval.value: k for k, spec in enumerate(node.series)}
        self.ended = [False] * len(node.upstreams)
        self.failed: str | None = None
        self.upstream_nodes = [plan.by_name[u] for u in node.upstreams]

    def handle(self, env: Envelope, partition: int, batch: Batch) -> None:
        if self.failed is not None or self.emitter.ended:
            return
        positions = self.readers.get(env.node)
        if positions is None:
            return
        kind = env.kind
        if kind == "event":
            k = self.by_interval.get(env.interval)  # type: ignore[arg-type]
            if k is None or env.bucket is None:
                return  # an interval this node does not run at
            for pos in positions:
                self._push(batch, k, pos, ((env.bucket, env.value),), env.bucket)
        elif kind == "watermark":
            k = self.by_interval.get(env.interval)  # type: ignore[arg-type]
            if k is None or env.watermark is None:
                return
            through = self.aligners[k].calendar.through(env.watermark)
            for pos in positions:
                self._push(batch, k, pos, (), through)
        else:  # end
            error = env.value.get("error") if isinstance(env.value, dict) else None
            for pos in positions:
                self.ended[pos] = True
            if error is not None:
                # An upstream failed: this node stops where it is, as the whole run does.
                self.failed = f"upstream '{env.node}' failed"
                self.emitter.end(batch, {"error": self.failed, "upstream_failed": env.node})
                return
            for k in range(len(self.aligners)):
                for pos in positions:
                    self._push(batch, k, pos, (), END)
            if all(self.ended):
                self.emitter.end(batch, {})

    def _push(
        self, batch: Batch, k: int, pos: int, buckets: Sequence[tuple[int, Any]], through: float
    ) -> None:
        aligner = self.aligners[k]
        ready = aligner.push(pos, buckets, through)
        if ready is None:
            return
        if ready and self.oneshot is not None:
            ready = self._once(ready)
        elif ready:
            invoke = self.task.node.invoke
            computed = []
            for b, args in ready:
                try:
                    computed.append((b, invoke(args)))
                except Exception as error:
                    self._emit(batch, k, computed, NEVER)
                    raise NodeFailed(error) from error
            ready = computed
        self._emit(batch, k, ready, aligner.done)

    def _emit(
        self, batch: Batch, k: int, buckets: Sequence[tuple[int, Any]], through: float
    ) -> None:
        """Emit; a value the codec refuses fails the node, as a raising function does (the
        buckets before it are emitted and written)."""
        try:
            self.emitter.emit(batch, k, buckets, through)
        except ValueEncodeError as error:
            raise NodeFailed(error) from error

    def _once(self, ready: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
        """One-shot: compute the node once (inputs, windows from history, warm-up skip)."""
        assert self.oneshot is not None
        node = self.task.node
        if self.value is _UNSET:
            _bucket, args = ready[-1]
            if node.name in self.oneshot.inputs:
                self.value = self.oneshot.inputs[node.name]
            else:
                if node.window is not None:
                    args = _history_windows(self.task.ctx, node, args, self.oneshot.now)
                    if args is None:
                        self.value = _SKIPPED  # warm-up: not run, absent from results
                if self.value is _UNSET:
                    try:
                        self.value = node.invoke(args)
                    except Exception as error:
                        raise NodeFailed(error) from error
        if self.value is _SKIPPED:
            return []
        return [(b, self.value) for b, _args in ready]

    def fail(self, batch: Batch, error: BaseException) -> None:
        self.failed = f"{type(error).__name__}: {error}"
        stats: dict[str, Any] = {"error": self.failed}
        if isinstance(error, ValueEncodeError):  # rebuilt as itself by a remote collector
            stats["value_error"] = error.fields()
        self.emitter.end(batch, stats)

    def finish_batch(self, batch: Batch) -> None:
        if not self.emitter.ended:
            self.emitter.watermarks(batch)

    def dump(self) -> dict[str, Any]:
        return {
            "offsets": self.offsets,
            "aligners": [a.to_dict() for a in self.aligners],
            "ended": self.ended,
            "failed": self.failed,
            "emitter": self.emitter.dump(),
        }

    def load(self, data: dict[str, Any]) -> None:
        self.offsets = data["offsets"]
        self.aligners = [
            NodeAligner.from_dict(a, spec.calendar)
            for a, spec in zip(data["aligners"], self.task.node.series, strict=True)
        ]
        self.ended = data["ended"]
        self.failed = data["failed"]
        self.emitter.load(data["emitter"])


class SourceSlot(Slot):
    """One input partition of a source: its events bucketed (the partition is an origin)."""

    def __init__(self, task: Task, partition: int) -> None:
        super().__init__(task)
        self.partition = partition
        node = task.node
        lateness = getattr(node.node, "allowed_lateness", None)
        self.calendars = [s.calendar for s in node.series]
        self.bucketer = SourceBucketer([s.seconds for s in node.series], lateness, self.calendars)
        self.direct = task.partitions == 1
        self.emitter = Emitter(task.ctx, node)  # used when direct
        self.ended = False
        self.origin = str(partition)
        self.merge = merge_topic(task.ctx.pipeline, node.name)
        self.intervals = [s.interval.value for s in node.series]
        self.told: list[float] = [NEVER] * len(node.series)  # partials: last announced

    def handle(self, env: Envelope, partition: int, batch: Batch) -> None:
        if self.ended:
            return
        kind = env.kind
        if kind == "event":
            value = env.value if self.direct else (env.ts, env.value)
            closed = self.bucketer.on_event(env.ts, value)
        elif kind == "watermark":
            closed = self.bucketer.on_watermark(
                env.watermark if env.watermark is not None else env.ts
            )
        else:
            closed = self.bucketer.flush()
            self.ended = True
        if closed:
            for k, buckets, through in closed:
                self._out(batch, k, buckets, through)
        if self.ended:
            stats = {"events": self.bucketer.events, "late": self.bucketer.late}
            if self.direct:
                self.emitter.end(batch, stats)
            else:
                batch.ends.append(
                    (
                        self.merge,
                        envelopes.encode(
                            Envelope(
                                self.task.ctx.pipeline,
                                self.task.node.name,
                                0.0,
                                stats,
                                "",
                                None,
                                None,
                                None,
                                "end",
                                self.origin,
                                1,
                                self.task.ctx.run,
                            )
                        ),
                    )
                )

    def _out(self, batch: Batch, k: int, buckets: list[tuple[int, Any]], through: float) -> None:
        if self.direct:
            self.emitter.emit(batch, k, buckets, through)
            return
        ctx, name, interval = self.task.ctx, self.task.node.name, self.intervals[k]
        for b, (ts, value) in buckets:
            batch.messages.append(
                (
                    self.merge,
                    envelopes.encode(
                        Envelope(
                            ctx.pipeline,
                            name,
                            ts,
                            value,
                            "",
                            interval,
                            b,
                            None,
                            "event",
                            self.origin,
                            1,
                            ctx.run,
                        )
                    ),
                )
            )
        if buckets and buckets[-1][0] > self.told[k]:
            self.told[k] = buckets[-1][0]
        if through > self.told[k] and through != END:
            wm = self.calendars[k].end(through)
            batch.messages.append(
                (
                    self.merge,
                    envelopes.encode(
                        Envelope(
                            ctx.pipeline,
                            name,
                            wm,
                            None,
                            "",
                            interval,
                            None,
                            wm,
                            "watermark",
                            self.origin,
                            1,
                            ctx.run,
                        )
                    ),
                )
            )
            self.told[k] = through

    def finish_batch(self, batch: Batch) -> None:
        if self.direct and not self.emitter.ended:
            self.emitter.watermarks(batch)

    def dump(self) -> dict[str, Any]:
        return {
            "offsets": self.offsets,
            "bucketer": self.bucketer.to_dict(),
            "ended": self.ended,
            "emitter": self.emitter.dump(),
            "told": [encode_through(x) for x in self.told],
        }

    def load(self, data: dict[str, Any]) -> None:
        self.offsets = data["offsets"]
        self.bucketer = SourceBucketer.from_dict(data["bucketer"], self.calendars)
        self.ended = data["ended"]
        self.emitter.load(data["emitter"])
        self.told = [decode_through(x) for x in data["told"]]


class MergeSlot(Slot):
    """Merges a multi-partition source's per-partition buckets into its one series.

    Rule: bucket ``b`` of the source is final once every input partition is final through
    ``b`` (the source's watermark is the minimum over its partitions); its value is the last
    event in ``b`` by ts across partitions, a tie going to the higher partition number (within
    one partition, ties go by arrival, as for a single stream).
    """

    def __init__(self, task: Task) -> None:
        super().__init__(task)
        node = task.node
        self.emitter = Emitter(task.ctx, node)
        self.origins = [str(p) for p in range(task.partitions)]
        self.by_interval = {spec.interval.value: k for k, spec in enumerate(node.series)}
        self.calendars = [s.calendar for s in node.series]
        n = len(node.series)
        self.final: list[dict[str, float]] = [dict.fromkeys(self.origins, NEVER) for _ in range(n)]
        self.done: list[float] = [NEVER] * n
        self.pending: list[dict[int, tuple[float, int, Any]]] = [{} for _ in range(n)]
        self.ended: dict[str, dict[str, Any]] = {}

    def handle(self, env: Envelope, partition: int, batch: Batch) -> None:
        origin = env.origin
        if origin not in self.final[0] or self.emitter.ended:
            return
        if env.kind == "event":
            k = self.by_interval.get(env.interval)  # type: ignore[arg-type]
            if k is None or env.bucket is None:
                return
            b = env.bucket
            if b > self.done[k]:
                rank = (env.ts, int(origin))
                held = self.pending[k].get(b)
                if held is None or rank >= (held[0], held[1]):
                    self.pending[k][b] = (env.ts, int(origin), env.value)
            self._advance(batch, k, origin, b)
        elif env.kind == "watermark":
            k = self.by_interval.get(env.interval)  # type: ignore[arg-type]
            if k is None or env.watermark is None:
                return
            self._advance(batch, k, origin, self.calendars[k].through(env.watermark))
        else:
            self.ended[origin] = env.value if isinstance(env.value, dict) else {}
            for k in range(len(self.calendars)):
                self._advance(batch, k, origin, END)
            if len(self.ended) == len(self.origins):
                stats = {
                    "events": sum(s.get("events", 0) for s in self.ended.values()),
                    "late": sum(s.get("late", 0) for s in self.ended.values()),
                }
                self.emitter.end(batch, stats)

    def _advance(self, batch: Batch, k: int, origin: str, through: float) -> None:
        final = self.final[k]
        if through <= final[origin]:
            return
        final[origin] = through
        frontier = min(final.values())
        if frontier <= self.done[k]:
            return
        self.done[k] = frontier
        pending = self.pending[k]
        ready = sorted(b for b in pending if b <= frontier)
        self.emitter.emit(batch, k, [(b, pending.pop(b)[2]) for b in ready], frontier)

    def finish_batch(self, batch: Batch) -> None:
        if not self.emitter.ended:
            self.emitter.watermarks(batch)

    def dump(self) -> dict[str, Any]:
        return {
            "offsets": self.offsets,
            "emitter": self.emitter.dump(),
            "final": [{o: encode_through(x) for o, x in f.items()} for f in self.final],
            "done": [encode_through(x) for x in self.done],
            "pending": [
                [[b, ts, o, v] for b, (ts, o, v) in sorted(p.items())] for p in self.pending
            ],
            "ended": self.ended,
        }

    def load(self, data: dict[str, Any]) -> None:
        self.offsets = data["offsets"]
        self.emitter.load(data["emitter"])
        self.final = [{o: decode_through(x) for o, x in f.items()} for f in data["final"]]
        self.done = [decode_through(x) for x in data["done"]]
        self.pending = [{int(b): (ts, o, v) for b, ts, o, v in p} for p in data["pending"]]
        self.ended = data["ended"]
