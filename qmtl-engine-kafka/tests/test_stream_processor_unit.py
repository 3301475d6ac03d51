"""StreamProcessor and TopicManager behaviour that needs no broker."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from qmtl.errors import EngineError
from qmtl_engine_kafka import (
    BrokerUnavailableError,
    KafkaClientMissingError,
    KafkaEngineSettings,
    StreamProcessor,
    TopicManager,
)


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_without_confluent_kafka_the_constructor_names_the_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # import now raises ImportError
    with pytest.raises(KafkaClientMissingError, match="pip install confluent-kafka") as caught:
        StreamProcessor("localhost:9092", check_connection=False)
    assert isinstance(caught.value, EngineError)
    assert isinstance(caught.value, ImportError)  # seed code catching ImportError still works


def test_default_group_and_client_ids_are_prefixed_and_unique() -> None:
    first = StreamProcessor("localhost:9092", check_connection=False)
    second = StreamProcessor("localhost:9092", check_connection=False)
    try:
        assert first.group_id.startswith("qmtl-group-")
        assert first.client_id.startswith("qmtl-client-")
        assert first.group_id != second.group_id
        assert "qmtl-group-" in repr(first)
    finally:
        first.close()
        second.close()


def test_an_unreachable_broker_fails_fast_with_a_clear_error() -> None:
    address = _closed_port()
    settings = KafkaEngineSettings(bootstrap_servers=address, connect_timeout_s=2)
    began = time.monotonic()
    with pytest.raises(BrokerUnavailableError) as caught:
        StreamProcessor(settings)
    elapsed = time.monotonic() - began
    assert elapsed < 6, f"took {elapsed:.1f}s"
    assert address in str(caught.value)
    assert "start the broker" in str(caught.value)


def test_topic_creation_on_an_unreachable_broker_fails_fast() -> None:
    address = _closed_port()
    manager = TopicManager(KafkaEngineSettings(bootstrap_servers=address, connect_timeout_s=2))
    began = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match=address):
        manager.create_topic("qmtl.output.p.n")
    assert time.monotonic() - began < 6


def test_node_helpers_need_a_pipeline_name() -> None:
    with (
        StreamProcessor("localhost:9092", check_connection=False) as sp,
        pytest.raises(EngineError, match="Name the pipeline"),
    ):
        sp.on("node", print)
