"""Benchmark ``redis_state``: bucket writes through RedisStateBackend vs raw redis-py.

N bucket writes (default 100,000; ``QMTL_BENCH_REDIS_WRITES``) spread over 100 series of a
1-minute interval, 1,000 buckets per series with ``max_items=100`` so every series is trimmed
continuously, flushed in batches of 1,000 writes (what an engine hands ``write_many`` per poll).
Measured side by side on the same loopback Redis, same values, same batches, best of 3 rounds
run interleaved (every figure is its job's best round):

- ``qmtl``: ``RedisStateBackend.write_many``: codec encoding, bucket replace, trim, metadata and
  TTL refresh, all server-side, one round trip per batch;
- ``raw_zadd``: a redis-py pipeline with one ``ZADD`` per write (the floor: no replace, no trim,
  no TTL), one round trip per batch;
- ``raw_zadd_trim``: the same pipeline with ``ZADD`` + ``ZREMRANGEBYRANK`` + ``EXPIRE`` per write,
  i.e. doing the backend's job by hand;
- ``single``: ``RedisStateBackend.write`` one bucket at a time (round-trip bound), for scale.

Server cost per bucket write, side by side: ``*_commandstats_us_per_write`` is the time Redis
spent inside the job's commands (``INFO commandstats``, reset before each job: ``EVALSHA`` for
QMTL, which includes everything its script does; the commands themselves for the raw loops) per
write; ``*_server_cpu_us_per_write`` is the Redis process's CPU time (``INFO cpu``, which also
counts reading requests and writing replies). Goal (SPEC §10): QMTL's server cost per write, TTL,
trim and metadata included, at most that of a bare ``ZADD`` (``server_ratio_vs_raw_zadd`` <= 1).
Throughput goals: ``qmtl_writes_per_s`` >= 100,000 and ``ratio_vs_raw_zadd`` >= 0.7. Larger
batches (``QMTL_BENCH_REDIS_BATCH``, e.g. 10000) amortise the per-series work of each call.
Uses ``QMTL_TEST_REDIS_URL``; without it a throwaway redis-server is started (scripts/_redis.py).
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis

from qmtl.state import BucketWrite, SeriesKey
from qmtl_state_redis import RedisStateBackend

SERIES = 100
MAX_ITEMS = 100
BATCH = int(os.environ.get("QMTL_BENCH_REDIS_BATCH", "1000"))
TTL = 6000
ROUNDS = 3
SINGLE_WRITES = 5000


def _launcher() -> Any:
    path = Path(__file__).resolve().parents[1] / "scripts" / "_redis.py"
    spec = importlib.util.spec_from_file_location("qmtl_scripts_redis", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _workload(total: int, pipeline: str) -> list[list[BucketWrite]]:
    keys = [SeriesKey(pipeline, f"node{i:03d}", "1m") for i in range(SERIES)]
    writes = [
        BucketWrite(
            keys[i % SERIES],
            60.0 * (i // SERIES + 1),
            {"px": 100.0 + (i % 97) * 0.01, "qty": i % 13, "i": i},
            MAX_ITEMS,
            TTL,
        )
        for i in range(total)
    ]
    return [writes[at : at + BATCH] for at in range(0, total, BATCH)]


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _write_batches(backend: RedisStateBackend, batches: list[list[BucketWrite]]) -> None:
    for batch in batches:
        backend.write_many(batch)


def _write_singly(backend: RedisStateBackend, writes: list[BucketWrite]) -> None:
    for w in writes:
        backend.write(w.key, w.timestamp, w.value, max_items=w.max_items, ttl=w.ttl)


def _raw(client: redis.Redis, batches: list[list[BucketWrite]], prefix: str, trim: bool) -> None:
    dumps = orjson.dumps
    for batch in batches:
        pipe = client.pipeline(transaction=False)
        for key, ts, value, max_items, _ttl in batch:
            name = f"{prefix}{key.node_id}"
            pipe.zadd(name, {b"%r %b" % (ts, dumps(value)): ts})
            if trim and max_items is not None:
                pipe.zremrangebyrank(name, 0, -max_items - 1)
                pipe.expire(name, TTL)  # every write of the workload has ttl=TTL
        pipe.execute()


def _clear(client: redis.Redis, pattern: str) -> None:
    names = list(client.scan_iter(match=pattern, count=1000))
    for at in range(0, len(names), 500):
        client.unlink(*names[at : at + 500])


def _verify(backend: RedisStateBackend, batches: list[list[BucketWrite]]) -> None:
    """The backend really did its job: every series trimmed to its newest MAX_ITEMS."""
    last = batches[-1][-1]
    history = backend.read(last.key)
    assert len(history) == MAX_ITEMS, len(history)
    assert history[0] == {"timestamp": last.timestamp, "value": last.value}
    assert backend.metadata(last.key)["count"] == MAX_ITEMS


def _server_usec(client: redis.Redis) -> float:
    """CPU microseconds the Redis process has used so far (user + system; unlike
    commandstats' wall time, not inflated when the machine is busy)."""
    cpu = client.info("cpu")
    return (float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])) * 1e6


#: The top-level commands each job sends (their commandstats are its server time).
_COMMANDS = {
    "raw_zadd": ("zadd",),
    "qmtl": ("evalsha",),
    "raw_zadd_trim": ("zadd", "zremrangebyrank", "expire"),
}


def _command_usec(client: redis.Redis, commands: tuple[str, ...]) -> float:
    stats = client.info("commandstats")
    return sum(float(stats.get(f"cmdstat_{name}", {}).get("usec", 0)) for name in commands)


def _measure(url: str, total: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    pipeline = f"bench-{tag}"
    raw_prefix = f"bench-raw-{tag}:"
    batches = _workload(total, pipeline)
    backend = RedisStateBackend(url)
    client = redis.Redis.from_url(url)
    best: dict[str, float] = {}
    server_usec: dict[str, float] = {}
    command_usec: dict[str, float] = {}
    try:
        backend.ping()
        for _ in range(ROUNDS):
            for name, job in (
                ("raw_zadd", lambda: _raw(client, batches, raw_prefix, trim=False)),
                ("qmtl", lambda: _write_batches(backend, batches)),
                ("raw_zadd_trim", lambda: _raw(client, batches, raw_prefix, trim=True)),
            ):
                backend.delete(pipeline)
                _clear(client, f"{raw_prefix}*")
                client.config_resetstat()
                before = _server_usec(client)
                elapsed = _timed(job)
                used = _server_usec(client) - before
                server_usec[name] = min(server_usec.get(name, math.inf), used)
                usec = _command_usec(client, _COMMANDS[name])
                command_usec[name] = min(command_usec.get(name, math.inf), usec)
                best[name] = min(best.get(name, float("inf")), elapsed)
                if name == "qmtl":
                    _verify(backend, batches)
        backend.delete(pipeline)
        single = [write for batch in batches for write in batch][:SINGLE_WRITES]
        single_s = _timed(lambda: _write_singly(backend, single))
    finally:
        backend.delete(pipeline)
        _clear(client, f"{raw_prefix}*")
        backend.close()
        client.close()
    rate = {name: total / seconds for name, seconds in best.items()}
    return {
        "writes": total,
        "series": SERIES,
        "max_items": MAX_ITEMS,
        "batch": BATCH,
        "qmtl_writes_per_s": round(rate["qmtl"]),
        "raw_zadd_writes_per_s": round(rate["raw_zadd"]),
        "raw_zadd_trim_writes_per_s": round(rate["raw_zadd_trim"]),
        "ratio_vs_raw_zadd": round(rate["qmtl"] / rate["raw_zadd"], 3),
        "ratio_vs_raw_zadd_trim": round(rate["qmtl"] / rate["raw_zadd_trim"], 3),
        "single_write_per_s": round(len(single) / single_s),
        # Redis time per write (INFO commandstats; INFO cpu), to tell server cost from client's.
        **{
            f"{name}_commandstats_us_per_write": round(usec / total, 2)
            for name, usec in command_usec.items()
        },
        **{
            f"{name}_server_cpu_us_per_write": round(usec / total, 2)
            for name, usec in server_usec.items()
        },
        "server_ratio_vs_raw_zadd": round(command_usec["qmtl"] / command_usec["raw_zadd"], 2),
        "server_cpu_ratio_vs_raw_zadd": round(server_usec["qmtl"] / server_usec["raw_zadd"], 2),
        "goal_server_ratio": 1.0,
        "goal_writes_per_s": 100_000,
        "goal_ratio_vs_raw_zadd": 0.7,
    }


def run() -> dict[str, Any]:
    total = int(os.environ.get("QMTL_BENCH_REDIS_WRITES", "100000"))
    url = os.environ.get("QMTL_TEST_REDIS_URL")
    if url:
        return _measure(url, total)
    with tempfile.TemporaryDirectory(prefix="qmtl-bench-redis-") as workdir:
        server = _launcher().start(Path(workdir))
        try:
            return {**_measure(server.url, total), "server": "throwaway redis-server"}
        finally:
            server.stop()


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
