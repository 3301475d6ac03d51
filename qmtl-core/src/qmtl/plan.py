"""Compiling a pipeline into an :class:`ExecutionPlan`: validated, ordered, ready to run.

Everything an engine needs is decided here, once: effective stream settings (defaults merged),
node ids, query matches, topological order, how each function is called, and the state key of
every series. Engines never look anything up per node call.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from operator import itemgetter
from typing import Any, Protocol, cast

from qmtl.buckets import NO_OFFSET, BucketOffset, Calendar
from qmtl.calls import Invoker, positional_call
from qmtl.errors import (
    DuplicateNodeError,
    IntervalError,
    MissingPeriodError,
    PipelineValidationError,
    UnknownNodeError,
    UnknownUpstreamError,
)
from qmtl.identity import IdentityMemo
from qmtl.members import FactTable, NodeView, PlanFacts, raw_members
from qmtl.models import IntervalEnum, IntervalSettings, NodeStreamSettings
from qmtl.node import Node, QueryNode
from qmtl.queries import query_id, query_invoker, resolve_queries
from qmtl.shards import Shard, split_shards
from qmtl.state import SeriesKey
from qmtl.toposort import topological_order as topological_order


class PipelineParts(Protocol):
    """What :func:`compile_pipeline` reads from a pipeline (:class:`qmtl.pipeline.Pipeline`)."""

    @property
    def name(self) -> str: ...
    @property
    def nodes(self) -> Mapping[str, Any]: ...
    @property
    def query_nodes(self) -> Mapping[str, Any]: ...
    @property
    def default_intervals(self) -> NodeStreamSettings | None: ...
    @property
    def bucket_offset(self) -> BucketOffset | None: ...


#: Settings a node gets when neither it nor the pipeline names an interval.
BUILTIN_DEFAULT = NodeStreamSettings(
    intervals={IntervalEnum.DAY: IntervalSettings(interval=IntervalEnum.DAY, period=1)}
)


def merge_settings(
    node: str, declared: NodeStreamSettings | None, defaults: NodeStreamSettings | None
) -> NodeStreamSettings:
    """Effective settings of a node: a new object; neither input is changed.

    Intervals only in the defaults are added; intervals only on the node are kept; for intervals
    in both, the period is ``max(node, default)`` (``None`` inherits) and ``max_history`` is the
    node's. Every interval must end with a period.

    Settings are immutable, so a merge is remembered per pair of settings objects: ``add_node``
    and the build ask for the same merge, and nodes declaring equal intervals share one object.
    """
    merged = _MERGED.get(declared, defaults)
    if merged is None:
        merged = _merge(node, declared, defaults)
        _MERGED.put(declared, defaults, merged)
    return merged  # type: ignore[no-any-return]


_MERGED = IdentityMemo()


def _merge(
    node: str, declared: NodeStreamSettings | None, defaults: NodeStreamSettings | None
) -> NodeStreamSettings:
    own = dict(declared.intervals) if declared else {}
    base = dict(defaults.intervals) if defaults else {}
    if not own and not base:
        return BUILTIN_DEFAULT
    merged: dict[IntervalEnum, IntervalSettings] = {}
    for interval in [*own, *(i for i in base if i not in own)]:
        mine, default = own.get(interval), base.get(interval)
        if mine is None:
            chosen = default
        elif default is None or default.period is None:
            chosen = mine
        else:
            period = default.period if mine.period is None else max(mine.period, default.period)
            chosen = mine.model_copy(update={"period": period})
        assert chosen is not None
        if chosen.period is None:
            raise MissingPeriodError(
                f"Node '{node}' has no period for interval '{interval.value}'; set period= on "
                "the node or in the pipeline's default_intervals"
            )
        merged[interval] = chosen
    return NodeStreamSettings(intervals=merged)


@dataclass(frozen=True, slots=True)
class SeriesSpec:
    """One interval a node's output is kept at; ``max_items`` and ``ttl`` are ``None`` when
    the whole history is kept (:func:`keeping_history`)."""

    interval: IntervalEnum
    seconds: int
    period: int
    max_items: int | None
    ttl: int | None
    key: SeriesKey
    #: where its buckets start and end (:mod:`qmtl.buckets`; the pipeline's bucket_offset)
    calendar: Calendar

    def bucket_end(self, ts: float) -> float:
        """The end of the bucket holding ``ts`` (a one-shot run's timestamp)."""
        return self.calendar.end(self.calendar.index(ts))


@dataclass(frozen=True, slots=True)
class PlanNode:
    """One node, ready to run: ``invoke(values)`` takes upstream values in upstream order, and
    ``call(*values)`` is the same call with the values passed positionally (the user's function
    itself when its parameters are the upstreams in order, by name or not): engines use
    ``call``. Replacing ``invoke`` (``dataclasses.replace``) replaces ``call`` with it.
    """

    index: int
    name: str
    node_id: str
    kind: str
    upstreams: tuple[str, ...]
    upstream_index: tuple[int, ...]
    invoke: Invoker
    series: tuple[SeriesSpec, ...]
    window: int | bool | None
    tags: tuple[str, ...]
    node: Node | QueryNode  #: the user's object (never written to)
    settings: NodeStreamSettings | None = None  #: effective stream settings in this pipeline
    call: Callable[..., Any] = field(init=False, repr=False, compare=False)
    #: ``gather(values)``: the upstream values (tuple) out of a plan-indexed list, for two or
    #: more upstreams (``None`` otherwise).
    gather: Callable[[Sequence[Any]], tuple[Any, ...]] | None = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "call", positional_call(self.invoke))
        gather = itemgetter(*self.upstream_index) if len(self.upstream_index) > 1 else None
        object.__setattr__(self, "gather", gather)

    def window_size(self, spec: SeriesSpec) -> int | None:
        """Window length at ``spec``'s interval (``window=True`` means the period)."""
        if self.window is None:
            return None
        return spec.period if self.window is True else int(self.window)

    def spec(self, interval: IntervalEnum | str) -> SeriesSpec:
        """The series spec of ``interval``."""
        for spec in self.series:
            if spec.interval == interval:
                return spec
        raise UnknownNodeError(
            f"Node '{self.name}' has no interval '{interval}'; it has "
            f"{[s.interval.value for s in self.series]}"
        )


@dataclass(frozen=True, slots=True)
class SeriesColumns:
    """Every series of a plan, in plan order, as columns (what bulk writes need): column ``j``
    is series ``keys[j]`` of the node at plan index ``owners[j]``; a node's columns start at
    ``starts[index]`` (``starts[len(nodes)]`` is the total)."""

    keys: tuple[SeriesKey, ...]
    max_items: tuple[int | None, ...]
    ttls: tuple[int | None, ...]
    seconds: tuple[int, ...]
    owners: tuple[int, ...]
    starts: tuple[int, ...]
    distinct_specs: tuple[SeriesSpec, ...]  #: one series spec per interval length
    one_per_node: bool  #: every node keeps exactly one series


@dataclass(frozen=True)
class ExecutionPlan:
    """A validated pipeline: nodes in deterministic topological order, split into ``shards``
    (:mod:`qmtl.shards`; ``shard_of[i]`` is node ``i``'s shard)."""

    pipeline: str
    nodes: tuple[PlanNode, ...]
    by_name: Mapping[str, PlanNode] = field(repr=False)
    shards: tuple[Shard, ...] = field(default=(), repr=False)
    shard_of: tuple[int, ...] = field(default=(), repr=False)

    @cached_property
    def series_columns(self) -> SeriesColumns:
        """Every series of the plan as columns, computed once."""
        specs = [(n.index, spec) for n in self.nodes for spec in n.series]
        starts, total = [], 0
        for n in self.nodes:
            starts.append(total)
            total += len(n.series)
        starts.append(total)
        return SeriesColumns(
            keys=tuple(spec.key for _, spec in specs),
            max_items=tuple(spec.max_items for _, spec in specs),
            ttls=tuple(spec.ttl for _, spec in specs),
            seconds=tuple(spec.seconds for _, spec in specs),
            owners=tuple(index for index, _ in specs),
            starts=tuple(starts),
            distinct_specs=tuple({spec.seconds: spec for _, spec in specs}.values()),
            one_per_node=all(len(n.series) == 1 for n in self.nodes),
        )

    def node(self, name: str) -> PlanNode:
        """The plan node called ``name``; :class:`UnknownNodeError` when there is none."""
        try:
            return self.by_name[name]
        except KeyError:
            raise UnknownNodeError(
                f"Pipeline '{self.pipeline}' has no node '{name}'; it has {sorted(self.by_name)}"
            ) from None

    @property
    def sources(self) -> tuple[PlanNode, ...]:
        """Nodes without upstreams."""
        return tuple(n for n in self.nodes if not n.upstreams)

    def view(self, name: str) -> Any:
        """The node called ``name`` as this plan sees it (settings, node id, matches): a
        :class:`~qmtl.members.NodeView`, what selectors and definitions read."""
        return NodeView(self.node(name).node, PlanFacts(self.by_name))

    def downstream(self) -> dict[str, list[str]]:
        """Name → names of the nodes that read it, in plan order."""
        result: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for upstream in n.upstreams:
                result[upstream].append(n.name)
        return result


def keeping_history(plan: ExecutionPlan) -> ExecutionPlan:
    """``plan`` with every series kept whole until it is deleted: no TTL, no ``max_history``
    cap (a backtest's ``keep_history``). Node ids and state keys are unchanged."""
    nodes = tuple(
        replace(
            node,
            series=tuple(replace(spec, max_items=None, ttl=None) for spec in node.series),
        )
        for node in plan.nodes
    )
    return ExecutionPlan(plan.pipeline, nodes, {n.name: n for n in nodes})


def compile_pipeline(pipeline: PipelineParts) -> ExecutionPlan:
    """Validate ``pipeline`` completely and return its plan. Nothing is written into the
    pipeline's nodes: what depends on the pipeline (effective settings, ids, matches) is the
    plan's.

    The cyclic garbage collector is paused while the plan is built: a build allocates tens of
    thousands of long-lived objects and nothing cyclic to collect, and a collection pass per few
    hundred of them was a third of the time of a large build.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        return _compile(pipeline)
    finally:
        if paused:
            gc.enable()


def _compile(pipeline: PipelineParts) -> ExecutionPlan:
    nodes: dict[str, Node] = {}
    for key, node in raw_members(pipeline.nodes).items():
        if not isinstance(node, Node):
            raise PipelineValidationError(
                f"pipeline.nodes['{key}'] is {type(node).__name__}, not a Node"
            )
        if key != node.name:
            raise PipelineValidationError(
                f"pipeline.nodes['{key}'] holds node '{node.name}'; use the node's name as key"
            )
        nodes[key] = node
    queries: dict[str, QueryNode] = {}
    for key, query in raw_members(pipeline.query_nodes).items():
        if not isinstance(query, QueryNode):
            raise PipelineValidationError(
                f"pipeline.query_nodes['{key}'] is {type(query).__name__}, not a QueryNode; "
                "add nodes with add_node"
            )
        if key != query.name:
            raise PipelineValidationError(
                f"pipeline.query_nodes['{key}'] holds query node '{query.name}'; use its name"
            )
        if key in nodes:
            raise DuplicateNodeError(f"'{key}' is both a node and a query node; rename one")
        for candidate in query.candidates or ():
            if candidate not in nodes:
                raise UnknownUpstreamError(
                    f"Query node '{key}' names upstream '{candidate}', which is not a node of "
                    f"pipeline '{pipeline.name}' (a query matches nodes; nodes: {sorted(nodes)})"
                )
        queries[key] = query

    defaults = pipeline.default_intervals
    offset = pipeline.bucket_offset
    effective = {
        name: merge_settings(name, n.declared_stream_settings, defaults)
        for name, n in nodes.items()
    }

    matches = resolve_queries(nodes, queries, effective, getattr(pipeline, "tag_index", None))
    upstreams: dict[str, list[str]] = {name: list(n.upstreams) for name, n in nodes.items()}
    upstreams.update(matches)
    names = [*nodes, *queries]
    for name in names:
        for upstream in upstreams[name]:
            if upstream not in upstreams:
                raise UnknownUpstreamError(
                    f"Node '{name}' names upstream '{upstream}', which is not in pipeline "
                    f"'{pipeline.name}'; add it or fix the name (nodes: {sorted(upstreams)})"
                )
    order = topological_order(names, upstreams)

    query_settings = {
        name: _query_settings(queries[name], [effective.get(m) for m in matches[name]], defaults)
        for name in queries
    }
    effective.update(query_settings)
    _check_interval_coverage(order, upstreams, effective, queries)

    position = {name: i for i, name in enumerate(order)}
    zone = offset or NO_OFFSET
    calendars: dict[int, Calendar] = {}
    ids: dict[str, str] = {}
    facts = FactTable(effective, ids, upstreams)  # what selectors see of the matches
    owners: dict[str, str] = {}
    plan_nodes: list[PlanNode] = []
    tags: tuple[str, ...]
    for name in order:
        settings = effective[name]
        if name in queries:
            query = queries[name]
            node_id = query_id(query, [ids[u] for u in upstreams[name]])
            matched = [cast("Node", NodeView(nodes[u], facts)) for u in upstreams[name]]
            invoke, kind, tags, window = query_invoker(query, matched), "query", (), None
            obj: Node | QueryNode = query
        else:
            node = nodes[name]
            node_id = node.compute_id([ids[u] for u in node.upstreams], settings)
            invoke, kind, tags, window = node.invoker(), node.kind, tuple(node.tags), node.window
            obj = node
        if node_id in owners:
            raise PipelineValidationError(
                f"Nodes '{owners[node_id]}' and '{name}' have the same node id: they compute the "
                "same thing, so their histories would be one series. Remove one, or make them "
                "differ in a key param (key_params=[...]) or in the values their functions use "
                "(a source object: in its attributes, or in what its __qmtl_key__() returns)"
            )
        owners[node_id] = name
        ids[name] = node_id
        series = tuple(
            SeriesSpec(
                interval,
                seconds,
                period,
                max_items,
                ttl,
                SeriesKey(pipeline.name, node_id, value),
                calendars.get(seconds) or calendars.setdefault(seconds, zone.calendar(seconds)),
            )
            for interval, value, seconds, period, max_items, ttl in _series_of(settings)
        )
        plan_nodes.append(
            PlanNode(
                index=len(plan_nodes),
                name=name,
                node_id=node_id,
                kind=kind,
                upstreams=tuple(upstreams[name]),
                upstream_index=tuple(position[u] for u in upstreams[name]),
                invoke=invoke,
                series=series,
                window=window,
                tags=tags,
                node=obj,
                settings=settings,
            )
        )
    shards, shard_of = split_shards(plan_nodes)
    return ExecutionPlan(
        pipeline.name, tuple(plan_nodes), {n.name: n for n in plan_nodes}, shards, shard_of
    )


def _series_of(settings: NodeStreamSettings) -> list[tuple[IntervalEnum, str, int, int, int, int]]:
    """``(interval, its name, seconds, period, max_items, ttl)`` of every interval of
    ``settings`` (remembered per settings object: nodes share them)."""
    found = _SERIES.get(settings)
    if found is None:
        found = [
            (
                s.interval,
                s.interval.value,
                s.interval.seconds,
                int(s.period or 1),
                s.max_history,
                int(s.period or 1) * s.interval.seconds,
            )
            for s in settings.intervals.values()
        ]
        _SERIES.put(settings, None, found)
    return found  # type: ignore[no-any-return]


_SERIES = IdentityMemo()


def _query_settings(
    query: QueryNode,
    matched: Sequence[NodeStreamSettings | None],
    defaults: NodeStreamSettings | None,
) -> NodeStreamSettings:
    """A query node keeps its value at its own ``stream_settings``, else at its ``interval``,
    else at the intervals all matches share."""
    if query.declared_stream_settings is not None:
        return merge_settings(query.name, query.declared_stream_settings, defaults)
    if query.interval is not None:
        wanted = [query.interval]
    elif matched:
        common = set.intersection(*(set(m.intervals) if m else set() for m in matched))
        first = matched[0]
        wanted = [i for i in first.intervals if i in common] if first else []
    else:
        wanted = []
    if not wanted:
        return merge_settings(query.name, None, defaults)
    intervals = {}
    for interval in wanted:
        periods = [
            m.intervals[interval].period or 1 for m in matched if m and interval in m.intervals
        ]
        intervals[interval] = IntervalSettings(
            interval=interval, period=query.period or max(periods, default=1)
        )
    return NodeStreamSettings(intervals=intervals)


def _check_interval_coverage(
    order: Sequence[str],
    upstreams: Mapping[str, Sequence[str]],
    effective: Mapping[str, NodeStreamSettings],
    queries: Mapping[str, QueryNode],
) -> None:
    for name in order:
        if name in queries and queries[name].declared_stream_settings is None:
            continue  # derived from its matches (see _query_settings)
        for upstream in upstreams[name]:
            theirs = effective[upstream].intervals
            for interval in effective[name].intervals:
                if interval not in theirs:
                    raise IntervalError(
                        f"Node '{name}' runs at '{interval.value}' but its upstream "
                        f"'{upstream}' has no '{interval.value}' series; add '{interval.value}' "
                        f"to '{upstream}' (it has {[i.value for i in theirs]})"
                    )
