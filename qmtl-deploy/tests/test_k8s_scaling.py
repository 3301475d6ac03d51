"""Worker Deployments that scale: disruption budget, KEDA or HPA autoscaling bounded by the
partitions, and one-line errors for numbers Kubernetes (or Kafka) would not make work.

Built-in kinds validate strictly with ``kubernetes-validate``; KEDA's custom resources against
the ``openAPIV3Schema`` of KEDA v2.20.1's own CRDs (bundled in ``schemas/``), made strict the way
the API server's strict field validation is: an unknown field anywhere is an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from qmtl.errors import DeployError
from qmtl_deploy import worker_manifests
from qmtl_deploy.cli import deploy
from qmtl_engine_kafka.topics import pipeline_group

IMAGE = "myrepo/pipeline:1.0"
SCHEMAS = Path(__file__).parent / "schemas"
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-v2.20.1-scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-v2.20.1-triggerauthentication.json",
}


def _strict(schema: Any) -> Any:
    """``schema`` with unknown properties refused wherever it lists properties (as
    ``kubectl apply --validate=strict`` does), except where the CRD keeps unknown fields."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in strict
        and "additionalProperties" not in strict
        and not strict.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


def assert_valid_crd(data: dict[str, Any]) -> None:
    name = CRD_SCHEMAS[(data["apiVersion"], data["kind"])]
    schema = _strict(json.loads((SCHEMAS / name).read_text(encoding="utf-8")))
    jsonschema.Draft7Validator(schema).validate(data)


def validate_all(manifests: list[Any], assert_valid_manifest: Any) -> list[dict[str, Any]]:
    documents = []
    for manifest in manifests:
        data = manifest.to_dict() if hasattr(manifest, "to_dict") else manifest
        if data["apiVersion"].startswith("keda.sh/"):
            assert_valid_crd(data)
        else:
            assert_valid_manifest(data)
        documents.append(data)
    return documents


def by_kind(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = {d["kind"]: d for d in documents}
    assert len(kinds) == len(documents), "two manifests of one kind"
    return kinds


def test_the_strict_crd_check_refuses_what_the_api_server_would() -> None:
    good = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "w"},
        "spec": {
            "scaleTargetRef": {"name": "w"},
            "triggers": [{"type": "kafka", "metadata": {"lagThreshold": "10"}}],
        },
    }
    assert_valid_crd(good)
    misspelt = json.loads(json.dumps(good))
    misspelt["spec"]["minReplicas"] = 1  # KEDA's field is minReplicaCount
    with pytest.raises(jsonschema.ValidationError, match="minReplicas"):
        assert_valid_crd(misspelt)
    not_text = json.loads(json.dumps(good))
    not_text["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 10  # trigger metadata is text
    with pytest.raises(jsonschema.ValidationError):
        assert_valid_crd(not_text)
    no_triggers = json.loads(json.dumps(good))
    del no_triggers["spec"]["triggers"]
    with pytest.raises(jsonschema.ValidationError, match="triggers"):
        assert_valid_crd(no_triggers)


def test_a_worker_comes_with_a_disruption_budget(assert_valid_manifest) -> None:
    documents = validate_all(
        worker_manifests("Live Momentum", IMAGE, "strategies.momentum:pipeline", replicas=2),
        assert_valid_manifest,
    )
    kinds = by_kind(documents)
    assert list(kinds) == ["Deployment", "PodDisruptionBudget"]
    deployment, budget = kinds["Deployment"], kinds["PodDisruptionBudget"]
    assert budget["apiVersion"] == "policy/v1"
    assert budget["metadata"]["name"] == deployment["metadata"]["name"]
    assert budget["spec"] == {
        "maxUnavailable": 1,
        "selector": deployment["spec"]["selector"],
    }
    assert deployment["spec"]["replicas"] == 2


def test_keda_scales_on_the_lag_of_the_group_the_workers_join(assert_valid_manifest) -> None:
    documents = validate_all(
        worker_manifests(
            "Live Momentum",
            IMAGE,
            "strategies.momentum:pipeline",
            namespace="trading",
            partitions=6,
            autoscaling="keda",
            min_replicas=2,
            lag_threshold=5000,
            bootstrap_servers="kafka-0.kafka:9093, kafka-1.kafka:9093",
            keda_sasl="scram_sha512",
            keda_tls=True,
            keda_auth_secret="kafka-keda",
        ),
        assert_valid_manifest,
    )
    kinds = by_kind(documents)
    assert list(kinds) == [
        "Deployment",
        "PodDisruptionBudget",
        "TriggerAuthentication",
        "ScaledObject",
    ]
    deployment, scaled = kinds["Deployment"], kinds["ScaledObject"]
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "QMTL_KAFKA__PARTITIONS", "value": "6"} in container["env"]
    spec = scaled["spec"]
    assert scaled["metadata"]["namespace"] == "trading"
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 6)  # max: the partitions
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    # the group the Kafka engine's workers join, by the engine's own function, and by hand
    assert trigger["metadata"]["consumerGroup"] == pipeline_group("Live Momentum")
    assert trigger["metadata"]["consumerGroup"] == "qmtl.Live_Momentum"
    assert trigger["metadata"] == {
        "bootstrapServers": "kafka-0.kafka:9093,kafka-1.kafka:9093",
        "consumerGroup": "qmtl.Live_Momentum",
        "lagThreshold": "5000",
        "offsetResetPolicy": "earliest",
        "allowIdleConsumers": "false",
        "sasl": "scram_sha512",
        "tls": "enable",
    }
    authentication = kinds["TriggerAuthentication"]
    assert trigger["authenticationRef"] == {"name": authentication["metadata"]["name"]}
    assert authentication["spec"]["secretTargetRef"] == [
        {"parameter": "username", "name": "kafka-keda", "key": "username"},
        {"parameter": "password", "name": "kafka-keda", "key": "password"},
        {"parameter": "ca", "name": "kafka-keda", "key": "ca.crt"},
    ]
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert spec["cooldownPeriod"] == 300


def test_an_hpa_on_cpu_is_the_alternative_without_keda(assert_valid_manifest) -> None:
    documents = validate_all(
        worker_manifests(
            "p", IMAGE, "m:p", partitions=4, autoscaling="hpa", min_replicas=2, max_replicas=3
        ),
        assert_valid_manifest,
    )
    kinds = by_kind(documents)
    assert list(kinds) == ["Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler"]
    hpa = kinds["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == kinds["Deployment"]["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 3)
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70},
            },
        }
    ]
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"replicas": 8, "partitions": 6}, "replicas=8 is more than the 6 partitions"),
        (
            {"autoscaling": "hpa", "partitions": 6, "max_replicas": 8},
            "max_replicas=8 is more than the 6 partitions",
        ),
        ({"autoscaling": "keda", "bootstrap_servers": "k:9092"}, "Autoscaling needs partitions"),
        ({"autoscaling": "keda", "partitions": 3}, "KEDA's Kafka trigger needs the brokers"),
        (
            {"autoscaling": "keda", "partitions": 3, "bootstrap_servers": "k", "keda_sasl": "x"},
            "sasl='x' is not a KEDA Kafka SASL mode",
        ),
        (
            {
                "autoscaling": "keda",
                "partitions": 3,
                "bootstrap_servers": "k:9092",
                "keda_sasl": "scram_sha512",
            },
            "needs auth_secret",
        ),
        (
            {"autoscaling": "keda", "partitions": 3, "bootstrap_servers": "k", "lag_threshold": 0},
            "lag_threshold=0",
        ),
        ({"autoscaling": "hpa", "partitions": 3, "min_replicas": 0}, "min_replicas=0"),
        (
            {"autoscaling": "hpa", "partitions": 3, "resources": {"limits": {"memory": "1Gi"}}},
            "give the workers a cpu request",
        ),
        ({"autoscaling": "hpa", "partitions": 3, "cpu_utilization": 150}, "cpu_utilization=150"),
        ({"autoscaling": "hpa", "partitions": 0}, "partitions=0"),
        ({"partitions": -2}, "partitions=-2"),
        ({"metrics_port": 80}, "privileged port"),
        ({"metrics_port": 70000}, "metrics_port=70000"),
        ({"metrics_port": "9464"}, "metrics_port='9464'"),
        ({"disruption_budget_max_unavailable": 0}, "node drains would hang"),
        (
            {"args": ["--metrics-port", "9000"]},
            "other than metrics_port=9464",
        ),
        (
            {"partitions": 4, "env_vars": {"QMTL_KAFKA__PARTITIONS": "8"}},
            "differs from partitions=4",
        ),
        ({"autoscaling": "vpa", "partitions": 2}, "autoscaling='vpa'"),
    ],
)  # fmt: skip
def test_numbers_that_would_not_work_are_one_line_errors(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(DeployError) as caught:
        worker_manifests("p", IMAGE, "m:p", **options)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_qmtl_deploy_k8s_worker_writes_every_manifest(assert_valid_manifest) -> None:
    result = CliRunner().invoke(
        deploy,
        [
            "k8s",
            "worker",
            "strategies.momentum:pipeline",
            "--pipeline-name",
            "momentum",
            "--image",
            IMAGE,
            "--partitions",
            "6",
            "--autoscale",
            "keda",
            "--kafka-bootstrap",
            "kafka:9092",
            "--metrics-port",
            "9500",
            "--max-unavailable",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    documents = list(yaml.safe_load_all(result.stdout))
    kinds = by_kind(validate_all(documents, assert_valid_manifest))
    assert list(kinds) == ["Deployment", "PodDisruptionBudget", "ScaledObject"]
    (container,) = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["--metrics-port", "9500"]
    assert kinds["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 2
    assert kinds["ScaledObject"]["spec"]["maxReplicaCount"] == 6
    assert kinds["ScaledObject"]["spec"]["triggers"][0]["metadata"]["consumerGroup"] == (
        "qmtl.momentum"
    )


def test_qmtl_deploy_k8s_worker_without_metrics_or_budget(assert_valid_manifest) -> None:
    result = CliRunner().invoke(
        deploy,
        [
            "k8s",
            "worker",
            "m:p",
            "--pipeline-name",
            "p",
            "--image",
            IMAGE,
            "--no-metrics",
            "--no-pdb",
            "--no-topology-spread",
        ],
    )
    assert result.exit_code == 0, result.output
    (deployment,) = validate_all(list(yaml.safe_load_all(result.stdout)), assert_valid_manifest)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "exec" in container["livenessProbe"] and "args" not in container


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replicas", "9", "--partitions", "3"], "replicas=9 is more than the 3 partitions"),
        (["--metrics-port", "443"], "privileged port"),
        (["--autoscale", "keda", "--partitions", "3"], "needs the brokers"),
        (["--max-unavailable", "0"], "node drains would hang"),
    ],
)
def test_qmtl_deploy_k8s_worker_refuses_with_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(
        deploy, ["k8s", "worker", "m:p", "--pipeline-name", "p", "--image", IMAGE, *args]
    )
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output


def test_the_readme_scaling_example_runs(
    capsys: pytest.CaptureFixture[str], assert_valid_manifest
) -> None:
    import re

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    (block,) = [
        b for b in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "worker_manifests(" in b
    ]
    exec(compile(block, "qmtl-deploy/README.md", "exec"), {"__name__": "readme"})
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in validate_all(documents, assert_valid_manifest)] == [
        "Deployment",
        "PodDisruptionBudget",
        "TriggerAuthentication",
        "ScaledObject",
    ]
