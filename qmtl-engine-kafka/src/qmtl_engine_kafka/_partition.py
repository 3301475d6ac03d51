"""A shard-topic partition a worker owns: the runs on it, their shards, and saving them.

Pending state lives in the pending store (:mod:`qmtl.pending`) under the scope
``{shard topic}/{partition}``: part ``offset`` holds the next offset to apply, part
``run:{run}`` one snapshot per shard of that run on this partition. On assignment a worker
claims the scope (a fresh owner token, fencing out a previous owner that was merely paused) and
starts reading at the saved offset; a run's part is loaded when its first message arrives. After
every batch :meth:`Partition.save` writes the touched shards and the next offset in one fenced
call. When every shard of a run on the partition has ended, the run's part is replaced by a
tombstone (``~end``), so a late duplicate cannot bring the run back; idle parts expire
(``DEFAULT_TTL``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from qmtl.pending import DEFAULT_TTL, PendingStore
from qmtl.state import StateBackend
from qmtl.warm import Cuts
from qmtl_engine_kafka._layout import Layout
from qmtl_engine_kafka._once import OnceShard
from qmtl_engine_kafka._shard import ShardRun
from qmtl_engine_kafka._wire import LIVE_RUN

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["Partition", "RunOnPartition"]

_END = "~end"


class RunOnPartition:
    """One run's shards on one partition (created lazily, restored from their snapshots)."""

    def __init__(
        self,
        layout: Layout,
        partition: int,
        run: str,
        namespace: str,
        saved: dict[str, bytes],
        state: StateBackend,
        store: PendingStore | None = None,
        topic: str = "",
    ) -> None:
        self.store = store
        self.topic = topic
        self._record: str | None = None
        self.layout = layout
        self.partition = partition
        self.run = run
        self.namespace = namespace
        self.saved = saved
        self.state = state
        self.shards: dict[int, ShardRun] = {}
        self.once: dict[int, OnceShard] = {}
        self.touched: set[int] = set()
        #: ``(node, error)`` of shards restored stopped on their own node's failure
        self.restored_failed: list[tuple[str, str]] = []
        #: whether the run reads its nodes' outputs (its messages say so)
        self.outputs = True
        #: whether a shard without saved state continues the namespace's history (a warm
        #: start: the run's messages say so; a deployment's setting for the live run)
        self.warm = False

    def shard(self, index: int) -> ShardRun:
        found = self.shards.get(index)
        if found is None:
            found = self.shards[index] = ShardRun(
                self.layout, index, self.run, self.namespace, self.state
            )
            blob = self.saved.pop(self.layout.plan.shards[index].id, None)
            if blob is None and self.warm:
                found.outputs = self.outputs or found.run == LIVE_RUN  # what history computes
                found.warm_start(self.record())
            if blob is not None:
                found.restore(blob)
                failed = found.failed
                if self.run == LIVE_RUN and failed is not None and "upstream_failed" not in failed:
                    self.restored_failed.append((failed["node"], failed["error"]))
        found.outputs = self.outputs or found.run == LIVE_RUN
        self.touched.add(index)
        return found

    def record(self) -> str:
        """The run's warm-start cuts (:meth:`qmtl.warm.Cuts.record`), the same for every shard
        of the run whenever it starts: a finite run's caller notes them before it publishes;
        a deployment's first fresh shard records them for good (until ``reset``)."""
        if self._record is not None:
            return self._record
        store, topic = self.store, self.topic
        name = f"warm:{self.run}:{self.namespace}"
        found = store.recall(topic, name) if store is not None else None
        if found is None:
            found = Cuts(self.layout.namespaced(self.namespace), self.state).record()
            if store is not None and self.run == LIVE_RUN:
                found = store.remember(topic, name, found)  # the first worker's cuts win
            elif store is not None:
                store.note(topic, name, found, DEFAULT_TTL)
        self._record = found
        return found

    def once_shard(self, index: int) -> OnceShard:
        """The shard of a one-shot run (:mod:`qmtl_engine_kafka._once`)."""
        found = self.once.get(index)
        if found is None:
            found = self.once[index] = OnceShard(
                self.layout, index, self.run, self.namespace, self.state
            )
            blob = self.saved.pop(self.layout.plan.shards[index].id, None)
            if blob is not None:
                found.restore(blob)
        self.touched.add(index)
        return found

    def get(self, index: int) -> ShardRun | OnceShard:
        found = self.shards.get(index)
        return found if found is not None else self.once[index]

    def of_node(self, name: str) -> ShardRun:
        """The shard computing node ``name`` (a source of this partition)."""
        return self.shard(self.layout.plan.shard_of[self.layout.index[name]])

    @property
    def ended(self) -> bool:
        on_here = self.layout.on_partition.get(self.partition, ())
        done = 0
        for i in on_here:
            found = self.shards.get(i) or self.once.get(i)
            if found is None or not (found.ended or found.reported):
                return False
            done += 1
        return done > 0


class Partition:
    """A shard-topic partition owned by this worker (``token`` fences its saves)."""

    def __init__(
        self,
        layout: Layout,
        store: PendingStore,
        scope: str,
        partition: int,
        token: str,
        state: StateBackend,
    ) -> None:
        self.layout = layout
        self.store = store
        self.state = state
        self.scope = scope
        self.partition = partition
        self.token = token
        store.claim(scope, token)
        position = store.load(scope, "offset")
        saved = position.get("next")
        #: next offset to apply; messages below it are already in the saved state
        self.next_offset = int(saved) if saved is not None else -1
        skip = position.get("skip")
        #: ``(offset, steps)``: the message at ``offset`` is applied up to ``steps`` steps
        #: (a time slice cut it; see :mod:`qmtl_engine_kafka._apply`)
        self.resume: tuple[int, int] | None = (
            (int(skip.split(b":")[0]), int(skip.split(b":")[1])) if skip else None
        )
        self._saved_position = (self.next_offset, self.resume)
        self.runs: dict[str, RunOnPartition] = {}
        self.gone: set[str] = set()  #: runs ended here (tombstoned)

    def run(self, run: str, namespace: str) -> RunOnPartition | None:
        """The run's state here, loaded on first use; ``None`` when it ended already."""
        found = self.runs.get(run)
        if found is not None:
            return found
        if run in self.gone:
            return None
        saved = self.store.load(self.scope, f"run:{run}")
        if _END in saved:
            self.gone.add(run)
            return None
        found = self.runs[run] = RunOnPartition(
            self.layout,
            self.partition,
            run,
            namespace,
            saved,
            self.state,
            self.store,
            self.scope.rpartition("/")[0],
        )
        return found

    def reloaded(self, token: str) -> Partition:
        """This partition as saved: what was applied since the last save is dropped (the
        failure policy replays it), under a fresh owner token."""
        return Partition(self.layout, self.store, self.scope, self.partition, token, self.state)

    def stopped(self) -> Iterator[tuple[str, str]]:
        """``(node, error)`` of the live run's shards restored from saved state that had
        stopped on their own node's failure (each reported once)."""
        live = self.runs.get(LIVE_RUN)
        if live is not None and live.restored_failed:
            found, live.restored_failed = live.restored_failed, []
            yield from found

    def touched(self) -> Iterator[tuple[RunOnPartition, ShardRun | OnceShard]]:
        for state in self.runs.values():
            for index in state.touched:
                yield state, state.get(index)

    def save(self) -> bool:
        """Save every touched shard and the next offset (one fenced call); ``False`` when
        another worker claimed the partition meanwhile."""
        parts: dict[str, dict[str, bytes]] = {}
        drop: list[str] = []
        finished: list[str] = []
        for run, state in self.runs.items():
            if not state.touched:
                continue
            if state.ended:
                drop.append(f"run:{run}")
                parts[f"run:{run}"] = {_END: str(time.time()).encode()}
                finished.append(run)
                continue
            ids = self.layout.plan.shards
            parts[f"run:{run}"] = {
                ids[i].id: state.get(i).snapshot() for i in sorted(state.touched)
            }
        position = (self.next_offset, self.resume)
        if position != self._saved_position:
            skip = b"" if self.resume is None else f"{self.resume[0]}:{self.resume[1]}".encode()
            parts["offset"] = {"next": str(self.next_offset).encode(), "skip": skip}
        if not parts and not drop:
            return True
        if not self.store.save(self.scope, self.token, parts, drop):
            return False
        self._saved_position = position
        for state in self.runs.values():
            state.touched.clear()
        for run in finished:
            del self.runs[run]
            self.gone.add(run)
        return True
