"""Fault injection against the real services, each checked against the local engine (the oracle).

Every test states its expected outcome:

- a ``qmtl worker`` killed with SIGKILL mid-stream: a replacement worker finishes the run and
  the Redis history equals the oracle's (duplicates 0, gaps 0);
- redis-server restarted (durable, ``appendfsync always``) during a Kafka stream: the run
  completes with a history equal to the oracle's, or fails with a QmtlError, never a silent gap;
- a node slower than the poll interval: the run completes identical to the oracle and no
  consumer is revoked before the end (no rebalance storm).

Figures are printed (``-s``) and quoted in docs/reliability.md.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from qmtl.errors import QmtlError
from qmtl.state import MemoryStateBackend

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BASE = 1_700_000_040.0
EVENTS = 900  # one event every 20 s -> 300 one-minute buckets per node


def _slow_pipeline(name: str, delay: float) -> Any:
    from qmtl.node import Node, SourceNode
    from qmtl.pipeline import Pipeline

    def slow_double(src: float) -> float:
        time.sleep(delay)
        return src * 2

    minute = {"1m": {"period": 5, "max_history": 1000}}
    pipeline = Pipeline(name)
    pipeline.add_node(
        SourceNode(
            "src",
            source=[(BASE + 20 * i, float(i)) for i in range(EVENTS)],
            interval_settings=minute,
        )
    )
    pipeline.add_node(Node("double", fn=slow_double, upstreams=["src"], interval_settings=minute))
    pipeline.add_node(
        Node(
            "label",
            fn=lambda double: f"v={double:.1f}",
            upstreams=["double"],
            interval_settings=minute,
        )
    )
    return pipeline


def _history(
    pipeline: Any, state: Any, namespace: str | None = None
) -> dict[str, list[tuple[float, Any]]]:
    from qmtl.subplans import namespaced

    plan = pipeline.build()
    if namespace is not None:
        plan = namespaced(plan, namespace)
    return {
        node.name: [
            (item["timestamp"], item["value"]) for item in reversed(state.read(node.spec("1m").key))
        ]
        for node in plan.nodes
    }


def _oracle(name: str) -> dict[str, list[tuple[float, Any]]]:
    pipeline = _slow_pipeline(name, 0.0)
    state = MemoryStateBackend()
    pipeline.run(engine="local", state=state)
    return _history(pipeline, state)


def _figures(
    label: str, outputs: list[Any], history: dict[str, Any], oracle: dict[str, Any]
) -> dict[str, int]:
    seen = Counter((e.node, e.ts) for e in outputs)
    figures = {
        "events": EVENTS,
        "buckets_compared": sum(len(v) for v in oracle.values()),
        "history_duplicates": sum(len(v) - len({ts for ts, _ in v}) for v in history.values()),
        "history_gaps": sum(len(set(oracle[n]) - set(history.get(n, []))) for n in oracle),
        "outputs": len(outputs),
        "redelivered_outputs": sum(c - 1 for c in seen.values()),
    }
    print(f"\n[{label}] {figures}")
    return figures


# --------------------------------------------------------------------- SIGKILL of a worker


STRATEGY = """
import time
from qmtl.node import Node, SourceNode
from qmtl.pipeline import Pipeline

BASE = {base!r}
minute = {{"1m": {{"period": 5, "max_history": 1000}}}}

def slow_double(src):
    time.sleep({delay!r})
    return src * 2

pipeline = Pipeline({name!r})
pipeline.add_node(SourceNode("src", source=[(BASE + 20 * i, float(i)) for i in range({events})],
                             interval_settings=minute))
pipeline.add_node(Node("double", fn=slow_double, upstreams=["src"], interval_settings=minute))
pipeline.add_node(Node("label", fn=lambda double: f"v={{double:.1f}}", upstreams=["double"],
                       interval_settings=minute))
"""


def _worker(tmp: Path, bootstrap: str, redis_url: str, log: Path) -> Any:
    """A `qmtl worker` of the strategy's deployment (it serves every run sent to it)."""
    qmtl = str(Path(sys.executable).with_name("qmtl"))
    with log.open("ab") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [
                qmtl,
                "worker",
                "strategy:pipeline",
                "--bootstrap",
                bootstrap,
                "--redis-url",
                redis_url,
                "--log-every",
                "1",
                "--log-level",
                "info",
            ],
            cwd=tmp,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(tmp)},
        )


def test_a_worker_killed_with_sigkill_mid_stream_is_replaced_and_history_is_identical(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    from qmtl_state_redis import RedisStateBackend

    name = f"fault-kill-{uuid.uuid4().hex[:6]}"
    (tmp_path / "strategy.py").write_text(
        textwrap.dedent(STRATEGY.format(base=BASE, delay=0.01, name=name, events=EVENTS))
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        module = importlib.import_module("strategy")
        pipeline = module.pipeline
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("strategy", None)
    run_id = uuid.uuid4().hex
    log = tmp_path / "workers.log"
    first = _worker(tmp_path, kafka_bootstrap, redis_url, log)
    replacement: list[Any] = []
    outputs: list[Any] = []
    killed_at: list[int] = []

    def on_output(event: Any) -> None:
        outputs.append(event)
        if len(outputs) == 60 and not killed_at:  # mid-stream: some buckets done, most not
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            killed_at.append(len(outputs))
            replacement.append(_worker(tmp_path, kafka_bootstrap, redis_url, log))

    state = RedisStateBackend(redis_url)
    try:
        pipeline.run(
            engine="kafka",
            state=state,
            on_output=on_output,
            engine_options={"bootstrap_servers": kafka_bootstrap, "connect_timeout_s": 10},
            workers=0,
            run_id=run_id,
            namespace=f"{name}-bt",  # the deployment's live run owns the pipeline's name
            timeout=110,
        )
    finally:
        for process in [first, *replacement]:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
    assert killed_at, "the stream ended before the worker could be killed"
    assert first.returncode == -signal.SIGKILL
    history = _history(pipeline, state, f"{name}-bt")
    oracle = _oracle(name)
    figures = _figures("sigkill", outputs, history, oracle)
    state.delete(f"{name}-bt")
    state.close()
    assert history == oracle, log.read_text()[-3000:]
    assert figures["history_duplicates"] == 0 and figures["history_gaps"] == 0


def _strategy_pipeline(tmp: Path, name: str, delay: float) -> Any:
    """Write the strategy module the workers import, and import it here as well."""
    (tmp / "strategy.py").write_text(
        textwrap.dedent(STRATEGY.format(base=BASE, delay=delay, name=name, events=EVENTS))
    )
    sys.path.insert(0, str(tmp))
    try:
        import importlib

        return importlib.import_module("strategy").pipeline
    finally:
        sys.path.remove(str(tmp))
        sys.modules.pop("strategy", None)


def test_a_rebalance_while_buckets_are_pending_keeps_history_identical(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    """Worker A runs alone; mid-stream worker B joins every group (a rebalance while buckets are
    pending), then A leaves with SIGTERM (a second rebalance): B finishes from the pending state
    saved in Redis, and the history equals the oracle's."""
    from qmtl_state_redis import RedisStateBackend

    name = f"fault-rebalance-{uuid.uuid4().hex[:6]}"
    pipeline = _strategy_pipeline(tmp_path, name, 0.01)
    run_id = uuid.uuid4().hex
    log_a, log_b = tmp_path / "worker-a.log", tmp_path / "worker-b.log"
    workers = [_worker(tmp_path, kafka_bootstrap, redis_url, log_a)]
    outputs: list[Any] = []
    steps: dict[str, int] = {}

    def on_output(event: Any) -> None:
        outputs.append(event)
        if len(outputs) == 40 and "joined" not in steps:
            workers.append(_worker(tmp_path, kafka_bootstrap, redis_url, log_b))
            steps["joined"] = len(outputs)
        if len(outputs) == 120 and "left" not in steps:
            # B is in every group before A leaves: wait (the stream waits with us) for B's
            # consumers to take part in a rebalance, then stop A gracefully.
            deadline = time.monotonic() + 30
            while "qmtl.kafka.assigned" not in log_b.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            workers[0].terminate()  # finishes its batch, commits, leaves the groups
            steps["left"] = len(outputs)

    state = RedisStateBackend(redis_url)
    try:
        pipeline.run(
            engine="kafka",
            state=state,
            on_output=on_output,
            engine_options={"bootstrap_servers": kafka_bootstrap, "connect_timeout_s": 10},
            workers=0,
            run_id=run_id,
            namespace=f"{name}-bt",  # the deployment's live run owns the pipeline's name
            timeout=110,
        )
    finally:
        for process in workers:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
    history = _history(pipeline, state, f"{name}-bt")
    oracle = _oracle(name)
    figures = _figures("rebalance", outputs, history, oracle)
    print(f"[rebalance] B joined at output {steps.get('joined')}, A left at {steps.get('left')}")
    a_text, b_text = log_a.read_text(), log_b.read_text()
    print(
        f"[rebalance] A: assigned {a_text.count('qmtl.kafka.assigned')}, revoked "
        f"{a_text.count('qmtl.kafka.revoked')}; B: assigned "
        f"{b_text.count('qmtl.kafka.assigned')}, buckets {b_text.count('buckets')}"
    )
    state.delete(f"{name}-bt")
    state.close()
    assert steps.keys() == {"joined", "left"}, "the stream ended before the rebalance"
    assert "qmtl.kafka.assigned" in b_text, "worker B never joined a group"
    assert history == oracle, (a_text + b_text)[-3000:]
    assert figures["history_duplicates"] == 0 and figures["history_gaps"] == 0


# ----------------------------------------------------------- redis-server restart (durable)


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A private redis-server with ``appendfsync always`` that the test can restart."""
    binary = os.environ.get("QMTL_REDIS_SERVER") or shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    command = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(tmp_path),
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
    ]
    server: dict[str, Any] = {"url": f"redis://127.0.0.1:{port}/0", "process": None}

    def start() -> None:
        server["process"] = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop() -> None:
        process = server["process"]
        process.terminate()
        process.wait(15)

    server.update(start=start, stop=stop)
    start()
    yield server
    if server["process"].poll() is None:
        stop()


def test_redis_restarted_during_a_kafka_stream_completes_identical_or_fails_clearly(
    kafka_bootstrap: str, durable_redis: dict[str, Any]
) -> None:
    from qmtl_state_redis import RedisStateBackend

    name = f"fault-redis-{uuid.uuid4().hex[:6]}"
    pipeline = _slow_pipeline(name, 0.01)
    state = RedisStateBackend(durable_redis["url"], retries=8)
    outputs: list[Any] = []
    restarted = threading.Event()

    at: dict[str, int] = {}

    def restart() -> None:
        durable_redis["stop"]()
        at["stopped"] = len(outputs)
        time.sleep(0.5)  # writes keep coming while the server is down
        durable_redis["start"]()
        at["started"] = len(outputs)
        restarted.set()

    def on_output(event: Any) -> None:
        outputs.append(event)
        if len(outputs) == 60:
            threading.Thread(target=restart).start()

    outcome: BaseException | None = None
    try:
        pipeline.run(
            engine="kafka",
            state=state,
            on_output=on_output,
            engine_options={"bootstrap_servers": kafka_bootstrap, "connect_timeout_s": 10},
            timeout=110,
        )
    except QmtlError as error:
        outcome = error
    assert restarted.wait(30), "the stream ended before redis-server could be restarted"
    history = _history(pipeline, state)
    oracle = _oracle(name)
    figures = _figures("redis-restart", outputs, history, oracle)
    print(f"[redis-restart] outputs when redis-server stopped/started again: {at}")
    assert at["stopped"] < len(oracle["label"]) * 3  # the server went down mid-stream
    state.close()
    if outcome is None:
        assert history == oracle
    else:  # a clear failure naming the state backend; whatever was stored is the oracle's
        print(f"[redis-restart] failed clearly: {outcome}")
        assert "Redis" in str(outcome) or "redis" in str(outcome)
        for node, items in history.items():
            assert set(items) <= set(oracle[node])
    assert figures["history_duplicates"] == 0


# --------------------------------------------------------------- a node slower than a poll


def _slow_run(kafka_bootstrap: str, redis_url: str, **options: Any) -> tuple[Counter, Counter]:
    from qmtl_state_redis import RedisStateBackend

    name = f"fault-slow-{uuid.uuid4().hex[:6]}"
    pipeline = _slow_pipeline(name, 0.05)  # 300 buckets x 50 ms = 15 s in one node
    state = RedisStateBackend(redis_url)
    outputs: list[Any] = []
    with structlog.testing.capture_logs() as logs:
        pipeline.run(
            engine="kafka",
            state=state,
            on_output=outputs.append,
            engine_options={
                "bootstrap_servers": kafka_bootstrap,
                "connect_timeout_s": 10,
                **options,
            },
            timeout=110,
        )
    history = _history(pipeline, state)
    oracle = _oracle(name)
    figures = _figures(f"slow-node {options}", outputs, history, oracle)
    state.delete(name)
    state.close()
    assigned = Counter(e.get("group") for e in logs if e["event"] == "qmtl.kafka.assigned")
    revoked = Counter(e.get("group") for e in logs if e["event"] == "qmtl.kafka.revoked")
    print(f"[slow-node {options}] assigned={dict(assigned)} revoked={dict(revoked)}")
    assert history == oracle
    assert figures["history_duplicates"] == 0 and figures["history_gaps"] == 0
    return assigned, revoked


def test_a_node_slower_than_the_poll_interval_keeps_its_consumers_in_the_group(
    kafka_bootstrap: str, redis_url: str
) -> None:
    """Each bucket of ``double`` takes 50 ms, over the 20 ms poll interval: the run's worker
    is assigned its partitions once and revoked only when the run ends (no rebalance storm)."""
    assigned, revoked = _slow_run(kafka_bootstrap, redis_url, poll_interval_s=0.02)
    assert len(assigned) == 1 and all(count == 1 for count in assigned.values()), assigned
    assert all(count <= 1 for count in revoked.values()), revoked


def test_a_batch_longer_than_max_poll_interval_evicts_no_other_node(
    kafka_bootstrap: str, redis_url: str
) -> None:
    """``double``'s input (300 buckets x 50 ms = 15 s of work) arrives at once, in one message,
    over the 8 s max_poll_interval_s: the worker applies it in time-bounded slices (resuming
    inside the message) and polls between them, so it never leaves its group and is never
    re-assigned."""
    assigned, revoked = _slow_run(
        kafka_bootstrap, redis_url, max_poll_interval_s=8.0, session_timeout_s=6.0
    )
    assert len(assigned) == 1 and all(count == 1 for count in assigned.values()), assigned
    assert all(count <= 1 for count in revoked.values()), revoked


# ------------------------------------------------------------ broker stopped and restarted


@pytest.fixture
def private_kafka(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A broker of this test's own (scripts/_kafka.py), which it can stop and start again on
    the same port and log directory."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        import _kafka
    finally:
        sys.path.pop(0)
    monkeypatch.setenv("QMTL_KAFKA_HEAP", "256m")
    try:
        service = _kafka.start(tmp_path)
    except Exception as error:  # no java, no jars: this machine cannot run a broker
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"cannot start a private Kafka broker: {error}")
        pytest.skip(f"cannot start a private Kafka broker: {error}")
    bootstrap = service.env["QMTL_TEST_KAFKA_BOOTSTRAP"]
    port = int(bootstrap.rsplit(":", 1)[1])
    properties = tmp_path / "kafka" / "server.properties"
    command = [
        *_kafka._jvm_command(_kafka.fetch_jars(_kafka.DEFAULT_VERSION), "256m"),
        "kafka.Kafka",
        str(properties),
    ]
    broker: dict[str, Any] = {"bootstrap": bootstrap, "process": service.process}

    def restart(down_for: float) -> float:
        _kafka._terminate(broker["process"], 20)  # SIGTERM: controlled shutdown
        time.sleep(down_for)
        began = time.monotonic()
        with (tmp_path / "kafka" / "broker.log").open("ab") as log:
            broker["process"] = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        while time.monotonic() - began < 90:
            try:
                if _kafka.probe_metadata("127.0.0.1", port, timeout=2.0):
                    return time.monotonic() - began
            except (OSError, ValueError):
                pass
            time.sleep(0.25)
        raise RuntimeError("the broker did not come back within 90 s")

    broker["restart"] = restart
    yield broker
    _kafka._terminate(broker["process"], 20)


def test_a_broker_stopped_and_restarted_mid_stream_completes_with_identical_history(
    private_kafka: dict[str, Any], redis_url: str
) -> None:
    from qmtl_state_redis import RedisStateBackend

    name = f"fault-broker-{uuid.uuid4().hex[:6]}"
    pipeline = _slow_pipeline(name, 0.01)
    state = RedisStateBackend(redis_url)
    outputs: list[Any] = []
    at: dict[str, float] = {}

    def bounce() -> None:
        at["stopped_at_output"] = len(outputs)
        at["restart_seconds"] = private_kafka["restart"](1.0)
        at["restarted_at_output"] = len(outputs)

    def on_output(event: Any) -> None:
        outputs.append(event)
        if len(outputs) == 60:
            threading.Thread(target=bounce).start()

    pipeline.run(
        engine="kafka",
        state=state,
        on_output=on_output,
        engine_options={
            "bootstrap_servers": private_kafka["bootstrap"],
            "connect_timeout_s": 10,
            "delivery_timeout_s": 120,
        },
        timeout=200,
    )
    history = _history(pipeline, state)
    oracle = _oracle(name)
    figures = _figures("broker-restart", outputs, history, oracle)
    print(f"[broker-restart] {at}")
    state.delete(name)
    state.close()
    assert "restart_seconds" in at and at["stopped_at_output"] < len(outputs)
    assert history == oracle
    assert figures["history_duplicates"] == 0 and figures["history_gaps"] == 0
