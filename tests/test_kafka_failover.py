"""Two ``qmtl worker`` processes serve a deployment fed through 4-partition input topics; one
is SIGKILLed midway.

The survivor takes the dead worker's partitions over (Kafka's group protocol) — shard
partitions and input partitions alike — and continues from the pending state the dead one saved
in Redis: shards replay from their saved offsets, inputs are forwarded again from their
committed offsets and the sources' merge drops what was already applied. The final history must
equal the local engine's (the oracle): no bucket lost, none duplicated, none computed from
partial inputs (a bucket computed before every input partition of a source was final would hold
a different value).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from processes import qmtl_script

from qmtl import codec
from qmtl.state import MemoryStateBackend

try:
    from qmtl.stream_runner import run_in_process
except ImportError:  # before the runner moved out of qmtl.streaming
    from qmtl.streaming import run_in_process  # type: ignore[attr-defined,no-redef]
from qmtl.testing.pipelines import BASE

pytestmark = pytest.mark.integration

MODULE = """
import os

from qmtl.node import Node, SourceNode
from qmtl.pipeline import Pipeline

SEC = {"1s": {"interval": "1s", "period": 86400, "max_history": 100000}}


def spread(a, b):
    return round(a - b, 6)


def mean5(spread):
    return round(sum(spread) / 5, 6)


def ratio(a, mean5):
    return round(a / (1 + abs(mean5)), 6)


def pipeline():
    p = Pipeline(os.environ["QMTL_FAILOVER_PIPELINE"])
    # Fed from outside (the input topics); the declared lists only tell the two ids apart.
    p.add_node(SourceNode("a", source=[(0, "a")], interval_settings=SEC))
    p.add_node(SourceNode("b", source=[(0, "b")], interval_settings=SEC))
    p.add_node(Node("spread", fn=spread, upstreams=["a", "b"], interval_settings=SEC))
    p.add_node(Node("mean5", fn=mean5, upstreams=["spread"], window=5, interval_settings=SEC))
    p.add_node(Node("ratio", fn=ratio, upstreams=["a", "mean5"], interval_settings=SEC))
    return p
"""

PARTITIONS = 4
EVENTS = 6000  # per source


def _events() -> list[tuple[str, float, float]]:
    """Both sources' events in global event-time order (unique ts within a source)."""
    events = []
    for name, step, offset, seed in (("a", 0.25, 0.0, 7), ("b", 0.3, 0.05, 11)):
        x, price = seed, 100.0
        for i in range(EVENTS):
            x = (x * 1103515245 + 12345) % 2147483648
            price = round(price + ((x >> 16) % 21 - 10) / 8, 3)
            events.append((name, BASE + offset + i * step, price))
    events.sort(key=lambda e: (e[1], e[0]))
    return events


def _start_worker(
    tmp: Path, index: int, env: dict[str, str], bootstrap: str, redis_url: str
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    beat = tmp / f"heartbeat-{index}"
    log = tmp / f"worker-{index}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                qmtl_script(),
                "worker",
                "failover_pipeline:pipeline",
                "--bootstrap",
                bootstrap,
                "--redis-url",
                redis_url,
                "--partitions",
                str(PARTITIONS),
                "--log-every",
                "1",
                "--log-level",
                "info",
            ],
            cwd=tmp,
            env={**env, "QMTL_WORKER_HEARTBEAT_FILE": str(beat)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return process, beat, log


def _assignments(log: Path) -> set[str]:
    """Every partition a worker was assigned (its JSON log's ``qmtl.kafka.assigned`` lines)."""
    import json

    held: set[str] = set()
    for line in log.read_text().splitlines():
        if '"qmtl.kafka.assigned"' in line:
            held |= set(json.loads(line)["partitions"])
    return held


def _wait_for(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_one_of_two_workers_midway_loses_and_duplicates_nothing(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uuid

    import confluent_kafka

    from qmtl_engine_kafka.engine import KafkaEngine
    from qmtl_engine_kafka.envelope import Envelope, encode
    from qmtl_state_redis import RedisStateBackend

    unique = uuid.uuid4().hex[:10]
    name = f"failover-{unique}"
    (tmp_path / "failover_pipeline.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.setenv("QMTL_FAILOVER_PIPELINE", name)
    sys.path.insert(0, str(tmp_path))
    try:
        import failover_pipeline  # type: ignore[import-not-found]

        pipeline = failover_pipeline.pipeline()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("failover_pipeline", None)
    plan = pipeline.build()
    engine = KafkaEngine(
        bootstrap_servers=kafka_bootstrap, partitions=PARTITIONS, input_partitions=PARTITIONS
    )
    engine.seed_topics(plan)  # qmtl.input.{name}.a / .b with 4 partitions each
    from qmtl_engine_kafka import deployment_topics

    deployed = deployment_topics(plan)  # named by the plan's hash
    shard_topic, out_topic = deployed.shard, deployed.out

    env = {**os.environ, "QMTL_FAILOVER_PIPELINE": name, "QMTL_KAFKA__SESSION_TIMEOUT_S": "6"}
    workers = [_start_worker(tmp_path, i, env, kafka_bootstrap, redis_url) for i in (0, 1)]
    events = _events()
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
    collector = confluent_kafka.Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"collector-{unique}",
            "enable.auto.commit": False,
        }
    )
    try:
        _wait_for(
            lambda: all(beat.exists() for _p, beat, _l in workers),
            60,
            "both workers to start polling",
        )
        _wait_for(
            lambda: all(
                any(p.startswith(shard_topic) for p in _assignments(log)) for _p, _b, log in workers
            ),
            60,
            "both workers to get shard partitions",
        )
        collector.assign(
            [confluent_kafka.TopicPartition(out_topic, p, 0) for p in range(PARTITIONS)]
        )
        sent = {"a": 0, "b": 0}

        def publish(chunk: list[tuple[str, float, float]]) -> None:
            for source, ts, value in chunk:
                partition = sent[source] % PARTITIONS  # round robin: one stream, 4 partitions
                sent[source] += 1
                producer.produce(
                    f"qmtl.input.{name}.{source}",
                    encode(Envelope(name, source, ts, value)),
                    partition=partition,
                )
                producer.poll(0)
            producer.flush(30)

        half = int(len(events) * 0.4)
        publish(events[:half])
        victim, _beat, victim_log = workers[0]
        assert victim.poll() is None, victim_log.read_text()[-2000:]
        victim_held = {p for p in _assignments(victim_log) if p.startswith(shard_topic)}
        assert victim_held, "the victim held no shard partition: nothing would fail over"
        # Keep events flowing while the victim dies: it is killed in the middle of the stream.
        rest = events[half:]
        for i in range(0, len(rest), 200):
            publish(rest[i : i + 200])
            if i == 1000:
                victim.kill()  # SIGKILL: no goodbye, no commit, no state save
            time.sleep(0.02)
        victim.wait(10)
        for source in ("a", "b"):
            end = encode(Envelope(name, source, 0.0, None, kind="end"))
            for partition in range(PARTITIONS):
                producer.produce(f"qmtl.input.{name}.{source}", end, partition=partition)
        producer.flush(30)

        ended: dict[str, Any] = {}
        emitted: dict[tuple[str, int], int] = {}
        deadline = time.monotonic() + 150
        while len(ended) < len(plan.nodes):
            assert time.monotonic() < deadline, f"nodes not ended: {set(plan.by_name) - set(ended)}"
            survivor = workers[1][0]
            assert survivor.poll() is None, workers[1][2].read_text()[-3000:]
            for message in collector.consume(1000, 0.2):
                if message.error():
                    continue
                data = codec.decode(message.value() or codec.encode({}))
                if data.get("r") != "live":
                    continue
                if data["k"] == "O":
                    for node, _interval, buckets, _ends, _values in data["o"]:
                        for bucket in buckets:
                            emitted[(node, bucket)] = emitted.get((node, bucket), 0) + 1
                elif data["k"] == "N":
                    for node, end_marker in data["n"].items():
                        ended.setdefault(node, end_marker)
        beat = workers[1][1]
        assert time.time() - beat.stat().st_mtime < 5, "the survivor's heartbeat is stale"
    finally:
        collector.close()
        for process, _beat, _log in workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
    survivor, _beat, survivor_log = workers[1]
    assert survivor.wait(30) == 0, survivor_log.read_text()[-3000:]
    text = survivor_log.read_text()
    assert "qmtl.kafka.worker_progress" in text and "lag" in text
    assert "qmtl.kafka.worker_stopped" in text  # SIGTERM: batch finished, committed, closed
    taken_over = _assignments(survivor_log)
    assert victim_held <= taken_over, "the survivor did not take the dead worker's partitions"

    oracle = MemoryStateBackend()
    expected_summary = run_in_process(plan, oracle, events=events)
    state = RedisStateBackend(url=redis_url)
    compared = 0
    replays = sum(count - 1 for count in emitted.values())
    try:
        for node in plan.nodes:
            spec = node.series[0]
            want = oracle.read(spec.key)
            got = state.read(spec.key)
            stamps = [item["timestamp"] for item in got]
            assert len(stamps) == len(set(stamps)), f"{node.name}: duplicated buckets"
            missing = {i["timestamp"] for i in want} - set(stamps)
            assert not missing, f"{node.name}: {len(missing)} bucket(s) lost"
            assert got == want, f"{node.name}: history differs from the local engine"
            compared += len(want)
            assert ended[node.name]["buckets"] == {"1s": len(want)}
        for source in ("a", "b"):
            assert ended[source]["events"] == EVENTS
            assert ended[source]["late"] == expected_summary.nodes[source].late_events == 0
        state.delete(name)
    finally:
        state.close()
    print(
        f"\nfailover: {len(events)} events over {PARTITIONS} input and shard partitions, "
        f"victim held {len(victim_held)} shard partitions, {compared} buckets "
        f"compared, 0 lost, 0 duplicated in history, {replays} output re-emissions after "
        "the kill (ignored by readers)"
    )
    assert compared > 5 * 1000
