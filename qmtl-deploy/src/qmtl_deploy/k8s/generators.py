"""Kubernetes Job and Deployment generators for QMTL pipelines.

Both produce manifests a platform team can apply as they are: DNS-1123 names derived from the
pipeline name, the recommended ``app.kubernetes.io/*`` labels, resource requests and limits, a
non-root ``securityContext`` that satisfies the "restricted" Pod Security Standard, no service
account token, and Secret values passed by reference (``secretKeyRef``), never inlined.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from qmtl.errors import DeployError
from qmtl_deploy.dockerfile import APP_UID, check_image_reference, worker_command
from qmtl_deploy.k8s.checks import check_resources, count, words
from qmtl_deploy.k8s.models import (
    Capabilities,
    Container,
    Deployment,
    DeploymentSpec,
    EmptyDirVolumeSource,
    EnvFromSource,
    EnvVar,
    EnvVarSource,
    ExecAction,
    Job,
    JobSpec,
    LabelSelector,
    LocalObjectReference,
    Manifest,
    ObjectMeta,
    PodSecurityContext,
    PodSpec,
    PodTemplateSpec,
    Probe,
    ResourceRequirements,
    SeccompProfile,
    SecretEnvSource,
    SecretKeySelector,
    SecurityContext,
    Volume,
    VolumeMount,
)
from qmtl_deploy.k8s.names import LABEL_MAX, check_dns1123_label, dns1123_name, label_value
from qmtl_deploy.k8s.operations import DEFAULT_METRICS_PORT, with_operations

#: Requests and limits used when ``resources`` is not given.
DEFAULT_RESOURCES = ResourceRequirements(
    requests={"cpu": "250m", "memory": "256Mi"}, limits={"memory": "1Gi"}
)
#: File a ``qmtl worker`` touches while healthy; the default liveness probe checks its age.
HEARTBEAT_FILE = "/tmp/qmtl-worker.heartbeat"
HEARTBEAT_ENV = "QMTL_WORKER_HEARTBEAT_FILE"

_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

SecretRef = str | tuple[str, str] | SecretKeySelector
ResourcesArg = ResourceRequirements | Mapping[str, Mapping[str, Any]] | None


def pipeline_name(pipeline_def: Any) -> str:
    """The name of ``pipeline_def``: a PipelineDefinition, a Pipeline, anything with ``.name``,
    or the name itself as a str."""
    name = pipeline_def if isinstance(pipeline_def, str) else getattr(pipeline_def, "name", None)
    if not isinstance(name, str) or not name:
        raise DeployError(
            f"Cannot name a manifest after {pipeline_def!r}: pass a PipelineDefinition (or any "
            "object with a non-empty .name), or a pipeline name"
        )
    return name


def to_yaml(*manifests: Manifest | Mapping[str, Any]) -> str:
    """Render one or more manifests as YAML documents separated by ``---``."""
    documents = [m.to_dict() if isinstance(m, Manifest) else dict(m) for m in manifests]
    return yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False)


def _secret_selector(env_name: str, ref: SecretRef) -> SecretKeySelector:
    if isinstance(ref, SecretKeySelector):
        selector = ref
    else:
        if isinstance(ref, str):
            secret, _, key = ref.partition("/")
        else:
            secret, key = ref
        selector = SecretKeySelector(name=secret, key=key)
    if (
        not selector.key
        or not _DNS1123_SUBDOMAIN.match(selector.name)
        or not _SECRET_KEY.match(selector.key)
    ):
        raise DeployError(
            f"Secret reference {ref!r} for {env_name} is not 'secret-name/key'; write the Secret's "
            "name (lower-case DNS name) and the key inside it, e.g. 'qmtl-redis/url'"
        )
    return selector


def _environment(
    env_vars: Mapping[str, Any] | None, secret_env: Mapping[str, SecretRef] | None
) -> list[EnvVar] | None:
    env: list[EnvVar] = []
    for name, value in (env_vars or {}).items():
        if name in (secret_env or {}):
            raise DeployError(
                f"Environment variable {name} is in both env_vars and secret_env; keep it only "
                "in secret_env so its value stays in the Secret"
            )
        env.append(EnvVar(name=name, value=str(value)))
    for name, ref in (secret_env or {}).items():
        env.append(
            EnvVar(name=name, value_from=EnvVarSource(secret_key_ref=_secret_selector(name, ref)))
        )
    for var in env:
        if not _ENV_NAME.match(var.name):
            raise DeployError(
                f"Environment variable name {var.name!r} is invalid; use letters, digits and '_' "
                "and do not start with a digit"
            )
    return env or None


def _secret_name(name: str) -> str:
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        raise DeployError(
            f"Secret name {name!r} is not a valid Kubernetes name (lower-case letters, digits, "
            "'-' and '.'); use the name shown by `kubectl get secrets`"
        )
    return name


def _resources(resources: ResourcesArg) -> ResourceRequirements:
    if resources is None:
        return DEFAULT_RESOURCES
    if isinstance(resources, ResourceRequirements):
        check_resources(resources.requests, resources.limits)
        return resources
    unknown = set(resources) - {"requests", "limits"}
    if unknown:
        raise DeployError(
            f"resources has unknown keys {sorted(unknown)}; use 'requests' and 'limits', e.g. "
            "{'requests': {'cpu': '500m', 'memory': '512Mi'}, 'limits': {'memory': '1Gi'}}"
        )
    check_resources(resources.get("requests"), resources.get("limits"))
    return ResourceRequirements(
        requests=dict(resources["requests"]) if resources.get("requests") else None,
        limits=dict(resources["limits"]) if resources.get("limits") else None,
    )


def _build_pod(
    *,
    container_name: str,
    image: str,
    command: Sequence[str] | str | None,
    args: Sequence[str] | str | None,
    env: list[EnvVar] | None,
    env_from_secrets: Sequence[str] | None,
    resources: ResourcesArg,
    restart_policy: str,
    liveness_probe: Probe | None,
    termination_grace_period_seconds: int | None,
    service_account_name: str | None,
    image_pull_policy: str | None,
    image_pull_secrets: Sequence[str] | None,
    run_as_user: int,
    read_only_root_filesystem: bool,
    labels: dict[str, str],
    annotations: dict[str, str] | None,
) -> PodTemplateSpec:
    check_image_reference(image, "Image")
    if run_as_user < 1:
        raise DeployError(f"run_as_user={run_as_user} is root; pass a non-zero uid such as 10001")
    env_from = [
        EnvFromSource(secret_ref=SecretEnvSource(name=_secret_name(name)))
        for name in env_from_secrets or ()
    ]
    container = Container(
        name=container_name,
        image=image,
        image_pull_policy=image_pull_policy,
        command=words(command, "command"),
        args=words(args, "args"),
        env=env,
        env_from=env_from or None,
        resources=_resources(resources),
        security_context=SecurityContext(
            run_as_non_root=True,
            allow_privilege_escalation=False,
            read_only_root_filesystem=read_only_root_filesystem,
            capabilities=Capabilities(drop=["ALL"]),
        ),
        liveness_probe=liveness_probe,
        volume_mounts=[VolumeMount(name="tmp", mount_path="/tmp")],
    )
    spec = PodSpec(
        containers=[container],
        restart_policy=restart_policy,
        security_context=PodSecurityContext(
            run_as_non_root=True,
            run_as_user=run_as_user,
            run_as_group=run_as_user,
            fs_group=run_as_user,
            seccomp_profile=SeccompProfile(type="RuntimeDefault"),
        ),
        service_account_name=service_account_name,
        automount_service_account_token=False,
        termination_grace_period_seconds=termination_grace_period_seconds,
        image_pull_secrets=[LocalObjectReference(name=n) for n in image_pull_secrets or ()] or None,
        volumes=[Volume(name="tmp", empty_dir=EmptyDirVolumeSource())],
    )
    return PodTemplateSpec(metadata=ObjectMeta(labels=labels, annotations=annotations), spec=spec)


def _metadata(
    name: str,
    namespace: str | None,
    pipeline: str,
    component: str,
    labels: Mapping[str, str] | None,
    annotations: Mapping[str, str] | None,
) -> tuple[ObjectMeta, dict[str, str], dict[str, str]]:
    if namespace is not None:
        check_dns1123_label(namespace, "Namespace")
    all_labels = {
        "app.kubernetes.io/name": "qmtl",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "qmtl-deploy",
        "qmtl.io/pipeline": label_value(pipeline),
        **(labels or {}),
    }
    for key, value in all_labels.items():
        if not _LABEL_VALUE.match(value) or len(value) > LABEL_MAX:
            raise DeployError(
                f"Label {key}={value!r} is not a valid label value (at most 63 characters of "
                "letters, digits, '-', '_', '.', starting and ending alphanumeric)"
            )
    all_annotations = {"qmtl.io/pipeline": pipeline, **(annotations or {})}
    meta = ObjectMeta(
        name=name, namespace=namespace, labels=all_labels, annotations=all_annotations
    )
    return meta, all_labels, all_annotations


class K8sJobGenerator:
    """Generates a Kubernetes ``batch/v1`` Job that runs a pipeline once (a backtest, a batch)."""

    @staticmethod
    def generate_job(
        pipeline_def: Any,
        image: str,
        env_vars: Mapping[str, Any] | None = None,
        job_name: str | None = None,
        command: Sequence[str] | str | None = None,
        args: Sequence[str] | str | None = None,
        resources: ResourcesArg = None,
        namespace: str | None = None,
        secret_env: Mapping[str, SecretRef] | None = None,
        *,
        env_from_secrets: Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        backoff_limit: int = 2,
        ttl_seconds_after_finished: int | None = 86400,
        active_deadline_seconds: int | None = None,
        service_account_name: str | None = None,
        image_pull_policy: str | None = None,
        image_pull_secrets: Sequence[str] | None = None,
        run_as_user: int = APP_UID,
        read_only_root_filesystem: bool = True,
    ) -> Job:
        """Return a :class:`Job` running ``image`` for ``pipeline_def``.

        ``job_name`` defaults to the pipeline name made DNS-1123-safe. ``command``/``args``
        default to the image's entrypoint (``python main.py`` for a generated Dockerfile).
        ``env_vars`` are plain values; ``secret_env`` maps variable names to Secret keys
        (``{"REDIS_URL": "qmtl-redis/url"}``, a ``(secret, key)`` tuple or a
        :class:`SecretKeySelector`) and ``env_from_secrets`` imports every key of the named
        Secrets; neither writes a secret value into the manifest. ``resources`` is
        ``{"requests": {...}, "limits": {...}}`` (default :data:`DEFAULT_RESOURCES`).
        """
        pipeline = pipeline_name(pipeline_def)
        count("backoff_limit", backoff_limit)
        count("ttl_seconds_after_finished", ttl_seconds_after_finished, optional=True)
        count("active_deadline_seconds", active_deadline_seconds, minimum=1, optional=True)
        name = check_dns1123_label(job_name, "Job name") if job_name else dns1123_name(pipeline)
        meta, all_labels, all_annotations = _metadata(
            name, namespace, pipeline, "job", labels, annotations
        )
        template = _build_pod(
            container_name="pipeline",
            image=image,
            command=command,
            args=args,
            env=_environment(env_vars, secret_env),
            env_from_secrets=env_from_secrets,
            resources=resources,
            restart_policy="Never",
            liveness_probe=None,
            termination_grace_period_seconds=None,
            service_account_name=service_account_name,
            image_pull_policy=image_pull_policy,
            image_pull_secrets=image_pull_secrets,
            run_as_user=run_as_user,
            read_only_root_filesystem=read_only_root_filesystem,
            labels=all_labels,
            annotations=all_annotations,
        )
        return Job(
            metadata=meta,
            spec=JobSpec(
                template=template,
                backoff_limit=backoff_limit,
                ttl_seconds_after_finished=ttl_seconds_after_finished,
                active_deadline_seconds=active_deadline_seconds,
            ),
        )

    @staticmethod
    def to_yaml(job: Manifest) -> str:
        """The manifest as YAML with no null fields (``kubectl apply -f`` ready)."""
        return job.model_dump_yaml()


def heartbeat_probe(path: str = HEARTBEAT_FILE, max_age_seconds: int = 60) -> Probe:
    """A liveness probe that fails when ``path`` was not touched within ``max_age_seconds``."""
    count("heartbeat_max_age_seconds", max_age_seconds, minimum=1)
    check = (
        "import os, sys, time; "
        f"sys.exit(time.time() - os.stat({path!r}).st_mtime > {int(max_age_seconds)})"
    )
    return Probe(
        exec=ExecAction(command=["python", "-c", check]),
        initial_delay_seconds=30,
        period_seconds=20,
        timeout_seconds=5,
        failure_threshold=3,
    )


class K8sDeploymentGenerator:
    """Generates an ``apps/v1`` Deployment of long-running ``qmtl worker`` processes.

    Each replica joins the Kafka consumer groups of the pipeline's nodes, so ``replicas`` spreads
    the work and a lost pod's share moves to the survivors.
    """

    @staticmethod
    def generate_deployment(
        pipeline_def: Any,
        image: str,
        target: str | None = None,
        env_vars: Mapping[str, Any] | None = None,
        deployment_name: str | None = None,
        replicas: int = 1,
        command: Sequence[str] | str | None = None,
        args: Sequence[str] | str | None = None,
        resources: ResourcesArg = None,
        namespace: str | None = None,
        secret_env: Mapping[str, SecretRef] | None = None,
        *,
        env_from_secrets: Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        liveness: bool = True,
        liveness_probe: Probe | None = None,
        heartbeat_max_age_seconds: int = 60,
        termination_grace_period_seconds: int = 60,
        service_account_name: str | None = None,
        image_pull_policy: str | None = None,
        image_pull_secrets: Sequence[str] | None = None,
        run_as_user: int = APP_UID,
        read_only_root_filesystem: bool = True,
        metrics_port: int | None = DEFAULT_METRICS_PORT,
        topology_spread: bool = True,
        partitions: int | None = None,
    ) -> Deployment:
        """Return a :class:`Deployment` running ``qmtl worker <target>`` in ``replicas`` pods.

        ``target`` is the pipeline's import path (``"strategies.momentum:pipeline"``); give it, or
        an explicit ``command``. ``metrics_port`` (``--metrics-port``, added to the args) is
        probed over HTTP (liveness and start-up ``/healthz``, readiness ``/readyz``) and
        annotated for Prometheus; ``topology_spread`` spreads the pods over zones and nodes;
        ``partitions`` (``QMTL_KAFKA__PARTITIONS``) bounds ``replicas``
        (:func:`qmtl_deploy.k8s.operations.with_operations`). With ``metrics_port=None`` the pod
        sets ``QMTL_WORKER_HEARTBEAT_FILE`` and the liveness probe restarts a worker whose
        heartbeat file is older than ``heartbeat_max_age_seconds``. Pass ``liveness_probe`` to
        use your own or ``liveness=False`` for none. On shutdown Kubernetes sends SIGTERM and waits
        ``termination_grace_period_seconds`` for the worker to commit offsets and leave its
        consumer groups. Other parameters are as in :meth:`K8sJobGenerator.generate_job`.
        """
        pipeline = pipeline_name(pipeline_def)
        if command is None:
            if target is None:
                raise DeployError(
                    f"A worker Deployment for pipeline '{pipeline}' needs the pipeline's import "
                    "path: pass target='package.module:pipeline' (or an explicit command)"
                )
            command = worker_command(target)
        count("replicas", replicas)
        count("termination_grace_period_seconds", termination_grace_period_seconds)
        name = (
            check_dns1123_label(deployment_name, "Deployment name")
            if deployment_name
            else dns1123_name(pipeline + "-worker")
        )
        meta, all_labels, all_annotations = _metadata(
            name, namespace, pipeline, "worker", labels, annotations
        )
        probe = None
        env = dict(env_vars or {})
        if liveness and liveness_probe is not None:
            probe = liveness_probe
        elif liveness and metrics_port is None:
            env.setdefault(HEARTBEAT_ENV, HEARTBEAT_FILE)
            probe = heartbeat_probe(str(env[HEARTBEAT_ENV]), heartbeat_max_age_seconds)
        template = _build_pod(
            container_name="worker",
            image=image,
            command=command,
            args=args,
            env=_environment(env, secret_env),
            env_from_secrets=env_from_secrets,
            resources=resources,
            restart_policy="Always",
            liveness_probe=probe,
            termination_grace_period_seconds=termination_grace_period_seconds,
            service_account_name=service_account_name,
            image_pull_policy=image_pull_policy,
            image_pull_secrets=image_pull_secrets,
            run_as_user=run_as_user,
            read_only_root_filesystem=read_only_root_filesystem,
            labels=all_labels,
            annotations=all_annotations,
        )
        selector = {
            "app.kubernetes.io/instance": name,
            "app.kubernetes.io/component": "worker",
        }
        deployment = Deployment(
            metadata=meta,
            spec=DeploymentSpec(
                replicas=replicas,
                selector=LabelSelector(match_labels=selector),
                template=template,
            ),
        )
        return with_operations(
            deployment,
            metrics_port=metrics_port,
            http_liveness=liveness and liveness_probe is None,
            topology_spread=topology_spread,
            partitions=partitions,
        )

    @staticmethod
    def to_yaml(deployment: Manifest) -> str:
        """The manifest as YAML with no null fields."""
        return deployment.model_dump_yaml()
