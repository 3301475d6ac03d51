"""Entry point of qmtl-engine-kafka: registers the ``kafka`` engine and ``qmtl worker``.

Importing this module stays cheap: confluent-kafka is imported by the engine when a run starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qmtl import hookimpl

if TYPE_CHECKING:
    from qmtl.registry import Registry


def _kafka_engine(options: Any) -> Any:
    from qmtl_engine_kafka.engine import KafkaEngine

    return KafkaEngine(options)


@hookimpl
def qmtl_register_engines(registry: Registry) -> None:
    from qmtl_engine_kafka.settings import KafkaEngineSettings

    registry.add(
        "kafka",
        _kafka_engine,
        KafkaEngineSettings,
        description="Distributed over Apache Kafka consumer groups, state in Redis",
    )


@hookimpl
def qmtl_register_commands(cli: Any) -> None:
    from qmtl_engine_kafka.cli import worker

    cli.add_command(worker)
