"""Sources: :class:`SourceBucketer` turns one source's events into final buckets at all its
intervals (the rules are the package docstring's)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from itertools import compress, islice
from operator import le, ne
from typing import Any, cast

from qmtl.buckets import Calendar, plain
from qmtl.streaming._common import (
    END,
    NEVER,
    NOTHING,
    STATE_VERSION,
    Closure,
    decode_bound,
    encode_bound,
)


# -- sources --------------------------------------------------------------------------------
class SourceBucketer:
    """One source at all its intervals: events in, final buckets out.

    :meth:`on_event` returns ``None`` for a late event, else a (possibly empty) list of
    ``(interval_position, [(bucket, value), ...], final_through)`` for every interval whose
    final bucket advanced (buckets in increasing order; the list may be empty when the
    watermark crossed a bucket that had no event).
    """

    __slots__ = (
        "_closes",
        "_ends",
        "_finest",
        "_late_before",
        "_next",
        "_rows",
        "calendars",
        "events",
        "final",
        "late",
        "lateness",
        "open",
        "pairs",
        "placed",
        "seconds",
        "watermark",
    )

    def __new__(
        cls,
        seconds: Sequence[int],
        allowed_lateness: float | None = None,
        calendars: Sequence[Calendar] | None = None,
    ) -> SourceBucketer:
        # intervals on a calendar take the subclass, so on_event stays the epoch-multiple loop
        if cls is SourceBucketer and calendars and not all(c.aligned for c in calendars):
            cls = _CalendarBucketer
        return object.__new__(cls)

    def __init__(
        self,
        seconds: Sequence[int],
        allowed_lateness: float | None = None,
        calendars: Sequence[Calendar] | None = None,
    ) -> None:
        if not seconds:
            raise ValueError("a source needs at least one interval")
        self.seconds = tuple(int(s) for s in seconds)
        #: each interval's calendar (default: no offset)
        self.calendars = tuple(calendars or (plain(s) for s in self.seconds))
        self.lateness = float(allowed_lateness or 0.0)
        self.watermark = NEVER  #: highest event ts seen
        self.final: list[float] = [NEVER] * len(self.seconds)
        self.open: list[dict[int, tuple[float, Any]]] = [{} for _ in self.seconds]
        self._split()
        self.events = 0
        self.late = 0
        self._bounds()

    def _split(self) -> None:
        # Epoch-multiple intervals are bucketed inline (pairs; calendar None in _rows), the
        # others by their calendar (placed). With epoch multiples only, the finest interval's
        # final bucket decides lateness; otherwise the latest final bucket end does.
        table = tuple(zip(self.seconds, self.calendars, self.open, strict=True))
        self._rows = tuple((s, None if c.aligned else c, o) for s, c, o in table)
        self.pairs = tuple((s, o) for s, c, o in self._rows if c is None)
        self.placed = tuple((c, o) for _s, c, o in self._rows if c is not None)
        finest = min(range(len(self.seconds)), key=self.seconds.__getitem__)
        self._finest = -1 if self.placed else finest

    def _bounds(self) -> None:
        # Per interval, the watermark that closes its next bucket; an event before
        # _late_before is late.
        self._closes = [c.end(f + 1) for c, f in zip(self.calendars, self.final, strict=True)]
        self._next = min(self._closes)
        #: per interval, the end of its last final bucket
        self._ends = [c.end(f) for c, f in zip(self.calendars, self.final, strict=True)]
        self._late_before = max(self._ends)

    def on_event(self, ts: float, value: Any) -> list[Closure] | tuple[()] | None:
        self.events += 1
        if ts < self._late_before:
            self.late += 1
            return None
        for s, opened in self.pairs:
            b = int(ts // s)
            slot = opened.get(b)
            if slot is None or ts >= slot[0]:
                opened[b] = (ts, value)
        if ts <= self.watermark:
            return NOTHING
        self.watermark = ts
        wm = ts - self.lateness
        if wm < self._next:
            return NOTHING
        return self._advance(wm)

    def on_events(self, events: Sequence[tuple[float, Any]]) -> list[Closure]:
        """Several events in arrival order: what :meth:`on_event` returns for each, merged into
        one closure per interval whose final bucket advanced (its buckets in order, its last
        *final through*).

        Events in time order with no ``allowed_lateness`` (a backtest over sorted data) and
        intervals on epoch multiples take a fast path: each interval's bucket changes are found
        in one pass over the batch, since then each interval has one open bucket and an event in
        a later bucket closes it.
        """
        if not events:
            return []
        return self.on_columns([event[0] for event in events], [event[1] for event in events])

    def on_columns(
        self, times: Sequence[float], values: Sequence[Any], *, stamped: bool = False
    ) -> list[Closure]:
        """:meth:`on_events` of events given as two columns: their times and their values
        (``stamped``: each value is kept as ``(ts, value)``, as :class:`MergedSource`'s
        origins keep them, without a pair made per event)."""
        if not times:
            return []

        def stamp(j: int) -> Any:
            return (times[j], values[j])

        at = stamp if stamped else cast("Callable[[int], Any]", values.__getitem__)
        if (
            self.lateness
            or self.placed  # intervals on a calendar: one event at a time
            or times[0] < self.watermark
            or not all(map(le, times, islice(times, 1, None)))
            or any(len(opened) > 1 for opened in self.open)
        ):
            return self._each(zip(times, map(at, range(len(times))), strict=True))
        count = len(times)
        self.events += count
        self.watermark = last = times[-1]
        closed: list[Closure] = []
        final = self.final
        for i, (s, opened) in enumerate(self.pairs):
            first, newest = int(times[0] // s), int(last // s)
            ready: list[tuple[int, Any]] = []
            if opened:
                ((b, (_ts, value)),) = opened.items()
                if b != first:
                    ready.append((b, value))
            if (newest - first) * 4 < count:  # a few buckets: find where each ends by bisection
                b, j = first, 0  # (ts // s >= b + 1 exactly when ts >= (b + 1) * s)
                while b != newest:
                    j = bisect_left(times, (b + 1) * s, j)
                    ready.append((b, at(j - 1)))
                    b = int(times[j] // s)
            else:
                buckets = [int(ts // s) for ts in times]
                ready += [
                    (buckets[j - 1], at(j - 1))
                    for j in compress(range(1, count), map(ne, islice(buckets, 1, None), buckets))
                ]
            opened.clear()
            opened[newest] = (last, at(count - 1))
            through = newest - 1  # every bucket before the watermark's is final
            if through > final[i]:
                final[i] = through
                closed.append((i, ready, through))
        self._bounds()
        return closed

    def _each(self, events: Iterable[tuple[float, Any]]) -> list[Closure]:
        """:meth:`on_events` one event at a time."""
        merged: dict[int, tuple[list[tuple[int, Any]], float]] = {}
        for ts, value in events:
            for i, buckets, through in self.on_event(ts, value) or NOTHING:
                if i in merged:
                    merged[i][0].extend(buckets)
                    merged[i] = (merged[i][0], through)
                else:
                    merged[i] = (list(buckets), through)
        return [(i, buckets, through) for i, (buckets, through) in sorted(merged.items())]

    def on_watermark(self, watermark: float) -> list[Closure]:
        """Move the watermark without an event (idle flush by wall clock): every bucket ending
        ``<= watermark - allowed_lateness`` becomes final."""
        if watermark <= self.watermark:
            return []
        self.watermark = watermark
        return self._advance(watermark - self.lateness if watermark != END else END)

    def flush(self) -> list[Closure]:
        """End of stream: every open bucket becomes final."""
        return self._advance(END)

    def _advance(self, wm: float) -> list[Closure]:
        closed: list[Closure] = []
        final, closes = self.final, self._closes
        for i, (s, calendar, opened) in enumerate(self._rows):
            if wm < closes[i]:
                continue
            if calendar is None:
                through = END if wm == END else int(wm // s) - 1
                closes[i] = (through + 2) * s
            else:
                through = calendar.through(wm)
                closes[i] = calendar.end(through + 1)
                self._ends[i] = calendar.end(through)
            final[i] = through
            if len(opened) == 1:
                (b,) = opened
                if b <= through:
                    closed.append((i, [(b, opened.pop(b)[1])], through))
                else:
                    closed.append((i, [], through))
                continue
            ready = sorted(b for b in opened if b <= through)
            closed.append((i, [(b, opened.pop(b)[1]) for b in ready], through))
        self._next = min(closes)
        f = self._finest
        if f >= 0:  # epoch multiples only: the finest interval's final bucket decides
            self._late_before = (final[f] + 1) * self.seconds[f]
        else:
            ends, seconds = self._ends, self.seconds
            for j, (_s, calendar, _o) in enumerate(self._rows):
                if calendar is None:
                    ends[j] = (final[j] + 1) * seconds[j]
            self._late_before = max(ends)
        return closed

    def seed(self, final: Sequence[float]) -> None:
        """Start after history (a warm start, :mod:`qmtl.warm`): per interval, the newest
        stored bucket (``-inf``: none) is final, so an event before its end is late."""
        self.final = list(final)
        self._bounds()
        self.watermark = max(self.watermark, self._late_before)  # as if history's events came

    def to_dict(self) -> dict[str, Any]:
        """Plain data for :func:`qmtl.codec.encode` (values as the source gave them)."""
        return {
            "version": STATE_VERSION,
            "seconds": list(self.seconds),
            "allowed_lateness": self.lateness,
            "watermark": encode_bound(self.watermark),
            "final": [encode_bound(f) for f in self.final],
            "open": [[[b, ts, v] for b, (ts, v) in sorted(o.items())] for o in self.open],
            "events": self.events,
            "late": self.late,
        }

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], calendars: Sequence[Calendar] | None = None
    ) -> SourceBucketer:
        """The state of :meth:`to_dict`, on ``calendars`` (default: no offset)."""
        self = cls(data["seconds"], data["allowed_lateness"], calendars)
        self.watermark = decode_bound(data["watermark"])
        self.final = [decode_bound(f) for f in data["final"]]
        self.open = [{int(b): (ts, v) for b, ts, v in o} for o in data["open"]]
        self._split()
        self.events, self.late = data["events"], data["late"]
        self._bounds()
        return self


class _CalendarBucketer(SourceBucketer):
    """A source with intervals on a calendar (weeks, offset days): each event is also placed
    in those intervals' buckets by :meth:`~qmtl.buckets.Calendar.index`."""

    __slots__ = ()

    def on_event(self, ts: float, value: Any) -> list[Closure] | tuple[()] | None:
        # SourceBucketer.on_event with the calendar intervals' loop (kept apart from the
        # epoch-multiple path, which runs per event for every source)
        self.events += 1
        if ts < self._late_before:
            self.late += 1
            return None
        for s, opened in self.pairs:
            b = int(ts // s)
            slot = opened.get(b)
            if slot is None or ts >= slot[0]:
                opened[b] = (ts, value)
        for calendar, opened in self.placed:
            b = calendar.index(ts)
            slot = opened.get(b)
            if slot is None or ts >= slot[0]:
                opened[b] = (ts, value)
        if ts <= self.watermark:
            return NOTHING
        self.watermark = ts
        wm = ts - self.lateness
        if wm < self._next:
            return NOTHING
        return self._advance(wm)
