"""Where the Kafka engine keeps each node's pending state between batches.

A node's pending state (its :class:`~qmtl.streaming.NodeAligner` / ``SourceBucketer`` as JSON,
its upstreams' watermarks, and the next input offset of every partition it has applied) is saved
after every batch, before the batch's offsets are committed. A worker that takes a node over
(another worker died or the group rebalanced) loads it and continues where the other stopped;
input it finds below the saved offsets is skipped, so a replay applies nothing twice.

With the ``redis`` state backend the pending state lives in the same Redis, under
``qmtl-kafka:{pipeline}:{run}:{task}`` (never inside ``qmtl:{pipeline}:``, which belongs to the
state backend), expiring after ``ttl`` seconds of inactivity. Any other state backend gets an
in-process store: fine for threads in one process, not for ``qmtl worker`` processes.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

import orjson

from qmtl.errors import StateBackendError

__all__ = ["MemoryPendingStore", "PendingStore", "RedisPendingStore", "pending_store_for"]

#: Pending state of an idle run expires after a week.
DEFAULT_TTL = 7 * 24 * 3600


class PendingStore(Protocol):
    """Durable JSON blobs, one per (pipeline, run, task)."""

    shared: bool  #: visible to other processes

    def load(self, pipeline: str, run: str, task: str) -> dict[str, Any] | None: ...

    def save(self, pipeline: str, run: str, task: str, data: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class MemoryPendingStore:
    """Pending state in this process (threads of one engine share it)."""

    shared = False

    def __init__(self) -> None:
        self._data: dict[tuple[str, str, str], bytes] = {}
        self._lock = threading.Lock()

    def load(self, pipeline: str, run: str, task: str) -> dict[str, Any] | None:
        with self._lock:
            raw = self._data.get((pipeline, run, task))
        return None if raw is None else orjson.loads(raw)  # type: ignore[no-any-return]

    def save(self, pipeline: str, run: str, task: str, data: dict[str, Any]) -> None:
        raw = orjson.dumps(data)
        with self._lock:
            self._data[(pipeline, run, task)] = raw

    def close(self) -> None:
        """Nothing to release."""


class RedisPendingStore:
    """Pending state in Redis, one string key per task, refreshed TTL on every save."""

    shared = True

    def __init__(self, url: str, *, shown_url: str | None = None, ttl: int = DEFAULT_TTL) -> None:
        import redis

        self._redis = redis
        self.url = shown_url or url
        self.ttl = ttl
        self._client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)

    @staticmethod
    def key(pipeline: str, run: str, task: str) -> str:
        return f"qmtl-kafka:{pipeline}:{run}:{task}"

    def load(self, pipeline: str, run: str, task: str) -> dict[str, Any] | None:
        try:
            raw = self._client.get(self.key(pipeline, run, task))
        except self._redis.RedisError as error:
            raise StateBackendError(
                f"Loading the pending state of '{task}' (pipeline '{pipeline}') from Redis at "
                f"{self.url} failed: {error}; check that Redis is up"
            ) from error
        return None if raw is None else orjson.loads(raw)  # type: ignore[no-any-return]

    def save(self, pipeline: str, run: str, task: str, data: dict[str, Any]) -> None:
        try:
            self._client.set(self.key(pipeline, run, task), orjson.dumps(data), ex=self.ttl)
        except self._redis.RedisError as error:
            raise StateBackendError(
                f"Saving the pending state of '{task}' (pipeline '{pipeline}') to Redis at "
                f"{self.url} failed: {error}; check that Redis is up"
            ) from error

    def close(self) -> None:
        self._client.close()


def pending_store_for(state: Any) -> PendingStore:
    """A Redis store next to a ``redis`` state backend, else an in-process one."""
    settings = getattr(state, "settings", None)
    url = getattr(settings, "url", None)
    if getattr(state, "name", None) == "redis" and isinstance(url, str):
        return RedisPendingStore(url, shown_url=getattr(state, "url", None))
    return MemoryPendingStore()
