"""State backends: where every node's per-interval history lives.

A series is identified by a :class:`SeriesKey` ``(pipeline, node_id, interval)``. It holds one
value per bucket, addressed by the bucket's timestamp (the bucket end, epoch seconds), so
writing a bucket again replaces it. Writes trim the series to ``max_items`` and refresh its TTL
(``period × interval``); a series not written for longer than its TTL expires as a whole.
``max_items=None`` keeps every bucket and ``ttl=None`` never expires: a pipeline's
``keep_history`` (backtests) writes that way, and the series stays until it is deleted.

Engines hand a run's buckets over in bulk through :func:`column_writer`: a backend whose class
defines ``write_columns`` (:class:`ColumnWriter`, optional) receives them as parallel columns,
which costs no object per bucket; any other backend receives :class:`BucketWrite` objects
through ``write_many``. Either way the result equals writing the buckets one by one, in order.
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import compress, islice, pairwise, repeat
from operator import is_not, lt
from typing import Any, NamedTuple, Protocol, cast, runtime_checkable

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


class ColumnWriter(Protocol):
    """Optional bulk form a backend may define (see :func:`column_writer`)."""

    def write_columns(
        self,
        keys: Sequence[SeriesKey],
        timestamps: Sequence[float],
        values: Sequence[Any],
        max_items: Sequence[int | None],
        ttls: Sequence[int | None],
    ) -> None:
        """Store bucket ``i`` (``keys[i]``, ``timestamps[i]``, ...) for every ``i``, in order:
        the same result as ``write`` called for each, one after the other."""
        ...


WriteColumns = Callable[
    [
        Sequence[SeriesKey],
        Sequence[float],
        Sequence[Any],
        Sequence[int | None],
        Sequence[int | None],
    ],
    None,
]


def column_writer(state: StateBackend, *, checked: bool = False) -> WriteColumns:
    """How an engine writes buckets in bulk to ``state``: its class's ``write_columns`` when it
    defines one, else ``write_many`` with one :class:`BucketWrite` per bucket. ``checked``:
    the caller takes care of :func:`qmtl.codec.check` (the in-process engines run it on every
    value, or were told not to), so the memory backend (exactly that class, as with
    :func:`writer`) does not walk the values again.

    Only a method of the backend's *class* counts, so a wrapper that filters ``write`` and
    ``write_many`` and forwards other attributes (``__getattr__``) keeps seeing every write.
    """
    if checked and type(state) is MemoryStateBackend:
        return state.write_columns_unchecked
    if callable(getattr(type(state), "write_columns", None)):
        return cast("ColumnWriter", state).write_columns
    write_many = state.write_many

    def write_columns(
        keys: Sequence[SeriesKey],
        timestamps: Sequence[float],
        values: Sequence[Any],
        max_items: Sequence[int | None],
        ttls: Sequence[int | None],
    ) -> None:
        write_many(list(map(BucketWrite, keys, timestamps, values, max_items, ttls)))

    return write_columns


def _check_all(values: Iterable[Any]) -> None:
    """:func:`qmtl.codec.check` of every value that is not a plain scalar."""
    plain = PLAIN_TYPES
    for value in values:
        if type(value) not in plain:
            check(value)


#: Bulk writes of at most this many buckets are stored one by one, without looking for runs.
_FEW = 128


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
        # _store for one bucket, inline: a live stream writes its buckets one by one
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
            self._store(((key, timestamp, value, max_items, ttl),), now)
            return
        if max_items is not None and len(stamps) > max_items:
            excess = len(stamps) - max_items
            del stamps[:excess]
            del series.values[:excess]
        series.max_items = max_items
        series.ttl = ttl
        series.last_update = now

    def write_many(self, writes: Iterable[BucketWrite]) -> None:
        if self._own_write:  # every value is checked before anything is stored
            writes = list(writes)
            _check_all(write.value for write in writes)
            self._store(writes, self._clock())
        else:  # a subclass overrides write(): every bucket goes through it
            for key, timestamp, value, max_items, ttl in writes:
                self.write(key, timestamp, value, max_items=max_items, ttl=ttl)

    def write_columns(
        self,
        keys: Sequence[SeriesKey],
        timestamps: Sequence[float],
        values: Sequence[Any],
        max_items: Sequence[int | None],
        ttls: Sequence[int | None],
    ) -> None:
        """Store bucket ``i`` of every column, in order (see :class:`ColumnWriter`); every
        value is checked (:func:`qmtl.codec.check`) before anything is stored."""
        if not (self._own_write and self._own_write_many):
            # a subclass overrides write() or write_many(): every bucket goes through it
            self.write_many(map(BucketWrite, keys, timestamps, values, max_items, ttls))
            return
        _check_all(values)
        self.write_columns_unchecked(keys, timestamps, values, max_items, ttls)

    def write_columns_unchecked(
        self,
        keys: Sequence[SeriesKey],
        timestamps: Sequence[float],
        values: Sequence[Any],
        max_items: Sequence[int | None],
        ttls: Sequence[int | None],
    ) -> None:
        """:meth:`write_columns` without :func:`qmtl.codec.check`, for the in-process engines
        (which check every value themselves).

        Consecutive buckets of one series are a run; a run newer than the series' newest
        bucket, in increasing time and with one ``max_items``, is appended at once."""
        count = len(keys)
        if not count == len(timestamps) == len(values) == len(max_items) == len(ttls):
            raise ValueError("write_columns needs columns of equal length")
        now = self._clock()
        if count <= _FEW:  # not worth looking for runs (a one-shot run of a small pipeline)
            self._store(zip(keys, timestamps, values, max_items, ttls, strict=False), now)
            return
        starts = [0, *compress(range(1, count), map(is_not, islice(keys, 1, None), keys))]
        if len(starts) * 4 > count:  # mostly one bucket per series (a one-shot run)
            self._store(zip(keys, timestamps, values, max_items, ttls, strict=False), now)
            return
        starts.append(count)
        for low, high in pairwise(starts):
            self._store_run(
                keys[low],
                timestamps[low:high],
                values[low:high],
                max_items[low:high],
                ttls[low:high],
                now,
            )

    def _store_run(
        self,
        key: SeriesKey,
        timestamps: Sequence[float],
        values: Sequence[Any],
        max_items: Sequence[int | None],
        ttls: Sequence[int | None],
        now: float,
    ) -> None:
        cap = max_items[-1]
        series = self._series.get(key)
        if series is None or (series.ttl is not None and now >= series.last_update + series.ttl):
            series = self._series[key] = _Series()
        stamps = series.timestamps
        appendable = (
            (not stamps or timestamps[0] > stamps[-1])
            and all(map(lt, timestamps, islice(timestamps, 1, None)))
            and max_items.count(cap) == len(max_items)
        )
        if not appendable:  # a replaced or older bucket, or max_items changing: one by one
            self._store(zip(repeat(key), timestamps, values, max_items, ttls), now)
            return
        stamps.extend(timestamps)
        series.values.extend(values)
        excess = 0 if cap is None else len(stamps) - cap
        if excess > 0:
            del stamps[:excess]
            del series.values[:excess]
        series.max_items = cap
        series.ttl = ttls[-1]
        series.last_update = now

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._own_write = cls.write is MemoryStateBackend.write
        cls._own_write_many = cls.write_many is MemoryStateBackend.write_many

    _own_write = True
    _own_write_many = True

    def _store(
        self, rows: Iterable[tuple[SeriesKey, float, Any, int | None, int | None]], now: float
    ) -> None:
        """``write`` for each row at wall-clock time ``now``, consecutive rows of one series
        sharing its lookup; appending a newer bucket or replacing the newest is the fast path."""
        everything = self._series
        key: SeriesKey | None = None
        series: _Series
        stamps: list[float]
        stored: list[Any]
        for row_key, timestamp, value, max_items, ttl in rows:
            if row_key is not key:
                key = row_key
                found = everything.get(key)
                if found is None or (
                    found.ttl is not None and now >= found.last_update + found.ttl
                ):
                    found = everything[key] = _Series()
                series, stamps, stored = found, found.timestamps, found.values
            if not stamps or timestamp > stamps[-1]:
                stamps.append(timestamp)
                stored.append(value)
            elif timestamp == stamps[-1]:
                stored[-1] = value
            else:
                at = bisect_left(stamps, timestamp)
                if stamps[at] == timestamp:
                    stored[at] = value
                else:
                    stamps.insert(at, timestamp)
                    stored.insert(at, value)
            if max_items is not None and len(stamps) > max_items:
                del stamps[: len(stamps) - max_items]
                del stored[: len(stored) - max_items]
            series.max_items = max_items
            series.ttl = ttl
            series.last_update = now

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
