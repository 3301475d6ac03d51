"""Applying one shard-topic message to the shards of its partition, in time-bounded steps.

A message is cut into *steps* — one source event, or up to ``_BUCKETS_PER_STEP`` buckets of one
upstream series (with that chunk's last bucket as its final-through: the chunk is final) — and
applied step after step, computing as it goes (the runner is flushed every few steps). When the
batch's time slice runs out in the middle of a message, :meth:`Applier.apply` stops there and
says how many steps it applied: the worker saves that position with the partition's offset,
seeks back to the message, and the next batch resumes after those steps. So a message holding a
thousand events of a slow node never keeps a worker from polling past
``max_poll_interval_s``. The cut is a pure function of the message, so a replay after a crash
resumes at the same place.
"""

from __future__ import annotations

import time
from typing import Any

from qmtl_engine_kafka._layout import Layout
from qmtl_engine_kafka._partition import RunOnPartition
from qmtl_engine_kafka._shard import ShardRun
from qmtl_engine_kafka.errors import MalformedEnvelopeError

__all__ = ["Applier", "steps"]

_BUCKETS_PER_STEP = 32
#: The most steps between two flushes and time checks. Larger chunks (1,024 was tried) cost a
#: shard of many nodes more in garbage collection of the buckets held until the flush than
#: they save in calls (0.62 -> 1.0 us per node execution in bench_kafka_engine's chain).
_MAX_CHUNK = 256
Step = tuple[str, Any]


def steps(data: dict[str, Any]) -> list[Step] | int:
    """The steps of one message (see the module doc); for source events (``E``, ``F``) just
    their number: they are applied straight from the message's columns."""
    kind = data["k"]
    if kind in ("E", "F"):
        return len(data["t"])
    if kind == "B":
        cut: list[Step] = []
        for node, interval, buckets, through, failed in data["b"]:
            if len(buckets) <= _BUCKETS_PER_STEP:
                cut.append(("B", (node, interval, buckets, through, failed)))
                continue
            for start in range(0, len(buckets), _BUCKETS_PER_STEP):
                part = buckets[start : start + _BUCKETS_PER_STEP]
                last = start + _BUCKETS_PER_STEP >= len(buckets)
                cut.append(
                    (
                        "B",
                        (
                            node,
                            interval,
                            part,
                            through if last else part[-1][0],
                            failed if last else None,
                        ),
                    )
                )
        return cut
    return [(kind, data)]


class Applier:
    """Applies messages' steps to a partition's runs (one per worker)."""

    def __init__(self, layout: Layout, slice_s: float) -> None:
        self.layout = layout
        self.chunk = 16  #: steps between two flushes and time checks (adapts: up to 256)
        self.budget = slice_s / 8
        self.applied = 0  #: steps applied so far (events, bucket chunks, markers)

    def mine(self, state: RunOnPartition, source: str) -> ShardRun:
        """The shard computing ``source``, which must live on this message's partition."""
        layout = self.layout
        shard = layout.plan.shard_of[layout.index[source]]
        if layout.shard_partition[shard] != state.partition:
            raise MalformedEnvelopeError(
                f"Source '{source}' lives on partition {layout.shard_partition[shard]}, not "
                f"{state.partition}: the sender used another partition count"
            )
        return state.shard(shard)

    def apply(
        self,
        state: RunOnPartition,
        data: dict[str, Any],
        skip: int,
        deadline: float,
    ) -> int | None:
        """Apply ``data``'s steps after the first ``skip``; ``None`` when the message is done,
        else the number of its steps applied so far (the time slice ran out)."""
        todo = steps(data)
        total = todo if isinstance(todo, int) else len(todo)
        clock = time.monotonic
        done = skip
        fed: list[ShardRun] = []
        if isinstance(todo, int):  # one shard per source of the message, looked up once
            fed = [self.mine(state, name) for name in data["n"]]
        while done < total:
            began = clock()
            end = min(total, done + self.chunk)
            if isinstance(todo, int):
                self._events(data, fed, done, end)
            else:
                for step in todo[done:end]:
                    self._step(state, step)
            self.applied += end - done
            done = end
            for shard in fed:  # compute now: the time check below sees the work
                shard.guarded(shard.runner.flush)
            now = clock()
            if now - began > self.budget and self.chunk > 1:
                self.chunk = max(1, self.chunk // 8)
            elif now - began < self.budget / 16 and self.chunk < _MAX_CHUNK:
                self.chunk *= 2
            if done < total and now > deadline:
                return done
        return None

    @staticmethod
    def _events(data: dict[str, Any], shards: list[ShardRun], start: int, end: int) -> None:
        names, stamps, values = data["n"], data["t"], data["x"]
        at = data.get("i")  # absent: every event is of the one source
        if data["k"] == "E":
            for j in range(start, end):
                i = 0 if at is None else at[j]
                shards[i].on_event(names[i], stamps[j], values[j])
            return
        origin, count, keyed = data["o"], data["c"], bool(data.get("m"))
        offsets = data.get("f")
        if offsets is None:  # consecutive offsets from f0
            offsets = range(data["f0"], data["f0"] + len(stamps))
        while start < end:  # each run of one source's events at once
            i, stop = 0, end
            if at is not None and len(names) > 1:
                i, stop = at[start], start + 1
                while stop < end and at[stop] == i:
                    stop += 1
            shards[i].on_forwarded(
                names[i],
                origin,
                count,
                offsets[start:stop],
                stamps[start:stop],
                values[start:stop],
                keyed,
            )
            start = stop

    def _step(self, state: RunOnPartition, step: Step) -> None:
        kind, item = step
        layout = self.layout
        if kind == "B":
            node, interval, buckets, through, failed = item
            for index in layout.readers.get((layout.index[node], state.partition), ()):
                reader = state.shard(index)
                reader.on_upstream(node, interval, buckets, through, failed)
        elif kind == "W":
            self.mine(state, item["s"]).on_watermark(item["s"], item["w"])
        elif kind == "X":
            for source in item["s"]:
                self.mine(state, source).end_source(source)
        elif kind in ("OW", "OX"):
            watermark = item["w"] if kind == "OW" else None
            keyed = bool(item.get("m"))
            for source in item["s"]:
                shard = self.mine(state, source)
                shard.on_origin(source, item["o"], item["c"], watermark, keyed)
        elif kind == "1":
            for index in layout.on_partition.get(state.partition, ()):
                names = {layout.plan.nodes[i].name for i in layout.plan.shards[index].nodes}
                state.once_shard(index).start(
                    item["ts"],
                    {n: v for n, v in item["vals"].items() if n in names},
                    [n for n in item["in"] if n in names],
                    {n: m for n, m in item["fail"].items() if n in names},
                )
        elif kind == "1V":
            for index in layout.on_partition.get(state.partition, ()):
                state.once_shard(index).heard(item["vals"], item["skip"], item["fail"])
        else:
            raise MalformedEnvelopeError(f"Unknown message kind {kind!r}")
