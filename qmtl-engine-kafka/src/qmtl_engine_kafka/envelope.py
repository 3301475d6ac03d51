"""The versioned JSON envelope every QMTL message on Kafka is wrapped in (never pickle).

Version 1 fields (JSON object, orjson):

==========  ==========================  ==========================================================
field       type                        meaning
==========  ==========================  ==========================================================
v           int                         envelope version (1)
kind        "event"|"watermark"|"end"   a value; a watermark advance alone; end of a finite stream
pipeline    str                         pipeline name
node        str                         node that emitted it (or the source node it feeds)
node_id     str                         the node's content hash ("" on external input events)
interval    str or null                 interval of the series the value belongs to
ts          number                      event time (epoch s): the event's own ts for input
                                        events, the bucket end for node outputs
bucket      int or null                 ``floor(ts / interval)`` index of the bucket, when any
watermark   number or null              the emitter's watermark after this message: every later
                                        message from the same ``origin`` has ts >= watermark's
                                        bucket end, so a consumer can close buckets before it
origin      str or null                 which emitter instance (e.g. ``node/partition``) the
                                        watermark belongs to; a consumer keeps one per origin
value       any JSON                    the value (``kind == "event"`` only)
nf          "nan"|"inf"|"-inf"          only when ``value`` is a non-finite float, which JSON
                                        cannot hold (then ``value`` is null)
run         str (optional)              the stream run the message belongs to (the engine keeps
                                        one run's state apart from another's); absent: none
==========  ==========================  ==========================================================

Readers ignore fields they do not know, so a later minor addition does not need a new ``v``.
:func:`decode` raises a specific :class:`~qmtl_engine_kafka.errors.EnvelopeError` subclass for
every way bytes can fail to be an envelope, and nothing else: the worker dead-letters the
message with ``error.reason``.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple, cast

import orjson

from qmtl_engine_kafka.errors import (
    EnvelopeEncodeError,
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
    "decode",
    "encode",
    "parse",
]

ENVELOPE_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
DEFAULT_MAX_BYTES = 1_000_000

EnvelopeKind = Literal["event", "watermark", "end"]
_KINDS = frozenset({"event", "watermark", "end"})
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


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


def encode(envelope: Envelope) -> bytes:
    """The envelope as compact JSON bytes; a value JSON cannot hold raises EnvelopeEncodeError."""
    data: dict[str, Any] = {
        "v": envelope.v,
        "kind": envelope.kind,
        "pipeline": envelope.pipeline,
        "node": envelope.node,
        "node_id": envelope.node_id,
        "interval": envelope.interval,
        "ts": envelope.ts,
        "bucket": envelope.bucket,
        "watermark": envelope.watermark,
        "origin": envelope.origin,
        "value": envelope.value,
    }
    if envelope.run is not None:
        data["run"] = envelope.run
    value = envelope.value
    if isinstance(value, float) and not math.isfinite(value):
        data["value"] = None
        data["nf"] = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    try:
        return orjson.dumps(data, option=_DUMP_OPTIONS)
    except TypeError as e:
        raise EnvelopeEncodeError(
            f"Node '{envelope.node}' of pipeline '{envelope.pipeline}' emitted a value of type "
            f"{type(value).__name__} that cannot be sent over Kafka as JSON ({e}); return JSON "
            "data (numbers, strings, lists, dicts, datetimes, numpy arrays)"
        ) from e


def parse(
    data: bytes | bytearray | memoryview | str | None, max_bytes: int = DEFAULT_MAX_BYTES
) -> Any:
    """Parse message bytes as JSON, raising the specific EnvelopeError for each failure."""
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


def from_object(obj: Any) -> Envelope:
    """Validate parsed JSON as an envelope (see the module docstring for the fields).

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
            v == 1
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
            and "nf" not in obj
        ):
            return _new_envelope(
                Envelope,
                (
                    pipeline,
                    node,
                    ts,
                    get("value"),
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


def _validated(obj: Any) -> Envelope:
    if type(obj) is not dict:
        raise MalformedEnvelopeError(
            f"The message is JSON {type(obj).__name__}, not an envelope object"
        )
    version = obj.get("v")
    if type(version) is not int:
        raise MalformedEnvelopeError(f"The envelope's 'v' must be an integer, not {version!r:.60}")
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
    value = obj.get("value")
    non_finite = obj.get("nf")
    if non_finite is not None:
        if non_finite not in _NON_FINITE or value is not None:
            raise MalformedEnvelopeError(
                f"The envelope's 'nf' must be 'nan', 'inf' or '-inf' with a null value, "
                f"not {non_finite!r:.60}"
            )
        value = _NON_FINITE[non_finite]
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
