"""``RedisStateBackend``: :class:`qmtl.state.StateBackend` on Redis lists.

Layout (``{pipeline}``, ``{node}`` and ``{interval}`` with ``%`` and ``:`` percent-escaped)::

    qmtl:{pipeline}:{node}:{interval}:history   LIST  members b"<ts>;<value>", in bucket order
    qmtl:{pipeline}:{node}:{interval}:meta      HASH  max_items, ttl, last_update

A member starts with its own timestamp, so two buckets holding equal values stay two members
and the list can be searched by time; ``<value>`` is :func:`qmtl.codec.encode` bytes, so every
value type of SPEC §5.4 (``NaN``, tuples, datetimes, numpy arrays, ...) reads back as itself.
A write runs one server-side script (atomic, one round trip) that checks both keys hold QMTL's
types, appends the buckets newer than the newest stored (``RPUSH``; a replaced newest bucket is
``LSET`` in place, an older one found by binary search), trims to ``max_items`` (``LTRIM``),
records the metadata and refreshes the TTL of both keys. ``write_many`` groups writes per series,
sends up to ``write_batch`` writes per script call and all calls in one round trip. Reads are one
script too: a binary search finds the time range and ``LRANGE`` returns just those buckets
(O(log n) probes + k). Data written by earlier versions stays readable: members
``"<ts> <json>"`` (before the codec) are read as the JSON they hold, and a history kept as a
sorted set (before this layout) is read as it is and rewritten as a list by its next write. The
package README explains the choices.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from qmtl import codec
from qmtl.errors import StateBackendError
from qmtl.logs import get_logger
from qmtl.state import BucketWrite, SeriesKey, key_prefix
from qmtl_state_redis._errors import fix_for
from qmtl_state_redis._layout import (
    _Call,
    _decode_history,
    _escape,
    _glob,
    _interval,
    _keys,
    _pack,
    _series_of,
    _stamp,
)
from qmtl_state_redis._lua import META_SHA, READ_SHA, SCRIPTS, TTL_SHA, WRITE_SCRIPT, WRITE_SHA
from qmtl_state_redis.settings import RedisStateSettings, mask_url

if TYPE_CHECKING:
    from qmtl_state_redis.pending import RedisPendingStore

log = get_logger(__name__)

__all__ = ["RedisStateBackend"]

_SCAN_COUNT = 1000
_UNLINK_BATCH = 500
_MAX_DETAIL = 300
#: Seconds of clock slack before a missing series counts as "vanished", not expired.
_EXPIRY_SLACK = 0.25


def _number(raw: bytes | str | None) -> int | float | None:
    if raw is None or raw in (b"", ""):
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    try:
        return int(text)
    except ValueError:
        return float(text)


def _ttl_arg(ttl: float | None) -> str:
    """The TTL as the scripts take it: seconds as text, '' for none (numpy numbers too)."""
    if ttl is None:
        return ""
    seconds = float(ttl)
    return repr(int(seconds)) if seconds.is_integer() else repr(seconds)


def _empty_metadata() -> dict[str, Any]:
    return {
        "count": 0,
        "max_items": None,
        "ttl": None,
        "last_update": None,
        "oldest": None,
        "newest": None,
    }


class RedisStateBackend:
    """Per-node, per-interval history in Redis (see the module docstring for the layout).

    ``settings`` is a :class:`RedisStateSettings`, a URL, or None for the defaults; keyword
    ``options`` override its fields. Nothing connects until the first call, which pings once.
    Every failure raises :class:`~qmtl.errors.StateBackendError` naming the URL (password
    masked). Safe to share between threads.
    """

    name = "redis"

    def __init__(self, settings: RedisStateSettings | str | None = None, **options: Any) -> None:
        if isinstance(settings, str):
            settings = RedisStateSettings(url=settings, **options)
        elif settings is None:
            settings = RedisStateSettings(**options)
        elif options:
            settings = RedisStateSettings(**{**dict(settings), **options})
        self.settings: RedisStateSettings = settings
        #: The URL with its password masked: safe to show.
        self.url = mask_url(settings.url)
        self._client: redis.Redis | None = None
        self._lock = threading.Lock()
        # history key -> (wall-clock time until which the series must exist, the server run it
        # was last written in), for series this backend wrote: see _check_continuity.
        self._alive: dict[str, tuple[float, str]] = {}

    def __repr__(self) -> str:
        return f"RedisStateBackend(url={self.url!r})"

    # -- StateBackend ---------------------------------------------------------------------
    def write(
        self,
        key: SeriesKey,
        timestamp: float,
        value: Any,
        *,
        max_items: int | None,
        ttl: int | None,
    ) -> None:
        """Store ``value`` as the bucket at ``timestamp``: one round trip with trim and TTL
        (``max_items=None`` keeps every bucket, ``ttl=None`` never expires)."""
        self.write_many((BucketWrite(key, timestamp, value, max_items, ttl),))

    def write_many(self, writes: Iterable[BucketWrite]) -> None:
        """Store several buckets in one round trip, in order (a later write to a bucket wins)."""
        calls = list(self._encode(writes))
        if not calls:
            return
        client = self._redis()
        try:
            replies = self._call_scripts(client, calls)
        except redis.RedisError as error:
            series = {key for keys, _, _ in calls for key in keys[::2]}
            what = next(iter(series)) if len(series) == 1 else f"{len(series)} series"
            raise self._error(f"writing {what}", error) from error
        self._check_continuity(calls, replies)

    def read(
        self,
        key: SeriesKey,
        *,
        count: int | None = None,
        start_ts: float | None = None,
        end_ts: float | None = None,
    ) -> list[dict[str, Any]]:
        """Newest-first buckets in ``(start_ts, end_ts]``, at most ``count``: one script finds
        the range by binary search, server-side, and returns just those buckets."""
        if count is not None and count < 0:
            raise StateBackendError(f"count must be >= 0, got {count}")
        history, _ = _keys(key)
        args = (
            "" if count is None else str(int(count)),
            "" if start_ts is None else repr(float(start_ts)),
            "" if end_ts is None else repr(float(end_ts)),
        )
        try:
            reply = self._evalsha(self._redis(), READ_SHA, (history,), args)
        except redis.RedisError as error:
            raise self._error(f"reading {history}", error) from error
        return _decode_history(reversed(reply), history)

    def metadata(self, key: SeriesKey) -> dict[str, Any]:
        """``count``, ``max_items``, ``ttl``, ``last_update``, ``oldest``, ``newest`` of ``key``."""
        history, meta = _keys(key)
        try:
            reply = self._evalsha(self._redis(), META_SHA, (history, meta), ())
        except redis.RedisError as error:
            raise self._error(f"reading the metadata of {history}", error) from error
        count, oldest, newest, max_items, ttl, last_update = reply
        if not count and max_items is None:
            return _empty_metadata()
        try:
            return {
                "count": int(count),
                "max_items": _number(max_items),
                "ttl": _number(ttl),
                "last_update": None if last_update is None else float(last_update),
                "oldest": _stamp(oldest) if oldest else None,
                "newest": _stamp(newest) if newest else None,
            }
        except (ValueError, TypeError) as error:
            raise StateBackendError(
                f"Redis key {meta} holds data QMTL did not write ({error}); delete the key or "
                "use another pipeline name"
            ) from error

    def delete(self, pipeline: str, node_id: str | None = None, interval: str | None = None) -> int:
        """Delete a pipeline's, a node's or one interval's series (SCAN under the prefix, never
        KEYS or FLUSH); return how many series were removed."""
        prefix = key_prefix(_escape(pipeline))
        if node_id is not None and interval is not None:
            found = list(_keys(SeriesKey(pipeline, node_id, interval)))
            what = found[0]
        else:
            node = "*" if node_id is None else _glob(_escape(node_id))
            tail = "*" if interval is None else _glob(_escape(_interval(interval))) + ":*"
            pattern = f"{_glob(prefix)}{node}:{tail}"
            what = pattern
        try:
            client = self._redis()
            if node_id is None or interval is None:
                scanned = client.scan_iter(match=pattern, count=_SCAN_COUNT)
                found = sorted({name.decode() for name in scanned})
            removed: set[str] = set()
            for start in range(0, len(found), _UNLINK_BATCH):
                batch = found[start : start + _UNLINK_BATCH]
                pipe = client.pipeline(transaction=False)
                for name in batch:
                    pipe.unlink(name)
                for name, gone in zip(batch, pipe.execute(), strict=True):
                    series = _series_of(name, prefix)
                    if gone and series is not None:
                        removed.add(series)
        except redis.RedisError as error:
            raise self._error(f"deleting {what}", error) from error
        self._forget(prefix, node_id, interval)
        log.debug(
            "qmtl.state.redis.deleted",
            pipeline=pipeline,
            node_id=node_id,
            interval=interval,
            series=len(removed),
        )
        return len(removed)

    def close(self) -> None:
        """Close the pooled connections; a later call connects again."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
            client.connection_pool.disconnect()

    # -- beyond the protocol --------------------------------------------------------------
    def pending_store(self) -> RedisPendingStore:
        """The pending-state capability (:mod:`qmtl.pending`): fenced engine state in this
        Redis, shared by every worker process."""
        from qmtl_state_redis.pending import RedisPendingStore

        return RedisPendingStore(self.client, self._error)

    def update_ttl(self, key: SeriesKey, ttl: float | None) -> bool:
        """Set the series' TTL (None: never expire) without writing; False if it does not exist."""
        history, meta = _keys(key)
        try:
            found = self._evalsha(self._redis(), TTL_SHA, (history, meta), (_ttl_arg(ttl),))
        except redis.RedisError as error:
            raise self._error(f"updating the TTL of {history}", error) from error
        if found and history in self._alive:
            until = math.inf if ttl is None else time.time() + float(ttl)
            self._alive[history] = (until, self._alive[history][1])
        return bool(found)

    def ping(self) -> None:
        """Round-trip to the server; raise :class:`StateBackendError` when it does not answer."""
        try:
            self._redis().ping()
        except redis.RedisError as error:
            raise self._error("pinging", error) from error

    def client(self) -> redis.Redis:
        """The redis-py client of this backend (its URL, credentials, TLS options and pool),
        for components that keep keys of their own next to the state, such as the Kafka
        engine's pending state: they reach Redis exactly as the backend does."""
        return self._redis()

    # -- internals ------------------------------------------------------------------------
    def _redis(self) -> redis.Redis:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self) -> redis.Redis:
        settings = self.settings
        errors: tuple[type[Exception], ...] = (redis.ConnectionError,)
        if settings.retry_on_timeout:
            errors += (redis.TimeoutError,)
        options: dict[str, Any] = {
            "max_connections": settings.max_connections,
            "socket_connect_timeout": settings.connect_timeout,
            "socket_timeout": settings.socket_timeout,
            "health_check_interval": settings.health_check_interval,
            "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), settings.retries, errors),
        }
        if settings.username is not None:
            options["username"] = settings.username
        if settings.password is not None:
            options["password"] = settings.password.get_secret_value()
        if settings.url.startswith("rediss://"):
            options["ssl_cert_reqs"] = settings.ssl_cert_reqs
            # The host name is part of the check (redis-py before 6 did not check it by default).
            options["ssl_check_hostname"] = settings.ssl_cert_reqs == "required"
            if settings.ssl_ca_certs is not None:
                options["ssl_ca_certs"] = settings.ssl_ca_certs
        try:
            pool = redis.ConnectionPool.from_url(settings.url, **options)
        except (ValueError, TypeError) as error:
            raise StateBackendError(
                f"Redis state backend: cannot use URL {self.url}: {error}. Give a URL like "
                "redis://[:password@]host:6379/0 (state option 'url', QMTL_REDIS__URL or "
                "redis_uri=)"
            ) from error
        client = redis.Redis(connection_pool=pool)
        if not settings.health_check_interval:
            # With health checks on, redis-py pings before a connection's first command
            # anyway; either way the first use pings exactly once.
            try:
                client.ping()
            except redis.RedisError as error:
                pool.disconnect()
                raise self._error("connecting", error) from error
        log.debug("qmtl.state.redis.connected", url=self.url)
        return client

    def _encode(self, writes: Iterable[BucketWrite]) -> Iterator[_Call]:
        """Script calls of at most ``write_batch`` writes, grouped by series in order."""
        limit = self.settings.write_batch
        encode = codec.encode
        groups: dict[SeriesKey, list[Any]] = {}
        ordered: list[list[Any]] = []
        pending = 0
        for key, timestamp, value, max_items, ttl in writes:
            ts = float(timestamp)
            if not math.isfinite(ts):
                raise StateBackendError(
                    f"Bucket timestamp {timestamp!r} of series {_keys(key)[0]} is not a finite "
                    "number; pass epoch seconds"
                )
            payload = encode(value)  # ValueEncodeError, as the memory backend's check
            try:
                ttl_text = _ttl_arg(ttl)
                keep: int | str = "" if max_items is None else int(max_items)
            except (TypeError, ValueError) as error:
                raise StateBackendError(
                    f"Settings of series {_keys(key)[0]} are not numbers (max_items="
                    f"{max_items!r}, ttl={ttl!r}); pass an int max_items and a ttl in seconds "
                    "or None"
                ) from error
            group = groups.get(key)
            if group is None or group[2] != keep or group[3] != ttl_text:
                history, meta = _keys(key)
                group = [history, meta, keep, ttl_text, [], ttl]
                groups[key] = group
                ordered.append(group)
            group[4] += (ts, b"%r;%b" % (ts, payload))
            pending += 1
            if pending == limit:
                yield _pack(ordered)
                groups, ordered, pending = {}, [], 0
        if ordered:
            yield _pack(ordered)

    def _call_scripts(self, client: redis.Redis, calls: Sequence[_Call]) -> list[Any]:
        if len(calls) == 1:
            keys, args, _ = calls[0]
            return [self._evalsha(client, WRITE_SHA, keys, args)]
        for attempt in (1, 2):
            pipe = client.pipeline(transaction=False)
            for keys, args, _ in calls:
                pipe.execute_command("EVALSHA", WRITE_SHA, len(keys), *keys, *args)
            try:
                return pipe.execute()
            except redis.exceptions.NoScriptError:
                # A restarted or flushed server forgot the script: load it and replay (writes
                # are idempotent per bucket, so replaying calls that did run is harmless).
                if attempt == 2:
                    raise
                client.script_load(WRITE_SCRIPT)
        raise AssertionError("unreachable")

    def _check_continuity(self, calls: Sequence[_Call], replies: Sequence[Any]) -> None:
        """Raise when a series this backend wrote was lost in a Redis restart.

        A series written before, whose TTL has not run out, that the server no longer has after
        it restarted (a new run id) was lost with the server's memory: the write just made
        landed, but the older buckets are gone, and carrying on would leave a silent gap in the
        history. A series deleted on purpose (same server run) or expired is not a gap.
        """
        now = time.time()
        alive = self._alive
        vanished: list[str] = []
        for (_, _, series), (fresh, run) in zip(calls, replies, strict=True):
            run_id = run.decode() if isinstance(run, bytes) else str(run)
            for index in fresh or ():
                history = series[int(index) - 1][0]
                until, last_run = alive.get(history, (0.0, run_id))
                if until - _EXPIRY_SLACK > now and last_run != run_id and history not in vanished:
                    vanished.append(history)
            for history, ttl in series:
                alive[history] = (math.inf if ttl is None else now + float(ttl), run_id)
        if vanished:
            shown = ", ".join(vanished[:3])
            if len(vanished) > 3:
                shown += f" and {len(vanished) - 3} more"
            raise StateBackendError(
                f"Redis state backend at {self.url}: the history of {shown} vanished: Redis "
                "restarted without it before its TTL ran out. The latest write was stored but "
                "older buckets are lost; run Redis with persistence (appendonly yes) and rerun "
                "the affected range"
            )

    @staticmethod
    def _evalsha(client: redis.Redis, sha: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return client.execute_command("EVALSHA", sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            client.script_load(SCRIPTS[sha])
            return client.execute_command("EVALSHA", sha, len(keys), *keys, *args)

    def _forget(self, prefix: str, node_id: str | None, interval: str | None) -> None:
        """Stop expecting deleted series to exist."""
        node = None if node_id is None else _escape(node_id)
        step = None if interval is None else _escape(_interval(interval))
        for name in list(self._alive):
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix) :].split(":")
            if (node is None or parts[0] == node) and (step is None or parts[1] == step):
                self._alive.pop(name, None)

    def _error(self, action: str, error: Exception) -> StateBackendError:
        detail = str(error)
        password = self.settings.password
        if password is not None and password.get_secret_value():
            detail = detail.replace(password.get_secret_value(), "***")
        if len(detail) > _MAX_DETAIL:
            detail = detail[:_MAX_DETAIL] + "..."
        fix = fix_for(error)
        log.debug(
            "qmtl.state.redis.failed", url=self.url, action=action, error=type(error).__name__
        )
        return StateBackendError(
            f"Redis state backend at {self.url}: {action} failed "
            f"({type(error).__name__}: {detail.rstrip('.')}); {fix}"
        )
