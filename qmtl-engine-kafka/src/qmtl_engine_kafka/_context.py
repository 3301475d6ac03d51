"""What the tasks of one pipeline run share (:class:`RunContext`), and the run id of live input.

A run is one stream through a pipeline's topics: its envelopes carry the run id, and workers
apply only their run's messages (:data:`LIVE_RUN` for envelopes without one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qmtl.plan import ExecutionPlan
from qmtl.state import StateBackend
from qmtl_engine_kafka.pending import PendingStore
from qmtl_engine_kafka.settings import KafkaEngineSettings
from qmtl_engine_kafka.topics import PipelineTopics, pipeline_topics

__all__ = ["LIVE_RUN", "OneShot", "RunContext"]

#: The run of messages without a run id (external producers) and of ``qmtl worker`` by default.
LIVE_RUN = "live"


@dataclass
class RunContext:
    """Everything the tasks of one pipeline run share."""

    plan: ExecutionPlan
    run: str
    settings: KafkaEngineSettings
    state: StateBackend
    store: PendingStore
    input_partitions: dict[str, int]
    batch_size: int = 2000
    #: Called (in the worker's thread) with a node's name and the exception its fn raised.
    on_failure: Callable[[str, BaseException], object] | None = None
    #: Set for a one-shot run (:mod:`qmtl_engine_kafka.oneshot`): nodes compute once, the
    #: caller records the values in plan order.
    oneshot: OneShot | None = None
    topics: PipelineTopics = field(init=False)

    def __post_init__(self) -> None:
        self.topics = pipeline_topics(self.plan.pipeline, [n.name for n in self.plan.nodes])

    @property
    def pipeline(self) -> str:
        return self.plan.pipeline


@dataclass
class OneShot:
    """A one-shot run: ``inputs`` replace nodes' values; ``now`` is the run's timestamp."""

    inputs: dict[str, Any]
    now: float
