"""Fail fast at start-up, and the reachability probes readiness repeats afterwards.

:func:`check_services` runs before a worker creates a topic or consumes anything: Kafka must
answer (:func:`~qmtl_engine_kafka._client.check_broker`: within ``connect_timeout_s``, at once
when it refuses the credentials or the certificate) and so must the state backend (a ``PING``
through its own client, bounded by ``startup_timeout_s`` even when the host swallows packets).
Each failure is one :class:`~qmtl.errors.QmtlError` whose message names the server and the fix.

:func:`kafka_probe` and :func:`state_probe` are the same questions asked again for
``/readyz`` (:class:`~qmtl_engine_kafka.operations.health.HealthState`).
"""

from __future__ import annotations

import threading
from typing import Any

from qmtl.errors import StateBackendError
from qmtl_engine_kafka._client import check_broker, kafka_module, new_client
from qmtl_engine_kafka.errors import BrokerUnavailableError
from qmtl_engine_kafka.operations.health import Probe
from qmtl_engine_kafka.settings import KafkaEngineSettings

__all__ = ["check_services", "kafka_probe", "state_probe"]


def check_services(
    settings: KafkaEngineSettings, state: Any, *, what: str, timeout_s: float
) -> None:
    """Raise unless Kafka and the state backend answer now (see the module doc)."""
    check_broker(settings, what)
    ping = getattr(state, "ping", None)
    if callable(ping):
        _bounded(ping, timeout_s, f"{what}: the state backend at {_shown(state)}")


def _bounded(call: Any, timeout_s: float, what: str) -> None:
    """``call()`` in a daemon thread, waited for at most ``timeout_s``: a client stuck on
    connect timeouts and retries cannot delay the worker's exit."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:  # handed to the waiting thread
            outcome.append(error)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, name="qmtl-startup-check", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        raise StateBackendError(
            f"{what} did not answer within {timeout_s:g}s; check that it is up and reachable "
            "(QMTL_REDIS__URL), or raise startup_timeout_s"
        )
    if outcome[0] is not None:
        raise outcome[0]


def _shown(state: Any) -> str:
    return str(getattr(state, "url", None) or getattr(state, "name", "?"))


def kafka_probe(settings: KafkaEngineSettings, topic: str, *, what: str) -> Probe:
    """A probe asking a broker for ``topic``'s metadata (one small request) through a client of
    its own, created once."""
    kafka = kafka_module(what)
    admin = new_client("AdminClient", settings, what=what)
    timeout = min(settings.connect_timeout_s, 2.0)

    def probe() -> None:
        try:
            admin.list_topics(topic=topic, timeout=timeout)
        except kafka.KafkaException as error:
            raise BrokerUnavailableError(
                f"no Kafka broker at {settings.bootstrap_servers} answered within "
                f"{timeout:g}s ({error.args[0].str() if error.args else error})"
            ) from error

    return probe


def state_probe(state: Any) -> Probe | None:
    """A probe pinging the state backend through its own client, or None when it has no
    server to ping (the in-memory backend)."""
    ping = getattr(state, "ping", None)
    return ping if callable(ping) else None
