"""Memory stays flat on long streams: history is bounded by ``max_history`` and pending state by
the watermark, on the local engine (one event at a time, and columnar) and on the Kafka engine.

A generator source emits one event per second of event time (so the stream holds many
thousands of one-minute buckets per node) through ``src -> double -> label``. The process's
resident set size (``VmRSS``) is sampled at 10 %, 50 % and 90 % of the outputs. The figures:

- ``*_rss_growth_10_to_90pct_mb``: growth from 10 % to 90 % of the stream (the "after run"
  figure is taken once the engine closed its clients);
- ``*_history_max``: the most buckets any series holds at the end (must be at most
  ``MAX_HISTORY``);
- ``*_growth_per_million_events_mb``: the growth scaled to a million events (what an unbounded
  structure would show as a steady climb).

Sizes: ``QMTL_BENCH_LOCAL_EVENTS`` (default 2,000,000) and ``QMTL_BENCH_KAFKA_EVENTS``
(default 1,000,000; the Kafka run needs ``QMTL_TEST_KAFKA_BOOTSTRAP`` and ``QMTL_TEST_REDIS_URL``,
otherwise it is skipped and says so).
"""

from __future__ import annotations

import gc
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

from qmtl.node import Node, SourceNode
from qmtl.pipeline import Pipeline
from qmtl.state import MemoryStateBackend

MAX_HISTORY = 100
BASE = 1_700_000_000


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _events(count: int) -> Iterator[tuple[float, float]]:
    for i in range(count):
        yield BASE + i, float(i % 1000)


def _pipeline(name: str, count: int) -> Pipeline:
    minute = {"1m": {"period": 60, "max_history": MAX_HISTORY}}
    pipeline = Pipeline(name)
    pipeline.add_node(SourceNode("src", source=lambda: _events(count), interval_settings=minute))
    pipeline.add_node(
        Node("double", fn=lambda src: src * 2, upstreams=["src"], interval_settings=minute)
    )
    pipeline.add_node(
        Node(
            "label",
            fn=lambda double: f"v={double:.0f}",
            upstreams=["double"],
            interval_settings=minute,
        )
    )
    return pipeline


class _Sampler:
    """Counts outputs and samples RSS at 10 %, 50 % and 90 % of the expected outputs."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.marks = {
            max(1, expected // 10): "10",
            max(1, expected // 2): "50",
            max(1, expected * 9 // 10): "90",
        }
        self.seen = 0
        self.rss: dict[str, float] = {}

    def __call__(self, _event: Any) -> None:
        self.seen += 1
        mark = self.marks.get(self.seen)
        if mark is not None:
            self.rss[mark] = _rss_mb()


def _measure(prefix: str, pipeline: Pipeline, count: int, state: Any, **run: Any) -> dict[str, Any]:
    buckets = count // 60 + 1
    sampler = _Sampler(buckets * 3)
    gc.collect()
    started = time.perf_counter()
    pipeline.run(state=state, on_output=sampler, **run)
    seconds = time.perf_counter() - started
    sampler.rss["100"] = _rss_mb()
    plan = pipeline.build()
    history_max = max(state.metadata(node.spec("1m").key)["count"] for node in plan.nodes)
    growth = sampler.rss["90"] - sampler.rss["10"]
    return {
        f"{prefix}_events": count,
        f"{prefix}_buckets_out": sampler.seen,
        f"{prefix}_events_per_s": round(count / seconds),
        f"{prefix}_rss_10pct_mb": round(sampler.rss.get("10", float("nan")), 1),
        f"{prefix}_rss_50pct_mb": round(sampler.rss.get("50", float("nan")), 1),
        f"{prefix}_rss_90pct_mb": round(sampler.rss["90"], 1),
        f"{prefix}_rss_after_run_mb": round(sampler.rss["100"], 1),
        f"{prefix}_rss_growth_10_to_90pct_mb": round(growth, 1),
        f"{prefix}_growth_per_million_events_mb": round(growth / (count * 0.8) * 1e6, 2),
        f"{prefix}_history_max": history_max,
        f"{prefix}_history_bounded": history_max <= MAX_HISTORY,
    }


def run() -> dict[str, Any]:
    local_events = int(os.environ.get("QMTL_BENCH_LOCAL_EVENTS", "2000000"))
    kafka_events = int(os.environ.get("QMTL_BENCH_KAFKA_EVENTS", "1000000"))
    figures = _measure(
        "local",
        _pipeline("bounded-local", local_events),
        local_events,
        MemoryStateBackend(),
        engine="local",
    )
    figures.update(  # the columnar path: a chunk of events at a time, memory as flat
        _measure(
            "columnar",
            _pipeline("bounded-columnar", local_events),
            local_events,
            MemoryStateBackend(),
            engine="local",
            columnar=True,
        )
    )
    bootstrap = os.environ.get("QMTL_TEST_KAFKA_BOOTSTRAP")
    redis_url = os.environ.get("QMTL_TEST_REDIS_URL")
    if not (bootstrap and redis_url):
        figures["kafka_skipped"] = "QMTL_TEST_KAFKA_BOOTSTRAP / QMTL_TEST_REDIS_URL unset"
        return figures
    from qmtl_state_redis import RedisStateBackend

    name = f"bounded-kafka-{uuid.uuid4().hex[:6]}"
    state = RedisStateBackend(redis_url)
    try:
        figures.update(
            _measure(
                "kafka",
                _pipeline(name, kafka_events),
                kafka_events,
                state,
                engine="kafka",
                engine_options={
                    "bootstrap_servers": bootstrap,
                    "connect_timeout_s": 10,
                    "run_timeout_s": 1200,
                },
            )
        )
    finally:
        state.delete(name)
        state.close()
    return figures


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
