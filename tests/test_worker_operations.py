"""``qmtl worker`` as an operator runs it: metrics, health, the failure policy, start and stop.

Real ``qmtl worker`` processes against the real broker and Redis of ``scripts/services.py``
(a test that must take Redis away starts a ``redis-server`` of its own). What is checked is
what a platform engineer would see: ``/metrics`` scraped during and after a run (counter deltas
equal the run's summary; lag > 0 while a backlog exists, 0 after catch-up, also for the node
whose batches are time-sliced and sought back), ``/readyz`` flipping with Redis, a node that
always raises failing readiness and then the process, SIGTERM, and start-up against servers
that are not there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import free_port, qmtl_script

from qmtl.testing.pipelines import BASE

pytestmark = pytest.mark.integration

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

MODULE = """
import os
import time

from qmtl.node import Node, SourceNode
from qmtl.pipeline import Pipeline

SEC = {"1s": {"interval": "1s", "period": 86400, "max_history": 100000}}


def double(price):
    if os.environ.get("QMTL_OPS_BROKEN"):
        raise ZeroDivisionError("broken on purpose")
    time.sleep(float(os.environ.get("QMTL_OPS_SLEEP", "0")))
    return price * 2


def pipeline():
    p = Pipeline(os.environ["QMTL_OPS_PIPELINE"])
    p.add_node(SourceNode("price", source=[(0, 0.0)], interval_settings=SEC))
    p.add_node(Node("double", fn=double, upstreams=["price"], interval_settings=SEC))
    return p
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# ----------------------------------------------------------------------------- helpers


class Worker:
    """One ``qmtl worker`` process of the test pipeline, its log and its metrics port."""

    def __init__(
        self,
        tmp: Path,
        name: str,
        *,
        bootstrap: str,
        redis_url: str,
        env: dict[str, str] | None = None,
        metrics: bool = True,
        tag: str = "worker",
    ) -> None:
        (tmp / "ops_pipeline.py").write_text(textwrap.dedent(MODULE))
        self.port = free_port() if metrics else None
        self.log = tmp / f"{tag}.log"
        args = [qmtl_script(), "worker", "ops_pipeline:pipeline", "--bootstrap", bootstrap]
        args += ["--redis-url", redis_url, "--log-every", "1"]
        # a deployment fed through the seed input topics creates them (as prepare_pipeline would)
        env = {"QMTL_KAFKA__SEED_TOPICS": "true", **(env or {})}
        if self.port is not None:
            args += ["--metrics-port", str(self.port)]
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                args,
                cwd=tmp,
                env={**os.environ, "QMTL_OPS_PIPELINE": name, **(env or {})},
                stdout=subprocess.DEVNULL,
                stderr=output,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def health(self, path: str) -> tuple[int, dict[str, Any]]:
        status, body = self.get(path)
        return status, json.loads(body)

    def scrape(self) -> Samples:
        from prometheus_client.parser import text_string_to_metric_families

        status, body = self.get("/metrics")
        assert status == 200
        return {
            (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "pipeline"))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }

    def wait_ready(self, seconds: float = 90) -> None:
        _wait(lambda: self._answers("/readyz") == 200, seconds, "the worker to be ready", self)

    def _answers(self, path: str) -> int | None:
        assert self.process.poll() is None, f"the worker exited:\n{self.text()[-3000:]}"
        try:
            return self.get(path)[0]
        except OSError:
            return None  # not listening yet

    def stop(self) -> tuple[int, float]:
        """SIGTERM; the exit code and how long the process took to exit."""
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"the worker ignored SIGTERM for 30 s:\n{self.text()[-3000:]}")
        return code, time.monotonic() - began

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _wait(predicate: Callable[[], Any], seconds: float, what: str, worker: Worker) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}:\n{worker.text()[-3000:]}")


def _metric(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _series(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


@pytest.fixture
def pipeline_name(monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"ops-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("QMTL_OPS_PIPELINE", name)
    return name


def _pipeline(tmp: Path) -> Any:
    (tmp / "ops_pipeline.py").write_text(textwrap.dedent(MODULE))
    sys.path.insert(0, str(tmp))
    try:
        import ops_pipeline  # type: ignore[import-not-found]

        return ops_pipeline.pipeline()
    finally:
        sys.path.remove(str(tmp))
        sys.modules.pop("ops_pipeline", None)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Every worker a test starts; killed at the end if still running."""
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill()


# ----------------------------------------------------------------------------- metrics


EVENTS = 3000
LATE_EVERY = 100


def _events() -> list[tuple[float, float]]:
    """One event a second, plus one 5.5 s late after every 100th (its bucket is already final
    by then: the hand-counted late events are EVENTS // LATE_EVERY)."""
    events: list[tuple[float, float]] = []
    for i in range(EVENTS):
        events.append((BASE + i, float(i % 50)))
        if i % LATE_EVERY == LATE_EVERY - 1:
            events.append((BASE + i - 5.5, -1.0))
    return events


def test_metrics_during_and_after_a_run(
    kafka_bootstrap: str,
    redis_url: str,
    tmp_path: Path,
    pipeline_name: str,
    workers: list[Worker],
) -> None:
    import confluent_kafka

    pipeline = _pipeline(tmp_path)
    # A slow node (2 ms a call) in batches cut every 0.1 s: a backlog that lasts seconds, and
    # batches that seek back (where librdkafka's position reads -1001).
    worker = Worker(
        tmp_path,
        pipeline_name,
        bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        env={"QMTL_OPS_SLEEP": "0.002", "QMTL_KAFKA__BATCH_TIME_S": "0.1"},
    )
    workers.append(worker)
    worker.wait_ready()
    before = worker.scrape()
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(f"qmtl.input.{pipeline_name}.price", b"\xff\xfe not an envelope")
    producer.flush(30)

    from qmtl_engine_kafka import KafkaEngineSettings, partition_for

    # price and double form one shard, '@price', on one partition of the pipeline's shard topic
    partitions = KafkaEngineSettings().partitions
    home = partition_for("@price", partitions)
    from qmtl_engine_kafka import deployment_topics

    shard_topic = deployment_topics(pipeline.build()).shard  # named by the plan's hash
    node_input = (("partition", str(home)), ("topic", shard_topic))
    outputs = {"double": 0}
    # (when, double's outputs so far, its input's lag)
    seen: list[tuple[float, int, float | None]] = []
    done = threading.Event()

    def count(event: Any) -> None:
        if event.node == "double":
            outputs["double"] += 1

    def scrape() -> None:
        while not done.is_set():
            lag = _series(worker.scrape(), "qmtl_worker_consumer_lag").get(node_input)
            seen.append((time.monotonic(), outputs["double"], lag))
            time.sleep(0.2)

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    try:
        summary = pipeline.run(
            count,
            engine="kafka",
            state="redis",
            engine_options={"bootstrap_servers": kafka_bootstrap},
            state_options={"url": redis_url},
            workers=0,
            namespace=f"{pipeline_name}-bt",  # apart from the deployment's live history
            sources={"price": _events()},
            timeout=180,
        )
    finally:
        done.set()
        scraper.join(10)

    # -- while the backlog existed: fewer than half of double's buckets out means thousands of
    # messages of its input not applied yet, so its lag must read above 0 at every scrape
    # (the bug this guards against: 0 for exactly the node that is behind). The worker
    # refreshes the gauge every second here (--log-every 1): scrapes from 1.5 s after the
    # first output on cannot show the value from before the events arrived.
    first = next(when for when, out, _lag in seen if out > 0)
    behind = [
        lag
        for when, out, lag in seen
        if when > first + 1.5 and out < EVENTS // 2 and lag is not None
    ]
    assert len(behind) >= 3, f"too few scrapes during the backlog: {seen}"
    assert all(lag > 0 for lag in behind), f"lag read 0 during a backlog: {seen}"

    # -- after catch-up: every partition's lag falls to 0
    def caught_up() -> bool:
        lags = _series(worker.scrape(), "qmtl_worker_consumer_lag")
        return bool(lags) and all(v == 0 for v in lags.values())

    _wait(caught_up, 20, "the lag to fall to 0", worker)
    after = worker.scrape()

    # -- counter deltas over the run equal the run's summary (and the hand counts)
    def delta(name: str, **labels: str) -> float:
        return _metric(after, name, **labels) - _metric(before, name, **labels)

    nodes = summary.nodes
    assert delta("qmtl_worker_events_total") == sum(n.events_in for n in nodes.values())
    assert delta("qmtl_worker_late_events_total") == sum(n.late_events for n in nodes.values())
    assert delta("qmtl_worker_late_events_total") == EVENTS // LATE_EVERY
    buckets = sum(sum(n.buckets_out.values()) for n in nodes.values())
    assert delta("qmtl_worker_buckets_total") == buckets == 2 * EVENTS
    assert delta("qmtl_worker_dead_letters_total", reason="undecodable") == 1
    assert delta("qmtl_worker_batch_seconds_count") > 0
    assert _metric(after, "qmtl_worker_node_failures_total") == 0
    # every shard partition, and the seed input topic's one partition
    assert _metric(after, "qmtl_worker_assigned_partitions") == partitions + 1
    # The newest event time applied is the end of the last bucket (BASE + EVENTS); the gauge
    # is wall clock minus that, read at the scrape.
    wm_lag = _metric(after, "qmtl_worker_watermark_lag_seconds")
    assert abs(wm_lag - (time.time() - (BASE + EVENTS))) < 60

    code, took = worker.stop()
    assert code == 0 and took < 15, worker.text()[-3000:]
    pipeline.clear_history(namespace=f"{pipeline_name}-bt")


# ----------------------------------------------------------------------------- readiness


def test_readyz_flips_when_redis_goes_away_and_sigterm_exits_0(
    kafka_bootstrap: str, tmp_path: Path, pipeline_name: str, workers: list[Worker]
) -> None:
    sys.path.insert(0, str(SCRIPTS))
    try:
        from _redis import RedisServer
    finally:
        sys.path.remove(str(SCRIPTS))

    redis = RedisServer(tmp_path / "redis").start()
    servers = [redis]
    try:
        worker = Worker(tmp_path, pipeline_name, bootstrap=kafka_bootstrap, redis_url=redis.url)
        workers.append(worker)
        worker.wait_ready()
        _status, report = worker.health("/readyz")
        assert report["checks"]["redis"] == "ok" and report["checks"]["kafka"] == "ok"

        redis.stop()
        gone = time.monotonic()
        _wait(lambda: worker.health("/readyz")[0] == 503, 20, "/readyz to fail", worker)
        _status, report = worker.health("/readyz")
        print(f"\n/readyz failed {time.monotonic() - gone:.1f}s after Redis stopped: {report}")
        assert report["ready"] is False
        assert report["checks"]["redis"].startswith("unreachable:"), report
        assert report["checks"]["kafka"] == "ok"
        assert worker.health("/healthz")[0] == 200  # the loop itself is alive: no restart

        servers.append(RedisServer(tmp_path / "redis", port=redis.port).start())
        _wait(lambda: worker.health("/readyz")[0] == 200, 20, "/readyz to pass again", worker)
        code, took = worker.stop()
        print(f"SIGTERM: exit {code} after {took:.1f}s")
        assert code == 0 and took < 15, worker.text()[-3000:]
        assert "qmtl.kafka.worker_stopped" in worker.text()
    finally:
        for server in servers:
            server.stop()


# ----------------------------------------------------------------------------- failure policy


def test_a_node_that_always_raises_fails_readiness_then_the_process_and_loses_nothing(
    kafka_bootstrap: str,
    redis_url: str,
    tmp_path: Path,
    pipeline_name: str,
    workers: list[Worker],
) -> None:
    """The default policy (exit, 3 failures in a row, 1 s back-off doubling): /readyz fails
    while the node fails, then the worker exits non-zero with one error line; the failing batch
    was never committed, so a worker with fixed code computes every bucket."""
    import confluent_kafka

    from qmtl_engine_kafka.envelope import Envelope, encode
    from qmtl_state_redis import RedisStateBackend

    broken = Worker(
        tmp_path,
        pipeline_name,
        bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        env={"QMTL_OPS_BROKEN": "1"},
        tag="broken",
    )
    workers.append(broken)
    broken.wait_ready()
    topic = f"qmtl.input.{pipeline_name}.price"
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(5):
        producer.produce(topic, encode(Envelope(pipeline_name, "price", BASE + i, float(i))))
    producer.flush(30)

    reports: list[dict[str, Any]] = []

    def unready() -> bool:
        status, report = broken.health("/readyz")
        reports.append(report)
        return status == 503

    _wait(unready, 30, "/readyz to fail on the failing node", broken)
    assert "node 'double' is failing" in reports[-1]["checks"]["nodes"], reports[-1]
    failures = broken.scrape()
    assert _metric(failures, "qmtl_worker_node_failures_total", node="double", run="live") >= 1
    assert _metric(failures, "qmtl_worker_failing_nodes") == 1
    began = time.monotonic()
    try:
        code = broken.process.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker kept running with a failing node:\n{broken.text()[-3000:]}")
    text = broken.text()
    print(f"\nfailing node: exit {code} {time.monotonic() - began:.1f}s after /readyz failed")
    assert code != 0
    errors = [json.loads(line) for line in text.splitlines() if "qmtl.kafka.worker_failed" in line]
    assert len(errors) == 1, text[-3000:]
    assert "'double' failed 3 time(s) in a row" in errors[0]["error"]
    assert "ZeroDivisionError: broken on purpose" in errors[0]["error"]
    assert "Traceback" not in text
    assert text.count('"qmtl.kafka.node_failed"') == 3  # three attempts, then the exit

    # Fixed code: the batch the broken worker never committed is applied now.
    fixed = Worker(
        tmp_path, pipeline_name, bootstrap=kafka_bootstrap, redis_url=redis_url, tag="fixed"
    )
    workers.append(fixed)
    producer.produce(topic, encode(Envelope(pipeline_name, "price", 0.0, None, kind="end")))
    producer.flush(30)
    pipeline = _pipeline(tmp_path)
    key = pipeline.build().by_name["double"].series[0].key
    state = RedisStateBackend(url=redis_url)
    try:
        _wait(lambda: len(state.read(key)) == 5, 60, "the fixed worker's buckets", fixed)
        values = [item["value"] for item in reversed(state.read(key))]
        assert values == [0.0, 2.0, 4.0, 6.0, 8.0]  # price i -> 2i, none skipped
        state.delete(pipeline_name)
    finally:
        state.close()
    code, _took = fixed.stop()
    assert code == 0


# ----------------------------------------------------------------------------- start-up


@pytest.mark.parametrize("missing", ["redis", "broker"])
def test_an_unreachable_server_at_start_up_exits_non_zero_with_one_json_line(
    missing: str, kafka_bootstrap: str, redis_url: str, tmp_path: Path, pipeline_name: str
) -> None:
    closed = free_port()
    bootstrap = f"127.0.0.1:{closed}" if missing == "broker" else kafka_bootstrap
    redis = f"redis://127.0.0.1:{closed}/0" if missing == "redis" else redis_url
    began = time.monotonic()
    worker = Worker(tmp_path, pipeline_name, bootstrap=bootstrap, redis_url=redis)
    try:
        code = worker.process.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()
        pytest.fail(f"the worker kept running without {missing}:\n{worker.text()}")
    took = time.monotonic() - began
    text = worker.text()
    print(f"\n[{missing} unreachable] exit {code} after {took:.1f}s: {text.strip()[-400:]}")
    assert code != 0 and took < 20
    lines = text.splitlines()
    events = [json.loads(line) for line in lines]  # JSON logging: every line is JSON
    failed = [e for e in events if e["event"] == "qmtl.kafka.worker_failed"]
    assert len(failed) == 1 and failed[0]["level"] == "error", text
    assert f"127.0.0.1:{closed}" in failed[0]["error"]
    assert not [e for e in events if e["level"] == "error" and e is not failed[0]], text
