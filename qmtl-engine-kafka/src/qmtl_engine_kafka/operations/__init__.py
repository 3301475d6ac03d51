"""The operations layer of a Kafka worker: metrics, health, failure policy, start-up checks.

Independent of how a worker loop is built: a loop holds one
:class:`~qmtl_engine_kafka.operations.monitor.WorkerMonitor` and calls it at fixed points (once
per poll round, once per committed batch, when a node fails, every few seconds with the lag;
see its docstring), never per message. ``qmtl worker`` builds it with
:meth:`WorkerMonitor.for_worker` from :class:`~qmtl_engine_kafka.KafkaEngineSettings`:

- :mod:`.metrics` — :class:`WorkerMetrics`, Prometheus metrics in a registry of their own, with
  label cardinality bounded whatever the node count;
- :mod:`.health` — :class:`HealthState`, what ``/healthz`` (the poll loop is alive) and
  ``/readyz`` (Kafka and Redis reachable, no failing node) answer;
- :mod:`.policy` — :class:`FailurePolicy`, what a node that keeps failing does to the worker;
- :mod:`.server` — :class:`OperationsServer`, ``/metrics``, ``/healthz`` and ``/readyz`` on
  ``--metrics-port``;
- :mod:`.startup` — :func:`check_services`, the fail-fast check of Kafka and Redis.
"""

from qmtl_engine_kafka.operations.health import HealthState
from qmtl_engine_kafka.operations.metrics import OTHER, WorkerMetrics
from qmtl_engine_kafka.operations.monitor import WorkerMonitor
from qmtl_engine_kafka.operations.policy import FailurePolicy, PolicyName, Verdict
from qmtl_engine_kafka.operations.server import OperationsServer
from qmtl_engine_kafka.operations.startup import check_services, kafka_probe, state_probe

__all__ = [
    "OTHER",
    "FailurePolicy",
    "HealthState",
    "OperationsServer",
    "PolicyName",
    "Verdict",
    "WorkerMetrics",
    "WorkerMonitor",
    "check_services",
    "kafka_probe",
    "state_probe",
]
