"""Names and members of the Redis layout (see :mod:`qmtl_state_redis.backend`): the keys of a
series, the script call that writes a batch, and the decoding of history members."""

from __future__ import annotations

import operator
import time
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import orjson

from qmtl import codec
from qmtl.errors import StateBackendError, ValueDecodeError
from qmtl.state import SeriesKey, key_prefix

_HISTORY, _META = "history", "meta"


def _escape(part: str) -> str:
    """A key component that cannot contain ``:`` (so one pipeline never matches another)."""
    if "%" in part or ":" in part:
        part = part.replace("%", "%25").replace(":", "%3A")
    return part


def _glob(text: str) -> str:
    """``text`` as a literal inside a SCAN MATCH pattern."""
    for special in "\\*?[]":
        text = text.replace(special, "\\" + special)
    return text


def _interval(interval: Any) -> str:
    # IntervalEnum is a str enum: use its value, never str(member) of a plain Enum.
    return str(getattr(interval, "value", interval))


@lru_cache(maxsize=65536)
def _series_keys(pipeline: str, node_id: str, interval: str) -> tuple[str, str]:
    base = f"{key_prefix(_escape(pipeline))}{_escape(node_id)}:{_escape(interval)}:"
    return base + _HISTORY, base + _META


def _keys(key: SeriesKey) -> tuple[str, str]:
    return _series_keys(key.pipeline, key.node_id, _interval(key.interval))


#: One script call: its keys, its arguments, and (history key, ttl) of each group in order.
_Call = tuple[list[str], list[Any], list[tuple[str, float | None]]]


def _pack(groups: list[list[Any]]) -> _Call:
    keys: list[str] = []
    args: list[Any] = [repr(time.time())]
    series: list[tuple[str, float | None]] = []
    for history, meta, max_items, ttl_text, items, ttl in groups:
        stamps, members = items[::2], items[1::2]
        increasing = all(map(operator.lt, stamps, stamps[1:]))
        keys += (history, meta)
        args += (len(members), max_items, ttl_text, repr(stamps[0]), "1" if increasing else "0")
        args += members
        series.append((history, ttl))
    return keys, args, series


def _stamp(member: bytes) -> float:
    """The bucket timestamp a history member starts with (``<ts>;...`` or ``<ts> ...``)."""
    end = len(member)
    for separator in (b";", b" "):
        at = member.find(separator)
        if at != -1 and at < end:
            end = at
    return float(member[:end])


def _value(member: bytes) -> Any:
    """The value of a history member: ``<ts>;<codec bytes>``, or ``<ts> <json>`` as written
    before the codec (the separator right after the timestamp tells them apart)."""
    codec_at = member.find(b";")
    json_at = member.find(b" ")
    if codec_at != -1 and (json_at == -1 or codec_at < json_at):
        return codec.decode(memoryview(member)[codec_at + 1 :])
    return orjson.loads(member[json_at + 1 :])


def _decode_history(members: Iterable[bytes], history: str) -> list[dict[str, Any]]:
    """``[{"timestamp", "value"}]`` of history members, in the order given."""
    try:
        return [{"timestamp": _stamp(member), "value": _value(member)} for member in members]
    except (ValueError, TypeError, ValueDecodeError, orjson.JSONDecodeError) as error:
        raise StateBackendError(
            f"Redis key {history} holds data QMTL did not write ({error}); delete the key or "
            "use another pipeline name"
        ) from error


def _series_of(name: str, prefix: str) -> str | None:
    """``node:interval`` of a key under ``prefix``, or None for a key QMTL did not lay out."""
    parts = name[len(prefix) :].split(":")
    if len(parts) != 3 or parts[2] not in (_HISTORY, _META):
        return None
    return f"{parts[0]}:{parts[1]}"
