"""``qmtl worker MODULE:PIPELINE``: a process serving a pipeline's shards on Kafka.

Registered on the ``qmtl`` root group through ``qmtl_register_commands``. Options not given come
from QMTL settings (``QMTL_KAFKA__BOOTSTRAP_SERVERS``, ``QMTL_REDIS__URL``, ``qmtl.toml``).
"""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Any, cast

import click
import structlog

from qmtl.errors import QmtlError

if TYPE_CHECKING:
    from qmtl_engine_kafka.engine import KafkaEngine

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
    log_level: str,
) -> None:
    """Serve MODULE:PIPELINE's shards on Kafka until SIGTERM/SIGINT.

    Start as many as you like: the pipeline's consumer group spreads its partitions (and so its
    shards) over them, and a worker that dies hands its share to the others (pending state lives
    in Redis). Every run is served at once: the live run fed through the input topics, and every
    finite run sent with run(workers=0). SIGTERM finishes the current batch, commits it and
    closes. Touches $QMTL_WORKER_HEARTBEAT_FILE from its poll loop.
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
        engine = cast("KafkaEngine", resolver.engine("kafka", options))
        state = resolver.state("redis", {"url": redis_url} if redis_url else {})
        stop = threading.Event()
        running = engine.worker(plan, state, namespace=namespace, log_every_s=log_every)

        def _stop(signum: int, _frame: Any) -> None:
            log.info("qmtl.kafka.worker_stopping", signal=signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        log.info(
            "qmtl.kafka.worker_started",
            pipeline=plan.pipeline,
            shards=len(plan.shards),
            partitions=running.layout.partitions,
            group=running.topics.group,
        )
        running.run_until(stop)
        log.info(
            "qmtl.kafka.worker_stopped",
            pipeline=plan.pipeline,
            processed=running.applier.applied + running.stats["forwarded"],
            buckets=running.stats["buckets"],
        )
    except QmtlError as error:
        raise click.ClickException(str(error)) from error
