"""The pipeline: a named DAG of nodes and query nodes, and the user's entry point to run it.

A pipeline describes; engines execute. It is validated completely when it is built (on the
first ``execute``/``run``/``to_definition``, or :meth:`Pipeline.build`): duplicate names, unknown
upstreams, cycles, interval coverage and unbindable functions fail there, naming the node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping
from datetime import timedelta
from typing import Any, Never

from qmtl.buckets import BucketOffset, parse_offset
from qmtl.engine import Engine, check_inputs, check_run_options
from qmtl.errors import (
    ConfigurationError,
    DuplicateNodeError,
    IntervalError,
    ModelValidationError,
    PipelineValidationError,
    QmtlError,
)
from qmtl.members import Members, raw_members
from qmtl.models import (
    IntervalEnum,
    IntervalSettings,
    NodeStreamSettings,
    PipelineDefinition,
    to_interval,
)
from qmtl.node import Node, QueryNode
from qmtl.options import (
    check_backend,
    check_count,
    check_execute,
    check_number,
    check_run,
    check_selection,
    check_text,
)
from qmtl.plan import ExecutionPlan, compile_pipeline, keeping_history, merge_settings
from qmtl.queries import TagIndex
from qmtl.runtime import Resolver
from qmtl.settings import QmtlSettings
from qmtl.state import SeriesKey, StateBackend, naming
from qmtl.streaming import OutputEvent, RunSummary
from qmtl.subplans import namespaced
from qmtl.threaded_stream import OutputStream, ThreadedOutputStream


def _defaults(
    pipeline: str, value: NodeStreamSettings | Mapping[Any, Any] | None
) -> NodeStreamSettings | None:
    if value is None or isinstance(value, NodeStreamSettings):
        return value
    if not isinstance(value, Mapping):
        raise PipelineValidationError(
            f"Pipeline '{pipeline}': default_intervals must be a mapping of interval to "
            f"settings, such as {{'1d': {{'period': 30}}}}, not {type(value).__name__}"
        )
    try:
        if "intervals" in value:
            return NodeStreamSettings.model_validate(dict(value))
        return NodeStreamSettings(intervals=dict(value))
    except (ModelValidationError, IntervalError) as error:
        raise type(error)(f"Pipeline '{pipeline}' default_intervals: {error}") from error


class Pipeline:
    """A strategy: nodes with tags and intervals, runnable on any engine.

    ``default_intervals`` gives every node minimum retention per interval (see
    :func:`qmtl.plan.merge_settings`). ``settings`` fixes the engine/state selection; by default
    it is read from ``QMTL_*`` variables and config files on the first run. ``keep_history=True``
    (backtests over past data) keeps every bucket of every series until :meth:`clear_history`:
    no TTL by wall clock and no ``max_history`` cap; :meth:`run` takes it per run too.
    """

    type = "pipeline"

    def __init__(
        self,
        name: str = "default",
        default_intervals: NodeStreamSettings | Mapping[Any, Any] | None = None,
        *,
        settings: QmtlSettings | None = None,
        tags: Iterable[str] | None = None,
        bucket_offset: str | timedelta | int | None = None,
        keep_history: bool = False,
        **metadata: Any,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise PipelineValidationError(
                f"A pipeline name must be a non-empty string, got {name!r}"
            )
        self.name = name
        self.default_intervals = _defaults(name, default_intervals)
        self._offset: BucketOffset | None = None
        self.bucket_offset = bucket_offset
        self.metadata = metadata
        self.tags: list[str] = list(tags or ())
        self._keep_history = _flag(name, "keep_history", keep_history)
        #: The tag and interval-entry index query nodes are resolved with, kept up to date as
        #: ``nodes`` changes (see :mod:`qmtl.queries`).
        self.tag_index = TagIndex()
        #: name -> node; reading gives this pipeline's view of it (see :mod:`qmtl.members`)
        self.nodes: MutableMapping[str, Node] = Members(
            self, self._changed, on_set=self._indexed, on_delete=self.tag_index.remove
        )
        self.query_nodes: MutableMapping[str, QueryNode] = Members(self, self._changed)
        self._plan: ExecutionPlan | None = None
        self._resolver = Resolver(settings)
        self._last_state: StateBackend | None = None
        #: The engine object of the last ``execute``/``run``/``stream`` (e.g. its
        #: ``execution_stats``), ``None`` before the first.
        self.last_engine: Engine | None = None

    @property
    def keep_history(self) -> bool:
        """Keep every bucket until :meth:`clear_history` (no TTL, no ``max_history`` cap)."""
        return self._keep_history

    @keep_history.setter
    def keep_history(self, value: bool) -> None:
        self._keep_history = _flag(self.name, "keep_history", value)
        self._plan = None

    # -- building -------------------------------------------------------------------------
    def _changed(self) -> None:
        self._plan = None

    def _indexed(self, name: str, node: Any) -> None:
        """Index a node as it is added, with the settings the build will find for it (merges
        are remembered per settings object, so the build sees the same object)."""
        if not isinstance(node, Node):
            return  # refused when the pipeline is built
        try:
            settings = merge_settings(name, node.declared_stream_settings, self.default_intervals)
        except QmtlError:  # the build reports it; until then the node is indexed without
            settings = None
        self.tag_index.set(name, node, settings)

    @property
    def bucket_offset(self) -> BucketOffset | None:
        """Where ``1d``/``1w`` buckets end (:mod:`qmtl.buckets`): set a duration such as
        ``"-8h"`` (days end at 16:00 UTC) or a time zone and session close such as
        ``"America/New_York 16:00"`` (daylight saving included); ``None``: UTC midnight, and
        weeks from Monday."""
        return self._offset

    @bucket_offset.setter
    def bucket_offset(self, value: str | timedelta | int | None) -> None:
        try:
            self._offset = parse_offset(value, f"Pipeline '{self.name}'")
        except ValueError as error:
            raise PipelineValidationError(str(error)) from None
        self._plan = None

    def add_node(self, node: Node) -> Node:
        """Add ``node`` (checking that its settings merge with the pipeline defaults).

        The node is not changed: its effective settings, node id and history here are this
        pipeline's (``pipeline.nodes[name]``); ``node.stream_settings`` shows the ones of the
        pipeline it was last added to, as the seed document reads them."""
        if not isinstance(node, Node):
            raise PipelineValidationError(
                f"add_node takes a Node, got {type(node).__name__}; use add_query_node for queries"
            )
        if node.name in self.nodes or node.name in self.query_nodes:
            raise DuplicateNodeError(
                f"Pipeline '{self.name}' already has a node named '{node.name}'; rename one"
            )
        merge_settings(node.name, node.declared_stream_settings, self.default_intervals)
        self.nodes[node.name] = node
        return node

    def add_query_node(self, query: QueryNode) -> str:
        """Add a query node; returns its name."""
        if not isinstance(query, QueryNode):
            raise PipelineValidationError(
                f"add_query_node takes a QueryNode, got {type(query).__name__}; use add_node "
                "for other nodes"
            )
        if query.name in self.nodes or query.name in self.query_nodes:
            raise DuplicateNodeError(
                f"Pipeline '{self.name}' already has a node named '{query.name}'; rename one"
            )
        self.query_nodes[query.name] = query
        return query.name

    # -- what differs from one pipeline to another (qmtl.members.Home) ---------------------
    def settings_of(self, name: str) -> NodeStreamSettings | None:
        """Effective stream settings of member ``name`` in this pipeline."""
        plan = self._plan
        if plan is not None and name in plan.by_name:
            return plan.by_name[name].settings
        if name in self.query_nodes:
            return self.build().node(name).settings
        node = raw_members(self.nodes)[name]
        return merge_settings(name, node.declared_stream_settings, self.default_intervals)

    def node_id_of(self, name: str) -> str:
        """Node id of member ``name`` in this pipeline (builds it)."""
        return self.build().node(name).node_id

    def upstreams_of(self, name: str) -> list[str]:
        """Upstreams of member ``name`` in this pipeline (a query's matches; builds it)."""
        return list(self.build().node(name).upstreams)

    def holds(self, member: object) -> bool:
        """Whether ``member`` itself is one of this pipeline's nodes or query nodes."""
        name = getattr(member, "name", None)
        return any(
            raw_members(members).get(name) is member  # type: ignore[arg-type]
            for members in (self.nodes, self.query_nodes)
        )

    def known(self, name: str) -> bool:
        """Whether this pipeline is built (its members' ids and matches are at hand)."""
        return self._plan is not None

    def get_node(self, name: str) -> Node | QueryNode | None:
        """The node or query node called ``name``, or ``None``."""
        return self.nodes.get(name) or self.query_nodes.get(name)

    def dependencies(self) -> dict[str, set[str]]:
        """Name → names of its direct upstreams (query nodes: their matches)."""
        plan = self.build()
        return {node.name: set(node.upstreams) for node in plan.nodes}

    def get_execution_order(self) -> list[str]:
        """Node names in the deterministic topological order used to run them."""
        return [node.name for node in self.build().nodes]

    topological_sort = get_execution_order

    def build(self) -> ExecutionPlan:
        """Validate the pipeline and return its execution plan (cached until it changes)."""
        if self._plan is None:
            plan = compile_pipeline(self)
            self._plan = keeping_history(plan) if self.keep_history else plan
        return self._plan

    # -- running --------------------------------------------------------------------------
    def execute(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        ts: float | None = None,
        timeout: float | None = None,
        engine: str | Engine | None = None,
        state: str | StateBackend | None = None,
        engine_options: Mapping[str, Any] | None = None,
        state_options: Mapping[str, Any] | None = None,
        test_mode: bool = False,
        parallel: bool = False,
        brokers: str | None = None,
        redis_uri: str | None = None,
        debug: bool = False,
        **unknown: Never,
    ) -> dict[str, Any]:
        """Run every node once; return ``{node: value, ..., query_node: {...}}``.

        Each value is recorded in every interval's bucket of ``ts`` (default now). Seed keywords:
        ``test_mode=True`` is the local engine; ``parallel=True, brokers=..., redis_uri=...`` is
        the Kafka engine with Redis state; ``debug=True`` traces the run on the local engine
        (``engine_options={"debug": True}``: each node's time and value in
        ``pipeline.last_engine.execution_stats["trace"]`` and the log, and a failing node's
        inputs in its error). A keyword ``execute`` does not take is a ``ConfigurationError``.
        """
        engine_options = check_execute(
            self.name,
            unknown,
            inputs=inputs,
            engine=engine,
            engine_options=engine_options,
            flags={"test_mode": test_mode, "parallel": parallel, "debug": debug},
            texts={"brokers": brokers, "redis_uri": redis_uri},
        )
        plan = self.build()
        check_inputs(plan, inputs)
        check_run_options(plan, ts, timeout)
        engine_obj, state_obj = self._runtime(
            engine, state, engine_options, state_options, test_mode, parallel, brokers, redis_uri
        )
        self._last_state = state_obj
        self.last_engine = engine_obj
        return engine_obj.execute(plan, state=state_obj, inputs=inputs, ts=ts, timeout=timeout)

    def run(
        self,
        on_output: Callable[[OutputEvent], None] | None = None,
        *,
        engine: str | Engine | None = None,
        state: str | StateBackend | None = None,
        engine_options: Mapping[str, Any] | None = None,
        state_options: Mapping[str, Any] | None = None,
        keep_history: bool | None = None,
        progress: bool = False,
        namespace: str | None = None,
        **options: Any,
    ) -> RunSummary:
        """Stream the sources to their end in event time; return the engine's run summary.

        Semantics (SPEC §5.2, :mod:`qmtl.streaming`): every node's output is bucketed per
        interval; a bucket is final once every upstream's watermark passed its end (or the
        stream ended); a node computes a bucket from its upstreams' final buckets (as-of join,
        ``window=N`` lists after warm-up). Every final bucket is written to the state backend
        and passed to ``on_output`` as an :class:`~qmtl.streaming.OutputEvent` (``node``,
        ``interval``, ``ts`` = bucket end, ``value``). Returns a
        :class:`~qmtl.summary.RunSummary` (events in, late events, buckets out, per node).

        Options every engine takes: ``sources`` (``{source name: events}`` replacing declared
        inputs), ``events`` (``[(source, ts, value), ...]`` in arrival order, replacing all
        sources), ``clock`` (stamps values read without a ts) and ``timeout`` (seconds for the
        whole run: :class:`~qmtl.errors.PipelineTimeoutError` naming the running node); an
        engine may take more (local: ``batch``; kafka: ``workers``, ``run_id``). Any other
        option is a ``ConfigurationError`` naming it. A failing node raises
        :class:`~qmtl.errors.NodeExecutionError`; buckets written before it stay.

        ``keep_history=True`` keeps this run's whole history until :meth:`clear_history` (no
        TTL, no ``max_history`` cap: a backtest), default: the pipeline's ``keep_history``.
        ``progress=True`` shows events in, buckets out, the event-time position and the rate on
        stderr while the run goes (when stderr is a terminal; quiet in pipes and logs).
        ``namespace`` writes the history under that name instead of the pipeline's (a backtest
        kept apart from a live deployment's buckets); read it back with ``namespace=`` on
        :meth:`get_history`.
        """
        plan, engine_obj, state_obj = self._streaming(
            "run",
            engine,
            state,
            engine_options,
            state_options,
            {**options, "on_output": on_output},
            keep_history,
            namespace,
        )
        if progress:
            from qmtl.progress import run_with_progress

            shown: RunSummary = run_with_progress(
                self.name, engine_obj, plan, state_obj, on_output, options
            )
            return shown
        summary: RunSummary = engine_obj.run(plan, state=state_obj, on_output=on_output, **options)
        return summary

    def stream(
        self,
        *,
        engine: str | Engine | None = None,
        state: str | StateBackend | None = None,
        engine_options: Mapping[str, Any] | None = None,
        state_options: Mapping[str, Any] | None = None,
        keep_history: bool | None = None,
        namespace: str | None = None,
        **options: Any,
    ) -> OutputStream:
        """The iterator form of :meth:`run` (for notebooks), with the same options: yields every
        final bucket as an :class:`~qmtl.streaming.OutputEvent` as it is produced; the
        iterator's ``summary`` is the run summary once it is exhausted.
        ``for bar in pipeline.stream(): ...``

        An engine with a ``stream`` method produces the iterator itself; any other engine's
        ``run`` is driven in a background thread (``close()`` on the iterator stops it).
        """
        plan, engine_obj, state_obj = self._streaming(
            "stream", engine, state, engine_options, state_options, options, keep_history, namespace
        )
        own = getattr(engine_obj, "stream", None)
        if callable(own):
            stream: OutputStream = own(plan, state=state_obj, **options)
            return stream
        on_output = options.pop("on_output", None)
        return ThreadedOutputStream(
            lambda emit: engine_obj.run(plan, state=state_obj, on_output=emit, **options),
            on_output=on_output,
        )

    def _streaming(
        self,
        method: str,
        engine: str | Engine | None,
        state: str | StateBackend | None,
        engine_options: Mapping[str, Any] | None,
        state_options: Mapping[str, Any] | None,
        options: Mapping[str, Any],
        keep_history: bool | None,
        namespace: str | None = None,
    ) -> tuple[ExecutionPlan, Engine, StateBackend]:
        where = f"{method}() of pipeline '{self.name}'"
        check_selection(where, engine, state, engine_options, state_options, engine_needs=("run",))
        plan = self._in(self._plan_for(keep_history), namespace)
        engine_obj, state_obj = self._runtime(
            engine, state, engine_options, state_options, False, False, None, None
        )
        check_run(self.name, method, engine_obj, options)
        self._last_state = state_obj
        self.last_engine = engine_obj
        return plan, engine_obj, state_obj

    def _in(self, plan: ExecutionPlan, namespace: str | None) -> ExecutionPlan:
        """``plan`` with its history under ``namespace`` (:func:`qmtl.subplans.namespaced`)."""
        if namespace is None:
            return plan
        if not isinstance(namespace, str) or not namespace:
            raise ConfigurationError(
                f"Pipeline '{self.name}': namespace must be a non-empty string, got {namespace!r}"
            )
        return namespaced(plan, namespace)

    def _plan_for(self, keep_history: bool | None) -> ExecutionPlan:
        plan = self.build()
        if keep_history is None or keep_history == self.keep_history:
            return plan
        _flag(self.name, "keep_history", keep_history)
        return keeping_history(plan) if keep_history else compile_pipeline(self)

    def _runtime(
        self,
        engine: str | Engine | None,
        state: str | StateBackend | None,
        engine_options: Mapping[str, Any] | None,
        state_options: Mapping[str, Any] | None,
        test_mode: bool,
        parallel: bool,
        brokers: str | None,
        redis_uri: str | None,
    ) -> tuple[Engine, StateBackend]:
        check_selection(f"pipeline '{self.name}'", engine, state, engine_options, state_options)
        return self._resolver.select(
            engine,
            state,
            engine_options,
            state_options,
            test_mode=test_mode,
            parallel=parallel,
            brokers=brokers,
            redis_uri=redis_uri,
            last_state=self._last_state,
        )

    def _state(self, state: str | StateBackend | None, options: dict[str, Any]) -> StateBackend:
        return self._resolver.state_for(state, options, self._last_state)

    # -- history --------------------------------------------------------------------------
    def _series(
        self,
        method: str,
        node_name: str,
        interval: IntervalEnum | str,
        state: str | StateBackend | None,
        redis_uri: str | None,
        bounds: tuple[Any, Any, Any] = (None, None, None),
        namespace: str | None = None,
    ) -> tuple[SeriesKey, Any, StateBackend]:
        """The series and backend a history method reads, its arguments checked first
        (``bounds``: ``count``, ``start_ts``, ``end_ts``)."""
        where = f"{method}() of pipeline '{self.name}'"
        check_count(where, bounds[0])
        check_number(where, "start_ts", bounds[1])
        check_number(where, "end_ts", bounds[2])
        if not isinstance(node_name, str):
            raise ConfigurationError(
                f"{where}: node_name={node_name!r} must be a node's name (a string)"
            )
        check_backend(where, "state", state, ("read",), "'memory' or 'redis'")
        check_text(where, "redis_uri", redis_uri)
        plan_node = self._in(self.build(), namespace).node(node_name)
        spec = plan_node.spec(to_interval(interval))
        options = {"url": redis_uri} if redis_uri is not None else {}
        if redis_uri is not None and state is None:
            state = "redis"
        return spec.key, spec, self._state(state, options)

    def get_history(
        self,
        node_name: str,
        interval: IntervalEnum | str = IntervalEnum.DAY,
        count: int | None = 10,
        start_ts: float | None = None,
        end_ts: float | None = None,
        *,
        state: str | StateBackend | None = None,
        redis_uri: str | None = None,
        namespace: str | None = None,
    ) -> list[dict[str, Any]]:
        """``[{"timestamp", "value"}]`` newest first; ``start_ts`` exclusive, ``end_ts`` inclusive.

        Timestamps are bucket ends (epoch seconds). ``count`` is the most buckets returned
        (``None``: all); a bad argument is a ``ConfigurationError`` before any read.
        ``namespace``: the history a run wrote with ``namespace=`` (default: the pipeline's).
        """
        key, _spec, backend = self._series(
            "get_history",
            node_name,
            interval,
            state,
            redis_uri,
            (count, start_ts, end_ts),
            namespace,
        )
        with naming(node_name, key.interval):
            return backend.read(key, count=count, start_ts=start_ts, end_ts=end_ts)

    def get_interval_data(
        self,
        node_name: str,
        interval: IntervalEnum | str = IntervalEnum.DAY,
        count: int | None = 10,
        start_ts: float | None = None,
        end_ts: float | None = None,
        *,
        state: str | StateBackend | None = None,
        redis_uri: str | None = None,
        namespace: str | None = None,
    ) -> list[Any]:
        """The values of :meth:`get_history`, newest first."""
        key, _spec, backend = self._series(
            "get_interval_data",
            node_name,
            interval,
            state,
            redis_uri,
            (count, start_ts, end_ts),
            namespace,
        )
        with naming(node_name, key.interval):
            history = backend.read(key, count=count, start_ts=start_ts, end_ts=end_ts)
        return [item["value"] for item in history]

    def history_frame(
        self,
        nodes: str | Iterable[str] | None = None,
        interval: IntervalEnum | str = IntervalEnum.DAY,
        start_ts: float | None = None,
        end_ts: float | None = None,
        *,
        library: str = "pandas",
        expand: bool = True,
        state: str | StateBackend | None = None,
        redis_uri: str | None = None,
        namespace: str | None = None,
    ) -> Any:
        """History at ``interval`` as a DataFrame: one row per bucket end, one column per node.

        pandas (default): indexed by bucket end (a UTC ``DatetimeIndex`` named ``ts``), a
        bucket a node has no value for is NaN. ``library="polars"``: a ``ts`` column first,
        nulls for missing buckets. ``nodes`` (a name or names; default every node with that
        interval, query nodes included) picks the columns; a node whose values are dicts (a
        query node's matches, table rows) gives one column per key, ``node.key``, unless
        ``expand=False``. ``start_ts`` is exclusive and ``end_ts`` inclusive, as in
        :meth:`get_history`, from the same state backend and ``namespace`` (default: the
        pipeline's). Needs ``qmtl-core[pandas]`` (or ``[polars]``).
        """
        from qmtl.frames import to_frame

        wanted = to_interval(interval)
        plan = self.build()
        if nodes is None:
            names = [n.name for n in plan.nodes if any(s.interval == wanted for s in n.series)]
        else:
            names = [nodes] if isinstance(nodes, str) else list(nodes)
        histories = {}
        for name in names:
            key, _spec, backend = self._series(
                "history_frame",
                name,
                wanted,
                state,
                redis_uri,
                (None, start_ts, end_ts),
                namespace,
            )
            with naming(name, key.interval):
                histories[name] = backend.read(key, count=None, start_ts=start_ts, end_ts=end_ts)
        return to_frame(histories, library=library, expand=expand)

    def get_node_metadata(
        self,
        node_name: str,
        interval: IntervalEnum | str = IntervalEnum.DAY,
        *,
        state: str | StateBackend | None = None,
        redis_uri: str | None = None,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        """``count``, ``max_items``, ``ttl``, ``last_update``, ``oldest``, ``node_id``, ... of a
        node's series at ``interval`` (under ``namespace``, default the pipeline's)."""
        key, spec, backend = self._series(
            "get_node_metadata", node_name, interval, state, redis_uri, namespace=namespace
        )
        with naming(node_name, key.interval):
            stored = backend.metadata(key)
        meta: dict[str, Any] = {
            "max_items": spec.max_items,
            "ttl": spec.ttl,
            "period": spec.period,
        }
        if stored.get("count"):
            meta.update(stored)  # what applies to the stored series (keep_history: None, None)
        else:
            meta.update({k: v for k, v in stored.items() if v is not None or k not in meta})
        meta.update(
            node=node_name,
            node_id=key.node_id,
            interval=key.interval,
            pipeline=self.name,
            source=backend.name,
        )
        return meta

    def clear_history(
        self,
        node_name: str | None = None,
        interval: IntervalEnum | str | None = None,
        *,
        namespace: str | None = None,
    ) -> int:
        """Delete the history of one node (one interval) or of the whole pipeline (under
        ``namespace``, default the pipeline's own)."""
        backend = self._state(None, {})
        self._in(self.build(), namespace)  # validates the namespace
        node_id = self.build().node(node_name).node_id if node_name else None
        return backend.delete(
            namespace or self.name,
            node_id,
            to_interval(interval).value if interval is not None else None,
        )

    # -- description ----------------------------------------------------------------------
    def to_definition(self) -> dict[str, Any]:
        """Plain JSON-compatible description; validates the pipeline first."""
        plan = self.build()
        nodes = [n.node.definition(plan.view(n.name)) for n in plan.nodes if n.kind != "query"]
        queries = [n.node.definition(plan.view(n.name)) for n in plan.nodes if n.kind == "query"]
        return PipelineDefinition(
            name=self.name,
            type=self.type,
            tags=list(self.tags),
            nodes=nodes,
            query_nodes=queries,
            default_intervals=self.default_intervals,
            bucket_offset=self._offset.text if self._offset else None,
            metadata={key: _plain(value) for key, value in self.metadata.items()},
        ).model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_definition(
        cls, definition: Mapping[str, Any] | PipelineDefinition
    ) -> PipelineDefinition:
        """The validated model of a definition (metadata; rebuild runnable pipelines from code)."""
        if not isinstance(definition, Mapping):
            return PipelineDefinition.model_validate(definition)  # raises ModelValidationError
        return PipelineDefinition.from_definition(dict(definition))

    def visualize(self, format: str = "mermaid", path: str | None = None) -> str:
        """Mermaid, DOT or JSON text of the graph; SVG/PNG written to ``path`` with Graphviz."""
        from qmtl.visualize import render

        return render(self, format=format, path=path)

    # -- notebooks ------------------------------------------------------------------------
    def _repr_svg_(self) -> str | None:
        """The graph as SVG for Jupyter, when Graphviz's ``dot`` is installed (else None, and
        the Mermaid form of :meth:`_repr_mimebundle_` is shown)."""
        from qmtl.visualize import notebook_svg

        return notebook_svg(self)

    def _repr_mimebundle_(
        self, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None
    ) -> dict[str, str]:
        """What Jupyter shows for a pipeline: the graph as SVG (with Graphviz) and as a Mermaid
        diagram in Markdown (rendered by JupyterLab 4.1+ and GitHub), plus the plain repr."""
        from qmtl.visualize import notebook_bundle

        return notebook_bundle(self, include, exclude)

    def __repr__(self) -> str:
        return f"Pipeline(name={self.name!r}, nodes={list(self.nodes)!r})"


def _flag(pipeline: str, option: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise PipelineValidationError(
            f"Pipeline '{pipeline}': {option} must be True or False, got {value!r}"
        )
    return value


def _plain(value: Any) -> Any:
    from qmtl.node import _jsonable

    return _jsonable(value)


__all__ = ["IntervalSettings", "NodeStreamSettings", "Pipeline"]
