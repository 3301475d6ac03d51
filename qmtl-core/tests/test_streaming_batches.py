"""Batched bucketing (SourceBucketer.on_events, what the local engine uses for bounded sources)
gives exactly what one event at a time gives: the same final buckets, the same final-through
per interval, the same state afterwards. The oracle is on_event called per event, its closures
merged per batch by the obvious loop below."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from qmtl.streaming import SourceBucketer

INTERVALS = st.sampled_from([[60], [60, 3600], [1, 60, 300], [3600, 60]])
Closures = dict[int, tuple[list[tuple[int, Any]], float]]


def one_by_one(bucketer: SourceBucketer, batch: list[tuple[float, Any]]) -> Closures:
    merged: Closures = {}
    for ts, value in batch:
        for i, buckets, through in bucketer.on_event(ts, value) or ():
            earlier = merged.get(i, ([], through))[0]
            merged[i] = (earlier + list(buckets), through)
    return merged


def batched(bucketer: SourceBucketer, batch: list[tuple[float, Any]]) -> Closures:
    return {i: (list(buckets), through) for i, buckets, through in bucketer.on_events(batch)}


@st.composite
def streams(draw: Any) -> tuple[list[int], float, list[list[tuple[float, Any]]]]:
    seconds = draw(INTERVALS)
    lateness = draw(st.sampled_from([0.0, 0.0, 30.0]))
    steps = draw(st.lists(st.integers(min_value=-40, max_value=200), min_size=1, max_size=80))
    ts, events = 1_000_000.0, []
    for i, step in enumerate(steps):  # mostly forward in time, sometimes back (out of order)
        ts += step
        events.append((ts if i % 3 else float(int(ts)), i))
    cuts = sorted(draw(st.lists(st.integers(0, len(events)), max_size=6)))
    batches = [events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)]
    return seconds, lateness, batches


@settings(max_examples=300, deadline=None)
@given(streams())
def test_a_batch_gives_what_its_events_give_one_by_one(
    stream: tuple[list[int], float, list[list[tuple[float, Any]]]],
) -> None:
    seconds, lateness, batches = stream
    single, batch = SourceBucketer(seconds, lateness), SourceBucketer(seconds, lateness)
    for events in batches:
        assert batched(batch, events) == one_by_one(single, events)
        assert batch.to_dict() == single.to_dict()
    assert batch.flush() == single.flush()
    assert batch.to_dict() == single.to_dict()


def test_in_order_events_close_each_bucket_with_its_last_event() -> None:
    """Hand-checked: 1m buckets, events at 0, 30, 60, 61 and 150 s past 1,000,020 s (the start
    of bucket 16667 = 1,000,020 / 60)."""
    bucketer = SourceBucketer([60])
    base = 1_000_020.0
    closed = bucketer.on_events([(base, "a"), (base + 30, "b"), (base + 60, "c")])
    assert closed == [(0, [(16667, "b")], 16667)]  # 16668 opened by "c": 16667 is final
    closed = bucketer.on_events([(base + 61, "d"), (base + 150, "e")])
    assert closed == [(0, [(16668, "d")], 16668)]  # "e" (1,000,170 s) opens 16669
    assert bucketer.flush() == [(0, [(16669, "e")], float("inf"))]
