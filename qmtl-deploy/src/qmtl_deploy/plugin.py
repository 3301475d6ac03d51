"""Entry point of qmtl-deploy for the ``qmtl`` plugin group.

Registers the ``qmtl deploy`` commands and the ``dockerfile``, ``image`` and ``k8s`` deploy
targets. Nothing is imported from the rest of the package until a hook fires.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qmtl.hookspecs import hookimpl

if TYPE_CHECKING:
    from qmtl.registry import Registry


@hookimpl
def qmtl_register_commands(cli: Any) -> None:
    from qmtl_deploy.cli import deploy

    cli.add_command(deploy)


@hookimpl
def qmtl_register_deploy_targets(registry: Registry) -> None:
    from qmtl_deploy.dockerfile import DockerfileOptions
    from qmtl_deploy.targets import (
        ImageOptions,
        K8sOptions,
        dockerfile_target,
        image_target,
        k8s_target,
    )

    registry.add(
        "dockerfile",
        dockerfile_target,
        DockerfileOptions,
        description="Dockerfile and .dockerignore for a pipeline project",
    )
    registry.add(
        "image", image_target, ImageOptions, description="docker build / push of the project"
    )
    registry.add(
        "k8s",
        k8s_target,
        K8sOptions,
        description="Kubernetes Job per run, Deployment of Kafka workers",
    )
