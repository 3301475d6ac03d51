"""``qmtl deploy dockerfile | image | k8s``: the command-line face of qmtl-deploy.

Registered on the ``qmtl`` root group through ``qmtl_register_commands``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from qmtl.errors import QmtlError
from qmtl_deploy.docker import build_docker_image, push_docker_image
from qmtl_deploy.dockerfile import DEFAULT_BASE_IMAGE, write_dockerfile
from qmtl_deploy.k8s.generators import K8sJobGenerator, to_yaml
from qmtl_deploy.k8s.operations import DEFAULT_METRICS_PORT
from qmtl_deploy.k8s.scaling import DEFAULT_LAG_THRESHOLD, worker_manifests


class _DeployGroup(click.Group):
    """Reports a QmtlError as one line and exit status 1 instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except QmtlError as error:
            raise click.ClickException(str(error)) from error


def _pairs(values: tuple[str, ...], option: str, sep: str = "=") -> dict[str, str]:
    result = {}
    for item in values:
        key, found, value = item.partition(sep)
        if not found or not key:
            raise click.BadParameter(f"{item!r} is not KEY{sep}VALUE", param_hint=option)
        result[key] = value
    return result


@click.group(name="deploy", cls=_DeployGroup)
def deploy() -> None:
    """Package a pipeline: Dockerfile, image, Kubernetes manifests."""


@deploy.command()
@click.argument(
    "project_dir", default=".", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--dependency-file",
    help="requirements file or pyproject.toml, relative to PROJECT_DIR "
    "[default: requirements.txt, else pyproject.toml]",
)
@click.option(
    "--base-image",
    default=DEFAULT_BASE_IMAGE,
    show_default=True,
    help="Debian-based Python >= 3.11 image (pin a digest for reproducibility)",
)
@click.option(
    "--worker",
    metavar="MODULE:PIPELINE",
    help="Start `qmtl worker MODULE:PIPELINE` instead of `python main.py`",
)
@click.option("--no-dockerignore", is_flag=True, help="Do not write .dockerignore")
@click.option("--overwrite", is_flag=True, help="Replace existing files")
def dockerfile(
    project_dir: Path,
    dependency_file: str | None,
    base_image: str,
    worker: str | None,
    no_dockerignore: bool,
    overwrite: bool,
) -> None:
    """Write a Dockerfile and .dockerignore into PROJECT_DIR."""
    path = write_dockerfile(
        project_dir,
        dependency_file,
        base_image=base_image,
        worker=worker,
        dockerignore=not no_dockerignore,
        overwrite=overwrite,
    )
    click.echo(f"Wrote {path}", err=True)


@deploy.command()
@click.argument(
    "context_dir", default=".", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option("--tag", "-t", required=True, help="Image name and tag, e.g. my-strategy:1.0")
@click.option(
    "--file",
    "-f",
    "dockerfile_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Dockerfile [default: CONTEXT_DIR/Dockerfile]",
)
@click.option("--build-arg", multiple=True, metavar="KEY=VALUE", help="Repeatable")
@click.option("--platform", help="Target platform, e.g. linux/amd64")
@click.option("--pull", is_flag=True, help="Always pull a newer base image")
@click.option("--no-cache", is_flag=True, help="Build without the layer cache")
@click.option("--push", is_flag=True, help="Push after building")
@click.option("--registry", help="Push as REGISTRY/TAG (implies --push)")
def image(
    context_dir: Path,
    tag: str,
    dockerfile_path: Path | None,
    build_arg: tuple[str, ...],
    platform: str | None,
    pull: bool,
    no_cache: bool,
    push: bool,
    registry: str | None,
) -> None:
    """Build CONTEXT_DIR into an image with docker (and push it)."""
    build_docker_image(
        context_dir,
        tag,
        dockerfile=dockerfile_path,
        build_args=_pairs(build_arg, "--build-arg"),
        platform=platform,
        pull=pull,
        no_cache=no_cache,
    )
    if push or registry:
        pushed = push_docker_image(tag, registry)
        click.echo(f"Pushed {pushed}", err=True)


@deploy.group(cls=_DeployGroup)
def k8s() -> None:
    """Write Kubernetes manifests: a Job per run, or a Deployment of Kafka workers (with its
    disruption budget and optional autoscaler)."""


def _k8s_options(function: Any) -> Any:
    options = [
        click.option("--image", required=True, help="Image to run, e.g. myrepo/pipeline:1.0"),
        click.option("--name", help="Object name [default: from the pipeline name]"),
        click.option("--namespace", help="Namespace of the manifest"),
        click.option(
            "--env",
            multiple=True,
            metavar="KEY=VALUE",
            help="Plain environment variable (repeatable)",
        ),
        click.option(
            "--secret-env",
            multiple=True,
            metavar="KEY=SECRET/KEY",
            help="Environment variable read from a Secret key (repeatable)",
        ),
        click.option(
            "--env-from-secret",
            multiple=True,
            metavar="SECRET",
            help="Import every key of a Secret as environment (repeatable)",
        ),
        click.option(
            "--request",
            multiple=True,
            metavar="RESOURCE=QTY",
            help="Resource request, e.g. cpu=500m (repeatable)",
        ),
        click.option(
            "--limit",
            multiple=True,
            metavar="RESOURCE=QTY",
            help="Resource limit, e.g. memory=1Gi (repeatable)",
        ),
        click.option(
            "--output",
            "-o",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Write the YAML to this file instead of standard output",
        ),
        click.option("--overwrite", is_flag=True, help="Replace an existing --output file"),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _common(kw: dict[str, Any]) -> dict[str, Any]:
    requests = _pairs(kw.pop("request"), "--request")
    limits = _pairs(kw.pop("limit"), "--limit")
    resources = None
    if requests or limits:
        resources = {"requests": requests, "limits": limits}
    return {
        "env_vars": _pairs(kw.pop("env"), "--env") or None,
        "secret_env": _pairs(kw.pop("secret_env"), "--secret-env") or None,
        "env_from_secrets": list(kw.pop("env_from_secret")) or None,
        "resources": resources,
        "namespace": kw.pop("namespace"),
    }


def _emit(text: str, output: Path | None, overwrite: bool) -> None:
    if output is None:
        click.echo(text, nl=False)
        return
    if output.exists() and not overwrite and output.read_text(encoding="utf-8") != text:
        raise click.ClickException(
            f"'{output}' already exists with different content; pass --overwrite to replace it"
        )
    output.write_text(text, encoding="utf-8")
    click.echo(f"Wrote {output}", err=True)


@k8s.command()
@click.option("--pipeline-name", required=True, help="Pipeline name (names and labels the Job)")
@_k8s_options
@click.option("--command", "command_line", help="Container command [default: the image CMD]")
@click.option("--backoff-limit", type=int, default=2, show_default=True)
def job(**kw: Any) -> None:
    """A batch/v1 Job that runs the pipeline once."""
    common = _common(kw)
    manifest = K8sJobGenerator.generate_job(
        kw["pipeline_name"],
        kw["image"],
        job_name=kw["name"],
        command=kw["command_line"],
        backoff_limit=kw["backoff_limit"],
        **common,
    )
    _emit(to_yaml(manifest), kw["output"], kw["overwrite"])


@k8s.command()
@click.argument("target", metavar="MODULE:PIPELINE")
@click.option("--pipeline-name", help="Pipeline name [default: imported from MODULE:PIPELINE]")
@_k8s_options
@click.option("--replicas", type=int, default=1, show_default=True)
@click.option(
    "--grace-period",
    type=int,
    default=60,
    show_default=True,
    help="terminationGracePeriodSeconds: time to commit offsets after SIGTERM",
)
@click.option("--no-liveness", is_flag=True, help="Omit the liveness probe")
@click.option(
    "--metrics-port",
    type=int,
    default=DEFAULT_METRICS_PORT,
    show_default=True,
    help="Port of `qmtl worker --metrics-port`: /metrics scraped, /healthz and /readyz probed",
)
@click.option(
    "--no-metrics",
    is_flag=True,
    help="No metrics port: a heartbeat-file liveness probe, no readiness probe or scraping",
)
@click.option(
    "--partitions",
    type=int,
    help="Partitions of the pipeline's topics (QMTL_KAFKA__PARTITIONS): the most busy workers",
)
@click.option("--no-topology-spread", is_flag=True, help="Do not spread pods over zones/nodes")
@click.option(
    "--max-unavailable",
    type=int,
    default=1,
    show_default=True,
    help="PodDisruptionBudget: workers evicted at once",
)
@click.option("--no-pdb", is_flag=True, help="Omit the PodDisruptionBudget")
@click.option(
    "--autoscale",
    type=click.Choice(["keda", "hpa"]),
    help="keda: ScaledObject on consumer lag; hpa: HorizontalPodAutoscaler on CPU",
)
@click.option("--min-replicas", type=int, default=1, show_default=True)
@click.option("--max-replicas", type=int, help="[default: --partitions]")
@click.option(
    "--lag-threshold",
    type=int,
    default=DEFAULT_LAG_THRESHOLD,
    show_default=True,
    help="KEDA: consumer lag per worker that adds a worker",
)
@click.option("--kafka-bootstrap", help="KEDA: the brokers its Kafka trigger reads lag from")
@click.option(
    "--keda-sasl",
    type=click.Choice(["plaintext", "scram_sha256", "scram_sha512", "oauthbearer", "gssapi"]),
    help="KEDA: SASL mode of its Kafka connection",
)
@click.option("--keda-tls", is_flag=True, help="KEDA: connect to Kafka over TLS")
@click.option(
    "--keda-auth-secret",
    metavar="SECRET",
    help="KEDA: Secret with keys username, password (and ca.crt with --keda-tls)",
)
@click.option(
    "--cpu-target",
    type=int,
    default=70,
    show_default=True,
    help="HPA: average CPU utilisation (percent of the request) to hold",
)
def worker(target: str, **kw: Any) -> None:
    """An apps/v1 Deployment of `qmtl worker MODULE:PIPELINE` processes, its
    PodDisruptionBudget and, with --autoscale, a KEDA ScaledObject or an HPA."""
    common = _common(kw)
    name = kw["pipeline_name"]
    if name is None:
        from qmtl.cli import load_object

        try:
            name = load_object(target).name
        except click.BadParameter as error:
            raise click.BadParameter(
                f"{error.message}; or give --pipeline-name", param_hint="MODULE:PIPELINE"
            ) from error
    manifests = worker_manifests(
        name,
        kw["image"],
        target,
        deployment_name=kw["name"],
        replicas=kw["replicas"],
        termination_grace_period_seconds=kw["grace_period"],
        liveness=not kw["no_liveness"],
        metrics_port=None if kw["no_metrics"] else kw["metrics_port"],
        topology_spread=not kw["no_topology_spread"],
        partitions=kw["partitions"],
        disruption_budget_max_unavailable=None if kw["no_pdb"] else kw["max_unavailable"],
        autoscaling=kw["autoscale"],
        min_replicas=kw["min_replicas"],
        max_replicas=kw["max_replicas"],
        lag_threshold=kw["lag_threshold"],
        bootstrap_servers=kw["kafka_bootstrap"],
        keda_sasl=kw["keda_sasl"],
        keda_tls=kw["keda_tls"],
        keda_auth_secret=kw["keda_auth_secret"],
        cpu_utilization=kw["cpu_target"],
        **common,
    )
    _emit(to_yaml(*manifests), kw["output"], kw["overwrite"])
