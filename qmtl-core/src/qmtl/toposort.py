"""Deterministic topological order of a pipeline's nodes (ties by insertion order), iterative so
any depth works, and the cycle it names when there is none."""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

from qmtl.errors import CycleError


def topological_order(names: Sequence[str], upstreams: Mapping[str, Sequence[str]]) -> list[str]:
    """Kahn's algorithm, ties broken by ``names`` order; iterative, so no recursion limit.

    Raises :class:`CycleError` listing a cycle's path.
    """
    position = {name: i for i, name in enumerate(names)}
    waiting = {name: len(upstreams[name]) for name in names}
    readers: dict[str, list[str]] = {name: [] for name in names}
    for name in names:
        for upstream in upstreams[name]:
            readers[upstream].append(name)
    ready = [position[name] for name in names if waiting[name] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = names[heapq.heappop(ready)]
        order.append(name)
        for reader in readers[name]:
            waiting[reader] -= 1
            if waiting[reader] == 0:
                heapq.heappush(ready, position[reader])
    if len(order) < len(names):
        raise CycleError(
            "The pipeline has a cycle: "
            + " -> ".join(_find_cycle(waiting, upstreams))
            + "; remove one of these upstream links"
        )
    return order


def _find_cycle(waiting: Mapping[str, int], upstreams: Mapping[str, Sequence[str]]) -> list[str]:
    stuck = [name for name, count in waiting.items() if count > 0]
    start = stuck[0]
    seen: dict[str, int] = {}
    path: list[str] = []
    current = start
    while current not in seen:
        seen[current] = len(path)
        path.append(current)
        current = next(u for u in upstreams[current] if waiting.get(u, 0) > 0)
    cycle = path[seen[current] :]
    cycle.reverse()  # upstream -> downstream
    return [*cycle, cycle[0]]
