"""The seed README's container and K8s examples run as written.

The code blocks are read from the seed document kept in the repository
(``docs/seed-README.ko.md``, a verbatim copy of ``shared/seed/qmtl-sdk-README.ko.md``). The
container example runs in a fresh project directory against the stand-in ``docker``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

SEED_README = "seed-README.ko.md"
CONTAINER_SECTION = "## 컨테이너 빌드 유틸리티 사용법"
K8S_SECTION = "## K8s Job 템플릿 자동 생성 예시"


def seed_readme() -> Path:
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "docs" / SEED_README
        if candidate.is_file():
            return candidate
    message = f"seed document docs/{SEED_README} not found in the repository"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def python_block(heading: str) -> str:
    text = seed_readme().read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, f"no python block under {heading}"
    return match.group(1)


def test_container_example_runs_as_written(fake_docker, make_project, monkeypatch) -> None:
    code = python_block(CONTAINER_SECTION)
    assert "from qmtl.sdk import container" in code
    project = make_project({"requirements.txt": "qmtl-core\n", "main.py": "print('hi')\n"})
    monkeypatch.chdir(project)

    namespace: dict[str, object] = {}
    exec(compile(code, SEED_README, "exec"), namespace)

    dockerfile = (project / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "pip install --no-cache-dir -r requirements.txt" in dockerfile
    assert (project / ".dockerignore").is_file()
    # seed 13.9/69: the dependency file's path, a str ending in requirements.txt
    assert isinstance(namespace["dep_file"], str)
    assert namespace["dep_file"].endswith("requirements.txt")
    assert fake_docker.calls_without_version() == [
        ["build", "--tag", "my-strategy:latest", "--file", "Dockerfile", "."],
        ["tag", "my-strategy:latest", "myrepo/my-strategy:latest"],
        ["push", "myrepo/my-strategy:latest"],
    ]

    # Running the same script again succeeds: an identical Dockerfile is left as it is.
    exec(compile(code, SEED_README, "exec"), {})
    assert (project / "Dockerfile").read_text() == dockerfile


def test_k8s_example_runs_as_written(capsys, assert_valid_manifest) -> None:
    code = python_block(K8S_SECTION)
    assert "from qmtl.sdk import K8sJobGenerator, PipelineDefinition" in code

    exec(compile(code, SEED_README, "exec"), {})

    printed = capsys.readouterr().out
    manifest = yaml.safe_load(printed)
    assert_valid_manifest(manifest)
    assert manifest["metadata"]["name"] == "my-pipeline"
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "myrepo/pipeline:latest"
    assert {"name": "REDIS_URL", "value": "redis://localhost:6379"} in container["env"]
    assert {"name": "KAFKA_BROKER", "value": "kafka:9092"} in container["env"]


def test_seed_import_paths_resolve_to_qmtl_deploy() -> None:
    import qmtl_deploy
    import qmtl_deploy.container
    from qmtl.sdk import K8sJobGenerator, container

    assert container is qmtl_deploy.container
    assert K8sJobGenerator is qmtl_deploy.K8sJobGenerator


def test_package_readme_examples_run(fake_docker, make_project, monkeypatch, capsys) -> None:
    """Every python block of qmtl-deploy/README.md runs, in order, in one namespace."""
    from qmtl.models import PipelineDefinition

    readme = Path(__file__).resolve().parents[1] / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) >= 6
    project = make_project(
        {
            "requirements.txt": "-r requirements/prod.txt\n",
            "requirements/prod.txt": "qmtl-core>=0.1\nnumpy\n",
            "main.py": "",
        }
    )
    monkeypatch.chdir(project)
    namespace: dict[str, object] = {"pipeline_def": PipelineDefinition(name="momentum")}
    for block in blocks:
        exec(compile(block, str(readme), "exec"), namespace)
    assert namespace["job"].metadata.namespace == "trading"
    assert namespace["deployment"].spec.replicas == 3
    assert "kind: Deployment" in capsys.readouterr().out
    assert ["push", "ghcr.io/acme/my-strategy:1.4"] in fake_docker.calls
