"""Event times (SPEC §5.2a): what a source may give as ``ts``, and what is an error."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pytest

from qmtl import Node, Pipeline, SourceNode
from qmtl.errors import QmtlError, SourceError
from qmtl.mock import MockExecutionEngine
from qmtl.sources import FileSourceProcessor, Watermark, source_events
from qmtl.state import MemoryStateBackend
from qmtl.streaming import OutputEvent

HOUR = {"1h": {"interval": "1h", "period": 10}}
#: 2024-03-08T00:00:00Z, a Friday
FRIDAY = 1_709_856_000


def doubled(source: Any, engine: Any = "local", **options: Any) -> list[tuple[float, Any]]:
    """The bars of ``px * 2`` at 1h (bucket end, value) over ``source``."""
    p = Pipeline("times", default_intervals=HOUR)
    p.add_node(SourceNode("px", source=source))
    p.add_node(Node("x2", fn=lambda px: px * 2, upstreams=["px"]))
    events: list[OutputEvent] = []
    p.run(events.append, engine=engine, state=MemoryStateBackend(), **options)
    return [(e.ts, e.value) for e in events if e.node == "x2"]


def test_numpy_epoch_seconds_are_event_times() -> None:
    # (np.int64(3600), 2.0) is what zip(df.index.astype("int64") // 10**9, df.px) gives: the
    # event at 3600 s is in the bucket [3600, 7200), whose end is 7200; 2.0 * 2 = 4.0 (before
    # the fix the pair was a value stamped now: one bucket, and px * 2 repeated the tuple).
    events = [
        (np.int64(3600), 2.0),
        (np.int32(7300), 3.0),  # bucket [7200, 10800)
        (np.float64(11000.5), np.float64(5.0)),  # bucket [10800, 14400)
    ]
    assert doubled(events) == [(7200.0, 4.0), (10800.0, 6.0), (14400.0, 10.0)]


def test_pandas_timestamps_datetimes_dates_and_iso_strings() -> None:
    naive = pd.Series(
        [1.0, 2.0, 3.0],
        index=pd.DatetimeIndex(["2024-03-08 00:10", "2024-03-08 00:50", "2024-03-08 01:05"]),
    )
    # naive index = UTC: 00:10 and 00:50 share the hour ending 01:00 (the last one, 2.0,
    # counts); 01:05 is in the hour ending 02:00
    one = FRIDAY + 3600
    assert doubled(list(naive.items())) == [(one, 4.0), (one + 3600, 6.0)]
    aware = naive.tz_localize("America/New_York")  # 00:10 EST is 05:10 UTC
    assert doubled(list(aware.items()))[0] == (FRIDAY + 6 * 3600, 4.0)
    # a datetime with an offset, a naive datetime (UTC), a date (midnight UTC), ISO strings
    # with Z, with an offset and naive, and [ts, value] lists: every one lands in its hour
    plus_two = timezone(timedelta(hours=2))
    mixed = [
        (date(2024, 3, 8), 1.0),  # 00:00Z -> hour ending 01:00
        [datetime(2024, 3, 8, 3, 30, tzinfo=plus_two), 2.0],  # 01:30Z -> ending 02:00
        ("2024-03-08T02:15:00Z", 3.0),  # ending 03:00
        ["2024-03-08T05:45:00+02:00", 4.0],  # 03:45Z -> ending 04:00
        ("2024-03-08T04:00:00", 5.0),  # naive = UTC, a bucket start -> ending 05:00
        (datetime(2024, 3, 8, 5, 59, 59), 6.0),  # naive -> ending 06:00
    ]
    assert doubled(mixed) == [(FRIDAY + h * 3600, 2.0 * h) for h in range(1, 7)]


def test_milli_micro_and_nanosecond_epochs_are_errors_naming_source_and_unit() -> None:
    seconds = 1_709_856_000
    for scale, unit in ((10**3, "milliseconds"), (10**6, "microseconds"), (10**9, "nanoseconds")):
        with pytest.raises(SourceError, match=f"source 'px'.*looks like epoch {unit}") as caught:
            doubled([(seconds * scale, 1.0)])
        assert f"divide by {scale}" in str(caught.value)
        with pytest.raises(SourceError, match=unit):
            doubled([(np.int64(seconds * scale), 1.0)])
    # the boundary: the last second before the year 3000 is a time, the year 3000 is not
    assert doubled([(32_503_679_999, 1.0)]) == [(32_503_680_000.0, 2.0)]
    with pytest.raises(SourceError, match="after the year 3000"):
        doubled([(32_503_680_000, 1.0)])
    assert issubclass(SourceError, QmtlError)


def test_items_that_are_not_pairs_are_errors_never_stamped_with_the_clock() -> None:
    def clock() -> float:
        raise AssertionError("nothing in a list or generator source is stamped")

    bad_items: list[Any] = [
        7.5,  # a bare value
        (1, 2, 3),  # three items
        ("yesterday", 1.0),  # a time that cannot be read
        (True, 1.0),  # a bool is not a time
        (None, 1.0),
        ({"ts": 1}, 1.0),
        (pd.NaT, 1.0),
        (np.datetime64("NaT", "ns"), 1.0),
        (float("inf"), 1.0),
    ]
    for item in bad_items:
        with pytest.raises(SourceError, match=r"source 'px'.*item") as caught:
            list(source_events([(0, 1.0), item], "px", clock=clock))
        assert repr(item)[:20] in str(caught.value)

        def generator(item: Any = item) -> Iterator[Any]:
            yield (0, 1.0)
            yield item

        with pytest.raises(SourceError, match="source 'px'"):
            list(source_events(generator(), "px", clock=clock))
        with pytest.raises(SourceError, match="source 'px'"):
            doubled([(0, 1.0), item])


def test_only_a_live_callable_or_fetch_result_is_stamped_when_read() -> None:
    class Feed:
        def fetch(self) -> float:
            return 101.5

    def reading() -> float:
        return 7.0

    assert list(source_events(reading, "px", clock=lambda: 3600.0)) == [(3600.0, 7.0)]
    assert list(source_events(Feed(), "px", clock=lambda: 60.0)) == [(60.0, 101.5)]
    # a callable returning a stream: its items are events and must be pairs
    assert list(source_events(lambda: [("1970-01-01T01:00:00Z", 1)], "px")) == [(3600.0, 1)]
    with pytest.raises(SourceError, match=r"source 'px': item 1 is not a \(ts, value\) pair"):
        list(source_events(lambda: [1, 2], "px", clock=lambda: 0.0))
    # a watermark passes through as one
    ((stamp, watermark),) = source_events([Watermark(np.int64(60))], "px")
    assert (stamp, type(watermark)) == (60, Watermark)


def test_datetime64_index_values_are_utc() -> None:
    index = pd.DatetimeIndex(["2024-03-08 00:30", "2024-03-08 01:30"])
    events = list(zip(index.values, [1.0, 2.0], strict=True))  # numpy datetime64[ns]
    assert doubled(events) == [(FRIDAY + 3600.0, 2.0), (FRIDAY + 7200.0, 4.0)]


def test_explicit_events_and_the_mock_engine_read_times_the_same_way() -> None:
    expected = [(7200.0, 4.0)]
    assert doubled([], events=[("px", np.int64(3600), 2.0)]) == expected
    assert doubled([], events=[("px", "1970-01-01T01:00:00Z", 2.0)]) == expected
    assert doubled([(np.int64(3600), 2.0)], engine=MockExecutionEngine()) == expected
    with pytest.raises(SourceError, match="milliseconds"):
        doubled([], events=[("px", 3_600_000_000_000, 2.0)])


def test_one_shot_takes_the_last_pair_of_a_list_source() -> None:
    p = Pipeline("once")
    p.add_node(SourceNode("px", source=[[np.int64(0), 1.0], ["1970-01-02T00:00:00Z", 2.0]]))
    p.add_node(Node("x2", fn=lambda px: px * 2, upstreams=["px"]))
    assert p.execute(ts=FRIDAY) == {"px": 2.0, "x2": 4.0}
    bare = Pipeline("bare")
    bare.add_node(SourceNode("px", source=[1.0, 2.0]))
    with pytest.raises(QmtlError, match=r"source 'px': item 2.0 is not a \(ts, value\) pair"):
        bare.execute(ts=FRIDAY)


def test_timestamps_from_utc_datetimes_are_exact() -> None:
    moment = datetime(2024, 3, 8, 21, 0, tzinfo=UTC)
    assert list(source_events([(moment, 1)], "px")) == [(FRIDAY + 21 * 3600.0, 1)]


def test_a_csv_file_with_millisecond_epochs_is_an_error_naming_file_line_and_unit(
    tmp_path: Any,
) -> None:
    path = tmp_path / "ticks.csv"
    path.write_text("timestamp,price\n1709856000000,1.5\n")
    with pytest.raises(SourceError, match=r"ticks.csv line 2: .*epoch milliseconds"):
        list(FileSourceProcessor(path, value_column="price").events())
