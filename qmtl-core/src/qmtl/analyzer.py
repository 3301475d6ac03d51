"""The Analyzer: a pipeline whose query nodes run one analysis over every matching node.

``Analyzer.execute()`` runs the **whole DAG through the engine** (the compiled plan, in
topological order: processing nodes get their real upstream values), evaluating each query node
with its selectors, and returns ``{query: value}`` — ``{matched_node: value}`` for a query
without ``fn``, ``fn``'s value otherwise.

Failures. Unlike :meth:`Pipeline.execute`, which stops at the first failing node, the analyzer
runs every branch it can: a node that raises is a ``FAIL`` :class:`~qmtl.models.AnalyzerResult`
carrying the error (never a value), nodes reading it are ``SKIPPED``, queries keep their other
matches, and :attr:`Analyzer.last_run` says ``PARTIAL`` and lists every failed node. Nothing is
recorded for a failed or skipped node. ``execute(strict=True)`` raises
:class:`AnalyzerExecutionError` after recording instead. This works on every engine that runs the
plan it is given (local, mock, kafka): the analyzer hands the engine a copy of the plan whose
node calls report failures as a marker value instead of raising (a one-key JSON object, so it
crosses Kafka too), and a state view that never records a marker.

Results. ``results_cache`` holds the last run's return value; ``analyzer_results`` the last run's
:class:`~qmtl.models.AnalyzerResult` list (empty before the first run). Every query's value is
recorded in the state backend like any node's (``analyzer.get_history("q1")``), and each run's
result list per query too (:meth:`Analyzer.get_result_history`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field

from qmtl.calls import Invoker
from qmtl.engine import Engine, check_inputs
from qmtl.errors import PipelineValidationError, QmtlError, UnknownNodeError
from qmtl.logs import get_logger
from qmtl.models import AnalyzerResult, IntervalEnum, QmtlModel, QueryNodeResultSelector
from qmtl.node import Node, QueryNode
from qmtl.pipeline import Pipeline
from qmtl.plan import ExecutionPlan, PlanNode
from qmtl.selectors import Selection, SelectorsInput, as_selectors, is_deterministic, query_value
from qmtl.selectors import select as select_matches
from qmtl.state import SeriesKey, StateBackend

log = get_logger(__name__)

ANALYZER_TAG = "ANALYZER"


class AnalyzerExecutionError(QmtlError):
    """An ``execute(strict=True)`` run in which nodes failed; ``run`` holds the outcome."""

    def __init__(self, run: AnalyzerRun) -> None:
        self.run = run
        listed = "; ".join(f"'{node}': {error}" for node, error in run.failures.items())
        super().__init__(
            f"Analyzer '{run.analyzer_id}': {len(run.failures)} node(s) failed ({listed}); "
            "the other results were recorded and are in analyzer.analyzer_results"
        )


class AnalyzerRun(QmtlModel):
    """The outcome of one :meth:`Analyzer.execute`.

    ``status`` is ``OK`` when every node ran, ``PARTIAL`` when some failed (``failures``: node →
    error) or were skipped because of it (``skipped``: node → reason).
    """

    analyzer_id: str
    status: Literal["OK", "PARTIAL"]
    failures: dict[str, str] = Field(default_factory=dict)
    skipped: dict[str, str] = Field(default_factory=dict)
    values: dict[str, Any] = Field(default_factory=dict, description="Every node's value")
    started_at: datetime
    finished_at: datetime

    @property
    def ok(self) -> bool:
        """Whether no node failed."""
        return self.status == "OK"


_FAILED_KEY = "__qmtl_analyzer_failed__"


class _Failed(dict[str, Any]):
    """Stands where a failed (or skipped) node's value would be; never recorded or returned.

    It is a one-key JSON object so that it can cross an engine that moves values as JSON (the
    Kafka engine); :func:`_failure` recognises it on the other side.
    """

    #: qmtl.codec carries it as that plain one-key dict.
    _qmtl_carried_as = dict

    def __init__(self, node: str, status: Literal["FAIL", "SKIPPED"], error: str) -> None:
        super().__init__({_FAILED_KEY: {"node": node, "status": status, "error": error}})

    @property
    def node(self) -> str:
        return self[_FAILED_KEY]["node"]  # type: ignore[no-any-return]

    @property
    def status(self) -> Literal["FAIL", "SKIPPED"]:
        return self[_FAILED_KEY]["status"]  # type: ignore[no-any-return]

    @property
    def error(self) -> str:
        return self[_FAILED_KEY]["error"]  # type: ignore[no-any-return]


def _failure(value: Any) -> _Failed | None:
    """The failure marker ``value`` is (possibly decoded from JSON), or ``None``."""
    if isinstance(value, _Failed):
        return value
    if type(value) is dict and len(value) == 1 and _FAILED_KEY in value:
        info = value[_FAILED_KEY]
        return _Failed(info["node"], info["status"], info["error"])
    return None


class _RecordValues:
    """A state backend view that records values and drops failure markers."""

    def __init__(self, state: StateBackend) -> None:
        self._state = state

    def write(self, key: SeriesKey, timestamp: float, value: Any, **kwargs: Any) -> None:
        if _failure(value) is None:
            self._state.write(key, timestamp, value, **kwargs)

    def write_many(self, writes: Iterable[Any]) -> None:
        self._state.write_many(w for w in writes if _failure(w.value) is None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._state, name)


def _guarded(node: PlanNode) -> Invoker:
    inner = node.invoke
    name = node.name

    def invoke(values: Sequence[Any]) -> Any:
        for value in values:
            failed = _failure(value)
            if failed is not None:
                return _Failed(name, "SKIPPED", f"upstream '{failed.node}' did not produce a value")
        try:
            return inner(values)
        except Exception as error:  # the user's function failed: reported, not raised
            return _Failed(name, "FAIL", f"{type(error).__name__}: {error}")

    return invoke


class _QueryEval:
    """A query node's evaluation in an analyzer run: selection recorded, failures left out."""

    def __init__(
        self,
        query: QueryNode,
        matched: Sequence[Node],
        selectors: Sequence[QueryNodeResultSelector],
    ) -> None:
        self.query = query
        self.matched = list(matched)
        self.names = tuple(node.name for node in matched)
        self.selectors = list(selectors)
        self.fixed: Selection | None = None
        if is_deterministic(self.selectors):
            self.fixed = select_matches(self.selectors, self.matched)
        self.selection: Selection | None = None
        self.inputs: dict[str, Any] = {}

    def __call__(self, values: Sequence[Any]) -> Any:
        selection = self.fixed or select_matches(self.selectors, self.matched)
        self.selection = selection
        self.inputs = {
            name: _failure(value) or value for name, value in zip(self.names, values, strict=True)
        }
        ok = {
            name: self.inputs[name]
            for name in selection.names
            if not isinstance(self.inputs[name], _Failed)
        }
        try:
            return query_value(selection, ok, self.query.fn)
        except Exception as error:  # the query's fn failed
            return _Failed(self.query.name, "FAIL", f"{type(error).__name__}: {error}")


class Analyzer(Pipeline):
    """A pipeline tagged ``ANALYZER`` (plus ``tags``) whose result is ``{query: {node: value}}``.

    See the module documentation for how failures, selectors and history behave.
    """

    type = "analyzer"

    def __init__(
        self,
        name: str = "analyzer",
        default_intervals: Any = None,
        *,
        tags: Iterable[str] | None = None,
        **kwargs: Any,
    ) -> None:
        extra = [tags] if isinstance(tags, str) else list(tags or ())
        super().__init__(
            name,
            default_intervals,
            tags=[ANALYZER_TAG, *(t for t in dict.fromkeys(extra) if t != ANALYZER_TAG)],
            **kwargs,
        )
        #: ``{query: value}`` of the last run.
        self.results_cache: dict[str, Any] = {}
        #: :class:`AnalyzerResult` of every selected node of every query, last run.
        self.analyzer_results: list[AnalyzerResult] = []
        #: Outcome of the last run (``None`` before the first).
        self.last_run: AnalyzerRun | None = None

    # -- running --------------------------------------------------------------------------
    def execute(  # type: ignore[override]  # local/selectors come first (see the docstring)
        self,
        local: bool | Mapping[str, Any] = True,
        selectors: Mapping[str, SelectorsInput] | None = None,
        inputs: Mapping[str, Any] | None = None,
        engine: str | Engine | None = None,
        *,
        state: str | StateBackend | None = None,
        ts: float | None = None,
        timeout: float | None = None,
        engine_options: Mapping[str, Any] | None = None,
        state_options: Mapping[str, Any] | None = None,
        strict: bool = False,
        test_mode: bool = False,
        parallel: bool = False,
        brokers: str | None = None,
        redis_uri: str | None = None,
    ) -> dict[str, Any]:
        """Run the DAG through the engine, evaluate the query nodes, return ``{query: value}``.

        ``local=True`` uses the local engine unless ``engine`` (a kind or an engine object) is
        given; ``local=False`` uses the configured one. ``selectors={query: [selector, ...]}``
        replaces those queries' own selectors for this run. ``inputs`` replaces nodes' values.
        ``strict=True`` raises :class:`AnalyzerExecutionError` when a node failed. A mapping as
        the first argument is taken as ``inputs`` (the :meth:`Pipeline.execute` form).
        """
        if isinstance(local, Mapping) and inputs is None:  # Pipeline.execute(inputs) form
            inputs, local = local, True
        if not isinstance(local, bool):
            raise PipelineValidationError(
                f"Analyzer '{self.name}': execute's first argument is local=True/False, got "
                f"{type(local).__name__}; pass node values as inputs={{...}}"
            )
        plan = self.build()
        overrides = self._overrides(plan, selectors)
        check_inputs(plan, inputs)
        if engine is None and local and not parallel:
            engine = "local"
        engine_obj, state_obj = self._runtime(
            engine, state, engine_options, state_options, test_mode, parallel, brokers, redis_uri
        )
        self._last_state = state_obj
        now = time.time() if ts is None else float(ts)
        started = datetime.now(UTC)
        guarded, evals = self._guarded_plan(plan, overrides)
        values = engine_obj.execute(
            guarded,
            state=_RecordValues(state_obj),
            inputs=inputs,
            ts=now,
            timeout=timeout,
        )
        finished = datetime.now(UTC)
        run, results, cache = self._collect(plan, values, evals, started, finished)
        self.last_run, self.analyzer_results, self.results_cache = run, results, cache
        self._record(plan, state_obj, results, now)
        for node, error in run.failures.items():
            log.warning("qmtl.analyzer.node_failed", analyzer=self.name, node=node, error=error)
        if strict and not run.ok:
            raise AnalyzerExecutionError(run)
        return dict(cache)

    def _overrides(
        self, plan: ExecutionPlan, selectors: Mapping[str, SelectorsInput] | None
    ) -> dict[str, list[QueryNodeResultSelector]]:
        overrides: dict[str, list[QueryNodeResultSelector]] = {}
        queries = [n.name for n in plan.nodes if n.kind == "query"]
        for name, chosen in (selectors or {}).items():
            if name not in queries:
                raise UnknownNodeError(
                    f"Analyzer '{self.name}': selectors name '{name}', which is not a query node; "
                    f"query nodes are {queries}"
                )
            overrides[name] = as_selectors(chosen, f"selectors['{name}']")
        return overrides

    def _guarded_plan(
        self, plan: ExecutionPlan, overrides: Mapping[str, list[QueryNodeResultSelector]]
    ) -> tuple[ExecutionPlan, dict[str, _QueryEval]]:
        evals: dict[str, _QueryEval] = {}
        nodes: list[PlanNode] = []
        for node in plan.nodes:
            if node.kind == "query":
                query = node.node
                assert isinstance(query, QueryNode)
                matched = [plan.view(u) for u in node.upstreams]
                chosen = overrides.get(node.name, query.result_selectors)
                evals[node.name] = _QueryEval(query, matched, chosen)
                nodes.append(dataclasses.replace(node, invoke=evals[node.name]))
            else:
                nodes.append(dataclasses.replace(node, invoke=_guarded(node)))
        return ExecutionPlan(plan.pipeline, tuple(nodes), {n.name: n for n in nodes}), evals

    def _collect(
        self,
        plan: ExecutionPlan,
        values: Mapping[str, Any],
        evals: Mapping[str, _QueryEval],
        started: datetime,
        finished: datetime,
    ) -> tuple[AnalyzerRun, list[AnalyzerResult], dict[str, Any]]:
        values = {name: _failure(value) or value for name, value in values.items()}
        failures = {
            n: v.error for n, v in values.items() if isinstance(v, _Failed) and v.status == "FAIL"
        }
        skipped = {
            n: v.error
            for n, v in values.items()
            if isinstance(v, _Failed) and v.status == "SKIPPED"
        }
        results: list[AnalyzerResult] = []
        cache: dict[str, Any] = {}

        def result(query: str, node: str, value: Any, batch: int | None) -> AnalyzerResult:
            if isinstance(value, _Failed):
                return AnalyzerResult(
                    analyzer_id=self.name,
                    query_node=query,
                    node=node,
                    status=value.status,
                    error=value.error,
                    batch=batch,
                    generated_at=finished,
                )
            if value is _NOT_RUN:
                return AnalyzerResult(
                    analyzer_id=self.name,
                    query_node=query,
                    node=node,
                    status="SKIPPED",
                    batch=batch,
                    generated_at=finished,
                    error="did not run (a window is warming up)",
                )
            return AnalyzerResult(
                analyzer_id=self.name,
                query_node=query,
                node=node,
                value=value,
                batch=batch,
                generated_at=finished,
            )

        for node in plan.nodes:
            if node.kind != "query":
                continue
            evaluation = evals[node.name]
            selection = evaluation.selection
            if selection is None:  # the query did not run (warm-up)
                selection = evaluation.fixed or Selection((), (), batched=False)
            for index, batch in enumerate(selection.batches):
                for name in batch:
                    value = evaluation.inputs.get(name, values.get(name, _NOT_RUN))
                    results.append(
                        result(node.name, name, value, index if selection.batched else None)
                    )
            value = values.get(node.name, _NOT_RUN)
            if evaluation.query.fn is not None:
                results.append(result(node.name, node.name, value, None))
            if value is not _NOT_RUN and not isinstance(value, _Failed):
                cache[node.name] = value
        run = AnalyzerRun(
            analyzer_id=self.name,
            status="PARTIAL" if failures else "OK",
            failures=failures,
            skipped=skipped,
            values={n: v for n, v in values.items() if not isinstance(v, _Failed)},
            started_at=started,
            finished_at=finished,
        )
        return run, results, cache

    # -- recording and history ------------------------------------------------------------
    def _record(
        self,
        plan: ExecutionPlan,
        state: StateBackend,
        results: Sequence[AnalyzerResult],
        now: float,
    ) -> None:
        by_query: dict[str, list[dict[str, Any]]] = {}
        for item in results:
            by_query.setdefault(item.query_node, []).append(item.model_dump(mode="json"))
        for node in plan.nodes:
            if node.kind != "query":
                continue
            for spec in node.series:
                state.write(
                    _results_key(spec.key),
                    spec.bucket_end(now),
                    by_query.get(node.name, []),
                    max_items=spec.max_items,
                    ttl=spec.ttl,
                )

    def get_result_history(
        self,
        query: str,
        interval: IntervalEnum | str | None = None,
        count: int | None = 10,
        start_ts: float | None = None,
        end_ts: float | None = None,
        *,
        state: str | StateBackend | None = None,
        redis_uri: str | None = None,
    ) -> list[dict[str, Any]]:
        """Past runs' results of ``query``: ``[{"timestamp", "results": [AnalyzerResult]}]``,
        newest first (one per bucket of the query's interval, the first one by default)."""
        node = self.build().node(query)
        if node.kind != "query":
            raise UnknownNodeError(f"Analyzer '{self.name}': '{query}' is not a query node")
        chosen = node.series[0].interval if interval is None else interval
        key, _spec, backend = self._series(
            "get_result_history", query, chosen, state, redis_uri, (count, start_ts, end_ts)
        )
        return [
            {
                "timestamp": item["timestamp"],
                "results": [AnalyzerResult.model_validate(r) for r in item["value"]],
            }
            for item in backend.read(
                _results_key(key), count=count, start_ts=start_ts, end_ts=end_ts
            )
        ]


_NOT_RUN: Any = object()


def _results_key(key: SeriesKey) -> SeriesKey:
    return SeriesKey(key.pipeline, f"{key.node_id}.results", key.interval)


__all__ = ["ANALYZER_TAG", "Analyzer", "AnalyzerExecutionError", "AnalyzerResult", "AnalyzerRun"]
