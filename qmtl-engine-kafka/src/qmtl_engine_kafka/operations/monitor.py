"""The one object a worker loop talks to: :class:`WorkerMonitor`.

It fans each report out to the metrics (:mod:`.metrics`), the health state (:mod:`.health`)
and the failure policy (:mod:`.policy`); any of them may be absent (in-process workers of a
finite ``run()`` have no metrics and no server). Every method is called from the loop's thread
and costs a few attribute updates, so the loop calls them freely at the points below — never
per message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from qmtl.logs import get_logger
from qmtl_engine_kafka.operations.health import HealthState
from qmtl_engine_kafka.operations.metrics import WorkerMetrics
from qmtl_engine_kafka.operations.policy import STOP_NODE, FailurePolicy, Verdict
from qmtl_engine_kafka.operations.server import OperationsServer
from qmtl_engine_kafka.operations.startup import kafka_probe, state_probe
from qmtl_engine_kafka.settings import KafkaEngineSettings

__all__ = ["WorkerMonitor"]

log = get_logger(__name__)


class WorkerMonitor:
    """What a worker loop reports, and the verdict it asks for when a node fails.

    When the loop calls what:

    - :meth:`polled` once per poll round, batches or not (liveness);
    - :meth:`assignment` with the number of partitions it holds, when that changes;
    - :meth:`batch` once per committed batch, with what the batch applied;
      :meth:`dead_letters` with the dead letters sent since the last call, by reason;
    - :meth:`failed` when a node's function raised, *before* the batch's effects are handed
      on: it returns the :class:`~qmtl_engine_kafka.operations.policy.Verdict` (replay the
      batch after a back-off, or end the node) or raises
      :class:`~qmtl_engine_kafka.errors.NodeFailuresError` (stop the worker, batch
      uncommitted); :meth:`recovered` once a batch of a node that failed commits;
      :meth:`stopped_earlier` when saved state shows a node that stopped on a failure;
    - :meth:`lag` with every assigned partition's lag whenever :meth:`lag_due` says so;
    - :meth:`stopping` when a signal asks the loop to stop; :meth:`close` at the very end.
    """

    def __init__(
        self,
        pipeline: str,
        *,
        metrics: WorkerMetrics | None = None,
        health: HealthState | None = None,
        policy: FailurePolicy | None = None,
        server: OperationsServer | None = None,
        lag_every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        self.health = health
        self.policy = policy
        self.server = server
        self.lag_every_s = lag_every_s
        self._clock = clock
        self._lag_at = -float("inf")
        self._assigned = -1

    @classmethod
    def for_worker(
        cls, settings: KafkaEngineSettings, state: Any, *, pipeline: str, probe_topic: str
    ) -> WorkerMonitor:
        """The monitor of a ``qmtl worker`` process: its failure policy, and with
        ``settings.metrics_port`` the metrics, readiness probes of Kafka (``probe_topic``'s
        metadata) and of the state backend, and the HTTP server (not started yet)."""
        policy = FailurePolicy(
            settings.failure_policy,
            max_failures=settings.max_node_failures,
            backoff_s=settings.node_retry_backoff_s,
        )
        if settings.metrics_port is None:
            return cls(pipeline, policy=policy)
        what = f"The readiness check of pipeline '{pipeline}'"
        health = HealthState(policy=policy, liveness_timeout_s=settings.liveness_timeout_s)
        health.add_check("kafka", kafka_probe(settings, probe_topic, what=what))
        redis = state_probe(state)
        if redis is not None:
            health.add_check("redis", redis)
        metrics = WorkerMetrics(pipeline)
        server = OperationsServer(
            health, metrics, port=settings.metrics_port, host=settings.metrics_host
        )
        return cls(pipeline, metrics=metrics, health=health, policy=policy, server=server)

    def start(self) -> WorkerMonitor:
        """Probe Kafka and Redis once, start probing them in the background, and serve
        ``/metrics``, ``/healthz`` and ``/readyz``."""
        if self.health is not None:
            self.health.start()
        if self.server is not None:
            self.server.start()
        return self

    # -- the loop's reports ------------------------------------------------------------------
    def polled(self) -> None:
        if self.health is not None:
            self.health.polled()

    def assignment(self, partitions: int) -> None:
        if partitions == self._assigned:
            return
        self._assigned = partitions
        if self.health is not None:
            self.health.assignment(partitions)
        if self.metrics is not None:
            self.metrics.partitions(partitions)

    def batch(
        self,
        seconds: float,
        *,
        events: int = 0,
        buckets: int = 0,
        late: int = 0,
        watermark: float | None = None,
    ) -> None:
        """A committed batch: how long it took, the source events, final buckets and late
        events it applied, and the newest event time (epoch seconds) it reached."""
        metrics = self.metrics
        if metrics is not None:
            metrics.batch(seconds, events, buckets, late)
            if watermark is not None:
                metrics.watermark(watermark)

    def dead_letters(self, reasons: Mapping[str, int]) -> None:
        if self.metrics is not None:
            self.metrics.dead_letters(reasons)

    def failed(self, node: str, error: BaseException, *, live: bool) -> Verdict:
        """A node's function raised in this batch (``live``: in a deployment's run)."""
        if self.metrics is not None:
            self.metrics.node_failure(node, live=live)
        try:
            return self.policy.failed(node, error, live=live) if self.policy else STOP_NODE
        finally:
            self._failing_changed()

    def stopped_earlier(self, node: str, reason: str, *, live: bool) -> None:
        if self.policy is not None:
            self.policy.stopped_earlier(node, reason, live=live)
            log.error("qmtl.kafka.node_stopped_earlier", node=node, reason=reason)
            self._failing_changed()

    def recovered(self, node: str) -> None:
        if self.policy is not None and node in self.policy.failing:
            self.policy.recovered(node)
            log.info("qmtl.kafka.node_recovered", node=node)
            self._failing_changed()

    def lag_due(self) -> bool:
        """True every ``lag_every_s`` when lag is exported (it costs a call per partition)."""
        if self.metrics is None:
            return False
        now = self._clock()
        if now - self._lag_at < self.lag_every_s:
            return False
        self._lag_at = now
        return True

    def lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        if self.metrics is not None:
            self.metrics.lag(lags)

    def stopping(self) -> None:
        if self.health is not None:
            self.health.stopping()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.health is not None:
            self.health.close()

    def _failing_changed(self) -> None:
        if self.metrics is not None and self.policy is not None:
            self.metrics.failing(self.policy.unhealthy_nodes)
