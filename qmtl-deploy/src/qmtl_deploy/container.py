"""Seed-compatible container utilities (``qmtl.sdk.container`` resolves to this module).

::

    from qmtl.sdk import container

    container.write_dockerfile(target_dir=".", dependency_file="requirements.txt")
    dep_file = container.extract_dependencies(project_dir=".")
    container.build_docker_image(context_dir=".", tag="my-strategy:latest")
    container.push_docker_image(tag="my-strategy:latest", registry="myrepo")
"""

from qmtl_deploy.dependencies import extract_dependencies, parse_dependencies
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
