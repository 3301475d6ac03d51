"""Resolving query nodes: which nodes a tag query matches, through an index kept up to date.

A pipeline keeps a :class:`TagIndex` of its nodes as they are added, replaced or removed
(``add_node``, ``pipeline.nodes[name] = node``, ``del``, ``pop``, ...): tag → positions of the
nodes carrying it, and ``(interval, period)`` entry of their effective settings → positions.
:func:`resolve_queries` then answers every query with set operations on the index. Before
answering, the index checks every node is still the one it indexed, with the same tags and
settings (an identity and a list comparison per node), and re-reads any that changed, so a node
whose ``tags`` list was edited in place, or a mapping replaced behind the pipeline's back, still
resolves correctly.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from qmtl.calls import Invoker
from qmtl.identity import IdentityMemo, content_id, function_fingerprint, stable_repr
from qmtl.models import IntervalEnum, NodeStreamSettings, QueryNodeResultSelector
from qmtl.node import Node, QueryNode
from qmtl.selectors import is_deterministic, query_value, select

EntryKey = tuple[IntervalEnum | None, int | None]
#: name -> a node's effective settings
Settings = Callable[[str], NodeStreamSettings | None]


class TagIndex:
    """Tag → positions (pipeline order) of the nodes carrying it, and interval entry →
    positions, maintained node by node. Positions only grow; a removed node leaves a gap."""

    def __init__(self) -> None:
        self._names: list[str | None] = []  # position → name (None: removed)
        #: name → (node, its tags, its settings, its position) as indexed
        self._held: dict[str, tuple[Node, list[str], NodeStreamSettings | None, int]] = {}
        self.tags: dict[str, list[int]] = {}  #: tag → increasing positions
        self.tag_sets: dict[str, set[int]] = {}  #: tag → positions
        self.entries: dict[EntryKey, set[int]] = {}  #: (interval, period) and partial keys

    # -- maintenance ----------------------------------------------------------------------
    def set(self, name: str, node: Node, settings: NodeStreamSettings | None) -> None:
        """Index ``node`` under ``name`` with its effective ``settings`` (a new name goes last,
        a known one keeps its place)."""
        found = self._held.get(name)
        if found is None:
            position = len(self._names)
            self._names.append(name)
        else:
            position = found[3]
            self._unindex(found)
        tags = list(node.tags)
        self._held[name] = (node, tags, settings, position)
        indexed, sets = self.tags, self.tag_sets
        for tag in dict.fromkeys(tags) if len(tags) > 1 else tags:  # a repeated tag counts once
            positions = indexed.get(tag)
            if positions is None:
                indexed[tag] = [position]
                sets[tag] = {position}
                continue
            if not positions or positions[-1] < position:
                positions.append(position)
            else:
                insort(positions, position)
            sets[tag].add(position)
        entries = self.entries
        for key in _entry_keys(settings):
            members = entries.get(key)
            if members is None:
                entries[key] = {position}
            else:
                members.add(position)

    def remove(self, name: str) -> None:
        found = self._held.pop(name, None)
        if found is not None:
            self._unindex(found)
            self._names[found[3]] = None

    def clear(self) -> None:
        self._names.clear()
        self._held.clear()
        self.tags.clear()
        self.tag_sets.clear()
        self.entries.clear()

    def _unindex(self, found: tuple[Node, list[str], NodeStreamSettings | None, int]) -> None:
        _node, tags, settings, position = found
        for tag in dict.fromkeys(tags):
            self.tags[tag].remove(position)
            self.tag_sets[tag].discard(position)
        for key in _entry_keys(settings):
            self.entries[key].discard(position)

    def sync(self, nodes: Mapping[str, Node], settings: Settings) -> None:
        """Make the index describe ``nodes`` with their effective ``settings`` exactly, in their
        order (see the module docstring)."""
        held = self._held
        if len(held) != len(nodes):
            self._rebuild(nodes, settings)
            return
        previous = -1
        for name, node in nodes.items():
            found = held.get(name)
            if found is None or found[3] < previous:
                self._rebuild(nodes, settings)  # a name it never saw, or another order
                return
            previous = found[3]
            effective = settings(name)
            if found[0] is not node or found[2] is not effective or found[1] != node.tags:
                self.set(name, node, effective)

    def _rebuild(self, nodes: Mapping[str, Node], settings: Settings) -> None:
        self.clear()
        for name, node in nodes.items():
            self.set(name, node, settings(name))

    def name(self, position: int) -> str:
        found = self._names[position]
        assert found is not None
        return found


def _entry_keys(settings: NodeStreamSettings | None) -> frozenset[EntryKey]:
    """The keys a query's interval/period filter can ask for that one node's settings hold
    (remembered per settings object: nodes share them)."""
    keys = _KEYS.get(settings)
    if keys is None:
        keys = frozenset(
            key
            for interval, entry in (settings.intervals.items() if settings else ())
            for key in ((interval, None), (interval, entry.period), (None, entry.period))
        )
        _KEYS.put(settings, None, keys)
    return keys  # type: ignore[no-any-return]


_KEYS = IdentityMemo()


def resolve_queries(
    nodes: Mapping[str, Node],
    queries: Mapping[str, QueryNode],
    settings: Mapping[str, NodeStreamSettings | None] | None = None,
    index: TagIndex | None = None,
) -> dict[str, list[str]]:
    """Matched node names of each query, in pipeline order, found through ``index`` (a
    pipeline's own, kept up to date; one is built for ``nodes`` when none is given).
    ``settings`` are the nodes' effective settings (default: each node's own).

    Each query's candidates are set intersections (``all``) or unions (``any``) of its tags'
    positions, intersected with the positions whose settings have an entry with the query's
    interval and period, so both hold on the same entry. No query scans the pipeline.
    """
    if not queries:
        return {}
    if index is None:
        index = TagIndex()
    if settings is not None:
        index.sync(nodes, settings.__getitem__)
    else:
        index.sync(nodes, lambda name: nodes[name].stream_settings)
    name, tag_sets, entries = index.name, index.tag_sets, index.entries
    empty: set[int] = set()
    result: dict[str, list[str]] = {}
    for qname, query in queries.items():
        tags = dict.fromkeys(query.query_tags)
        filtered = query.interval is not None or query.period is not None
        if len(tags) == 1 and not filtered:
            # one tag, no entry filter: its positions are the answer, already in order
            result[qname] = [name(p) for p in index.tags.get(query.query_tags[0], ())]
            continue
        sets = [tag_sets.get(tag, empty) for tag in tags]
        if query.match_mode == "all" or len(sets) == 1:
            if filtered:
                sets.append(entries.get((query.interval, query.period), empty))
            sets.sort(key=len)
            found = sets[0].intersection(*sets[1:])
        else:
            found = set().union(*sets)
            if filtered:
                found &= entries.get((query.interval, query.period), empty)
        result[qname] = [name(p) for p in sorted(found)]
    for qname, query in queries.items():
        if query.candidates is not None:  # upstreams=: only those nodes may match
            allowed = set(query.candidates)
            result[qname] = [name for name in result[qname] if name in allowed]
    return result


def query_id(query: QueryNode, upstream_ids: Sequence[str]) -> str:
    """Content id of a query node: its criteria, its matches' ids, ``fn`` and its own selectors.

    The criteria are included so two queries that happen to match the same nodes today keep
    separate series.
    """
    return content_id(
        "query",
        stable_repr(
            [
                query.query_tags,
                query.match_mode,
                query.interval.value if query.interval else None,
                query.period,
            ]
        ),
        ",".join(upstream_ids),
        function_fingerprint(query.fn) if query.fn else "",
        stable_repr([s.model_dump(mode="json") for s in query.result_selectors]),
    )


def query_invoker(
    query: QueryNode,
    matched: Sequence[Node],
    selectors: Sequence[QueryNodeResultSelector] | None = None,
) -> Invoker:
    """``call(values)`` over the matches' values (upstream order) giving the query's value.

    ``selectors`` (default: the query's own) are applied to ``matched``; a deterministic
    selection is computed here, once, an unseeded random draw at every call.
    """
    names = tuple(node.name for node in matched)
    chosen = list(query.result_selectors if selectors is None else selectors)
    fn = query.fn
    if not is_deterministic(chosen):

        def draw(values: Sequence[Any]) -> Any:
            selection = select(chosen, matched)
            return query_value(selection, dict(zip(names, values, strict=True)), fn)

        return draw
    selection = select(chosen, matched)
    at = {name: i for i, name in enumerate(names)}
    picks = tuple((name, at[name]) for name in selection.names)

    def invoke(values: Sequence[Any]) -> Any:
        return query_value(selection, {name: values[i] for name, i in picks}, fn)

    return invoke
