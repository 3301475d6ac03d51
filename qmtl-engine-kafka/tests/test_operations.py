"""The worker's operations layer without a broker: metrics and their label bound, the failure
policy, health, the HTTP endpoint and the start-up checks' time bound.

The end-to-end behaviour (a real ``qmtl worker`` against Kafka and Redis) is in the root's
``tests/test_worker_operations.py``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qmtl.errors import ConfigurationError, ModelValidationError, StateBackendError
from qmtl_engine_kafka.errors import NodeFailuresError
from qmtl_engine_kafka.operations import (
    OTHER,
    FailurePolicy,
    HealthState,
    OperationsServer,
    WorkerMetrics,
    WorkerMonitor,
)
from qmtl_engine_kafka.settings import KafkaEngineSettings


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def samples(metrics: WorkerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, parsed back from the text Prometheus would scrape."""
    text = metrics.exposition()[0].decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    wanted = tuple(sorted({"pipeline": metrics.pipeline, **labels}.items()))
    return samples(metrics).get((name, wanted), 0.0)


# ----------------------------------------------------------------------------- metrics


def test_batches_add_up_and_nothing_is_counted_per_message() -> None:
    metrics = WorkerMetrics("prices")
    monitor = WorkerMonitor("prices", metrics=metrics)
    monitor.batch(0.2, events=1500, buckets=40, late=3)
    monitor.batch(0.05, events=500, buckets=10, late=0)
    monitor.dead_letters({"malformed": 2, "oversized": 0})
    monitor.dead_letters({"malformed": 1})
    assert value(metrics, "qmtl_worker_events_total") == 2000
    assert value(metrics, "qmtl_worker_buckets_total") == 50
    assert value(metrics, "qmtl_worker_late_events_total") == 3
    assert value(metrics, "qmtl_worker_dead_letters_total", reason="malformed") == 3
    assert (
        "qmtl_worker_dead_letters_total",
        (("pipeline", "prices"), ("reason", "oversized")),
    ) not in samples(metrics)
    assert value(metrics, "qmtl_worker_batch_seconds_count") == 2
    assert value(metrics, "qmtl_worker_batch_seconds_sum") == pytest.approx(0.25)
    # 0.05 s falls in the le=0.05 bucket, 0.2 s only from le=0.25 on
    assert value(metrics, "qmtl_worker_batch_seconds_bucket", le="0.05") == 1
    assert value(metrics, "qmtl_worker_batch_seconds_bucket", le="0.25") == 2


def test_the_registry_is_the_workers_own() -> None:
    from prometheus_client import REGISTRY

    WorkerMetrics("one")
    WorkerMetrics("one")  # a second worker in the process: no clash in a shared registry
    assert not [m for m in REGISTRY.collect() if m.name.startswith("qmtl_worker")]


def test_watermark_lag_is_read_when_scraped_and_grows_while_nothing_is_applied() -> None:
    clock = Clock(1_700_000_060.0)
    metrics = WorkerMetrics("prices", clock=clock)
    assert ("qmtl_worker_watermark_lag_seconds", (("pipeline", "prices"),)) not in samples(metrics)
    metrics.watermark(1_700_000_000.0)
    assert value(metrics, "qmtl_worker_watermark_lag_seconds") == 60.0
    metrics.watermark(1_699_999_990.0)  # an older event time never moves it back
    clock.now += 30  # the worker stalls: nothing newer is applied
    assert value(metrics, "qmtl_worker_watermark_lag_seconds") == 90.0


def test_lag_is_the_current_picture_and_revoked_partitions_disappear() -> None:
    metrics = WorkerMetrics("prices")
    metrics.lag({("qmtl.input.prices.a", 0): 13_490, ("qmtl.input.prices.a", 1): 0})
    assert (
        value(metrics, "qmtl_worker_consumer_lag", topic="qmtl.input.prices.a", partition="0")
        == 13_490
    )
    metrics.lag({("qmtl.input.prices.a", 1): 7})  # partition 0 moved to another worker
    got = {k: v for k, v in samples(metrics).items() if k[0] == "qmtl_worker_consumer_lag"}
    assert list(got.values()) == [7]


def test_label_cardinality_stays_bounded_at_3000_nodes() -> None:
    """3,000 nodes, each failing, each with its own input topic (today's one-topic-per-node
    layout) and dead letters of 50 made-up reasons: the exposition still has a fixed number of
    series, and no total is lost in the folding."""
    metrics = WorkerMetrics("big", max_node_labels=20, max_lag_series=100)
    nodes = [f"n{i:04d}" for i in range(3000)]
    for node in nodes:
        metrics.node_failure(node, live=True)
        metrics.node_failure(node, live=False)
    metrics.dead_letters({f"reason{i}": 1 for i in range(50)})
    lags = {(f"qmtl.input.big.{node}", 0): i for i, node in enumerate(nodes)}
    metrics.lag(lags)
    metrics.batch(0.1, 10, 10, 1)
    metrics.watermark(1.0)
    metrics.partitions(3000)
    metrics.failing(3000)
    got = samples(metrics)

    # Counted by hand: events, buckets, late: a _total and a _created sample each (6); the
    # histogram: 13 bounds + "+Inf", _count, _sum, _created (17); dead letters: 20 reasons +
    # "_other", each _total and _created (42); node failures: 21 node labels x 2 run kinds, each
    # _total and _created (84); lag: 100 partitions + "_other" (101); watermark lag, assigned
    # partitions, failing nodes (3).
    assert len(got) == 6 + 17 + 42 + 84 + 101 + 3 == 253
    failures = {
        dict(labels)["node"]: v
        for (name, labels), v in got.items()
        if name == "qmtl_worker_node_failures_total" and dict(labels)["run"] == "live"
    }
    assert failures[OTHER] == 2980 and failures["n0000"] == 1 and len(failures) == 21
    lag_total = sum(v for (name, _labels), v in got.items() if name == "qmtl_worker_consumer_lag")
    assert lag_total == sum(range(3000))
    dead = sum(v for (name, _l), v in got.items() if name == "qmtl_worker_dead_letters_total")
    assert dead == 50


# ----------------------------------------------------------------------------- failure policy


def test_exit_policy_replays_with_growing_backoff_then_stops_the_worker() -> None:
    policy = FailurePolicy("exit", max_failures=3, backoff_s=1.0)
    error = ZeroDivisionError("division by zero")
    assert policy.failed("signal", error, live=True).retry_after_s == 1.0
    assert policy.problem() is not None and "signal" in policy.problem()  # type: ignore[operator]
    assert policy.failed("signal", error, live=True).retry_after_s == 2.0
    with pytest.raises(NodeFailuresError) as raised:
        policy.failed("signal", error, live=True)
    message = str(raised.value)
    assert "'signal' failed 3 time(s) in a row" in message
    assert "ZeroDivisionError: division by zero" in message and "max_node_failures" in message


def test_a_committed_batch_ends_the_streak() -> None:
    policy = FailurePolicy("exit", max_failures=2)
    policy.failed("signal", ValueError("x"), live=True)
    policy.recovered("signal")
    assert policy.problem() is None
    assert policy.failed("signal", ValueError("x"), live=True).retry  # the count started again


def test_stop_node_policy_ends_the_node_and_stays_unready() -> None:
    policy = FailurePolicy("stop-node")
    verdict = policy.failed("signal", ValueError("bad tick"), live=True)
    assert not verdict.retry
    policy.recovered("signal")  # other batches of the worker commit: still stopped
    assert policy.problem() == "node 'signal' stopped on a failure: ValueError: bad tick"


def test_a_finite_runs_failure_goes_to_its_caller_not_to_the_deployment() -> None:
    policy = FailurePolicy("exit", max_failures=1)
    assert not policy.failed("signal", ValueError("x"), live=False).retry
    assert policy.problem() is None


def test_settings_choose_the_policy() -> None:
    settings = KafkaEngineSettings(
        failure_policy="stop-node", max_node_failures=5, node_retry_backoff_s=0.5
    )
    monitor = WorkerMonitor.for_worker(settings, None, pipeline="p", probe_topic="t")
    assert monitor.policy is not None and monitor.policy.name == "stop-node"
    assert monitor.metrics is None and monitor.server is None  # no metrics_port: no server
    with pytest.raises(ModelValidationError, match="failure_policy: Input should be 'exit'"):
        KafkaEngineSettings(failure_policy="ignore")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- health


def test_liveness_follows_the_poll_loop() -> None:
    clock = Clock()
    health = HealthState(liveness_timeout_s=60, clock=clock)
    assert not health.live()[0]  # not polled yet: starting
    health.polled()
    assert health.live()[0]
    clock.now += 61
    live, report = health.live()
    assert not live and report["checks"]["loop"].startswith("stalled: no poll round for 61s")


def test_readiness_needs_every_probe_and_no_failing_node() -> None:
    clock = Clock()
    redis_up = [True]

    def redis() -> None:
        if not redis_up[0]:
            raise StateBackendError("Redis at redis://r:6379/0 refused the connection")

    policy = FailurePolicy("exit")
    health = HealthState(policy=policy, check_interval_s=2, clock=clock)
    health.add_check("redis", redis)
    health.start()
    try:
        assert not health.ready()[0]  # the loop has not run yet
        health.polled()
        ready, report = health.ready()
        assert ready and report["checks"]["partitions"] == "waiting for assignment"
        health.assignment(3)
        assert health.ready()[1]["checks"]["partitions"] == "3 assigned"
        redis_up[0] = False
        health._check_all()
        ready, report = health.ready()
        assert not ready and report["checks"]["redis"].startswith("unreachable: Redis at")
        redis_up[0] = True
        health._check_all()
        assert health.ready()[0]
        clock.now += 3 * 2 + 11  # the probe thread has not reported for too long
        assert health.ready()[1]["checks"]["redis"].startswith("unknown")
        health._check_all()
        policy.failed("signal", ValueError("x"), live=True)
        ready, report = health.ready()
        assert not ready and "node 'signal' is failing (1 of 3" in report["checks"]["nodes"]
        policy.recovered("signal")
        health.stopping()
        assert health.ready()[1]["checks"]["loop"] == "stopping"
    finally:
        health.close()


# ----------------------------------------------------------------------------- the endpoint


def _get(port: int, path: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers["Content-Type"]


def test_the_endpoint_serves_metrics_health_and_readiness() -> None:
    health = HealthState()
    metrics = WorkerMetrics("prices")
    metrics.batch(0.1, 7, 2, 0)
    server = OperationsServer(health, metrics, port=0, host="127.0.0.1").start()
    try:
        status, body, kind = _get(server.port, "/metrics")
        assert status == 200 and kind.startswith("text/plain")
        assert 'qmtl_worker_events_total{pipeline="prices"} 7.0' in body.decode()
        status, body, _kind = _get(server.port, "/healthz")
        assert status == 503 and json.loads(body)["live"] is False
        health.polled()
        status, body, kind = _get(server.port, "/readyz")
        assert status == 200 and kind == "application/json"
        assert json.loads(body) == {
            "ready": True,
            "checks": {"loop": "ok", "nodes": "ok", "partitions": "waiting for assignment"},
        }
        assert _get(server.port, "/healthz")[0] == 200
        assert _get(server.port, "/nope")[0] == 404
        with pytest.raises(ConfigurationError, match=f"127.0.0.1:{server.port} cannot be opened"):
            OperationsServer(health, metrics, port=server.port, host="127.0.0.1").start()
    finally:
        server.close()


# ----------------------------------------------------------------------------- start-up


def test_a_state_backend_that_never_answers_is_given_up_on_in_time() -> None:
    """A client stuck in connect timeouts and retries (a host that swallows packets): the
    start-up check gives up after its bound, naming the server. (The Kafka half is
    check_broker's, bounded by connect_timeout_s.)"""

    class Hanging:
        url = "redis://10.255.255.1:6379/0"

        def ping(self) -> None:
            time.sleep(30)

    from qmtl_engine_kafka.operations.startup import _bounded

    began = time.monotonic()
    with pytest.raises(StateBackendError, match=r"did not answer within 0\.5s"):
        _bounded(Hanging().ping, 0.5, "the state backend at redis://10.255.255.1:6379/0")
    assert time.monotonic() - began < 2


def test_monitor_asks_for_lag_every_few_seconds_only_with_metrics() -> None:
    clock = Clock()
    assert not WorkerMonitor("p").lag_due()
    monitor = WorkerMonitor("p", metrics=WorkerMetrics("p"), lag_every_s=2.0, clock=clock)
    assert monitor.lag_due()  # at once when the loop starts
    assert not monitor.lag_due()
    clock.now += 2
    assert monitor.lag_due()


def test_the_kafka_probe_fails_when_no_broker_answers() -> None:
    """The readiness probe of Kafka against a port nothing listens on: it raises, naming the
    servers, within its 2 s bound (what /readyz then reports as unreachable)."""
    import socket

    from qmtl_engine_kafka.errors import BrokerUnavailableError
    from qmtl_engine_kafka.operations import kafka_probe

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    settings = KafkaEngineSettings(bootstrap_servers=f"127.0.0.1:{closed}", connect_timeout_s=1)
    probe = kafka_probe(settings, "qmtl.dlq.p", what="test")
    began = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match=f"no Kafka broker at 127.0.0.1:{closed}"):
        probe()
    assert time.monotonic() - began < 3
