"""What every part of :mod:`qmtl.streaming` shares: the end of a stream, the pending-state
encoding of bucket bounds, and :class:`OutputEvent`."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from qmtl.buckets import plain

#: "Final through" of a stream that has ended: every bucket is final.
END = math.inf
NEVER = -math.inf
MISSING: Any = object()
NOTHING: tuple[Any, ...] = ()
#: ``(interval position, [(bucket, value), ...], final through)`` of one interval.
Closure = tuple[int, list[tuple[int, Any]], float]
STATE_VERSION = 1


def final_through(watermark: float, seconds: int) -> float:
    """The last bucket index a watermark makes final (``-inf`` if none, ``END`` stays END), on
    the interval's calendar without offset (epoch multiples; Monday weeks)."""
    return plain(seconds).through(watermark)


def encode_bound(x: float) -> Any:
    """A bucket bound as pending state carries it: ``"end"`` for END, ``None`` for never."""
    if x == END:
        return "end"
    if x == NEVER:
        return None
    return x


def decode_bound(x: Any) -> float:
    """The bound :func:`encode_bound` wrote."""
    if x == "end":
        return END
    if x is None:
        return NEVER
    return x  # type: ignore[no-any-return]


class OutputEvent(NamedTuple):
    """A final bucket of one node at one interval."""

    node: str
    interval: str
    ts: float  #: the bucket end, epoch seconds
    value: Any
    bucket: int  #: the bucket's index: ``floor(event ts / interval seconds)`` on epoch multiples
