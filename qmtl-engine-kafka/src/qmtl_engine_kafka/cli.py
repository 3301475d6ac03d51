"""``qmtl worker MODULE:PIPELINE``: a process running a pipeline's nodes on Kafka.

Registered on the ``qmtl`` root group through ``qmtl_register_commands``. Options not given come
from QMTL settings (``QMTL_KAFKA__BOOTSTRAP_SERVERS``, ``QMTL_REDIS__URL``, ``qmtl.toml``).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

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
    log_level: str,
) -> None:
    """Run the nodes of MODULE:PIPELINE as Kafka consumer groups until SIGTERM/SIGINT.

    Start as many as you like: each node's group spreads over them, and a worker that dies
    hands its share to the others (pending state lives in Redis). SIGTERM finishes the current
    batch, commits it and closes. Touches $QMTL_WORKER_HEARTBEAT_FILE from its poll loop.
    """
    from qmtl.cli import configure_logging, load_object
    from qmtl.runtime import Resolver

    configure_logging(log_level)
    pipeline = load_object(target)
    try:
        plan = pipeline.build()
        resolver = Resolver()
        options: dict[str, Any] = {}
        if bootstrap:
            options["bootstrap_servers"] = bootstrap
        if partitions:
            options["partitions"] = partitions
        engine = resolver.engine("kafka", options)
        state = resolver.state("redis", {"url": redis_url} if redis_url else {})
        wanted = [n.strip() for n in nodes.split(",") if n.strip()] if nodes else None
        stop = threading.Event()
        running = _start(engine, plan, state, wanted, run_id, log_every)

        def _stop(signum: int, _frame: Any) -> None:
            log.info("qmtl.kafka.worker_stopping", signal=signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        log.info(
            "qmtl.kafka.worker_started",
            pipeline=plan.pipeline,
            run=run_id,
            nodes=[t.node.name for t in running.tasks],
        )
        running.run_until(stop)
        log.info(
            "qmtl.kafka.worker_stopped",
            pipeline=plan.pipeline,
            processed=running.stats["messages"],
            buckets=running.stats["buckets"],
        )
    except QmtlError as error:
        raise click.ClickException(str(error)) from error


def _start(
    engine: Any, plan: Any, state: Any, nodes: list[str] | None, run_id: str, log_every: float
) -> Any:
    from qmtl_engine_kafka.pending import pending_store_for
    from qmtl_engine_kafka.worker import RunContext, Worker

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
    return Worker(ctx, nodes, log_every_s=log_every)
