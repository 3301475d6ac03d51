"""Calendar alignment (SPEC §4.1): Monday weeks and a pipeline's ``bucket_offset``.

Every expected timestamp below was computed by hand (and checked with GNU ``date``), never with
the code under test; the comments say which instant each one is.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any

import pandas as pd
import pytest

from qmtl import Node, Pipeline, SourceNode
from qmtl.buckets import parse_offset
from qmtl.errors import PipelineValidationError
from qmtl.models import PipelineDefinition
from qmtl.state import MemoryStateBackend
from qmtl.streaming import OutputEvent

HOUR, DAY, WEEK = 3600, 86_400, 604_800
THU_MAR_7 = 1_709_769_600  # 2024-03-07T00:00Z, a Thursday (epoch weeks used to start here)
MON_MAR_4 = 1_709_510_400  # 2024-03-04T00:00Z
MON_MAR_11 = 1_710_115_200  # 2024-03-11T00:00Z
MON_MAR_18 = 1_710_720_000  # 2024-03-18T00:00Z
INTERVALS = {
    "1h": {"interval": "1h", "period": 24},
    "1d": {"interval": "1d", "period": 7},
    "1w": {"interval": "1w", "period": 4},
}


def bars(
    events: list[tuple[int, float]], offset: Any = None, **options: Any
) -> dict[tuple[str, str], list[tuple[float, Any]]]:
    """(node, interval) -> [(bucket end, value)] of a source and ``x10 = px * 10``."""
    p = Pipeline("calendar", default_intervals=INTERVALS, bucket_offset=offset)
    p.add_node(SourceNode("px", source=events))
    p.add_node(Node("x10", fn=lambda px: px * 10, upstreams=["px"]))
    out: list[OutputEvent] = []
    p.run(out.append, engine="local", state=MemoryStateBackend(), **options)
    result: dict[tuple[str, str], list[tuple[float, Any]]] = {}
    for e in out:
        result.setdefault((e.node, e.interval), []).append((e.ts, e.value))
    return result


def test_weeks_start_on_monday_utc() -> None:
    events = [
        (THU_MAR_7 + HOUR, 1.0),  # Thu 2024-03-07 01:00Z: the week of Mon 4 March
        (MON_MAR_11 - HOUR, 2.0),  # Sun 2024-03-10 23:00Z: still that week (its last value)
        (MON_MAR_11 + HOUR, 3.0),  # Mon 2024-03-11 01:00Z: the next week
    ]
    got = bars(events)
    # weeks end on Monday 00:00Z; before, Thursday-aligned weeks put all three in one bucket
    assert got[("px", "1w")] == [(MON_MAR_11, 2.0), (MON_MAR_18, 3.0)]
    assert got[("x10", "1w")] == [(MON_MAR_11, 20.0), (MON_MAR_18, 30.0)]
    # days are untouched: midnight UTC
    assert [ts for ts, _ in got[("px", "1d")]] == [THU_MAR_7 + DAY, MON_MAR_11, MON_MAR_11 + DAY]
    # the one-shot form stores a Thursday's value at the end of its Monday week
    p = Pipeline("once", default_intervals={"1w": {"interval": "1w", "period": 2}})
    p.add_node(SourceNode("px", source=lambda: 5.0))
    p.execute(ts=THU_MAR_7 + HOUR, state=MemoryStateBackend())
    assert p.get_history("px", "1w") == [{"timestamp": MON_MAR_11, "value": 5.0}]
    assert MON_MAR_11 - MON_MAR_4 == WEEK


# 2024-03-08 (Fri) .. 2024-03-11 (Mon) in UTC
FRI_1600 = 1_709_913_600  # 2024-03-08T16:00Z
SAT_1600 = 1_710_000_000  # 2024-03-09T16:00Z
SUN_1600 = 1_710_086_400  # 2024-03-10T16:00Z
MON_1600 = 1_710_172_800  # 2024-03-11T16:00Z
CLOSES = [
    (FRI_1600 - 60, 1.0),  # Fri 15:59Z: the day ending Fri 16:00Z
    (FRI_1600, 2.0),  # Fri 16:00Z exactly: a bucket start, so the day ending Sat 16:00Z
    (SUN_1600 - HOUR, 3.0),  # Sun 15:00Z: the day ending Sun 16:00Z
    (SUN_1600 + HOUR, 4.0),  # Sun 17:00Z: the day ending Mon 16:00Z
    (MON_1600 + HOUR, 5.0),  # Mon 17:00Z: the day ending Tue 16:00Z
]


def test_a_negative_duration_closes_days_and_weeks_before_midnight() -> None:
    got = bars(CLOSES, "-8h")
    assert got[("px", "1d")] == [
        (FRI_1600, 1.0),
        (SAT_1600, 2.0),
        (SUN_1600, 3.0),
        (MON_1600, 4.0),
        (MON_1600 + DAY, 5.0),
    ]
    # weeks run Sunday 16:00Z to Sunday 16:00Z: Monday's session opens a week
    assert got[("px", "1w")] == [(SUN_1600, 3.0), (SUN_1600 + WEEK, 5.0)]
    assert got[("x10", "1w")] == [(SUN_1600, 30.0), (SUN_1600 + WEEK, 50.0)]
    # hours stay on epoch multiples
    assert got[("px", "1h")][0] == (FRI_1600, 1.0)


def test_a_16h_offset_moves_boundaries_to_16_00_and_weeks_to_monday_16_00() -> None:
    got = bars(CLOSES, "16h")
    days = bars(CLOSES, "-8h")[("px", "1d")]
    assert got[("px", "1d")] == days  # the same days as "-8h"
    # weeks from Monday 16:00Z: Fri, Sat, Sun and Sunday 17:00Z are the week ending Mon 11
    # March 16:00Z (last value 4.0); Monday 17:00Z starts the week ending Mon 18 March 16:00Z
    assert got[("px", "1w")] == [(MON_1600, 4.0), (MON_1600 + WEEK, 5.0)]
    assert bars(CLOSES, "UTC 16:00") == bars(CLOSES, "-8h")


# New York closes (16:00 local) around the 2024 clock changes, in UTC
NY_FRI_MAR_8 = 1_709_931_600  # 21:00Z = 16:00 EST (UTC-5)
NY_SAT_MAR_9 = 1_710_018_000  # 21:00Z = 16:00 EST
NY_SUN_MAR_10 = 1_710_100_800  # 20:00Z = 16:00 EDT (UTC-4): clocks went forward at 02:00
NY_MON_MAR_11 = 1_710_187_200  # 20:00Z = 16:00 EDT
NY_SUN_MAR_3 = 1_709_499_600  # 21:00Z = 16:00 EST: the close that starts the week of Mar 4
NY_SUN_MAR_17 = 1_710_705_600  # 20:00Z = 16:00 EDT: the close that ends the week of Mar 11
NY_FRI_NOV_1 = 1_730_491_200  # 20:00Z = 16:00 EDT
NY_SAT_NOV_2 = 1_730_577_600  # 20:00Z = 16:00 EDT
NY_SUN_NOV_3 = 1_730_667_600  # 21:00Z = 16:00 EST: clocks went back at 02:00
NY_MON_NOV_4 = 1_730_754_000  # 21:00Z = 16:00 EST
NY_EVENTS = [
    (NY_FRI_MAR_8 - 60, 1.0),  # Fri 15:59 EST: Friday's session
    (NY_FRI_MAR_8 + 60, 2.0),  # Fri 16:01 EST: Saturday's session
    (NY_SUN_MAR_10 - 60, 3.0),  # Sun 15:59 EDT: Sunday's session (23 hours long)
    (NY_SUN_MAR_10 + 60, 4.0),  # Sun 16:01 EDT: Monday's session
    (NY_MON_MAR_11 - 60, 5.0),  # Mon 15:59 EDT: Monday's session, its last event
    (NY_SAT_NOV_2 - 60, 10.0),  # Sat 2 Nov 15:59 EDT: Saturday's session
    (NY_SAT_NOV_2 + 1800, 11.0),  # Sat 16:30 EDT: Sunday's session (25 hours long)
    (NY_SUN_NOV_3 - 1800, 12.0),  # Sun 15:30 EST: Sunday's session
    (NY_SUN_NOV_3 - 60, 13.0),  # Sun 15:59 EST: Sunday's session, its last event
    (NY_SUN_NOV_3 + 60, 14.0),  # Sun 16:01 EST: Monday's session
]


def test_new_york_closes_across_both_daylight_saving_changes() -> None:
    got = bars(NY_EVENTS, "America/New_York 16:00")
    assert got[("px", "1d")] == [
        (NY_FRI_MAR_8, 1.0),
        (NY_SAT_MAR_9, 2.0),
        (NY_SUN_MAR_10, 3.0),
        (NY_MON_MAR_11, 5.0),
        (NY_SAT_NOV_2, 10.0),
        (NY_SUN_NOV_3, 13.0),
        (NY_MON_NOV_4, 14.0),
    ]
    assert NY_SUN_MAR_10 - NY_SAT_MAR_9 == 23 * HOUR
    assert NY_SUN_NOV_3 - NY_SAT_NOV_2 == 25 * HOUR
    assert got[("x10", "1d")][2] == (NY_SUN_MAR_10, 30.0)
    # weeks: the sessions of Monday to Sunday, ending at Sunday's close. Fri 8, Sat 9 and
    # Sun 10 March are the week of Mon 4 March (ending Sun 10 March 16:00 EDT); Monday 11
    # March's session opens the next one (ending Sun 17 March 16:00 EDT). Sat 2 and Sun 3
    # November end the week of Mon 28 October at Sun 3 November 16:00 EST.
    assert got[("px", "1w")] == [
        (NY_SUN_MAR_10, 3.0),
        (NY_SUN_MAR_17, 5.0),
        (NY_SUN_NOV_3, 13.0),
        (NY_SUN_NOV_3 + WEEK, 14.0),  # no clock change until March: exactly a week later
    ]
    assert NY_SUN_MAR_10 - NY_SUN_MAR_3 == WEEK - HOUR  # that week lost an hour


def test_one_shot_runs_use_the_same_calendar() -> None:
    p = Pipeline(
        "ny-once",
        default_intervals={"1d": {"interval": "1d", "period": 5}},
        bucket_offset="America/New_York 16:00",
    )
    p.add_node(SourceNode("px", source=lambda: 1.0))
    state = MemoryStateBackend()
    p.execute(ts=NY_FRI_MAR_8 - 60, state=state)  # Fri 15:59 EST: Friday's session
    p.execute(ts=NY_SUN_MAR_10 - 60, state=state)  # Sun 15:59 EDT: Sunday's session
    p.execute(ts=NY_SUN_MAR_10 + 60, state=state)  # Sun 16:01 EDT: Monday's session
    stamps = [item["timestamp"] for item in p.get_history("px", "1d", state=state)]
    assert stamps == [NY_MON_MAR_11, NY_SUN_MAR_10, NY_FRI_MAR_8]


def test_late_events_are_judged_by_every_interval_when_days_do_not_end_on_an_hour() -> None:
    # "-8h30m": days end at 15:30Z, between two hour boundaries
    day_end = FRI_1600 - 1800  # Fri 15:30Z
    events = [
        (day_end - 1800, 1.0),  # 15:00Z: the day ending 15:30Z, the hour 15:00-16:00
        (day_end + 900, 2.0),  # 15:45Z: the next day; the day ending 15:30Z is final now
        (day_end - 600, 9.0),  # 15:20Z arriving late: its day is final (its hour is not)
    ]
    p = Pipeline("late", default_intervals=INTERVALS, bucket_offset="-8h30m")
    p.add_node(SourceNode("px", source=events))
    out: list[OutputEvent] = []
    summary = p.run(out.append, engine="local", state=MemoryStateBackend())
    assert summary.late_events == 1  # counted and dropped, never merged into a final day
    days = [(e.ts, e.value) for e in out if e.interval == "1d"]
    assert days == [(day_end, 1.0), (day_end + DAY, 2.0)]


def test_offsets_are_recorded_in_the_definition() -> None:
    p = Pipeline("defn", bucket_offset="America/New_York 16:00")
    p.add_node(SourceNode("px", source=lambda: 1.0))
    definition = p.to_definition()
    assert definition["bucket_offset"] == "America/New_York 16:00"
    assert PipelineDefinition.from_definition(definition).bucket_offset == (
        "America/New_York 16:00"
    )
    assert "bucket_offset" not in Pipeline("none").to_definition()
    # the offset changes the series: a plan built after a change has new bucket ends
    p.bucket_offset = "-8h"
    assert p.to_definition()["bucket_offset"] == "-8h"


@pytest.mark.parametrize(
    ("offset", "fragment"),
    [
        ("8", "not a duration such as '-8h'"),
        ("-8x", "not a duration"),
        ("7d", "strictly between -7d and 7d"),
        (timedelta(seconds=1.5), "whole seconds"),
        ("America/Nowhere 16:00", "'America/Nowhere' is not a time zone"),
        ("America/New_York 24:00", "between 00:00 and 23:59"),
        ("America/New_York 4pm", "HH:MM"),
        (["-8h"], "not a duration"),
    ],
)
def test_invalid_offsets_name_the_pipeline_and_the_fix(offset: Any, fragment: str) -> None:
    with pytest.raises(PipelineValidationError, match=r"Pipeline 'bad': bucket_offset") as caught:
        Pipeline("bad", bucket_offset=offset)
    assert fragment in str(caught.value)
    assert "e.g." in str(caught.value) or "such as" in str(caught.value)


@pytest.mark.parametrize(
    "zone", ["America/New_York", "Europe/London", "Australia/Sydney", "Asia/Kolkata"]
)
def test_session_calendars_agree_with_pandas(zone: str) -> None:
    """A differential test: bucket ends from pandas' time zone arithmetic (an independent
    implementation) for random instants over three years, southern-hemisphere DST included."""
    days = [date(2022, 12, 20) + timedelta(days=i) for i in range(3 * 366 + 30)]
    stamps = [pd.Timestamp(f"{d.isoformat()} 16:00").tz_localize(zone) for d in days]
    closes = pd.DatetimeIndex(stamps).as_unit("s").asi8  # the session of d ends at d 16:00
    by_date = dict(zip(days, closes.tolist(), strict=True))
    offset = parse_offset(f"{zone} 16:00", "test")
    assert offset is not None
    daily, weekly = offset.calendar(DAY), offset.calendar(WEEK)
    rng = random.Random(7)
    for _ in range(3000):
        ts = rng.uniform(closes[2], closes[-10])
        position = int((closes > ts).argmax())  # the first close after ts
        expected_day = float(closes[position])
        assert daily.end(daily.index(ts)) == expected_day, ts
        assert daily.end(daily.index(ts) - 1) <= ts < expected_day
        session = days[position]  # its week ends at the close of that ISO week's Sunday
        sunday = session + timedelta(days=6 - session.weekday())
        assert weekly.end(weekly.index(ts)) == float(by_date[sunday]), ts
