"""qmtl-deploy: Dockerfiles, images and Kubernetes manifests for QMTL pipelines.

Importing this package starts nothing and reads nothing from the environment. The public names
below are imported on first use, so loading the ``qmtl`` plugin (``qmtl_deploy.plugin``) stays
cheap for commands that never deploy; docker is called only by :func:`build_docker_image` and
:func:`push_docker_image`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
        worker_manifests,
    )

_EXPORTS = {
    "DEFAULT_BASE_IMAGE": "qmtl_deploy.dockerfile",
    "Deployment": "qmtl_deploy.k8s",
    "DockerDaemonError": "qmtl_deploy.docker",
    "DockerError": "qmtl_deploy.docker",
    "DockerNotFoundError": "qmtl_deploy.docker",
    "Job": "qmtl_deploy.k8s",
    "K8sDeploymentGenerator": "qmtl_deploy.k8s",
    "K8sJobGenerator": "qmtl_deploy.k8s",
    "build_docker_image": "qmtl_deploy.docker",
    "dns1123_name": "qmtl_deploy.k8s",
    "extract_dependencies": "qmtl_deploy.dependencies",
    "parse_dependencies": "qmtl_deploy.dependencies",
    "push_docker_image": "qmtl_deploy.docker",
    "to_yaml": "qmtl_deploy.k8s",
    "worker_manifests": "qmtl_deploy.k8s",
    "write_dockerfile": "qmtl_deploy.dockerfile",
}

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
    "worker_manifests",
    "write_dockerfile",
]


def __getattr__(name: str) -> Any:
    if name == "container":
        return importlib.import_module("qmtl_deploy.container")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qmtl_deploy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
