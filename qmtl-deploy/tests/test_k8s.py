"""Kubernetes manifests: every one generated here validates against the bundled schemas."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from qmtl.errors import DeployError, ModelValidationError
from qmtl.models import PipelineDefinition
from qmtl.pipeline import Pipeline
from qmtl_deploy import K8sDeploymentGenerator, K8sJobGenerator, dns1123_name, to_yaml
from qmtl_deploy.k8s import (
    HEARTBEAT_ENV,
    Job,
    PodSpec,
    ResourceRequirements,
    SecretKeySelector,
)

IMAGE = "myrepo/pipeline:latest"


def walk(value: Any) -> list[Any]:
    """Every value nested in ``value``."""
    if isinstance(value, dict):
        return [value, *(v for item in value.values() for v in walk(item))]
    if isinstance(value, list):
        return [value, *(v for item in value for v in walk(item))]
    return [value]


def pod_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"]


def test_seed_behaviour_job_yaml(assert_valid_manifest) -> None:
    pipeline = PipelineDefinition(name="test-pipeline", nodes=[])
    job = K8sJobGenerator.generate_job(
        pipeline, IMAGE, env_vars={"REDIS_URL": "redis://r:6379", "KAFKA_BROKER": "kafka:9092"}
    )
    text = K8sJobGenerator.to_yaml(job)
    for expected in (
        "apiVersion: batch/v1",
        "name: test-pipeline",
        "REDIS_URL",
        "KAFKA_BROKER",
        f"image: {IMAGE}",
    ):
        assert expected in text
    assert "null" not in text
    assert_valid_manifest(yaml.safe_load(text))


def test_job_is_hardened_and_has_no_null_fields(assert_valid_manifest) -> None:
    job = K8sJobGenerator.generate_job(PipelineDefinition(name="bt"), IMAGE)
    data = assert_valid_manifest(job)
    assert None not in walk(data)
    spec = pod_spec(data)
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (c,) = spec["containers"]
    assert c["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]  # writable /tmp only
    assert c["resources"]["requests"] == {"cpu": "250m", "memory": "256Mi"}
    assert "command" not in c and "args" not in c  # the image's CMD runs
    assert data["spec"]["backoffLimit"] == 2
    assert data["spec"]["ttlSecondsAfterFinished"] == 86400


def test_job_options_from_the_seed_signature(assert_valid_manifest) -> None:
    job = K8sJobGenerator.generate_job(
        PipelineDefinition(name="my-pipeline"),
        IMAGE,
        env_vars={"LOG_LEVEL": "info", "WORKERS": 4, "DEBUG": "true"},
        job_name="nightly-backtest",
        command=["qmtl", "run"],
        args="strategies.momentum:pipeline --json",
        resources={"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}},
        namespace="research",
        labels={"team": "quant"},
        active_deadline_seconds=3600,
    )
    data = assert_valid_manifest(job)
    assert data["metadata"]["name"] == "nightly-backtest"
    assert data["metadata"]["namespace"] == "research"
    assert data["metadata"]["labels"]["team"] == "quant"
    assert data["metadata"]["annotations"]["qmtl.io/pipeline"] == "my-pipeline"
    (c,) = pod_spec(data)["containers"]
    assert c["command"] == ["qmtl", "run"]
    assert c["args"] == ["strategies.momentum:pipeline", "--json"]
    assert c["env"] == [
        {"name": "LOG_LEVEL", "value": "info"},
        {"name": "WORKERS", "value": "4"},
        {"name": "DEBUG", "value": "true"},
    ]
    assert c["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"memory": "8Gi"},
    }
    assert data["spec"]["activeDeadlineSeconds"] == 3600
    # YAML keeps "true" a string, so Kubernetes accepts the env value.
    assert "value: 'true'" in to_yaml(job)


def test_secrets_are_referenced_never_inlined(assert_valid_manifest) -> None:
    job = K8sJobGenerator.generate_job(
        PipelineDefinition(name="live"),
        IMAGE,
        env_vars={"KAFKA_BROKER": "kafka:9092"},
        secret_env={
            "REDIS_URL": "qmtl-redis/url",
            "KAFKA_PASSWORD": ("qmtl-kafka", "sasl.password"),
            "API_TOKEN": SecretKeySelector(name="broker-api", key="token", optional=True),
        },
        env_from_secrets=["exchange-keys"],
    )
    data = assert_valid_manifest(job)
    (c,) = pod_spec(data)["containers"]
    secret_vars = {e["name"]: e for e in c["env"] if "valueFrom" in e}
    assert secret_vars == {
        "REDIS_URL": {
            "name": "REDIS_URL",
            "valueFrom": {"secretKeyRef": {"name": "qmtl-redis", "key": "url"}},
        },
        "KAFKA_PASSWORD": {
            "name": "KAFKA_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "qmtl-kafka", "key": "sasl.password"}},
        },
        "API_TOKEN": {
            "name": "API_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "broker-api", "key": "token", "optional": True}},
        },
    }
    assert c["envFrom"] == [{"secretRef": {"name": "exchange-keys"}}]


def test_a_variable_cannot_be_both_plain_and_secret() -> None:
    with pytest.raises(DeployError, match="keep it only in secret_env"):
        K8sJobGenerator.generate_job(
            "p",
            IMAGE,
            env_vars={"REDIS_URL": "redis://:hunter2@r"},
            secret_env={"REDIS_URL": "s/k"},
        )


@pytest.mark.parametrize("ref", ["no-key", "Upper/key", "s/", ("s", "bad key")])
def test_malformed_secret_reference_is_rejected(ref) -> None:
    with pytest.raises(DeployError, match="secret-name/key"):
        K8sJobGenerator.generate_job("p", IMAGE, secret_env={"X": ref})


@pytest.mark.parametrize(
    ("pipeline", "expected"),
    [
        ("my-pipeline", "my-pipeline"),
        ("My_Pipeline v2", "my-pipeline-v2"),
        ("BTC/USD momentum (1h)", "btc-usd-momentum-1h"),
        ("__x__", "x"),
    ],
)
def test_names_are_dns1123_derived_from_the_pipeline(
    assert_valid_manifest, pipeline, expected
) -> None:
    data = assert_valid_manifest(
        K8sJobGenerator.generate_job(PipelineDefinition(name=pipeline), IMAGE)
    )
    assert data["metadata"]["name"] == expected
    assert data["metadata"]["annotations"]["qmtl.io/pipeline"] == pipeline


def test_long_and_non_ascii_names_stay_valid_and_distinct(assert_valid_manifest) -> None:
    a = "strategy_" + "x" * 100 + "_a"
    b = "strategy_" + "x" * 100 + "_b"
    names = {dns1123_name(a), dns1123_name(b)}
    assert len(names) == 2 and all(len(n) <= 63 for n in names)
    korean = K8sJobGenerator.generate_job(PipelineDefinition(name="모멘텀 전략"), IMAGE)
    data = assert_valid_manifest(korean)
    assert data["metadata"]["name"].startswith("pipeline-")
    assert data["metadata"]["annotations"]["qmtl.io/pipeline"] == "모멘텀 전략"
    long_job = assert_valid_manifest(
        K8sJobGenerator.generate_job(PipelineDefinition(name=a), IMAGE)
    )
    assert len(long_job["metadata"]["labels"]["qmtl.io/pipeline"]) <= 63


def test_an_explicit_invalid_name_is_an_error_with_a_suggestion() -> None:
    with pytest.raises(DeployError, match=r"'My_Job' is not a valid Kubernetes name.*'my-job'"):
        K8sJobGenerator.generate_job("p", IMAGE, job_name="My_Job")
    with pytest.raises(DeployError, match="Namespace"):
        K8sJobGenerator.generate_job("p", IMAGE, namespace="Research")


def test_pipeline_objects_and_anything_with_a_name_are_accepted(assert_valid_manifest) -> None:
    class Named:
        name = "from-object"

    for source, expected in (
        (Pipeline(name="Live Momentum"), "live-momentum"),
        (Named(), "from-object"),
    ):
        job = K8sJobGenerator.generate_job(source, IMAGE)
        assert assert_valid_manifest(job)["metadata"]["name"] == expected
    with pytest.raises(DeployError, match=r"non-empty \.name"):
        K8sJobGenerator.generate_job(object(), IMAGE)


def test_root_uid_and_bad_image_are_refused() -> None:
    with pytest.raises(DeployError, match="root"):
        K8sJobGenerator.generate_job("p", IMAGE, run_as_user=0)
    with pytest.raises(DeployError, match="not a valid image reference"):
        K8sJobGenerator.generate_job("p", "My Image")
    with pytest.raises(DeployError, match="unknown keys"):
        K8sJobGenerator.generate_job("p", IMAGE, resources={"cpu": "1"})


def test_models_are_strict_and_round_trip(assert_valid_manifest) -> None:
    job = K8sJobGenerator.generate_job(
        "p", IMAGE, resources=ResourceRequirements(limits={"cpu": 1})
    )
    again = Job.model_validate(job.to_dict())  # camelCase input works too
    assert again == job
    with pytest.raises(ModelValidationError, match=r"restartPolicy|restart_policy"):
        PodSpec(containers=[], restart_policy="Sometimes")
    assert_valid_manifest(again)


def test_worker_deployment(assert_valid_manifest) -> None:
    deployment = K8sDeploymentGenerator.generate_deployment(
        PipelineDefinition(name="Live Momentum"),
        IMAGE,
        target="strategies.momentum:pipeline",
        replicas=3,
        namespace="trading",
        env_vars={"QMTL_ENGINE": "kafka"},
        secret_env={"QMTL_REDIS__URL": "qmtl-redis/url"},
    )
    data = assert_valid_manifest(deployment)
    assert data["apiVersion"] == "apps/v1" and data["kind"] == "Deployment"
    assert data["metadata"]["name"] == "live-momentum-worker"
    assert data["spec"]["replicas"] == 3
    selector = data["spec"]["selector"]["matchLabels"]
    assert selector.items() <= data["spec"]["template"]["metadata"]["labels"].items()
    spec = pod_spec(data)
    assert spec["terminationGracePeriodSeconds"] == 60
    assert spec["restartPolicy"] == "Always"
    assert spec["securityContext"]["runAsNonRoot"] is True
    (c,) = spec["containers"]
    assert c["command"] == ["qmtl", "worker", "strategies.momentum:pipeline"]
    # the worker's metrics port, probed over HTTP and announced to Prometheus
    assert c["args"] == ["--metrics-port", "9464"]
    assert c["ports"] == [{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    annotations = data["spec"]["template"]["metadata"]["annotations"]
    assert {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9464",
        "prometheus.io/path": "/metrics",
    }.items() <= annotations.items()
    assert "prometheus.io/scrape" not in data["metadata"]["annotations"]  # the pods are scraped
    assert [
        (t["topologyKey"], t["labelSelector"]["matchLabels"])
        for t in spec["topologySpreadConstraints"]
    ] == [("topology.kubernetes.io/zone", selector), ("kubernetes.io/hostname", selector)]
    assert HEARTBEAT_ENV not in {var["name"] for var in c["env"]}
    assert None not in walk(data)


def test_worker_deployment_without_a_metrics_port_probes_the_heartbeat_file(
    assert_valid_manifest,
) -> None:
    deployment = K8sDeploymentGenerator.generate_deployment(
        "p", IMAGE, target="m:p", metrics_port=None, topology_spread=False
    )
    data = assert_valid_manifest(deployment)
    spec = pod_spec(data)
    (c,) = spec["containers"]
    probe = c["livenessProbe"]
    assert probe["exec"]["command"][:2] == ["python", "-c"]
    assert "/tmp/qmtl-worker.heartbeat" in probe["exec"]["command"][2]
    assert {"name": HEARTBEAT_ENV, "value": "/tmp/qmtl-worker.heartbeat"} in c["env"]
    assert not {"args", "ports", "readinessProbe", "startupProbe"} & set(c)
    assert "topologySpreadConstraints" not in spec
    assert "prometheus.io/scrape" not in data["spec"]["template"]["metadata"]["annotations"]


def test_heartbeat_probe_command_detects_a_stale_file(tmp_path) -> None:
    import os
    import subprocess
    import sys
    import time

    heartbeat = tmp_path / "hb"
    deployment = K8sDeploymentGenerator.generate_deployment(
        "p",
        IMAGE,
        "m:p",
        env_vars={HEARTBEAT_ENV: str(heartbeat)},
        heartbeat_max_age_seconds=60,
        metrics_port=None,
    )
    command = deployment.spec.template.spec.containers[0].liveness_probe.exec.command
    run = [sys.executable, *command[1:]]
    assert subprocess.run(run, check=False, capture_output=True).returncode != 0  # no heartbeat yet
    heartbeat.touch()
    assert subprocess.run(run, check=False).returncode == 0
    old = time.time() - 120
    os.utime(heartbeat, (old, old))
    assert subprocess.run(run, check=False).returncode == 1


def test_worker_options(assert_valid_manifest) -> None:
    deployment = K8sDeploymentGenerator.generate_deployment(
        "p",
        IMAGE,
        command=["qmtl", "worker", "m:p", "--log-level", "info"],
        deployment_name="momentum",
        liveness=False,
        termination_grace_period_seconds=120,
        replicas=0,
        image_pull_secrets=["regcred"],
        service_account_name="qmtl",
    )
    data = assert_valid_manifest(deployment)
    spec = pod_spec(data)
    assert "livenessProbe" not in spec["containers"][0]
    assert spec["terminationGracePeriodSeconds"] == 120
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["serviceAccountName"] == "qmtl"
    assert data["spec"]["replicas"] == 0


def test_worker_needs_a_target() -> None:
    with pytest.raises(DeployError, match=r"target='package\.module:pipeline'"):
        K8sDeploymentGenerator.generate_deployment("p", IMAGE)
    with pytest.raises(DeployError, match="not an import path"):
        K8sDeploymentGenerator.generate_deployment("p", IMAGE, target="strategies/momentum.py")


def test_several_manifests_in_one_yaml_stream(assert_valid_manifest) -> None:
    job = K8sJobGenerator.generate_job("p", IMAGE)
    deployment = K8sDeploymentGenerator.generate_deployment("p", IMAGE, "m:p")
    documents = list(yaml.safe_load_all(to_yaml(job, deployment)))
    assert [d["kind"] for d in documents] == ["Job", "Deployment"]
    for document in documents:
        assert_valid_manifest(document)


def test_schema_validation_rejects_what_kubernetes_would(assert_valid_manifest) -> None:
    from kubernetes_validate.utils import ValidationError

    data = K8sJobGenerator.generate_job("p", IMAGE).to_dict()
    data["spec"]["template"]["spec"]["containers"][0]["runAsNonRoot"] = True  # wrong level
    with pytest.raises(ValidationError):
        assert_valid_manifest(data)


def test_env_from_secret_names_are_checked(assert_valid_manifest) -> None:
    job = K8sJobGenerator.generate_job("p", IMAGE, env_from_secrets=["kafka.sasl-creds"])
    assert assert_valid_manifest(job)["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [
        {"secretRef": {"name": "kafka.sasl-creds"}}
    ]
    with pytest.raises(DeployError, match="kubectl get secrets"):
        K8sJobGenerator.generate_job("p", IMAGE, env_from_secrets=["Kafka_Creds"])
