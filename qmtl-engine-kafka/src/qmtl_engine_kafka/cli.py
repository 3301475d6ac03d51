"""``qmtl worker MODULE:PIPELINE``: a process running a pipeline's nodes on Kafka.

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
from typing import Any, NoReturn

import click
import structlog

from qmtl.errors import QmtlError

log = structlog.get_logger(__name__)


@click.command()
@click.argument("target")
@click.option("--nodes", default=None, help="Comma-separated nodes to run (default: all)")
@click.option(
    "--bootstrap",
    default=None,
    help="Kafka bootstrap servers (default: QMTL_KAFKA__BOOTSTRAP_SERVERS)",
)
@click.option("--redis-url", default=None, help="Redis state URL (default: QMTL_REDIS__URL)")
@click.option(
    "--run",
    "run_id",
    default="live",
    show_default=True,
    help="Run id: the worker processes this run's messages only",
)
@click.option(
    "--partitions",
    type=int,
    default=None,
    help="Partitions of the input topics it creates (default: settings)",
)
@click.option(
    "--log-every",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds between progress lines (processed counts, consumer lag)",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve /metrics (Prometheus), /healthz and /readyz on this port "
    "(default: QMTL_KAFKA__METRICS_PORT; none)",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def worker(
    target: str,
    nodes: str | None,
    bootstrap: str | None,
    redis_url: str | None,
    run_id: str,
    partitions: int | None,
    log_every: float,
    metrics_port: int | None,
    log_level: str,
) -> None:
    """Run the nodes of MODULE:PIPELINE as Kafka consumer groups until SIGTERM/SIGINT.

    Start as many as you like: each node's group spreads over them, and a worker that dies
    hands its share to the others (pending state lives in Redis). SIGTERM finishes the current
    batch, commits it and closes. Touches $QMTL_WORKER_HEARTBEAT_FILE from its poll loop. A node
    that keeps failing fails readiness and stops the worker (QMTL_KAFKA__FAILURE_POLICY).
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
        engine = resolver.engine("kafka", options)
        state = resolver.state("redis", {"url": redis_url} if redis_url else {})
        wanted = [n.strip() for n in nodes.split(",") if n.strip()] if nodes else None
        stop = threading.Event()
        running = _start(engine, plan, state, wanted, run_id, log_every)
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
                run=run_id,
                nodes=[t.node.name for t in running.tasks],
                metrics_port=monitor.server.port if monitor.server is not None else None,
                failure_policy=running.ctx.settings.failure_policy,
            )
            running.run_until(stop)
        finally:
            monitor.close()
        log.info(
            "qmtl.kafka.worker_stopped",
            pipeline=plan.pipeline,
            processed=running.stats["messages"],
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
    engine: Any, plan: Any, state: Any, nodes: list[str] | None, run_id: str, log_every: float
) -> Any:
    from qmtl_engine_kafka.operations import WorkerMonitor, check_services
    from qmtl_engine_kafka.pending import pending_store_for
    from qmtl_engine_kafka.topics import dead_letter_topic
    from qmtl_engine_kafka.worker import RunContext, Worker

    settings = engine.settings
    what = f"qmtl worker of pipeline '{plan.pipeline}'"
    check_services(settings, state, what=what, timeout_s=settings.startup_timeout_s)
    partitions = engine.prepare(plan)
    store = pending_store_for(state)
    ctx = RunContext(
        plan,
        run_id,
        engine.settings,
        state,
        store,
        partitions,
        batch_size=engine.settings.batch_size,
    )
    monitor = WorkerMonitor.for_worker(
        settings, state, pipeline=plan.pipeline, probe_topic=dead_letter_topic(plan.pipeline)
    )
    return Worker(ctx, nodes, log_every_s=log_every, monitor=monitor)
