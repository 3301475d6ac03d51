"""qmtl-deploy: Dockerfiles, images and Kubernetes manifests for QMTL pipelines.

Importing this package starts nothing and reads nothing from the environment; docker is called
only by :func:`build_docker_image` / :func:`push_docker_image`.
"""

from qmtl_deploy import container
from qmtl_deploy.dependencies import extract_dependencies, parse_dependencies
from qmtl_deploy.docker import (
    DockerDaemonError,
    DockerError,
    DockerNotFoundError,
    build_docker_image,
    push_docker_image,
)
from qmtl_deploy.dockerfile import DEFAULT_BASE_IMAGE, write_dockerfile
from qmtl_deploy.k8s import (
    Deployment,
    Job,
    K8sDeploymentGenerator,
    K8sJobGenerator,
    dns1123_name,
    to_yaml,
)

__all__ = [
    "DEFAULT_BASE_IMAGE",
    "Deployment",
    "DockerDaemonError",
    "DockerError",
    "DockerNotFoundError",
    "Job",
    "K8sDeploymentGenerator",
    "K8sJobGenerator",
    "build_docker_image",
    "container",
    "dns1123_name",
    "extract_dependencies",
    "parse_dependencies",
    "push_docker_image",
    "to_yaml",
    "write_dockerfile",
]
