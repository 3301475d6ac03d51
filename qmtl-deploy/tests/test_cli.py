"""``qmtl deploy ...``: the click group directly and through the ``qmtl`` root command."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from qmtl_deploy.cli import deploy


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_dockerfile_command(runner, make_project) -> None:
    project = make_project({"pyproject.toml": "[project]\nname='s'\nversion='1'\n"})
    result = runner.invoke(deploy, ["dockerfile", str(project), "--worker", "s.live:pipeline"])
    assert result.exit_code == 0, result.output
    text = (project / "Dockerfile").read_text()
    assert 'CMD ["qmtl", "worker", "s.live:pipeline"]' in text
    assert "pip install --no-cache-dir --no-deps ." in text

    again = runner.invoke(deploy, ["dockerfile", str(project)])
    assert again.exit_code == 1
    assert "already exists with different content; pass overwrite=True (or --overwrite)" in (
        again.output
    )
    replaced = runner.invoke(deploy, ["dockerfile", str(project), "--overwrite"])
    assert replaced.exit_code == 0
    assert 'CMD ["python", "main.py"]' in (project / "Dockerfile").read_text()


def test_image_command_builds_and_pushes(runner, fake_docker, make_project) -> None:
    project = make_project({"requirements.txt": "qmtl-core\n"})
    assert runner.invoke(deploy, ["dockerfile", str(project)]).exit_code == 0
    result = runner.invoke(
        deploy,
        ["image", str(project), "-t", "strat:1.0", "--build-arg", "A=1", "--registry", "reg.io/q"],
    )
    assert result.exit_code == 0, result.output
    assert "step 2/2 build done" in result.output
    assert fake_docker.calls_without_version() == [
        [
            "build",
            "--tag",
            "strat:1.0",
            "--file",
            str(project / "Dockerfile"),
            "--build-arg",
            "A=1",
            str(project),
        ],
        ["tag", "strat:1.0", "reg.io/q/strat:1.0"],
        ["push", "reg.io/q/strat:1.0"],
    ]


def test_image_command_without_docker_fails_cleanly(runner, no_docker, make_project) -> None:
    project = make_project({"requirements.txt": "qmtl-core\n"})
    runner.invoke(deploy, ["dockerfile", str(project)])
    result = runner.invoke(deploy, ["image", str(project), "-t", "strat:1.0"])
    assert result.exit_code == 1
    assert "docker CLI was not found on PATH" in result.output
    assert "Traceback" not in result.output


def test_k8s_job_command(runner, assert_valid_manifest) -> None:
    result = runner.invoke(
        deploy,
        [
            "k8s",
            "job",
            "--pipeline-name",
            "Nightly Backtest",
            "--image",
            "myrepo/p:1",
            "--env",
            "LOG_LEVEL=info",
            "--secret-env",
            "REDIS_URL=qmtl-redis/url",
            "--request",
            "cpu=500m",
            "--limit",
            "memory=2Gi",
            "--namespace",
            "research",
            "--command",
            "qmtl run strategies.bt:pipeline",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load(result.output)
    assert_valid_manifest(manifest)
    assert manifest["metadata"]["name"] == "nightly-backtest"
    (c,) = manifest["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["qmtl", "run", "strategies.bt:pipeline"]
    assert c["resources"] == {"requests": {"cpu": "500m"}, "limits": {"memory": "2Gi"}}
    assert {
        "name": "REDIS_URL",
        "valueFrom": {"secretKeyRef": {"name": "qmtl-redis", "key": "url"}},
    } in c["env"]


def test_k8s_worker_command_imports_the_pipeline_name(
    runner, tmp_path, monkeypatch, assert_valid_manifest
) -> None:
    module = tmp_path / "qmtl_deploy_cli_strategy.py"
    module.write_text(
        "from qmtl.pipeline import Pipeline\npipeline = Pipeline(name='Live Momentum')\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    out = tmp_path / "worker.yaml"
    args = [
        "k8s",
        "worker",
        "qmtl_deploy_cli_strategy:pipeline",
        "--image",
        "myrepo/p:1",
        "--replicas",
        "4",
        "-o",
        str(out),
    ]
    result = runner.invoke(deploy, args)
    assert result.exit_code == 0, result.output
    manifest, budget = yaml.safe_load_all(out.read_text())  # the Deployment and its budget
    assert_valid_manifest(manifest)
    assert_valid_manifest(budget)
    assert budget["kind"] == "PodDisruptionBudget"
    assert manifest["metadata"]["name"] == "live-momentum-worker"
    assert manifest["spec"]["replicas"] == 4
    assert manifest["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "qmtl",
        "worker",
        "qmtl_deploy_cli_strategy:pipeline",
    ]
    # An existing output file with other content is kept unless --overwrite.
    changed = runner.invoke(deploy, [*args[:-2], "--replicas", "2", "-o", str(out)])
    assert changed.exit_code == 1 and "--overwrite" in changed.output
    assert next(yaml.safe_load_all(out.read_text()))["spec"]["replicas"] == 4


def test_k8s_worker_with_an_unimportable_target_suggests_pipeline_name(runner) -> None:
    result = runner.invoke(
        deploy, ["k8s", "worker", "no_such_module_xyz:pipeline", "--image", "a:1"]
    )
    assert result.exit_code == 2
    assert "--pipeline-name" in result.output
    named = runner.invoke(
        deploy,
        ["k8s", "worker", "no_such_module_xyz:pipeline", "--image", "a:1", "--pipeline-name", "x"],
    )
    assert named.exit_code == 0, named.output


def test_bad_pairs_are_usage_errors(runner) -> None:
    result = runner.invoke(
        deploy, ["k8s", "job", "--pipeline-name", "p", "--image", "a:1", "--env", "NOVALUE"]
    )
    assert result.exit_code == 2
    assert "'NOVALUE' is not KEY=VALUE" in result.output


def test_registered_on_the_qmtl_root_command(runner, monkeypatch) -> None:
    from qmtl.cli import build_cli

    monkeypatch.delenv("QMTL_PLUGIN_AUTOLOAD", raising=False)
    root = build_cli()
    result = runner.invoke(root, ["deploy", "--help"])
    assert result.exit_code == 0, result.output
    for command in ("dockerfile", "image", "k8s"):
        assert command in result.output
    k8s = runner.invoke(root, ["deploy", "k8s", "--help"])
    assert "job" in k8s.output and "worker" in k8s.output


def test_deploy_targets_are_registered_through_the_plugin_hook(make_project) -> None:
    from qmtl.plugins import load_plugins

    registry = load_plugins().deploy_targets
    assert {"dockerfile", "image", "k8s"} <= set(registry.kinds())
    assert registry.get("k8s").distribution == "qmtl-deploy"

    target = registry.get("k8s").create({"namespace": "trading"})
    job = target.job("Momentum", "myrepo/p:1")
    assert job.metadata.namespace == "trading"
    deployment = target.deployment("Momentum", "myrepo/p:1", "m:p", replicas=2)
    assert deployment.metadata.namespace == "trading" and deployment.spec.replicas == 2

    project = make_project({"requirements.txt": "qmtl-core\n"})
    written = registry.get("dockerfile").create({"worker": "m:p"}).write(project)
    assert 'CMD ["qmtl", "worker", "m:p"]' in Path(written).read_text()


def test_loading_the_plugin_imports_nothing_else_and_exports_resolve() -> None:
    import subprocess

    code = (
        "import sys, qmtl_deploy.plugin\n"
        "print(sorted(m for m in sys.modules if m.startswith('qmtl_deploy')))\n"
        "import qmtl_deploy\n"
        "missing = [n for n in qmtl_deploy.__all__ if getattr(qmtl_deploy, n, None) is None]\n"
        "print(missing)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, missing = out.stdout.splitlines()
    assert loaded == "['qmtl_deploy', 'qmtl_deploy.plugin']"
    assert missing == "[]"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--request", "cpu=lots"], ["cpu='lots'", "not a Kubernetes quantity", "500m"]),
        (["--limit", "memory=-1Gi"], ["memory='-1Gi'", "negative"]),
        (["--request", "cpus=1"], ["'cpus'", "did you mean 'cpu'"]),
        (["--request", "cpu=2", "--limit", "cpu=1"], ["cpu='2' exceeds its limit cpu='1'"]),
        (["--request", "nvidia.com/gpu=0.5"], ["nvidia.com/gpu='0.5'", "whole number"]),
        (["--backoff-limit", "-1"], ["backoff_limit=-1", ">= 0"]),
        (["--command", "python -c 'print(1)"], ["python -c 'print(1)", "balance its quotes"]),
    ],
)
def test_k8s_job_values_the_api_server_rejects_are_one_line_errors(
    runner, args: list[str], fragments: list[str]
) -> None:
    result = runner.invoke(deploy, ["k8s", "job", "--pipeline-name", "p", "--image", "a:1", *args])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output and result.output.count("\n") == 1, result.output
    for fragment in fragments:
        assert fragment in result.output


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--grace-period", "-5"], ["termination_grace_period_seconds=-5"]),
        (["--replicas", "-1"], ["replicas=-1"]),
        (["--limit", "memory=1.5.0Gi"], ["memory='1.5.0Gi'"]),
    ],
)
def test_k8s_worker_values_the_api_server_rejects_are_one_line_errors(
    runner, args: list[str], fragments: list[str]
) -> None:
    result = runner.invoke(
        deploy,
        ["k8s", "worker", "m:pipeline", "--pipeline-name", "p", "--image", "a:1", *args],
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1, result.output
    for fragment in fragments:
        assert fragment in result.output


def test_valid_quantities_still_pass(runner, assert_valid_manifest) -> None:
    result = runner.invoke(
        deploy,
        [
            "k8s",
            "job",
            "--pipeline-name",
            "p",
            "--image",
            "a:1",
            "--request",
            "cpu=0.5",
            "--request",
            "memory=512Mi",
            "--limit",
            "cpu=1",
            "--limit",
            "memory=1e9",
            "--limit",
            "nvidia.com/gpu=1",
            "--command",
            "python -c 'print(\"hi there\")'",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load(result.output)
    assert_valid_manifest(manifest)
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-c", 'print("hi there")']
    assert container["resources"]["limits"]["memory"] == "1e9"
