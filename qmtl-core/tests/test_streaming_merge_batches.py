"""A run of one origin's forwarded events applied at once (MergedSource.on_events, what a Kafka
shard does with a forwarded message) gives exactly what the events give one by one: the same
final buckets, the same final-through per interval, the same counts and state afterwards. The
oracle is ``duplicate()`` then ``on_event()`` per event, their closures joined per interval."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from qmtl.streaming import Closure, MergedSource

ORIGINS = ["t/0", "t/1", "t/2"]
Joined = dict[int, tuple[list[tuple[int, Any]], float]]
Batch = list[tuple[int, float, Any]]


def joined(closures: list[Closure]) -> Joined:
    out: Joined = {}
    for k, buckets, through in closures:
        out[k] = (out.get(k, ([], through))[0] + list(buckets), through)
    return out


def one_by_one(merged: MergedSource, origin: str, batch: Batch) -> Joined:
    closures: list[Closure] = []
    for offset, ts, value in batch:
        if not merged.duplicate(origin, offset):
            closures.extend(merged.on_event(origin, ts, value) or ())
    return joined(closures)


def at_once(merged: MergedSource, origin: str, batch: Batch) -> Joined:
    offsets, times, values = (list(column) for column in zip(*batch, strict=True))
    return joined(merged.on_events(origin, offsets, times, values))


@st.composite
def feeds(draw: Any) -> tuple[list[int], float | None, bool, list[tuple[str, Batch | float]]]:
    seconds = draw(st.sampled_from([[1], [60], [1, 60], [60, 3600], [300, 60]]))
    lateness = draw(st.sampled_from([None, None, 30.0]))
    keyed = draw(st.booleans())
    clock = dict.fromkeys(ORIGINS, 1_000_000.0)
    offset = dict.fromkeys(ORIGINS, 0)
    ops: list[tuple[str, Batch | float]] = []
    for _ in range(draw(st.integers(1, 10))):
        origin = draw(st.sampled_from(ORIGINS))
        if draw(st.integers(0, 5)) == 0:  # the origin's watermark (a partition clock)
            clock[origin] += draw(st.integers(0, 120))
            ops.append((origin, clock[origin]))
            continue
        if offset[origin] > 4 and draw(st.integers(0, 3)) == 0:
            offset[origin] -= draw(st.integers(1, 4))  # a forward repeated after a crash
        batch: Batch = []
        for i in range(draw(st.integers(1, 40))):
            clock[origin] += draw(st.sampled_from([0, 0.25, 1, 3, 7, 59, 61, -5, -70]))
            batch.append((offset[origin], clock[origin] if i % 4 else float(int(clock[origin])), i))
            offset[origin] += 1
            if draw(st.integers(0, 30)) == 0:
                offset[origin] -= 2  # offsets out of order: the event-by-event path
        ops.append((origin, batch))
    return seconds, lateness, keyed, ops


@settings(max_examples=400, deadline=None)
@given(feeds())
def test_a_forwarded_run_gives_what_its_events_give_one_by_one(
    feed: tuple[list[int], float | None, bool, list[tuple[str, Batch | float]]],
) -> None:
    seconds, lateness, keyed, ops = feed
    single = MergedSource(seconds, lateness, ORIGINS, keyed=keyed)
    batch = MergedSource(seconds, lateness, ORIGINS, keyed=keyed)
    for origin, op in ops:
        if isinstance(op, float):
            assert batch.on_watermark(origin, op) == single.on_watermark(origin, op)
        else:
            assert at_once(batch, origin, op) == one_by_one(single, origin, op)
        assert batch.to_dict() == single.to_dict()
    assert joined(batch.flush()) == joined(single.flush())
    assert batch.to_dict() == single.to_dict()


def test_offsets_applied_already_are_dropped_and_the_rest_applied_once() -> None:
    """Hand-checked: a forward of offsets 0-3 repeated as 2-5 after a crash applies 4 and 5."""
    merged = MergedSource([60], None, ["t/0"])
    base = 1_000_020.0  # the start of minute bucket 16667
    assert (
        merged.on_events("t/0", [0, 1, 2, 3], [base, base + 1, base + 2, base + 3], list("abcd"))
        == [(0, [], 16666)]  # every bucket before the first event's is final
    )
    closed = merged.on_events(
        "t/0", [2, 3, 4, 5], [base + 2, base + 3, base + 61, base + 62], list("cdef")
    )
    assert closed == [(0, [(16667, "d")], 16667)]
    assert (merged.events, merged.late, merged.offsets["t/0"]) == (6, 0, 5)
