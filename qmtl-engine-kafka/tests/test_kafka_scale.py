"""A worker's threads do not grow with the pipeline (SPEC §6): 30 and 600 nodes on the real
broker, the process's OS threads counted while each runs. Not timed (speed is `make bench`)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from qmtl.node import Node, SourceNode
from qmtl.pipeline import Pipeline
from qmtl.state import MemoryStateBackend
from qmtl.testing.engine_contract import counts

pytestmark = pytest.mark.integration

BASE = 1_700_006_400
MINUTE = {"1m": {"interval": "1m", "period": 60, "max_history": 1000}}


def _ret(px: list[float]) -> float:
    return round(px[-1] / px[0] - 1, 8)


def _sign(r: float) -> int:
    return (r > 0) - (r < 0)


def symbols(count: int, name: str) -> Pipeline:
    """``count`` symbols x (price -> 2-bucket return -> sign), 60 one-minute events each."""
    p = Pipeline(name)
    for i in range(count):
        prices = [(BASE + 60 * j + 1, 100.0 + i + ((j * (i + 7)) % 17) * 0.25) for j in range(60)]
        p.add_node(SourceNode(f"s{i}_px", source=prices, interval_settings=MINUTE))
        p.add_node(
            Node(f"s{i}_ret", fn=_ret, upstreams=[f"s{i}_px"], window=2, interval_settings=MINUTE)
        )
        p.add_node(Node(f"s{i}_sig", fn=_sign, upstreams=[f"s{i}_ret"], interval_settings=MINUTE))
    return p


def _threads() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads: line in /proc/self/status")


def _most_threads(run: Any) -> int:
    """The most OS threads ``run`` added to the process while it ran (threads that were
    already there, such as clients of an earlier run still closing, do not count)."""
    before = _threads()
    most = [before]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            most[0] = max(most[0], _threads())
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        run()
    finally:
        done.set()
        watcher.join()
    return most[0] - 1 - before  # not the watcher itself


def test_a_600_node_pipeline_uses_as_many_threads_as_a_30_node_one(
    kafka_bootstrap: str, unique: str
) -> None:
    from qmtl_engine_kafka.engine import KafkaEngine

    engine = KafkaEngine(bootstrap_servers=kafka_bootstrap, connect_timeout_s=10)
    most: dict[int, int] = {}
    for count in (10, 200):
        pipeline = symbols(count, f"scale-{count}-{unique}")
        local = pipeline.run(engine="local", state=MemoryStateBackend())
        summaries: list[Any] = []

        def run(p: Pipeline = pipeline, into: list[Any] = summaries) -> None:
            into.append(p.run(engine=engine, state=MemoryStateBackend()))

        most[3 * count] = _most_threads(run)
        assert counts(summaries[0]) == counts(local)
    # Constant: clients, not nodes, make threads. librdkafka's threads per client vary by one or
    # two with connection timing (a bootstrap connection next to the broker's own), so a
    # little slack; a cost per node would add hundreds (the per-node engine had 2,422).
    assert most[600] <= most[30] + 4, most
    assert most[600] <= 64, most
