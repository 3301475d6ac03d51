"""Pydantic models of the Kubernetes objects qmtl-deploy generates (the subset it uses).

Fields are snake_case in Python and camelCase in the manifest (``run_as_non_root`` ->
``runAsNonRoot``). Unset fields are ``None`` and never appear in the output:
:meth:`Manifest.to_dict` and :meth:`Manifest.model_dump_yaml` drop them.
"""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from qmtl.models import QmtlModel

Quantity = str | int


class K8sModel(QmtlModel):
    """Base of the Kubernetes models: frozen, strict, camelCase on the wire."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
    )

    def to_dict(self) -> dict[str, Any]:
        """The manifest as plain data: camelCase keys, no null fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ObjectMeta(K8sModel):
    name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class SecretKeySelector(K8sModel):
    """One key of a Secret; the value is read by the kubelet, never written into the manifest."""

    name: str = Field(description="Secret name")
    key: str = Field(description="Key inside the Secret")
    optional: bool | None = None


class ConfigMapKeySelector(K8sModel):
    name: str
    key: str
    optional: bool | None = None


class EnvVarSource(K8sModel):
    secret_key_ref: SecretKeySelector | None = None
    config_map_key_ref: ConfigMapKeySelector | None = None


class EnvVar(K8sModel):
    name: str
    value: str | None = None
    value_from: EnvVarSource | None = None


class SecretEnvSource(K8sModel):
    name: str
    optional: bool | None = None


class EnvFromSource(K8sModel):
    prefix: str | None = None
    secret_ref: SecretEnvSource | None = None


class ResourceRequirements(K8sModel):
    requests: dict[str, Quantity] | None = None
    limits: dict[str, Quantity] | None = None


class Capabilities(K8sModel):
    add: list[str] | None = None
    drop: list[str] | None = None


class SeccompProfile(K8sModel):
    type: Literal["RuntimeDefault", "Localhost", "Unconfined"] = "RuntimeDefault"


class SecurityContext(K8sModel):
    """Container security context."""

    run_as_non_root: bool | None = None
    run_as_user: int | None = None
    run_as_group: int | None = None
    allow_privilege_escalation: bool | None = None
    read_only_root_filesystem: bool | None = None
    privileged: bool | None = None
    capabilities: Capabilities | None = None
    seccomp_profile: SeccompProfile | None = None


class PodSecurityContext(K8sModel):
    run_as_non_root: bool | None = None
    run_as_user: int | None = None
    run_as_group: int | None = None
    fs_group: int | None = None
    seccomp_profile: SeccompProfile | None = None


class ExecAction(K8sModel):
    command: list[str]


class HTTPGetAction(K8sModel):
    path: str | None = None
    port: int | str


class ContainerPort(K8sModel):
    name: str | None = None
    container_port: int
    protocol: Literal["TCP", "UDP", "SCTP"] | None = None


class Probe(K8sModel):
    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    initial_delay_seconds: int | None = None
    period_seconds: int | None = None
    timeout_seconds: int | None = None
    failure_threshold: int | None = None
    success_threshold: int | None = None


class VolumeMount(K8sModel):
    name: str
    mount_path: str
    read_only: bool | None = None


class EmptyDirVolumeSource(K8sModel):
    medium: str | None = None
    size_limit: Quantity | None = None


class Volume(K8sModel):
    name: str
    empty_dir: EmptyDirVolumeSource | None = None


class LocalObjectReference(K8sModel):
    name: str


class Container(K8sModel):
    name: str
    image: str
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    env: list[EnvVar] | None = None
    env_from: list[EnvFromSource] | None = None
    resources: ResourceRequirements | None = None
    security_context: SecurityContext | None = None
    ports: list[ContainerPort] | None = None
    liveness_probe: Probe | None = None
    readiness_probe: Probe | None = None
    startup_probe: Probe | None = None
    volume_mounts: list[VolumeMount] | None = None


class LabelSelector(K8sModel):
    match_labels: dict[str, str]


class TopologySpreadConstraint(K8sModel):
    max_skew: int
    topology_key: str
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"]
    label_selector: LabelSelector | None = None


class PodSpec(K8sModel):
    containers: list[Container]
    restart_policy: Literal["Always", "OnFailure", "Never"] | None = None
    security_context: PodSecurityContext | None = None
    service_account_name: str | None = None
    automount_service_account_token: bool | None = None
    termination_grace_period_seconds: int | None = None
    image_pull_secrets: list[LocalObjectReference] | None = None
    volumes: list[Volume] | None = None
    topology_spread_constraints: list[TopologySpreadConstraint] | None = None


class PodTemplateSpec(K8sModel):
    metadata: ObjectMeta | None = None
    spec: PodSpec


class Manifest(K8sModel):
    """A top-level Kubernetes object."""

    def model_dump_yaml(self) -> str:
        """The manifest as YAML (block style, keys in Kubernetes order, no null fields)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)


class JobSpec(K8sModel):
    template: PodTemplateSpec
    backoff_limit: int | None = None
    ttl_seconds_after_finished: int | None = None
    active_deadline_seconds: int | None = None


class Job(Manifest):
    api_version: Literal["batch/v1"] = "batch/v1"
    kind: Literal["Job"] = "Job"
    metadata: ObjectMeta
    spec: JobSpec


class DeploymentStrategy(K8sModel):
    type: Literal["RollingUpdate", "Recreate"] = "RollingUpdate"


class DeploymentSpec(K8sModel):
    replicas: int | None = None
    selector: LabelSelector
    template: PodTemplateSpec
    strategy: DeploymentStrategy | None = None
    revision_history_limit: int | None = None


class Deployment(Manifest):
    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["Deployment"] = "Deployment"
    metadata: ObjectMeta
    spec: DeploymentSpec


# -- disruption and autoscaling ----------------------------------------------------------------


class PodDisruptionBudgetSpec(K8sModel):
    max_unavailable: int | str | None = None
    min_available: int | str | None = None
    selector: LabelSelector


class PodDisruptionBudget(Manifest):
    api_version: Literal["policy/v1"] = "policy/v1"
    kind: Literal["PodDisruptionBudget"] = "PodDisruptionBudget"
    metadata: ObjectMeta
    spec: PodDisruptionBudgetSpec


class CrossVersionObjectReference(K8sModel):
    api_version: str | None = None
    kind: str | None = None
    name: str


class MetricTarget(K8sModel):
    type: Literal["Utilization", "Value", "AverageValue"]
    average_utilization: int | None = None


class ResourceMetricSource(K8sModel):
    name: str
    target: MetricTarget


class MetricSpec(K8sModel):
    type: Literal["Resource"] = "Resource"
    resource: ResourceMetricSource


class HPAScalingPolicy(K8sModel):
    type: Literal["Pods", "Percent"]
    value: int
    period_seconds: int


class HPAScalingRules(K8sModel):
    stabilization_window_seconds: int | None = None
    select_policy: Literal["Max", "Min", "Disabled"] | None = None
    policies: list[HPAScalingPolicy] | None = None


class HorizontalPodAutoscalerBehavior(K8sModel):
    scale_up: HPAScalingRules | None = None
    scale_down: HPAScalingRules | None = None


class HorizontalPodAutoscalerSpec(K8sModel):
    scale_target_ref: CrossVersionObjectReference
    min_replicas: int | None = None
    max_replicas: int
    metrics: list[MetricSpec] | None = None
    behavior: HorizontalPodAutoscalerBehavior | None = None


class HorizontalPodAutoscaler(Manifest):
    api_version: Literal["autoscaling/v2"] = "autoscaling/v2"
    kind: Literal["HorizontalPodAutoscaler"] = "HorizontalPodAutoscaler"
    metadata: ObjectMeta
    spec: HorizontalPodAutoscalerSpec


# -- KEDA (keda.sh/v1alpha1 custom resources) ----------------------------------------------------


class ScaledObjectAuthRef(K8sModel):
    name: str


class ScaleTrigger(K8sModel):
    type: str
    metadata: dict[str, str]
    authentication_ref: ScaledObjectAuthRef | None = None


class ScaledObjectAdvanced(K8sModel):
    horizontal_pod_autoscaler_config: dict[str, Any] | None = None


class ScaledObjectSpec(K8sModel):
    scale_target_ref: CrossVersionObjectReference
    min_replica_count: int | None = None
    max_replica_count: int | None = None
    polling_interval: int | None = None
    cooldown_period: int | None = None
    advanced: ScaledObjectAdvanced | None = None
    triggers: list[ScaleTrigger]


class ScaledObject(Manifest):
    api_version: Literal["keda.sh/v1alpha1"] = "keda.sh/v1alpha1"
    kind: Literal["ScaledObject"] = "ScaledObject"
    metadata: ObjectMeta
    spec: ScaledObjectSpec


class AuthSecretTargetRef(K8sModel):
    parameter: str
    name: str
    key: str


class TriggerAuthenticationSpec(K8sModel):
    secret_target_ref: list[AuthSecretTargetRef]


class TriggerAuthentication(Manifest):
    api_version: Literal["keda.sh/v1alpha1"] = "keda.sh/v1alpha1"
    kind: Literal["TriggerAuthentication"] = "TriggerAuthentication"
    metadata: ObjectMeta
    spec: TriggerAuthenticationSpec
