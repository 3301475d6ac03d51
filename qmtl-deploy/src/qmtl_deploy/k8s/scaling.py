"""A worker Deployment with its disruption budget and, optionally, an autoscaler.

:func:`worker_manifests` returns the Deployment of ``qmtl worker`` (with the metrics port,
probes, scrape annotations and spread of :mod:`qmtl_deploy.k8s.operations`), a
PodDisruptionBudget and, optionally, an autoscaler:

- ``"keda"``: a KEDA ``ScaledObject`` with a Kafka trigger on the lag of the pipeline's consumer
  group (named by :func:`qmtl_engine_kafka.topics.pipeline_group`, the function the engine's
  workers use, so the two cannot drift), and a ``TriggerAuthentication`` when credentials come
  from a Secret;
- ``"hpa"``: an ``autoscaling/v2`` HorizontalPodAutoscaler on CPU utilisation, for clusters
  without KEDA.

Either way the replicas stay between the minimum and the partition count, and scaling down waits
out a stabilisation window, since every change of membership rebalances the consumer group.
"""

from __future__ import annotations

from typing import Any, Literal

from qmtl.errors import DeployError
from qmtl_deploy.k8s.generators import K8sDeploymentGenerator, pipeline_name
from qmtl_deploy.k8s.models import (
    AuthSecretTargetRef,
    CrossVersionObjectReference,
    Deployment,
    HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior,
    HorizontalPodAutoscalerSpec,
    HPAScalingPolicy,
    HPAScalingRules,
    LabelSelector,
    Manifest,
    MetricSpec,
    MetricTarget,
    ObjectMeta,
    PodDisruptionBudget,
    PodDisruptionBudgetSpec,
    ResourceMetricSource,
    ScaledObject,
    ScaledObjectAdvanced,
    ScaledObjectAuthRef,
    ScaledObjectSpec,
    ScaleTrigger,
    TriggerAuthentication,
    TriggerAuthenticationSpec,
)
from qmtl_deploy.k8s.operations import PARTITIONS_ENV, whole

__all__ = [
    "DEFAULT_LAG_THRESHOLD",
    "SCALE_DOWN_WINDOW_S",
    "consumer_group",
    "cpu_autoscaler",
    "disruption_budget",
    "keda_autoscaler",
    "worker_manifests",
]

#: Consumer lag (messages) per worker above which KEDA adds a worker.
DEFAULT_LAG_THRESHOLD = 1000
#: Seconds of lower demand before the autoscaler removes a worker (each removal rebalances).
SCALE_DOWN_WINDOW_S = 300
_KEDA_SASL = ("plaintext", "scram_sha256", "scram_sha512", "oauthbearer", "gssapi")
Autoscaling = Literal["keda", "hpa"]


def consumer_group(pipeline: str) -> str:
    """The consumer group of ``pipeline``'s workers, from the Kafka engine itself."""
    try:
        from qmtl_engine_kafka.topics import pipeline_group
    except ImportError as error:
        raise DeployError(
            "Autoscaling on consumer lag needs the Kafka engine's naming of consumer groups: "
            'pip install "qmtl-deploy[kafka]" (the workers\' image has it already)'
        ) from error
    return pipeline_group(pipeline)


def _owned_meta(deployment: Deployment, suffix: str = "") -> ObjectMeta:
    meta = deployment.metadata
    return ObjectMeta(
        name=f"{meta.name}{suffix}",
        namespace=meta.namespace,
        labels=meta.labels,
        annotations=meta.annotations,
    )


def _target(deployment: Deployment) -> CrossVersionObjectReference:
    return CrossVersionObjectReference(
        api_version="apps/v1", kind="Deployment", name=str(deployment.metadata.name)
    )


def disruption_budget(deployment: Deployment, max_unavailable: int = 1) -> PodDisruptionBudget:
    """At most ``max_unavailable`` workers evicted at once (node drains, upgrades)."""
    if isinstance(max_unavailable, int) and max_unavailable == 0:
        raise DeployError(
            "max_unavailable=0 blocks every voluntary eviction, so node drains would hang; "
            "give 1 or more (or no disruption budget)"
        )
    whole("max_unavailable", max_unavailable, 1)
    return PodDisruptionBudget(
        metadata=_owned_meta(deployment),
        spec=PodDisruptionBudgetSpec(
            max_unavailable=max_unavailable,
            selector=LabelSelector(match_labels=deployment.spec.selector.match_labels),
        ),
    )


def _scale_down_behavior() -> dict[str, Any]:
    return {
        "scaleDown": {
            "stabilizationWindowSeconds": SCALE_DOWN_WINDOW_S,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
        }
    }


def keda_autoscaler(
    deployment: Deployment,
    pipeline: str,
    *,
    bootstrap_servers: str,
    min_replicas: int,
    max_replicas: int,
    lag_threshold: int = DEFAULT_LAG_THRESHOLD,
    sasl: str | None = None,
    tls: bool = False,
    auth_secret: str | None = None,
) -> list[Manifest]:
    """A KEDA ScaledObject on the consumer lag of ``pipeline``'s group, and the
    TriggerAuthentication reading ``auth_secret`` (keys ``username``, ``password`` and, with
    ``tls``, ``ca.crt``) when one is given."""
    if not bootstrap_servers or not bootstrap_servers.strip():
        raise DeployError(
            "KEDA's Kafka trigger needs the brokers: give bootstrap_servers (--kafka-bootstrap), "
            "e.g. 'kafka-0.kafka:9092'"
        )
    whole("lag_threshold", lag_threshold, 1)
    if sasl is not None and sasl not in _KEDA_SASL:
        raise DeployError(
            f"sasl={sasl!r} is not a KEDA Kafka SASL mode; use one of {', '.join(_KEDA_SASL)}"
        )
    if sasl is not None and auth_secret is None:
        raise DeployError(
            f"sasl={sasl!r} needs auth_secret: the Secret holding the KEDA user's 'username' "
            "and 'password'"
        )
    metadata = {
        "bootstrapServers": ",".join(s.strip() for s in bootstrap_servers.split(",") if s.strip()),
        "consumerGroup": consumer_group(pipeline),
        "lagThreshold": str(lag_threshold),
        "offsetResetPolicy": "earliest",  # the workers' auto.offset.reset: a backlog is lag
        "allowIdleConsumers": "false",  # never more workers than partitions
    }
    if sasl is not None:
        metadata["sasl"] = sasl
    if tls:
        metadata["tls"] = "enable"
    manifests: list[Manifest] = []
    auth_ref = None
    if auth_secret is not None:
        refs = [
            AuthSecretTargetRef(parameter=parameter, name=auth_secret, key=key)
            for parameter, key in (("username", "username"), ("password", "password"))
        ]
        if tls:
            refs.append(AuthSecretTargetRef(parameter="ca", name=auth_secret, key="ca.crt"))
        authentication = TriggerAuthentication(
            metadata=_owned_meta(deployment, "-kafka"),
            spec=TriggerAuthenticationSpec(secret_target_ref=refs),
        )
        manifests.append(authentication)
        auth_ref = ScaledObjectAuthRef(name=str(authentication.metadata.name))
    manifests.append(
        ScaledObject(
            metadata=_owned_meta(deployment),
            spec=ScaledObjectSpec(
                scale_target_ref=_target(deployment),
                min_replica_count=min_replicas,
                max_replica_count=max_replicas,
                polling_interval=30,
                cooldown_period=SCALE_DOWN_WINDOW_S,
                advanced=ScaledObjectAdvanced(
                    horizontal_pod_autoscaler_config={"behavior": _scale_down_behavior()}
                ),
                triggers=[
                    ScaleTrigger(type="kafka", metadata=metadata, authentication_ref=auth_ref)
                ],
            ),
        )
    )
    return manifests


def cpu_autoscaler(
    deployment: Deployment, *, min_replicas: int, max_replicas: int, cpu_utilization: int = 70
) -> HorizontalPodAutoscaler:
    """An ``autoscaling/v2`` HPA on the workers' CPU utilisation (of their CPU request)."""
    whole("cpu_utilization", cpu_utilization, 1, 100)
    requests = deployment.spec.template.spec.containers[0].resources
    if requests is None or not (requests.requests or {}).get("cpu"):
        raise DeployError(
            "A CPU autoscaler measures utilisation of the CPU request: give the workers a cpu "
            "request (e.g. --request cpu=500m)"
        )
    if min_replicas < 1:
        raise DeployError(
            f"min_replicas={min_replicas}: a HorizontalPodAutoscaler keeps at least 1 worker "
            "(KEDA can scale to 0)"
        )
    rules = _scale_down_behavior()["scaleDown"]
    return HorizontalPodAutoscaler(
        metadata=_owned_meta(deployment),
        spec=HorizontalPodAutoscalerSpec(
            scale_target_ref=_target(deployment),
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            metrics=[
                MetricSpec(
                    resource=ResourceMetricSource(
                        name="cpu",
                        target=MetricTarget(
                            type="Utilization", average_utilization=cpu_utilization
                        ),
                    )
                )
            ],
            behavior=HorizontalPodAutoscalerBehavior(
                scale_down=HPAScalingRules(
                    stabilization_window_seconds=rules["stabilizationWindowSeconds"],
                    policies=[
                        HPAScalingPolicy(type="Pods", value=1, period_seconds=60),
                    ],
                )
            ),
        ),
    )


def worker_manifests(
    pipeline_def: Any,
    image: str,
    target: str | None = None,
    *,
    partitions: int | None = None,
    autoscaling: Autoscaling | None = None,
    min_replicas: int = 1,
    max_replicas: int | None = None,
    lag_threshold: int = DEFAULT_LAG_THRESHOLD,
    bootstrap_servers: str | None = None,
    keda_sasl: str | None = None,
    keda_tls: bool = False,
    keda_auth_secret: str | None = None,
    cpu_utilization: int = 70,
    disruption_budget_max_unavailable: int | None = 1,
    **deployment_options: Any,
) -> list[Manifest]:
    """The Deployment of ``qmtl worker`` (see :meth:`K8sDeploymentGenerator.generate_deployment`
    for ``deployment_options``), its PodDisruptionBudget (``disruption_budget_max_unavailable=
    None``: none) and, with ``autoscaling``, a KEDA ScaledObject or an HPA.

    ``partitions`` is the partition count of the pipeline's topics (``QMTL_KAFKA__PARTITIONS``,
    set in the pods too); autoscaling needs it, since it bounds the workers that can have work:
    ``max_replicas`` defaults to it and may not exceed it.
    """
    pipeline = pipeline_name(pipeline_def)
    if autoscaling is not None:
        if autoscaling not in ("keda", "hpa"):
            raise DeployError(f"autoscaling={autoscaling!r}: use 'keda', 'hpa' or None")
        if partitions is None:
            raise DeployError(
                "Autoscaling needs partitions (the partition count of the pipeline's topics, "
                f"{PARTITIONS_ENV}): workers beyond it would sit idle, so it bounds max_replicas"
            )
        whole("partitions", partitions, 1)
        max_replicas = partitions if max_replicas is None else max_replicas
        whole("min_replicas", min_replicas, 0)
        whole("max_replicas", max_replicas, max(min_replicas, 1))
        if max_replicas > partitions:
            raise DeployError(
                f"max_replicas={max_replicas} is more than the {partitions} partitions: the "
                "extra workers would sit idle; lower max_replicas or raise partitions"
            )
        deployment_options.setdefault("replicas", max(min_replicas, 1))
    deployment = K8sDeploymentGenerator.generate_deployment(
        pipeline_def, image, target, partitions=partitions, **deployment_options
    )
    manifests: list[Manifest] = []
    if autoscaling is not None:
        # The autoscaler owns the replica count: a replicas field would reset it on every apply.
        deployment = deployment.model_copy(
            update={"spec": deployment.spec.model_copy(update={"replicas": None})}
        )
    manifests.append(deployment)
    if disruption_budget_max_unavailable is not None:
        manifests.append(disruption_budget(deployment, disruption_budget_max_unavailable))
    assert max_replicas is not None or autoscaling is None
    if autoscaling == "keda":
        manifests += keda_autoscaler(
            deployment,
            pipeline,
            bootstrap_servers=bootstrap_servers or "",
            min_replicas=min_replicas,
            max_replicas=int(max_replicas or 1),
            lag_threshold=lag_threshold,
            sasl=keda_sasl,
            tls=keda_tls,
            auth_secret=keda_auth_secret,
        )
    elif autoscaling == "hpa":
        manifests.append(
            cpu_autoscaler(
                deployment,
                min_replicas=min_replicas,
                max_replicas=int(max_replicas or 1),
                cpu_utilization=cpu_utilization,
            )
        )
    return manifests
