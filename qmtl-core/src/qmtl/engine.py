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
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, cast, runtime_checkable

from qmtl.buckets import plain
from qmtl.codec import PLAIN_TYPES, check
from qmtl.errors import (
    ConfigurationError,
    MissingInputError,
    NodeExecutionError,
    StateBackendError,
    ValueEncodeError,
)
from qmtl.state import column_writer, naming

if TYPE_CHECKING:
    from qmtl.plan import ExecutionPlan, PlanNode
    from qmtl.state import SeriesKey, StateBackend
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

    Values are recorded in bulk (:func:`qmtl.state.column_writer`, in plan order): when the run
    ends, when it fails (the nodes before the failing one), before a windowed node reads the
    history, and after every node when ``on_node`` is given (a timeout then leaves the finished
    nodes recorded). A failing write names the node whose bucket it was.
    """
    if trace is not None:
        return _traced(plan, state, trace, inputs, ts, invoke_hook, on_node, timings, check_values)
    now = time.time() if ts is None else float(ts)
    nodes = plan.nodes
    values: list[Any] = [_MISSING] * len(nodes)
    results: dict[str, Any] = {}
    inputs = inputs or {}
    record = _Recorder(plan, state, now, values)
    clock = time.perf_counter
    last = clock() if timings is not None else 0.0
    plain = PLAIN_TYPES
    warming = False  # a windowed node skipped its run; nodes reading it skip too
    for node in nodes:
        name = node.name
        if on_node is not None:
            if not on_node(name):
                return results
            record.flush(node.index)
        if inputs and name in inputs:
            value = inputs[name]
        elif not (warming or invoke_hook is not None or node.window is not None):
            try:  # the common case: the user's function with its upstream values
                gather = node.gather
                if gather is not None:
                    value = node.call(*gather(values))
                elif node.upstream_index:
                    value = node.call(values[node.upstream_index[0]])
                else:
                    value = node.call()
            except Exception as error:
                record.flush(node.index)
                raise _failed(node, error) from error
        else:
            args = [values[i] for i in node.upstream_index]
            if warming and any(arg is _MISSING for arg in args):
                record.skipped = True
                continue
            if node.window is not None:
                record.flush(node.index)  # the window reads this run's upstream buckets
                windows = _windows(plan, node, state, args, now)
                if windows is None:
                    warming = record.skipped = True
                    continue  # warm-up: a window is not full yet
                args = windows
            try:
                value = node.call(*args) if invoke_hook is None else invoke_hook(node, args)
            except Exception as error:
                record.flush(node.index)
                raise _failed(node, error) from error
        if check_values and type(value) not in plain:
            try:
                check_value(node, value)
            except ValueEncodeError:
                record.flush(node.index)  # the nodes before it stay recorded
                raise
        values[node.index] = value
        results[name] = value
        if timings is not None:
            stamp = clock()
            timings[name] = stamp - last
            last = stamp
    record.flush(len(nodes))
    if on_node is not None:
        on_node(None)
    return results


def _failed(node: PlanNode, error: Exception) -> NodeExecutionError:
    """The error a failing node's run raises (a node's own NodeExecutionError passes as is)."""
    if isinstance(error, NodeExecutionError):
        return error
    return NodeExecutionError(node.name, error)


class _Recorder:
    """Writes a one-shot run's values to the state in bulk, in plan order: ``flush(upto)``
    stores the values of the nodes before plan index ``upto`` not stored yet."""

    __slots__ = ("columns", "ends", "flushed", "names", "skipped", "state", "values", "write")

    def __init__(
        self, plan: ExecutionPlan, state: StateBackend, now: float, values: list[Any]
    ) -> None:
        self.columns = plan.series_columns
        self.ends = {spec.seconds: spec.bucket_end(now) for spec in self.columns.distinct_specs}
        self.values = values
        self.state = state
        self.names = [node.name for node in plan.nodes]
        self.write = column_writer(state, checked=True)  # execute_plan checks the values
        self.flushed = 0
        self.skipped = False  # some node did not run: its columns are left out

    def flush(self, upto: int) -> None:
        columns = self.columns
        low, high = columns.starts[self.flushed], columns.starts[upto]
        self.flushed = upto
        if low == high:
            return
        values, owners = self.values, columns.owners
        if self.skipped:  # nodes that did not run (warm-up) have nothing to store
            kept = [j for j in range(low, high) if values[owners[j]] is not _MISSING]
            stored = [values[owners[j]] for j in kept]

            def take(column: Sequence[Any]) -> Sequence[Any]:
                return [column[j] for j in kept]

        else:
            if columns.one_per_node and high - low == len(values):  # the whole run at once
                stored = values
            else:
                stored = [values[i] for i in owners[low:high]]

            def take(column: Sequence[Any]) -> Sequence[Any]:
                return column[low:high]

        ends = self.ends
        if len(ends) == 1:
            stamps = [*ends.values()] * len(stored)
        else:
            stamps = [ends[s] for s in take(columns.seconds)]
        keys, caps, ttls = take(columns.keys), take(columns.max_items), take(columns.ttls)
        try:
            self.write(keys, stamps, stored, caps, ttls)
        except StateBackendError as error:
            names = [self.names[i] for i in take(owners)]
            raise_named(self.state, error, names, keys, stamps, stored, caps, ttls)


def raise_named(
    state: StateBackend,
    error: StateBackendError,
    names: Sequence[str],
    keys: Sequence[SeriesKey],
    stamps: Sequence[float],
    values: Sequence[Any],
    caps: Sequence[int | None],
    ttls: Sequence[int | None],
) -> NoReturn:
    """Raise the error of a failed bulk write naming the node whose bucket failed (a backend
    knows a series only by its node id): the buckets are written again one by one (writes are
    idempotent per bucket) until one fails; if none does, the first bucket's node is named."""
    for name, key, ts, value, cap, ttl in zip(names, keys, stamps, values, caps, ttls, strict=True):
        with naming(name, key.interval):
            state.write(key, ts, value, max_items=cap, ttl=ttl)
    with naming(names[0], keys[0].interval):
        raise error


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
