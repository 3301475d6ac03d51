"""The one place confluent-kafka is imported (lazily) and clients are built from settings."""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

from qmtl_engine_kafka.errors import BrokerUnavailableError, KafkaClientMissingError
from qmtl_engine_kafka.settings import KafkaEngineSettings, client_config

# librdkafka's own log lines go to this stdlib logger instead of raw stderr; the application
# decides where it goes (library code configures no logging).
_LIBRDKAFKA_LOGGER = logging.getLogger("qmtl_engine_kafka.librdkafka")


def kafka_module(what: str) -> ModuleType:
    """Import confluent_kafka, or explain how to install it, naming what needed it."""
    try:
        import confluent_kafka
        import confluent_kafka.admin
    except ImportError as e:
        raise KafkaClientMissingError(what) from e
    return confluent_kafka


def base_config(settings: KafkaEngineSettings, overrides: dict[str, Any] | None = None) -> dict:
    config = client_config(settings, overrides)
    config.setdefault("logger", _LIBRDKAFKA_LOGGER)
    return config


def admin_client(settings: KafkaEngineSettings, what: str) -> Any:
    kafka = kafka_module(what)
    return kafka.admin.AdminClient(base_config(settings))


def check_broker(admin: Any, settings: KafkaEngineSettings, what: str) -> None:
    """Raise :class:`BrokerUnavailableError` unless a broker answers a metadata request in time.

    librdkafka itself retries forever in the background; this bounded request is what turns an
    unreachable broker into a clear error instead of a silent hang.
    """
    kafka = kafka_module(what)
    try:
        metadata = admin.list_topics(timeout=settings.connect_timeout_s)
    except kafka.KafkaException as e:
        raise BrokerUnavailableError(
            f"{what}: no Kafka broker answered at {settings.bootstrap_servers} within "
            f"{settings.connect_timeout_s:g}s ({e.args[0]}); start the broker, fix "
            "bootstrap_servers, or check the security options"
        ) from e
    if not metadata.brokers:
        raise BrokerUnavailableError(
            f"{what}: the cluster at {settings.bootstrap_servers} lists no brokers"
        )
