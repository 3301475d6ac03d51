"""The engine's internal messages: what travels on a pipeline's shard and output topics.

Every message is one object packed by :func:`pack` (never pickle) with these common fields:
``v`` (2), ``k`` (the kind), ``r`` (the run id), ``h`` (the plan hash: a worker dead-letters a
message of another plan) and ``ns`` (the history namespace, absent when it is the pipeline's
name). Kinds on the **shard topic** (partition = the destination shard's):

=====  ======================================================================================
k      fields
=====  ======================================================================================
E      ``n`` (source names), and per event, in arrival order: ``i`` (its source's position in
       ``n``; absent when ``n`` has one name), ``t`` (ts), ``x`` (value): source events of
       ``run()`` (columns, so a thousand events decode into a handful of lists)
W      ``s``, ``w``: source ``s``'s watermark moved to ``w`` (a live source's ``Watermark``)
X      ``s``: ``[source, ...]`` ended
F      ``o`` (origin ``topic/partition``), ``c`` (the origin topic's partition count), ``n``,
       ``i``, ``t``, ``x`` as for ``E`` and ``f`` (each event's input offset) or ``f0`` (the
       first event's, when the offsets follow each other): events forwarded from an input topic
OW     ``o``, ``c``, ``s``, ``w``: origin ``o``'s watermark for its sources ``s`` (a forwarder's
       partition clock, or an idle flush by wall clock)
OX     ``o``, ``c``, ``s``: origin ``o`` ended for sources ``s``
B      ``b``: ``[[node, interval, [[bucket, value], ...], through, failed], ...]``: a node's
       final buckets and its final-through (``"end"`` when ended) crossing into the shards of
       this partition that read it; ``failed`` names the failed node, else null
1      ``ts``, ``vals`` (``{node: value}``), ``in`` (names given as inputs): a one-shot run
1V     ``vals``, ``skip``, ``fail``: one-shot values crossing shards
=====  ======================================================================================

Kinds on the **output topic** (partition = the emitting shard's): ``O`` (``o``: ``[[node,
interval, [[bucket, ts, value], ...]], ...]``, final buckets), ``N`` (``n``: ``{node: {"buckets":
{interval: count}, "events", "late", "error"?, "upstream_failed"?}}``, nodes that ended),
``1O`` (one-shot values), ``R`` (``why``: a worker refused the run's messages).

Messages are :mod:`qmtl.codec` bytes (MessagePack with extension types), so every value type
of SPEC §5.4 — tuples, datetimes, ``NaN``, ``Decimal``, numpy arrays — comes back as itself; a
message that would exceed the broker's limit is split by :func:`fit`, and a single value too
large for one message is an :class:`~qmtl_engine_kafka.errors.OversizedValueError` (a
:class:`~qmtl.errors.ValueEncodeError`) naming its node.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from qmtl import codec
from qmtl.errors import ValueDecodeError
from qmtl_engine_kafka.errors import (
    EnvelopeVersionError,
    MalformedEnvelopeError,
    OversizedEnvelopeError,
    OversizedValueError,
    TruncatedEnvelopeError,
    UndecodableEnvelopeError,
)

__all__ = [
    "LIVE_RUN",
    "WIRE_VERSION",
    "check_size",
    "events",
    "fit",
    "fit_events",
    "pack",
    "unpack",
]

WIRE_VERSION = 2
#: The run of a deployment, and of input messages that name no run.
LIVE_RUN = "live"
_SCALARS = frozenset({int, float, bool, type(None)})


def check_size(node: str, interval: str | None, value: Any, limit: int) -> None:
    """Raise :class:`OversizedValueError` naming ``node`` when ``value`` alone would not fit in
    one message (what a node returned, checked before it is stored or sent)."""
    kind = type(value)
    if kind in _SCALARS or (kind is str and len(value) < limit // 8):
        return
    size = len(codec.encode(value))
    if size > limit - 512:
        raise OversizedValueError(node, interval, size, limit, codec.type_name(value))


def pack(message: dict[str, Any], *, checked: bool = False) -> bytes:
    """One message as bytes (``v`` is added); ``checked``: its values came from the codec
    (:func:`qmtl.codec.encode`'s type walk is skipped)."""
    message["v"] = WIRE_VERSION
    return codec.encode(message, checked=checked)


def unpack(data: bytes | None, max_bytes: int) -> dict[str, Any]:
    """The message in ``data``; an :class:`EnvelopeError` subclass (with its dead-letter
    reason) for anything that is not one."""
    if not data:
        raise TruncatedEnvelopeError("The message has no value (a tombstone or empty message)")
    if len(data) > max_bytes:
        raise OversizedEnvelopeError(
            f"The message is {len(data)} bytes, over the limit of {max_bytes} bytes "
            "(max_message_bytes)"
        )
    try:
        message = codec.decode(data)
    except ValueDecodeError as error:
        raise UndecodableEnvelopeError(f"The message is not a QMTL message: {error}") from error
    if type(message) is not dict or type(message.get("k")) is not str:
        raise MalformedEnvelopeError("The message is not a QMTL engine message (no 'k' kind)")
    version = message.get("v")
    if version != WIRE_VERSION:
        raise EnvelopeVersionError(
            f"The message has version {version!r}; this worker reads version {WIRE_VERSION}: "
            "run the same qmtl-engine-kafka on every worker and client"
        )
    return message


def events(kind: str, common: dict[str, Any]) -> Callable[[list[Any]], dict[str, Any]]:
    """``items -> message`` of an ``E`` (items ``[source, ts, value]``) or ``F`` (items
    ``[source, offset, ts, value]``) message in its column form (see the table)."""

    def make(items: list[Any]) -> dict[str, Any]:
        names: dict[str, int] = {}
        at = [names.setdefault(item[0], len(names)) for item in items]
        message = {"k": kind, **common, "n": list(names), "i": at}
        if kind == "F":
            message["f"] = [item[1] for item in items]
        message["t"] = [item[-2] for item in items]
        message["x"] = [item[-1] for item in items]
        return message

    return make


def fit_events(message: dict[str, Any], limit: int, *, checked: bool = False) -> list[bytes]:
    """An ``E`` or ``F`` message packed (``checked``: as :func:`pack`), its event columns
    halved until every part fits in ``limit`` bytes; one event too large alone raises
    :class:`OversizedValueError` naming its source."""
    payload = pack(message, checked=checked)
    if len(payload) <= limit:
        return [payload]
    size = len(message["t"])
    if size == 1:
        source = message["n"][message["i"][0] if "i" in message else 0]
        raise OversizedValueError(source, None, len(payload), limit)
    half = size // 2
    first, second = dict(message), dict(message)
    for column in ("i", "f", "t", "x"):
        if column in message:
            first[column], second[column] = message[column][:half], message[column][half:]
    if "f0" in message:
        second["f0"] = message["f0"] + half
    return fit_events(first, limit, checked=checked) + fit_events(second, limit, checked=checked)


Split = Callable[[Any], tuple[Any, Any] | None]


def fit(
    make: Callable[[list[Any]], dict[str, Any]],
    items: Sequence[Any],
    limit: int,
    split: Split,
    name: Callable[[Any], tuple[str, str | None]],
) -> list[bytes]:
    """``make(items)`` packed, cut into as many messages as needed to stay within ``limit``
    bytes: item lists are halved, and an item too large alone is ``split`` in two (a bucket
    list in halves); one value that cannot fit raises :class:`OversizedValueError` naming
    ``name(item)``."""
    payload = pack(make(list(items)))
    if len(payload) <= limit:
        return [payload]
    if len(items) > 1:
        half = len(items) // 2
        return fit(make, items[:half], limit, split, name) + fit(
            make, items[half:], limit, split, name
        )
    item = items[0]
    parts = split(item)
    if parts is None:
        node, interval = name(item)
        raise OversizedValueError(node, interval, len(payload), limit)
    first, second = parts
    return fit(make, [first], limit, split, name) + fit(make, [second], limit, split, name)
