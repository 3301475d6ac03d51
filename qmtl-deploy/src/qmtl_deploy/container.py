"""Seed-compatible container utilities (``qmtl.sdk.container`` resolves to this module).

::

    from qmtl.sdk import container

    container.write_dockerfile(target_dir=".", dependency_file="requirements.txt")
    dep_file = container.extract_dependencies(project_dir=".")
    container.build_docker_image(context_dir=".", tag="my-strategy:latest")
    container.push_docker_image(tag="my-strategy:latest", registry="myrepo")

As in the earlier SDK, ``extract_dependencies`` here returns the dependency file's path as a
``str``; :func:`qmtl_deploy.extract_dependencies` returns a :class:`pathlib.Path`.
"""

import os

from qmtl_deploy import dependencies
from qmtl_deploy.dependencies import parse_dependencies
from qmtl_deploy.docker import (
    DockerDaemonError,
    DockerError,
    DockerNotFoundError,
    build_docker_image,
    check_docker_daemon,
    push_docker_image,
)
from qmtl_deploy.dockerfile import (
    DEFAULT_BASE_IMAGE,
    render_dockerfile,
    render_dockerignore,
    write_dockerfile,
)


def extract_dependencies(project_dir: str | os.PathLike[str] = ".") -> str:
    """The seed's form: the path of ``project_dir``'s ``requirements.txt``, else its
    ``pyproject.toml``, as a string (``DeployError`` when it has neither)."""
    return str(dependencies.extract_dependencies(project_dir))


__all__ = [
    "DEFAULT_BASE_IMAGE",
    "DockerDaemonError",
    "DockerError",
    "DockerNotFoundError",
    "build_docker_image",
    "check_docker_daemon",
    "extract_dependencies",
    "parse_dependencies",
    "push_docker_image",
    "render_dockerfile",
    "render_dockerignore",
    "write_dockerfile",
]
