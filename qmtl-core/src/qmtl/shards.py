"""Shards: which nodes of a plan run together, and where their history goes.

A distributed engine does not move every node's output through a broker: it runs *shards*,
sets of nodes computed together in one process with the core's streaming objects (the same
:class:`~qmtl.stream_runner.StreamRunner` as the local engine), and only buckets crossing from
one shard to another travel between processes.

**The default rule.** A node's *sources* are the source nodes (nodes without upstreams) it
depends on, directly or not; a source's are itself. Nodes with the same set of sources form one
shard. So each symbol's chain ``AAPL_px → AAPL_ret → AAPL_sig`` is one shard, a node joining
two symbols (``spread(AAPL_px, MSFT_px)``) starts a shard of its own, and a query node over all
symbols is the shard of all sources. ``Node(..., shard="name")`` puts a node in the shard
``name`` instead (nodes naming the same shard run together, whatever their sources).

**Stable ids.** A shard's id is its explicit name, or ``@`` followed by its sources' names
(``@AAPL_px``, ``@AAPL_px+MSFT_px``; a long or ambiguous list is shortened with a blake2b
digest). The id depends only on the shard's sources, so adding nodes elsewhere never moves a
shard; engines map ids to partitions with a stable hash of the id.

**The shard graph must be acyclic.** Shard ``A`` reads shard ``B`` when a node of ``A`` has an
upstream in ``B``. The default rule always gives an acyclic graph (a node's sources include its
upstreams' sources); an explicit assignment that makes a cycle (``px`` and ``sig`` in the
default shard, ``ret`` between them in shard ``risk``) is refused when the pipeline is built,
with :class:`~qmtl.errors.ShardCycleError` naming the nodes on the cycle.

:func:`qmtl.subplans.shard_plan` cuts one shard out of a plan (with stand-ins for the
upstreams it reads from other shards) so a runner can be built over exactly its nodes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from qmtl.errors import ShardCycleError


class PlanNodeLike(Protocol):
    """What the split reads of a plan node (:class:`qmtl.plan.PlanNode`)."""

    @property
    def index(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def upstream_index(self) -> tuple[int, ...]: ...
    @property
    def node(self) -> object: ...


#: Longest default id spelled out in full before it is shortened with a digest.
_MAX_ID = 64


@dataclass(frozen=True, slots=True)
class Shard:
    """Nodes run together; ``nodes`` and ``upstreams`` are plan indices, in plan order."""

    index: int  #: position in ``ExecutionPlan.shards``
    id: str  #: stable: the explicit name, or ``@`` + the sources' names
    explicit: bool  #: named with ``Node(..., shard=...)``
    nodes: tuple[int, ...]
    sources: tuple[str, ...]  #: names of the source nodes its nodes depend on (sorted)
    upstreams: tuple[int, ...]  #: indices of the shards it reads from


def split_shards(nodes: Sequence[PlanNodeLike]) -> tuple[tuple[Shard, ...], tuple[int, ...]]:
    """The shards of plan ``nodes`` (in topological order) and each node's shard index.

    Raises :class:`ShardCycleError` when explicit ``shard=`` names make the shard graph cyclic.
    """
    roots: list[frozenset[str]] = []
    keys: list[str | frozenset[str]] = []
    for node in nodes:
        ups = node.upstream_index
        if not ups:
            mine = frozenset((node.name,))
        else:
            mine = roots[ups[0]]
            for u in ups[1:]:
                other = roots[u]
                if other is not mine and not other <= mine:
                    mine = mine | other
        roots.append(mine)
        explicit = getattr(node.node, "shard", None)
        keys.append(explicit if explicit is not None else mine)
    order: dict[str | frozenset[str], int] = {}
    members: list[list[int]] = []
    shard_of: list[int] = []
    for node, key in zip(nodes, keys, strict=True):
        at = order.get(key)
        if at is None:
            at = order[key] = len(members)
            members.append([])
        members[at].append(node.index)
        shard_of.append(at)
    ids = _ids(list(order))
    reads: list[dict[int, tuple[int, int]]] = [{} for _ in members]  # upstream shard -> edge
    for node in nodes:
        mine_at = shard_of[node.index]
        for u in node.upstream_index:
            theirs = shard_of[u]
            if theirs != mine_at:
                reads[mine_at].setdefault(theirs, (u, node.index))
    _check_acyclic(nodes, ids, reads)
    shards = tuple(
        Shard(
            index=i,
            id=ids[i],
            explicit=isinstance(key, str),
            nodes=tuple(members[i]),
            sources=_sources(roots, members[i]),
            upstreams=tuple(sorted(reads[i])),
        )
        for i, key in enumerate(order)
    )
    return shards, tuple(shard_of)


def _sources(roots: Sequence[frozenset[str]], members: Sequence[int]) -> tuple[str, ...]:
    found: set[str] = set()
    for index in members:
        found |= roots[index]
    return tuple(sorted(found))


def _ids(keys: Sequence[str | frozenset[str]]) -> list[str]:
    """Explicit names as they are; default shards ``@`` + their sources, digested when long or
    when two different source sets would read the same (source names containing ``+``)."""
    ids: list[str] = []
    for key in keys:
        if isinstance(key, str):
            ids.append(key)
            continue
        joined = "+".join(sorted(key))
        ids.append("@" + joined if len(joined) <= _MAX_ID else _digest(sorted(key)))
    first: dict[str, int] = {}
    for i, shard_id in enumerate(list(ids)):
        if shard_id not in first:
            first[shard_id] = i
            continue
        for j in (first[shard_id], i):  # two source sets spelled alike: both get digests
            key = keys[j]
            if not isinstance(key, str):
                ids[j] = _digest(sorted(key))
    return ids


def _digest(names: Sequence[str]) -> str:
    digest = hashlib.blake2b("\0".join(names).encode("utf-8"), digest_size=8).hexdigest()
    return f"@{names[0][:32]}+{len(names) - 1}~{digest}"


def _check_acyclic(
    nodes: Sequence[PlanNodeLike],
    ids: Sequence[str],
    reads: Sequence[Mapping[int, tuple[int, int]]],
) -> None:
    """Kahn's algorithm over the shard graph; a cycle is reported with the node edges on it."""
    waiting = [len(r) for r in reads]
    readers: list[list[int]] = [[] for _ in reads]
    for shard, ups in enumerate(reads):
        for up in ups:
            readers[up].append(shard)
    ready = [s for s, count in enumerate(waiting) if count == 0]
    while ready:
        shard = ready.pop()
        for reader in readers[shard]:
            waiting[reader] -= 1
            if waiting[reader] == 0:
                ready.append(reader)
    if not any(waiting):
        return
    # Walk upstream from a stuck shard until a shard repeats: that loop is a cycle.
    current = next(s for s, count in enumerate(waiting) if count)
    path: list[int] = []
    seen: dict[int, int] = {}
    while current not in seen:
        seen[current] = len(path)
        path.append(current)
        current = next(u for u in reads[current] if waiting[u])
    cycle = path[seen[current] :]
    cycle.reverse()  # upstream -> downstream
    steps = []
    for i, shard in enumerate(cycle):
        reader = cycle[(i + 1) % len(cycle)]
        upstream, node = reads[reader][shard]
        steps.append(
            f"'{nodes[node].name}' (shard '{ids[reader]}') reads '{nodes[upstream].name}' "
            f"(shard '{ids[shard]}')"
        )
    raise ShardCycleError(
        "The shard assignment makes shards read each other in a cycle: "
        + "; ".join(steps)
        + ". Put these nodes in one shard (shard='...' on each) or remove the shard= that "
        "splits them"
    )


__all__ = ["Shard", "split_shards"]
