"""Plans derived from a compiled plan: one shard's sub-plan (what a sharded engine builds a
:class:`~qmtl.stream_runner.StreamRunner` over), a hand-built plan given its shards, and a plan
whose history lives under another namespace than the pipeline's name (:mod:`qmtl.shards` says
which nodes form a shard)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from qmtl.plan import ExecutionPlan
from qmtl.shards import Shard, split_shards
from qmtl.state import SeriesKey


@dataclass(frozen=True, slots=True)
class ShardPlan:
    """One shard cut out of a plan: its nodes, preceded by stand-ins for the upstreams it reads
    from other shards (``remote``), all re-indexed; ``origin[i]`` is node ``i``'s index in the
    pipeline's plan."""

    shard: Shard
    plan: ExecutionPlan
    remote: frozenset[int]
    origin: tuple[int, ...]


def shard_plan(plan: ExecutionPlan, shard: Shard) -> ShardPlan:
    """The sub-plan a runner for ``shard`` is built over (see :class:`ShardPlan`)."""
    mine = set(shard.nodes)
    wanted = set(mine)
    for index in shard.nodes:
        wanted.update(plan.nodes[index].upstream_index)
    origin = tuple(sorted(wanted))
    local = {g: i for i, g in enumerate(origin)}
    nodes = []
    for i, g in enumerate(origin):
        node = plan.nodes[g]
        if g in mine:
            nodes.append(
                dataclasses.replace(
                    node, index=i, upstream_index=tuple(local[u] for u in node.upstream_index)
                )
            )
        else:  # computed by another shard: only its series (and readers) are needed here
            nodes.append(dataclasses.replace(node, index=i, upstreams=(), upstream_index=()))
    sub = ExecutionPlan(plan.pipeline, tuple(nodes), {n.name: n for n in nodes})
    remote = frozenset(local[g] for g in origin if g not in mine)
    return ShardPlan(shard, sub, remote, origin)


def with_shards(plan: ExecutionPlan) -> ExecutionPlan:
    """``plan`` with its shards (a plan assembled by hand, not by the compiler, may have none)."""
    if plan.shards or not plan.nodes:
        return plan
    shards, shard_of = split_shards(plan.nodes)
    return dataclasses.replace(plan, shards=shards, shard_of=shard_of)


def namespaced(plan: ExecutionPlan, namespace: str) -> ExecutionPlan:
    """``plan`` with every series key under ``namespace`` instead of the pipeline's name (a
    backtest kept apart from a live deployment's history); the plan itself when it already is."""
    if not plan.nodes or all(
        spec.key.pipeline == namespace for node in plan.nodes for spec in node.series
    ):
        return plan
    nodes = tuple(
        dataclasses.replace(
            node,
            series=tuple(
                dataclasses.replace(
                    spec, key=SeriesKey(namespace, spec.key.node_id, spec.key.interval)
                )
                for spec in node.series
            ),
        )
        for node in plan.nodes
    )
    return dataclasses.replace(plan, nodes=nodes, by_name={n.name: n for n in nodes})


__all__ = ["ShardPlan", "namespaced", "shard_plan", "with_shards"]
