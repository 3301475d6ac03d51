"""The local engine: runs a pipeline in one process, no server.

Plugins are resolved before the run and every node's call is pre-bound in the plan, so the hot
loop does no lookups, no JSON and no logging.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from qmtl.engine import EngineBase, execute_plan
from qmtl.errors import PipelineTimeoutError, QmtlError
from qmtl.plan import ExecutionPlan
from qmtl.state import BucketWrite, SeriesKey, StateBackend


class LocalEngineSettings(BaseModel):
    """Options of the ``local`` engine."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    collect_stats: bool = Field(
        default=True, description="Record each node's wall time in execution_stats"
    )


class LocalExecutionEngine(EngineBase):
    """Runs every node in the calling process, in topological order.

    ``execution_stats`` describes the last one-shot run: ``node_times`` (seconds per node),
    ``total_nodes`` and ``total_time``.
    """

    name = "local"

    def __init__(self, options: LocalEngineSettings | None = None) -> None:
        self.options = options or LocalEngineSettings()
        self.execution_stats: dict[str, Any] = {}

    def execute(
        self,
        plan: ExecutionPlan,
        *,
        state: StateBackend,
        inputs: Mapping[str, Any] | None = None,
        ts: float | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        timings: dict[str, float] | None = {} if self.options.collect_stats else None
        if timeout is None:
            results = execute_plan(plan, state, inputs=inputs, ts=ts, timings=timings)
        else:
            results = _with_deadline(plan, state, inputs, ts, timings, timeout)
        if timings is not None:
            self.execution_stats = {
                "node_times": timings,
                "total_nodes": len(timings),
                "total_time": sum(timings.values()),
            }
        return results

    def run(self, plan: ExecutionPlan, *, state: StateBackend, **options: Any) -> Any:
        from qmtl_engine_local.streaming import run_stream

        return run_stream(plan, state, **options)


class _StopWrites:
    """A state backend view that refuses writes once a run has timed out, so nothing is
    recorded after the caller was told the run failed."""

    def __init__(self, state: StateBackend, stopped: threading.Event) -> None:
        self._state = state
        self._stopped = stopped

    def write(self, key: SeriesKey, timestamp: float, value: Any, **kwargs: Any) -> None:
        if not self._stopped.is_set():
            self._state.write(key, timestamp, value, **kwargs)

    def write_many(self, writes: Iterable[BucketWrite]) -> None:
        if not self._stopped.is_set():
            self._state.write_many(writes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._state, name)


def _with_deadline(
    plan: ExecutionPlan,
    state: StateBackend,
    inputs: Mapping[str, Any] | None,
    ts: float | None,
    timings: dict[str, float] | None,
    timeout: float,
) -> dict[str, Any]:
    """Run in a worker thread; after ``timeout`` raise naming the node that was running.

    Python cannot pre-empt a running function: the worker thread finishes the node it is in,
    then stops before the next one, and records nothing more.
    """
    stopped = threading.Event()
    running: list[str | None] = [None]
    outcome: dict[str, Any] = {}

    def on_node(name: str | None) -> bool:
        if stopped.is_set():
            return False
        running[0] = name
        return True

    def work() -> None:
        try:
            outcome["results"] = execute_plan(
                plan,
                _StopWrites(state, stopped),
                inputs=inputs,
                ts=ts,
                on_node=on_node,
                timings=timings,
            )
        except QmtlError as error:
            outcome["error"] = error
        except BaseException as error:  # re-raised in the caller's thread below
            outcome["error"] = error

    worker = threading.Thread(target=work, name=f"qmtl-{plan.pipeline}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        stopped.set()
        raise PipelineTimeoutError(plan.pipeline, running[0], timeout)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["results"]  # type: ignore[no-any-return]
