"""Choosing and shaping a query node's matches: result selectors and the query's value.

A query node's *matches* are resolved when the pipeline is built (tags, ``match_mode``, and the
interval/period filter on one interval entry). Its :class:`~qmtl.models.QueryNodeResultSelector`
steps then narrow the matches, in list order:

``list``
    keeps every match.
``filter``
    keeps the nodes for which **every** key of ``filter_meta`` holds (AND). Keys:

    * ``tags``: a tag or a list of tags, each of which the node carries (exact strings);
    * ``stream_settings`` (``{"intervals": {"1d": {...}}}``) or ``interval_settings``
      (``{"1d": {...}}``): for each listed interval the node has that interval entry, and every
      listed field of it (``interval``, ``period`` — a count or a duration such as ``"7d"`` —,
      ``max_history``) equals the node's effective value;
    * ``interval`` / ``period``: the node has one interval entry matching both;
    * node attributes ``name``, ``node_id``, ``type`` (``kind``), ``upstreams``, ``key_params``,
      ``params``, ``window``: equality; a list asks that every item is present, a dict that
      every key holds recursively.

    An unknown key (one of :data:`~qmtl.models.FILTER_KEYS` is expected) is a
    :class:`~qmtl.errors.ModelValidationError` when the selector is made.
``random``
    draws ``sample_size`` of the remaining nodes (all of them when fewer remain). With ``seed``
    the draw is the same in every run and on every engine; without it each evaluation draws anew.
``batch``
    splits the selection into batches of ``batch_size`` (pipeline order). The value exposes them:
    without ``fn`` the value is a :class:`QueryResult` whose ``batches`` lists the node names of
    each batch; with ``fn``, ``fn`` is called once per batch and the value is the list of its
    results, one per batch.

**When selection happens.** Matching is done at build time. Selection is computed at build time
too when it is deterministic (no unseeded ``random`` step), else at each evaluation. The query
node still depends on *all* its matches, so its node id and history series do not change with
the selection (call-site ``selectors=`` of :meth:`qmtl.analyzer.Analyzer.execute` replace the
node's own for that run and record into the same series); in a one-shot run every node of the
pipeline runs anyway, selected or not.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from qmtl.errors import ModelValidationError
from qmtl.models import (
    IntervalEnum,
    IntervalSettings,
    NodeStreamSettings,
    QueryNodeResultSelector,
    period_in_intervals,
    to_interval,
)


class Node(Protocol):
    """What a selector reads of a candidate (a :class:`qmtl.node.Node`): its name, tags and
    effective stream settings; a ``filter`` may name any other attribute."""

    @property
    def name(self) -> str: ...
    @property
    def tags(self) -> list[str]: ...
    @property
    def stream_settings(self) -> NodeStreamSettings | None: ...


SelectorsInput = Iterable[QueryNodeResultSelector | Mapping[str, Any]] | None


def as_selectors(
    selectors: SelectorsInput, owner: str = "query node"
) -> list[QueryNodeResultSelector]:
    """Validated selectors from models or plain dicts; unknown modes and keys are errors."""
    if selectors is None:
        return []
    if isinstance(selectors, QueryNodeResultSelector | Mapping):
        selectors = [selectors]
    result = []
    for selector in selectors:
        if not isinstance(selector, QueryNodeResultSelector):
            if not isinstance(selector, Mapping):
                raise ModelValidationError(
                    f"{owner}: a selector must be a QueryNodeResultSelector or a dict, "
                    f"got {type(selector).__name__}"
                )
            selector = QueryNodeResultSelector(**selector)
        result.append(selector)
    return result


@dataclass(frozen=True, slots=True)
class Selection:
    """The names a query keeps, in pipeline order, and how they are batched."""

    names: tuple[str, ...]
    batches: tuple[tuple[str, ...], ...]
    batched: bool


class QueryResult(dict[str, Any]):
    """A query node's value without ``fn``: ``{matched_name: value}``.

    It compares equal to a plain dict; ``batches`` lists the node names of each batch (one
    batch holding every name unless a ``batch`` selector split them). Values stored in a state
    backend or sent over Kafka are plain dicts.
    """

    __slots__ = ("batches",)
    #: qmtl.codec carries it as the plain dict it compares equal to (batches stay local).
    _qmtl_carried_as = dict

    def __init__(self, items: Iterable[tuple[str, Any]], batches: Sequence[Sequence[str]]) -> None:
        super().__init__(items)
        self.batches: list[list[str]] = [list(batch) for batch in batches]

    def batch_values(self) -> list[dict[str, Any]]:
        """The value as one ``{name: value}`` dict per batch."""
        return [{name: self[name] for name in batch if name in self} for batch in self.batches]


def select(
    selectors: Sequence[QueryNodeResultSelector],
    candidates: Sequence[Node],
    rng: random.Random | None = None,
) -> Selection:
    """Apply ``selectors`` in order to ``candidates`` (the query's matches, pipeline order)."""
    order = {node.name: i for i, node in enumerate(candidates)}
    current = list(candidates)
    batch_size: int | None = None
    for selector in selectors:
        mode = selector.mode
        if mode == "list":
            continue
        if mode == "filter":
            meta = selector.filter_meta or {}
            current = [node for node in current if node_matches(node, meta)]
        elif mode == "random":
            size = selector.sample_size or len(current)
            if size < len(current):
                draw = (
                    random.Random(selector.seed)
                    if selector.seed is not None
                    else (rng or random.Random())
                )
                current = sorted(draw.sample(current, size), key=lambda n: order[n.name])
        elif mode == "batch":
            batch_size = selector.batch_size
        else:  # pragma: no cover - the model's Literal already rejects it
            raise ModelValidationError(f"Unknown selector mode {mode!r}")
    names = tuple(node.name for node in current)
    if batch_size is None:
        return Selection(names, (names,) if names else (), batched=False)
    batches = tuple(names[i : i + batch_size] for i in range(0, len(names), batch_size))
    return Selection(names, batches, batched=True)


def is_deterministic(selectors: Sequence[QueryNodeResultSelector]) -> bool:
    """Whether :func:`select` gives the same names every time (no unseeded random draw)."""
    return all(s.mode != "random" or s.seed is not None for s in selectors)


def query_value(
    selection: Selection,
    values: Mapping[str, Any],
    fn: Callable[[dict[str, Any]], Any] | None,
) -> Any:
    """The query's value from its matches' ``values``: a :class:`QueryResult`, ``fn`` of it,
    or (``batch`` with ``fn``) the list of ``fn`` of each batch."""
    present = [name for name in selection.names if name in values]
    result = QueryResult(((name, values[name]) for name in present), selection.batches)
    if fn is None:
        return result
    if selection.batched:
        return [fn(batch) for batch in result.batch_values()]
    return fn(dict(result))


# -- the filter predicate ---------------------------------------------------------------------


def node_matches(node: Node, meta: Mapping[str, Any]) -> bool:
    """Whether every key of ``meta`` holds for ``node`` (see the module docstring)."""
    for key, wanted in meta.items():
        if key == "tags":
            tags = [wanted] if isinstance(wanted, str) else list(wanted)
            if not set(tags) <= set(node.tags):
                return False
        elif key == "stream_settings":
            if isinstance(wanted, NodeStreamSettings):
                wanted = {"intervals": wanted.intervals}
            intervals = wanted.get("intervals", {}) if isinstance(wanted, Mapping) else None
            if intervals is None or not _intervals_hold(node, intervals):
                return False
        elif key == "interval_settings":
            if not isinstance(wanted, Mapping) or not _intervals_hold(node, wanted):
                return False
        elif key in ("interval", "period"):
            continue  # checked together below, on one entry
        else:
            attribute = "kind" if key in ("type", "kind") else key
            if not _holds(getattr(node, attribute, None), wanted):
                return False
    if "interval" in meta or "period" in meta:
        return _entry_holds(node, meta.get("interval"), meta.get("period"))
    return True


def _entries(node: Node) -> Mapping[IntervalEnum, IntervalSettings]:
    settings = node.stream_settings
    return settings.intervals if settings is not None else {}


def _entry_holds(node: Node, interval: Any, period: Any) -> bool:
    for entry in _entries(node).values():
        if interval is not None and entry.interval != to_interval(interval):
            continue
        if period is not None and entry.period != period_in_intervals(period, entry.interval):
            continue
        return True
    return False


def _intervals_hold(node: Node, wanted: Mapping[Any, Any]) -> bool:
    entries = _entries(node)
    for key, fields in wanted.items():
        interval = to_interval(key)
        entry = entries.get(interval)
        if entry is None:
            return False
        if isinstance(fields, IntervalSettings):
            fields = fields.model_dump(exclude_unset=True)
        for name, value in (fields or {}).items():
            if name == "interval":
                if to_interval(value) != interval:
                    return False
            elif name == "period":
                if value is not None and entry.period != period_in_intervals(value, interval):
                    return False
            elif getattr(entry, name, _ABSENT) != value:
                return False
    return True


_ABSENT = object()


def _holds(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, Mapping):
        if hasattr(actual, "model_dump"):
            actual = actual.model_dump()
        if not isinstance(actual, Mapping):
            return False
        return all(key in actual and _holds(actual[key], value) for key, value in wanted.items())
    if isinstance(actual, list | tuple) and not isinstance(wanted, str):
        items = list(wanted) if isinstance(wanted, list | tuple | set) else [wanted]
        return all(item in actual for item in items)
    if isinstance(actual, list | tuple):
        return wanted in actual
    return bool(actual == wanted)
