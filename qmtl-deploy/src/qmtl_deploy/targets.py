"""The deploy targets qmtl-deploy registers: ``dockerfile``, ``image`` and ``k8s``.

Each is built by the registry from its options model
(``plugins.deploy_targets.get("k8s").create({"namespace": "trading"})``) and returns a small
object whose methods call the library functions with those options filled in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from qmtl_deploy.docker import build_docker_image, push_docker_image
from qmtl_deploy.dockerfile import DockerfileOptions, render_dockerfile, write_dockerfile
from qmtl_deploy.k8s.generators import K8sDeploymentGenerator, K8sJobGenerator, to_yaml
from qmtl_deploy.k8s.models import Deployment, Job, Manifest
from qmtl_deploy.k8s.scaling import worker_manifests


class ImageOptions(BaseModel):
    """Options of the ``image`` deploy target."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    registry: str | None = Field(default=None, description="Registry/namespace to push to")
    platform: str | None = Field(default=None, description="docker build --platform")
    pull: bool = Field(default=False, description="Always pull a newer base image")
    no_cache: bool = Field(default=False, description="Build without the layer cache")


class K8sOptions(BaseModel):
    """Options of the ``k8s`` deploy target, applied to every manifest it generates."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str | None = Field(default=None, description="Namespace of the manifests")
    resources: dict[str, dict[str, str | int]] | None = Field(
        default=None, description="{'requests': {...}, 'limits': {...}}; defaults when omitted"
    )
    service_account_name: str | None = Field(default=None, description="Pod service account")
    image_pull_secrets: list[str] | None = Field(default=None, description="Pull secret names")
    env_from_secrets: list[str] | None = Field(
        default=None, description="Secrets whose keys all become environment variables"
    )


class DockerfileTarget:
    """Writes Dockerfiles with fixed :class:`DockerfileOptions`."""

    def __init__(self, options: DockerfileOptions) -> None:
        self.options = options

    def render(self) -> str:
        """The Dockerfile text for the configured dependency file (default requirements.txt)."""
        o = self.options
        return render_dockerfile(
            o.dependency_file or "requirements.txt",
            base_image=o.base_image,
            worker=o.worker,
            command=o.command,
        )

    def write(self, target_dir: str | os.PathLike[str] = ".", *, overwrite: bool = False) -> Path:
        """Write the Dockerfile (and .dockerignore) into ``target_dir``."""
        o = self.options
        return write_dockerfile(
            target_dir,
            o.dependency_file,
            base_image=o.base_image,
            worker=o.worker,
            command=o.command,
            dockerignore=o.dockerignore,
            overwrite=overwrite,
        )


class ImageTarget:
    """Builds and pushes images with fixed :class:`ImageOptions`."""

    def __init__(self, options: ImageOptions) -> None:
        self.options = options

    def build(self, context_dir: str | os.PathLike[str], tag: str) -> str:
        o = self.options
        return build_docker_image(
            context_dir, tag, platform=o.platform, pull=o.pull, no_cache=o.no_cache
        )

    def push(self, tag: str) -> str:
        return push_docker_image(tag, self.options.registry)


class K8sTarget:
    """Generates Jobs and worker Deployments with fixed :class:`K8sOptions`."""

    def __init__(self, options: K8sOptions) -> None:
        self.options = options

    def _defaults(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        defaults = self.options.model_dump(exclude_none=True)
        return {**defaults, **{k: v for k, v in kwargs.items() if v is not None}}

    def job(self, pipeline_def: Any, image: str, **kwargs: Any) -> Job:
        return K8sJobGenerator.generate_job(pipeline_def, image, **self._defaults(kwargs))

    def deployment(
        self, pipeline_def: Any, image: str, target: str | None = None, **kwargs: Any
    ) -> Deployment:
        return K8sDeploymentGenerator.generate_deployment(
            pipeline_def, image, target, **self._defaults(kwargs)
        )

    def workers(
        self, pipeline_def: Any, image: str, target: str | None = None, **kwargs: Any
    ) -> list[Manifest]:
        """The worker Deployment, its disruption budget and optional autoscaler."""
        return worker_manifests(pipeline_def, image, target, **self._defaults(kwargs))

    @staticmethod
    def to_yaml(*manifests: Manifest | Mapping[str, Any]) -> str:
        return to_yaml(*manifests)


def dockerfile_target(options: DockerfileOptions) -> DockerfileTarget:
    return DockerfileTarget(options)


def image_target(options: ImageOptions) -> ImageTarget:
    return ImageTarget(options)


def k8s_target(options: K8sOptions) -> K8sTarget:
    return K8sTarget(options)


__all__ = [
    "DockerfileTarget",
    "ImageOptions",
    "ImageTarget",
    "K8sOptions",
    "K8sTarget",
    "dockerfile_target",
    "image_target",
    "k8s_target",
]
