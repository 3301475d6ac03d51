"""Benchmark ``kafka_engine``: the sharded Kafka engine's CPU and latency, side by side in one run.

Figures (CPU-time ratios measured in the same run; absolute figures are reported, not gated):

- ``raw_*``: the least any at-least-once worker does per event: consume a message, produce
  one, wait for the acknowledgements, commit (bytes forwarded untouched), one event per message;
- ``shard_*``: node executions inside one shard (a source and a chain of ``CHAIN`` identity
  nodes, one event per bucket), the local engine's CPU per execution against the Kafka
  worker thread's (memory state for both, so the comparison is the engine's own work; the same
  with the Redis state backend is reported next to it). Target: ``shard_vs_local_cpu`` ≤ 2;
- ``ingest_*``: source ingest against the raw loop, in CPU per event (the raw loop's CPU per
  event over the worker's; target ≥ 0.5), ten events per one-second bucket, Redis state:
  ``ingest_run_*`` events a finite ``run()`` publishes (many per message, the engine's own
  path); ``ingest_live_*`` events external producers send to the source's input topic, one per
  message as the raw loop reads them, which the worker decodes, forwards into the shard's
  partition, reads back, buckets, writes and commits (two Kafka hops per event);
- ``ingest_live_metrics_*``: the live ingest again with the worker's operations layer on, as
  ``qmtl worker --metrics-port`` runs it (metrics, readiness probes of Kafka and Redis every
  2 s, the HTTP endpoint) and ``/metrics`` scraped every second; ``..._cpu_vs_plain`` is its
  CPU per event over the plain live ingest's (1.0: no cost);
- ``cross_*``: a bucket crossing a shard boundary at a steady 1,000 events/s (one event per
  bucket): the time from the upstream's output to the downstream's (producer timestamps, ms),
  p50 and p99. Goal p50 ≤ 20 ms;
- ``two_workers_*``: a run over 8 partitions served by 2 ``qmtl worker`` processes against 1:
  CPU per event of all worker processes. Target: ``two_vs_one_cpu`` ≤ 1.25.

Needs ``QMTL_TEST_KAFKA_BOOTSTRAP`` and ``QMTL_TEST_REDIS_URL`` (``make bench`` starts both);
``QMTL_BENCH_KAFKA_EVENTS`` sizes the runs (default 100,000).
"""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from qmtl import codec
from qmtl.node import Node, SourceNode
from qmtl.pipeline import Pipeline
from qmtl.state import MemoryStateBackend
from qmtl.stream_runner import run_in_process
from qmtl_engine_kafka import (
    Envelope,
    KafkaEngineSettings,
    TopicManager,
    deployment_topics,
    encode,
)
from qmtl_engine_kafka.engine import KafkaEngine
from qmtl_engine_kafka.worker import Worker

BATCH = 1000
BASE = 1_700_006_400
SECONDS = {"1s": {"interval": "1s", "period": 86400, "max_history": 100}}
CHAIN = 50


def passthrough(x: Any) -> Any:
    return x


def chain(name: str, nodes: int, events: int = 0, per_bucket: int = 1) -> Pipeline:
    """``ticks`` -> ``n0`` -> ... -> ``n{nodes-1}`` (identity nodes): one shard."""
    p = Pipeline(name)
    data: list[tuple[float, Any]] = [
        (BASE + (i + 0.5) / per_bucket, float(i % 97)) for i in range(events)
    ]
    p.add_node(SourceNode("ticks", source=data or [(0, name)], interval_settings=SECONDS))
    upstream = "ticks"
    for i in range(nodes):
        p.add_node(Node(f"n{i}", fn=passthrough, upstreams=[upstream], interval_settings=SECONDS))
        upstream = f"n{i}"
    return p


def wide() -> Pipeline:
    """``QMTL_BENCH_PIPELINE``: 64 independent symbols (source -> node): 64 shards."""
    p = Pipeline(os.environ["QMTL_BENCH_PIPELINE"])
    events = int(os.environ.get("QMTL_BENCH_WIDE_EVENTS", "500"))
    for s in range(64):
        p.add_node(
            SourceNode(
                f"s{s}",
                source=[(BASE + i + 0.5, float(s + i % 13)) for i in range(events)],
                interval_settings=SECONDS,
            )
        )
        p.add_node(Node(f"x{s}", fn=passthrough, upstreams=[f"s{s}"], interval_settings=SECONDS))
    return p


# -- the raw baseline ----------------------------------------------------------------------
def _fill(
    bootstrap: str,
    topic: str,
    count: int,
    *,
    pipeline: str = "bench",
    end: bool = False,
    per_bucket: int = 1,
) -> None:
    """``count`` seed envelopes (one event each), then an end marker when asked."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10_000}
    )

    def send(payload: bytes) -> None:
        while True:
            try:
                producer.produce(topic, payload, partition=0)
                return
            except BufferError:
                producer.poll(0.05)

    for i in range(count):
        ts = BASE + (i + 0.5) / per_bucket
        send(encode(Envelope(pipeline=pipeline, node="ticks", ts=ts, value=float(i % 97))))
    if end:
        send(encode(Envelope(pipeline=pipeline, node="ticks", ts=0.0, kind="end")))
    if producer.flush(60) != 0:
        raise RuntimeError(f"could not pre-produce {count} events to {topic}")


def _raw_loop(bootstrap: str, source: str, sink: str, count: int) -> tuple[float, float]:
    """Consume -> produce -> flush -> commit over ``count`` messages: (seconds, thread CPU)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 1, "batch.num.messages": 10_000}
    )
    consumer.subscribe([source])
    done, started, cpu = 0, 0.0, 0.0
    deadline = time.monotonic() + 300
    try:
        while done < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"raw loop stalled after {done} of {count} events")
            messages = consumer.consume(BATCH, 1.0)
            if not messages:
                continue
            if not started:
                started, cpu = time.perf_counter(), time.thread_time()
            last = 0
            for message in messages:
                producer.produce(sink, message.value() or b"", key=message.key())
                last = message.offset() or 0
            producer.poll(0)
            if producer.flush(30) != 0:
                raise RuntimeError("output not acknowledged within 30s")
            consumer.commit(offsets=[TopicPartition(source, 0, last + 1)], asynchronous=False)
            done += len(messages)
        return time.perf_counter() - started, time.thread_time() - cpu
    finally:
        consumer.close()


# -- the engine ----------------------------------------------------------------------------
class _WorkerCpu:
    """Adds up the CPU time of every worker thread started while it is active."""

    def __init__(self) -> None:
        self.cpu: list[float] = []
        self._original = Worker.run_until

    def __enter__(self) -> _WorkerCpu:
        original, cpu = self._original, self.cpu

        def timed(worker: Worker, stop: threading.Event) -> None:
            began = time.thread_time()
            try:
                original(worker, stop)
            finally:
                cpu.append(time.thread_time() - began)

        Worker.run_until = timed  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        Worker.run_until = self._original  # type: ignore[method-assign]


def _shard(bootstrap: str, redis_url: str, events: int) -> dict[str, float]:
    """CPU per node execution inside one shard: the local engine against a Kafka worker."""
    from qmtl_state_redis import RedisStateBackend

    pipeline = chain(f"bench-shard-{uuid.uuid4().hex[:8]}", CHAIN, events)
    plan = pipeline.build()
    executions = CHAIN * events
    began = time.thread_time()
    run_in_process(plan, MemoryStateBackend())
    local = (time.thread_time() - began) / executions
    engine = KafkaEngine(bootstrap_servers=bootstrap, partitions=1)
    figures = {"local_cpu_us": local * 1e6}
    for label, state in (("memory", MemoryStateBackend()), ("redis", RedisStateBackend(redis_url))):
        with _WorkerCpu() as measured:
            pipeline.run(engine=engine, state=state)
        figures[f"kafka_{label}_cpu_us"] = sum(measured.cpu) / executions * 1e6
        if label == "redis":
            state.delete(pipeline.name)
            state.close()
    return figures


def _ingest_run(bootstrap: str, redis_url: str, events: int) -> float:
    """Worker CPU per event of a source in a finite run (events published by ``run()``)."""
    from qmtl_state_redis import RedisStateBackend

    pipeline = chain(f"bench-ingest-run-{uuid.uuid4().hex[:8]}", 0, events, per_bucket=10)
    state = RedisStateBackend(redis_url)
    with _WorkerCpu() as measured:
        pipeline.run(engine=KafkaEngine(bootstrap_servers=bootstrap, partitions=1), state=state)
    state.delete(pipeline.name)
    state.close()
    return sum(measured.cpu) / events * 1e6


def _ingest(bootstrap: str, redis_url: str, events: int, metrics: bool = False) -> dict[str, float]:
    """A source fed one event per message through its input topic, by a deployment worker
    (``metrics``: with the operations layer of ``qmtl worker --metrics-port``, scraped)."""
    from qmtl_engine_kafka.operations import WorkerMonitor
    from qmtl_state_redis import RedisStateBackend

    name = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    pipeline = chain(name, 0)
    plan = pipeline.build()
    engine = KafkaEngine(bootstrap_servers=bootstrap, partitions=1, batch_size=BATCH)
    state = RedisStateBackend(redis_url)
    engine.seed_topics(plan)
    _fill(bootstrap, f"qmtl.input.{name}.ticks", events, pipeline=name, end=True, per_bucket=10)
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{name}"})
    reader.assign([TopicPartition(deployment_topics(plan).out, 0, 0)])
    stop = threading.Event()
    monitor = None
    scrapes: list[int] = []
    if metrics:
        monitor = WorkerMonitor.for_worker(
            engine.settings.model_copy(update={"metrics_port": 0}),
            state,
            pipeline=name,
            probe_topic=deployment_topics(plan).shard,
        ).start()
        threading.Thread(target=_scrape, args=(monitor, stop, scrapes), daemon=True).start()
    with _WorkerCpu() as measured:
        worker = engine.worker(plan, state, log_every_s=3600, monitor=monitor)
        thread = threading.Thread(target=worker.run_until, args=(stop,), daemon=True)
        began = time.perf_counter()
        thread.start()
        deadline = time.monotonic() + 600
        ended = False
        while not ended:
            if time.monotonic() > deadline:
                raise RuntimeError("the ingest run did not end")
            for message in reader.consume(100, 0.2):
                if (
                    message.error() is None
                    and codec.decode(message.value() or b"\x80").get("k") == "N"
                ):
                    ended = True
        elapsed = time.perf_counter() - began
        stop.set()
        thread.join(30)
    if monitor is not None:
        monitor.close()
    reader.close()
    state.delete(name)
    state.close()
    return {
        "seconds": elapsed,
        "cpu_us": sum(measured.cpu) / events * 1e6,
        "scrapes": len(scrapes),
    }


def _scrape(monitor: Any, stop: threading.Event, scrapes: list[int]) -> None:
    """GET /metrics every second, as a (very eager) Prometheus would."""
    import urllib.request

    url = f"http://127.0.0.1:{monitor.server.port}/metrics"
    while not stop.wait(1.0):
        with urllib.request.urlopen(url, timeout=5) as response:
            scrapes.append(len(response.read()))


def _cross(
    bootstrap: str, redis_url: str, seconds: float = 15.0, rate: int = 1000
) -> dict[str, float]:
    """A bucket crossing from shard ``@px`` to shard ``remote`` at a steady rate."""
    from qmtl_state_redis import RedisStateBackend

    name = f"bench-cross-{uuid.uuid4().hex[:8]}"
    p = Pipeline(name)
    p.add_node(SourceNode("px", source=[(0, 1.0)], interval_settings=SECONDS))
    p.add_node(
        Node("sig", fn=passthrough, upstreams=["px"], shard="remote", interval_settings=SECONDS)
    )
    plan = p.build()
    engine = KafkaEngine(bootstrap_servers=bootstrap, partitions=2)
    state = RedisStateBackend(redis_url)
    engine.seed_topics(plan)
    stop = threading.Event()
    worker = engine.worker(plan, state, log_every_s=3600)
    thread = threading.Thread(target=worker.run_until, args=(stop,), daemon=True)
    thread.start()
    time.sleep(3)  # the group has formed
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    topic = f"qmtl.input.{name}.px"
    count = int(seconds * rate)
    began = time.perf_counter()
    for i in range(count):
        producer.produce(topic, encode(Envelope(name, "px", BASE + i + 0.5, float(i))), partition=0)
        producer.poll(0)
        pause = began + (i + 1) / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    producer.flush(30)
    time.sleep(2)
    stop.set()
    thread.join(30)
    stamps: dict[str, dict[int, int]] = {"px": {}, "sig": {}}
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{name}"})
    for partition in range(2):
        tp = TopicPartition(deployment_topics(plan).out, partition)
        _low, high = reader.get_watermark_offsets(tp, timeout=10)
        reader.assign([TopicPartition(deployment_topics(plan).out, partition, 0)])
        read = 0
        while read < high:
            for message in reader.consume(1000, 1.0):
                read = (message.offset() or 0) + 1
                data = codec.decode(message.value() or b"\x80")
                if data.get("k") == "O":
                    for node, _interval, buckets, _ends, _values in data["o"]:
                        for bucket in buckets:
                            stamps[node].setdefault(bucket, message.timestamp()[1])
    reader.close()
    state.delete(name)
    state.close()
    hops = sorted(stamps["sig"][b] - stamps["px"][b] for b in stamps["sig"] if b in stamps["px"])
    return {
        "buckets": len(hops),
        "p50_ms": statistics.median(hops) if hops else float("nan"),
        "p99_ms": hops[int(len(hops) * 0.99)] if hops else float("nan"),
    }


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _workers(bootstrap: str, redis_url: str, processes: int, events: int) -> float:
    """CPU per event of ``processes`` `qmtl worker` processes serving a run over 8 partitions."""
    from qmtl_state_redis import RedisStateBackend

    name = f"bench-wide-{processes}w-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "QMTL_BENCH_PIPELINE": name, "QMTL_BENCH_WIDE_EVENTS": str(events)}
    os.environ.update(env)
    pipeline = wide()
    engine = KafkaEngine(bootstrap_servers=bootstrap, partitions=8)
    state = RedisStateBackend(redis_url)
    qmtl = str(Path(sys.executable).parent / "qmtl")
    children = [
        subprocess.Popen(
            [
                qmtl,
                "worker",
                "bench_kafka_engine:wide",
                "--bootstrap",
                bootstrap,
                "--redis-url",
                redis_url,
                "--partitions",
                "8",
                "--log-level",
                "warning",
            ],
            cwd=Path(__file__).parent,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]
    try:
        time.sleep(8)  # started, joined, partitions spread
        before = sum(_cpu_of(c.pid) for c in children)
        pipeline.run(engine=engine, state=state, workers=0, namespace=f"{name}-bt")
        used = sum(_cpu_of(c.pid) for c in children) - before
    finally:
        for child in children:
            child.terminate()
            child.wait(30)
        state.delete(f"{name}-bt")
        state.close()
    return used / (64 * events)


def run() -> dict[str, Any]:
    bootstrap = os.environ.get("QMTL_TEST_KAFKA_BOOTSTRAP")
    redis_url = os.environ.get("QMTL_TEST_REDIS_URL")
    if not bootstrap or not redis_url:
        raise RuntimeError(
            "QMTL_TEST_KAFKA_BOOTSTRAP / QMTL_TEST_REDIS_URL are unset: run through "
            "`python scripts/services.py --redis --kafka -- ...` or `make bench`"
        )
    count = int(os.environ.get("QMTL_BENCH_KAFKA_EVENTS", "100000"))
    # What the benchmarks before this one left in the process is not this one's garbage: frozen,
    # a full collection no longer walks it (it fell on whichever thread allocated at the time:
    # always the raw loop's, the ingest's reader rather than its worker)
    gc.collect()
    gc.freeze()
    tag = uuid.uuid4().hex[:8]
    source, sink = f"bench-raw-in-{tag}", f"bench-raw-out-{tag}"
    warm, warm_sink = f"bench-warm-in-{tag}", f"bench-warm-out-{tag}"
    TopicManager(KafkaEngineSettings(bootstrap_servers=bootstrap)).create_topics(
        [source, sink, warm, warm_sink], partitions=1
    )
    # Not reported: the first seconds of this benchmark run while the broker and Redis are
    # still busy with what the benchmarks before it sent (the first figure measured here cost
    # up to 1.8x its usual CPU in make bench), so a raw loop absorbs them.
    _fill(bootstrap, warm, count)
    _raw_loop(bootstrap, warm, warm_sink, count)
    shard = _shard(bootstrap, redis_url, max(2000, count // CHAIN))
    # the raw loop right before the ingest runs it is the baseline of
    _fill(bootstrap, source, count)
    raw_s, raw_cpu = _raw_loop(bootstrap, source, sink, count)
    raw_cpu_us = raw_cpu / count * 1e6
    ingest = _ingest(bootstrap, redis_url, count)
    ingest_metrics = _ingest(bootstrap, redis_url, count, metrics=True)
    ingest_run = _ingest_run(bootstrap, redis_url, count)
    cross = _cross(bootstrap, redis_url)
    wide_events = max(200, count // 200)
    one = _workers(bootstrap, redis_url, 1, wide_events)
    two = _workers(bootstrap, redis_url, 2, wide_events)
    return {
        "events": count,
        "raw_events_per_s": round(count / raw_s),
        "raw_cpu_us_per_event": round(raw_cpu_us, 2),
        "shard_local_cpu_us_per_execution": round(shard["local_cpu_us"], 2),
        "shard_kafka_cpu_us_per_execution": round(shard["kafka_memory_cpu_us"], 2),
        "shard_vs_local_cpu": round(shard["kafka_memory_cpu_us"] / shard["local_cpu_us"], 3),
        "shard_kafka_redis_cpu_us_per_execution": round(shard["kafka_redis_cpu_us"], 2),
        "ingest_run_cpu_us_per_event": round(ingest_run, 2),
        "ingest_run_vs_raw_cpu": round(raw_cpu_us / ingest_run, 3),
        "ingest_live_events_per_s": round(count / ingest["seconds"]),
        "ingest_live_cpu_us_per_event": round(ingest["cpu_us"], 2),
        "ingest_live_vs_raw_cpu": round(raw_cpu_us / ingest["cpu_us"], 3),
        "ingest_live_metrics_cpu_us_per_event": round(ingest_metrics["cpu_us"], 2),
        "ingest_live_metrics_cpu_vs_plain": round(ingest_metrics["cpu_us"] / ingest["cpu_us"], 3),
        "ingest_live_metrics_scrapes": ingest_metrics["scrapes"],
        "cross_buckets": cross["buckets"],
        "cross_p50_ms": cross["p50_ms"],
        "cross_p99_ms": cross["p99_ms"],
        "one_worker_cpu_us_per_event": round(one * 1e6, 2),
        "two_workers_cpu_us_per_event": round(two * 1e6, 2),
        "two_vs_one_cpu": round(two / one, 3),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
