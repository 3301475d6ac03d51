"""Pytest fixtures that hand integration tests a real Redis and Kafka.

Load with ``pytest_plugins = ["qmtl.testing.services"]``. The session fixtures ``redis_url`` and
``kafka_bootstrap`` come, in order of preference, from

1. ``QMTL_TEST_REDIS_URL`` / ``QMTL_TEST_KAFKA_BOOTSTRAP`` (``scripts/services.py`` sets them),
2. a testcontainers Redis / Redpanda container, when ``testcontainers`` is installed and a Docker
   engine answers,
3. otherwise the test is skipped with the reason, except under ``CI=true``, where a missing
   service fails the test: CI must never pass by skipping its integration tests.

testcontainers is imported only inside the fixtures; qmtl-core does not depend on it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from typing import NoReturn

import pytest

REDIS_ENV = "QMTL_TEST_REDIS_URL"
KAFKA_ENV = "QMTL_TEST_KAFKA_BOOTSTRAP"
REDIS_IMAGE = "redis:7-alpine"
REDPANDA_IMAGE = "docker.redpanda.com/redpandadata/redpanda:v24.1.7"

__all__ = ["KAFKA_ENV", "REDIS_ENV", "kafka_bootstrap", "redis_url"]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _docker_problem() -> str | None:
    """Why testcontainers cannot be used here, or None when it can."""
    if importlib.util.find_spec("testcontainers") is None:
        return "testcontainers is not installed"
    try:
        import docker  # a dependency of testcontainers

        client = docker.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as error:  # any failure to reach the engine means "no Docker here"
        return f"no Docker engine answers ({type(error).__name__}: {error})"
    return None


def _missing(service: str, variable: str, flag: str, problem: str) -> NoReturn:
    reason = (
        f"{service} is not available: {variable} is unset and {problem}. Run the tests through "
        f"`uv run python scripts/services.py --{flag} -- uv run --no-sync pytest ...`, "
        f"or set {variable} to a running {service}"
    )
    if _in_ci():
        pytest.fail(f"{reason} (CI=true: integration tests may not be skipped)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis (``redis://host:port/db``) for the whole test session."""
    url = os.environ.get(REDIS_ENV, "").strip()
    if url:
        yield url
        return
    problem = _docker_problem()
    if problem is not None:
        _missing("Redis", REDIS_ENV, "redis", problem)
    from testcontainers.redis import RedisContainer

    with RedisContainer(REDIS_IMAGE) as container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(6379)
        yield f"redis://{host}:{port}/0"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers (``host:port``) of a real Kafka-protocol broker for the session."""
    bootstrap = os.environ.get(KAFKA_ENV, "").strip()
    if bootstrap:
        yield bootstrap
        return
    problem = _docker_problem()
    if problem is not None:
        _missing("Kafka", KAFKA_ENV, "kafka", problem)
    from testcontainers.kafka import RedpandaContainer

    with RedpandaContainer(REDPANDA_IMAGE) as container:
        yield container.get_bootstrap_server()
