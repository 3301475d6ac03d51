"""Benchmark ``kafka_engine``: the Kafka engine's workers against a raw consume/produce loop.

Measured side by side in one run, over N pre-produced events (default 200,000; env
``QMTL_BENCH_KAFKA_EVENTS``) on one-second buckets (one event per bucket, so every event is a
node execution):

- ``raw_*``: the least any at-least-once worker must do per batch: consume a batch, produce one
  message per input, wait for the acknowledgements, commit synchronously (bytes forwarded
  untouched), and the same with a QMTL envelope decoded and re-encoded per message
  (``raw_envelope_*``);
- ``pass_*``: the engine on a pass-through pipeline (source -> identity node), one worker;
  ``pass_not_idempotent_*`` the same with ``idempotent_producer=False`` (the default produces
  with librdkafka's ``enable.idempotence``; the raw loop does not);
- ``pass_metrics_*``: the pass-through again with the worker's operations layer on, as
  ``qmtl worker --metrics-port`` runs it (metrics, readiness probes of Kafka and Redis every
  2 s, the HTTP endpoint) and ``/metrics`` scraped every second; ``pass_metrics_vs_pass`` is
  its throughput over the plain pass-through's, ``pass_metrics_cpu_vs_pass`` the worker
  thread's CPU per execution over the plain one's (1.0: no cost);
- ``five_*``: the engine on a 5-node chain (source -> 4 identity nodes), one worker, and with
  two ``qmtl worker`` processes (``five_2w_*``).

A *node execution* is one final bucket a node produced: bucketed, aligned, computed (the user's
function), written to the Redis state backend (``write_many``, one round trip per batch),
produced to the node's output topic and committed. Throughput is node executions per second of
wall time from the first applied batch to the last node's end (group joins excluded, as for the
raw loop). Per-hop latency compares the broker timestamps of a bucket's message on a node's
output topic and on its upstream's (ms resolution). ``*_vs_raw`` is the engine's node
executions per second over the raw loop's events per second.

On a shared machine wall-clock rates depend on the load; the ``*_cpu_*`` figures (CPU time of
the worker thread, and of the raw loop's thread, per execution) do not: ``*_per_cpu_s`` is what
one worker process does per second of one core.

Needs ``QMTL_TEST_KAFKA_BOOTSTRAP`` and ``QMTL_TEST_REDIS_URL`` (``make bench`` starts both).
"""

from __future__ import annotations

import itertools
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from qmtl import codec
from qmtl.node import Node, SourceNode
from qmtl.pipeline import Pipeline
from qmtl_engine_kafka import Envelope, KafkaEngineSettings, TopicManager, decode, encode

BATCH = 1000
BASE = 1_700_006_400
SECONDS = {"1s": {"interval": "1s", "period": 86400, "max_history": 100}}
RUN = "bench"


def passthrough(x: Any) -> Any:
    return x


def chain(name: str, nodes: int) -> Pipeline:
    """``ticks`` -> ``n0`` -> ... -> ``n{nodes-1}``, each node the identity."""
    p = Pipeline(name)
    p.add_node(SourceNode("ticks", source=[(0, name)], interval_settings=SECONDS))
    upstream = "ticks"
    for i in range(nodes):
        p.add_node(Node(f"n{i}", fn=passthrough, upstreams=[upstream], interval_settings=SECONDS))
        upstream = f"n{i}"
    return p


def five_node() -> Pipeline:
    """The 5-node chain named by ``QMTL_BENCH_PIPELINE`` (for ``qmtl worker`` processes)."""
    return chain(os.environ["QMTL_BENCH_PIPELINE"], 4)


# -- the raw baseline ----------------------------------------------------------------------
def _fill(
    bootstrap: str,
    topic: str,
    count: int,
    *,
    pipeline: str = "bench",
    node: str = "ticks",
    run: str | None = None,
    end: bool = False,
) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 200_000,
        }
    )

    def send(payload: bytes) -> None:
        while True:
            try:
                producer.produce(topic, payload, partition=0)
                return
            except BufferError:
                producer.poll(0.05)

    for i in range(count):
        send(
            encode(
                Envelope(
                    pipeline=pipeline,
                    node=node,
                    ts=BASE + i + 0.5,
                    value={"px": 100.0 + (i % 50) * 0.01, "i": i},
                    run=run,
                )
            )
        )
    if end:
        send(encode(Envelope(pipeline=pipeline, node=node, ts=0.0, kind="end", run=run)))
    if producer.flush(60) != 0:
        raise RuntimeError(f"could not pre-produce {count} events to {topic}")


def _loop(
    bootstrap: str, source: str, sink: str, count: int, transform: Callable[[bytes], bytes]
) -> tuple[float, float]:
    """Consume -> produce -> flush -> commit over ``count`` messages; returns elapsed seconds
    and this thread's CPU seconds."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.min.bytes": 1,
            "queued.min.messages": 100_000,
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 1,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 200_000,
        }
    )
    consumer.subscribe([source])
    done = 0
    started = None
    deadline = time.monotonic() + 300
    try:
        while done < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"raw loop stalled after {done} of {count} events")
            messages = consumer.consume(BATCH, 1.0)
            if not messages:
                continue
            if started is None:
                started = time.perf_counter()  # from the first batch: group join excluded
                cpu = time.thread_time()
            last: dict[int, int] = {}
            for message in messages:
                if message.error() is not None:
                    continue
                # A message without error has a value, partition and offset (the `or`s are for
                # the type checker; a few ns against ~15 µs per message).
                producer.produce(sink, transform(message.value() or b""), key=message.key())
                last[message.partition() or 0] = message.offset() or 0
            producer.poll(0)
            if producer.flush(30) != 0:
                raise RuntimeError("output not acknowledged within 30s")
            consumer.commit(
                offsets=[TopicPartition(source, p, o + 1) for p, o in last.items()],
                asynchronous=False,
            )
            done += len(messages)
        return time.perf_counter() - (started or time.perf_counter()), time.thread_time() - cpu
    finally:
        consumer.close()


def _envelope_hop(payload: bytes) -> bytes:
    event = decode(payload)
    return encode(Envelope(event.pipeline, "out", event.ts, event.value, "bench-out"))


# -- the engine ----------------------------------------------------------------------------
class _Progress:
    """Watches the run's pending state in Redis: when the source saved its first batch, and
    when the last node has ended."""

    def __init__(self, redis_url: str, pipeline: str, first: str, last: str) -> None:
        import redis

        self.client = redis.Redis.from_url(redis_url)
        self.first = f"qmtl-kafka:{pipeline}:{RUN}:{first}#0"
        self.last = f"qmtl-kafka:{pipeline}:{RUN}:{last}"

    def wait(self, timeout: float = 600) -> tuple[float, float]:
        deadline = time.monotonic() + timeout
        started = None
        while time.monotonic() < deadline:
            if started is None and self.client.exists(self.first):
                started = time.perf_counter()
            raw = self.client.get(self.last)
            if isinstance(raw, bytes) and codec.decode(raw)["emitter"]["ended"]:
                return started or time.perf_counter(), time.perf_counter()
            time.sleep(0.005 if started is None else 0.05)
        raise RuntimeError(f"the benchmark run did not end within {timeout}s")


def _latencies(bootstrap: str, pipeline: str, names: list[str]) -> list[float]:
    """Per-hop latency (ms) of every bucket between consecutive nodes of the chain."""
    stamps: dict[str, dict[int, int]] = {}
    for name in names:
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "bench-latency",
                "enable.auto.commit": False,
            }
        )
        topic = f"qmtl.output.{pipeline}.{name}"
        consumer.assign([TopicPartition(topic, 0, 0)])
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        seen: dict[int, int] = {}
        read = 0
        while read < high:
            batch = consumer.consume(10_000, 1.0)
            for message in batch:
                read = (message.offset() or 0) + 1
                if message.error() is None:
                    bucket = decode(message.value() or b"").bucket  # msgpack since the codec
                    if bucket is not None:
                        seen.setdefault(bucket, message.timestamp()[1])
        consumer.close()
        stamps[name] = seen
    hops: list[float] = []
    for upstream, node in itertools.pairwise(names):
        up, down = stamps[upstream], stamps[node]
        hops += [down[b] - up[b] for b in down if b in up]
    return hops


def _engine_run(
    bootstrap: str,
    redis_url: str,
    nodes: int,
    count: int,
    processes: int = 0,
    idempotent: bool = True,
    metrics: bool = False,
) -> dict[str, float]:
    """Run the chain over ``count`` pre-produced events: one in-process worker thread, or
    ``processes`` ``qmtl worker`` processes. Returns elapsed seconds and latencies."""
    from qmtl_engine_kafka.engine import KafkaEngine
    from qmtl_engine_kafka.operations import WorkerMonitor
    from qmtl_engine_kafka.pending import RedisPendingStore
    from qmtl_engine_kafka.topics import dead_letter_topic
    from qmtl_engine_kafka.worker import RunContext, Worker
    from qmtl_state_redis import RedisStateBackend

    name = f"bench-{nodes + 1}n-{uuid.uuid4().hex[:8]}"
    pipeline = chain(name, nodes)
    plan = pipeline.build()
    engine = KafkaEngine(bootstrap_servers=bootstrap, idempotent_producer=idempotent)
    partitions = engine.prepare(plan)
    _fill(bootstrap, f"qmtl.input.{name}.ticks", count, pipeline=name, run=RUN, end=True)
    progress = _Progress(redis_url, name, "ticks", plan.nodes[-1].name)
    state = RedisStateBackend(url=redis_url)
    stop = threading.Event()
    children: list[subprocess.Popen[bytes]] = []
    thread = None
    cpu: list[float] = []
    monitor = None
    scrapes: list[int] = []
    try:
        if processes:
            here = Path(__file__).parent
            qmtl = str(Path(sys.executable).parent / "qmtl")
            env = {**os.environ, "QMTL_BENCH_PIPELINE": name}
            for _ in range(processes):
                children.append(
                    subprocess.Popen(
                        [
                            qmtl,
                            "worker",
                            "bench_kafka_engine:five_node",
                            "--bootstrap",
                            bootstrap,
                            "--redis-url",
                            redis_url,
                            "--run",
                            RUN,
                            "--log-level",
                            "warning",
                        ],
                        cwd=here,
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
        else:
            ctx = RunContext(
                plan,
                RUN,
                engine.settings,
                state,
                RedisPendingStore(redis_url),
                partitions,
                batch_size=engine.settings.batch_size,
            )
            if metrics:
                monitor = WorkerMonitor.for_worker(
                    engine.settings.model_copy(update={"metrics_port": 0}),
                    state,
                    pipeline=name,
                    probe_topic=dead_letter_topic(name),
                ).start()
                threading.Thread(target=_scrape, args=(monitor, stop, scrapes), daemon=True).start()
            worker = Worker(ctx, monitor=monitor)

            def work() -> None:
                began = time.thread_time()
                worker.run_until(stop)
                cpu.append(time.thread_time() - began)

            thread = threading.Thread(target=work, daemon=True)
            thread.start()
        started, ended = progress.wait()
    finally:
        stop.set()
        if thread is not None:
            thread.join(30)
        if monitor is not None:
            monitor.close()
        for child in children:
            child.terminate()
            child.wait(30)
        state.delete(name)
        state.close()
    hops = [] if processes else _latencies(bootstrap, name, [n.name for n in plan.nodes])
    hops.sort()
    return {
        "elapsed": ended - started,
        "cpu": cpu[0] if cpu else float("nan"),
        "p50": statistics.median(hops) if hops else float("nan"),
        "p99": hops[int(len(hops) * 0.99)] if hops else float("nan"),
        "scrapes": len(scrapes),
    }


def _scrape(monitor: Any, stop: threading.Event, scrapes: list[int]) -> None:
    """GET /metrics every second, as a (very eager) Prometheus would."""
    import urllib.request

    url = f"http://127.0.0.1:{monitor.server.port}/metrics"
    while not stop.wait(1.0):
        with urllib.request.urlopen(url, timeout=5) as response:
            scrapes.append(len(response.read()))


def run() -> dict[str, Any]:
    bootstrap = os.environ.get("QMTL_TEST_KAFKA_BOOTSTRAP")
    redis_url = os.environ.get("QMTL_TEST_REDIS_URL")
    if not bootstrap or not redis_url:
        raise RuntimeError(
            "QMTL_TEST_KAFKA_BOOTSTRAP / QMTL_TEST_REDIS_URL are unset: run "
            "through `python scripts/services.py --redis --kafka -- ...` or "
            "`make bench`"
        )
    count = int(os.environ.get("QMTL_BENCH_KAFKA_EVENTS", "200000"))
    tag = uuid.uuid4().hex[:8]
    source = f"qmtl.input.bench-{tag}.ticks"
    sinks = [f"qmtl.output.bench-{tag}.raw", f"qmtl.output.bench-{tag}.env"]
    TopicManager(KafkaEngineSettings(bootstrap_servers=bootstrap)).create_topics([source, *sinks])

    began = time.perf_counter()
    _fill(bootstrap, source, count)
    fill_s = time.perf_counter() - began
    raw_s, raw_cpu = _loop(bootstrap, source, sinks[0], count, lambda payload: payload)
    envelope_s, _envelope_cpu = _loop(bootstrap, source, sinks[1], count, _envelope_hop)
    raw_rate = count / raw_s

    passing = _engine_run(bootstrap, redis_url, 1, count)
    with_metrics = _engine_run(bootstrap, redis_url, 1, count, metrics=True)
    not_idempotent = _engine_run(bootstrap, redis_url, 1, count, idempotent=False)
    five = _engine_run(bootstrap, redis_url, 4, count)
    five_2w = _engine_run(bootstrap, redis_url, 4, count, processes=2)
    pass_rate = 2 * count / passing["elapsed"]
    metrics_rate = 2 * count / with_metrics["elapsed"]
    not_idempotent_rate = 2 * count / not_idempotent["elapsed"]
    five_rate = 5 * count / five["elapsed"]
    five_2w_rate = 5 * count / five_2w["elapsed"]
    return {
        "events": count,
        "batch": BATCH,
        "produce_events_per_s": round(count / fill_s),
        "raw_events_per_s": round(raw_rate),
        "raw_envelope_events_per_s": round(count / envelope_s),
        "envelope_vs_raw": round(raw_s / envelope_s, 3),
        "pass_node_executions_per_s": round(pass_rate),
        "pass_hop_p50_ms": passing["p50"],
        "pass_hop_p99_ms": passing["p99"],
        "pass_vs_raw": round(pass_rate / raw_rate, 3),
        "pass_metrics_node_executions_per_s": round(metrics_rate),
        "pass_metrics_vs_pass": round(metrics_rate / pass_rate, 3),
        "pass_metrics_cpu_us_per_execution": round(with_metrics["cpu"] / (2 * count) * 1e6, 2),
        "pass_metrics_cpu_vs_pass": round(with_metrics["cpu"] / passing["cpu"], 3),
        "pass_metrics_scrapes": with_metrics["scrapes"],
        "pass_not_idempotent_node_executions_per_s": round(not_idempotent_rate),
        "pass_not_idempotent_vs_raw": round(not_idempotent_rate / raw_rate, 3),
        "pass_not_idempotent_hop_p50_ms": not_idempotent["p50"],
        "raw_cpu_us_per_event": round(raw_cpu / count * 1e6, 2),
        "pass_cpu_us_per_execution": round(passing["cpu"] / (2 * count) * 1e6, 2),
        "pass_vs_raw_cpu": round(raw_cpu / count / (passing["cpu"] / (2 * count)), 3),
        "five_node_executions_per_s": round(five_rate),
        "five_hop_p50_ms": five["p50"],
        "five_hop_p99_ms": five["p99"],
        "five_vs_raw": round(five_rate / raw_rate, 3),
        "five_cpu_us_per_execution": round(five["cpu"] / (5 * count) * 1e6, 2),
        "five_executions_per_cpu_s": round(5 * count / five["cpu"]),
        "five_2w_node_executions_per_s": round(five_2w_rate),
        "five_2w_vs_1w": round(five_2w_rate / five_rate, 3),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
