"""The one-shot form (SPEC §5.1) over Kafka: ``pipeline.execute(engine="kafka")``.

The same computation as :func:`qmtl.engine.execute_plan` at one timestamp ``ts``, run by the
Kafka workers: each source's value (its ``inputs`` entry, else the source called once, in this
process) is published at ``ts`` to its input topic followed by an end marker; every node's task
computes its value once when all its upstreams delivered theirs (``inputs`` replace a node's
value; a windowed node reads its upstreams' history from the state backend like the local
engine, and is skipped while warming up, with the nodes reading it). The caller collects every
node's value from the output topics and records them in plan order, so a failure records
exactly what the local engine would: every node before the failing one in plan order, nothing
from it on. Values cross Kafka through :mod:`qmtl.codec` and come back as themselves; a value
the codec refuses raises :class:`~qmtl.errors.ValueEncodeError` naming its node, as locally.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from qmtl.errors import NodeExecutionError, PipelineTimeoutError, ValueEncodeError
from qmtl.plan import ExecutionPlan
from qmtl.state import StateBackend
from qmtl.streaming import OutputEvent
from qmtl_engine_kafka._context import OneShot, RunContext
from qmtl_engine_kafka.errors import RunTimeoutError
from qmtl_engine_kafka.pending import MemoryPendingStore
from qmtl_engine_kafka.settings import KafkaEngineSettings

_MISSING: Any = object()


class Session(Protocol):
    """One run's publisher, collector and in-process workers (the engine's ``_Session``)."""

    def start(self) -> None: ...
    def publish(self, events: Iterator[tuple[int, float | None, Any]]) -> None: ...
    def collect(
        self,
        on_output: Callable[[OutputEvent], None] | None,
        failures: dict[str, BaseException],
        timeout: float | None,
        *,
        raise_failures: bool = True,
    ) -> dict[str, dict[str, Any]]: ...
    def failure(
        self, node: str, message: str, failures: dict[str, BaseException]
    ) -> BaseException: ...
    def close(self) -> None: ...


def execute_over_kafka(
    plan: ExecutionPlan,
    *,
    settings: KafkaEngineSettings,
    prepare: Callable[[ExecutionPlan], dict[str, int]],
    open_session: Callable[[RunContext, int], Session],
    state: StateBackend,
    inputs: Mapping[str, Any] | None = None,
    ts: float | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run every node once over Kafka; return ``{node: value}`` as the local engine does.

    ``prepare(plan)`` creates the topics and returns each source's input partitions;
    ``open_session(ctx, workers)`` opens the run's session (the engine supplies both).
    """
    now = time.time() if ts is None else float(ts)
    deadline = None if timeout is None else time.monotonic() + timeout
    inputs = dict(inputs or {})
    partitions = prepare(plan)
    failures: dict[str, BaseException] = {}
    values: dict[str, Any] = {}
    events: list[tuple[int, float | None, Any]] = []
    for node in plan.sources:
        if node.name in inputs:
            values[node.name] = inputs[node.name]
        elif node.kind != "query":
            try:
                values[node.name] = node.invoke([])
            except Exception as error:  # the user's source failed
                failures[node.name] = error
        if node.name in values:
            events.append((node.index, now, values[node.name]))
        events.append((node.index, None, None))
    ctx = RunContext(
        plan,
        uuid.uuid4().hex,
        settings,
        state,
        MemoryPendingStore(),
        partitions,
        batch_size=settings.batch_size,
        on_failure=lambda node, error: failures.setdefault(node, error),
        oneshot=OneShot(inputs, now),
    )
    workers = max(1, settings.workers)
    outputs: dict[str, Any] = {}

    def collect(event: OutputEvent) -> None:
        outputs.setdefault(event.node, event.value)

    session = open_session(ctx, workers)
    try:
        session.start()
        session.publish(iter(events))
        left = None if deadline is None else max(0.001, deadline - time.monotonic())
        try:
            ends = session.collect(collect, failures, left, raise_failures=False)
        except RunTimeoutError as error:
            waiting = [n.name for n in plan.nodes if n.name in error.waiting]
            raise PipelineTimeoutError(
                plan.pipeline, waiting[0] if waiting else None, timeout or 0.0
            ) from None
        for node in plan.nodes:
            end = ends.get(node.name, {})
            if "error" in end and "upstream_failed" not in end and node.name not in failures:
                if "value_error" in end:  # a remote worker's ValueEncodeError, rebuilt
                    failures[node.name] = ValueEncodeError(**end["value_error"])
                else:
                    failures[node.name] = session.failure(node.name, end["error"], failures)
    finally:
        session.close()
    return _record(plan, state, now, {**outputs, **values}, failures)


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
            if isinstance(error, NodeExecutionError | ValueEncodeError):
                raise error
            raise NodeExecutionError(node.name, error) from error
        value = values.get(node.name, _MISSING)
        if value is _MISSING:
            continue  # warming up, or reads a node that is
        results[node.name] = value
        for spec in node.series:
            end = ends.get(spec.seconds)
            if end is None:
                end = ends[spec.seconds] = spec.bucket_end(now)
            state.write(spec.key, end, value, max_items=spec.max_items, ttl=spec.ttl)
    return results
