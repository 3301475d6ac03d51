"""Building and pushing images with the ``docker`` command-line client.

Every call passes an argument list (never a shell string), streams docker's output line by line
as it arrives, and turns each failure into a :class:`DockerError` that says what to do: docker
not installed, its daemon not reachable, or the command itself failing (with its last lines).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from qmtl.errors import DeployError
from qmtl.logs import get_logger
from qmtl_deploy.dockerfile import check_image_reference

log = get_logger(__name__)

OutputHandler = Callable[[str], None]

_DAEMON_DOWN_MARKERS = (
    "cannot connect to the docker daemon",
    "is the docker daemon running",
    "error during connect",
    "docker daemon is not running",
)
_TAIL_LINES = 20


class DockerError(DeployError):
    """The docker CLI is missing, its daemon is unreachable, or a docker command failed."""


class DockerNotFoundError(DockerError):
    """No ``docker`` executable on PATH."""


class DockerDaemonError(DockerError):
    """The docker CLI is installed but cannot reach a daemon."""


def _write_stdout(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def docker_executable() -> str:
    """Return the path of the ``docker`` executable, or raise :class:`DockerNotFoundError`."""
    found = shutil.which("docker")
    if found is None:
        raise DockerNotFoundError(
            "The docker CLI was not found on PATH; install Docker "
            "(https://docs.docker.com/get-docker/) or put the docker client on PATH, then retry"
        )
    return found


def check_docker_daemon() -> str:
    """Return the daemon's server version, or raise a :class:`DockerError` saying how to fix it."""
    executable = docker_executable()
    try:
        completed = subprocess.run(
            [executable, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise DockerDaemonError(
            "The docker daemon did not answer `docker version` within 30 s; check that it is "
            "running and reachable (DOCKER_HOST)"
        ) from error
    output = (completed.stdout + completed.stderr).strip()
    if completed.returncode != 0 or not completed.stdout.strip():
        raise DockerDaemonError(
            "The docker CLI cannot reach a docker daemon; start Docker (e.g. `sudo systemctl "
            "start docker` or Docker Desktop) or set DOCKER_HOST to a reachable engine. "
            f"docker said: {output or f'exit status {completed.returncode}'}"
        )
    return completed.stdout.strip()


def run_docker(args: Sequence[str], *, output: OutputHandler | None = None) -> None:
    """Run ``docker *args``, stream each output line to ``output``, raise DockerError on failure.

    ``output`` defaults to writing to standard output. stderr is merged into the stream, as
    docker writes build progress there.
    """
    executable = docker_executable()
    emit = output or _write_stdout
    command = [executable, *args]
    log.info("qmtl_deploy.docker.run", args=list(args))
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    try:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
    except OSError as error:
        raise DockerError(f"Could not start {executable}: {error}") from error
    with process:
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.rstrip("\n")
                tail.append(line)
                emit(line)
            returncode = process.wait()
        finally:
            if process.poll() is None:  # interrupted (Ctrl-C) or the handler raised
                process.kill()
                process.wait()
    if returncode != 0:
        last = "\n".join(tail)
        lowered = last.lower()
        name = " ".join(["docker", *args[:1]])
        if any(marker in lowered for marker in _DAEMON_DOWN_MARKERS):
            raise DockerDaemonError(
                f"`{name}` could not reach the docker daemon; start Docker or set DOCKER_HOST. "
                f"docker said:\n{last}"
            )
        raise DockerError(f"`{name}` failed with exit status {returncode}:\n{last}")


def _not_an_option(path: Path) -> str:
    text = str(path)
    return f"./{text}" if text.startswith("-") else text


def build_docker_image(
    context_dir: str | os.PathLike[str] = ".",
    tag: str = "qmtl-pipeline:latest",
    *,
    dockerfile: str | os.PathLike[str] | None = None,
    build_args: Mapping[str, str] | None = None,
    platform: str | None = None,
    pull: bool = False,
    no_cache: bool = False,
    output: OutputHandler | None = None,
) -> str:
    """Build ``context_dir`` into image ``tag`` with ``docker build``; return the tag.

    Raises :class:`DockerNotFoundError`, :class:`DockerDaemonError` or :class:`DockerError`.
    """
    context = Path(context_dir)
    if not context.is_dir():
        raise DeployError(f"Build context '{context}' is not a directory")
    dockerfile_path = Path(dockerfile) if dockerfile is not None else context / "Dockerfile"
    if not dockerfile_path.is_file():
        raise DeployError(
            f"No Dockerfile at '{dockerfile_path}'; write one with "
            "container.write_dockerfile() or `qmtl deploy dockerfile`"
        )
    check_image_reference(tag, "Image tag")
    check_docker_daemon()
    args = ["build", "--tag", tag, "--file", _not_an_option(dockerfile_path)]
    for key, value in (build_args or {}).items():
        args += ["--build-arg", f"{key}={value}"]
    if platform:
        args += ["--platform", platform]
    if pull:
        args.append("--pull")
    if no_cache:
        args.append("--no-cache")
    args.append(_not_an_option(context))
    run_docker(args, output=output)
    log.info("qmtl_deploy.docker.built", tag=tag)
    return tag


def push_docker_image(
    tag: str,
    registry: str | None = None,
    *,
    output: OutputHandler | None = None,
) -> str:
    """Push image ``tag``; with ``registry``, tag it ``registry/tag`` first. Return what was pushed.

    ``push_docker_image("my-strategy:latest", "myrepo")`` runs
    ``docker tag my-strategy:latest myrepo/my-strategy:latest`` then
    ``docker push myrepo/my-strategy:latest``. Registry credentials come from ``docker login``.
    """
    check_image_reference(tag, "Image tag")
    remote = tag
    if registry:
        prefix = registry.rstrip("/")
        remote = tag if tag.startswith(prefix + "/") else f"{prefix}/{tag}"
        check_image_reference(remote, "Remote image")
    check_docker_daemon()
    if remote != tag:
        run_docker(["tag", tag, remote], output=output)
    run_docker(["push", remote], output=output)
    log.info("qmtl_deploy.docker.pushed", image=remote)
    return remote
