"""The one place confluent-kafka is imported (lazily) and clients are built from settings.

Every Producer, Consumer and AdminClient of the engine is made by :func:`new_client`, which
turns an option librdkafka refuses (a missing CA file, an unknown property, an invalid value)
into a :class:`~qmtl.errors.ConfigurationError` naming the option and the fix.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Literal

from qmtl.errors import ConfigurationError, EngineError
from qmtl.logs import get_logger
from qmtl_engine_kafka.errors import (
    BrokerRefusedError,
    BrokerUnavailableError,
    KafkaClientMissingError,
)
from qmtl_engine_kafka.settings import KafkaEngineSettings, client_config, redacted

# librdkafka's own log lines go to this stdlib logger instead of raw stderr; the application
# decides where it goes (library code configures no logging).
_LIBRDKAFKA_LOGGER = logging.getLogger("qmtl_engine_kafka.librdkafka")
log = get_logger(__name__)


def kafka_module(what: str) -> ModuleType:
    """Import confluent_kafka, or explain how to install it, naming what needed it."""
    try:
        import confluent_kafka
        import confluent_kafka.admin
    except ImportError as e:
        raise KafkaClientMissingError(what) from e
    return confluent_kafka


def base_config(
    settings: KafkaEngineSettings, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    config = client_config(settings, overrides)
    config.setdefault("logger", _LIBRDKAFKA_LOGGER)
    return config


ClientKind = Literal["Producer", "Consumer", "AdminClient"]


def new_client(
    kind: ClientKind,
    settings: KafkaEngineSettings,
    overrides: Mapping[str, Any] | None = None,
    *,
    what: str,
) -> Any:
    """A confluent-kafka ``kind`` built from ``settings`` plus ``overrides``.

    A configuration librdkafka refuses raises :class:`~qmtl.errors.ConfigurationError` naming
    ``what`` needed the client, the option (as the QMTL setting it came from when there is
    one) and how to fix it; secret values are never shown.
    """
    kafka = kafka_module(what)
    factory = kafka.admin.AdminClient if kind == "AdminClient" else getattr(kafka, kind)
    config = base_config(settings, dict(overrides) if overrides else None)
    try:
        return factory(config)
    except (kafka.KafkaException, ValueError, TypeError) as e:
        raise _refused(what, kind, settings, config, overrides or {}, e) from e


def admin_client(settings: KafkaEngineSettings, what: str) -> Any:
    return new_client("AdminClient", settings, what=what)


#: librdkafka property -> the KafkaEngineSettings field it comes from.
_FIELDS = {
    "bootstrap.servers": "bootstrap_servers",
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.username": "sasl_username",
    "sasl.password": "sasl_password",
    "ssl.ca.location": "ssl_ca_location",
    "ssl.certificate.location": "ssl_certificate_location",
    "ssl.key.location": "ssl_key_location",
    "ssl.key.password": "ssl_key_password",
    "socket.connection.setup.timeout.ms": "connect_timeout_s",
    "session.timeout.ms": "session_timeout_s",
    "max.poll.interval.ms": "max_poll_interval_s",
    "linger.ms": "linger_ms",
    "message.timeout.ms": "delivery_timeout_s",
}
#: librdkafka reports some properties under their canonical name.
_ALIASES = {"queue.buffering.max.ms": "linger.ms", "delivery.timeout.ms": "message.timeout.ms"}
_FILES = {
    "ssl.ca.location": "the CA certificate file (PEM) that signed the brokers' certificates",
    "ssl.certificate.location": "the client certificate file (PEM)",
    "ssl.key.location": "the client private key file (PEM; set ssl_key_password if it is "
    "encrypted)",
}


def _culprit(message: str, config: Mapping[str, Any]) -> str | None:
    """The property librdkafka's message is about: the one it names first."""
    found: list[tuple[int, str]] = []
    for key in config:
        at = message.find(key)
        if at >= 0:
            found.append((at, key))
    for alias, key in _ALIASES.items():
        at = message.find(alias)
        if at >= 0 and key in config:
            found.append((at, key))
    return min(found)[1] if found else None


def _refused(
    what: str,
    kind: str,
    settings: KafkaEngineSettings,
    config: Mapping[str, Any],
    overrides: Mapping[str, Any],
    error: BaseException,
) -> ConfigurationError:
    cause = error.args[0] if error.args else error
    reason = cause.str() if hasattr(cause, "str") else str(cause)
    shown = redacted(config)
    for name, value in config.items():  # librdkafka may quote a value: never a secret one
        if shown[name] != value and isinstance(value, str) and value:
            reason = reason.replace(value, shown[name])
    key = _culprit(reason, config)
    if key is None:
        return ConfigurationError(
            f"{what}: the Kafka client library refused the {kind} configuration: {reason}; "
            "check the engine's security options and client_options"
        )
    value = shown[key]
    if key in overrides:
        option = f"the client option '{key}'"
    elif key in settings.client_options:
        option = f"client_options['{key}']"
    elif key in _FIELDS:
        option = f"{_FIELDS[key]} (librdkafka '{key}')"
    else:
        option = f"'{key}'"
    fix = "fix or remove the option"
    if key in _FILES:
        missing = isinstance(value, str) and not os.path.isfile(value)
        fix = (
            f"{'no such file: ' if missing else 'the file must be readable: '}point "
            f"{_FIELDS[key]} at {_FILES[key]}"
        )
    return ConfigurationError(
        f"{what}: the Kafka client library refused {option} = {value!r}: {reason}; {fix}"
    )


def check_broker(settings: KafkaEngineSettings, what: str) -> None:
    """Raise unless a broker answers a metadata request within ``connect_timeout_s``.

    librdkafka itself retries forever in the background; this bounded check is what turns an
    unusable broker into a clear error instead of a silent hang. It uses a probe client of its
    own, whose error callback sees *why* a connection fails: a broker that refuses the SASL
    credentials or whose certificate is not trusted raises :class:`BrokerRefusedError` as soon
    as librdkafka reports it (well under a second on a reachable broker), naming the settings
    to fix; an unreachable one raises :class:`BrokerUnavailableError` after the timeout.
    Secret values never appear in either message.
    """
    kafka = kafka_module(what)
    seen: list[Any] = []
    # Its log lines would only repeat what the error callback hands to the raised error.
    quiet = {"error_cb": seen.append, "log_level": 0}
    probe = new_client("AdminClient", settings, quiet, what=what)
    deadline = time.monotonic() + settings.connect_timeout_s
    while True:
        try:
            metadata = probe.list_topics(timeout=max(0.05, min(0.25, _left(deadline))))
            break
        except kafka.KafkaException as e:
            probe.poll(0)  # serves the error callback
            refused = _refusal(kafka, seen, settings, what)
            if refused is not None:
                raise refused from e
            if _left(deadline) <= 0:
                raise BrokerUnavailableError(
                    f"{what}: no Kafka broker answered at {settings.bootstrap_servers} within "
                    f"{settings.connect_timeout_s:g}s ({_last_reason(seen, e, settings)}); start "
                    "the broker, fix bootstrap_servers, or check security_protocol"
                ) from e
    if not metadata.brokers:
        raise BrokerUnavailableError(
            f"{what}: the cluster at {settings.bootstrap_servers} lists no brokers"
        )


def _left(deadline: float) -> float:
    return deadline - time.monotonic()


def _refusal(
    kafka: ModuleType, seen: list[Any], settings: KafkaEngineSettings, what: str
) -> BrokerRefusedError | None:
    """The error for a broker that answered but refused us, if librdkafka reported one."""
    for error in seen:
        code = error.code()
        reason = _masked(error.str(), settings)
        if code == kafka.KafkaError._AUTHENTICATION:
            return BrokerRefusedError(
                f"{what}: the Kafka broker at {settings.bootstrap_servers} refused the SASL "
                f"login of user {settings.sasl_username!r} ({settings.sasl_mechanism}): "
                f"{reason}; check sasl_username and sasl_password (QMTL_KAFKA__SASL_USERNAME, "
                "QMTL_KAFKA__SASL_PASSWORD) and that the user exists on the brokers for that "
                "mechanism"
            )
        if code == kafka.KafkaError._SSL:
            return BrokerRefusedError(
                f"{what}: the TLS handshake with the Kafka broker at "
                f"{settings.bootstrap_servers} failed: {reason}; point ssl_ca_location "
                "(QMTL_KAFKA__SSL_CA_LOCATION) at the CA certificate that signed the brokers' "
                "certificates, and check that they name the host you connect to"
            )
    return None


def _last_reason(seen: list[Any], error: Any, settings: KafkaEngineSettings) -> str:
    transport = [e for e in seen if e.str() and "brokers are down" not in e.str()]
    last = transport[-1].str() if transport else str(error.args[0])
    return _masked(last, settings)


def _masked(text: str, settings: KafkaEngineSettings) -> str:
    for secret in (settings.sasl_password, settings.ssl_key_password):
        if secret is not None and secret.get_secret_value():
            text = text.replace(secret.get_secret_value(), "**********")
    return text


def consume_error(kafka: ModuleType, error: Any, group: str) -> bool:
    """Judge the error a consumed message carries: a fatal one raises :class:`EngineError`;
    reaching a partition's end is not an error (False); any other is logged, and the caller
    counts it (True) and skips the message."""
    if error.fatal():
        raise EngineError(f"The Kafka consumer of group '{group}' hit a fatal error: {error.str()}")
    if error.code() == kafka.KafkaError._PARTITION_EOF:
        return False
    log.warning("qmtl.kafka.consume_error", group=group, error=error.str())
    return True
