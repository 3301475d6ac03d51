"""A pipeline's deployments: one per plan (see "Upgrades" in docs/decisions.md).

Changed code is a new plan, and a new plan is a new deployment: topics named by its hash
(:func:`qmtl_engine_kafka._layout.deployment_topics`), pending state and input offsets of its
own, next to the old deployment in the pipeline's one consumer group, each member subscribed
to its own plan's shard topic. :func:`served` asks Kafka's group protocol which plans hold
partitions; :func:`route` sends a ``workers=0`` run to its plan's deployment or, when only other
plans are deployed, to one of those, whose workers dead-letter its messages
(``plan_mismatch``) and tell it, so the run raises ``PlanMismatchError`` at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

from qmtl.logs import get_logger
from qmtl.pending import SharesPendingState
from qmtl.plan import ExecutionPlan
from qmtl.state import StateBackend
from qmtl_engine_kafka._client import kafka_module
from qmtl_engine_kafka._layout import deployment_hash
from qmtl_engine_kafka.topics import RunTopics, run_topics, served_plans

__all__ = ["Served", "route", "served"]

log = get_logger(__name__)


class Served(NamedTuple):
    """What a pipeline's consumer group says: the plans its members hold partitions of, and
    how many members it has."""

    plans: list[str]
    members: int


def served(admin: Any, pipeline: str, timeout_s: float) -> Served:
    """The plan hashes whose deployments of ``pipeline`` hold partitions right now: what the
    members of its consumer group are assigned (nothing registered by hand), asked through
    the admin client ``admin``. While the group rebalances (members without assignments) it
    asks again, for up to ``timeout_s``. No plans when the group cannot be described."""
    kafka = kafka_module("The Kafka engine")
    group = run_topics(pipeline).group
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            future = admin.describe_consumer_groups([group])[group]
            found = future.result(timeout=timeout_s)
        except (kafka.KafkaException, TimeoutError, KeyError) as error:
            log.warning("qmtl.kafka.group_undescribed", group=group, error=str(error))
            return Served([], 0)
        members: list[Any] = found.members
        stable = found.state == kafka.ConsumerGroupState.STABLE
        if stable or not members or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    held = {
        tp.topic
        for member in members
        if member.assignment is not None
        for tp in member.assignment.topic_partitions
    }
    return Served(served_plans(pipeline, held), len(members))


def route(
    plan: ExecutionPlan,
    state: StateBackend,
    found: Served,
    deploy: Callable[[], RunTopics],
) -> RunTopics:
    """The deployment topics a ``workers=0`` run of ``plan`` is sent to (see the module doc).
    Only while the group has no member (a deployment still starting) do the plans its
    workers noted on start-up count (``plan:{hash}``, ``deployed``; they expire 90 s after its
    last worker stops). ``found``: what :func:`served` found; ``deploy``: prepares the run's
    own plan's deployment and returns its topics."""
    own = deployment_hash(plan)
    group = run_topics(plan.pipeline).group
    store = state.pending_store() if isinstance(state, SharesPendingState) else None
    plans = list(found.plans)
    if not found.members and store is not None:
        latest = store.recall(group, "deployed")
        plans = [latest] if latest else []
        if store.recall(group, f"plan:{own}"):
            plans.append(own)
    if not plans or own in plans:
        return deploy()
    return run_topics(plan.pipeline, plan=plans[-1])
