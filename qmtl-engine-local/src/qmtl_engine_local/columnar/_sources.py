"""Sources, a chunk at a time: reading events into arrays, and bucketing them.

:class:`SourceReader` reads ``size`` events of one source per call, in its own arrival order,
normalised exactly as :func:`qmtl.sources.source_events` does: lists of ``(number, value)``
pairs take a fast path checked with a few passes at C speed, sources with ``event_chunks``
(:mod:`qmtl.columns`: ``ArraySource``, table sources) hand their columns over whole, and
anything else goes through the normaliser itself. :class:`ColumnBucketer` is
:class:`qmtl.streaming.SourceBucketer` over a chunk: the same rules, stated on arrays.

- The watermark before event ``j`` is the running maximum of the event times before it (and of
  the source's :class:`~qmtl.sources.Watermark` items) minus ``allowed_lateness``:
  ``numpy.maximum.accumulate``. Event ``j`` is late when its time is before the end of the
  last bucket that watermark made final (at the finest interval when every interval is epoch
  multiples, else the latest such end over the intervals), exactly as one event at a time.
- A bucket's value is its last event by time, ties by arrival: a stable sort by (bucket, time,
  arrival), then the last row of each bucket. The winners of buckets still open at the end of
  a chunk are carried into the next one, ahead of its events (they arrived earlier).
- At the end of a chunk, each interval is final through its calendar's ``through(watermark)``.
  Buckets are the series' own calendars (:mod:`qmtl.buckets`, over arrays in
  :mod:`._calendar`): Monday weeks and a pipeline's ``bucket_offset`` included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from operator import itemgetter
from typing import Any

import numpy as np

from qmtl.buckets import Calendar
from qmtl.sources import Watermark, source_events
from qmtl.vectorized import EXACT_DTYPES
from qmtl_engine_local.columnar._align import END, NEVER, Array, Col
from qmtl_engine_local.columnar._calendar import Grid

_FIRST, _SECOND = itemgetter(0), itemgetter(1)
#: Event times are compared as float64, exact for integers below 2**53.
_EXACT_INT = 2.0**53


class Chunk:
    """Events of one source in arrival order: ``ts`` (float64); their values, either as
    ``pairs`` (the ``(ts, value)`` items, read only for the buckets' winners) or as a
    ``column`` (an array or sequence of values); ``marks`` (which items are watermarks;
    ``None`` when none are), ``ended``, and the ``error`` that stopped the read after these
    events, if any."""

    __slots__ = ("column", "ended", "error", "marks", "pairs", "ts")

    def __init__(
        self,
        ts: Array,
        pairs: Sequence[Any] | None,
        marks: Array | None,
        ended: bool,
        error: Exception | None = None,
        column: Any = None,
    ) -> None:
        self.ts, self.pairs, self.column, self.marks = ts, pairs, column, marks
        self.ended, self.error = ended, error

    def values(self, rows: Array) -> list[Any]:
        """The values of the events at ``rows``, as Python values."""
        if self.pairs is not None:
            return list(map(_SECOND, map(self.pairs.__getitem__, rows.tolist())))
        if isinstance(self.column, np.ndarray):
            return self.column[rows].tolist()  # type: ignore[no-any-return]
        return list(map(self.column.__getitem__, rows.tolist()))

    def checked_values(self) -> list[Any] | None:
        """The events' values to check with :func:`qmtl.codec.check` (watermarks are not
        values), or ``None`` when the chunk's values are plain numbers anyway."""
        column = self.column
        if isinstance(column, np.ndarray) and column.dtype.kind in "biuf":
            return None  # tolist() gives bool, int and float
        if self.pairs is not None:
            values = list(map(_SECOND, self.pairs))
        else:
            values = list(column)
        if self.marks is not None:
            values = [
                None if mark else v for v, mark in zip(values, self.marks.tolist(), strict=True)
            ]
        return values

    def head(self, count: int, error: Exception) -> Chunk:
        """The first ``count`` events, stopped by ``error``."""
        column = None if self.column is None else self.column[:count]
        pairs = None if self.pairs is None else self.pairs[:count]
        marks = None if self.marks is None else self.marks[:count]
        return Chunk(self.ts[:count], pairs, marks, False, error, column=column)

    def col(self, buckets: Array, rows: Array) -> Col:
        """The bucket winners at ``rows`` as a column (an array column stays an array)."""
        column = self.column
        if isinstance(column, np.ndarray) and column.dtype.name in EXACT_DTYPES:
            return Col(buckets, None, column[rows])
        return Col(buckets, self.values(rows))


class SourceReader:
    """One source's events, ``size`` at a time."""

    def __init__(
        self, name: str, raw: Any, clock: Callable[[], float], *, explicit: bool = False
    ) -> None:
        self.name = name
        self.clock = clock
        #: ``events=`` arrivals: already checked, and values are never watermarks
        self.explicit = explicit
        self._list: Sequence[Any] | None = raw if isinstance(raw, list | tuple) else None
        self._at = 0
        self._stream: Iterator[Any] | None = None
        self._columns: Iterator[tuple[Any, Any]] | None = None
        self._ahead: tuple[Any, Any] | None = None
        self._raw = raw
        if self._list is None and not callable(getattr(raw, "event_chunks", None)):
            self._stream = source_events(raw, name, clock=clock)

    def read(self, size: int) -> Chunk:
        if self._list is not None:
            items = self._list[self._at : self._at + size]
            self._at += len(items)
            ended = self._at >= len(self._list)
            ts = _stamps(items)
            if ts is not None:
                return Chunk(ts, items, None, ended)
            stream: Iterator[Any] = (
                iter(items) if self.explicit else source_events(items, self.name, clock=self.clock)
            )
        elif self._stream is None:
            return self._read_columns(size)
        else:
            stream = islice(self._stream, size)
            ended = False
        pairs: list[Any] = []
        error: Exception | None = None
        try:
            pairs.extend(stream)  # what was read before a failure stays in ``pairs``
        except Exception as failure:  # raised by the runner after these events are processed
            error = failure
        if self._list is None:
            ended = len(pairs) < size
        return _chunk(pairs, self.explicit, ended and error is None, error)

    def _read_columns(self, size: int) -> Chunk:
        """The next ``(ts, values)`` columns of a source with ``event_chunks``."""
        if self._columns is None:
            self._columns = iter(self._raw.event_chunks(size))
            self._ahead = next(self._columns, None)
        got = self._ahead
        if got is None:
            return Chunk(np.empty(0), [], None, True)
        self._ahead = next(self._columns, None)
        stamps, column = got
        ended = self._ahead is None
        ts = np.asarray(stamps)
        if ts.dtype == np.int64 or ts.dtype == np.float64:
            ts = ts.astype(np.float64)
            if len(ts) == 0 or (np.isfinite(ts).all() and ts.max() < _EXACT_INT):
                if isinstance(column, np.ndarray) and column.dtype.kind != "O":
                    return Chunk(ts, None, None, ended, column=column)
                flags = [value.__class__ is Watermark for value in column]
                marks = np.array(flags, dtype=bool) if any(flags) else None
                return Chunk(ts, None, marks, ended, column=column)
        # times the fast path cannot vouch for: the normaliser, on the pairs events() yields
        pairs = list(zip(_rows(stamps), _rows(column), strict=True))
        stream = source_events(pairs, self.name, clock=self.clock)
        checked: list[Any] = []
        try:
            checked.extend(stream)
        except Exception as failure:
            return _chunk(checked, False, False, failure)
        return _chunk(checked, False, ended, None)


def _stamps(items: Sequence[Any]) -> Array | None:
    """The event times when every item is a ``(number, value)`` tuple with a finite time that
    the normaliser passes through unchanged; else ``None`` (the normaliser decides)."""
    if not items:
        return np.empty(0)
    if set(map(type, items)) != {tuple} or set(map(len, items)) != {2}:
        return None
    ts = np.array(list(map(_FIRST, items)))
    kind = ts.dtype
    if kind == np.int64:
        ts = ts.astype(np.float64)
    elif kind != np.float64:  # text, datetimes, objects: the normaliser's business
        return None
    # numpy turns a bool among numbers into 0 or 1, which no backtest uses as a time: leave
    # such chunks to the normaliser, as non-finite times and ints too large for a float.
    if not (np.isfinite(ts).all() and ts.min() > 1 and ts.max() < _EXACT_INT):
        return None
    return ts


def _chunk(pairs: list[Any], explicit: bool, ended: bool, error: Exception | None) -> Chunk:
    ts = np.array([pair[0] for pair in pairs], dtype=np.float64)
    marks = None
    if not explicit:
        flags = [pair[1].__class__ is Watermark for pair in pairs]
        if any(flags):
            marks = np.array(flags, dtype=bool)
    return Chunk(ts, pairs, marks, ended, error)


def _rows(column: Any) -> list[Any]:
    tolist = getattr(column, "tolist", None)
    return tolist() if callable(tolist) else list(column)


class ColumnBucketer:
    """One source at all its intervals, a chunk of events at a time (see the module doc)."""

    __slots__ = ("events", "final", "finest", "grids", "high", "late", "lateness", "open")

    def __init__(self, calendars: Sequence[Calendar], allowed_lateness: float | None) -> None:
        self.grids = tuple(Grid(c) for c in calendars)
        self.lateness = float(allowed_lateness or 0.0)
        #: with epoch multiples only, the finest interval's final bucket decides lateness;
        #: otherwise the latest end of a final bucket, over every interval (as the event path)
        self.finest = (
            min(g.seconds for g in self.grids) if all(g.aligned for g in self.grids) else 0
        )
        self.high = NEVER  #: the highest event time (or watermark) seen
        self.events = 0
        self.late = 0
        self.final: list[float] = [NEVER] * len(self.grids)
        #: per interval, the winners of buckets not final yet: their times and values
        self.open: list[tuple[Array, Col]] = [(np.empty(0), Col.empty()) for _ in self.grids]

    @property
    def watermark(self) -> float:
        return self.high - self.lateness if self.high not in (NEVER, END) else self.high

    def push(self, chunk: Chunk) -> list[tuple[Col, float]]:
        """Bucket a chunk; per interval, the buckets it made final and the *final through*."""
        ts, marks = chunk.ts, chunk.marks
        rows: Array | None = None  # the chunk's rows of ``ts`` when some were dropped
        ordered = True
        if len(ts):
            self.events += len(ts) if marks is None else len(ts) - int(marks.sum())
            ordered = bool((ts[1:] >= ts[:-1]).all())
            # In time order, no event is late once the first is not: each one's watermark is
            # at most its predecessor's time.
            if not ordered or marks is not None or ts[0] < self._late_before():
                valid = self._not_late(ts)
                if marks is not None:
                    late = int((~valid & ~marks).sum())
                    valid &= ~marks
                else:
                    late = len(ts) - int(valid.sum())
                if late or marks is not None:
                    self.late += late
                    rows = np.flatnonzero(valid)
                    ts = ts[rows]
            self.high = max(self.high, float(chunk.ts[-1] if ordered else chunk.ts.max()))
        wm = self.watermark
        out = []
        for k, grid in enumerate(self.grids):
            through = grid.through(wm)
            out.append(self._close(k, ts, ordered, chunk, rows, max(through, self.final[k])))
        return out

    def end(self) -> list[tuple[Col, float]]:
        """End of stream: every open bucket is final."""
        self.high = END
        none = Chunk(np.empty(0), [], None, True)
        return [self._close(k, none.ts, True, none, None, END) for k in range(len(self.grids))]

    def _late_before(self) -> float:
        """Events before this time are late (the end of the last final finest bucket)."""
        if self.high == NEVER:
            return NEVER
        s = self.finest
        if s:
            return float((self.high - self.lateness) // s * s)
        return max(float(g.final_ends(np.array([self.watermark]))[0]) for g in self.grids)

    def _not_late(self, ts: Array) -> Array:
        before = np.maximum.accumulate(ts)
        before[1:] = before[:-1]
        before[0] = NEVER
        np.maximum(before, self.high, out=before)
        seen = before != NEVER
        valid = np.ones(len(ts), dtype=bool)
        if seen.any():
            s = self.finest
            marks = before[seen] - self.lateness
            if s:
                cut = np.floor_divide(marks, s) * s
            else:
                cut = np.max([g.final_ends(marks) for g in self.grids], axis=0)
            valid[seen] = ts[seen] >= cut
        return valid

    def _close(
        self, k: int, ts: Array, ordered: bool, chunk: Chunk, rows: Array | None, through: float
    ) -> tuple[Col, float]:
        """Merge the chunk's kept events (``ts``, at ``rows`` of the chunk; ``ordered``: in
        time order) into interval ``k``'s open buckets; split off those final through
        ``through``."""
        self.final[k] = through
        held_t, held_v = self.open[k]
        if len(ts):
            held = len(held_t)
            buckets = self.grids[k].index(ts)
            if held:
                ordered = ordered and bool(held_t[-1] <= ts[0])
                buckets = np.concatenate((held_v.buckets, buckets))
                times = np.concatenate((held_t, ts))
            else:
                times = ts
            last = _winners(buckets, times, ordered)
            buckets, times = buckets[last], times[last]
            fresh = last - held  # rows of ``ts``; negative: a held winner
            kept = fresh >= 0
            if held and not kept.all():  # some held winners stand: merge them in bucket order
                new = fresh[kept]
                pool = Col.join(
                    held_v.select(last[~kept]),
                    chunk.col(buckets[kept], new if rows is None else rows[new]),
                )
                values = pool.select(np.argsort(pool.buckets, kind="stable"))
            else:
                values = chunk.col(buckets, fresh if rows is None else rows[fresh])
        else:
            times, values = held_t, held_v
        buckets = values.buckets
        if through == END:
            cut = len(buckets)
        elif through == NEVER:
            cut = 0
        else:
            cut = int(np.searchsorted(buckets, int(through), side="right"))
        self.open[k] = (times[cut:], values.cut(cut))
        return values.cut(0, cut), through


def _winners(buckets: Array, times: Array, ordered: bool) -> Array:
    """Row of each bucket's last event by time, ties by arrival (rows are in arrival order),
    in bucket order; ``ordered``: the times do not decrease."""
    if not ordered:
        order = np.lexsort((np.arange(len(times)), times, buckets))
        ordered_buckets = buckets[order]
        ends = np.flatnonzero(ordered_buckets[1:] != ordered_buckets[:-1])
        return order[np.append(ends, len(order) - 1)]  # type: ignore[no-any-return]
    ends = np.flatnonzero(buckets[1:] != buckets[:-1])
    return np.append(ends, len(buckets) - 1)
