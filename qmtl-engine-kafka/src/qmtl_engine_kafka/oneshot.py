"""The one-shot form (SPEC §5.1) over Kafka: ``pipeline.execute(engine="kafka")``.

The same computation as :func:`qmtl.engine.execute_plan` at one timestamp ``ts``, run by the
workers through the same shards as a streaming run (:mod:`qmtl_engine_kafka._once`): each
source's value (its ``inputs`` entry, else the source called once, in this process) is sent to
its shard's partition; every shard computes its nodes once and sends their values back. The
caller records them in plan order, so a failure records exactly what the local engine would:
every node before the failing one in plan order, nothing from it on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

from qmtl.errors import NodeExecutionError, PipelineTimeoutError, ValueEncodeError
from qmtl.plan import ExecutionPlan
from qmtl.state import StateBackend
from qmtl_engine_kafka._session import Session
from qmtl_engine_kafka.errors import RunTimeoutError

__all__ = ["OpenedRun", "execute_over_kafka"]

_MISSING: Any = object()


class OpenedRun(Protocol):
    """A run opened by the engine (:class:`~qmtl_engine_kafka.engine.OpenRun`): its session
    and in-process workers."""

    @property
    def session(self) -> Session: ...

    def diagnose(self) -> str: ...


def execute_over_kafka(
    opened: OpenedRun,
    plan: ExecutionPlan,
    *,
    state: StateBackend,
    inputs: Mapping[str, Any] | None = None,
    ts: float | None = None,
    timeout: float | None = None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Run every node once over the opened run; return ``{node: value}`` as the local engine
    does. ``deadline`` (``time.monotonic()``) bounds it; ``timeout`` is named in the error."""
    now = time.time() if ts is None else float(ts)
    inputs = dict(inputs or {})
    values: dict[str, Any] = {}
    failures: dict[str, BaseException] = {}
    for node in plan.sources:
        if node.name in inputs or node.kind == "query":
            continue
        try:
            values[node.name] = node.invoke([])
        except Exception as error:  # the user's source failed
            failures[node.name] = error
    computed: dict[str, Any] = {}
    failed: dict[str, str] = {}
    refused: dict[str, dict[str, Any]] = {}

    def heard(report: dict[str, Any]) -> None:
        for name, value in report["vals"].items():
            computed[name] = value
        failed.update(report["fail"])
        refused.update(report.get("refused", {}))

    session, layout = opened.session, opened.session.layout
    given = {**values, **inputs}
    sharded = layout.plan  # the plan with its shards (a hand-built plan may lack them)
    for partition, shards in layout.on_partition.items():
        names = {sharded.nodes[i].name for s in shards for i in sharded.shards[s].nodes}
        session.send(
            partition,
            {
                "k": "1",
                "ts": now,
                "vals": {n: v for n, v in given.items() if n in names},
                "in": [n for n in inputs if n in names],
                "fail": {n: f"{type(e).__name__}: {e}" for n, e in failures.items() if n in names},
            },
        )
    session.flush()
    left = None if deadline is None else max(0.001, deadline - time.monotonic())
    try:
        session.collect(None, left, opened.diagnose, raise_failures=False, on_values=heard)
    except RunTimeoutError as error:
        # the sources were evaluated here: the first node still computing is named
        waiting = [n.name for n in plan.nodes if n.name in error.waiting and n.name not in given]
        raise PipelineTimeoutError(
            plan.pipeline, waiting[0] if waiting else None, timeout or 0.0
        ) from None
    for name, message in failed.items():
        if message != "upstream failed" and name not in failures:
            end: dict[str, Any] = {"error": message}
            if name in refused:
                end["value_error"] = refused[name]
            failures[name] = session.failure(name, end)
    return _record(plan, state, now, {**computed, **given}, failures)


def _record(
    plan: ExecutionPlan,
    state: StateBackend,
    now: float,
    values: dict[str, Any],
    failures: dict[str, BaseException],
) -> dict[str, Any]:
    """Write the values in plan order, stopping at the first failed node (and raise it)."""
    results: dict[str, Any] = {}
    ends: dict[int, float] = {}
    for node in plan.nodes:
        if node.name in failures:
            error = failures[node.name]
            if isinstance(error, (NodeExecutionError, ValueEncodeError)):
                raise error  # a refused value names its node and interval, as locally
            raise NodeExecutionError(node.name, error) from error
        value = values.get(node.name, _MISSING)
        if value is _MISSING:
            continue  # warming up, or reads a node that is (or one that failed after)
        results[node.name] = value
        for spec in node.series:
            end = ends.get(spec.seconds)
            if end is None:
                end = ends[spec.seconds] = spec.bucket_end(now)
            state.write(spec.key, end, value, max_items=spec.max_items, ttl=spec.ttl)
    return results
