"""Where the Kafka engine keeps each node's pending state between batches.

A node's pending state (its :class:`~qmtl.streaming.NodeAligner` / ``SourceBucketer`` data,
values included, its upstreams' watermarks, and the next input offset of every partition it has
applied) is saved as :mod:`qmtl.codec` bytes, so pending values come back as themselves (a tuple,
a datetime, ``NaN``), exactly as the messages carry them. It is saved
after every batch, before the batch's offsets are committed. A worker that takes a node over
(another worker died or the group rebalanced) loads it and continues where the other stopped;
input it finds below the saved offsets is skipped, so a replay applies nothing twice.

With the ``redis`` state backend the pending state lives in the same Redis, under
``qmtl-kafka:{pipeline}:{run}:{task}`` (never inside ``qmtl:{pipeline}:``, which belongs to the
state backend), expiring after ``ttl`` seconds of inactivity. Any other state backend gets an
in-process store: fine for threads in one process, not for ``qmtl worker`` processes.

Fencing: a worker that is assigned a task's input *claims* it (``…:{task}:owner`` = a fresh
token) before loading its state, and every save succeeds only while the owner is still that
token (one Lua call). A worker that was paused while its partitions moved elsewhere (a
"zombie") therefore cannot overwrite the new owner's state: its save returns ``False`` and it
drops the batch without committing.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from qmtl import codec
from qmtl.errors import StateBackendError

__all__ = ["MemoryPendingStore", "PendingStore", "RedisPendingStore", "pending_store_for"]

#: Pending state of an idle run expires after a week.
DEFAULT_TTL = 7 * 24 * 3600


class PendingStore(Protocol):
    """Durable pending state (codec bytes), one per (pipeline, run, task)."""

    shared: bool  #: visible to other processes

    def load(self, pipeline: str, run: str, task: str) -> dict[str, Any] | None: ...

    def claim(self, pipeline: str, run: str, task: str, token: str) -> None: ...

    def save(
        self, pipeline: str, run: str, task: str, data: dict[str, Any], token: str | None = None
    ) -> bool: ...

    def close(self) -> None: ...


class MemoryPendingStore:
    """Pending state in this process (threads of one engine share it)."""

    shared = False

    def __init__(self) -> None:
        self._data: dict[tuple[str, str, str], bytes] = {}
        self._owners: dict[tuple[str, str, str], str] = {}
        self._lock = threading.Lock()

    def load(self, pipeline: str, run: str, task: str) -> dict[str, Any] | None:
        with self._lock:
            raw = self._data.get((pipeline, run, task))
        return None if raw is None else _loaded(raw)

    def claim(self, pipeline: str, run: str, task: str, token: str) -> None:
        with self._lock:
            self._owners[(pipeline, run, task)] = token

    def save(
        self, pipeline: str, run: str, task: str, data: dict[str, Any], token: str | None = None
    ) -> bool:
        raw = codec.encode(data)
        key = (pipeline, run, task)
        with self._lock:
            if token is not None and self._owners.get(key, token) != token:
                return False
            self._data[key] = raw
        return True

    def close(self) -> None:
        """Nothing to release."""


class RedisPendingStore:
    """Pending state in Redis, one string key per task, refreshed TTL on every save."""

    shared = True

    def __init__(
        self,
        url: str,
        *,
        shown_url: str | None = None,
        ttl: int = DEFAULT_TTL,
        client: Any = None,
    ) -> None:
        import redis

        self._redis = redis
        self.url = shown_url or url
        self.ttl = ttl
        # ``client``: the state backend's own, so its credentials and TLS options apply here too.
        self._client = client or redis.Redis.from_url(
            url, socket_connect_timeout=5, socket_timeout=30
        )
        self._owns_client = client is None
        self._save = self._client.register_script(_SAVE_IF_OWNER)

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
        return None if raw is None else _loaded(raw)

    def claim(self, pipeline: str, run: str, task: str, token: str) -> None:
        try:
            self._client.set(self.key(pipeline, run, task) + ":owner", token, ex=self.ttl)
        except self._redis.RedisError as error:
            raise StateBackendError(
                f"Claiming '{task}' (pipeline '{pipeline}') in Redis at {self.url} failed: "
                f"{error}; check that Redis is up"
            ) from error

    def save(
        self, pipeline: str, run: str, task: str, data: dict[str, Any], token: str | None = None
    ) -> bool:
        key = self.key(pipeline, run, task)
        try:
            if token is None:
                self._client.set(key, codec.encode(data), ex=self.ttl)
                return True
            return bool(
                self._save(keys=[key, key + ":owner"], args=[codec.encode(data), token, self.ttl])
            )
        except self._redis.RedisError as error:
            raise StateBackendError(
                f"Saving the pending state of '{task}' (pipeline '{pipeline}') to Redis at "
                f"{self.url} failed: {error}; check that Redis is up"
            ) from error

    def close(self) -> None:
        if self._owns_client:  # a borrowed client closes with its state backend
            self._client.close()


_SAVE_IF_OWNER = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""


def _loaded(raw: Any) -> dict[str, Any]:
    data: dict[str, Any] = codec.decode(raw)
    return data


def pending_store_for(state: Any) -> PendingStore:
    """A Redis store next to a ``redis`` state backend (checked with a ``PING`` first), else an
    in-process one."""
    settings = getattr(state, "settings", None)
    url = getattr(settings, "url", None)
    if getattr(state, "name", None) == "redis" and isinstance(url, str):
        # Reach Redis now, through the backend (its errors name the fix: a wrong password or
        # an untrusted certificate fails here, before any message is consumed), and share its
        # client: it carries the user, password and TLS options that are not in the URL.
        state.ping()
        client = state.client() if callable(getattr(state, "client", None)) else None
        return RedisPendingStore(url, shown_url=getattr(state, "url", None), client=client)
    return MemoryPendingStore()
