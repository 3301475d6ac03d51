"""The parts of a ``qmtl worker`` Deployment that let Kubernetes watch and place it.

:func:`with_operations` adds the metrics port of ``qmtl worker --metrics-port N`` (added to the
container's args) with HTTP probes on it (``/healthz`` for liveness and start-up, ``/readyz``
for readiness), Prometheus scrape annotations, topology spread over zones and nodes, and the
partition count the workers create topics with (which bounds the replicas: a Kafka consumer
group gives each partition to one member, so workers beyond the partitions sit idle).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qmtl.errors import DeployError
from qmtl_deploy.k8s.checks import count
from qmtl_deploy.k8s.models import (
    ContainerPort,
    Deployment,
    EnvVar,
    HTTPGetAction,
    LabelSelector,
    ObjectMeta,
    Probe,
    TopologySpreadConstraint,
)

__all__ = [
    "DEFAULT_METRICS_PORT",
    "HEALTH_PATH",
    "METRICS_PATH",
    "PARTITIONS_ENV",
    "READY_PATH",
    "http_probes",
    "whole",
    "with_operations",
]

#: Port of ``qmtl worker --metrics-port`` in the generated pods.
DEFAULT_METRICS_PORT = 9464
METRICS_PATH, HEALTH_PATH, READY_PATH = "/metrics", "/healthz", "/readyz"
PARTITIONS_ENV = "QMTL_KAFKA__PARTITIONS"
_PORT_NAME = "metrics"


def whole(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """:func:`qmtl_deploy.k8s.checks.count`, with an upper bound when one is given."""
    count(name, value, minimum=minimum)
    if maximum is not None and value > maximum:
        raise DeployError(
            f"{name}={value!r} is not usable: give a whole number between {minimum} and {maximum}"
        )
    return int(value)


def _metrics_port(port: Any) -> int:
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 1024:
        raise DeployError(
            f"metrics_port={port} is a privileged port the non-root worker cannot listen on; "
            f"use 1024 or above (default {DEFAULT_METRICS_PORT})"
        )
    return whole("metrics_port", port, 1024, 65535)


def http_probes(port: int = DEFAULT_METRICS_PORT) -> tuple[Probe, Probe, Probe]:
    """(liveness, readiness, start-up) probes on the worker's metrics port.

    Liveness asks ``/healthz`` (the poll loop is alive), readiness ``/readyz`` (Kafka and
    Redis reachable, partitions assigned or waiting for assignment). The start-up probe gives
    a worker 90 s to check its servers and create its topics before liveness counts.
    """
    _metrics_port(port)

    def probe(path: str, period: int, failures: int) -> Probe:
        return Probe(
            http_get=HTTPGetAction(path=path, port=_PORT_NAME),
            period_seconds=period,
            timeout_seconds=3,
            failure_threshold=failures,
        )

    return probe(HEALTH_PATH, 10, 3), probe(READY_PATH, 5, 3), probe(HEALTH_PATH, 2, 45)


def _with_metrics_args(args: Sequence[str] | None, port: int) -> list[str]:
    given = list(args or ())
    if "--metrics-port" in given:
        at = given.index("--metrics-port")
        if given[at + 1 : at + 2] != [str(port)]:
            raise DeployError(
                f"args {given!r} give --metrics-port other than metrics_port={port}; give the "
                "port once, as metrics_port"
            )
        return given
    return [*given, "--metrics-port", str(port)]


def with_operations(
    deployment: Deployment,
    *,
    metrics_port: int | None = DEFAULT_METRICS_PORT,
    http_liveness: bool = True,
    topology_spread: bool = True,
    partitions: int | None = None,
) -> Deployment:
    """``deployment`` with the metrics port, probes, scrape annotations, spread and partitions
    of a worker Deployment (see the module docstring); ``metrics_port=None`` adds none of the
    port's parts."""
    template = deployment.spec.template
    pod = template.spec
    container = pod.containers[0]
    changes: dict[str, Any] = {}
    annotations = dict(template.metadata.annotations or {}) if template.metadata else {}
    if metrics_port is not None:
        port = _metrics_port(metrics_port)
        liveness, readiness, startup = http_probes(port)
        changes.update(
            args=_with_metrics_args(container.args, port),
            ports=[ContainerPort(name=_PORT_NAME, container_port=port, protocol="TCP")],
            readiness_probe=readiness,
        )
        if http_liveness:
            changes.update(liveness_probe=liveness, startup_probe=startup)
        annotations.update(
            {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(port),
                "prometheus.io/path": METRICS_PATH,
            }
        )
    if partitions is not None:
        whole("partitions", partitions, 1)
        replicas = deployment.spec.replicas
        if replicas is not None and replicas > partitions:
            raise DeployError(
                f"replicas={replicas} is more than the {partitions} partitions: "
                f"{replicas - partitions} workers would sit idle (a partition has one consumer "
                "in a group); lower replicas or raise partitions"
            )
        env = list(container.env or ())
        given = next((var for var in env if var.name == PARTITIONS_ENV), None)
        if given is None:
            env.append(EnvVar(name=PARTITIONS_ENV, value=str(partitions)))
        elif given.value != str(partitions):
            raise DeployError(
                f"{PARTITIONS_ENV}={given.value!r} in the environment differs from "
                f"partitions={partitions}; give the partition count once"
            )
        changes["env"] = env
    spread = None
    if topology_spread:
        selector = LabelSelector(match_labels=deployment.spec.selector.match_labels)
        spread = [
            TopologySpreadConstraint(
                max_skew=1,
                topology_key=key,
                when_unsatisfiable="ScheduleAnyway",
                label_selector=selector,
            )
            for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
        ]
    metadata = (template.metadata or ObjectMeta()).model_copy(
        update={"annotations": annotations or None}
    )
    new_pod = pod.model_copy(
        update={
            "containers": [container.model_copy(update=changes), *pod.containers[1:]],
            "topology_spread_constraints": spread,
        }
    )
    new_template = template.model_copy(update={"metadata": metadata, "spec": new_pod})
    return deployment.model_copy(
        update={"spec": deployment.spec.model_copy(update={"template": new_template})}
    )
