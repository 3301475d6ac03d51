"""RedisStateBackend against a real redis-server: every method, in SPEC §7 semantics, with
MemoryStateBackend (the reference implementation) as the oracle where behaviour is compared."""

from __future__ import annotations

import math
import random
import threading
import time

import pytest
import redis

from qmtl.errors import StateBackendError, ValueEncodeError
from qmtl.state import BucketWrite, MemoryStateBackend, SeriesKey, StateBackend
from qmtl_state_redis import RedisStateBackend

pytestmark = pytest.mark.integration

DAY = 86400.0


def values(items: list[dict]) -> list:
    return [item["value"] for item in items]


def test_implements_the_state_backend_protocol(backend: RedisStateBackend) -> None:
    assert isinstance(backend, StateBackend)
    assert backend.name == "redis"


def test_plain_values_round_trip(backend: RedisStateBackend, pipeline_name: str) -> None:
    key = SeriesKey(pipeline_name, "node", "1d")
    stored = [
        {"price": 101.25, "volume": 3, "tags": ["a", "b"], "ok": True, "none": None},
        [1, 2.5, "x", {"nested": {"deep": [None]}}],
        "한글 text",
        42,
        -0.125,
        False,
        None,
    ]
    for day, value in enumerate(stored, start=1):
        backend.write(key, day * DAY, value, max_items=100, ttl=None)
    assert values(backend.read(key)) == list(reversed(stored))


def test_nan_and_infinities_are_stored_not_nulled(
    backend: RedisStateBackend, pipeline_name: str
) -> None:
    # With JSON values (before qmtl.codec) each of these read back as None.
    key = SeriesKey(pipeline_name, "node", "1d")
    backend.write(key, DAY, {"px": math.nan, "hi": math.inf}, max_items=10, ttl=None)
    backend.write(key, 2 * DAY, [-math.inf, (math.nan,)], max_items=10, ttl=None)
    newest, oldest = values(backend.read(key))
    assert math.isnan(oldest["px"]) and oldest["hi"] == math.inf
    assert newest[0] == -math.inf and type(newest[1]) is tuple and math.isnan(newest[1][0])


def test_members_written_before_the_codec_are_still_read(
    backend: RedisStateBackend, pipeline_name: str, raw: redis.Redis
) -> None:
    # The JSON layout ("<ts> <json>", a space after the timestamp), as an earlier QMTL wrote it;
    # a JSON string holding ";" must not be mistaken for the codec layout ("<ts>;<bytes>").
    key = SeriesKey(pipeline_name, "node", "1d")
    history = f"qmtl:{pipeline_name}:node:1d:history"
    raw.zadd(history, {f'{DAY!r} {{"px": 1.5, "note": "a;b"}}': DAY})
    backend.write(key, 2 * DAY, (1, 2), max_items=10, ttl=None)
    assert values(backend.read(key)) == [(1, 2), {"px": 1.5, "note": "a;b"}]


def test_a_replayed_bucket_replaces_its_value(
    backend: RedisStateBackend, pipeline_name: str
) -> None:
    key = SeriesKey(pipeline_name, "node", "1d")
    backend.write(key, DAY, {"run": 1}, max_items=10, ttl=None)
    backend.write(key, DAY, {"run": 2}, max_items=10, ttl=None)
    assert backend.read(key) == [{"timestamp": DAY, "value": {"run": 2}}]
    assert backend.metadata(key)["count"] == 1


def test_equal_values_in_different_buckets_stay_separate(
    backend: RedisStateBackend, pipeline_name: str
) -> None:
    key = SeriesKey(pipeline_name, "node", "1h")
    for hour in range(1, 4):
        backend.write(key, hour * 3600.0, 7, max_items=10, ttl=None)
    assert backend.read(key) == [
        {"timestamp": 10800.0, "value": 7},
        {"timestamp": 7200.0, "value": 7},
        {"timestamp": 3600.0, "value": 7},
    ]


def test_reads_are_newest_first_whatever_the_write_order(
    backend: RedisStateBackend, pipeline_name: str
) -> None:
    key = SeriesKey(pipeline_name, "node", "1d")
    for day in (3, 1, 5, 2, 4):
        backend.write(key, day * DAY, day, max_items=10, ttl=None)
    assert values(backend.read(key)) == [5, 4, 3, 2, 1]


def test_trimming_keeps_the_newest_max_items(
    backend: RedisStateBackend, pipeline_name: str
) -> None:
    key = SeriesKey(pipeline_name, "node", "1m")
    for minute in range(5):
        backend.write(key, (minute + 1) * 60.0, minute, max_items=3, ttl=None)
    assert values(backend.read(key)) == [4, 3, 2]
    backend.write(key, 30.0, "too old", max_items=3, ttl=None)
    assert values(backend.read(key)) == [4, 3, 2]
    assert backend.metadata(key)["count"] == 3


def test_count_and_time_range(backend: RedisStateBackend, pipeline_name: str) -> None:
    key = SeriesKey(pipeline_name, "node", "1d")
    for day in range(1, 11):
        backend.write(key, day * DAY, day, max_items=100, ttl=None)
    assert values(backend.read(key, count=3)) == [10, 9, 8]
    assert values(backend.read(key, count=None)) == list(range(10, 0, -1))
    # start_ts exclusive, end_ts inclusive
    assert values(backend.read(key, start_ts=3 * DAY, end_ts=6 * DAY)) == [6, 5, 4]
    assert values(backend.read(key, count=2, start_ts=3 * DAY, end_ts=6 * DAY)) == [6, 5]
    assert values(backend.read(key, start_ts=2.5 * DAY)) == list(range(10, 2, -1))
    assert values(backend.read(key, end_ts=1.5 * DAY)) == [1]
    assert backend.read(key, start_ts=10 * DAY) == []
    assert backend.read(key, count=0) == []
    with pytest.raises(StateBackendError, match="count must be >= 0"):
        backend.read(key, count=-1)


def test_missing_series_reads_empty(backend: RedisStateBackend, pipeline_name: str) -> None:
    key = SeriesKey(pipeline_name, "never-written", "1d")
    assert backend.read(key) == []
    assert backend.metadata(key) == MemoryStateBackend().metadata(key)


def test_metadata(backend: RedisStateBackend, pipeline_name: str) -> None:
    key = SeriesKey(pipeline_name, "node", "1d")
    before = time.time()
    for day in range(1, 9):
        backend.write(key, day * DAY, day, max_items=7, ttl=604800)
    meta = backend.metadata(key)
    assert meta["count"] == 7
    assert meta["max_items"] == 7
    assert meta["ttl"] == 604800
    assert before <= meta["last_update"] <= time.time()
    assert meta["oldest"] == 2 * DAY
    assert meta["newest"] == 8 * DAY


def test_ttl_expires_an_idle_series(backend: RedisStateBackend, pipeline_name: str) -> None:
    short = SeriesKey(pipeline_name, "short", "1s")
    kept = SeriesKey(pipeline_name, "kept", "1s")
    backend.write(short, 1.0, "expires", max_items=10, ttl=1)
    backend.write(kept, 1.0, "not_expired", max_items=10, ttl=None)
    assert values(backend.read(short)) == ["expires"]
    time.sleep(1.2)
    assert backend.read(short) == []
    assert backend.metadata(short)["count"] == 0
    assert values(backend.read(kept)) == ["not_expired"]


def test_ttl_zero_means_gone_at_once(backend: RedisStateBackend, pipeline_name: str) -> None:
    key = SeriesKey(pipeline_name, "node", "1s")
    backend.write(key, 1.0, "x", max_items=10, ttl=0)
    assert backend.read(key) == []


def test_every_write_refreshes_the_ttl(
    backend: RedisStateBackend, pipeline_name: str, raw: redis.Redis
) -> None:
    key = SeriesKey(pipeline_name, "node", "1s")
    backend.write(key, 1.0, 1, max_items=10, ttl=2)
    time.sleep(1.2)
    backend.write(key, 2.0, 2, max_items=10, ttl=2)
    time.sleep(1.2)
    assert values(backend.read(key)) == [2, 1]
    history = f"qmtl:{pipeline_name}:node:1s:history"
    assert 0 < raw.pttl(history) <= 2000
    assert 0 < raw.pttl(f"qmtl:{pipeline_name}:node:1s:meta") <= 2000
    backend.write(key, 3.0, 3, max_items=10, ttl=None)
    assert raw.ttl(history) == -1  # ttl=None: never expires


def test_update_ttl(backend: RedisStateBackend, pipeline_name: str, raw: redis.Redis) -> None:
    key = SeriesKey(pipeline_name, "node", "1d")
    backend.write(key, DAY, 1, max_items=10, ttl=86400)
    assert backend.update_ttl(key, 7200) is True
    assert 7190 <= raw.ttl(f"qmtl:{pipeline_name}:node:1d:history") <= 7200
    assert 7190 <= raw.ttl(f"qmtl:{pipeline_name}:node:1d:meta") <= 7200
    assert backend.metadata(key)["ttl"] == 7200
    assert backend.update_ttl(key, None) is True
    assert raw.ttl(f"qmtl:{pipeline_name}:node:1d:history") == -1
    assert backend.metadata(key)["ttl"] is None
    assert backend.update_ttl(SeriesKey(pipeline_name, "absent", "1d"), 60) is False


def test_keys_live_under_the_pipeline_prefix(
    backend: RedisStateBackend, pipeline_name: str, raw: redis.Redis
) -> None:
    backend.write(SeriesKey(pipeline_name, "n1", "1d"), DAY, 1, max_items=10, ttl=None)
    backend.write(SeriesKey(pipeline_name, "n1", "1h"), 3600.0, 1, max_items=10, ttl=None)
    keys = sorted(k.decode() for k in raw.scan_iter(match=f"qmtl:{pipeline_name}:*"))
    assert keys == [
        f"qmtl:{pipeline_name}:n1:1d:history",
        f"qmtl:{pipeline_name}:n1:1d:meta",
        f"qmtl:{pipeline_name}:n1:1h:history",
        f"qmtl:{pipeline_name}:n1:1h:meta",
    ]


def test_delete_is_scoped(backend: RedisStateBackend, pipeline_name: str, raw: redis.Redis) -> None:
    other = f"{pipeline_name}:other"  # a name that starts like ours, colon included
    similar = f"{pipeline_name}2"
    for pipeline in (pipeline_name, other, similar):
        for node in ("a", "b"):
            for interval in ("1d", "1h"):
                key = SeriesKey(pipeline, node, interval)
                backend.write(key, DAY, f"{pipeline}/{node}/{interval}", max_items=10, ttl=None)
    raw.set(f"unrelated:{pipeline_name}", "keep me")
    raw.set(f"qmtl:{pipeline_name}:not-ours", "keep me too")
    stats = raw.info("commandstats")
    keys_calls = stats.get("cmdstat_keys", {}).get("calls", 0)
    try:
        assert backend.delete(pipeline_name, "a", "1d") == 1
        assert backend.read(SeriesKey(pipeline_name, "a", "1d")) == []
        assert values(backend.read(SeriesKey(pipeline_name, "a", "1h"))) == [
            f"{pipeline_name}/a/1h"
        ]
        assert backend.delete(pipeline_name, "a") == 1
        assert backend.read(SeriesKey(pipeline_name, "a", "1h")) == []
        assert backend.delete(pipeline_name, interval="1h") == 1
        assert backend.read(SeriesKey(pipeline_name, "b", "1h")) == []
        assert len(backend.read(SeriesKey(pipeline_name, "b", "1d"))) == 1
        assert backend.delete(pipeline_name) == 1
        assert backend.read(SeriesKey(pipeline_name, "b", "1d")) == []
        assert backend.delete(pipeline_name) == 0
        for pipeline in (other, similar):
            for node in ("a", "b"):
                for interval in ("1d", "1h"):
                    assert len(backend.read(SeriesKey(pipeline, node, interval))) == 1
        assert raw.get(f"unrelated:{pipeline_name}") == b"keep me"
        assert raw.get(f"qmtl:{pipeline_name}:not-ours") == b"keep me too"
        after = raw.info("commandstats")
        assert after.get("cmdstat_keys", {}).get("calls", 0) == keys_calls
        assert "cmdstat_flushdb" not in after or after["cmdstat_flushdb"] == stats.get(
            "cmdstat_flushdb"
        )
    finally:
        backend.delete(other)
        backend.delete(similar)
        raw.delete(f"unrelated:{pipeline_name}", f"qmtl:{pipeline_name}:not-ours")


def test_write_many_batches_into_few_script_calls(
    redis_url: str, pipeline_name: str, raw: redis.Redis
) -> None:
    store = RedisStateBackend(redis_url, write_batch=1000)
    try:
        writes = [
            BucketWrite(
                SeriesKey(pipeline_name, f"n{i % 10}", "1m"), 60.0 * (i // 10 + 1), i, 50, 3600
            )
            for i in range(2500)
        ]
        store.ping()
        before = raw.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        store.write_many(writes)
        after = raw.info("commandstats")["cmdstat_evalsha"]["calls"]
        assert after - before == 3  # 1000 + 1000 + 500 writes
        for node in range(10):
            history = store.read(SeriesKey(pipeline_name, f"n{node}", "1m"))
            assert len(history) == 50
            assert history[0] == {"timestamp": 15000.0, "value": 2490 + node}
    finally:
        store.delete(pipeline_name)
        store.close()


def test_write_many_applies_writes_in_order(backend: RedisStateBackend, pipeline_name: str) -> None:
    key = SeriesKey(pipeline_name, "node", "1d")
    backend.write_many(
        [
            BucketWrite(key, DAY, "first", 10, None),
            BucketWrite(key, 2 * DAY, "other", 10, None),
            BucketWrite(key, DAY, "second", 10, None),
        ]
    )
    assert values(backend.read(key)) == ["other", "second"]


def test_a_value_the_codec_refuses_is_refused_and_nothing_is_written(
    backend: RedisStateBackend, pipeline_name: str
) -> None:
    key = SeriesKey(pipeline_name, "prices", "1d")
    with pytest.raises(ValueEncodeError, match=r"value: object; return its data"):
        backend.write_many(
            [
                BucketWrite(key, DAY, 1.0, 10, None),
                BucketWrite(key, 2 * DAY, object(), 10, None),
            ]
        )
    assert backend.read(key) == []
    with pytest.raises(StateBackendError, match="not a finite number"):
        backend.write(key, math.nan, 1, max_items=10, ttl=None)


def test_foreign_data_under_our_key_is_an_error(
    backend: RedisStateBackend, pipeline_name: str, raw: redis.Redis
) -> None:
    key = SeriesKey(pipeline_name, "node", "1d")
    raw.set(f"qmtl:{pipeline_name}:node:1d:history", "someone else's string")
    with pytest.raises(StateBackendError, match="WRONGTYPE"):
        backend.read(key)
    with pytest.raises(StateBackendError, match="WRONGTYPE"):
        backend.write(key, DAY, 1, max_items=10, ttl=None)


def test_close_then_use_reconnects(backend: RedisStateBackend, pipeline_name: str) -> None:
    key = SeriesKey(pipeline_name, "node", "1d")
    backend.write(key, DAY, 1, max_items=10, ttl=None)
    backend.close()
    assert values(backend.read(key)) == [1]


def test_concurrent_writers_lose_nothing(backend: RedisStateBackend, pipeline_name: str) -> None:
    def work(node: str) -> None:
        for minute in range(200):
            backend.write(
                SeriesKey(pipeline_name, node, "1m"),
                60.0 * (minute + 1),
                minute,
                max_items=500,
                ttl=None,
            )

    threads = [threading.Thread(target=work, args=(f"n{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(4):
        assert values(backend.read(SeriesKey(pipeline_name, f"n{i}", "1m"))) == list(
            range(199, -1, -1)
        )


def test_deleting_and_writing_again_is_not_a_gap(
    backend: RedisStateBackend, redis_url: str, pipeline_name: str, raw: redis.Redis
) -> None:
    """Clearing history (here, from another client) and running again just starts afresh;
    only a series lost in a server restart raises (see test_restart.py)."""
    key = SeriesKey(pipeline_name, "node", "1d")
    backend.write(key, DAY, 1, max_items=10, ttl=3600)
    raw.delete(f"qmtl:{pipeline_name}:node:1d:history", f"qmtl:{pipeline_name}:node:1d:meta")
    backend.write(key, 2 * DAY, 2, max_items=10, ttl=3600)
    other = RedisStateBackend(redis_url)
    try:
        assert other.delete(pipeline_name) == 1
    finally:
        other.close()
    backend.write(key, 3 * DAY, 3, max_items=10, ttl=3600)
    assert values(backend.read(key)) == [3]


def test_behaves_like_the_memory_backend(backend: RedisStateBackend, pipeline_name: str) -> None:
    """Random writes (replays, out of order, changing max_items, batches) and reads give the
    same results on Redis as on the reference MemoryStateBackend."""
    rng = random.Random(20261126)
    memory = MemoryStateBackend()
    keys = [SeriesKey(pipeline_name, node, interval) for node in "abc" for interval in ("1m", "1h")]
    for _ in range(60):
        batch = [
            BucketWrite(
                rng.choice(keys),
                float(rng.randint(1, 40) * 60),
                rng.choice([rng.random(), rng.randint(-5, 5), {"x": rng.randint(0, 3)}, None]),
                rng.choice([3, 5, 8, 100]),
                None,
            )
            for _ in range(rng.randint(1, 12))
        ]
        if rng.random() < 0.5:
            backend.write_many(batch)
            memory.write_many(batch)
        else:
            for write in batch:
                backend.write(
                    write.key,
                    write.timestamp,
                    write.value,
                    max_items=write.max_items,
                    ttl=write.ttl,
                )
                memory.write(
                    write.key,
                    write.timestamp,
                    write.value,
                    max_items=write.max_items,
                    ttl=write.ttl,
                )
        key = rng.choice(keys)
        count = rng.choice([None, 0, 1, 3, 10])
        start = rng.choice([None, float(rng.randint(0, 40) * 60), rng.random() * 2400])
        end = rng.choice([None, float(rng.randint(0, 40) * 60), rng.random() * 2400])
        assert backend.read(key, count=count, start_ts=start, end_ts=end) == memory.read(
            key, count=count, start_ts=start, end_ts=end
        )
    for key in keys:
        assert backend.read(key) == memory.read(key)
        ours, reference = backend.metadata(key), memory.metadata(key)
        ours.pop("last_update")
        reference.pop("last_update")
        assert ours == reference
    assert backend.delete(pipeline_name, "a") == memory.delete(pipeline_name, "a")
    assert backend.delete(pipeline_name) == memory.delete(pipeline_name)


def test_foreign_keys_are_refused_before_anything_is_written(
    backend: RedisStateBackend, pipeline_name: str, raw: redis.Redis
) -> None:
    key = SeriesKey(pipeline_name, "node", "1d")
    history, meta = f"qmtl:{pipeline_name}:node:1d:history", f"qmtl:{pipeline_name}:node:1d:meta"
    raw.set(meta, "someone else's string")
    with pytest.raises(StateBackendError, match="not a hash"):
        backend.write(key, DAY, 1, max_items=10, ttl=60)
    assert raw.exists(history) == 0  # nothing half-written
    assert raw.get(meta) == b"someone else's string"
    raw.delete(meta)
    backend.write(key, DAY, 1, max_items=10, ttl=60)
    raw.hset(meta, mapping={"max_items": "lots"})
    with pytest.raises(StateBackendError, match="did not write"):
        backend.metadata(key)
