"""The history layout: a list in bucket order per series, appended to in the common case, with
a slow path for replaced and older buckets, time-range reads found server-side, and histories
written by earlier versions (a sorted set per series) read as they are and converted by their
next write. Expected values are written out by hand."""

from __future__ import annotations

import pytest
import redis

from qmtl.state import BucketWrite, SeriesKey, column_writer
from qmtl_state_redis import RedisStateBackend

pytestmark = pytest.mark.integration

DAY = 86400.0


def pairs(items: list[dict]) -> list[tuple[float, object]]:
    return [(item["timestamp"], item["value"]) for item in items]


def test_replaced_and_older_buckets_keep_the_history_in_time_order(
    backend: RedisStateBackend, pipeline_name: str, raw: redis.Redis
) -> None:
    key = SeriesKey(pipeline_name, "node", "1d")
    backend.write_many([BucketWrite(key, ts * DAY, ts, 10, None) for ts in (2, 4, 6, 8)])
    backend.write_many(
        [
            BucketWrite(key, 8 * DAY, "newest again", 10, None),  # replaces the newest in place
            BucketWrite(key, 4 * DAY, "four again", 10, None),  # replaces an older bucket
            BucketWrite(key, 5 * DAY, "five", 10, None),  # inserted between 4 and 6
            BucketWrite(key, 1 * DAY, "one", 10, None),  # inserted before everything
            BucketWrite(key, 9 * DAY, 9, 10, None),  # newer again: appended
        ]
    )
    assert pairs(backend.read(key)) == [
        (9 * DAY, 9),
        (8 * DAY, "newest again"),
        (6 * DAY, 6),
        (5 * DAY, "five"),
        (4 * DAY, "four again"),
        (2 * DAY, 2),
        (1 * DAY, "one"),
    ]
    assert raw.type(f"qmtl:{pipeline_name}:node:1d:history") == b"list"
    meta = backend.metadata(key)
    assert (meta["count"], meta["oldest"], meta["newest"]) == (7, 1 * DAY, 9 * DAY)


def test_time_ranges_of_a_long_kept_history(backend: RedisStateBackend, pipeline_name: str) -> None:
    """5,000 buckets kept whole (keep_history): ranges are found by binary search on the
    server; start is exclusive, end inclusive, count keeps the newest."""
    key = SeriesKey(pipeline_name, "node", "1m")
    stamps = [60.0 * i for i in range(1, 5001)]
    column_writer(backend)([key] * 5000, stamps, list(range(1, 5001)), [None] * 5000, [None] * 5000)
    assert pairs(backend.read(key, start_ts=60.0 * 2500, end_ts=60.0 * 2503)) == [
        (60.0 * 2503, 2503),
        (60.0 * 2502, 2502),
        (60.0 * 2501, 2501),
    ]
    # bounds between buckets, and a count smaller than the range
    assert pairs(backend.read(key, count=2, start_ts=60.0 * 10 + 1, end_ts=60.0 * 20 - 1)) == [
        (60.0 * 19, 19),
        (60.0 * 18, 18),
    ]
    assert pairs(backend.read(key, end_ts=60.0)) == [(60.0, 1)]
    assert backend.read(key, start_ts=60.0 * 5000) == []
    assert backend.read(key, end_ts=59.0) == []
    assert len(backend.read(key, count=None)) == 5000
    assert pairs(backend.read(key, count=1)) == [(60.0 * 5000, 5000)]


def test_a_history_written_by_earlier_versions_is_read_and_converted(
    backend: RedisStateBackend, pipeline_name: str, raw: redis.Redis
) -> None:
    """Before this layout a history was a sorted set (score = bucket end, member
    ``"<ts> <json>"``) next to the same metadata hash."""
    history = f"qmtl:{pipeline_name}:node:1d:history"
    meta = f"qmtl:{pipeline_name}:node:1d:meta"
    raw.zadd(history, {f"{ts * DAY!r} {ts * 10}".encode(): ts * DAY for ts in (1, 2, 3)})
    raw.hset(meta, mapping={"max_items": "5", "ttl": "864000", "last_update": "1700000000.5"})
    raw.expire(history, 864000)
    raw.expire(meta, 864000)
    key = SeriesKey(pipeline_name, "node", "1d")

    assert pairs(backend.read(key)) == [(3 * DAY, 30), (2 * DAY, 20), (1 * DAY, 10)]
    assert pairs(backend.read(key, count=1, start_ts=1 * DAY, end_ts=2 * DAY)) == [(2 * DAY, 20)]
    meta_read = backend.metadata(key)
    assert (meta_read["count"], meta_read["oldest"], meta_read["newest"]) == (3, DAY, 3 * DAY)
    assert (meta_read["max_items"], meta_read["ttl"]) == (5, 864000)

    backend.write(key, 4 * DAY, 40, max_items=5, ttl=864000)
    backend.write(key, 2 * DAY, "two", max_items=5, ttl=864000)
    assert raw.type(history) == b"list"
    assert pairs(backend.read(key)) == [(4 * DAY, 40), (3 * DAY, 30), (2 * DAY, "two"), (DAY, 10)]
    assert 863990 <= raw.ttl(history) <= 864000
