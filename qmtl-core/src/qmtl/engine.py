"""The engine contract, and the one-shot semantics every in-process engine shares.

An engine receives a compiled :class:`~qmtl.plan.ExecutionPlan` and a state backend. Its
one-shot form runs every node once in topological order and records each value in every
interval's bucket of the run's timestamp (SPEC §5.1); its streaming form (``run``) follows the
event-time rules of :mod:`qmtl.streaming`.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

from qmtl.buckets import plain
from qmtl.codec import PLAIN_TYPES, check
from qmtl.errors import (
    ConfigurationError,
    MissingInputError,
    NodeExecutionError,
    QmtlError,
    StateBackendError,
    ValueEncodeError,
)
from qmtl.state import writer

if TYPE_CHECKING:
    from qmtl.plan import ExecutionPlan, PlanNode
    from qmtl.state import StateBackend
    from qmtl.streaming import OutputEvent

#: Options of ``run`` (and ``stream``) that every engine takes.
RUN_OPTIONS = ("on_output", "sources", "events", "clock", "timeout")

_MISSING: Any = object()

#: ``hook(node, upstream_values) -> value``: replaces how a node is invoked (the mock engine).
InvokeHook = Callable[["PlanNode", Sequence[Any]], Any]


@runtime_checkable
class Engine(Protocol):
    """What an engine plugin's factory returns."""

    name: str

    def execute(
        self,
        plan: ExecutionPlan,
        *,
        state: StateBackend,
        inputs: Mapping[str, Any] | None = None,
        ts: float | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Run every node once; return ``{node: value}`` (query nodes included)."""
        ...

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
    ) -> Any:
        """Run the pipeline's sources to their end in event time; return a run summary.

        Every engine takes these options (:data:`RUN_OPTIONS`); an engine adds its own as
        further keyword parameters of ``run``, which ``pipeline.run(...)`` then accepts for it.
        """
        ...

    def close(self) -> None:
        """Release the engine's resources."""
        ...


def bucket_end(ts: float, seconds: int) -> float:
    """End of the bucket of length ``seconds`` holding ``ts`` (buckets are ``[start, end)``) on
    the interval's calendar without offset (epoch multiples; weeks from Monday). A plan's
    series use their own calendar: ``spec.bucket_end(ts)``."""
    calendar = plain(seconds)
    return calendar.end(calendar.index(ts))


def execute_plan(
    plan: ExecutionPlan,
    state: StateBackend,
    *,
    inputs: Mapping[str, Any] | None = None,
    ts: float | None = None,
    invoke_hook: InvokeHook | None = None,
    on_node: Callable[[str | None], bool] | None = None,
    timings: dict[str, float] | None = None,
    check_values: bool = True,
    trace: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The one-shot semantics (SPEC §5.1), shared by in-process engines.

    A windowed node whose windows are not full yet (warm-up) does not run and is absent from
    the results, and so are the nodes that read it.

    ``inputs`` replaces a node's value (it is then not called). ``on_node(name)`` is told which
    node starts (``None`` at the end) and returns ``False`` to stop the run before that node
    (used by timeouts). ``timings``, when given, receives each node's wall time in seconds.
    ``trace``, when given (``debug=True``), receives ``{"node", "seconds", "value"}`` per node,
    each step is logged (``qmtl.local.node_executed``) and a failing node's error shows its
    inputs. A failing node raises :class:`NodeExecutionError`; nothing after it is recorded.
    ``check_values`` runs :func:`qmtl.codec.check` on every value (a type walk), so a value
    another engine could not carry raises :class:`~qmtl.errors.ValueEncodeError` here too,
    naming the node and its intervals, before anything of it is recorded.
    """
    if trace is not None:
        return _traced(plan, state, trace, inputs, ts, invoke_hook, on_node, timings, check_values)
    now = time.time() if ts is None else float(ts)
    ends: dict[int, float] = {}
    values: list[Any] = [_MISSING] * len(plan.nodes)
    results: dict[str, Any] = {}
    inputs = inputs or {}
    write = writer(state)  # values are checked here (check_values), not again by memory state
    clock = time.perf_counter
    plain = PLAIN_TYPES
    warming = False  # a windowed node skipped its run; nodes reading it skip too
    for node in plan.nodes:
        if on_node is not None and not on_node(node.name):
            return results
        started = clock() if timings is not None else 0.0
        if node.name in inputs:
            value = inputs[node.name]
        else:
            args = [values[i] for i in node.upstream_index]
            if warming and any(arg is _MISSING for arg in args):
                continue
            if node.window is not None:
                windows = _windows(plan, node, state, args, now)
                if windows is None:
                    warming = True
                    continue  # warm-up: a window is not full yet
                args = windows
            try:
                value = node.invoke(args) if invoke_hook is None else invoke_hook(node, args)
            except QmtlError as error:
                if isinstance(error, NodeExecutionError):
                    raise
                raise NodeExecutionError(node.name, error) from error
            except Exception as error:  # the user's function failed
                raise NodeExecutionError(node.name, error) from error
        if check_values and type(value) not in plain:
            check_value(node, value)
        values[node.index] = value
        results[node.name] = value
        if timings is not None:
            timings[node.name] = clock() - started
        for spec in node.series:
            end = ends.get(spec.seconds)
            if end is None:
                end = ends[spec.seconds] = spec.bucket_end(now)
            try:
                write(spec.key, end, value, max_items=spec.max_items, ttl=spec.ttl)
            except StateBackendError as error:  # the backend knows the node only by its id
                raise StateBackendError(
                    f"Node '{node.name}' at {spec.interval.value}: {error}"
                ) from error
    if on_node is not None:
        on_node(None)
    return results


def check_value(node: PlanNode, value: Any) -> None:
    """:func:`qmtl.codec.check`, naming ``node`` and its intervals in the error."""
    try:
        check(value)
    except ValueEncodeError as error:  # the names are joined only for the error
        raise error.at(node.name, ", ".join(s.interval.value for s in node.series)) from None


def _traced(
    plan: ExecutionPlan,
    state: StateBackend,
    trace: list[dict[str, Any]],
    inputs: Mapping[str, Any] | None,
    ts: float | None,
    invoke_hook: InvokeHook | None,
    on_node: Callable[[str | None], bool] | None,
    timings: dict[str, float] | None,
    check_values: bool,
) -> dict[str, Any]:
    """:func:`execute_plan` with a per-node trace (the debug mode: off the fast path)."""
    from qmtl.logs import get_logger

    log = get_logger("qmtl.local")
    clock = time.perf_counter

    def traced(node: PlanNode, args: Sequence[Any]) -> Any:
        started = clock()
        try:
            value = node.invoke(args) if invoke_hook is None else invoke_hook(node, args)
        except Exception as error:
            shown = ", ".join(
                f"{u}={_preview(a)}" for u, a in zip(node.upstreams, args, strict=False)
            )
            raise NodeExecutionError(node.name, error, inputs=shown or "(none)") from error
        seconds = clock() - started
        trace.append({"node": node.name, "seconds": seconds, "value": _preview(value)})
        log.debug(
            "qmtl.local.node_executed", node=node.name, seconds=seconds, value=trace[-1]["value"]
        )
        return value

    return execute_plan(
        plan,
        state,
        inputs=inputs,
        ts=ts,
        invoke_hook=traced,
        on_node=on_node,
        timings=timings,
        check_values=check_values,
    )


def _preview(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _windows(
    plan: ExecutionPlan, node: PlanNode, state: StateBackend, args: list[Any], now: float
) -> list[Any] | None:
    """Each upstream's last N values at the node's smallest interval, oldest first."""
    spec = min(node.series, key=lambda s: s.seconds)
    size = node.window_size(spec)
    assert size is not None
    windows = []
    for index in node.upstream_index:
        upstream = plan.nodes[index]
        key = upstream.spec(spec.interval).key
        items = state.read(key, count=size, end_ts=spec.bucket_end(now))
        if len(items) < size:
            return None
        windows.append([item["value"] for item in reversed(items)])
    return windows


def check_inputs(plan: ExecutionPlan, inputs: Mapping[str, Any] | None) -> None:
    """Reject ``inputs`` naming nodes the plan does not have."""
    for name in inputs or {}:
        if name not in plan.by_name:
            raise MissingInputError(
                f"inputs name '{name}', which is not a node of pipeline '{plan.pipeline}'; "
                f"nodes are {sorted(plan.by_name)}"
            )


def check_run_options(plan: ExecutionPlan, ts: Any, timeout: Any) -> None:
    """Reject a ``ts`` that is not finite epoch seconds and a ``timeout`` that is not > 0."""
    for option, value, wanted in (
        ("ts", ts, "finite epoch seconds (a number such as 1700000000)"),
        ("timeout", timeout, "a positive number of seconds"),
    ):
        if value is None:
            continue
        number = not isinstance(value, bool) and isinstance(value, numbers.Real)
        if not number or not math.isfinite(value) or (option == "timeout" and value <= 0):
            raise ConfigurationError(
                f"Run of pipeline '{plan.pipeline}': {option}={value!r} is not usable; "
                f"pass {wanted}"
            )


class Executable(Protocol):
    """What :meth:`EngineBase.execute_pipeline` runs: a :class:`qmtl.pipeline.Pipeline`."""

    def execute(
        self, inputs: Mapping[str, Any] | None = None, *, timeout: float | None = None, engine: Any
    ) -> dict[str, Any]: ...


class EngineBase:
    """Seed-compatible conveniences shared by engine implementations."""

    name = "engine"

    def execute_pipeline(
        self,
        pipeline: Executable,
        inputs: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Seed API: run ``pipeline`` once on this engine and return ``{node: value}``."""
        engine = cast("Engine", self)  # a subclass supplies execute(); this base is a mixin
        return pipeline.execute(inputs=inputs, timeout=timeout, engine=engine)

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
    ) -> Any:
        from qmtl.errors import EngineError

        raise EngineError(f"Engine '{self.name}' has no streaming form; use engine='local'")

    def close(self) -> None:
        """Nothing to release."""
