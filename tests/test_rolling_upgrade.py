"""A rolling upgrade of a live deployment to changed code, as a platform engineer runs it.

Version A of a pipeline runs in two ``qmtl worker`` processes fed through its seed input
topics. Version B changes one node's function (``signal``: new code, so a new node id and a
new series) and leaves the others alone. B's two workers start while A's still run; then A's
get SIGTERM. Checked against the real broker and Redis of ``scripts/services.py``:

- a run of plan B sent while only A is deployed is dead-lettered by A's workers with reason
  ``plan_mismatch`` and raises ``PlanMismatchError``; after the upgrade a run of the stale plan
  A is dead-lettered by B's workers the same way;
- no process crash-loops: A's workers run until SIGTERM and exit 0, B's stay up throughout;
- the unchanged nodes' history continues across the upgrade with no gap and no duplicate: it
  equals the local engine's over the same events;
- the changed node's old series stops where A stopped, and its new series (B's node id) starts
  at the upgrade, seeded from the stored history (warm start): its values equal those of an
  uninterrupted local run of B from its first bucket, window full at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from processes import free_port, qmtl_script

from qmtl.state import MemoryStateBackend
from qmtl.testing.pipelines import BASE

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]

MODULE = """
import os

from qmtl.node import Node, SourceNode
from qmtl.pipeline import Pipeline

MIN = {"1m": {"interval": "1m", "period": 600, "max_history": 10000}}


def sma3(px):
    return round(sum(px) / 3, 6)


def trend(sma3):
    return round(sma3[-1] - sma3[0], 6)


def notional(px, vol):
    return round(px * vol, 6)


def signal_a(px):
    return round(px[-1] - px[0], 6)


def signal_b(px):  # version B changes this node's code only
    return round(max(px) - min(px), 6)


def pipeline(version=None, name=None):
    version = version or os.environ["QMTL_UPGRADE_VERSION"]
    p = Pipeline(name or os.environ["QMTL_UPGRADE_PIPELINE"])
    # fed through the input topics; the declared lists only tell the two sources apart
    p.add_node(SourceNode("px", source=[(0, 1.0)], interval_settings=MIN))
    p.add_node(SourceNode("vol", source=[(0, 2.0)], interval_settings=MIN))
    p.add_node(Node("sma3", fn=sma3, upstreams=["px"], window=3, interval_settings=MIN))
    p.add_node(Node("trend", fn=trend, upstreams=["sma3"], window=2, interval_settings=MIN))
    p.add_node(Node("notional", fn=notional, upstreams=["px", "vol"], interval_settings=MIN))
    signal = signal_a if version == "A" else signal_b
    p.add_node(Node("signal", fn=signal, upstreams=["px"], window=4, interval_settings=MIN))
    return p
"""

UNCHANGED = ("px", "vol", "sma3", "trend", "notional")
PARTITIONS = 4


def _events(first: int, last: int) -> list[tuple[str, float, float]]:
    """Minutes ``first..last``: px twice a minute, vol (illiquid) once every three."""
    events = []
    for minute in range(first, last + 1):
        start = BASE + 60 * minute
        events.append(("px", start + 10, 100.0 + (minute * 7) % 11))
        if minute % 3 == 0:
            events.append(("vol", start + 25, 1.0 + minute % 4))
        events.append(("px", start + 40, 100.5 + (minute * 5) % 7))
    return events


class Worker:
    """One ``qmtl worker`` process of one version, with its JSON log."""

    def __init__(
        self, tmp: Path, name: str, version: str, index: int, env: dict[str, str], *options: str
    ) -> None:
        self.log = tmp / f"worker-{version}{index}.log"
        self.port = free_port()
        options = (*options, "--metrics-port", str(self.port))
        args = [
            qmtl_script(),
            "worker",
            "upgrade_pipeline:pipeline",
            "--partitions",
            str(PARTITIONS),
        ]
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                [*args, "--log-every", "1", "--log-level", "info", *options],
                cwd=tmp,
                env={**env, "QMTL_UPGRADE_PIPELINE": name, "QMTL_UPGRADE_VERSION": version},
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if f'"{name}"' in line and line.startswith("{"):
                found.append(json.loads(line))
        return found

    def holds(self, topic: str) -> bool:
        return any(
            p.startswith(f"{topic}/")
            for event in self.events("qmtl.kafka.assigned")
            for p in event["partitions"]
        )

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except (urllib.error.URLError, ConnectionError) as error:
            return getattr(error, "code", 0), ""

    def dead_letters(self, reason: str) -> float:
        """``qmtl_worker_dead_letters_total{reason=...}`` as the worker exports it now."""
        from prometheus_client.parser import text_string_to_metric_families

        status, text = self.get("/metrics")
        assert status == 200
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "qmtl_worker_dead_letters_total"
            and sample.labels.get("reason") == reason
        )

    def processed(self) -> int:
        """Input messages forwarded plus steps applied, from the newest progress line."""
        lines = self.events("qmtl.kafka.worker_progress")
        return int(lines[-1]["processed"]) if lines else 0

    def alive(self) -> None:
        assert self.process.poll() is None, self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> tuple[int, float]:
        """SIGTERM; the exit code and how long the exit took."""
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(30)
        return code, time.monotonic() - began


def _wait(predicate: Callable[[], bool], seconds: float, what: str, *alive: Worker) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        for worker in alive:
            worker.alive()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def _history(plan: Any, state: Any, node: str) -> list[tuple[float, Any]]:
    """A node's stored series, oldest first."""
    rows = state.read(plan.by_name[node].series[0].key)
    return [(float(r["timestamp"]), r["value"]) for r in reversed(rows)]


def _newest(plan: Any, state: Any, node: str) -> float:
    rows = state.read(plan.by_name[node].series[0].key, count=1)
    return float(rows[0]["timestamp"]) if rows else 0.0


def _dead_letters(bootstrap: str, name: str, count: int) -> list[dict[str, str]]:
    import confluent_kafka

    from qmtl_engine_kafka import dead_letter_headers

    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": f"d-{name}"})
    consumer.assign([confluent_kafka.TopicPartition(f"qmtl.dlq.{name}", 0, 0)])
    letters: list[dict[str, str]] = []
    deadline = time.monotonic() + 20
    while len(letters) < count and time.monotonic() < deadline:
        letters += [dead_letter_headers(m) for m in consumer.consume(10, 0.5) if m.error() is None]
    consumer.close()
    return letters


def test_a_rolling_upgrade_to_changed_code(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    from qmtl_engine_kafka import PlanMismatchError, StreamProcessor, deployment_topics
    from qmtl_engine_kafka.engine import KafkaEngine
    from qmtl_state_redis import RedisStateBackend

    name = f"upgrade-{uuid.uuid4().hex[:10]}"
    (tmp_path / "upgrade_pipeline.py").write_text(textwrap.dedent(MODULE))
    sys.path.insert(0, str(tmp_path))
    try:
        import upgrade_pipeline  # type: ignore[import-not-found]

        version_a = upgrade_pipeline.pipeline("A", name)
        version_b = upgrade_pipeline.pipeline("B", name)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("upgrade_pipeline", None)
    plan_a, plan_b = version_a.build(), version_b.build()
    assert plan_a.by_name["signal"].node_id != plan_b.by_name["signal"].node_id
    assert all(plan_a.by_name[n].node_id == plan_b.by_name[n].node_id for n in UNCHANGED)
    topics_a, topics_b = deployment_topics(plan_a), deployment_topics(plan_b)

    engine = KafkaEngine(bootstrap_servers=kafka_bootstrap, partitions=PARTITIONS, run_timeout_s=60)
    engine.seed_topics(plan_a)  # the input topics both versions read
    state = RedisStateBackend(url=redis_url)
    env = {
        **os.environ,
        "QMTL_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "QMTL_REDIS__URL": redis_url,
        "QMTL_KAFKA__SESSION_TIMEOUT_S": "6",
    }
    publisher = StreamProcessor(kafka_bootstrap, pipeline=name)

    def publish(events: list[tuple[str, float, float]]) -> None:
        for source, ts, value in events:
            publisher.publish_event(source, value, ts=ts, flush=False)
        publisher.flush()

    def through(plan: Any, node: str, minute: int) -> Callable[[], bool]:
        return lambda: _newest(plan, state, node) >= BASE + 60 * (minute + 1)

    workers: list[Worker] = []
    try:
        old = [Worker(tmp_path, name, "A", i, env) for i in (1, 2)]
        workers += old
        _wait(lambda: all(w.holds(topics_a.shard) for w in old), 90, "A's partitions", *old)
        publish(_events(0, 19))
        _wait(lambda: through(plan_a, "trend", 18)() and through(plan_a, "notional", 17)(),
              90, "A's history through minute 18", *old)  # fmt: skip

        # changed code sent to the running deployment: A's workers refuse it
        with pytest.raises(PlanMismatchError, match="code differs"):
            version_b.run(engine=engine, state=state, workers=0, namespace=f"x-{name}")

        new = [Worker(tmp_path, name, "B", i, env) for i in (1, 2)]
        workers += new
        # what Kubernetes waits for before it stops an old pod
        _wait(lambda: all(w.get("/readyz")[0] == 200 for w in new), 90, "B ready", *workers)
        _wait(lambda: all(w.holds(topics_b.shard) for w in new), 90, "B's partitions", *workers)
        assert not any(w.holds(topics_b.shard) for w in old)  # nothing taken from A ...
        assert not any(w.holds(topics_a.shard) for w in new)  # ... nor given to B
        phase_one = len(_events(0, 19))  # B reads the input topics from their start:
        _wait(  # every event forwarded and applied (as late: history has them) before more come
            lambda: sum(w.processed() for w in new) >= 2 * phase_one, 90, "B's catch-up", *workers
        )
        publish(_events(20, 39))
        _wait(lambda: through(plan_b, "signal", 38)() and through(plan_a, "signal", 38)(),
              90, "both versions through minute 38", *workers)  # fmt: skip
        for worker in old:
            worker.alive()  # A ran until now ...
        for worker in old:
            code, took = worker.stop()
            assert (code, took < 15) == (0, True), worker.log.read_text()[-3000:]
        publish(_events(40, 60))  # minute 60 closes minute 59
        _wait(lambda: all(through(plan_b, n, 59)() for n in ("trend", "notional", "signal")),
              90, "B alone through minute 59", *new)  # fmt: skip

        # the stale plan A sent after the upgrade: B's workers refuse it
        with pytest.raises(PlanMismatchError, match="code differs"):
            version_a.run(engine=engine, state=state, workers=0, namespace=f"y-{name}")
        letters = [h for h in _dead_letters(kafka_bootstrap, name, 2) if h["qmtl.dlq.reason"]]
        assert {
            h["qmtl.dlq.topic"] for h in letters if h["qmtl.dlq.reason"] == "plan_mismatch"
        } == {
            topics_a.shard,
            topics_b.shard,
        }
        # the deployment's own metrics show the refused run
        assert sum(w.dead_letters("plan_mismatch") for w in new) >= 1
        for worker in new:
            worker.alive()  # ... and B stayed up throughout
            assert worker.get("/readyz")[0] == 200
        for worker in new:
            assert worker.stop()[0] == 0
        for worker in workers:  # started once, never failed
            assert not worker.events("qmtl.kafka.worker_failed"), worker.log.read_text()[-3000:]
    finally:
        publisher.close()
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.kill()

    everything = {
        source: [(ts, value) for s, ts, value in _events(0, 60) if s == source]
        for source in ("px", "vol")
    }
    end = BASE + 60 * 60  # the live run's newest final bucket (minute 59)
    oracle: dict[str, Any] = {}
    for version, pipeline in (("A", version_a), ("B", version_b)):
        local = MemoryStateBackend()
        pipeline.run(engine="local", state=local, sources=everything)
        oracle[version] = {n: _history(pipeline.build(), local, n) for n in (*UNCHANGED, "signal")}

    for node in UNCHANGED:  # continued across the upgrade: no gap, no duplicate, same values
        stored = _history(plan_b, state, node)
        assert stored == [o for o in oracle["B"][node] if o[0] <= end], node
        assert stored == _history(plan_a, state, node)  # one series: the node id did not change
    old_signal = _history(plan_a, state, "signal")
    assert old_signal == oracle["A"]["signal"][: len(old_signal)]  # stops where A stopped
    assert old_signal[-1][0] >= BASE + 60 * 39
    new_signal = _history(plan_b, state, "signal")
    first = new_signal[0][0]
    assert BASE + 60 * 15 < first <= BASE + 60 * 20  # starts at the upgrade, not at minute 0
    assert new_signal == [o for o in oracle["B"]["signal"] if first <= o[0] <= end]
    state.delete(name)
    engine.reset(plan_a, state)
    engine.reset(plan_b, state)
    state.close()


def test_a_fresh_deployment_after_a_reset_starts_from_history(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    """The old deployment's pending state is gone (``KafkaEngine.reset``); a new one warm
    starts from the history: its windows and as-of joins give an uninterrupted run's values
    from the first new bucket. The same restart with ``--no-warm-start`` leaves the window
    nodes a warm-up gap (what warm start is for)."""
    import confluent_kafka

    from qmtl_engine_kafka import Envelope, encode
    from qmtl_engine_kafka.engine import KafkaEngine
    from qmtl_state_redis import RedisStateBackend

    name = f"restart-{uuid.uuid4().hex[:10]}"
    (tmp_path / "upgrade_pipeline.py").write_text(textwrap.dedent(MODULE))
    sys.path.insert(0, str(tmp_path))
    try:
        import upgrade_pipeline

        pipeline = upgrade_pipeline.pipeline("A", name)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("upgrade_pipeline", None)
    plan = pipeline.build()
    engine = KafkaEngine(bootstrap_servers=kafka_bootstrap, partitions=PARTITIONS)
    engine.seed_topics(plan)
    state = RedisStateBackend(url=redis_url)
    env = {
        **os.environ,
        "QMTL_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "QMTL_REDIS__URL": redis_url,
        "QMTL_KAFKA__SESSION_TIMEOUT_S": "6",
    }
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})

    def publish(first: int, last: int) -> None:
        """Minutes ``first..last``, then a watermark at the end of ``last`` on both sources:
        nothing is left pending when the deployment stops."""
        for source, ts, value in _events(first, last):
            producer.produce(
                f"qmtl.input.{name}.{source}", encode(Envelope(name, source, ts, value))
            )
        mark = BASE + 60 * (last + 1)
        for source in ("px", "vol"):
            closing = Envelope(name, source, mark, None, watermark=mark, kind="watermark")
            producer.produce(f"qmtl.input.{name}.{source}", encode(closing))
        producer.flush(30)

    def serve(first: int, last: int, *options: str) -> None:
        worker = Worker(tmp_path, name, "A", first, env, *options)
        try:
            topic = engine.deploy(plan, state).topics.shard
            _wait(lambda: worker.holds(topic), 90, "the partitions", worker)
            publish(first, last)
            done = BASE + 60 * (last + 1)
            _wait(lambda: _newest(plan, state, "px") >= done, 90, f"minute {last}", worker)
            time.sleep(1)  # let the readers of px catch up too
            assert worker.stop()[0] == 0
        finally:
            if worker.process.poll() is None:
                worker.process.kill()
        engine.reset(plan, state)  # the deployment's pending state and shard topics are gone

    everything = {
        source: [(ts, value) for s, ts, value in _events(0, 59) if s == source]
        for source in ("px", "vol")
    }
    local = MemoryStateBackend()
    pipeline.run(engine="local", state=local, sources=everything)
    try:
        serve(0, 19)
        serve(20, 39)  # a fresh deployment, warm start (the default)
        end = BASE + 60 * 40
        for node in (*UNCHANGED, "signal"):
            expected = [o for o in _history(plan, local, node) if o[0] <= end]
            assert _history(plan, state, node) == expected, node
        serve(40, 59, "--no-warm-start")  # cold: the windows start empty
        stored = {t for t, _v in _history(plan, state, "sma3")}
        assert BASE + 60 * 41 not in stored and BASE + 60 * 42 not in stored  # warm-up gap
        assert BASE + 60 * 43 in stored
    finally:
        producer.flush(5)
        state.delete(name)
        state.close()
