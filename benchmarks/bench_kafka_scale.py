"""Benchmark ``kafka_scale``: the Kafka engine on strategies of many symbols (SPEC §10).

A strategy of N symbols x 3 nodes (price source -> 2-bucket return -> sign), 60 one-minute
events per symbol, default settings (in-process workers, memory state), side by side with the
local engine in one run:

- ``p600_*``: 200 symbols (600 nodes): wall time against the local engine's (target: within
  3x the local engine's time plus 20 s), outputs equal to the local engine's, the most OS
  threads the process had during the run (target: <= 64);
- ``scale_*``: the same at 30, 600 and 3,000 nodes, each in a fresh process: its most OS
  threads (target: the same at every size, give or take the one short-lived thread librdkafka
  may hold at the moment of a sample) and its peak RSS (``VmHWM``); ``scale_kb_per_node`` is
  the memory added per node from the smallest to the largest (target: <= 50 KB).

Needs ``QMTL_TEST_KAFKA_BOOTSTRAP`` (``make bench`` starts a broker). ``QMTL_BENCH_SCALE_SYMBOLS``
(default ``10,200,1000``) chooses the sizes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

from qmtl.node import Node, SourceNode
from qmtl.pipeline import Pipeline
from qmtl.state import MemoryStateBackend

BASE = 1_700_006_400
MINUTE = {"1m": {"interval": "1m", "period": 60, "max_history": 1000}}


def ret(px: list[float]) -> float:
    return round(px[-1] / px[0] - 1, 8)


def sign(r: float) -> int:
    return (r > 0) - (r < 0)


def symbols(count: int, events: int = 60, name: str = "bench-symbols") -> Pipeline:
    """``count`` symbols x (price -> 2-bucket return -> sign)."""
    p = Pipeline(name)
    for i in range(count):
        prices = [
            (BASE + 60 * j + 1, 100.0 + i + ((j * (i + 7)) % 17) * 0.25) for j in range(events)
        ]
        p.add_node(SourceNode(f"s{i}_px", source=prices, interval_settings=MINUTE))
        p.add_node(
            Node(f"s{i}_ret", fn=ret, upstreams=[f"s{i}_px"], window=2, interval_settings=MINUTE)
        )
        p.add_node(Node(f"s{i}_sig", fn=sign, upstreams=[f"s{i}_ret"], interval_settings=MINUTE))
    return p


def os_threads() -> int:
    """The process's OS threads (librdkafka's included), from /proc."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise RuntimeError("no Threads: line in /proc/self/status")


class _MostThreads:
    """Samples the OS thread count every 20 ms while active."""

    def __init__(self) -> None:
        self.most = os_threads()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.most = max(self.most, os_threads())
            time.sleep(0.02)

    def __enter__(self) -> _MostThreads:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _kafka(bootstrap: str) -> Any:
    from qmtl_engine_kafka.engine import KafkaEngine

    return KafkaEngine(bootstrap_servers=bootstrap)


def measure(count: int) -> dict[str, Any]:
    """One Kafka run of ``count`` symbols in this process: threads, RSS, seconds."""
    pipeline = symbols(count, name=f"bench-scale-{count}-{os.getpid()}")
    engine = _kafka(os.environ["QMTL_TEST_KAFKA_BOOTSTRAP"])
    with _MostThreads() as threads:
        began = time.perf_counter()
        pipeline.run(engine=engine, state=MemoryStateBackend())
        seconds = time.perf_counter() - began
    return {"nodes": 3 * count, "threads": threads.most, "rss_kb": _peak_kb(), "seconds": seconds}


def _peak_kb() -> int:
    """This process's peak RSS (``VmHWM``; ``ru_maxrss`` would carry the parent's over exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM: line in /proc/self/status")


def _p600(bootstrap: str) -> dict[str, Any]:
    pipeline = symbols(200, name=f"bench-p600-{os.getpid()}")
    local: list[Any] = []
    began = time.perf_counter()
    pipeline.run(local.append, engine="local", state=MemoryStateBackend())
    local_s = time.perf_counter() - began
    kafka: list[Any] = []
    with _MostThreads() as threads:
        began = time.perf_counter()
        pipeline.run(kafka.append, engine=_kafka(bootstrap), state=MemoryStateBackend())
        kafka_s = time.perf_counter() - began

    def key(event: Any) -> tuple[str, int]:
        return event.node, event.bucket

    return {
        "p600_local_s": round(local_s, 2),
        "p600_kafka_s": round(kafka_s, 2),
        "p600_target_s": round(3 * local_s + 20, 2),
        "p600_within_target": kafka_s <= 3 * local_s + 20,
        "p600_outputs_equal": sorted(local, key=key) == sorted(kafka, key=key),
        "p600_outputs": len(kafka),
        "p600_threads_max": threads.most,
    }


def run() -> dict[str, Any]:
    bootstrap = os.environ.get("QMTL_TEST_KAFKA_BOOTSTRAP")
    if not bootstrap:
        raise RuntimeError("QMTL_TEST_KAFKA_BOOTSTRAP is unset: run through `make bench`")
    figures: dict[str, Any] = _p600(bootstrap)
    sizes = [int(s) for s in os.environ.get("QMTL_BENCH_SCALE_SYMBOLS", "10,200,1000").split(",")]
    measured = []
    for count in sizes:
        done = subprocess.run(
            [sys.executable, __file__, "--measure", str(count)],
            capture_output=True,
            text=True,
            check=True,
            timeout=1200,
        )
        measured.append(json.loads(done.stdout.strip().splitlines()[-1]))
    for item in measured:
        figures[f"scale_{item['nodes']}_threads"] = item["threads"]
        figures[f"scale_{item['nodes']}_rss_mb"] = round(item["rss_kb"] / 1024, 1)
        figures[f"scale_{item['nodes']}_s"] = round(item["seconds"], 2)
    small, large = measured[0], measured[-1]
    threads = [item["threads"] for item in measured]
    # librdkafka may hold one short-lived thread more at the moment of a sample
    figures["scale_threads_constant"] = max(threads) - min(threads) <= 1
    figures["scale_kb_per_node"] = round(
        (large["rss_kb"] - small["rss_kb"]) / (large["nodes"] - small["nodes"]), 2
    )
    return figures


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--measure":
        print(json.dumps(measure(int(sys.argv[2]))))
    else:
        print(json.dumps(run(), indent=2))
