"""The pending-state capability of the Redis backend (:mod:`qmtl.pending`).

Layout, per scope (its name inside ``{…}``, a Redis Cluster hash tag, so every key of one scope
lives in one slot and one Lua call can touch them all)::

    qmtl-pending:{scope}:owner      STRING  the token that owns the scope
    qmtl-pending:{scope}:p:{part}   HASH    field -> bytes
    qmtl-pending:{scope}:n:{name}   STRING  remember() / note() values

A save is one ``EVALSHA`` (owner check, ``DEL`` of dropped parts, ``HSET`` of the written
fields, ``EXPIRE`` of every key it touched): atomic, one round trip, refused when another token
claimed the scope. These keys live outside ``qmtl:{pipeline}:`` (the history), so deleting a
pipeline's history does not touch an engine's pending state and the reverse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import redis

from qmtl.errors import StateBackendError
from qmtl.pending import DEFAULT_TTL

__all__ = ["RedisPendingStore"]

#: HSET arguments per command: well under Lua's stack limit whatever a part holds.
_FIELDS_PER_HSET = 200

_SAVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local ttl = tonumber(ARGV[2])
local ndrop = tonumber(ARGV[3])
for i = 1, ndrop do redis.call('DEL', KEYS[1 + i]) end
local a = 4
for k = 2 + ndrop, #KEYS do
  local n = tonumber(ARGV[a])
  a = a + 1
  local i = 0
  while i < n do
    local take = math.min(n - i, FIELDS_PER_HSET)
    local args = {}
    for j = 1, 2 * take do args[j] = ARGV[a + j - 1] end
    redis.call('HSET', KEYS[k], unpack(args))
    a = a + 2 * take
    i = i + take
  end
  redis.call('EXPIRE', KEYS[k], ttl)
end
redis.call('EXPIRE', KEYS[1], ttl)
return 1
""".replace("FIELDS_PER_HSET", str(_FIELDS_PER_HSET))


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _glob(text: str) -> str:
    """``text`` as a literal inside a SCAN MATCH pattern."""
    for special in "\\*?[]":
        text = text.replace(special, "\\" + special)
    return text


def _key(scope: str, rest: str) -> str:
    return f"qmtl-pending:{{{scope}}}:{rest}"


class RedisPendingStore:
    """:class:`qmtl.pending.PendingStore` in the Redis of a :class:`RedisStateBackend`.

    ``client`` returns the backend's (lazily connected, retrying) client; ``error(action,
    exception)`` is the backend's own error, so a failure here names the same settings (a
    wrong password, an untrusted CA, ...) and hides the same secrets as the backend's.
    """

    shared = True

    def __init__(
        self,
        client: Callable[[], redis.Redis],
        error: Callable[[str, Exception], StateBackendError],
    ) -> None:
        self._client = client
        self._error = error
        self._script: Any = None

    def _failed(self, what: str, error: Exception) -> StateBackendError:
        return self._error(f"{what} (pending state of a distributed run)", error)

    def claim(self, scope: str, token: str) -> None:
        try:
            self._client().set(_key(scope, "owner"), token, ex=DEFAULT_TTL)
        except redis.RedisError as error:
            raise self._failed(f"claiming {scope}", error) from error

    def load(self, scope: str, part: str) -> dict[str, bytes]:
        try:
            found = self._client().hgetall(_key(scope, f"p:{part}"))
        except redis.RedisError as error:
            raise self._failed(f"loading {scope} {part}", error) from error
        return {
            k.decode() if isinstance(k, bytes) else str(k): v
            if isinstance(v, bytes)
            else v.encode()
            for k, v in found.items()
        }

    def save(
        self,
        scope: str,
        token: str,
        parts: Mapping[str, Mapping[str, bytes]],
        drop: Iterable[str] = (),
        ttl: int = DEFAULT_TTL,
    ) -> bool:
        dropped = [_key(scope, f"p:{part}") for part in drop]
        keys = [_key(scope, "owner"), *dropped]
        args: list[Any] = [token, int(ttl), len(dropped)]
        for part, fields in parts.items():
            keys.append(_key(scope, f"p:{part}"))
            args.append(len(fields))
            for field, blob in fields.items():
                args += (field, blob)
        try:
            if self._script is None:
                self._script = self._client().register_script(_SAVE)
            return bool(self._script(keys=keys, args=args))
        except redis.RedisError as error:
            raise self._failed(f"saving {scope}", error) from error

    def remember(self, scope: str, name: str, value: str) -> str:
        key = _key(scope, f"n:{name}")
        try:
            client = self._client()
            client.set(key, value, nx=True)
            stored = client.get(key)
        except redis.RedisError as error:
            raise self._failed(f"recording {name} of {scope}", error) from error
        return value if stored is None else _text(stored)

    def note(self, scope: str, name: str, value: str, ttl: int) -> None:
        try:
            self._client().set(_key(scope, f"n:{name}"), value, ex=int(ttl))
        except redis.RedisError as error:
            raise self._failed(f"noting {name} of {scope}", error) from error

    def recall(self, scope: str, name: str) -> str | None:
        try:
            stored = self._client().get(_key(scope, f"n:{name}"))
        except redis.RedisError as error:
            raise self._failed(f"reading {name} of {scope}", error) from error
        return None if stored is None else _text(stored)

    def forget(self, scope: str) -> None:
        """Delete every key of ``scope`` (found with a scoped SCAN, never ``KEYS *``)."""
        pattern = "qmtl-pending:{" + _glob(scope) + "}:*"
        try:
            client = self._client()
            doomed = list(client.scan_iter(match=pattern, count=1000))
            for start in range(0, len(doomed), 500):
                client.unlink(*doomed[start : start + 500])
        except redis.RedisError as error:
            raise self._failed(f"deleting {scope}", error) from error

    def close(self) -> None:
        """The backend owns the connection; closing it is the backend's job."""
