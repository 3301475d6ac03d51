"""``qmtl worker MODULE:PIPELINE``: a process serving a pipeline's shards on Kafka.

Registered on the ``qmtl`` root group through ``qmtl_register_commands``. Options not given come
from QMTL settings (``QMTL_KAFKA__BOOTSTRAP_SERVERS``, ``QMTL_REDIS__URL``, ``qmtl.toml``).

Before anything else the worker checks that Kafka and Redis answer
(:func:`~qmtl_engine_kafka.operations.check_services`); every failure that ends it is one line
on stderr (``Error: …`` on a terminal, a JSON log event ``qmtl.kafka.worker_failed`` otherwise,
like the rest of its log) and exit code 1. With ``--metrics-port`` it serves ``/metrics``,
``/healthz`` and ``/readyz`` (:mod:`qmtl_engine_kafka.operations`).
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import TYPE_CHECKING, Any, NoReturn, cast

import click
import structlog

from qmtl.errors import QmtlError

if TYPE_CHECKING:
    from qmtl_engine_kafka.engine import KafkaEngine
    from qmtl_engine_kafka.worker import Worker

log = structlog.get_logger(__name__)


@click.command()
@click.argument("target")
@click.option(
    "--bootstrap",
    default=None,
    help="Kafka bootstrap servers (default: QMTL_KAFKA__BOOTSTRAP_SERVERS)",
)
@click.option("--redis-url", default=None, help="Redis state URL (default: QMTL_REDIS__URL)")
@click.option(
    "--namespace",
    default=None,
    help="Where the live run's history goes (default: the pipeline's name)",
)
@click.option(
    "--partitions",
    type=int,
    default=None,
    help="Partitions of the shard topic when it is created (default: settings); an existing "
    "deployment keeps its own",
)
@click.option(
    "--log-every",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds between progress lines (processed counts, lag)",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve /metrics (Prometheus), /healthz and /readyz on this port "
    "(default: QMTL_KAFKA__METRICS_PORT; none)",
)
@click.option(
    "--warm-start/--no-warm-start",
    default=None,
    help="A deployment without pending state of its own (a new plan after an upgrade) "
    "continues its namespace's history: seeded windows, events of stored buckets late "
    "(default: QMTL_KAFKA__WARM_START; on)",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def worker(
    target: str,
    bootstrap: str | None,
    redis_url: str | None,
    namespace: str | None,
    partitions: int | None,
    log_every: float,
    metrics_port: int | None,
    warm_start: bool | None,
    log_level: str,
) -> None:
    """Serve MODULE:PIPELINE's shards on Kafka until SIGTERM/SIGINT.

    Start as many as you like: the pipeline's consumer group spreads its partitions (and so its
    shards) over them, and a worker that dies hands its share to the others (pending state lives
    in Redis). Every run is served at once: the live run fed through the input topics, and every
    finite run sent with run(workers=0). SIGTERM finishes the current batch, commits it and
    closes. Touches $QMTL_WORKER_HEARTBEAT_FILE from its poll loop. A node that
    keeps failing fails readiness and stops the worker (QMTL_KAFKA__FAILURE_POLICY).

    Changed code is a new deployment next to the old one (topics and input offsets of its
    own, the same consumer group): start the new workers, then stop the old ones.
    """
    from qmtl.cli import configure_logging, load_object
    from qmtl.runtime import Resolver

    configure_logging(log_level)
    _relay_stdlib_logging(log_level)
    pipeline = load_object(target)
    try:
        plan = pipeline.build()
        resolver = Resolver()
        options: dict[str, Any] = {}
        if bootstrap:
            options["bootstrap_servers"] = bootstrap
        if partitions:
            options["partitions"] = partitions
        if metrics_port is not None:
            options["metrics_port"] = metrics_port
        if warm_start is not None:
            options["warm_start"] = warm_start
        engine = cast("KafkaEngine", resolver.engine("kafka", options))
        state = resolver.state("redis", {"url": redis_url} if redis_url else {})
        stop = threading.Event()
        running = _start(engine, plan, state, namespace, log_every)
        monitor = running.monitor

        def _stop(signum: int, _frame: Any) -> None:
            log.info("qmtl.kafka.worker_stopping", signal=signal.Signals(signum).name)
            monitor.stopping()
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        try:
            monitor.start()
        except QmtlError:
            running.close()  # its consumers leave their groups at once
            raise
        try:
            log.info(
                "qmtl.kafka.worker_started",
                pipeline=plan.pipeline,
                shards=len(plan.shards),
                partitions=running.layout.partitions,
                group=running.topics.group,
                metrics_port=monitor.server.port if monitor.server is not None else None,
                failure_policy=running.settings.failure_policy,
            )
            running.run_until(stop)
        finally:
            monitor.close()
        log.info(
            "qmtl.kafka.worker_stopped",
            pipeline=plan.pipeline,
            processed=running.applier.applied + running.stats["forwarded"],
            buckets=running.stats["buckets"],
        )
    except QmtlError as error:
        _fail(error)


def _relay_stdlib_logging(level: str) -> None:
    """Records of stdlib logging (librdkafka's relayed lines among them) rendered like the
    worker's own events (JSON unless on a terminal) instead of as bare text in its stream."""
    import logging

    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer()
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso"),
                structlog.stdlib.add_logger_name,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _fail(error: QmtlError) -> NoReturn:
    """One line and exit code 1: ``Error: …`` on a terminal, else a JSON log event (the
    format of the rest of the worker's log, see :func:`qmtl.cli.configure_logging`)."""
    if sys.stderr.isatty():
        raise click.ClickException(str(error)) from error
    log.error("qmtl.kafka.worker_failed", error=str(error), error_type=type(error).__name__)
    raise click.exceptions.Exit(1) from error


def _start(
    engine: KafkaEngine, plan: Any, state: Any, namespace: str | None, log_every: float
) -> Worker:
    """Check the services, then the deployment's worker with its operations monitor."""
    from qmtl_engine_kafka._layout import deployment_hash
    from qmtl_engine_kafka.operations import WorkerMonitor, check_services
    from qmtl_engine_kafka.topics import run_topics

    settings = engine.settings
    what = f"qmtl worker of pipeline '{plan.pipeline}'"
    check_services(settings, state, what=what, timeout_s=settings.startup_timeout_s)
    monitor = WorkerMonitor.for_worker(
        settings,
        state,
        pipeline=plan.pipeline,
        probe_topic=run_topics(plan.pipeline, plan=deployment_hash(plan)).shard,
    )
    return engine.worker(plan, state, namespace=namespace, log_every_s=log_every, monitor=monitor)
