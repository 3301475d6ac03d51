"""The versioned envelope every QMTL message on Kafka is wrapped in (never pickle).

Version 2: a MessagePack map whose ``value`` holds the node's value as :mod:`qmtl.codec`
bytes, so every value type of SPEC §5.4 (tuples, datetimes, ``NaN``, ``Decimal``, numpy
arrays, ...) comes back as itself. Fields:

==========  ==========================  ==========================================================
field       type                        meaning
==========  ==========================  ==========================================================
v           int                         envelope version (2)
kind        "event"|"watermark"|"end"   a value; a watermark advance alone; end of a finite stream
pipeline    str                         pipeline name
node        str                         node that emitted it (or the source node it feeds)
node_id     str                         the node's content hash ("" on external input events)
interval    str or nil                  interval of the series the value belongs to
ts          float or int                event time (epoch s): the event's own ts for input
                                        events, the bucket end for node outputs
bucket      int or nil                  ``floor(ts / interval)`` index of the bucket, when any
watermark   float or nil                the emitter's watermark after this message: every later
                                        message from the same ``origin`` has ts >= watermark's
                                        bucket end, so a consumer can close buckets before it
origin      str or nil                  which emitter instance (e.g. ``node/partition``) the
                                        watermark belongs to; a consumer keeps one per origin
value       bin                         ``qmtl.codec.encode(value)`` (``kind == "event"``; the
                                        end marker's stats; nil-encoded otherwise)
run         str (optional)              the stream run the message belongs to (the engine keeps
                                        one run's state apart from another's); absent: none
==========  ==========================  ==========================================================

Readers ignore fields they do not know, so a later minor addition does not need a new ``v``.
Version 1 (JSON, where tuples became lists and datetimes strings) is no longer read: a JSON
object carrying ``"v": 1`` is an :class:`~qmtl_engine_kafka.errors.EnvelopeVersionError`
(dead-lettered as ``unsupported_version``); upgrade the producer. :func:`encode` always writes
the current version. :func:`decode` raises a specific
:class:`~qmtl_engine_kafka.errors.EnvelopeError` subclass for every way bytes can fail to be an
envelope, and nothing else: the worker dead-letters the message with ``error.reason``.

:func:`encode` raises :class:`~qmtl.errors.ValueEncodeError` naming the node and interval for a
value the codec refuses, and for a message larger than ``max_bytes`` (the engine's
``max_message_bytes``): then the error names that setting.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, cast

import msgpack
import orjson

from qmtl import codec
from qmtl.errors import ValueDecodeError, ValueEncodeError
from qmtl_engine_kafka.errors import (
    EnvelopeError,
    EnvelopeVersionError,
    MalformedEnvelopeError,
    OversizedEnvelopeError,
    TruncatedEnvelopeError,
    UndecodableEnvelopeError,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "ENVELOPE_VERSION",
    "SUPPORTED_VERSIONS",
    "Envelope",
    "EnvelopeKind",
    "EventReader",
    "EventWriter",
    "decode",
    "encode",
    "event_reader",
    "event_writer",
    "parse",
]

ENVELOPE_VERSION = 2
SUPPORTED_VERSIONS = frozenset({2})
DEFAULT_MAX_BYTES = 1_000_000

EnvelopeKind = Literal["event", "watermark", "end"]
_KINDS = frozenset({"event", "watermark", "end"})
#: First bytes of a MessagePack map (fixmap, map 16, map 32): a v2 envelope. JSON never
#: starts with them (they are not ASCII).
_MAP_HEADS = frozenset([*range(0x80, 0x90), 0xDE, 0xDF])
_NONE = codec.encode(None)


class Envelope(NamedTuple):
    """One decoded message. Build one with keywords; :func:`encode` turns it into bytes."""

    pipeline: str
    node: str
    ts: float
    value: Any = None
    node_id: str = ""
    interval: str | None = None
    bucket: int | None = None
    watermark: float | None = None
    kind: EnvelopeKind = "event"
    origin: str | None = None
    v: int = ENVELOPE_VERSION
    run: str | None = None


def encode(envelope: Envelope, max_bytes: int | None = None) -> bytes:
    """The envelope as bytes (version 2). A value the codec refuses, or a message over
    ``max_bytes``, raises :class:`~qmtl.errors.ValueEncodeError` naming node and interval."""
    value = envelope.value
    try:
        raw = _NONE if value is None else codec.encode(value)
    except ValueEncodeError as error:
        raise error.at(envelope.node, envelope.interval) from None
    data: dict[str, Any] = {
        "v": ENVELOPE_VERSION,
        "kind": envelope.kind,
        "pipeline": envelope.pipeline,
        "node": envelope.node,
        "node_id": envelope.node_id,
        "interval": envelope.interval,
        "ts": envelope.ts,
        "bucket": envelope.bucket,
        "watermark": envelope.watermark,
        "origin": envelope.origin,
        "value": raw,
    }
    if envelope.run is not None:
        data["run"] = envelope.run
    payload: bytes = msgpack.packb(data, use_bin_type=True)
    if max_bytes is not None and len(payload) > max_bytes:
        raise too_large(envelope, len(payload), max_bytes)
    return payload


def too_large(envelope: Envelope, size: int, max_bytes: int) -> ValueEncodeError:
    """The error for a message of ``size`` bytes over the ``max_message_bytes`` limit."""
    return ValueEncodeError(
        codec.type_name(envelope.value),
        reason=f"{size:,} bytes once encoded, over the Kafka engine's limit of {max_bytes:,}",
        fix=(
            "return a smaller value, or raise the limit: the Kafka engine option "
            "max_message_bytes (QMTL_KAFKA__MAX_MESSAGE_BYTES) together with the topics' "
            "max.message.bytes on the broker"
        ),
        node=envelope.node,
        interval=envelope.interval,
    )


def parse(
    data: bytes | bytearray | memoryview | str | None, max_bytes: int = DEFAULT_MAX_BYTES
) -> Any:
    """Parse message bytes: an envelope's MessagePack map (its value still codec bytes, see
    :func:`from_object`) or any JSON document (what external producers write), raising the
    specific EnvelopeError for each failure."""
    if data is None:
        raise TruncatedEnvelopeError("The message has no value (a tombstone or empty message)")
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    size = len(data)
    if size > max_bytes:
        raise OversizedEnvelopeError(
            f"The message is {size} bytes, over the limit of {max_bytes} bytes "
            "(max_message_bytes); send smaller values or raise the limit"
        )
    if size and data[0] in _MAP_HEADS:
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=True)
        except ValueError as e:  # msgpack's errors for data cut short or corrupt
            # "incomplete input", or a length header larger than the bytes that follow
            if "incomplete" in str(e) or "exceeds max_" in str(e):
                raise TruncatedEnvelopeError(
                    f"The message ends in the middle of an envelope after {size} bytes"
                ) from e
            raise UndecodableEnvelopeError(f"The message is not a QMTL envelope: {e}") from e
        except (TypeError, msgpack.UnpackException) as e:
            raise UndecodableEnvelopeError(f"The message is not a QMTL envelope: {e}") from e
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        if not bytes(data).strip() or e.pos >= size:
            raise TruncatedEnvelopeError(
                f"The message ends in the middle of a JSON document after {size} bytes"
            ) from e
        raise UndecodableEnvelopeError(
            f"The message is not UTF-8 JSON: {e.msg} at byte {e.pos}"
        ) from e


def decode(
    data: bytes | bytearray | memoryview | str | None, max_bytes: int = DEFAULT_MAX_BYTES
) -> Envelope:
    """Decode and validate message bytes into an :class:`Envelope`."""
    return from_object(parse(data, max_bytes))


def _number(obj: dict[str, Any], field: str, *, required: bool) -> float | None:
    value = obj.get(field)
    if value is None:
        if required:
            raise MalformedEnvelopeError(f"The envelope has no '{field}' (event time, epoch s)")
        return None
    if type(value) not in (int, float) or not math.isfinite(value):
        raise MalformedEnvelopeError(
            f"The envelope's '{field}' must be a finite number, not {value!r:.60}"
        )
    number: float = value
    return number


def _text(obj: dict[str, Any], field: str, *, required: bool) -> str | None:
    value = obj.get(field)
    if value is None and not required:
        return None
    if type(value) is not str or (required and not value):
        raise MalformedEnvelopeError(
            f"The envelope's '{field}' must be a non-empty string, not {value!r:.60}"
        )
    return value


_NUMBER = (int, float)
_new_envelope = tuple.__new__


def _value(raw: Any) -> Any:
    """The value of a v2 envelope: its codec bytes decoded."""
    if type(raw) is not bytes:
        raise MalformedEnvelopeError(
            f"The envelope's 'value' must be qmtl.codec bytes, not {type(raw).__name__}"
        )
    try:
        return codec.decode(raw)
    except ValueDecodeError as e:
        raise UndecodableEnvelopeError(f"The envelope's 'value' is undecodable: {e}") from e


def from_object(obj: Any) -> Envelope:
    """Validate a parsed message as an envelope (see the module docstring for the fields).

    The common case is checked inline (this runs once per message on a worker's hot path);
    anything unusual goes through :func:`_validated`, which explains what is wrong.
    """
    if type(obj) is dict:
        get = obj.get
        v, pipeline, node, ts = get("v"), get("pipeline"), get("node"), get("ts")
        node_id, interval, bucket = get("node_id", ""), get("interval"), get("bucket")
        watermark, kind, origin = get("watermark"), get("kind", "event"), get("origin")
        run = get("run")
        if (
            v == 2
            and type(v) is int
            and type(pipeline) is str
            and pipeline
            and type(node) is str
            and node
            # finite: inf - inf and nan are not 0 (ts is Any | None to mypy; None fails `in`)
            and type(ts) in _NUMBER
            and ts - ts == 0  # type: ignore[operator]
            and type(node_id) is str
            and (interval is None or type(interval) is str)
            and (bucket is None or type(bucket) is int)
            and (watermark is None or (type(watermark) in _NUMBER and watermark - watermark == 0))
            and type(kind) is str
            and kind in _KINDS
            and (origin is None or type(origin) is str)
            and (run is None or type(run) is str)
        ):
            return _new_envelope(
                Envelope,
                (
                    pipeline,
                    node,
                    ts,
                    _value(get("value", _NONE)),
                    node_id,
                    interval,
                    bucket,
                    watermark,
                    kind,
                    origin,
                    v,
                    run,
                ),
            )
    return _validated(obj)


_F64 = struct.Struct(">d")
_U32 = struct.Struct(">I")
EventReader = Callable[[bytes], tuple[float, Any] | None]


def event_reader(pipeline: str, node: str) -> EventReader:
    """A reader of the event envelopes :func:`encode` writes for source ``node`` of
    ``pipeline``, without building a map or an :class:`Envelope` (a forwarding worker's hot
    path: one call per input message).

    :func:`encode` lays out ``Envelope(pipeline, node, ts, value)`` always the same way: the
    fixed fields, ``ts`` (a float64, or a uint32 for a whole-second int), three nils, then the
    value's codec bytes (under 256 of them). The reader returns ``(ts, value)`` for bytes in
    exactly that layout (pass a tombstone's ``None`` as ``b""``), else ``None``: anything
    else — another field set, a run id, a watermark or end marker, a longer value, another
    producer's key order, damaged bytes — goes through :func:`decode`, which returns the same
    event or raises the error to dead-letter. The layout is derived from :func:`encode`
    itself and checked against it, so the two cannot drift apart (a mismatch disables the
    reader).
    """
    pack = msgpack.packb
    fixed = [("v", ENVELOPE_VERSION), ("kind", "event"), ("pipeline", pipeline)]
    fixed += [("node", node), ("node_id", ""), ("interval", None)]
    prefix = b"\x8b" + b"".join(pack(k) + pack(v) for k, v in fixed) + pack("ts")
    after = [("bucket", None), ("watermark", None), ("origin", None)]
    middle = b"".join(pack(k) + pack(v) for k, v in after) + pack("value")
    expected = prefix + pack(1.25) + middle + pack(codec.encode(0.5), use_bin_type=True)
    if encode(Envelope(pipeline, node, 1.25, 0.5)) != expected:  # pragma: no cover
        prefix = b"\x00"  # encode's layout changed: nothing matches, decode reads it all
    at = len(prefix)
    # the common message whole: a float64 ts and a float value (0xcb and 8 bytes each), read
    # with one struct that skips the fixed bytes between them (compared in place)
    between = middle + b"\xc4\x09\xcb"  # nils, then 9 bytes of value: a float64
    floats = struct.Struct(f">d{len(between)}xd").unpack_from
    whole = at + 1 + 8 + len(between) + 8
    shortest = at + 5 + len(middle) + 2  # a uint32 ts and an empty value

    head = prefix + b"\xcb"  # ... "ts": float64

    def read(data: bytes) -> tuple[float, Any] | None:
        size = len(data)
        if size == whole and data.startswith(head) and data.startswith(between, at + 9):
            event: tuple[float, Any] = floats(data, at + 1)
            ts = event[0]
            if ts - ts == 0:  # finite (inf or NaN: decode says why it is refused)
                return event
        if size < shortest or not data.startswith(prefix):
            return None
        kind = data[at]
        if kind == 0xCB:
            ts = _F64.unpack_from(data, at + 1)[0]
            if ts - ts != 0:
                return None
            start = at + 9
        elif kind == 0xCE:
            ts = _U32.unpack_from(data, at + 1)[0]
            start = at + 5
        else:
            return None
        end = start + len(middle)
        if end + 2 > size or data[start:end] != middle or data[end] != 0xC4:
            return None
        if end + 2 + data[end + 1] != size:
            return None
        try:
            return ts, _value(data[end + 2 :])
        except EnvelopeError:  # decode raises it again, for the dead letter
            return None

    return read


EventWriter = Callable[[float, int | None, Any], bytes]


def event_writer(
    pipeline: str, node: str, node_id: str, interval: str | None, run: str | None
) -> EventWriter:
    """``write(ts, bucket, value)``: the bytes of ``encode(Envelope(pipeline, node, ts, value,
    node_id, interval, bucket, run=run))`` for a value the codec has checked already (a node's
    output), with the fixed fields packed once (a deployment's seed output topics: one message
    per bucket). Checked against :func:`encode` like :func:`event_reader`; a mismatch makes the
    writer call :func:`encode`."""
    pack = msgpack.packb
    fixed = [("v", ENVELOPE_VERSION), ("kind", "event"), ("pipeline", pipeline)]
    fixed += [("node", node), ("node_id", node_id), ("interval", interval)]
    head = bytes([0x8B if run is None else 0x8C])
    head += b"".join(pack(k) + pack(v) for k, v in fixed) + pack("ts")
    middle = pack("bucket")
    after = [("watermark", None), ("origin", None)]
    rest = b"".join(pack(k) + pack(v) for k, v in after) + pack("value")
    tail = b"" if run is None else pack("run") + pack(run)
    packer = msgpack.Packer(use_bin_type=True)  # plain numbers and bytes only: no hook

    def write(ts: float, bucket: int | None, value: Any) -> bytes:
        # a float is a float64 in the codec as in plain MessagePack
        raw = packer.pack(value) if type(value) is float else codec.encode(value, checked=True)
        parts = (head, packer.pack(ts), middle, packer.pack(bucket), rest, packer.pack(raw), tail)
        return b"".join(parts)

    def slow(ts: float, bucket: int | None, value: Any) -> bytes:  # pragma: no cover
        return encode(Envelope(pipeline, node, ts, value, node_id, interval, bucket, run=run))

    same = all(
        write(1.25, 7, value)
        == encode(Envelope(pipeline, node, 1.25, value, node_id, interval, 7, run=run))
        for value in (0.5, (1, "a"))
    )
    return write if same else slow


def _validated(obj: Any) -> Envelope:
    if type(obj) is not dict:
        raise MalformedEnvelopeError(
            f"The message is JSON {type(obj).__name__}, not an envelope object"
        )
    version = obj.get("v")
    if type(version) is not int:
        raise MalformedEnvelopeError(f"The envelope's 'v' must be an integer, not {version!r:.60}")
    if version == 1:
        raise EnvelopeVersionError(
            "The envelope is version 1 (JSON), written by an older qmtl-engine-kafka; this "
            f"QMTL reads versions {sorted(SUPPORTED_VERSIONS)}: upgrade the producer"
        )
    if version not in SUPPORTED_VERSIONS:
        raise EnvelopeVersionError(
            f"The envelope has version {version}; this QMTL reads versions "
            f"{sorted(SUPPORTED_VERSIONS)}: upgrade qmtl-engine-kafka on this worker"
        )
    kind = obj.get("kind", "event")
    if type(kind) is not str or kind not in _KINDS:
        raise MalformedEnvelopeError(
            f"The envelope's 'kind' must be one of {sorted(_KINDS)}, not {kind!r:.60}"
        )
    bucket = obj.get("bucket")
    if bucket is not None and type(bucket) is not int:
        raise MalformedEnvelopeError(
            f"The envelope's 'bucket' must be an integer, not {bucket!r:.60}"
        )
    value = _value(obj.get("value", _NONE))
    return Envelope(
        pipeline=_text(obj, "pipeline", required=True),  # type: ignore[arg-type]
        node=_text(obj, "node", required=True),  # type: ignore[arg-type]
        node_id=_text(obj, "node_id", required=False) or "",
        interval=_text(obj, "interval", required=False),
        ts=_number(obj, "ts", required=True),  # type: ignore[arg-type]
        bucket=bucket,
        watermark=_number(obj, "watermark", required=False),
        kind=cast(EnvelopeKind, kind),
        origin=_text(obj, "origin", required=False),
        value=value,
        v=version,
        run=_text(obj, "run", required=False),
    )
