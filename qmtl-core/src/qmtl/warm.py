"""Warm start: a run that continues the history in its state backend instead of starting cold.

A new deployment (changed code after an upgrade, or a fresh one after its pending state is gone)
or an incremental job (each day's data on top of yesterday's) gets the outputs an uninterrupted
run over all the data would have given, from the first new bucket: windows are full and as-of
joins have their last values at once. :func:`warm_start` seeds a fresh
:class:`~qmtl.stream_runner.StreamRunner` from the stored history, every engine alike (the local
engine's ``run(warm_start=True)``, the Kafka engine's shards).

The rule, per series (a node at one interval):

- its **cut** is the newest bucket it has stored. A node with no history of its own (a changed
  node: new code is a new node id, hence a new series) takes the lowest cut of its upstreams,
  so its series starts right after what history covers;
- a **source** treats every bucket up to its cut as final: an event before that bucket's end is
  late (counted and dropped, never merged into a stored bucket);
- a **node** is seeded as if it had just computed its cut: each upstream's stored values at
  buckets up to the cut give its as-of value and its window (the upstream's last N values);
- then every upstream's stored buckets after a reader's cut are pushed to it, so a node whose
  history stops short of its upstreams' (its old deployment stopped between the two writes)
  computes the missing buckets first. A bucket arriving again from the run is a replay and is
  ignored, as on any engine.

A series with no history at all, and nodes whose upstreams have none, start cold, as without
warm start. History deeper than a series' ``max_history`` is gone: a window longer than it
starts partly cold.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from qmtl.codec import PLAIN_TYPES, check
from qmtl.errors import IntervalError, NodeExecutionError, ValueEncodeError

if TYPE_CHECKING:
    from qmtl.plan import ExecutionPlan, SeriesSpec
    from qmtl.state import StateBackend

#: a :class:`qmtl.stream_runner.StreamRunner` (not imported: it imports this module)
StreamRunner = Any

__all__ = ["Cuts", "warm_start"]

_NEVER = -float("inf")


def _bucket(spec: SeriesSpec, ts: float) -> int:
    """The bucket whose end (the stored timestamp) is ``ts``."""
    return spec.calendar.index(ts) - 1


class Cuts:
    """Where each series' history stops (see the module doc), read once per series.

    ``plan`` is the whole plan the history belongs to; a runner over part of it (a shard)
    passes its sub-plan's ``origin`` (local index -> index in ``plan``) to :func:`warm_start`.
    """

    def __init__(self, plan: ExecutionPlan, state: StateBackend, record: str | None = None) -> None:
        self.plan = plan
        self.state = state
        self._newest: dict[tuple[int, int], float] = {}
        self._cuts: dict[tuple[int, int], float] = {}
        if record is not None:
            for index, cuts in enumerate(json.loads(record)):
                for k, cut in enumerate(cuts):
                    self._cuts[(index, k)] = _NEVER if cut is None else float(cut)

    def record(self) -> str:
        """Every series' cut, as text for :class:`Cuts` ``(plan, state, record)``: a
        distributed engine takes the cuts once for a whole run, so parts of it that start
        later (a shard's first message) seed from the same history, not from what the run
        itself wrote meanwhile."""
        return json.dumps(
            [
                [
                    None if c == _NEVER else c
                    for c in (self.cut(n.index, k) for k in range(len(n.series)))
                ]
                for n in self.plan.nodes
            ]
        )

    def newest(self, index: int, k: int) -> float:
        """The newest stored bucket of node ``index``'s series ``k`` (``-inf``: none)."""
        found = self._newest.get((index, k))
        if found is None:
            spec = self.plan.nodes[index].series[k]
            rows = self.state.read(spec.key, count=1)
            found = float(_bucket(spec, rows[0]["timestamp"])) if rows else _NEVER
            self._newest[(index, k)] = found
        return found

    def cut(self, index: int, k: int) -> float:
        """The bucket series ``k`` of node ``index`` continues after."""
        found = self._cuts.get((index, k))
        if found is not None:
            return found
        found = self.newest(index, k)
        node = self.plan.nodes[index]
        if found == _NEVER and node.upstream_index:
            seconds = node.series[k].seconds
            found = min(self.cut(up, _at(self.plan, up, seconds)) for up in node.upstream_index)
        self._cuts[(index, k)] = found
        return found

    def values(self, index: int, k: int, through: float, count: int) -> list[Any]:
        """Up to ``count`` stored values of the series at buckets ``<= through``, oldest
        first."""
        spec = self.plan.nodes[index].series[k]
        rows = self.state.read(spec.key, count=count, end_ts=spec.calendar.end(through))
        return [row["value"] for row in reversed(rows)]

    def after(self, index: int, k: int, cut: float) -> list[tuple[int, Any]]:
        """The stored ``(bucket, value)`` pairs of the series after bucket ``cut``, oldest
        first."""
        spec = self.plan.nodes[index].series[k]
        start = None if cut == _NEVER else spec.calendar.end(cut)
        rows = self.state.read(spec.key, start_ts=start)
        return [(_bucket(spec, row["timestamp"]), row["value"]) for row in reversed(rows)]


def _at(plan: ExecutionPlan, index: int, seconds: int) -> int:
    """The position of ``plan.nodes[index]``'s series of ``seconds`` (a built plan has it)."""
    node = plan.nodes[index]
    for k, spec in enumerate(node.series):
        if spec.seconds == seconds:
            return k
    raise IntervalError(
        f"Node '{node.name}' keeps no {seconds}s series, which a node reading it needs; add "
        "that interval to it"
    )


def warm_start(
    runner: StreamRunner,
    state: StateBackend,
    *,
    plan: ExecutionPlan | None = None,
    origin: Sequence[int] | None = None,
    record: str | None = None,
) -> Cuts:
    """Seed ``runner`` (fresh, before its first event) from the history in ``state`` and
    compute what history alone makes computable (see the module doc). ``plan`` / ``origin``:
    the whole plan and the runner's local -> global node indices, when the runner runs part
    of it; ``record``: the run's cuts (:meth:`Cuts.record`) instead of history's newest now.
    Returns the cuts used."""
    whole = plan if plan is not None else runner.plan
    where = list(origin) if origin is not None else list(range(len(runner.plan.nodes)))
    cuts = Cuts(whole, state, record)
    for local, node in enumerate(runner.plan.nodes):
        bucketer = runner.bucketers[local]
        if bucketer is not None:
            bucketer.seed([cuts.cut(where[local], k) for k in range(len(node.series))])
    # every aligner as if it had just computed its cut: as-of values and windows
    owner: dict[int, tuple[int, int]] = {}
    for reader, aligners in enumerate(runner.aligners):
        for j, aligner in enumerate(aligners):
            owner[id(aligner)] = (reader, j)
    readers = [
        (up, k, aligner, position, target, call)
        for up, series_list in enumerate(runner.series)
        for k, series in enumerate(series_list)
        for aligner, position, target, call in series.readers
    ]
    cut_of: dict[int, float] = {}
    history: dict[int, list[list[Any]]] = {}
    for up, k, aligner, position, _target, _call in readers:
        key = id(aligner)
        if key not in cut_of:
            reader, j = owner[key]
            cut_of[key] = cuts.cut(where[reader], j)
            history[key] = [[] for _ in range(aligner.width)]
        if cut_of[key] != _NEVER:
            size = aligner.size or 1
            history[key][position] = cuts.values(where[up], k, cut_of[key], size)
    for key, aligner in {id(r[2]): r[2] for r in readers}.items():
        if cut_of[key] != _NEVER and aligner.done == _NEVER:
            aligner.seed(cut_of[key], history[key])
    # then the stored buckets after each reader's cut, upstreams in plan order
    for up, k, aligner, position, target, call in readers:
        cut = cut_of[id(aligner)]
        if cut == _NEVER:
            continue
        stored = cuts.after(where[up], k, cut)
        if not stored:
            continue
        ready = aligner.push(position, stored, stored[-1][0])
        if ready:
            runner._propagate(target, _computed(target, call, ready, runner), aligner.done)
    runner._commit()
    return cuts


def _computed(
    target: Any, call: Any, ready: list[tuple[int, Any]], runner: StreamRunner
) -> list[tuple[int, Any]]:
    """The values of the buckets history made computable (a failure names the node, as in a
    run)."""
    out: list[tuple[int, Any]] = []
    try:
        for bucket, args in ready:
            value = call(*args)
            if runner.check_values and type(value) not in PLAIN_TYPES:
                check(value, node=target.name, interval=target.interval)
            out.append((bucket, value))
    except Exception as error:
        if out:
            runner._pending.append((target, out))
        runner._commit()
        if isinstance(error, NodeExecutionError | ValueEncodeError):
            raise
        raise NodeExecutionError(target.name, error) from error
    return out
