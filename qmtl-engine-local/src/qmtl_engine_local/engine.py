"""The local engine: runs a pipeline in one process, no server.

Plugins are resolved before the run and every node's call is pre-bound in the plan, so the hot
loop does no lookups, no JSON and no logging (``debug=True`` trades that for a trace).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from qmtl.deadline import run_with_deadline
from qmtl.engine import EngineBase, execute_plan
from qmtl.errors import ConfigurationError
from qmtl.plan import ExecutionPlan
from qmtl.state import StateBackend
from qmtl.streaming import OutputEvent, RunSummary


class LocalEngineSettings(BaseModel):
    """Options of the ``local`` engine."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    collect_stats: bool = Field(
        default=True, description="Record each node's wall time in execution_stats"
    )
    check_values: bool = Field(
        default=True,
        description=(
            "Check every node output with qmtl.codec (a type walk): a value the Kafka engine "
            "or Redis could not carry raises ValueEncodeError here too; false skips it for speed"
        ),
    )
    debug: bool = Field(
        default=False,
        description="Trace one-shot runs: each node's time and value in execution_stats['trace'] "
        "and the log (event qmtl.local.node_executed, debug level), and a failing node's "
        "inputs in its NodeExecutionError",
    )
    columnar: bool = Field(
        default=False,
        description="Stream finite sources a chunk at a time over columns (needs numpy: "
        "qmtl-engine-local[columnar]); same results as event at a time",
    )
    chunk_size: int = Field(
        default=65_536, ge=1, description="Events per source per chunk on the columnar path"
    )


class LocalExecutionEngine(EngineBase):
    """Runs every node in the calling process, in topological order.

    ``execution_stats`` describes the last one-shot run: ``node_times`` (seconds per node),
    ``total_nodes`` and ``total_time``; with ``debug=True`` also ``trace``, one
    ``{"node", "seconds", "value"}`` per node in run order (``value`` is a short ``repr``).
    ``LocalExecutionEngine(debug=True)`` is the seed's spelling of
    ``LocalExecutionEngine(LocalEngineSettings(debug=True))``.
    """

    name = "local"

    def __init__(self, options: LocalEngineSettings | None = None, *, debug: bool = False) -> None:
        if debug:
            options = (options or LocalEngineSettings()).model_copy(update={"debug": True})
        self.options = options or LocalEngineSettings()
        self.debug = self.options.debug
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
        collect = self.options.collect_stats or self.debug
        timings: dict[str, float] | None = {} if collect else None
        trace: list[dict[str, Any]] | None = [] if self.debug else None
        checking = self.options.check_values
        if timeout is None:
            results = execute_plan(
                plan,
                state,
                inputs=inputs,
                ts=ts,
                timings=timings,
                trace=trace,
                check_values=checking,
            )
        else:
            results = run_with_deadline(
                plan.pipeline,
                timeout,
                lambda deadline: execute_plan(
                    plan,
                    deadline.state(state),
                    inputs=inputs,
                    ts=ts,
                    on_node=deadline.on_node,
                    timings=timings,
                    trace=trace,
                    check_values=checking,
                ),
            )
        if timings is not None:
            self.execution_stats = {
                "node_times": timings,
                "total_nodes": len(timings),
                "total_time": sum(timings.values()),
            }
            if trace is not None:
                self.execution_stats["trace"] = trace
        return results

    def run(
        self,
        plan: ExecutionPlan,
        *,
        state: StateBackend,
        on_output: Callable[[OutputEvent], None] | None = None,
        sources: Mapping[str, Any] | None = None,
        events: Iterable[tuple[str, Any, Any]] | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float | None = None,
        batch: int | None = None,
        check_values: bool | None = None,
        columnar: bool | None = None,
        chunk_size: int | None = None,
        warm_start: bool = False,
    ) -> RunSummary:
        """Stream the sources to their end in event time (:mod:`qmtl_engine_local.streaming`).

        ``batch`` propagates bounded sources' buckets every that many events (a speed knob;
        results do not depend on it). ``check_values`` (default: the engine's setting) checks
        every value with :func:`qmtl.codec.check`. ``columnar=True`` runs a chunk of
        ``chunk_size`` events at a time over columns (:mod:`qmtl_engine_local.columnar`; same
        results); both default to the engine's settings. ``warm_start=True`` continues the
        history in ``state`` instead of starting cold (:mod:`qmtl.warm`): windows and as-of
        joins are seeded from the stored buckets, and events in buckets history already holds
        are late.
        """
        from qmtl_engine_local.streaming import run_stream

        if columnar if columnar is not None else self.options.columnar:
            from qmtl_engine_local.columnar import run_columnar

            if warm_start:
                raise ConfigurationError(
                    "warm_start=True seeds the event-at-a-time path from history; the columnar "
                    "path starts cold: pass columnar=False with warm_start=True"
                )
            if batch is not None:
                raise ConfigurationError(
                    "batch= tunes the event-at-a-time path; the columnar path reads chunk_size= "
                    "events at a time: pass one or the other"
                )
            return run_columnar(
                plan,
                state,
                on_output=on_output,
                sources=sources,
                events=events,
                clock=clock,
                timeout=timeout,
                check_values=self.options.check_values if check_values is None else check_values,
                chunk_size=self.options.chunk_size if chunk_size is None else chunk_size,
            )
        return run_stream(
            plan,
            state,
            on_output=on_output,
            sources=sources,
            events=events,
            clock=clock,
            timeout=timeout,
            batch=batch,
            check_values=self.options.check_values if check_values is None else check_values,
            warm_start=warm_start,
        )
