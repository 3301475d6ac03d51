"""build/push against a stand-in ``docker`` that records its arguments (see conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmtl.errors import DeployError
from qmtl_deploy import container
from qmtl_deploy.docker import DockerDaemonError, DockerError, DockerNotFoundError


@pytest.fixture
def project(make_project) -> Path:
    directory = make_project({"requirements.txt": "qmtl-core\n", "main.py": ""})
    container.write_dockerfile(directory)
    return directory


def test_build_runs_docker_build_with_an_argument_list(fake_docker, project) -> None:
    lines: list[str] = []
    tag = container.build_docker_image(
        context_dir=project,
        tag="my-strategy:latest",
        build_args={"PIP_INDEX_URL": "https://pypi.org/simple"},
        platform="linux/amd64",
        output=lines.append,
    )
    assert tag == "my-strategy:latest"
    assert fake_docker.calls[0][0] == "version"  # daemon checked first
    assert fake_docker.calls_without_version() == [
        [
            "build",
            "--tag",
            "my-strategy:latest",
            "--file",
            str(project / "Dockerfile"),
            "--build-arg",
            "PIP_INDEX_URL=https://pypi.org/simple",
            "--platform",
            "linux/amd64",
            str(project),
        ]
    ]
    # stdout and stderr of docker both reach the caller, in order.
    assert lines == ["step 1/2 build", "step 2/2 build done"]


def test_output_is_streamed_while_docker_runs(fake_docker, project, tmp_path, monkeypatch) -> None:
    go = tmp_path / "go"
    monkeypatch.setenv("FAKE_DOCKER_GO", str(go))
    seen: list[str] = []

    def on_line(line: str) -> None:
        seen.append(line)
        go.touch()  # the stand-in only finishes after the first line reached us

    container.build_docker_image(project, "my-strategy:latest", output=on_line)
    assert seen == ["step 1/2 build", "step 2/2 build done"]


def test_default_output_goes_to_stdout(fake_docker, project, capfd) -> None:
    container.build_docker_image(project, "my-strategy:latest")
    assert "step 2/2 build done" in capfd.readouterr().out


def test_push_tags_for_the_registry_then_pushes(fake_docker) -> None:
    lines: list[str] = []
    pushed = container.push_docker_image(
        tag="my-strategy:latest", registry="myrepo", output=lines.append
    )
    assert pushed == "myrepo/my-strategy:latest"
    assert fake_docker.calls_without_version() == [
        ["tag", "my-strategy:latest", "myrepo/my-strategy:latest"],
        ["push", "myrepo/my-strategy:latest"],
    ]
    assert "step 1/2 push" in lines


def test_push_without_registry_pushes_the_tag_itself(fake_docker) -> None:
    assert container.push_docker_image("ghcr.io/acme/strategy:1.0") == "ghcr.io/acme/strategy:1.0"
    assert fake_docker.calls_without_version() == [["push", "ghcr.io/acme/strategy:1.0"]]


def test_push_does_not_double_the_registry_prefix(fake_docker) -> None:
    assert container.push_docker_image("myrepo/s:1", registry="myrepo/") == "myrepo/s:1"
    assert fake_docker.calls_without_version() == [["push", "myrepo/s:1"]]


def test_missing_docker_is_a_clear_error(no_docker, project) -> None:
    with pytest.raises(DockerNotFoundError, match="docker CLI was not found on PATH"):
        container.build_docker_image(project, "my-strategy:latest")
    with pytest.raises(DeployError, match="install Docker"):
        container.push_docker_image("my-strategy:latest", "myrepo")


def test_daemon_down_is_a_clear_error_before_anything_runs(fake_docker, project) -> None:
    fake_docker.set_mode("daemon-down")
    with pytest.raises(DockerDaemonError, match=r"cannot reach a docker daemon; start Docker") as e:
        container.build_docker_image(project, "my-strategy:latest")
    assert "Is the docker daemon running?" in str(e.value)
    with pytest.raises(DockerDaemonError):
        container.push_docker_image("my-strategy:latest", "myrepo")
    assert fake_docker.calls_without_version() == []


def test_daemon_lost_during_a_command_is_reported_as_such(fake_docker, project) -> None:
    fake_docker.set_mode("daemon-lost")
    with pytest.raises(DockerDaemonError, match="could not reach the docker daemon"):
        container.build_docker_image(project, "my-strategy:latest", output=lambda line: None)


def test_failed_build_raises_with_the_last_output_lines(fake_docker, project) -> None:
    fake_docker.set_mode("fail")
    with pytest.raises(DockerError, match="`docker build` failed with exit status 1") as info:
        container.build_docker_image(project, "my-strategy:latest", output=lambda line: None)
    assert "No matching distribution found for qmtl-nonexistent" in str(info.value)


def test_tags_that_could_be_options_are_rejected(fake_docker, project) -> None:
    with pytest.raises(DeployError, match="not a valid image reference"):
        container.build_docker_image(project, "--output=/etc")
    with pytest.raises(DeployError, match="not a valid image reference"):
        container.push_docker_image("my-strategy:latest", registry="repo; rm -rf /")
    assert fake_docker.calls == []


def test_build_without_dockerfile_says_how_to_make_one(fake_docker, make_project) -> None:
    project = make_project({"requirements.txt": "x\n"}, name="bare")
    with pytest.raises(DeployError, match="write_dockerfile"):
        container.build_docker_image(project, "my-strategy:latest")


def test_a_failing_output_handler_stops_docker(fake_docker, project, tmp_path, monkeypatch) -> None:
    import time

    monkeypatch.setenv("FAKE_DOCKER_GO", str(tmp_path / "never"))  # docker would wait 10 s

    def broken(line: str) -> None:
        raise RuntimeError("disk full")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="disk full"):
        container.build_docker_image(project, "my-strategy:latest", output=broken)
    assert time.monotonic() - started < 5  # the child was killed, not waited for
