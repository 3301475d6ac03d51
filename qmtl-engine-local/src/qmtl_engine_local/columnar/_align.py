"""Columns of final buckets, and the as-of / window alignment of a node over them.

:class:`Col` is a run of one series' final buckets: increasing bucket indexes and their values,
held as a Python list, a numpy array or both (each made from the other on demand).
:class:`ColumnAligner` is :class:`qmtl.streaming.NodeAligner` over columns: the same rule
(bucket ``b`` is computed once every upstream is final through ``b``, some upstream has a value
in ``b`` and every upstream has one at or before ``b``; ``window=N`` waits for ``N`` values),
applied to whole runs of buckets with ``searchsorted`` instead of bucket by bucket.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from qmtl.vectorized import EXACT_DTYPES, column_array

END = math.inf
NEVER = -math.inf
Array = np.ndarray[Any, Any]
_EMPTY = np.empty(0, dtype=np.int64)


class Col:
    """Final buckets of one series: ``buckets`` (int64, increasing) and their values.

    ``py()`` is the values as Python objects (what scalar functions and the state receive);
    ``arr()`` the same values as one numpy array, or ``None`` when the rows would not each
    become that array on their own (see :func:`qmtl.vectorized.column_array`).
    """

    __slots__ = ("_arr", "_exact", "_py", "buckets")

    def __init__(
        self, buckets: Array, py: list[Any] | None = None, arr: Array | None = None
    ) -> None:
        self.buckets = buckets
        self._py = py
        self._arr = arr
        #: whether ``arr`` is what numpy makes of the values (None: not known yet)
        self._exact: bool | None = True if arr is not None else None

    @classmethod
    def empty(cls) -> Col:
        return cls(_EMPTY, [])

    @classmethod
    def from_rows(cls, buckets: Array, rows: Array) -> Col:
        """A vectorized function's output: rows that survive ``tolist`` stay an array."""
        if rows.dtype.name in EXACT_DTYPES:
            return cls(buckets, None, rows)
        return cls(buckets, rows.tolist())

    def __len__(self) -> int:
        return len(self.buckets)

    def exact(self) -> bool:
        """Whether the values are held as an array of plain numbers (no check needed)."""
        return bool(self._exact) and self._arr is not None and self._arr.dtype.kind in "biuf"

    def py(self) -> list[Any]:
        if self._py is None:
            assert self._arr is not None
            self._py = self._arr.tolist()
        return self._py

    def values(self, start: int, stop: int) -> list[Any]:
        """Python values of rows ``start:stop`` (without converting the others)."""
        if self._py is None and self._arr is not None:
            return self._arr[start:stop].tolist()  # type: ignore[no-any-return]
        return self.py()[start:stop]

    def arr(self) -> Array | None:
        if self._exact is None:
            self._arr = column_array(self.py())
            self._exact = self._arr is not None
        return self._arr if self._exact else None

    def cut(self, start: int, stop: int | None = None) -> Col:
        """Rows ``start:stop``."""
        piece = Col(self.buckets[start:stop])
        if self._exact:
            assert self._arr is not None
            piece._arr, piece._exact = self._arr[start:stop], True
        elif self._exact is False:
            piece._exact = False
        if self._py is not None:
            piece._py = self._py[start:stop]
        elif piece._arr is None:
            piece._py = self.py()[start:stop]
        return piece

    def select(self, rows: Array) -> Col:
        """The rows at ``rows``, as a column."""
        if self._exact:
            assert self._arr is not None
            return Col(self.buckets[rows], None, self._arr[rows])
        return Col(self.buckets[rows], list(map(self.py().__getitem__, rows.tolist())))

    def take(self, rows: Array, dense: bool) -> list[Any]:
        """Python values at ``rows`` (non-decreasing; ``dense``: consecutive), as a list."""
        values = self.py()
        if dense and len(rows):
            return values[int(rows[0]) : int(rows[-1]) + 1]
        return list(map(values.__getitem__, rows.tolist()))

    @staticmethod
    def join(a: Col, b: Col) -> Col:
        """``a``'s rows, then ``b``'s."""
        if not len(a):
            return b
        if not len(b):
            return a
        out = Col(np.concatenate((a.buckets, b.buckets)))
        if a._exact and b._exact:
            assert a._arr is not None and b._arr is not None
            if a._arr.dtype == b._arr.dtype and a._arr.shape[1:] == b._arr.shape[1:]:
                out._arr, out._exact = np.concatenate((a._arr, b._arr)), True
        elif a._exact is False or b._exact is False:
            out._exact = False
        if out._arr is None or (a._py is not None and b._py is not None):
            out._py = a.py() + b.py()
        return out


class Ready:
    """What a node computes in one step: ``buckets`` and, per upstream, the column the values
    come from, ``counts[i][j]``, how many of its rows are at or before ``buckets[j]``, and
    ``dense[i]``, whether those counts are consecutive (the upstream has every bucket)."""

    __slots__ = ("buckets", "columns", "counts", "dense")

    def __init__(
        self, buckets: Array, columns: list[Col], counts: list[Array], dense: list[bool]
    ) -> None:
        self.buckets = buckets
        self.columns = columns
        self.counts = counts
        self.dense = dense


class ColumnAligner:
    """One node at one interval, fed runs of its upstreams' final buckets.

    Per upstream it keeps the buckets not computed yet and the last ``window`` (or one) value
    before them: the as-of value or window a later bucket needs.
    """

    __slots__ = ("buffers", "done", "final", "keep")

    def __init__(self, upstreams: int, window: int | None) -> None:
        self.keep = window or 1
        self.final: list[float] = [NEVER] * upstreams
        self.buffers: list[Col] = [Col.empty() for _ in range(upstreams)]
        #: the node's own *final through* (bucket index)
        self.done: float = NEVER

    def push(self, inputs: list[tuple[Col | None, float] | None]) -> Ready | None:
        """Each upstream's new final buckets and *final through* (``None``: no news); returns
        the buckets that became computable, or ``None`` when the node's frontier stayed."""
        final, buffers = self.final, self.buffers
        for i, news in enumerate(inputs):
            if news is None:
                continue
            col, through = news
            if col is not None and len(col):
                buffers[i] = Col.join(buffers[i], col)
                through = max(through, int(col.buckets[-1]))
            if through > final[i]:
                final[i] = through
        frontier = min(final)
        done = self.done
        if frontier <= done:
            return None
        self.done = frontier
        spans = [_span(col.buckets, done, frontier) for col in buffers]
        if len(buffers) == 1:
            (low, high), column = spans[0], buffers[0]
            buckets = column.buckets[low:high]
            counts = [np.arange(low + 1, high + 1)]
            dense = [True]
        else:
            parts = [col.buckets[low:high] for col, (low, high) in zip(buffers, spans, strict=True)]
            buckets = _union(parts)
            dense = [len(part) == len(buckets) for part in parts]  # has every bucket
            counts = [
                np.arange(low + 1, high + 1)
                if every
                else np.searchsorted(col.buckets, buckets, side="right")
                for col, every, (low, high) in zip(buffers, dense, spans, strict=True)
            ]
        keep = self.keep
        full = counts[0] >= keep
        for count in counts[1:]:
            full &= count >= keep
        if not full.all():  # warm-up: ``full`` is false, then true (counts only grow)
            buckets = buckets[full]
            counts = [count[full] for count in counts]
        ready = Ready(buckets, list(buffers), counts, dense)
        for i, (col, (_low, high)) in enumerate(zip(buffers, spans, strict=True)):
            start = max(0, high - keep)
            if start:
                buffers[i] = col.cut(start)
        return ready


def _union(parts: list[Array]) -> Array:
    """The sorted union of increasing bucket runs (often all equal: upstreams of one pace)."""
    first = parts[0]
    if all(len(part) == len(first) and np.array_equal(part, first) for part in parts[1:]):
        return first
    merged = np.concatenate(parts)
    merged.sort()
    keep = np.empty(len(merged), dtype=bool)
    keep[:1] = True
    np.not_equal(merged[1:], merged[:-1], out=keep[1:])
    return merged[keep]


def _span(buckets: Array, done: float, frontier: float) -> tuple[int, int]:
    """Rows of ``buckets`` in ``(done, frontier]``."""
    low = 0 if done == NEVER else int(np.searchsorted(buckets, int(done), side="right"))
    high = (
        len(buckets) if frontier == END else int(np.searchsorted(buckets, int(frontier), "right"))
    )
    return low, high
