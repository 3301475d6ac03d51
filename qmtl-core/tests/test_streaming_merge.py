"""The multi-partition merge rule (qmtl.streaming.MergedSource), checked by hand: one source fed
by several ordered origins (a Kafka input topic's partitions)."""

from __future__ import annotations

import json
from typing import Any

from qmtl.streaming import END, MergedSource

MINUTE = 60


def _buckets(closed: Any) -> list[tuple[int, Any]]:
    return [pair for _k, buckets, _through in closed or () for pair in buckets]


def test_a_bucket_waits_for_every_origin_and_takes_the_latest_event() -> None:
    source = MergedSource([MINUTE], None, ["t/0", "t/1"])
    assert _buckets(source.on_event("t/0", 605.0, "p0-late")) == []  # bucket 10
    assert _buckets(source.on_event("t/1", 601.0, "p1-early")) == []
    # t/0 moves to bucket 11: final through 10 in t/0, but t/1 has not passed bucket 10 yet
    assert _buckets(source.on_event("t/0", 661.0, "p0-next")) == []
    # t/1 passes bucket 10 too: 10 is final in both; its last event by ts is t/0's (605 > 601)
    assert _buckets(source.on_event("t/1", 662.0, "p1-next")) == [(10, "p0-late")]
    assert source.final == [10]


def test_a_spread_source_waits_for_origins_that_have_said_nothing_yet() -> None:
    # events spread over the partitions (round robin): t/1 may still hold bucket 0's events
    source = MergedSource([MINUTE], None, ["t/0", "t/1"])
    source.on_event("t/0", 10.0, "first")
    assert _buckets(source.on_event("t/0", 200.0, "later")) == []
    assert _buckets(source.on_event("t/1", 30.0, "from-t1")) == []
    # t/1's bucket 0 event is the last by ts: it wins when t/1 passes bucket 0
    assert _buckets(source.on_event("t/1", 130.0, "x")) == [(0, "from-t1")]


def test_before_any_event_every_known_origin_counts_so_nothing_closes_early() -> None:
    source = MergedSource([MINUTE], None, ["t/0", "t/1", "t/2"], keyed=True)
    # a watermark from one origin alone closes nothing: the others may still hold events
    assert source.on_watermark("t/0", 900.0) == []
    assert source.final == [-float("inf")]


def test_equal_timestamps_go_to_the_later_origin() -> None:
    source = MergedSource([MINUTE], None, ["t/0", "t/1", "t/2"], keyed=True)
    source.on_event("t/2", 330.0, "from-2")
    source.on_event("t/0", 330.0, "from-0")
    closed = source.on_watermark("t/0", 360.0) + source.on_watermark("t/2", 360.0)
    # keyed: t/1 never fed this source, only t/0 and t/2 matter; bucket 5 is final in both
    assert _buckets(closed) == [(5, "from-2")]


def test_a_shared_partition_watermark_closes_an_illiquid_symbols_buckets() -> None:
    # One trades topic keyed by symbol: partition t/3 carries a liquid and an illiquid symbol;
    # the forwarder tells every source of t/3 the partition's clock.
    illiquid = MergedSource([MINUTE], None, ["t/0", "t/1", "t/2", "t/3"], keyed=True)
    assert _buckets(illiquid.on_event("t/3", 70.0, 12.5)) == []  # bucket 1
    # no trade of this symbol for ten minutes, but the partition's clock moved to 700
    closed = illiquid.on_watermark("t/3", 700.0)
    assert _buckets(closed) == [(1, 12.5)]
    assert illiquid.final == [10]  # buckets through 10 are final: readers may compute them


def test_late_events_are_counted_and_dropped_duplicates_are_applied_once() -> None:
    source = MergedSource([MINUTE], None, ["t/0"])
    assert not source.duplicate("t/0", 0)
    source.on_event("t/0", 10.0, 1.0)
    assert source.duplicate("t/0", 0)  # the same offset forwarded again after a crash
    assert not source.duplicate("t/0", 1)
    source.on_event("t/0", 130.0, 2.0)  # bucket 0 is final now
    assert source.on_event("t/0", 50.0, 3.0) is None  # late: its bucket is final
    assert (source.events, source.late) == (3, 1)


def test_the_source_ends_when_every_origin_ended_and_flushes_everything() -> None:
    source = MergedSource([MINUTE, 3600], None, ["t/0", "t/1"])
    source.on_event("t/0", 10.0, "a")
    source.on_event("t/1", 70.0, "b")
    first = source.end("t/0")
    # t/0 is over and t/1 passed bucket 0 (its event is in bucket 1): bucket 0 is final
    assert not source.ended and _buckets(first) == [(0, "a")]
    rest = source.end("t/1")
    assert source.ended
    assert [(k, pairs, through) for k, pairs, through in rest] == [
        (0, [(1, "b")], END),
        (1, [(0, "b")], END),  # the hour bucket's last event by ts is t/1's
    ]


def test_the_merge_state_survives_json() -> None:
    source = MergedSource([MINUTE], 5.0, ["t/0", "t/1"], keyed=True)
    source.on_event("t/0", 250.0, "kept")
    source.on_event("t/1", 240.0, "older")
    source.duplicate("t/1", 41)
    again = MergedSource.from_dict(json.loads(json.dumps(source.to_dict())))
    assert again.duplicate("t/1", 41) and again.keyed
    closed = again.on_watermark("t/0", 400.0) + again.on_watermark("t/1", 400.0)
    assert _buckets(closed) == [(4, "kept")]
    assert (again.events, again.late) == (2, 0)


def test_a_merged_source_closes_calendar_buckets_where_the_calendar_says() -> None:
    # Days ending at 16:00 UTC ("-8h") and Monday weeks: bucket ends come from the calendars,
    # never from ts // seconds. 2024-01-01 is a Monday.
    from qmtl.buckets import DAY, WEEK, parse_offset, plain

    offset = parse_offset("-8h", "test")
    assert offset is not None
    day, week = offset.calendar(DAY), plain(WEEK)
    monday = 1_704_067_200.0  # 2024-01-01T00:00Z
    source = MergedSource([DAY, WEEK], None, ["t/0", "t/1"], calendars=[day, week])
    source.on_event("t/0", monday + 15 * 3600, "mon 15:00")  # Monday's session (ends 16:00)
    source.on_event("t/1", monday + 17 * 3600, "mon 17:00")  # already Tuesday's session
    # both origins pass Monday 16:00: Monday's session closes, with its own event only
    closed = source.on_watermark("t/0", monday + 16 * 3600) + source.on_watermark(
        "t/1", monday + 16 * 3600
    )
    days = [pair for k, buckets, _t in closed if k == 0 for pair in buckets]
    assert days == [(day.index(monday + 15 * 3600), "mon 15:00")]
    assert day.end(days[0][0]) == monday + 16 * 3600
    # an event before the end of a final bucket is late, whatever ts // 86400 says
    assert source.on_event("t/0", monday + 15.5 * 3600, "late") is None and source.late == 1
    # the week (Monday 00:00 to the next Monday) closes only at its end, with its last event
    closed = source.end("t/0") + source.end("t/1")
    weeks = [pair for k, buckets, _t in closed if k == 1 for pair in buckets]
    assert weeks == [(week.index(monday), "mon 17:00")] and week.end(weeks[0][0]) == monday + WEEK
    again = MergedSource.from_dict(source.to_dict(), [day, week])
    assert again.final == source.final
    assert again.on_event("t/1", monday + 20 * 3600, "restored") is None  # still late after it
