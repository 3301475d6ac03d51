"""Nodes: the small functions a strategy is made of.

A node describes a computation; it does not run itself. Engines run nodes through the compiled
:class:`qmtl.plan.ExecutionPlan`. How a node's function is called is decided once, when the node
is constructed (:mod:`qmtl.calls`): if it takes ``**kwargs`` or has a parameter named after
every upstream, upstream values are passed by name; otherwise positionally, in ``upstreams``
order. Extra keyword ``params`` always go by keyword. A function that cannot be bound that way
is an error when the node is constructed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from qmtl.calls import CallStyle, Invoker, call_style, make_invoker
from qmtl.errors import (
    IntervalError,
    MissingInputError,
    ModelValidationError,
    PipelineValidationError,
    UnbindableFunctionError,
)
from qmtl.identity import IdentityMemo, content_id, function_fingerprint, stable_repr
from qmtl.members import Member, SeenInPipeline
from qmtl.models import (
    IntervalEnum,
    IntervalSettings,
    NodeDefinition,
    NodeStreamSettings,
    QueryNodeDefinition,
    QueryNodeResultSelector,
    to_interval,
)
from qmtl.selectors import as_selectors
from qmtl.sources import latest_of
from qmtl.tables import TableSource, is_table


def _stream_settings(
    node: str,
    stream_settings: NodeStreamSettings | Mapping[str, Any] | None,
    interval_settings: Mapping[Any, Any] | None,
) -> NodeStreamSettings | None:
    if stream_settings is not None and interval_settings is not None:
        raise PipelineValidationError(
            f"Node '{node}' got both stream_settings and interval_settings; pass only one"
        )
    for option, value in (
        ("interval_settings", interval_settings),
        ("stream_settings", stream_settings),
    ):
        if value is not None and not isinstance(value, Mapping | NodeStreamSettings):
            raise PipelineValidationError(
                f"Node '{node}': {option} must be a mapping of interval to settings, such as "
                f"{{'1d': {{'period': 30}}}}, not {type(value).__name__}"
            )
    try:
        if interval_settings is not None:
            return _intervals(interval_settings)
        if stream_settings is None or isinstance(stream_settings, NodeStreamSettings):
            return stream_settings
        if "intervals" in stream_settings:
            return NodeStreamSettings.model_validate(dict(stream_settings))
        return _intervals(stream_settings)
    except (ModelValidationError, IntervalError) as error:
        raise type(error)(f"Node '{node}': {error}") from error


def _intervals(intervals: Mapping[Any, Any]) -> NodeStreamSettings:
    """The settings of ``{interval: settings}``. Plain data (settings as dicts of scalars, or
    models) is validated once per distinct content and the frozen result shared, so ten
    thousand nodes declaring the same intervals cost one validation."""
    try:
        key = tuple(map(_content, intervals.items()))
        hash(key)
    except TypeError:  # unhashable content: validate it as it is
        return NodeStreamSettings(intervals=dict(intervals))
    return _validated(key)


def _content(item: tuple[Any, Any]) -> Any:
    """A hashable stand-in for one ``interval: settings`` item (the type of every scalar
    included, so ``True`` and ``1`` stay apart)."""
    interval, settings = item
    if type(settings) is dict:
        return (
            interval,
            type(interval),
            True,
            tuple(settings.items()),
            *map(type, settings.values()),
        )
    return (interval, type(interval), False, settings, type(settings))


@functools.lru_cache(maxsize=1024)
def _validated(key: tuple[tuple[Any, ...], ...]) -> NodeStreamSettings:
    intervals = {item[0]: dict(item[3]) if item[2] else item[3] for item in key}
    return NodeStreamSettings(intervals=intervals)


class Node(Member):
    """A node: ``fn`` applied to its upstreams' values (a source when it has no upstreams).

    ``interval_settings`` is shorthand for ``stream_settings``. ``window=N`` delivers each
    upstream as a list of its last ``N`` values (oldest first); ``window=True`` means the node's
    period. Extra keyword arguments are ``params`` passed to ``fn``; ``key_params`` names those
    that enter the node id. ``vectorized=True`` declares that ``fn`` takes numpy arrays, one row
    per bucket, and returns one row per row (see :mod:`qmtl.vectorized`; needs numpy).
    ``shard`` (a reserved keyword, never a param) names the shard the node runs in on a sharded
    engine (:mod:`qmtl.shards`); it does not change the node id.
    """

    kind: str = "node"
    #: Effective settings in the pipeline this node was last added to (the seed reads them
    #: after ``add_node``), else the declared ones; ``pipeline.nodes[name].stream_settings`` is
    #: one pipeline's (:mod:`qmtl.members`). Assigning declares the node's own settings.
    stream_settings = SeenInPipeline(
        lambda p, name: p.settings_of(name),
        lambda node: node.declared_stream_settings,
        lambda node, value: setattr(
            node, "declared_stream_settings", _stream_settings(node.name, value, None)
        ),
        built=False,
    )
    #: Content id: the one of the pipeline this node was last added to once it is built
    #: (upstream ids, effective settings), else computed with the upstreams' names.
    node_id = SeenInPipeline(
        lambda p, name: p.node_id_of(name),
        lambda node: node.compute_id(node.upstreams, node.stream_settings),
    )

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any] | None = None,
        upstreams: Iterable[str | Node] | None = None,
        tags: Iterable[str] | None = None,
        stream_settings: NodeStreamSettings | Mapping[str, Any] | None = None,
        interval_settings: Mapping[Any, Any] | None = None,
        key_params: Iterable[str] | None = None,
        window: int | bool | None = None,
        vectorized: bool = False,
        shard: str | None = None,
        **params: Any,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise PipelineValidationError(f"A node name must be a non-empty string, got {name!r}")
        self.name = name
        if shard is not None and (
            not isinstance(shard, str) or not shard.strip() or shard.startswith("@")
        ):
            raise PipelineValidationError(
                f"Node '{name}': shard must be a non-empty name not starting with '@' (those "
                f"are the default shards' ids), got {shard!r}"
            )
        #: The shard the node runs in on a sharded engine; ``None``: the default rule
        #: (:mod:`qmtl.shards`). Placement only: it is not part of the node id.
        self.shard = shard
        if fn is None or not callable(fn):
            raise UnbindableFunctionError(f"Node '{name}' needs a callable fn, got {fn!r}")
        self.fn = fn
        self.upstreams: list[str] = [
            u.name if isinstance(u, Node) else u for u in _names(name, "upstreams", upstreams)
        ]
        for upstream in self.upstreams:
            if not isinstance(upstream, str):
                raise PipelineValidationError(
                    f"Node '{name}': upstream {upstream!r} must be a node name or a Node"
                )
        if len(set(self.upstreams)) != len(self.upstreams):
            raise PipelineValidationError(
                f"Node '{name}' lists an upstream twice: {self.upstreams}"
            )
        self.tags: list[str] = list(_names(name, "tags", tags))
        for tag in self.tags:
            if not isinstance(tag, str):
                raise PipelineValidationError(
                    f"Node '{name}': tag {tag!r} is not a string; tags are a list of strings"
                )
        self.params: dict[str, Any] = params
        self.key_params: list[str] = sorted(key_params or ())
        missing = [key for key in self.key_params if key not in params]
        if missing:
            raise PipelineValidationError(
                f"Node '{name}': key_params {missing} are not among its params {sorted(params)}"
            )
        if (
            window is not None
            and (window is not True)
            and (isinstance(window, bool) or not isinstance(window, int) or window < 1)
        ):
            raise PipelineValidationError(
                f"Node '{name}': window must be a positive int or True, got {window!r}"
            )
        self.window = window
        self.declared_stream_settings = _stream_settings(name, stream_settings, interval_settings)
        self.call_style: CallStyle
        #: For each leading parameter of ``fn``, the upstream it takes (``None``: by keyword).
        self.call_order: tuple[int, ...] | None
        self.call_style, self.call_order = call_style(name, fn, self.upstreams, params)
        self.vectorized = _vectorized(name, vectorized, self.upstreams)

    # -- identity -------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """What this node computes, apart from its upstreams and settings."""
        return function_fingerprint(self.fn)

    def compute_id(self, upstream_ids: Sequence[str], settings: NodeStreamSettings | None) -> str:
        """The content id given upstream ids and effective settings."""
        key_values = {key: self.params[key] for key in self.key_params}
        parts = [
            self.kind,
            self.fingerprint(),
            ",".join(upstream_ids),
            _json_of(settings) if settings else "",
            stable_repr(key_values),
            stable_repr(self.window),
        ]
        if self.vectorized:  # fn means something else over arrays; other ids stay as they were
            parts.append("vectorized")
        return content_id(*parts)

    @property
    def intervals(self) -> list[IntervalEnum]:
        """Intervals of the effective settings."""
        return list(self.stream_settings.intervals) if self.stream_settings else []

    # -- calling --------------------------------------------------------------------------
    def invoker(self) -> Invoker:
        """``call(values)`` with upstream values in ``upstreams`` order."""
        if self.vectorized:
            from qmtl.vectorized import row_invoker

            return row_invoker(self.name, self.fn, self.upstreams, self.params, self.call_style)
        return make_invoker(self.fn, self.upstreams, self.params, self.call_order)

    def execute(self, inputs: Mapping[str, Any] | None = None) -> Any:
        """Call the function once with upstream values taken from ``inputs`` by name."""
        inputs = inputs or {}
        missing = [name for name in self.upstreams if name not in inputs]
        if missing:
            raise MissingInputError(
                f"Node '{self.name}' needs upstream value(s) {missing}; pass them in inputs"
            )
        return self.invoker()([inputs[name] for name in self.upstreams])

    # -- description ----------------------------------------------------------------------
    def to_definition(self) -> dict[str, Any]:
        """Plain JSON-compatible description (the function is not serialised)."""
        return self.definition(self)

    def definition(self, seen: Any) -> dict[str, Any]:
        """The description with ``seen``'s node id and settings (this node, or a view)."""
        return NodeDefinition(
            name=self.name,
            node_id=seen.node_id,
            type=self.kind,
            tags=list(self.tags),
            upstreams=list(self.upstreams),
            key_params=list(self.key_params),
            params={key: _jsonable(value) for key, value in self.params.items()},
            window=self.window if type(self.window) is int else None,
            vectorized=True if self.vectorized else None,
            stream_settings=seen.stream_settings,
            shard=self.shard,
        ).model_dump(mode="json", exclude_none=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, upstreams={self.upstreams!r})"


def _vectorized(node: str, vectorized: Any, upstreams: Sequence[str]) -> bool:
    if not isinstance(vectorized, bool):
        raise PipelineValidationError(
            f"Node '{node}': vectorized must be True or False, got {vectorized!r}"
        )
    if vectorized and not upstreams:
        raise PipelineValidationError(
            f"Node '{node}' is vectorized but has no upstreams: a vectorized function takes "
            "its upstreams as arrays; drop vectorized=True from the source"
        )
    if vectorized:
        from qmtl.vectorized import numpy_module

        numpy_module(f"Node '{node}' is vectorized, which")
    return vectorized


def _json_of(settings: NodeStreamSettings) -> str:
    """``settings.model_dump_json()``, remembered per (immutable) settings object."""
    text = _JSON.get(settings)
    if text is None:
        text = settings.model_dump_json()
        _JSON.put(settings, None, text)
    return text  # type: ignore[no-any-return]


_JSON = IdentityMemo()


def _names(node: str, option: str, value: Any) -> list[Any]:
    """``value`` as a list: ``None`` is empty, one string is one item (not its characters)."""
    if value is None:
        return []
    if isinstance(value, str | Node):
        return [value]
    if not isinstance(value, Iterable) or isinstance(value, bytes | Mapping):
        raise PipelineValidationError(
            f"Node '{node}': {option} must be a list of strings, got {value!r}"
        )
    return list(value)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    return stable_repr(value)


class ProcessingNode(Node):
    """A node that must have at least one upstream."""

    kind = "node"

    def __init__(self, name: str, fn: Callable[..., Any] | None = None, **kwargs: Any) -> None:
        super().__init__(name, fn, **kwargs)
        if not self.upstreams:
            raise PipelineValidationError(
                f"ProcessingNode '{name}' needs at least one upstream; use Node or SourceNode "
                "for a source"
            )


class SourceNode(Node):
    """A node with no upstreams, fed by ``source``.

    ``source`` is a callable (called for the one-shot form), an iterable or generator of values
    or ``(ts, value)`` pairs, or a :class:`qmtl.sources.SourceProcessor`; see
    :mod:`qmtl.sources` for how each feeds a streaming run. It may also be a table: a pandas
    ``DataFrame``/``Series``, a polars ``DataFrame``, a pyarrow ``Table`` or a path to a
    ``.parquet``/``.csv`` file, read as a :class:`qmtl.tables.TableSource`: ``ts`` names the
    time column (default: a pandas index, else the only datetime column), ``value`` the value
    column (default: each row as a dict), ``ts_unit`` the unit of an epoch number column
    (default seconds). ``allowed_lateness`` (seconds, default 0) keeps buckets open that long
    past the highest event time seen.
    """

    kind = "source"

    def __init__(
        self,
        name: str,
        source: Any = None,
        *,
        fn: Callable[..., Any] | None = None,
        allowed_lateness: float | None = None,
        ts: str | None = None,
        value: str | None = None,
        ts_unit: str | None = None,
        **kwargs: Any,
    ) -> None:
        if is_table(source):
            source = TableSource(source, ts=ts, value=value, ts_unit=ts_unit, name=name)
        elif ts is not None or value is not None or ts_unit is not None:
            raise PipelineValidationError(
                f"SourceNode '{name}': ts=, value= and ts_unit= describe the columns of a table "
                f"source (a DataFrame, a pyarrow Table, a .parquet or .csv path), but source is "
                f"{type(source).__name__}"
            )
        if kwargs.get("upstreams"):
            raise PipelineValidationError(f"SourceNode '{name}' cannot have upstreams")
        if source is None and fn is None:
            raise PipelineValidationError(
                f"SourceNode '{name}' needs source= (a callable, an iterable or a SourceProcessor)"
            )
        if allowed_lateness is not None and (
            isinstance(allowed_lateness, bool)
            or not isinstance(allowed_lateness, int | float)
            or not allowed_lateness >= 0
        ):
            raise PipelineValidationError(
                f"SourceNode '{name}': allowed_lateness must be seconds >= 0, "
                f"got {allowed_lateness!r}"
            )
        self.source = source if source is not None else fn
        #: Seconds a bucket stays open after the highest event time seen (streaming); events
        #: for a bucket already closed are counted late and dropped.
        self.allowed_lateness = allowed_lateness
        super().__init__(name, latest_of(name, self.source), **kwargs)

    def fingerprint(self) -> str:
        """What feeds the source: a callable's code, or the data's content.

        A list or tuple of events is fingerprinted by its length and a sample (the first and
        last 64 items and 256 spread evenly), so a million-event backtest list does not cost a
        full serialisation to identify; other sources by their stable repr.
        """
        source = self.source
        if callable(source) and not hasattr(source, "events"):
            return function_fingerprint(source)
        if isinstance(source, list | tuple) and len(source) > 512:
            step = max(1, len(source) // 256)
            sample = [*source[:64], *source[64:-64:step], *source[-64:]]
            return f"{type(source).__name__}:{len(source)}:{stable_repr(sample)}"
        return stable_repr(source)


class QueryNode(Member):
    """A node whose value is ``{matched_name: value}`` for every node whose tags match.

    ``match_mode="all"`` (default) needs every tag, ``"any"`` at least one; tags compare as exact
    strings. ``interval`` and ``period`` (a count of intervals or a duration such as ``"7d"``)
    must hold on the **same** interval entry of a matched node's effective settings; the enum
    and its string are equal. Matching happens when the pipeline is built, through a tag index.
    ``result_selectors`` then narrow the matches (see :mod:`qmtl.selectors`); ``fn``, when given,
    is applied to the selected dict. Other nodes may list a query node as an upstream.

    Seed keywords: ``upstreams`` limits the candidates to those nodes (names or nodes; the query
    matches the ones whose tags and filters hold); ``stream_settings`` (or
    ``interval_settings``) sets the intervals and periods the query's value is kept at, instead
    of the ones its matches share (every match must keep them too); ``result_selector`` is one
    more selector, applied after ``result_selectors``.
    """

    kind = "query"
    #: The matches, settings and id in the pipeline this query was last added to, once built.
    upstreams = SeenInPipeline(
        lambda p, name: p.upstreams_of(name),
        lambda query: list(query.declared_upstreams),
        lambda query, value: setattr(query, "declared_upstreams", list(value)),
    )
    stream_settings = SeenInPipeline(
        lambda p, name: p.settings_of(name), lambda query: query.declared_stream_settings
    )
    node_id = SeenInPipeline(lambda p, name: p.node_id_of(name), lambda query: query.own_id())

    def __init__(
        self,
        name: str,
        tags: Iterable[str] | str,
        match_mode: Literal["all", "any"] = "all",
        interval: IntervalEnum | str | None = None,
        period: int | str | None = None,
        fn: Callable[[dict[str, Any]], Any] | None = None,
        result_selectors: Iterable[QueryNodeResultSelector | Mapping[str, Any]] | None = None,
        *,
        upstreams: Iterable[str | Node] | None = None,
        stream_settings: NodeStreamSettings | Mapping[str, Any] | None = None,
        interval_settings: Mapping[Any, Any] | None = None,
        result_selector: QueryNodeResultSelector | Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise PipelineValidationError(
                f"A query node name must be a non-empty string, got {name!r}"
            )
        #: The nodes the query may match (``None``: every node of the pipeline).
        self.candidates: list[str] | None = (
            None
            if upstreams is None
            else [
                u.name if isinstance(u, Node) else u for u in _names(name, "upstreams", upstreams)
            ]
        )
        self.declared_stream_settings = _stream_settings(name, stream_settings, interval_settings)
        if match_mode not in ("all", "any"):
            raise PipelineValidationError(
                f"QueryNode '{name}': match_mode must be 'all' or 'any', got {match_mode!r}"
            )
        self.name = name
        self.query_tags: list[str] = [tags] if isinstance(tags, str) else list(tags or ())
        if not self.query_tags or not all(isinstance(t, str) for t in self.query_tags):
            raise PipelineValidationError(
                f"QueryNode '{name}' needs at least one tag (strings), got {tags!r}"
            )
        self.tags: list[str] = []
        self.match_mode = match_mode
        self.interval = to_interval(interval) if interval is not None else None
        if period is not None and self.interval is not None:
            period = IntervalSettings(interval=self.interval, period=period).period
        elif period is not None and (
            isinstance(period, bool) or not isinstance(period, int) or period < 1
        ):
            raise PipelineValidationError(
                f"QueryNode '{name}': period {period!r} needs interval= (a duration such as "
                "'7d' is converted to a count of intervals), or pass a count >= 1"
            )
        self.period: int | None = period
        if fn is not None and not callable(fn):
            raise UnbindableFunctionError(f"QueryNode '{name}': fn must be callable, got {fn!r}")
        self.fn = fn
        self.result_selectors: list[QueryNodeResultSelector] = as_selectors(
            result_selectors, f"QueryNode '{name}'"
        ) + as_selectors(None if result_selector is None else [result_selector], name)
        self.declared_upstreams: list[str] = []
        self.window = None

    def matches(self, node: Node) -> bool:
        """Whether ``node`` satisfies the tags and the interval/period filter (one entry)."""
        tags = node.tags
        wanted = self.query_tags
        hit = (
            all(t in tags for t in wanted)
            if self.match_mode == "all"
            else any(t in tags for t in wanted)
        )
        return hit and self.entry_matches(node)

    def entry_matches(self, node: Node) -> bool:
        """Whether one interval entry of ``node`` has the query's interval and period."""
        if self.interval is None and self.period is None:
            return True
        entries = node.stream_settings.intervals.values() if node.stream_settings else ()
        return any(
            (self.interval is None or entry.interval == self.interval)
            and (self.period is None or entry.period == self.period)
            for entry in entries
        )

    @property
    def matched(self) -> list[str]:
        """Names of the matched nodes (known once the pipeline is built)."""
        return list(self.upstreams)

    def own_id(self) -> str:
        """The id of the query's criteria alone (outside a built pipeline)."""
        return content_id(
            self.kind,
            ",".join(self.query_tags),
            self.match_mode,
            self.interval.value if self.interval else "",
            stable_repr(self.period),
        )

    def to_definition(self) -> dict[str, Any]:
        """Plain JSON-compatible description (``fn`` is not serialised)."""
        return self.definition(self)

    def definition(self, seen: Any) -> dict[str, Any]:
        """The description with ``seen``'s node id and matches (this query, or a view)."""
        return QueryNodeDefinition(
            name=self.name,
            node_id=seen.node_id,
            query_tags=list(self.query_tags),
            match_mode=self.match_mode,
            interval=self.interval,
            period=self.period,
            matches=list(seen.upstreams),
            result_selectors=list(self.result_selectors),
            upstreams=self.candidates,
            stream_settings=self.declared_stream_settings,
        ).model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_definition(
        cls,
        definition: QueryNodeDefinition | Mapping[str, Any],
        fn: Callable[[dict[str, Any]], Any] | None = None,
    ) -> QueryNode:
        """Rebuild a query node from :meth:`to_definition` (give ``fn`` again; it is code)."""
        if not isinstance(definition, QueryNodeDefinition):
            definition = QueryNodeDefinition.from_definition(dict(definition))
        return cls(
            definition.name,
            definition.query_tags,
            match_mode=definition.match_mode,
            interval=definition.interval,
            period=definition.period,
            fn=fn,
            result_selectors=definition.result_selectors,
            upstreams=definition.upstreams,
            stream_settings=definition.stream_settings,
        )

    def __repr__(self) -> str:
        return (
            f"QueryNode(name={self.name!r}, tags={self.query_tags!r}, "
            f"match_mode={self.match_mode!r})"
        )
