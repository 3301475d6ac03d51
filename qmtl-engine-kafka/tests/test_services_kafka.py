"""scripts/_kafka.py's readiness probe speaks the real Kafka protocol to the test broker."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "_kafka.py"
pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="runs in the repository checkout")


@pytest.fixture
def services_kafka(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("_qmtl_services_kafka", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.integration
def test_metadata_probe_lists_the_broker_it_asked(
    kafka_bootstrap: str, services_kafka: ModuleType
) -> None:
    host, port = kafka_bootstrap.rsplit(":", 1)
    brokers = services_kafka.probe_metadata(host, int(port), timeout=5.0)
    assert brokers, "the broker answered with no brokers"
    assert int(port) in {broker_port for _, _, broker_port in brokers}


def test_the_generated_broker_config_is_single_node_kraft(
    tmp_path: Path, services_kafka: ModuleType
) -> None:
    text = services_kafka._server_properties(tmp_path, 19092, 19093)
    config = dict(line.split("=", 1) for line in text.splitlines())
    assert config["process.roles"] == "broker,controller"
    assert config["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert config["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert config["group.initial.rebalance.delay.ms"] == "0"
    replication = [k for k in config if k.endswith("replication.factor")]
    assert replication and all(config[k] == "1" for k in replication)
