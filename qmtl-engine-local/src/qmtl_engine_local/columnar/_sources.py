"""Sources, a chunk at a time: reading events into arrays, and bucketing them.

:class:`SourceReader` reads ``size`` events of one source per call, in its own arrival order,
normalised exactly as :func:`qmtl.sources.source_events` does (lists of ``(number, value)``
pairs take a fast path checked with a few passes at C speed; anything else goes through the
normaliser itself). :class:`ColumnBucketer` is :class:`qmtl.streaming.SourceBucketer` over a
chunk: the same rules, stated on arrays.

- The watermark before event ``j`` is the running maximum of the event times before it (and of
  the source's :class:`~qmtl.sources.Watermark` items) minus ``allowed_lateness``:
  ``numpy.maximum.accumulate``. Event ``j`` is late when its time is before the end of the
  last bucket that watermark made final at the finest interval, exactly as one event at a time.
- A bucket's value is its last event by time, ties by arrival: a stable sort by (bucket, time,
  arrival), then the last row of each bucket. The winners of buckets still open at the end of
  a chunk are carried into the next one, ahead of its events (they arrived earlier).
- At the end of a chunk, interval ``s`` is final through ``floor(watermark / s) - 1``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import compress, islice
from operator import itemgetter
from typing import Any

import numpy as np

from qmtl.sources import Watermark, source_events
from qmtl_engine_local.columnar._align import END, NEVER, Array, Col

_FIRST, _SECOND = itemgetter(0), itemgetter(1)
_NUMBERS = frozenset({int, float})
#: Event times are compared as float64, exact for integers below 2**53.
_EXACT_INT = 2.0**53


class Chunk:
    """Events of one source in arrival order: ``ts`` (float64), ``values``, ``marks`` (which
    items are watermarks; ``None`` when none are), ``ended``, and the ``error`` that stopped
    the read after these events, if any."""

    __slots__ = ("ended", "error", "marks", "ts", "values")

    def __init__(
        self,
        ts: Array,
        values: list[Any],
        marks: Array | None,
        ended: bool,
        error: Exception | None = None,
    ) -> None:
        self.ts, self.values, self.marks = ts, values, marks
        self.ended, self.error = ended, error


class SourceReader:
    """One source's events, ``size`` at a time."""

    def __init__(
        self, name: str, raw: Any, clock: Callable[[], float], *, explicit: bool = False
    ) -> None:
        self.name = name
        self.clock = clock
        #: ``events=`` arrivals: already checked, and values are never watermarks
        self.explicit = explicit
        self.ended = False
        self._list: Sequence[Any] | None = raw if isinstance(raw, list | tuple) else None
        self._at = 0
        self._stream: Iterator[Any] | None = None
        if self._list is None:
            self._stream = source_events(raw, name, clock=clock)

    def read(self, size: int) -> Chunk:
        if self._list is not None:
            items = self._list[self._at : self._at + size]
            self._at += len(items)
            ended = self._at >= len(self._list)
            fast = _pairs(items)
            if fast is not None:
                self.ended = ended
                return Chunk(fast[0], fast[1], None, ended)
            stream: Iterator[Any] = (
                iter(items) if self.explicit else source_events(items, self.name, clock=self.clock)
            )
        else:
            assert self._stream is not None
            stream = islice(self._stream, size)
            ended = False
        pairs: list[Any] = []
        error: Exception | None = None
        try:
            pairs.extend(stream)  # what was read before a failure stays in ``pairs``
        except Exception as failure:  # raised by the runner after these events are processed
            error = failure
        if self._list is None:
            ended = error is None and len(pairs) < size
        self.ended = ended and error is None
        return _chunk(pairs, self.explicit, self.ended, error)


def _pairs(items: Sequence[Any]) -> tuple[Array, list[Any]] | None:
    """``(ts array, values)`` when every item is a ``(int | float, value)`` tuple with a finite
    time, which the normaliser would pass through unchanged; else ``None``."""
    if not items:
        return np.empty(0), []
    if set(map(type, items)) != {tuple} or set(map(len, items)) != {2}:
        return None
    stamps = list(map(_FIRST, items))
    if not set(map(type, stamps)) <= _NUMBERS:
        return None
    try:
        ts = np.array(stamps, dtype=np.float64)
    except OverflowError:
        return None
    if not (np.isfinite(ts).all() and np.abs(ts).max() < _EXACT_INT):
        return None
    return ts, list(map(_SECOND, items))


def _chunk(pairs: list[Any], explicit: bool, ended: bool, error: Exception | None) -> Chunk:
    ts = np.array([pair[0] for pair in pairs], dtype=np.float64)
    values = [pair[1] for pair in pairs]
    marks = None
    if not explicit:
        flags = [value.__class__ is Watermark for value in values]
        if any(flags):
            marks = np.array(flags, dtype=bool)
    return Chunk(ts, values, marks, ended, error)


class ColumnBucketer:
    """One source at all its intervals, a chunk of events at a time (see the module doc)."""

    __slots__ = ("events", "final", "finest", "high", "late", "lateness", "open", "seconds")

    def __init__(self, seconds: Sequence[int], allowed_lateness: float | None) -> None:
        self.seconds = tuple(int(s) for s in seconds)
        self.lateness = float(allowed_lateness or 0.0)
        self.finest = min(self.seconds)
        self.high = NEVER  #: the highest event time (or watermark) seen
        self.events = 0
        self.late = 0
        self.final: list[float] = [NEVER] * len(self.seconds)
        #: per interval, the winners of buckets not final yet: (buckets, times, values)
        self.open: list[tuple[Array, Array, list[Any]]] = [
            (np.empty(0, dtype=np.int64), np.empty(0), []) for _ in self.seconds
        ]

    @property
    def watermark(self) -> float:
        return self.high - self.lateness if self.high not in (NEVER, END) else self.high

    def push(self, chunk: Chunk) -> list[tuple[Col, float]]:
        """Bucket a chunk; per interval, the buckets it made final and the *final through*."""
        ts, values, marks = chunk.ts, chunk.values, chunk.marks
        n = len(ts)
        if n:
            self.events += n if marks is None else n - int(marks.sum())
            valid = self._not_late(ts)
            if marks is not None:
                valid &= ~marks
            if not valid.all():
                self.late += int((~valid).sum()) - (0 if marks is None else int(marks.sum()))
                ts = ts[valid]
                values = list(compress(values, valid.tolist()))
            self.high = max(self.high, float(chunk.ts.max()))
        wm = self.watermark
        out = []
        for k, s in enumerate(self.seconds):
            through = END if wm == END else (NEVER if wm == NEVER else int(wm // s) - 1)
            out.append(self._close(k, ts, values, max(through, self.final[k])))
        return out

    def end(self) -> list[tuple[Col, float]]:
        """End of stream: every open bucket is final."""
        self.high = END
        empty = np.empty(0)
        return [self._close(k, empty, [], END) for k in range(len(self.seconds))]

    def _not_late(self, ts: Array) -> Array:
        before = np.maximum.accumulate(ts)
        before[1:] = before[:-1]
        before[0] = NEVER
        np.maximum(before, self.high, out=before)
        seen = before != NEVER
        valid = np.ones(len(ts), dtype=bool)
        if seen.any():
            s = self.finest
            cut = np.floor_divide(before[seen] - self.lateness, s) * s
            valid[seen] = ts[seen] >= cut
        return valid

    def _close(self, k: int, ts: Array, values: list[Any], through: float) -> tuple[Col, float]:
        self.final[k] = through
        held_b, held_t, held_v = self.open[k]
        if len(ts):
            buckets = np.concatenate(
                (held_b, np.floor_divide(ts, self.seconds[k]).astype(np.int64))
            )
            times = np.concatenate((held_t, ts))
            rows = held_v + values
            last = _winners(buckets, times)
            buckets, times = buckets[last], times[last]
            rows = list(map(rows.__getitem__, last.tolist()))
        else:
            buckets, times, rows = held_b, held_t, held_v
        if through == END:
            cut = len(buckets)
        elif through == NEVER:
            cut = 0
        else:
            cut = int(np.searchsorted(buckets, int(through), side="right"))
        self.open[k] = (buckets[cut:], times[cut:], rows[cut:])
        return Col(buckets[:cut], rows[:cut]), through


def _winners(buckets: Array, times: Array) -> Array:
    """Row of each bucket's last event by time, ties by arrival (rows are in arrival order),
    in bucket order."""
    if len(times) > 1 and not (times[1:] >= times[:-1]).all():
        order = np.lexsort((np.arange(len(times)), times, buckets))
        ordered = buckets[order]
        ends = np.flatnonzero(ordered[1:] != ordered[:-1])
        return order[np.append(ends, len(order) - 1)]  # type: ignore[no-any-return]
    ends = np.flatnonzero(buckets[1:] != buckets[:-1])
    return np.append(ends, len(buckets) - 1)
