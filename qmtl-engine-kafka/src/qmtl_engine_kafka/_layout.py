"""Where a plan's shards live on a pipeline's partitions, and who reads what: routing tables,
computed once per plan and partition count (no state, no I/O)."""

from __future__ import annotations

import hashlib
from collections import defaultdict

from qmtl.plan import ExecutionPlan
from qmtl.subplans import ShardPlan, namespaced, shard_plan, with_shards
from qmtl_engine_kafka.topics import RunTopics, partition_for, run_topics

__all__ = ["Layout", "deployment_hash", "deployment_topics", "plan_hash"]


def plan_hash(plan: ExecutionPlan) -> str:
    """What a worker and a run must agree on: every node's name, content id and shard."""
    digest = hashlib.blake2b(digest_size=8)
    for node in plan.nodes:
        shard = plan.shards[plan.shard_of[node.index]].id if plan.shards else ""
        digest.update(f"{node.name}\t{node.node_id}\t{shard}\n".encode())
    return digest.hexdigest()


def deployment_hash(plan: ExecutionPlan) -> str:
    """The hash a plan's messages carry and its deployment's topics are named by."""
    return plan_hash(with_shards(plan))


def deployment_topics(plan: ExecutionPlan) -> RunTopics:
    """The topics, groups and pending-state scopes of ``plan``'s deployment (its plan hash in
    their names: ``qmtl.shard.{pipeline}.{hash}``, ...)."""
    return run_topics(plan.pipeline, plan=deployment_hash(plan))


class Layout:
    """A plan spread over ``partitions`` partitions of its shard topic."""

    def __init__(self, plan: ExecutionPlan, partitions: int, limit: int = 1_000_000) -> None:
        plan = with_shards(plan)
        self.plan = plan
        self.partitions = partitions
        #: the most bytes one message may carry (``max_message_bytes``)
        self.limit = limit
        self.hash = plan_hash(plan)
        self.shard_partition = [partition_for(s.id, partitions) for s in plan.shards]
        on_partition: dict[int, list[int]] = defaultdict(list)
        for shard in plan.shards:
            on_partition[self.shard_partition[shard.index]].append(shard.index)
        #: partition -> shards living there (shard indices)
        self.on_partition = dict(on_partition)
        #: node name -> plan index
        self.index = {node.name: node.index for node in plan.nodes}
        #: node id -> node name
        self.names = {node.node_id: node.name for node in plan.nodes}
        #: node index -> {interval: position in its series}
        self.series = [
            {spec.interval.value: k for k, spec in enumerate(node.series)} for node in plan.nodes
        ]
        readers: dict[tuple[int, int], list[int]] = defaultdict(list)
        destinations: dict[int, set[int]] = defaultdict(set)
        for node in plan.nodes:
            mine = plan.shard_of[node.index]
            for up in dict.fromkeys(node.upstream_index):
                theirs = plan.shard_of[up]
                if theirs == mine:
                    continue
                partition = self.shard_partition[mine]
                if mine not in readers[(up, partition)]:
                    readers[(up, partition)].append(mine)
                destinations[up].add(partition)
        #: (node index, partition) -> shards on that partition reading the node from afar
        self.readers = dict(readers)
        #: node index -> partitions its final buckets are sent to (sorted)
        self.destinations = {n: sorted(p) for n, p in destinations.items()}
        self._plans: dict[tuple[str, int], ShardPlan] = {}
        self._namespaced: dict[str, ExecutionPlan] = {}

    def partition_of(self, node: str) -> int:
        """The partition of the shard computing ``node``."""
        return self.shard_partition[self.plan.shard_of[self.index[node]]]

    def namespaced(self, namespace: str) -> ExecutionPlan:
        """The whole plan with its history under ``namespace`` (cached)."""
        plan = self._namespaced.get(namespace)
        if plan is None:
            plan = self._namespaced[namespace] = namespaced(self.plan, namespace)
        return plan

    def shard_plan(self, namespace: str, shard: int) -> ShardPlan:
        """Shard ``shard``'s sub-plan with its history under ``namespace`` (cached)."""
        key = (namespace, shard)
        found = self._plans.get(key)
        if found is None:
            plan = self.namespaced(namespace)
            found = self._plans[key] = shard_plan(plan, plan.shards[shard])
        return found
