"""The ``threads`` engine: independent branches of the DAG run on a thread pool.

The result of a one-shot run is exactly that of :func:`qmtl.engine.execute_plan` (the local
engine): the same results dict in the same order, the same history writes in the same order, and
on failure the same :class:`~qmtl.errors.NodeExecutionError` naming the node, with nothing
recorded from that node on. Only the *calls* of the users' functions overlap in time.

How: the calling thread is the coordinator. It starts a node on the pool once every upstream has
a value, and records finished nodes strictly in plan order (a node's writes wait until every
node before it in the plan has been recorded). All state-backend calls happen in the calling
thread, so a backend never sees concurrent use. A windowed node reads its upstreams' history, so
it starts only after those upstreams have been recorded.

When a node fails, nodes after it in the plan are not started; nodes before it still run (the
sequential engine would have run them), and the earliest failing node in plan order is the one
reported. A node after the failing one that was already running finishes, but its value is
discarded. Every value is checked with :func:`qmtl.engine.check_value` (the codec's type walk) in
the thread that computed it, so a value another engine could not carry fails here too, as the
:class:`~qmtl.errors.ValueEncodeError` naming the node (SPEC §5.4).

Streaming (:meth:`ThreadPoolEngine.run`) is delegated to the local engine: streaming output
depends only on event data, so there is nothing to gain from threads there.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from qmtl.engine import EngineBase, check_value
from qmtl.errors import NodeExecutionError, PipelineTimeoutError, ValueEncodeError
from qmtl.plan import ExecutionPlan, PlanNode
from qmtl.state import StateBackend

_MISSING: Any = object()

__all__ = ["ThreadPoolEngine", "ThreadsEngineSettings"]


class ThreadsEngineSettings(BaseModel):
    """Options of the ``threads`` engine (``engine_options=`` or ``QMTL_THREADS__MAX_WORKERS``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_workers: int = Field(
        default=4, ge=1, le=256, description="Threads that run node functions concurrently"
    )


class ThreadPoolEngine(EngineBase):
    """Runs independent nodes of a one-shot run concurrently on a thread pool.

    Worth it when node functions release the GIL (I/O, NumPy, pandas, network calls); results are
    identical to the local engine either way.
    """

    name = "threads"

    def __init__(self, options: ThreadsEngineSettings | None = None) -> None:
        self.options = options or ThreadsEngineSettings()

    def execute(
        self,
        plan: ExecutionPlan,
        *,
        state: StateBackend,
        inputs: Mapping[str, Any] | None = None,
        ts: float | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        now = time.time() if ts is None else float(ts)
        return _OneShot(plan, state, inputs or {}, now, self.options.max_workers).run(timeout)

    def run(self, plan: ExecutionPlan, *, state: StateBackend, **options: Any) -> Any:
        """Stream in event time: delegated to the local engine (same output by definition)."""
        from qmtl_engine_local import LocalExecutionEngine

        return LocalExecutionEngine().run(plan, state=state, **options)


def _checked(node: PlanNode, args: list[Any]) -> Any:
    """Call the node, then check its value (both in the pool's thread)."""
    value = node.invoke(args)
    check_value(node, value)
    return value


class _OneShot:
    """One ``execute`` call: scheduling state shared by the coordinator's helper methods."""

    def __init__(
        self,
        plan: ExecutionPlan,
        state: StateBackend,
        inputs: Mapping[str, Any],
        now: float,
        max_workers: int,
    ) -> None:
        self.plan = plan
        self.state = state
        self.inputs = inputs
        self.now = now
        self.max_workers = max_workers
        count = len(plan.nodes)
        self.values: list[Any] = [_MISSING] * count
        self.finished = [False] * count
        self.waiting = [len(node.upstream_index) for node in plan.nodes]
        self.readers: list[list[int]] = [[] for _ in range(count)]
        for node in plan.nodes:
            for upstream in node.upstream_index:
                self.readers[upstream].append(node.index)
        self.ready = [node.index for node in plan.nodes if not node.upstream_index]
        self.gated: list[int] = []  # windowed nodes waiting for their upstreams to be recorded
        self.running: dict[Future[Any], int] = {}
        self.failures: dict[int, BaseException] = {}
        self.stop_at = count  # index of the earliest failed node; nothing from it on runs
        self.recorded = 0  # nodes [0, recorded) have been recorded
        self.results: dict[str, Any] = {}
        self.bucket_ends: dict[int, float] = {}

    # -- the coordinator loop --------------------------------------------------------------
    def run(self, timeout: float | None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix=f"qmtl-{self.plan.pipeline}")
        abandon = False
        try:
            while True:
                self._start_ready(pool)
                if not self.running:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    abandon = True
                    raise PipelineTimeoutError(self.plan.pipeline, self._running_node(), timeout)  # type: ignore[arg-type]
                done, _ = wait(self.running, timeout=remaining, return_when=FIRST_COMPLETED)
                for future in done:
                    index = self.running.pop(future)
                    error = future.exception()
                    if error is None:
                        self._finish(index, future.result())
                    else:
                        self._fail(index, error)
        except BaseException:
            abandon = True
            raise
        finally:
            # On error or timeout, do not wait for functions that cannot be interrupted.
            pool.shutdown(wait=not abandon, cancel_futures=True)
        if self.stop_at < len(self.plan.nodes):
            raise self._error(self.stop_at)
        return self.results

    def _running_node(self) -> str | None:
        if not self.running:
            return None
        return self.plan.nodes[min(self.running.values())].name

    def _start_ready(self, pool: ThreadPoolExecutor) -> None:
        """Start every node that can start; nodes settled without a call settle here too."""
        while self.ready or self._ungate():
            index = heapq.heappop(self.ready)  # earliest in plan order first
            if index >= self.stop_at:
                continue
            node = self.plan.nodes[index]
            if node.name in self.inputs:
                try:
                    check_value(node, self.inputs[node.name])
                except ValueEncodeError as error:
                    self._fail(index, error)
                    continue
                self._finish(index, self.inputs[node.name])
                continue
            args = [self.values[i] for i in node.upstream_index]
            if any(arg is _MISSING for arg in args):
                self._finish(index, _MISSING)  # an upstream is warming up: so is this node
                continue
            if node.window is not None:
                if self.recorded <= max(node.upstream_index, default=-1):
                    self.gated.append(index)
                    continue
                windows = self._windows(node)
                if windows is None:
                    self._finish(index, _MISSING)  # warm-up: a window is not full yet
                    continue
                args = windows
            self.running[pool.submit(_checked, node, args)] = index

    def _ungate(self) -> bool:
        """Move windowed nodes whose upstreams are now recorded back to ``ready``."""
        opened = [
            i
            for i in self.gated
            if self.recorded > max(self.plan.nodes[i].upstream_index, default=-1)
        ]
        for index in opened:
            self.gated.remove(index)
            heapq.heappush(self.ready, index)
        return bool(opened)

    def _finish(self, index: int, value: Any) -> None:
        self.values[index] = value
        self.finished[index] = True
        for reader in self.readers[index]:
            self.waiting[reader] -= 1
            if self.waiting[reader] == 0:
                heapq.heappush(self.ready, reader)
        self._record()

    def _fail(self, index: int, error: BaseException) -> None:
        self.failures[index] = error
        self.stop_at = min(self.stop_at, index)
        self.ready = [i for i in self.ready if i < self.stop_at]
        heapq.heapify(self.ready)
        self.gated = [i for i in self.gated if i < self.stop_at]

    def _record(self) -> None:
        """Record finished nodes in plan order, up to the first unfinished or failed one."""
        nodes = self.plan.nodes
        while self.recorded < self.stop_at and self.finished[self.recorded]:
            node = nodes[self.recorded]
            value = self.values[node.index]
            self.recorded += 1
            if value is _MISSING:
                continue
            self.results[node.name] = value
            for spec in node.series:
                end = self.bucket_ends.get(spec.seconds)
                if end is None:
                    end = self.bucket_ends[spec.seconds] = spec.bucket_end(self.now)
                self.state.write(spec.key, end, value, max_items=spec.max_items, ttl=spec.ttl)

    def _error(self, index: int) -> BaseException:
        error = self.failures[index]
        if isinstance(error, NodeExecutionError | ValueEncodeError) or not isinstance(
            error, Exception
        ):
            return error  # not double-wrapped; KeyboardInterrupt and the like pass through
        wrapped = NodeExecutionError(self.plan.nodes[index].name, error)
        wrapped.__cause__ = error
        return wrapped

    def _windows(self, node: PlanNode) -> list[Any] | None:
        """Each upstream's last N values at the node's smallest interval, oldest first."""
        spec = min(node.series, key=lambda s: s.seconds)
        size = node.window_size(spec)
        assert size is not None
        end = spec.bucket_end(self.now)
        windows = []
        for upstream_index in node.upstream_index:
            key = self.plan.nodes[upstream_index].spec(spec.interval).key
            items = self.state.read(key, count=size, end_ts=end)
            if len(items) < size:
                return None
            windows.append([item["value"] for item in reversed(items)])
        return windows
