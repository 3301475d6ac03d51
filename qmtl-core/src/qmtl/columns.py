"""Events held as columns: :class:`ArraySource` and the ``event_chunks`` protocol.

A source may offer, besides ``events()`` (``(ts, value)`` pairs, what every engine reads),
``event_chunks(size)``: the same events in arrival order as ``(ts, values)`` column pairs of at
most ``size`` rows. The local engine's columnar path (``run(columnar=True)``) reads those
columns whole, so a backtest over a million events does not touch each one in Python; every
other path reads ``events()``. Both must describe the same events: ``ts`` epoch seconds (ints
or floats), ``values`` a numpy array (its rows are the values, as ``tolist()`` gives them) or a
sequence of values.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from qmtl.errors import SourceError


def _rows(column: Any) -> list[Any]:
    """A column's rows as Python values: ``tolist()`` for numpy arrays (and pandas/polars
    series), else the items."""
    tolist = getattr(column, "tolist", None)
    return tolist() if callable(tolist) else list(column)


class ArraySource:
    """Events given as two columns of equal length, in arrival order.

    ``ts`` holds epoch seconds (a numpy array, a list, ``series.to_numpy()``); ``values`` the
    value of each event. ``SourceNode("px", source=ArraySource(ts, prices))`` streams on every
    engine, one ``(ts, value)`` pair at a time (values as Python numbers: ``tolist()``); the
    columnar path reads the arrays directly, and vectorized nodes receive slices of them. The
    columns are not copied: do not change them while a run reads them.
    """

    bounded = True

    def __init__(self, ts: Any, values: Any) -> None:
        if len(ts) != len(values):
            raise SourceError(
                f"ArraySource: ts has {len(ts)} rows but values has {len(values)}; give one "
                "value per event time"
            )
        self.ts = ts
        self.values = values

    def __len__(self) -> int:
        return len(self.ts)

    def events(self) -> Iterator[tuple[Any, Any]]:
        """``(ts, value)`` pairs, as Python values."""
        return zip(_rows(self.ts), _rows(self.values), strict=True)

    def event_chunks(self, size: int) -> Iterator[tuple[Any, Any]]:
        """``(ts, values)`` slices of at most ``size`` rows (views, not copies)."""
        for start in range(0, len(self.ts), size):
            yield self.ts[start : start + size], self.values[start : start + size]

    def latest(self) -> Any:
        """The last event's value (the one-shot form)."""
        if not len(self.values):
            raise SourceError("ArraySource has no events")
        return _rows(self.values[-1:])[0]

    def __repr__(self) -> str:
        # What a node id sees: the length and a sample, as for a long list of events.
        count = len(self.ts)
        step = max(1, count // 256)
        picks = sorted(
            {*range(min(count, 64)), *range(0, count, step), *range(max(0, count - 64), count)}
        )
        sample = list(zip(_sample(self.ts, picks), _sample(self.values, picks), strict=True))
        return f"ArraySource({count} events, {sample!r})"


def _sample(column: Any, picks: list[int]) -> list[Any]:
    if type(column).__module__ == "numpy":
        return _rows(column[picks])  # one gather, not the whole column
    return [column[i] for i in picks]


__all__ = ["ArraySource"]
