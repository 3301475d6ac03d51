"""Fixtures of the Kafka engine tests; ``kafka_bootstrap`` comes from qmtl.testing.services."""

from __future__ import annotations

import uuid

import pytest

from qmtl_engine_kafka import KafkaEngineSettings


@pytest.fixture
def unique() -> str:
    """A fresh name part, so tests sharing one broker never see each other's topics."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def kafka_settings(kafka_bootstrap: str) -> KafkaEngineSettings:
    return KafkaEngineSettings(bootstrap_servers=kafka_bootstrap, connect_timeout_s=10)
