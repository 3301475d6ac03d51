"""Bucket calendars over arrays: :mod:`qmtl.buckets`' rule for a whole column of times.

Each :class:`Grid` wraps the series' own :class:`~qmtl.buckets.Calendar` (the one the event
path uses) and answers for arrays: a :class:`~qmtl.buckets.Uniform` calendar with the same
arithmetic (``floor((ts - origin) / s)``, in float64 exactly as Python's floats), a
:class:`~qmtl.buckets.Sessions` calendar (days closing at a zone's local time, daylight saving
included) by ``searchsorted`` over the bucket ends the calendar itself computes for the span of
the chunk. Scalar questions (``through`` a watermark) go to the calendar unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from qmtl.buckets import Calendar, Uniform

Array = np.ndarray[Any, Any]


class Grid:
    """One interval's calendar, asked about arrays."""

    __slots__ = ("aligned", "calendar", "origin", "seconds", "uniform")

    def __init__(self, calendar: Calendar) -> None:
        self.calendar = calendar
        self.aligned = calendar.aligned  #: epoch multiples ``[b*s, (b+1)*s)``
        self.seconds = calendar.seconds
        self.uniform = isinstance(calendar, Uniform)
        self.origin = calendar.origin if isinstance(calendar, Uniform) else 0

    def index(self, ts: Array) -> Array:
        """The bucket of each time (int64)."""
        if self.aligned:
            aligned: Array = np.floor_divide(ts, self.seconds)
            return aligned.astype(np.int64)
        if self.uniform:
            shifted: Array = np.floor_divide(ts - self.origin, self.seconds)
            return shifted.astype(np.int64)
        first = self.calendar.index(float(ts.min()))
        ends = self._ends(first, self.calendar.index(float(ts.max())))
        # bucket b holds [end(b - 1), end(b)): count the ends at or before each time
        return first + np.searchsorted(ends, ts, side="right").astype(np.int64)

    def ends(self, buckets: Array) -> Array:
        """The end of each bucket (float64), as ``calendar.end``."""
        if self.uniform:
            return (self.origin + (buckets + 1) * self.seconds).astype(np.float64)
        if not len(buckets):
            return np.empty(0)
        first = int(buckets[0])
        table = self._ends(first, int(buckets[-1]))
        picked: Array = table[buckets - first]
        return picked

    def through(self, watermark: float) -> float:
        """The last bucket ``watermark`` makes final."""
        return self.calendar.through(watermark)

    def final_ends(self, watermarks: Array) -> Array:
        """For each watermark, the end of the last bucket it makes final (``end(through)``):
        an event before it is late. ``-inf`` watermarks give ``-inf``."""
        out = np.full(len(watermarks), -math.inf)
        seen = watermarks != -math.inf
        if not seen.any():
            return out
        marks = watermarks[seen]
        if self.uniform:
            s, origin = self.seconds, self.origin
            out[seen] = origin + np.floor_divide(marks - origin, s) * s
        else:
            out[seen] = self.ends(self.index(marks) - 1)
        return out

    def _ends(self, first: int, last: int) -> Array:
        end = self.calendar.end
        return np.array([end(b) for b in range(first, last + 1)], dtype=np.float64)
