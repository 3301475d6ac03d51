"""``StateManager``: the earlier SDK's Redis history API, on :class:`RedisStateBackend`.

It reads and writes exactly the series a pipeline run with ``state="redis"`` uses, addressed by
``(pipeline, node_id, interval)``; ``pipeline`` defaults to ``"default"``. The seed's key-value
helpers (``set``/``get``/``delete``/``exists``/``keys``) store JSON values under
``qmtl:{pipeline}:kv:{key}``, inside the pipeline's prefix like everything else, so
``clear_all()`` removes them too and no other data on the server is ever touched.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis

from qmtl.engine import bucket_end
from qmtl.errors import StateBackendError
from qmtl.models import IntervalEnum, to_interval
from qmtl.state import SeriesKey, key_prefix
from qmtl_state_redis._layout import _escape, _glob
from qmtl_state_redis.backend import RedisStateBackend
from qmtl_state_redis.settings import RedisStateSettings

__all__ = ["StateManager"]


class StateManager:
    """Per-node, per-interval history in Redis, with the seed SDK's method names.

    Nothing connects until the first call (which pings the server once). Every failure raises
    :class:`~qmtl.errors.StateBackendError` with the URL (password masked); no method returns
    an empty result or ``False`` to hide one.
    """

    def __init__(
        self,
        redis_uri: str = "redis://localhost:6379/0",
        *,
        connection_pool_size: int = 50,
        connection_timeout: float = 5.0,
        retry_on_timeout: bool = True,
        health_check_interval: int = 30,
        pipeline: str = "default",
        **options: Any,
    ) -> None:
        self.redis_uri = redis_uri
        self.max_connections = connection_pool_size
        self.socket_timeout = connection_timeout
        self.retry_on_timeout = retry_on_timeout
        self.health_check_interval = health_check_interval
        self.pipeline = pipeline
        self.settings = RedisStateSettings(
            url=redis_uri,
            max_connections=connection_pool_size,
            connect_timeout=connection_timeout,
            socket_timeout=connection_timeout,
            retry_on_timeout=retry_on_timeout,
            health_check_interval=health_check_interval,
            **options,
        )
        self.backend = RedisStateBackend(self.settings)

    def __repr__(self) -> str:
        return f"StateManager(url={self.backend.url!r}, pipeline={self.pipeline!r})"

    def __enter__(self) -> StateManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def save_history(
        self,
        node_id: str,
        interval: IntervalEnum | str,
        value: Any,
        max_items: int = 100,
        ttl: int | None = None,
        ts: float | None = None,
    ) -> bool:
        """Store ``value`` in the bucket of ``interval`` holding ``ts`` (default: now).

        Saving again in the same bucket replaces the value; the series keeps its newest
        ``max_items`` buckets and expires ``ttl`` seconds after its last write (None: never).
        Returns True once Redis has stored it.
        """
        step = to_interval(interval)
        at = time.time() if ts is None else float(ts)
        self.backend.write(
            self._key(node_id, step),
            bucket_end(at, step.seconds),
            value,
            max_items=max_items,
            ttl=ttl,
        )
        return True

    def get_history(
        self,
        node_id: str,
        interval: IntervalEnum | str,
        count: int | None = 10,
        start_ts: float | None = None,
        end_ts: float | None = None,
    ) -> list[dict[str, Any]]:
        """``[{timestamp, value}]`` newest first; ``start_ts`` exclusive, ``end_ts`` inclusive."""
        return self.backend.read(
            self._key(node_id, interval), count=count, start_ts=start_ts, end_ts=end_ts
        )

    def get_interval_data(
        self,
        node_id: str,
        interval: IntervalEnum | str,
        count: int | None = 10,
        start_ts: float | None = None,
        end_ts: float | None = None,
    ) -> list[Any]:
        """The values of :meth:`get_history`, newest first."""
        history = self.get_history(node_id, interval, count, start_ts, end_ts)
        return [item["value"] for item in history]

    def get_history_metadata(self, node_id: str, interval: IntervalEnum | str) -> dict[str, Any]:
        """``count``, ``max_items``, ``ttl``, ``last_update``, ``oldest``, ``newest`` of the
        series, plus ``actual_count`` (the seed's name for ``count``), ``node_id``, ``interval``."""
        key = self._key(node_id, interval)
        meta = self.backend.metadata(key)
        meta.update(actual_count=meta["count"], node_id=node_id, interval=key.interval)
        return meta

    def update_ttl(self, node_id: str, interval: IntervalEnum | str, ttl: int | None) -> bool:
        """Give the series a new TTL from now (None: never expire); False if it does not exist."""
        return self.backend.update_ttl(self._key(node_id, interval), ttl)

    def clear_all(self, node_id: str | None = None) -> int:
        """Delete this pipeline's history (only ``node_id``'s when given); return the series
        removed. Other pipelines' keys and anything else in the database are left alone."""
        return self.backend.delete(self.pipeline, node_id)

    def close(self) -> None:
        """Close the connections (a later call reconnects)."""
        self.backend.close()

    # -- the seed's key-value helpers ---------------------------------------------------------
    def set(self, key: str, value: Any, expire: int | None = None) -> bool:
        """Store ``value`` (JSON) under ``key``, expiring after ``expire`` seconds if given;
        True once stored."""
        if expire is not None and (
            isinstance(expire, bool) or not isinstance(expire, int) or expire < 1
        ):
            raise StateBackendError(f"set('{key}'): expire={expire!r} must be whole seconds >= 1")
        try:
            payload = orjson.dumps(value)
        except TypeError as error:
            raise StateBackendError(
                f"set('{key}'): the value cannot be stored as JSON ({error}); store numbers, "
                "strings, booleans, None, lists and dicts with string keys"
            ) from error
        self._kv("setting", key, lambda c, name: c.set(name, payload, ex=expire))
        return True

    def get(self, key: str) -> Any:
        """The value stored under ``key``, or None when there is none."""
        raw = self._kv("reading", key, lambda c, name: c.get(name))
        return None if raw is None else orjson.loads(raw)

    def delete(self, key: str) -> bool:
        """Delete ``key``; True if it existed."""
        return bool(self._kv("deleting", key, lambda c, name: c.delete(name)))

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds a value."""
        return bool(self._kv("checking", key, lambda c, name: c.exists(name)))

    def keys(self, pattern: str = "*") -> list[str]:
        """The keys set with :meth:`set` that match the glob ``pattern``, sorted (SCAN under
        this pipeline's prefix, never KEYS)."""
        prefix = self._kv_name("")
        try:
            names = self.backend._redis().scan_iter(match=_glob(prefix) + pattern, count=1000)
            return sorted(name.decode()[len(prefix) :] for name in names)
        except redis.RedisError as error:
            raise self.backend._error(f"listing keys {prefix}{pattern}", error) from error

    def _kv_name(self, key: str) -> str:
        if not isinstance(key, str):
            raise StateBackendError(f"key {key!r} must be a string")
        return f"{key_prefix(_escape(self.pipeline))}kv:{key}"

    def _kv(self, action: str, key: str, call: Any) -> Any:
        name = self._kv_name(key)
        try:
            return call(self.backend._redis(), name)
        except redis.RedisError as error:
            raise self.backend._error(f"{action} {name}", error) from error

    def _key(self, node_id: str, interval: IntervalEnum | str) -> SeriesKey:
        return SeriesKey(self.pipeline, node_id, to_interval(interval).value)
