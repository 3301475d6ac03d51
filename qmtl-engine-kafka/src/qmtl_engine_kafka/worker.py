"""The Kafka engine's worker: each node a consumer group, batches committed after their effects.

A :class:`Worker` runs some (or all) nodes of one pipeline run. Every node is a task with its own
consumer in group ``qmtl.{pipeline}.{node}``:

- a **source** task reads its input topic ``qmtl.input.{pipeline}.{node}``. Each input partition
  is an *origin* with its own :class:`~qmtl.streaming.SourceBucketer`. With one input partition
  its final buckets are the source's series. With more, each origin's final buckets ("partials",
  carrying the ts of their last event) go to ``qmtl.merge.{pipeline}.{node}`` (one partition),
  which the same group also reads: the member holding it merges them (see :class:`_MergeSlot`);
- any other node's task reads its upstreams' output topics (one partition each, so the ``range``
  assignor gives all of them to the same member) and feeds one
  :class:`~qmtl.streaming.NodeAligner` per interval.

A task's final buckets are written to the state backend (``write_many``, one round trip per
batch) and produced to ``qmtl.output.{pipeline}.{node}`` as event envelopes, followed by a
watermark envelope when the node's final bucket advanced past its last event, and an ``end``
envelope (with the node's counts) once every input ended.

Per batch (messages applied for at most ``slice_s``; the consumer seeks back to the rest), in
this order: hand every output to the producer; write the buckets (overlapping the deliveries);
produce end markers, then flush; save the pending state (aligners/bucketers plus the next
offset of every input partition applied); commit those offsets. A crash anywhere replays the
batch from the saved offsets: messages below them are skipped (the pending state already holds
them), the rest recompute the same buckets, which overwrite themselves in the state backend and
are ignored by readers that already have them (a NodeAligner ignores buckets it has passed).
Because an end marker follows its batch's write, a node's end on Kafka implies its whole
history is stored, so a run that saw every end is complete.
"""

from __future__ import annotations

import math
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import structlog

from qmtl.errors import EngineError, QmtlError
from qmtl.plan import ExecutionPlan, PlanNode, SeriesSpec
from qmtl.state import BucketWrite, StateBackend
from qmtl.streaming import END, NodeAligner, SourceBucketer, final_through
from qmtl_engine_kafka import envelope as envelopes
from qmtl_engine_kafka._client import kafka_module, new_client
from qmtl_engine_kafka.dead_letter import DeadLetterQueue
from qmtl_engine_kafka.envelope import Envelope
from qmtl_engine_kafka.errors import EnvelopeError, PublishError
from qmtl_engine_kafka.pending import PendingStore
from qmtl_engine_kafka.settings import KafkaEngineSettings
from qmtl_engine_kafka.topics import PipelineTopics, _checked, _part, pipeline_topics, sanitize

__all__ = ["RunContext", "Worker", "group_id", "merge_topic"]

log = structlog.get_logger(__name__)

_NEVER = -math.inf
HEARTBEAT_ENV = "QMTL_WORKER_HEARTBEAT_FILE"
#: The run of messages without a run id (external producers) and of ``qmtl worker`` by default.
LIVE_RUN = "live"


def merge_topic(pipeline: str, node: str) -> str:
    """``qmtl.merge.{pipeline}.{node}``: a multi-partition source's per-partition buckets."""
    topic = f"qmtl.merge.{_part(pipeline, 'pipeline')}.{_part(node, 'node')}"
    return _checked(topic, f"node '{node}' of pipeline '{pipeline}'")


def group_id(pipeline: str, node: str) -> str:
    """The consumer group of a node: ``qmtl.{pipeline}.{node}`` (sanitised)."""
    return f"qmtl.{sanitize(pipeline)}.{sanitize(node)}"


def _enc(x: float) -> Any:
    return "end" if x == END else (None if x == _NEVER else x)


def _dec(x: Any) -> float:
    return END if x == "end" else (_NEVER if x is None else x)


@dataclass
class RunContext:
    """Everything the tasks of one pipeline run share."""

    plan: ExecutionPlan
    run: str
    settings: KafkaEngineSettings
    state: StateBackend
    store: PendingStore
    input_partitions: dict[str, int]
    batch_size: int = 2000
    #: Called (in the worker's thread) with a node's name and the exception its fn raised.
    on_failure: Callable[[str, BaseException], None] | None = None
    #: Set for a one-shot run (:mod:`qmtl_engine_kafka.oneshot`): nodes compute once, the
    #: caller records the values in plan order.
    oneshot: OneShot | None = None
    topics: PipelineTopics = field(init=False)

    def __post_init__(self) -> None:
        self.topics = pipeline_topics(self.plan.pipeline, [n.name for n in self.plan.nodes])

    @property
    def pipeline(self) -> str:
        return self.plan.pipeline


@dataclass
class OneShot:
    """A one-shot run: ``inputs`` replace nodes' values; ``now`` is the run's timestamp."""

    inputs: dict[str, Any]
    now: float


class _Batch:
    """What one batch produces: output messages, bucket writes, and end markers (which are
    produced only once the writes are stored)."""

    __slots__ = ("ends", "messages", "writes")

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.writes: list[BucketWrite] = []
        self.ends: list[tuple[str, bytes]] = []


class _Emitter:
    """One node's output: final buckets to state and to its output topic, watermarks, end."""

    def __init__(self, ctx: RunContext, node: PlanNode) -> None:
        self.ctx = ctx
        self.node = node
        self.topic = ctx.topics.outputs[node.name]
        self.series: tuple[SeriesSpec, ...] = node.series
        self.intervals = [s.interval.value for s in node.series]
        self.counts = [0] * len(node.series)
        #: per series: the final-through readers were last told (by a bucket or a watermark)
        self.told: list[float] = [_NEVER] * len(node.series)
        self.through: list[float] = [_NEVER] * len(node.series)
        self.ended = False
        self.record = ctx.oneshot is None

    def emit(self, batch: _Batch, k: int, buckets: Sequence[tuple[int, Any]],
             through: float) -> None:
        spec = self.series[k]
        if buckets:
            # The hot path: envelopes as literal dicts (what envelopes.encode builds), with
            # encode() itself for the rare value JSON cannot hold as it is.
            seconds, key, max_items, ttl = spec.seconds, spec.key, spec.max_items, spec.ttl
            interval = self.intervals[k]
            pipeline, name, node_id, run = (self.ctx.pipeline, self.node.name, self.node.node_id,
                                            self.ctx.run)
            messages, writes, topic = batch.messages, batch.writes, self.topic
            record = self.record
            dumps = orjson.dumps
            for b, value in buckets:
                end = float((b + 1) * seconds)
                if record:
                    writes.append(_new_write(BucketWrite, (key, end, value, max_items, ttl)))
                try:
                    if type(value) is float and value - value != 0:
                        raise TypeError("non-finite")
                    payload = dumps({
                        "v": 1, "kind": "event", "pipeline": pipeline, "node": name,
                        "node_id": node_id, "interval": interval, "ts": end, "bucket": b,
                        "watermark": None, "origin": None, "value": value, "run": run,
                    }, option=_DUMP_OPTIONS)
                except TypeError:
                    payload = envelopes.encode(Envelope(
                        pipeline, name, end, value, node_id, interval, b, None, "event", None, 1,
                        run))
                messages.append((topic, payload))
            self.counts[k] += len(buckets)
            last = buckets[-1][0]
            if last > self.told[k]:
                self.told[k] = last
        if through > self.through[k]:
            self.through[k] = through

    def watermarks(self, batch: _Batch) -> None:
        """Tell readers about final buckets past the last event sent (once per batch)."""
        for k, through in enumerate(self.through):
            if through > self.told[k] and through != END:
                seconds = self.series[k].seconds
                wm = float((through + 1) * seconds)
                batch.messages.append((self.topic, envelopes.encode(Envelope(
                    self.ctx.pipeline, self.node.name, wm, None, self.node.node_id,
                    self.intervals[k], None, wm, "watermark", None, 1, self.ctx.run,
                ))))
                self.told[k] = through

    def end(self, batch: _Batch, stats: dict[str, Any]) -> None:
        self.ended = True
        value = {"buckets": dict(zip(self.intervals, self.counts, strict=True)), **stats}
        batch.ends.append((self.topic, envelopes.encode(Envelope(
            self.ctx.pipeline, self.node.name, 0.0, value, self.node.node_id, None, None, None,
            "end", None, 1, self.ctx.run,
        ))))

    def dump(self) -> dict[str, Any]:
        return {"counts": self.counts, "told": [_enc(x) for x in self.told],
                "through": [_enc(x) for x in self.through], "ended": self.ended}

    def load(self, data: dict[str, Any]) -> None:
        self.counts = list(data["counts"])
        self.told = [_dec(x) for x in data["told"]]
        self.through = [_dec(x) for x in data["through"]]
        self.ended = data["ended"]


_UNSET: Any = object()
_new_write = tuple.__new__
_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_SKIPPED: Any = object()


def _history_windows(ctx: RunContext, node: PlanNode, args: list[Any], now: float
                     ) -> list[Any] | None:
    """One-shot windows as :func:`qmtl.engine.execute_plan` reads them: each upstream's last N
    values at the node's smallest interval up to this run's bucket, this run's value last."""
    spec = min(node.series, key=lambda s: s.seconds)
    size = node.window_size(spec)
    assert size is not None
    end = float((int(now // spec.seconds) + 1) * spec.seconds)
    windows = []
    for name, current in zip(node.upstreams, args, strict=True):
        key = ctx.plan.by_name[name].spec(spec.interval).key
        items = [i for i in ctx.state.read(key, count=size, end_ts=end) if i["timestamp"] != end]
        values = [i["value"] for i in reversed(items[: size - 1])] + [current]
        if len(values) < size:
            return None
        windows.append(values)
    return windows


class _NodeFailed(Exception):
    """A node's function raised: the batch stops there (buckets before it stay)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


# -- slots: the unit of pending state ------------------------------------------------------
class _Slot:
    """Pending state for one assigned input (a partition, or all of a node's upstreams)."""

    name = "slot"
    token: str | None = None  #: this worker's claim on the slot (see pending.py: fencing)

    def __init__(self, task: _Task) -> None:
        self.task = task
        self.offsets: dict[str, int] = {}

    def handle(self, env: Envelope, partition: int, batch: _Batch) -> None:
        raise NotImplementedError

    def finish_batch(self, batch: _Batch) -> None:
        """After the batch's messages: announce watermarks."""

    def dump(self) -> dict[str, Any]:
        raise NotImplementedError

    def load(self, data: dict[str, Any]) -> None:
        raise NotImplementedError


class _NodeSlot(_Slot):
    """A computing node: one NodeAligner per interval over its upstreams' output topics."""

    def __init__(self, task: _Task) -> None:
        super().__init__(task)
        node = task.node
        plan = task.ctx.plan
        self.emitter = _Emitter(task.ctx, node)
        self.oneshot = task.ctx.oneshot
        # One-shot: windows come from the state's history (as in execute_plan), not a buffer.
        self.aligners = [
            NodeAligner(len(node.upstreams), spec.seconds,
                        None if self.oneshot else node.window_size(spec))
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

    def handle(self, env: Envelope, partition: int, batch: _Batch) -> None:
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
            through = final_through(env.watermark, self.aligners[k].seconds)
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

    def _push(self, batch: _Batch, k: int, pos: int, buckets: Sequence[tuple[int, Any]],
              through: float) -> None:
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
                    self.emitter.emit(batch, k, computed, _NEVER)
                    raise _NodeFailed(error) from error
            ready = computed
        self.emitter.emit(batch, k, ready, aligner.done)

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
                        raise _NodeFailed(error) from error
        if self.value is _SKIPPED:
            return []
        return [(b, self.value) for b, _args in ready]

    def fail(self, batch: _Batch, error: BaseException) -> None:
        self.failed = f"{type(error).__name__}: {error}"
        self.emitter.end(batch, {"error": self.failed})

    def finish_batch(self, batch: _Batch) -> None:
        if not self.emitter.ended:
            self.emitter.watermarks(batch)

    def dump(self) -> dict[str, Any]:
        return {"offsets": self.offsets, "aligners": [a.to_dict() for a in self.aligners],
                "ended": self.ended, "failed": self.failed, "emitter": self.emitter.dump()}

    def load(self, data: dict[str, Any]) -> None:
        self.offsets = data["offsets"]
        self.aligners = [NodeAligner.from_dict(a) for a in data["aligners"]]
        self.ended = data["ended"]
        self.failed = data["failed"]
        self.emitter.load(data["emitter"])


class _SourceSlot(_Slot):
    """One input partition of a source: its events bucketed (the partition is an origin)."""

    def __init__(self, task: _Task, partition: int) -> None:
        super().__init__(task)
        self.partition = partition
        node = task.node
        lateness = getattr(node.node, "allowed_lateness", None)
        self.bucketer = SourceBucketer([s.seconds for s in node.series], lateness)
        self.direct = task.partitions == 1
        self.emitter = _Emitter(task.ctx, node)  # used when direct
        self.ended = False
        self.origin = str(partition)
        self.merge = merge_topic(task.ctx.pipeline, node.name)
        self.intervals = [s.interval.value for s in node.series]
        self.seconds = [s.seconds for s in node.series]
        self.told: list[float] = [_NEVER] * len(node.series)  # partials: last announced

    def handle(self, env: Envelope, partition: int, batch: _Batch) -> None:
        if self.ended:
            return
        kind = env.kind
        if kind == "event":
            value = env.value if self.direct else (env.ts, env.value)
            closed = self.bucketer.on_event(env.ts, value)
        elif kind == "watermark":
            closed = self.bucketer.on_watermark(env.watermark if env.watermark is not None
                                                else env.ts)
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
                batch.ends.append((self.merge, envelopes.encode(Envelope(
                    self.task.ctx.pipeline, self.task.node.name, 0.0, stats, "", None, None,
                    None, "end", self.origin, 1, self.task.ctx.run,
                ))))

    def _out(self, batch: _Batch, k: int, buckets: list[tuple[int, Any]], through: float
             ) -> None:
        if self.direct:
            self.emitter.emit(batch, k, buckets, through)
            return
        ctx, name, interval = self.task.ctx, self.task.node.name, self.intervals[k]
        for b, (ts, value) in buckets:
            batch.messages.append((self.merge, envelopes.encode(Envelope(
                ctx.pipeline, name, ts, value, "", interval, b, None, "event", self.origin, 1,
                ctx.run,
            ))))
        if buckets and buckets[-1][0] > self.told[k]:
            self.told[k] = buckets[-1][0]
        if through > self.told[k] and through != END:
            wm = float((through + 1) * self.seconds[k])
            batch.messages.append((self.merge, envelopes.encode(Envelope(
                ctx.pipeline, name, wm, None, "", interval, None, wm, "watermark", self.origin,
                1, ctx.run,
            ))))
            self.told[k] = through

    def finish_batch(self, batch: _Batch) -> None:
        if self.direct and not self.emitter.ended:
            self.emitter.watermarks(batch)

    def dump(self) -> dict[str, Any]:
        return {"offsets": self.offsets, "bucketer": self.bucketer.to_dict(),
                "ended": self.ended, "emitter": self.emitter.dump(),
                "told": [_enc(x) for x in self.told]}

    def load(self, data: dict[str, Any]) -> None:
        self.offsets = data["offsets"]
        self.bucketer = SourceBucketer.from_dict(data["bucketer"])
        self.ended = data["ended"]
        self.emitter.load(data["emitter"])
        self.told = [_dec(x) for x in data["told"]]


class _MergeSlot(_Slot):
    """Merges a multi-partition source's per-partition buckets into its one series.

    Rule: bucket ``b`` of the source is final once every input partition is final through
    ``b`` (the source's watermark is the minimum over its partitions); its value is the last
    event in ``b`` by ts across partitions, a tie going to the higher partition number (within
    one partition, ties go by arrival, as for a single stream).
    """

    def __init__(self, task: _Task) -> None:
        super().__init__(task)
        node = task.node
        self.emitter = _Emitter(task.ctx, node)
        self.origins = [str(p) for p in range(task.partitions)]
        self.by_interval = {spec.interval.value: k for k, spec in enumerate(node.series)}
        self.seconds = [s.seconds for s in node.series]
        n = len(node.series)
        self.final: list[dict[str, float]] = [dict.fromkeys(self.origins, _NEVER)
                                              for _ in range(n)]
        self.done: list[float] = [_NEVER] * n
        self.pending: list[dict[int, tuple[float, int, Any]]] = [{} for _ in range(n)]
        self.ended: dict[str, dict[str, Any]] = {}

    def handle(self, env: Envelope, partition: int, batch: _Batch) -> None:
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
            self._advance(batch, k, origin, final_through(env.watermark, self.seconds[k]))
        else:
            self.ended[origin] = env.value if isinstance(env.value, dict) else {}
            for k in range(len(self.seconds)):
                self._advance(batch, k, origin, END)
            if len(self.ended) == len(self.origins):
                stats = {"events": sum(s.get("events", 0) for s in self.ended.values()),
                         "late": sum(s.get("late", 0) for s in self.ended.values())}
                self.emitter.end(batch, stats)

    def _advance(self, batch: _Batch, k: int, origin: str, through: float) -> None:
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

    def finish_batch(self, batch: _Batch) -> None:
        if not self.emitter.ended:
            self.emitter.watermarks(batch)

    def dump(self) -> dict[str, Any]:
        return {
            "offsets": self.offsets, "emitter": self.emitter.dump(),
            "final": [{o: _enc(x) for o, x in f.items()} for f in self.final],
            "done": [_enc(x) for x in self.done],
            "pending": [[[b, ts, o, v] for b, (ts, o, v) in sorted(p.items())]
                        for p in self.pending],
            "ended": self.ended,
        }

    def load(self, data: dict[str, Any]) -> None:
        self.offsets = data["offsets"]
        self.emitter.load(data["emitter"])
        self.final = [{o: _dec(x) for o, x in f.items()} for f in data["final"]]
        self.done = [_dec(x) for x in data["done"]]
        self.pending = [{int(b): (ts, o, v) for b, ts, o, v in p} for p in data["pending"]]
        self.ended = data["ended"]


# -- tasks: one consumer per node ----------------------------------------------------------
class _Task:
    """One node of the run in this worker: its consumer, its slots, its batch loop."""

    def __init__(self, ctx: RunContext, node: PlanNode, kafka: Any, stats: dict[str, int]
                 ) -> None:
        self.ctx = ctx
        self.node = node
        self.kafka = kafka
        self.stats = stats
        self.source = not node.upstreams
        self.partitions = ctx.input_partitions.get(node.name, 1) if self.source else 1
        topics = ctx.topics
        if self.source:
            self.topics = [topics.inputs[node.name]]
            if self.partitions > 1:
                self.topics.append(merge_topic(ctx.pipeline, node.name))
        else:
            self.topics = list(dict.fromkeys(topics.outputs[u] for u in node.upstreams))
        self.merge = self.topics[1] if len(self.topics) > 1 and self.source else None
        self.group = group_id(ctx.pipeline, node.name)
        self.slots: dict[str, _Slot] = {}
        self.assigned: list[tuple[str, int]] = []
        #: longest a batch applies messages before it commits; the Worker sets it
        self.slice_s = ctx.settings.batch_time_s
        self.consumer = new_client("Consumer", ctx.settings, {
            "group.id": self.group,
            "client.id": f"qmtl-worker-{os.getpid()}-{node.name}"[:200],
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "range",
            "enable.partition.eof": False,
            "session.timeout.ms": int(ctx.settings.session_timeout_s * 1000),
            "heartbeat.interval.ms": max(100, int(ctx.settings.session_timeout_s * 1000) // 5),
            "max.poll.interval.ms": int(ctx.settings.max_poll_interval_s * 1000),
            "fetch.wait.max.ms": 10,
            "fetch.min.bytes": 1,
            "on_commit": self._committed,
        }, what=f"The Kafka worker of node '{node.name}'")
        self.consumer.subscribe(self.topics, on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_revoke)

    # rebalance callbacks run inside consume(), between batches
    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self.slots.clear()
        self.assigned = [(p.topic, p.partition) for p in partitions]
        log.info("qmtl.kafka.assigned", node=self.node.name, group=self.group,
                 partitions=[f"{t}/{p}" for t, p in self.assigned])

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self.slots.clear()
        self.assigned = []
        log.info("qmtl.kafka.revoked", node=self.node.name, group=self.group,
                 partitions=[f"{p.topic}/{p.partition}" for p in partitions])

    def _slot_name(self, topic: str, partition: int) -> str:
        if not self.source:
            return self.node.name
        if topic == self.merge:
            return f"{self.node.name}#merge"
        return f"{self.node.name}#{partition}"

    def _slot(self, topic: str, partition: int) -> _Slot:
        name = self._slot_name(topic, partition)
        slot = self.slots.get(name)
        if slot is None:
            if not self.source:
                slot = _NodeSlot(self)
            elif topic == self.merge:
                slot = _MergeSlot(self)
            else:
                slot = _SourceSlot(self, partition)
            slot.token = uuid.uuid4().hex
            store = self.ctx.store
            store.claim(self.ctx.pipeline, self.ctx.run, name, slot.token)
            data = store.load(self.ctx.pipeline, self.ctx.run, name)
            if data is not None:
                slot.load(data)
            slot.name = name
            self.slots[name] = slot
        return slot

    def poll(self, timeout: float) -> list[Any]:
        return self.consumer.consume(self.ctx.batch_size, timeout)  # type: ignore[no-any-return]

    def process(self, messages: list[Any], producer: Any, dlq: DeadLetterQueue,
                delivery_errors: list[str]) -> int:
        """Apply one batch and commit it; returns the number of messages applied.

        A batch applies messages for at most ``slice_s`` seconds (at least one message): the
        messages left are fetched again (the consumer seeks back to them) and applied in the
        worker's next round, after its other nodes have polled.
        """
        ctx = self.ctx
        run = ctx.run
        batch = _Batch()
        touched: dict[str, _Slot] = {}
        applied = 0
        max_bytes = ctx.settings.max_message_bytes
        failure: BaseException | None = None
        dead = dlq.count
        current: tuple[str, int] | None = None
        slot: _Slot | None = None
        where = ""
        offsets: dict[str, int] = {}
        applied_floor = 0
        parse, from_object = envelopes.parse, envelopes.from_object
        clock = time.monotonic
        deadline = clock() + self.slice_s
        rest: list[Any] = []
        for i, message in enumerate(messages):
            if i and clock() > deadline:
                rest = messages[i:]
                break
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise EngineError(f"The Kafka consumer of group '{self.group}' hit a fatal "
                                      f"error: {error.str()}")
                if error.code() != self.kafka.KafkaError._PARTITION_EOF:
                    self.stats["consume_errors"] += 1
                    log.warning("qmtl.kafka.consume_error", group=self.group,
                                error=error.str())
                continue
            partition = message.partition()
            if current is None or current[1] != partition or current[0] != message.topic():
                topic = message.topic()
                current = (topic, partition)
                where = f"{topic}/{partition}"
                slot = touched.get(where)
                if slot is None:
                    slot = touched[where] = self._slot(topic, partition)
                offsets = slot.offsets
                applied_floor = offsets.get(where, 0)
            assert slot is not None
            offset = message.offset()
            if offset < applied_floor:
                self.stats["replayed"] += 1
                continue  # already applied before a restart or rebalance
            offsets[where] = offset + 1
            if failure is not None:
                continue
            try:
                env = from_object(parse(message.value(), max_bytes))
            except EnvelopeError as e:
                dlq.send_envelope_error(message, e, node=self.node.name)
                continue
            if (env.run or LIVE_RUN) != run:
                self.stats["other_runs"] += 1
                continue
            applied += 1
            try:
                slot.handle(env, partition, batch)
            except _NodeFailed as failed:
                failure = failed.error
                assert isinstance(slot, _NodeSlot)
                slot.fail(batch, failure)
                log.error("qmtl.kafka.node_failed", node=self.node.name,
                          error=f"{type(failure).__name__}: {failure}")
        for slot in touched.values():
            slot.finish_batch(batch)
        # Outputs are handed to the producer first, so the state write's round trip overlaps
        # their delivery. End markers follow only once the write is stored: a node's end on
        # Kafka (what ends a run) implies its whole history is stored. Outputs that escaped
        # before a crash are recomputed and written by the next owner (this batch's pending
        # state was never saved) before it can reach the end marker.
        self._produce(batch.messages, producer)
        if batch.writes:
            ctx.state.write_many(batch.writes)
        if batch.ends:
            self._produce(batch.ends, producer)
        self._acknowledged(batch, producer, delivery_errors, dlq.count > dead, dlq)
        fenced = [name for name, slot in {s.name: s for s in touched.values()}.items()
                  if not ctx.store.save(ctx.pipeline, run, name, slot.dump(), slot.token)]
        if fenced:
            # Another worker claimed these inputs while this one was busy (it was paused past
            # the session timeout): drop the batch uncommitted; the new owner redoes it.
            self.stats["fenced"] += 1
            log.warning("qmtl.kafka.fenced", node=self.node.name, slots=fenced)
            self.slots.clear()
            return 0
        if rest:
            self._rewind(rest)
        self._commit(touched)
        self.stats["messages"] += applied
        self.stats["buckets"] += len(batch.writes)
        if failure is not None and ctx.on_failure is not None:
            ctx.on_failure(self.node.name, failure)
        return applied

    def _produce(self, messages: list[tuple[str, bytes]], producer: Any) -> None:
        produce = producer.produce
        for topic, payload in messages:
            try:
                produce(topic, payload, partition=0)
            except BufferError:  # the local queue is full: let deliveries drain, then retry
                while True:
                    producer.poll(0.05)
                    try:
                        produce(topic, payload, partition=0)
                        break
                    except BufferError:
                        continue
        producer.poll(0)

    def _acknowledged(self, batch: _Batch, producer: Any, errors: list[str], dead: bool,
                      dlq: DeadLetterQueue) -> None:
        if batch.messages or batch.ends or dead:
            remaining = producer.flush(self.ctx.settings.delivery_timeout_s + 5)
            if dead:
                dlq.flush()
            if remaining or errors:
                failed = list(errors)
                errors.clear()
                raise PublishError(
                    f"Node '{self.node.name}': {remaining} output message(s) unacknowledged, "
                    f"errors: {failed[:3]}; the batch will be replayed after a restart"
                )

    def _rewind(self, rest: list[Any]) -> None:
        """Seek back to the first of ``rest`` in each partition: the next poll returns them."""
        first: dict[tuple[str, int], int] = {}
        for message in rest:
            if message.error() is None:
                first.setdefault((message.topic(), message.partition()), message.offset())
        for (topic, partition), offset in first.items():
            try:
                self.consumer.seek(self.kafka.TopicPartition(topic, partition, offset))
            except self.kafka.KafkaException as e:
                # Going on would skip these messages until the next rebalance: stop instead
                # (a restarted worker resumes from the saved pending state).
                raise EngineError(
                    f"Node '{self.node.name}': could not seek {topic}/{partition} back to "
                    f"offset {offset} after a time-bounded batch: {e.args[0]}"
                ) from e

    def _commit(self, touched: dict[str, _Slot]) -> None:
        # The offsets the saved pending state holds, committed asynchronously: the pending
        # state is what a next owner trusts, so a failed commit (a rebalance started, the
        # coordinator moved) only means it skips a little more; _committed counts failures.
        tps = []
        for where, slot in touched.items():
            offset = slot.offsets.get(where)
            if offset is not None:
                topic, _, partition = where.rpartition("/")
                tps.append(self.kafka.TopicPartition(topic, int(partition), offset))
        if not tps:
            return
        try:
            self.consumer.commit(offsets=tps, asynchronous=True)
        except self.kafka.KafkaException as e:
            self._committed(e.args[0], tps)

    def _committed(self, error: Any, partitions: list[Any]) -> None:
        if error is not None and error.code() != self.kafka.KafkaError._NO_OFFSET:
            self.stats["commit_failures"] += 1
            log.warning("qmtl.kafka.commit_failed", group=self.group, error=error.str())

    def lag(self) -> int:
        """Messages waiting in this node's assigned partitions (best effort, no broker call
        per message: one cached watermark lookup per partition)."""
        total = 0
        tps = [self.kafka.TopicPartition(t, p) for t, p in self.assigned]
        if not tps:
            return 0
        try:
            positions = self.consumer.position(tps)
        except self.kafka.KafkaException:
            return -1
        for tp in positions:
            try:
                _low, high = self.consumer.get_watermark_offsets(tp, timeout=1.0, cached=False)
            except self.kafka.KafkaException:
                continue
            if tp.offset >= 0:
                total += max(0, high - tp.offset)
        return total

    def close(self) -> None:
        self.consumer.close()


class Worker:
    """Runs tasks for ``nodes`` (default: all) of one pipeline run in one thread.

    ``run_until(stop)`` polls every node's consumer in turn (batches of up to
    ``ctx.batch_size``), applies and commits each batch, logs processed counts and consumer lag
    every ``log_every_s``, and touches the heartbeat file (``QMTL_WORKER_HEARTBEAT_FILE``) from
    the loop. ``stop`` set: the current batch finishes and commits, then consumers close (they
    leave their groups, so their partitions move at once).
    """

    def __init__(self, ctx: RunContext, nodes: Iterable[str] | None = None, *,
                 log_every_s: float = 10.0, heartbeat_file: str | None = None) -> None:
        self.ctx = ctx
        self.kafka = kafka_module("The Kafka engine's worker")
        wanted = None if nodes is None else set(nodes)
        if wanted is not None:
            unknown = sorted(wanted - set(ctx.plan.by_name))
            if unknown:
                raise EngineError(f"Pipeline '{ctx.pipeline}' has no node(s) {unknown}; its "
                                  f"nodes are {sorted(ctx.plan.by_name)}")
        self.stats: Counter[str] = Counter()
        self.delivery_errors: list[str] = []
        self.producer = new_client("Producer", ctx.settings, {
            "linger.ms": ctx.settings.linger_ms,
            "message.timeout.ms": int(ctx.settings.delivery_timeout_s * 1000),
            "queue.buffering.max.messages": 1_000_000,
            "on_delivery": self._delivered,
        }, what=f"The Kafka worker of pipeline '{ctx.pipeline}'")
        self.dlq = DeadLetterQueue(self.producer, ctx.topics.dead_letter)
        self.tasks = [
            _Task(ctx, node, self.kafka, self.stats)
            for node in ctx.plan.nodes
            if wanted is None or node.name in wanted
        ]
        # A round polls every consumer once; its batches together must stay well inside
        # max.poll.interval.ms, or a consumer waiting its turn would leave its group.
        slice_s = min(ctx.settings.batch_time_s,
                      ctx.settings.max_poll_interval_s / (2 * max(1, len(self.tasks))))
        for task in self.tasks:
            task.slice_s = slice_s
        self.log_every_s = log_every_s
        heartbeat = heartbeat_file or os.environ.get(HEARTBEAT_ENV)
        self.heartbeat = Path(heartbeat) if heartbeat else None
        self.error: BaseException | None = None

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.delivery_errors.append(f"topic '{msg.topic()}': {err.str()}")

    def run_until(self, stop: threading.Event) -> None:
        """The poll loop; returns after ``stop`` is set (or raises what broke the worker)."""
        tasks = self.tasks
        idle_wait = self.ctx.settings.poll_interval_s
        last_log = last_beat = time.monotonic()
        processed_at_log = 0
        try:
            while not stop.is_set():
                busy = False
                for task in tasks:
                    messages = task.poll(0 if busy else idle_wait / max(1, len(tasks)))
                    if messages:
                        busy = True
                        task.process(messages, self.producer, self.dlq, self.delivery_errors)
                        if stop.is_set():
                            break
                now = time.monotonic()
                if self.heartbeat is not None and now - last_beat >= 1.0:
                    self._beat()
                    last_beat = now
                if now - last_log >= self.log_every_s:
                    processed = self.stats["messages"]
                    log.info("qmtl.kafka.worker_progress", pipeline=self.ctx.pipeline,
                             run=self.ctx.run, processed=processed,
                             rate=round((processed - processed_at_log) / (now - last_log), 1),
                             buckets=self.stats["buckets"], dead_letters=self.dlq.count,
                             lag={t.node.name: t.lag() for t in tasks})
                    processed_at_log, last_log = processed, now
        except BaseException as error:
            self.error = error
            raise
        finally:
            self.close()

    def _beat(self) -> None:
        assert self.heartbeat is not None
        try:
            self.heartbeat.touch()
        except OSError as error:
            log.warning("qmtl.kafka.heartbeat_failed", path=str(self.heartbeat),
                        error=str(error))

    def close(self) -> None:
        for task in self.tasks:
            try:
                task.close()
            except Exception as error:  # closing must reach every consumer
                log.warning("qmtl.kafka.close_failed", node=task.node.name, error=str(error))
        self.tasks = []
        self.producer.flush(5)


def topic_partitions(settings: KafkaEngineSettings, admin: Any, topics: Iterable[str]
                     ) -> dict[str, int]:
    """Partition count of each existing topic (metadata request bounded by connect timeout)."""
    kafka = kafka_module("The Kafka engine")
    try:
        metadata = admin.list_topics(timeout=settings.connect_timeout_s)
    except kafka.KafkaException as e:
        raise QmtlError(str(e)) from e
    return {t: len(metadata.topics[t].partitions) for t in topics if t in metadata.topics}
