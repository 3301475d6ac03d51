"""The seed SDK's StateManager face (seed-behaviours 13.6) and the pipeline's Redis accessors
(13.7), in SPEC semantics (bucketed history, newest first, errors raise), on a real Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

import qmtl_engine_local  # noqa: F401  (test-only: the pipeline test runs on the local engine)
from qmtl import IntervalEnum, Node, Pipeline
from qmtl.errors import StateBackendError
from qmtl.plugins import load_plugins
from qmtl.state import SeriesKey
from qmtl_state_redis import RedisStateBackend, RedisStateSettings, StateManager

HOUR = 3600.0
DAY = 86400.0
# A fixed "now" half-way through an hour, so bucket ends are predictable.
NOW = 1_780_000_000.0 // HOUR * HOUR + 1800.0

pytestmark = pytest.mark.integration


@pytest.fixture
def manager(redis_url: str, pipeline_name: str) -> Iterator[StateManager]:
    manager = StateManager(redis_uri=redis_url, pipeline=pipeline_name)
    yield manager
    manager.clear_all()
    manager.close()


def test_first_use_pings_exactly_once(redis_url: str, raw: redis.Redis) -> None:
    manager = StateManager(redis_uri=redis_url)
    try:
        before = raw.info("commandstats").get("cmdstat_ping", {}).get("calls", 0)
        manager.get_history("node", "1d")
        manager.get_history("node", "1d")
        after = raw.info("commandstats").get("cmdstat_ping", {}).get("calls", 0)
        assert after - before == 1
    finally:
        manager.close()


def test_save_history_lands_in_the_bucket_and_trims(
    manager: StateManager, raw: redis.Redis, pipeline_name: str
) -> None:
    # 13.6/48 in SPEC terms: one bucket value, trimmed to max_items, TTL on the series.
    for day in range(12):
        assert (
            manager.save_history(
                "test_node_123", "1d", {"day": day}, max_items=10, ttl=86400, ts=NOW + day * DAY
            )
            is True
        )
    history = manager.get_history("test_node_123", "1d", count=100)
    assert [item["value"]["day"] for item in history] == list(range(11, 1, -1))
    bucket_end = (NOW // DAY + 1) * DAY
    assert history[-1]["timestamp"] == bucket_end + 2 * DAY
    assert 86390 <= raw.ttl(f"qmtl:{pipeline_name}:test_node_123:1d:history") <= 86400


def test_same_bucket_replaces(manager: StateManager) -> None:
    manager.save_history("node", IntervalEnum.HOUR, "first", ts=NOW)
    manager.save_history("node", "1h", "second", ts=NOW + 60)
    assert manager.get_history("node", "1h") == [
        {"timestamp": NOW - 1800 + HOUR, "value": "second"}
    ]


def test_ts_defaults_to_now(manager: StateManager) -> None:
    before = time.time()
    manager.save_history("node", "1s", "now")
    after = time.time()
    (item,) = manager.get_history("node", "1s")
    assert before < item["timestamp"] <= after + 1


def test_get_history_count_is_newest_first(manager: StateManager) -> None:
    # 13.6/49: count=3 gives the three newest, newest first.
    for hour in range(5):
        manager.save_history("node", "1h", hour, ts=NOW + hour * HOUR)
    assert [item["value"] for item in manager.get_history("node", "1h", count=3)] == [4, 3, 2]


def test_start_ts_is_exclusive(manager: StateManager) -> None:
    # 13.6/50: items at now, now-1h, now-2h; start_ts = now-1.5h gives the two newest.
    for age in (0, 1, 2):
        manager.save_history("node", "1h", f"-{age}h", ts=NOW - age * HOUR)
    history = manager.get_history("node", "1h", count=10, start_ts=NOW - 1.5 * HOUR)
    assert [item["value"] for item in history] == ["-0h", "-1h"]
    # The bound is exclusive: a start exactly at a bucket end leaves that bucket out.
    oldest_end = NOW - 2 * HOUR + 1800
    assert [item["value"] for item in manager.get_history("node", "1h", start_ts=oldest_end)] == [
        "-0h",
        "-1h",
    ]
    assert len(manager.get_history("node", "1h", start_ts=oldest_end - 1)) == 3


def test_end_ts_is_inclusive(manager: StateManager) -> None:
    for age in (0, 1, 2):
        manager.save_history("node", "1h", age, ts=NOW - age * HOUR)
    newest_end = NOW + 1800
    assert [item["value"] for item in manager.get_history("node", "1h", end_ts=newest_end)] == [
        0,
        1,
        2,
    ]
    assert [
        item["value"] for item in manager.get_history("node", "1h", end_ts=newest_end - HOUR)
    ] == [1, 2]


def test_update_ttl_applies_to_the_whole_series(
    manager: StateManager, raw: redis.Redis, pipeline_name: str
) -> None:
    # 13.6/51
    manager.save_history("node", "1d", 1, ttl=86400, ts=NOW)
    assert manager.update_ttl("node", "1d", 7200) is True
    for suffix in ("history", "meta"):
        assert 7190 <= raw.ttl(f"qmtl:{pipeline_name}:node:1d:{suffix}") <= 7200
    assert manager.get_history_metadata("node", "1d")["ttl"] == 7200
    assert manager.update_ttl("missing", "1d", 7200) is False


def test_clear_all_is_scoped_to_the_pipeline(
    manager: StateManager, redis_url: str, pipeline_name: str, raw: redis.Redis
) -> None:
    # 13.6/53
    neighbour = StateManager(redis_uri=redis_url, pipeline=f"{pipeline_name}-neighbour")
    try:
        for node in ("test_node", "other"):
            manager.save_history(node, "1d", node, ts=NOW)
            manager.save_history(node, "1h", node, ts=NOW)
        neighbour.save_history("test_node", "1d", "neighbour's", ts=NOW)
        raw.set(f"node:{pipeline_name}:history:1d", "seed-era key, not ours")
        assert manager.clear_all(node_id="test_node") == 2
        assert manager.get_history("test_node", "1d") == []
        assert manager.get_interval_data("other", "1h") == ["other"]
        assert manager.clear_all() == 2
        assert manager.get_history("other", "1d") == []
        assert neighbour.get_interval_data("test_node", "1d") == ["neighbour's"]
        assert raw.get(f"node:{pipeline_name}:history:1d") == b"seed-era key, not ours"
    finally:
        neighbour.clear_all()
        neighbour.close()
        raw.delete(f"node:{pipeline_name}:history:1d")


def test_get_interval_data_gives_values(manager: StateManager) -> None:
    # 13.6/54
    for hour, value in enumerate((200, 100, 0)):
        manager.save_history("node", "1h", value, ts=NOW + hour * HOUR)
    assert manager.get_interval_data("node", "1h", count=3) == [0, 100, 200]


def test_history_metadata(manager: StateManager) -> None:
    # 13.6/55: count 7 of max_items 10 with ttl 86400, plus actual_count.
    before = time.time()
    for day in range(7):
        manager.save_history("node", "1d", day, max_items=10, ttl=86400, ts=NOW + day * DAY)
    meta = manager.get_history_metadata("node", "1d")
    assert meta["count"] == meta["actual_count"] == 7
    assert meta["max_items"] == 10
    assert meta["ttl"] == 86400
    assert before <= meta["last_update"] <= time.time()
    assert meta["newest"] - meta["oldest"] == 6 * DAY
    assert meta["node_id"] == "node"
    assert meta["interval"] == "1d"


def test_registered_as_state_kind_redis(redis_url: str, pipeline_name: str) -> None:
    registration = load_plugins().states.get("redis")
    assert registration.settings_model is RedisStateSettings
    assert registration.distribution == "qmtl-state-redis"
    backend = registration.create({"url": redis_url, "max_connections": 4})
    try:
        assert isinstance(backend, RedisStateBackend)
        assert backend.settings.max_connections == 4
        backend.write(
            SeriesKey(pipeline_name, "n", "1d"), DAY, "via registry", max_items=5, ttl=None
        )
        assert backend.read(SeriesKey(pipeline_name, "n", "1d"))[0]["value"] == "via registry"
        backend.delete(pipeline_name)
    finally:
        backend.close()


def _pipeline(name: str) -> Pipeline:
    pipeline = Pipeline(name=name)
    pipeline.add_node(
        Node(
            name="price",
            fn=lambda: 42,
            interval_settings={
                "1d": {"interval": "1d", "period": "7d", "max_history": 100},
                "5m": {"interval": "5m", "period": 12},
            },
        )
    )
    pipeline.add_node(
        Node(
            name="double",
            fn=lambda price: price * 2,
            upstreams=["price"],
            interval_settings={
                "1d": {"interval": "1d", "period": "7d", "max_history": 3},
                "5m": {"interval": "5m", "period": 12},
            },
        )
    )
    return pipeline


def test_pipeline_and_state_manager_share_the_data(redis_url: str, pipeline_name: str) -> None:
    # 13.7/57-61 and 13.5/42: a pipeline run with state="redis" 5 times; the pipeline's Redis
    # accessors and a StateManager read the same series.
    pipeline = _pipeline(pipeline_name)
    manager = StateManager(redis_uri=redis_url, pipeline=pipeline_name)
    try:
        for run in range(5):
            result = pipeline.execute(
                engine="local", state="redis", state_options={"url": redis_url}, ts=NOW + run * DAY
            )
            assert result == {"price": 42, "double": 84}
        history = pipeline.get_history("price", "1d", count=10, redis_uri=redis_url)
        assert len(history) == 5
        assert len(pipeline.get_history("double", "1d", count=10, redis_uri=redis_url)) == 3
        double_id = pipeline.build().node("double").node_id
        assert manager.get_history(double_id, "1d", count=10) == pipeline.get_history(
            "double", "1d", count=10, redis_uri=redis_url
        )
        bounds = {"start_ts": NOW + 1 * DAY, "end_ts": NOW + 3 * DAY}
        assert pipeline.get_history("price", "1d", redis_uri=redis_url, **bounds) == (
            manager.get_history(pipeline.build().node("price").node_id, "1d", **bounds)
        )
        assert pipeline.get_interval_data("double", "5m", count=2, redis_uri=redis_url) == [84, 84]
        meta = pipeline.get_node_metadata("double", "1d", redis_uri=redis_url)
        assert meta["count"] == 3
        assert meta["max_items"] == 3
        assert meta["ttl"] == 7 * 86400
        assert meta["source"] == "redis"
        assert meta["node_id"] == double_id
    finally:
        manager.clear_all()
        manager.close()


def test_settings_from_the_environment_select_redis(
    redis_url: str, pipeline_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # QMTL_STATE=redis and QMTL_REDIS__URL, read once when the pipeline first runs.
    monkeypatch.setenv("QMTL_STATE", "redis")
    monkeypatch.setenv("QMTL_REDIS__URL", redis_url)
    monkeypatch.setenv("QMTL_ENGINE", "local")
    pipeline = _pipeline(pipeline_name)
    manager = StateManager(redis_uri=redis_url, pipeline=pipeline_name)
    try:
        assert pipeline.execute(ts=NOW) == {"price": 42, "double": 84}
        price_id = pipeline.build().node("price").node_id
        assert manager.get_interval_data(price_id, "1d") == [42]
        assert pipeline.get_node_metadata("price", "1d")["source"] == "redis"
    finally:
        manager.clear_all()
        manager.close()


def test_seed_key_value_helpers(
    manager: StateManager, raw: redis.Redis, pipeline_name: str
) -> None:
    """Seed 13.6/47: set (JSON, expire), get, delete, exists, keys; scoped to the pipeline's
    prefix, removed by clear_all, and failures raise instead of returning False/None."""
    assert manager.set("test", {"test": "value"}, expire=60) is True
    name = f"qmtl:{pipeline_name}:kv:test"
    assert raw.get(name) == b'{"test":"value"}' and 0 < raw.ttl(name) <= 60
    assert manager.get("test") == {"test": "value"}
    assert manager.get("missing") is None
    assert manager.exists("test") is True and manager.exists("missing") is False
    manager.set("other", [1, 2.5, None])
    raw.set("unrelated:key", b"x")  # outside the prefix: never listed or deleted
    assert manager.keys() == ["other", "test"]
    assert manager.keys("te*") == ["test"]
    assert manager.delete("test") is True and manager.delete("test") is False
    with pytest.raises(StateBackendError, match=r"set\('bad'\).*JSON"):
        manager.set("bad", object())
    manager.clear_all()
    assert manager.keys() == [] and raw.get("unrelated:key") == b"x"
    raw.delete("unrelated:key")


def test_key_value_helpers_raise_when_redis_is_down() -> None:
    manager = StateManager("redis://127.0.0.1:1/0", connection_timeout=0.2, retries=0)
    for call in (
        lambda: manager.set("k", 1),
        lambda: manager.get("k"),
        lambda: manager.exists("k"),
        lambda: manager.keys(),
    ):
        with pytest.raises(StateBackendError, match=r"127\.0\.0\.1:1"):
            call()
