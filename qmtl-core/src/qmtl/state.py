"""State backends: where every node's per-interval history lives.

A series is identified by a :class:`SeriesKey` ``(pipeline, node_id, interval)``. It holds one
value per bucket, addressed by the bucket's timestamp (the bucket end, epoch seconds), so
writing a bucket again replaces it. Writes trim the series to ``max_items`` and refresh its TTL
(``period × interval``); a series not written for longer than its TTL expires as a whole.
``max_items=None`` keeps every bucket and ``ttl=None`` never expires: a pipeline's
``keep_history`` (backtests) writes that way, and the series stays until it is deleted.
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, Protocol, runtime_checkable

from qmtl.codec import PLAIN_TYPES, check
from qmtl.errors import StateBackendError


class SeriesKey(NamedTuple):
    """Address of one history series."""

    pipeline: str
    node_id: str
    interval: str


class BucketWrite(NamedTuple):
    """One bucket value to store (see :meth:`StateBackend.write_many`)."""

    key: SeriesKey
    timestamp: float
    value: Any
    max_items: int | None
    ttl: int | None


def writer(state: StateBackend) -> Callable[..., None]:
    """The write method an in-process engine that checks values itself should call: the memory
    backend's :meth:`~MemoryStateBackend.write_unchecked` (exactly that class, not a view
    wrapping it), any other backend's ``write``."""
    if type(state) is MemoryStateBackend:
        return state.write_unchecked
    return state.write


def key_prefix(pipeline: str) -> str:
    """The key prefix every backend scopes a pipeline's data under: ``qmtl:{pipeline}:``."""
    return f"qmtl:{pipeline}:"


@contextmanager
def naming(node: str, interval: str) -> Iterator[None]:
    """Re-raise a :class:`StateBackendError` naming the node: a backend knows a series by its
    key (the node's id), the caller knows the node's name."""
    try:
        yield
    except StateBackendError as error:
        raise StateBackendError(f"Node '{node}' at {interval}: {error}") from error


@runtime_checkable
class StateBackend(Protocol):
    """What the engines and the history API need from a store.

    Reads return ``[{"timestamp": float, "value": Any}]`` newest first; ``start_ts`` is
    exclusive and ``end_ts`` inclusive. Failures raise :class:`StateBackendError`; nothing is
    hidden behind an empty result.
    """

    name: str

    def write(
        self,
        key: SeriesKey,
        timestamp: float,
        value: Any,
        *,
        max_items: int | None,
        ttl: int | None,
    ) -> None:
        """Store ``value`` as the bucket at ``timestamp``, replacing it if present; keep the
        newest ``max_items`` buckets (``None``: all) and expire the series ``ttl`` seconds after
        its last write (``None``: never)."""
        ...

    def write_many(self, writes: Iterable[BucketWrite]) -> None:
        """Store several buckets; a backend may send them in one round trip."""
        ...

    def read(
        self,
        key: SeriesKey,
        *,
        count: int | None = None,
        start_ts: float | None = None,
        end_ts: float | None = None,
    ) -> list[dict[str, Any]]:
        """Newest-first buckets of ``key``, at most ``count``, within ``(start_ts, end_ts]``."""
        ...

    def metadata(self, key: SeriesKey) -> dict[str, Any]:
        """``count``, ``max_items``, ``ttl``, ``last_update``, ``oldest``, ``newest`` of ``key``."""
        ...

    def delete(self, pipeline: str, node_id: str | None = None, interval: str | None = None) -> int:
        """Delete a pipeline's, a node's, or one interval's data; return the series removed."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class _Series:
    __slots__ = ("last_update", "max_items", "timestamps", "ttl", "values")

    def __init__(self) -> None:
        self.timestamps: list[float] = []
        self.values: list[Any] = []
        self.max_items: int | None = 100
        self.ttl: int | None = None
        self.last_update = 0.0


class MemoryStateBackend:
    """The embedded default: one process, no server, one instance per pipeline run context.

    ``clock`` (wall-clock seconds) decides TTL expiry; tests may pass a fake one. Values are
    kept as they are (not copied), after the same :func:`qmtl.codec.check` every other store's
    encoding implies, so what the memory store refuses is exactly what Redis refuses. The
    local and mock engines, which check each node's value once themselves, write through
    :meth:`write_unchecked` so a value is never walked twice.
    """

    name = "memory"
    #: Its data lives only as long as this process (``qmtl history`` in a new process cannot
    #: read it); a backend other processes can read leaves this out or sets it False.
    in_process = True

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._series: dict[SeriesKey, _Series] = {}
        self._clock = clock

    def write(
        self,
        key: SeriesKey,
        timestamp: float,
        value: Any,
        *,
        max_items: int | None,
        ttl: int | None,
    ) -> None:
        if type(value) not in PLAIN_TYPES:
            check(value)
        self.write_unchecked(key, timestamp, value, max_items=max_items, ttl=ttl)

    def write_unchecked(
        self,
        key: SeriesKey,
        timestamp: float,
        value: Any,
        *,
        max_items: int | None,
        ttl: int | None,
    ) -> None:
        """:meth:`write` without :func:`qmtl.codec.check`: for the in-process engines, which
        check every value themselves (or were told not to, ``check_values=False``)."""
        now = self._clock()
        series = self._series.get(key)
        if series is None or (series.ttl is not None and now >= series.last_update + series.ttl):
            series = self._series[key] = _Series()
        stamps = series.timestamps
        if not stamps or timestamp > stamps[-1]:
            stamps.append(timestamp)
            series.values.append(value)
        elif timestamp == stamps[-1]:
            series.values[-1] = value
        else:
            at = bisect_left(stamps, timestamp)
            if stamps[at] == timestamp:
                series.values[at] = value
            else:
                stamps.insert(at, timestamp)
                series.values.insert(at, value)
        if max_items is not None and len(stamps) > max_items:
            excess = len(stamps) - max_items
            del stamps[:excess]
            del series.values[:excess]
        series.max_items = max_items
        series.ttl = ttl
        series.last_update = now

    def write_many(self, writes: Iterable[BucketWrite]) -> None:
        for key, timestamp, value, max_items, ttl in writes:
            self.write(key, timestamp, value, max_items=max_items, ttl=ttl)

    def read(
        self,
        key: SeriesKey,
        *,
        count: int | None = None,
        start_ts: float | None = None,
        end_ts: float | None = None,
    ) -> list[dict[str, Any]]:
        series = self._live(key)
        if series is None:
            return []
        stamps = series.timestamps
        low = 0 if start_ts is None else bisect_right(stamps, start_ts)
        high = len(stamps) if end_ts is None else bisect_right(stamps, end_ts)
        if count is not None:
            if count < 0:
                raise StateBackendError(f"count must be >= 0, got {count}")
            low = max(low, high - count)
        return [
            {"timestamp": stamps[i], "value": series.values[i]}
            for i in range(high - 1, low - 1, -1)
        ]

    def metadata(self, key: SeriesKey) -> dict[str, Any]:
        series = self._live(key)
        if series is None:
            return {
                "count": 0,
                "max_items": None,
                "ttl": None,
                "last_update": None,
                "oldest": None,
                "newest": None,
            }
        return {
            "count": len(series.timestamps),
            "max_items": series.max_items,
            "ttl": series.ttl,
            "last_update": series.last_update,
            "oldest": series.timestamps[0] if series.timestamps else None,
            "newest": series.timestamps[-1] if series.timestamps else None,
        }

    def delete(self, pipeline: str, node_id: str | None = None, interval: str | None = None) -> int:
        doomed = [
            key
            for key in self._series
            if key.pipeline == pipeline
            and (node_id is None or key.node_id == node_id)
            and (interval is None or key.interval == interval)
        ]
        for key in doomed:
            del self._series[key]
        return len(doomed)

    def close(self) -> None:
        """Nothing to release."""

    def _live(self, key: SeriesKey) -> _Series | None:
        series = self._series.get(key)
        if series is not None and self._expired(series):
            del self._series[key]
            return None
        return series

    def _expired(self, series: _Series) -> bool:
        return series.ttl is not None and self._clock() >= series.last_update + series.ttl
