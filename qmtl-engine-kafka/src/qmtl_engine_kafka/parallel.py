"""``ParallelExecutionEngine``: the seed SDK's name for the Kafka engine with Redis state.

``ParallelExecutionEngine(brokers, redis_uri, max_workers=10)`` keeps its arguments, starts not
running with an empty topic map, and runs pipelines over Kafka with history in Redis::

    from qmtl.sdk.execution import ParallelExecutionEngine

    engine = ParallelExecutionEngine(brokers="localhost:9092", redis_uri="redis://localhost:6379/0")
    results = engine.execute_pipeline(pipeline)         # = pipeline.execute(parallel=True, ...)

``max_workers`` bounds the worker threads a run starts in this process (one worker thread
already serves every shard, so runs use ``min(max_workers, settings.workers)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qmtl.errors import QmtlError
from qmtl.logs import get_logger
from qmtl.plan import ExecutionPlan
from qmtl.state import StateBackend
from qmtl_engine_kafka.engine import KafkaEngine
from qmtl_engine_kafka.topics import input_topic, output_topic

__all__ = ["ParallelExecutionEngine"]

log = get_logger(__name__)


class ParallelExecutionEngine(KafkaEngine):
    """The Kafka engine under its seed name, bound to one Redis for state."""

    def __init__(
        self,
        brokers: str = "localhost:9092",
        redis_uri: str = "redis://localhost:6379/0",
        max_workers: int = 10,
        **options: Any,
    ) -> None:
        super().__init__(bootstrap_servers=brokers, **options)
        if max_workers < 1:
            from qmtl.errors import ConfigurationError

            raise ConfigurationError(f"max_workers must be >= 1, got {max_workers}")
        self.brokers = brokers
        self.redis_uri = redis_uri
        self.max_workers = max_workers
        if self.settings.workers > max_workers:
            self.settings = self.settings.model_copy(update={"workers": max_workers})
        self.running = False
        #: node name -> {"input": topic, "output": topic} of the pipelines prepared so far
        self.topics: dict[str, dict[str, str]] = {}
        self._state: StateBackend | None = None

    @property
    def state(self) -> StateBackend:
        """The Redis state backend at ``redis_uri`` (connects on first use)."""
        if self._state is None:
            from qmtl_state_redis import RedisStateBackend

            self._state = RedisStateBackend(url=self.redis_uri)
        return self._state

    def execute_pipeline(
        self, pipeline: Any, inputs: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Seed API: run ``pipeline`` once over Kafka with Redis state; ``{}`` when it is empty."""
        if not pipeline.nodes and not pipeline.query_nodes:
            return {}
        return pipeline.execute(  # type: ignore[no-any-return]
            inputs=inputs,
            timeout=timeout,
            engine=self,
            state=self.state,
        )

    def prepare_pipeline(self, pipeline: Any) -> dict[str, dict[str, str]]:
        """Create every node's seed input and output topic (the seed's shape, ``{node:
        {"input": topic, "output": topic}}``, and every topic it returns exists); a failure is
        logged, not raised. A deployment's workers forward what arrives on a source's input
        topic and publish the live run's outputs on the output topics."""
        name = getattr(pipeline, "name", None) or "default"
        nodes = list(pipeline.nodes)
        for node in nodes:
            self.topics[node] = {
                "input": input_topic(name, node),
                "output": output_topic(name, node),
            }
        try:
            plan = pipeline.build()
            self.seed_topics(plan)
            self._create(
                [self.topics[node]["input"] for node in nodes], self.settings.input_partitions
            )
        except QmtlError as error:
            log.warning("qmtl.kafka.prepare_failed", pipeline=name, error=str(error))
        return {node: self.topics[node] for node in nodes}

    def execute(self, plan: ExecutionPlan, **kwargs: Any) -> dict[str, Any]:
        self.running = True
        try:
            return super().execute(plan, **kwargs)
        finally:
            self.running = False

    def run(self, plan: ExecutionPlan, **kwargs: Any) -> Any:
        self.running = True
        try:
            return super().run(plan, **kwargs)
        finally:
            self.running = False

    def stop(self) -> None:
        """Clear the running flag."""
        self.running = False

    def close(self) -> None:
        super().close()
        if self._state is not None:
            self._state.close()
            self._state = None

    def __repr__(self) -> str:
        return f"ParallelExecutionEngine(brokers={self.brokers!r}, max_workers={self.max_workers})"
