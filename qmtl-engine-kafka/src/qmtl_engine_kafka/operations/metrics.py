"""The worker's Prometheus metrics, in a registry of their own (never the global one).

A worker loop reports once per *batch* (counts added per batch, never per message) through
:class:`~qmtl_engine_kafka.operations.WorkerMonitor`, which feeds :class:`WorkerMetrics`:

- ``qmtl_worker_events_total`` (counter): source events applied;
- ``qmtl_worker_buckets_total`` (counter): final buckets written to the state backend;
- ``qmtl_worker_late_events_total`` (counter): source events dropped as late;
- ``qmtl_worker_dead_letters_total`` (counter, ``reason``): messages dead-lettered, by code;
- ``qmtl_worker_node_failures_total`` (counter, ``node``, ``run`` = ``live`` or ``finite``):
  calls of a node's function that raised;
- ``qmtl_worker_consumer_lag`` (gauge, ``topic``, ``partition``): messages of an assigned
  partition not applied yet;
- ``qmtl_worker_watermark_lag_seconds`` (gauge): wall clock minus the newest event time
  applied, read when scraped, so it grows while the worker stalls;
- ``qmtl_worker_batch_seconds`` (histogram): time to apply, write, produce and commit a batch;
- ``qmtl_worker_assigned_partitions`` and ``qmtl_worker_failing_nodes`` (gauges).

Every metric has the ``pipeline`` label.

**Bounded label cardinality.** No label grows with the pipeline's size. ``node`` is set only on
failures and holds at most ``max_node_labels`` names (default 20, the first to fail); later
ones count under ``node="_other"``. ``reason`` is one of the engine's reason codes, capped the
same way. ``topic``/``partition`` series are capped at ``max_lag_series`` (default 100, in
topic and partition order); the lag of the partitions beyond is summed into one
``topic="_other", partition="_other"`` series, so ``sum(qmtl_worker_consumer_lag)`` stays the
worker's whole lag. A worker exports at most about 200 series whatever its node count (3,000
nodes included).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

__all__ = ["OTHER", "WorkerMetrics"]

#: The label value that stands for every node, reason or partition beyond a bound.
OTHER = "_other"
#: Batch durations, in seconds: a batch applies messages for at most ``batch_time_s`` (1 s by
#: default), then writes, flushes and commits.
_BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _Bounded:
    """Label values as given for the first ``limit`` distinct ones, :data:`OTHER` after."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.kept:
            return value
        if len(self.kept) < self.limit:
            self.kept.add(value)
            return value
        return OTHER


class WorkerMetrics:
    """The metrics of one worker process for one pipeline (see the module doc).

    ``registry`` is this object's own :class:`~prometheus_client.CollectorRegistry` (pass one
    to share it); :meth:`exposition` renders it for ``/metrics``. The methods are called by the
    worker's loop thread and are cheap: a few lock-protected additions per batch.
    """

    def __init__(
        self,
        pipeline: str,
        *,
        registry: CollectorRegistry | None = None,
        max_node_labels: int = 20,
        max_lag_series: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pipeline = pipeline
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.max_lag_series = max_lag_series
        self._clock = clock
        r, p = self.registry, ("pipeline",)
        self._events = Counter("qmtl_worker_events", "Source events applied", p, registry=r).labels(
            pipeline
        )
        self._buckets = Counter(
            "qmtl_worker_buckets", "Final buckets written to the state backend", p, registry=r
        ).labels(pipeline)
        self._late = Counter(
            "qmtl_worker_late_events", "Source events dropped as later than allowed", p, registry=r
        ).labels(pipeline)
        self._dead = Counter(
            "qmtl_worker_dead_letters",
            "Messages sent to the dead-letter topic, by reason",
            ("pipeline", "reason"),
            registry=r,
        )
        self._failures = Counter(
            "qmtl_worker_node_failures",
            "Calls of a node's function that raised (node names bounded; see the docs)",
            ("pipeline", "node", "run"),
            registry=r,
        )
        self._lag = Gauge(
            "qmtl_worker_consumer_lag",
            "Messages in an assigned partition the worker has not applied yet",
            ("pipeline", "topic", "partition"),
            registry=r,
        )
        self._watermark_lag = Gauge(
            "qmtl_worker_watermark_lag_seconds",
            "Wall clock minus the newest event time the worker applied",
            p,
            registry=r,
        )
        self._batch = Histogram(
            "qmtl_worker_batch_seconds",
            "Seconds to apply, write, produce and commit one batch",
            p,
            buckets=_BATCH_BUCKETS,
            registry=r,
        ).labels(pipeline)
        self._partitions = Gauge(
            "qmtl_worker_assigned_partitions", "Partitions assigned to this worker", p, registry=r
        ).labels(pipeline)
        self._failing = Gauge(
            "qmtl_worker_failing_nodes",
            "Nodes whose last batch failed, or that stopped on a failure",
            p,
            registry=r,
        ).labels(pipeline)
        self._node_label = _Bounded(max_node_labels)
        self._reason_label = _Bounded(max_node_labels)
        self._lag_series: set[tuple[str, str]] = set()
        self._watermark: float | None = None

    # -- once per batch ----------------------------------------------------------------------
    def batch(self, seconds: float, events: int, buckets: int, late: int) -> None:
        """A committed batch: its duration and what it applied."""
        self._batch.observe(seconds)
        if events:
            self._events.inc(events)
        if buckets:
            self._buckets.inc(buckets)
        if late:
            self._late.inc(late)

    def dead_letters(self, reasons: Mapping[str, int]) -> None:
        """Dead letters sent since the last call, by reason code."""
        for reason, count in reasons.items():
            if count:
                self._dead.labels(self.pipeline, self._reason_label(reason)).inc(count)

    def watermark(self, event_time: float) -> None:
        """The newest event time (epoch seconds) applied; the gauge reads the clock when
        scraped, so it keeps growing while nothing newer is applied."""
        if self._watermark is None:
            self._watermark_lag.labels(self.pipeline).set_function(self._watermark_lag_now)
        if self._watermark is None or event_time > self._watermark:
            self._watermark = event_time

    def _watermark_lag_now(self) -> float:
        assert self._watermark is not None
        return self._clock() - self._watermark

    # -- when they happen --------------------------------------------------------------------
    def node_failure(self, node: str, *, live: bool) -> None:
        self._failures.labels(
            self.pipeline, self._node_label(node), "live" if live else "finite"
        ).inc()

    def failing(self, nodes: int) -> None:
        self._failing.set(nodes)

    def partitions(self, assigned: int) -> None:
        self._partitions.set(assigned)

    def lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """The whole current picture: every assigned (topic, partition) and its lag. Series of
        partitions no longer assigned are removed (their new owner reports them)."""
        series: dict[tuple[str, str], int] = {}
        other = 0
        for n, (topic, partition) in enumerate(sorted(lags)):
            if n < self.max_lag_series:
                series[(topic, str(partition))] = lags[(topic, partition)]
            else:
                other += lags[(topic, partition)]
        if len(lags) > self.max_lag_series:
            series[(OTHER, OTHER)] = other
        for gone in self._lag_series - series.keys():
            self._lag.remove(self.pipeline, *gone)
        for (topic, shown), value in series.items():
            self._lag.labels(self.pipeline, topic, shown).set(value)
        self._lag_series = set(series)

    # -- for /metrics ------------------------------------------------------------------------
    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry as Prometheus text (or OpenMetrics when ``accept`` asks for it), and
        its content type."""
        encode: Any
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type
