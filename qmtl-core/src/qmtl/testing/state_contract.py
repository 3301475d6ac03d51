"""The state-backend contract (SPEC §5.3, §7): what every store must do, tested the same way.

Subclass :class:`StateBackendContract`; pytest collects the inherited tests. Provide a fresh
backend through the ``backend`` fixture and, when the store has an injectable clock, make
``advance(seconds)`` move it (the default really sleeps, so keep ``ttl`` short)::

    from qmtl.testing.state_contract import FakeClock, StateBackendContract

    class TestMemoryState(StateBackendContract):
        @pytest.fixture
        def clock(self):
            return FakeClock()

        @pytest.fixture
        def backend(self, clock):
            return MemoryStateBackend(clock=clock)

        @pytest.fixture
        def advance(self, clock):
            return clock.advance

    class TestRedisState(StateBackendContract):
        ttl = 1                       # seconds; advance() sleeps past it

        @pytest.fixture
        def backend(self, redis_url):
            backend = RedisStateBackend(url=redis_url)
            yield backend
            backend.close()

Every test writes under its own random pipeline name and deletes it afterwards, so a shared
server is safe. Timestamps are bucket ends in epoch seconds (floats). Values are those of
:mod:`qmtl.codec` (SPEC §5.4): the value tests check, against hand-written lists in
:mod:`qmtl.testing.values`, that each comes back as itself (type and value, ``NaN`` included)
and that every other value is refused with :class:`~qmtl.errors.ValueEncodeError`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from qmtl.errors import StateBackendError, ValueEncodeError
from qmtl.state import BucketWrite, SeriesKey, StateBackend, column_writer
from qmtl.testing.values import HAS_NUMPY, REFUSED, ROUND_TRIPS, numpy_round_trips, same


class FakeClock:
    """A settable wall clock for stores that accept ``clock=``."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


T0 = 1_700_006_400.0
DAY = 86_400.0


class StateBackendContract:
    """Inherit and provide the ``backend`` fixture (and ``advance`` for a fake clock)."""

    #: TTL (seconds) used by the retention tests.
    ttl: int = 2

    @pytest.fixture
    def backend(self) -> StateBackend:
        pytest.fail(f"{type(self).__name__}: override the backend fixture")

    @pytest.fixture
    def advance(self) -> Callable[[float], None]:
        return time.sleep

    @pytest.fixture
    def pipeline(self, backend: StateBackend) -> Iterator[str]:
        name = f"contract-{uuid.uuid4().hex[:10]}"
        yield name
        backend.delete(name)

    @staticmethod
    def key(pipeline: str, node: str = "n1", interval: str = "1d") -> SeriesKey:
        return SeriesKey(pipeline, node, interval)

    def fill(
        self,
        backend: StateBackend,
        key: SeriesKey,
        count: int,
        *,
        max_items: int | None = 100,
        ttl: int | None = None,
    ) -> None:
        for i in range(count):
            backend.write(key, T0 + i * DAY, {"i": i}, max_items=max_items, ttl=ttl)

    # -- writing and reading -------------------------------------------------------------
    def test_writing_a_bucket_again_replaces_it(self, backend: StateBackend, pipeline: str) -> None:
        key = self.key(pipeline)
        backend.write(key, T0, 1.5, max_items=10, ttl=None)
        backend.write(key, T0, 2.5, max_items=10, ttl=None)
        assert backend.read(key) == [{"timestamp": T0, "value": 2.5}]
        assert backend.metadata(key)["count"] == 1

    def test_reads_are_newest_first_and_limited_to_count(
        self, backend: StateBackend, pipeline: str
    ) -> None:
        key = self.key(pipeline)
        self.fill(backend, key, 5)
        assert [item["value"]["i"] for item in backend.read(key, count=3)] == [4, 3, 2]
        assert [item["value"]["i"] for item in backend.read(key)] == [4, 3, 2, 1, 0]
        assert backend.read(key, count=0) == []

    def test_out_of_order_writes_are_read_in_time_order(
        self, backend: StateBackend, pipeline: str
    ) -> None:
        key = self.key(pipeline)
        for i in (3, 1, 4, 0, 2):
            backend.write(key, T0 + i * DAY, i, max_items=10, ttl=None)
        assert [item["timestamp"] for item in backend.read(key)] == [
            T0 + i * DAY for i in (4, 3, 2, 1, 0)
        ]

    def test_time_range_has_exclusive_start_and_inclusive_end(
        self, backend: StateBackend, pipeline: str
    ) -> None:
        key = self.key(pipeline)
        self.fill(backend, key, 6)
        items = backend.read(key, start_ts=T0 + 1 * DAY, end_ts=T0 + 4 * DAY)
        assert [item["value"]["i"] for item in items] == [4, 3, 2]
        newest_two = backend.read(key, count=2, start_ts=T0, end_ts=T0 + 4 * DAY)
        assert [item["value"]["i"] for item in newest_two] == [4, 3]
        assert backend.read(key, start_ts=T0 + 5 * DAY) == []

    def test_writes_trim_to_max_items_keeping_the_newest(
        self, backend: StateBackend, pipeline: str
    ) -> None:
        key = self.key(pipeline)
        self.fill(backend, key, 7, max_items=3)
        assert [item["value"]["i"] for item in backend.read(key)] == [6, 5, 4]
        assert backend.metadata(key)["count"] == 3

    def test_values_round_trip(self, backend: StateBackend, pipeline: str) -> None:
        key = self.key(pipeline)
        values = [0.1 + 0.2, -3, "text", None, [1, 2.5, "x"], {"a": {"b": [True, False]}}]
        for i, value in enumerate(values):
            backend.write(key, T0 + i * DAY, value, max_items=10, ttl=None)
        assert [item["value"] for item in reversed(backend.read(key))] == values

    def test_write_many_stores_every_bucket(self, backend: StateBackend, pipeline: str) -> None:
        a, b = self.key(pipeline, "a"), self.key(pipeline, "b", "1h")
        backend.write_many(
            [
                BucketWrite(a, T0, 1, 10, None),
                BucketWrite(b, T0 + 3600, 2, 10, None),
                BucketWrite(a, T0 + DAY, 3, 10, None),
            ]
        )
        assert [i["value"] for i in backend.read(a)] == [3, 1]
        assert backend.read(b) == [{"timestamp": T0 + 3600, "value": 2}]

    def test_bulk_writes_equal_writes_one_by_one(
        self, backend: StateBackend, pipeline: str
    ) -> None:
        """What engines hand over in bulk (:func:`qmtl.state.column_writer`: the backend's
        ``write_columns``, or ``write_many``) is stored exactly as the same writes one by one:
        appends, a replaced bucket, an older bucket inserted and trimmed away, two series
        interleaved."""
        a, b = self.key(pipeline, "bulk", "1m"), self.key(pipeline, "bulk", "1h")
        rows = [
            (a, T0 + 60, 1),
            (a, T0 + 120, 2),
            (b, T0 + 3600, "h"),
            (a, T0 + 120, 20),  # replaces the bucket at T0 + 120
            (a, T0 + 180, 3),
            (a, T0 + 30, "old"),  # older than all: inserted, then trimmed away (max_items 3)
            (b, T0 + 7200, {"x": [1, 2]}),
            (a, T0 + 240, 4),  # the oldest (T0 + 60) is trimmed
        ]
        column_writer(backend)(
            [key for key, _, _ in rows],
            [ts for _, ts, _ in rows],
            [value for _, _, value in rows],
            [3] * len(rows),
            [None] * len(rows),
        )
        assert [(i["timestamp"], i["value"]) for i in backend.read(a)] == [
            (T0 + 240, 4),
            (T0 + 180, 3),
            (T0 + 120, 20),
        ]
        assert [(i["timestamp"], i["value"]) for i in backend.read(b)] == [
            (T0 + 7200, {"x": [1, 2]}),
            (T0 + 3600, "h"),
        ]
        assert (backend.metadata(a)["count"], backend.metadata(b)["count"]) == (3, 2)

        # long runs of one series: 300 newer buckets at once, then 150 starting with a replaced
        # bucket (more than a backend might write one by one)
        c = self.key(pipeline, "bulk", "1d")
        write = column_writer(backend)
        stamps = [T0 + i * DAY for i in range(1, 301)]
        write([c] * 300, stamps, list(range(1, 301)), [5] * 300, [None] * 300)
        assert [i["value"] for i in backend.read(c)] == [300, 299, 298, 297, 296]
        stamps = [T0 + i * DAY for i in range(300, 450)]
        write([c] * 150, stamps, ["replaced", *range(301, 450)], [200] * 150, [None] * 150)
        assert [i["value"] for i in backend.read(c, count=3)] == [449, 448, 447]
        assert backend.read(c, start_ts=T0 + 299 * DAY, end_ts=T0 + 300 * DAY) == [
            {"timestamp": T0 + 300 * DAY, "value": "replaced"}
        ]
        assert backend.metadata(c)["count"] == 154
        assert backend.metadata(c)["oldest"] == T0 + 296 * DAY
        whole = self.key(pipeline, "bulk-whole", "1d")  # max_items None keeps every bucket
        write([whole] * 6, [T0 + i * DAY for i in range(6)], list(range(6)), [None] * 6, [None] * 6)
        assert len(backend.read(whole)) == 6

    def test_series_are_separate_per_node_and_interval(
        self, backend: StateBackend, pipeline: str
    ) -> None:
        backend.write(self.key(pipeline, "n1", "1d"), T0, "day", max_items=10, ttl=None)
        backend.write(self.key(pipeline, "n1", "1h"), T0, "hour", max_items=10, ttl=None)
        backend.write(self.key(pipeline, "n2", "1d"), T0, "other", max_items=10, ttl=None)
        assert backend.read(self.key(pipeline, "n1", "1d"))[0]["value"] == "day"
        assert backend.read(self.key(pipeline, "n1", "1h"))[0]["value"] == "hour"
        assert backend.read(self.key(pipeline, "n2", "1d"))[0]["value"] == "other"

    # -- metadata and retention ------------------------------------------------------------
    def test_metadata_describes_the_series(self, backend: StateBackend, pipeline: str) -> None:
        key = self.key(pipeline)
        self.fill(backend, key, 4, max_items=50, ttl=7 * 86400)
        meta = backend.metadata(key)
        assert meta["count"] == 4
        assert meta["max_items"] == 50
        assert meta["ttl"] == 7 * 86400
        assert meta["oldest"] == T0
        assert meta["newest"] == T0 + 3 * DAY
        assert meta["last_update"] is not None

    def test_metadata_of_an_unknown_series_has_count_zero(
        self, backend: StateBackend, pipeline: str
    ) -> None:
        assert backend.metadata(self.key(pipeline, "missing"))["count"] == 0
        assert backend.read(self.key(pipeline, "missing")) == []

    def test_an_idle_series_expires_after_its_ttl(
        self, backend: StateBackend, pipeline: str, advance: Callable[[float], None]
    ) -> None:
        key = self.key(pipeline)
        backend.write(key, T0, 1, max_items=10, ttl=self.ttl)
        assert backend.read(key) != []
        advance(self.ttl + 0.5)
        assert backend.read(key) == []
        assert backend.metadata(key)["count"] == 0

    def test_a_write_refreshes_the_ttl(
        self, backend: StateBackend, pipeline: str, advance: Callable[[float], None]
    ) -> None:
        key = self.key(pipeline)
        backend.write(key, T0, 1, max_items=10, ttl=self.ttl)
        advance(self.ttl * 0.6)
        backend.write(key, T0 + DAY, 2, max_items=10, ttl=self.ttl)
        advance(self.ttl * 0.6)
        assert [item["value"] for item in backend.read(key)] == [2, 1]

    def test_no_ttl_means_no_expiry(
        self, backend: StateBackend, pipeline: str, advance: Callable[[float], None]
    ) -> None:
        key = self.key(pipeline)
        backend.write(key, T0, 1, max_items=10, ttl=None)
        advance(self.ttl + 0.5)
        assert backend.read(key) == [{"timestamp": T0, "value": 1}]

    def test_no_max_items_and_no_ttl_keep_the_whole_series(
        self, backend: StateBackend, pipeline: str, advance: Callable[[float], None]
    ) -> None:
        # What a backtest's keep_history writes: every bucket stays until it is deleted.
        key = self.key(pipeline)
        self.fill(backend, key, 150, max_items=None, ttl=None)
        advance(self.ttl + 0.5)
        assert [item["value"]["i"] for item in backend.read(key, count=None)] == list(
            range(149, -1, -1)
        )
        meta = backend.metadata(key)
        assert (meta["count"], meta["max_items"], meta["ttl"]) == (150, None, None)
        assert backend.delete(pipeline, "n1") == 1
        assert backend.read(key) == []

    # -- deletion --------------------------------------------------------------------------
    def test_deletion_is_scoped(self, backend: StateBackend, pipeline: str) -> None:
        neighbour = pipeline + "-neighbour"
        try:
            for p in (pipeline, neighbour):
                for node in ("a", "b"):
                    for interval in ("1h", "1d"):
                        backend.write(self.key(p, node, interval), T0, 1, max_items=5, ttl=None)
            assert backend.delete(pipeline, "a", "1h") == 1
            assert backend.read(self.key(pipeline, "a", "1h")) == []
            assert backend.read(self.key(pipeline, "a", "1d")) != []
            assert backend.delete(pipeline, "b") == 2
            assert backend.read(self.key(pipeline, "b", "1d")) == []
            assert backend.read(self.key(pipeline, "a", "1d")) != []
            assert backend.delete(pipeline) == 1
            assert backend.read(self.key(pipeline, "a", "1d")) == []
            for node in ("a", "b"):
                for interval in ("1h", "1d"):
                    assert backend.read(self.key(neighbour, node, interval)) != []
            assert backend.delete(pipeline) == 0
        finally:
            backend.delete(neighbour)

    # -- values (SPEC §5.4) -------------------------------------------------------------------
    def test_values_come_back_as_themselves(self, backend: StateBackend, pipeline: str) -> None:
        key = self.key(pipeline)
        values = ROUND_TRIPS + (numpy_round_trips() if HAS_NUMPY else [])
        for i, value in enumerate(values):
            backend.write(key, T0 + i * DAY, value, max_items=1000, ttl=None)
        backend.write_many(
            [BucketWrite(key, T0 - (i + 1) * DAY, v, 1000, None) for i, v in enumerate(values)]
        )
        read = [item["value"] for item in backend.read(key)]
        stored = read[: len(values)][::-1]  # the write() ones, oldest first
        batched = read[len(values) :]  # the write_many() ones, newest (i = 0) first
        for got in (stored, batched):
            for value, wanted in zip(got, values, strict=True):
                assert same(value, wanted), f"{value!r} ({type(value).__name__}) != {wanted!r}"

    @pytest.mark.parametrize(("value", "shows"), REFUSED, ids=[s for _v, s in REFUSED])
    def test_values_the_codec_refuses_are_refused_and_nothing_is_written(
        self, backend: StateBackend, pipeline: str, value: Any, shows: str
    ) -> None:
        key = self.key(pipeline)
        with pytest.raises(ValueEncodeError) as caught:
            backend.write(key, T0, value, max_items=10, ttl=None)
        assert shows in str(caught.value)
        with pytest.raises(ValueEncodeError):
            backend.write_many([BucketWrite(key, T0 + DAY, value, 10, None)])
        assert backend.read(key) == []

    # -- errors ----------------------------------------------------------------------------
    def test_a_negative_count_is_an_error(self, backend: StateBackend, pipeline: str) -> None:
        key = self.key(pipeline)
        backend.write(key, T0, 1, max_items=10, ttl=None)
        with pytest.raises(StateBackendError):
            backend.read(key, count=-1)


__all__ = ["FakeClock", "StateBackendContract"]
