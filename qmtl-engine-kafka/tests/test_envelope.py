"""The versioned envelope (v2, MessagePack with codec values): round trips, each failure's
specific error, and fuzzing."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgpack
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmtl import codec
from qmtl.errors import ValueEncodeError
from qmtl_engine_kafka import (
    ENVELOPE_VERSION,
    Envelope,
    EnvelopeError,
    EnvelopeVersionError,
    MalformedEnvelopeError,
    OversizedEnvelopeError,
    TruncatedEnvelopeError,
    UndecodableEnvelopeError,
    decode,
    encode,
)

EVENT = Envelope(
    pipeline="prices",
    node="close",
    node_id="ab12",
    interval="1m",
    ts=1_700_000_060.0,
    bucket=28_333_334,
    watermark=1_700_000_000.0,
    origin="close/0",
    value={"px": 101.25, "sym": "AAPL", "levels": [1, 2, 3]},
)


def test_an_envelope_survives_encode_and_decode() -> None:
    assert decode(encode(EVENT)) == EVENT._replace(v=ENVELOPE_VERSION)
    assert msgpack.unpackb(encode(EVENT))["v"] == ENVELOPE_VERSION == 2


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_infinite_values_survive(value: float) -> None:
    assert decode(encode(EVENT._replace(value=value))).value == value


def test_nan_survives_as_nan_not_null_at_any_depth() -> None:
    assert math.isnan(decode(encode(EVENT._replace(value=math.nan))).value)
    assert math.isnan(decode(encode(EVENT._replace(value={"px": math.nan}))).value["px"])


def test_values_come_back_as_themselves() -> None:
    # Each of these changed type or value in the JSON envelope (version 1).
    when = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
    value = {"t": when, "pair": (1, 2), "px": Decimal("1.10"), "a": np.array([1.5, 2.5])}
    back = decode(encode(EVENT._replace(value=value))).value
    assert back["t"] == when and back["t"].hour == 9
    assert back["pair"] == (1, 2)
    assert type(back["px"]) is Decimal and back["px"] == Decimal("1.10")
    assert (np.array([back["a"], back["a"]]) * 2).tolist() == [[3.0, 5.0], [3.0, 5.0]]


def test_watermark_and_end_markers_carry_no_value() -> None:
    marker = Envelope(pipeline="p", node="n", ts=60.0, watermark=60.0, kind="end")
    assert decode(encode(marker)) == marker


def test_a_value_the_codec_refuses_names_node_interval_and_type() -> None:
    with pytest.raises(ValueEncodeError, match=r"Node 'close' .*interval 1m.*value\['px'\]: set"):
        encode(EVENT._replace(value={"px": {1}}))


def test_a_message_over_the_limit_names_node_and_the_setting() -> None:
    with pytest.raises(ValueEncodeError) as caught:
        encode(EVENT._replace(value="x" * 5000), max_bytes=2048)
    message = str(caught.value)
    assert "Node 'close'" in message and "over the Kafka engine's limit of 2,048" in message
    assert "max_message_bytes" in message
    assert len(encode(EVENT._replace(value="x" * 1000), max_bytes=2048)) <= 2048


def test_a_version_1_json_envelope_is_refused_as_unsupported() -> None:
    v1 = orjson.dumps({"v": 1, "kind": "event", "pipeline": "p", "node": "n", "ts": 1.0})
    with pytest.raises(EnvelopeVersionError, match=r"version 1 .*upgrade the producer"):
        decode(v1)


def _raw(**changes: object) -> bytes:
    data = msgpack.unpackb(encode(EVENT))
    data.update(changes)
    return msgpack.packb({k: v for k, v in data.items() if v is not ...})


@pytest.mark.parametrize(
    ("payload", "error", "reason"),
    [
        (b"", TruncatedEnvelopeError, "truncated"),
        (None, TruncatedEnvelopeError, "truncated"),
        (encode(EVENT)[:-7], TruncatedEnvelopeError, "truncated"),
        (b"\xff\xfe\x00garbage", UndecodableEnvelopeError, "undecodable"),
        (b"\x81\xc1\x01", UndecodableEnvelopeError, "undecodable"),
        (_raw(value=b"\xc1"), UndecodableEnvelopeError, "undecodable"),
        (_raw(value=1.5), MalformedEnvelopeError, "malformed"),
        (b"{not json}", UndecodableEnvelopeError, "undecodable"),
        (b"[1, 2, 3]", MalformedEnvelopeError, "malformed"),
        (_raw(v=...), MalformedEnvelopeError, "malformed"),
        (_raw(v="1"), MalformedEnvelopeError, "malformed"),
        (_raw(ts="yesterday"), MalformedEnvelopeError, "malformed"),
        (_raw(ts=...), MalformedEnvelopeError, "malformed"),
        (_raw(node=""), MalformedEnvelopeError, "malformed"),
        (_raw(kind="tick"), MalformedEnvelopeError, "malformed"),
        (_raw(kind=["event"]), MalformedEnvelopeError, "malformed"),  # unhashable kinds
        (_raw(kind={"event": 1}), MalformedEnvelopeError, "malformed"),
        (_raw(bucket=1.5), MalformedEnvelopeError, "malformed"),
        (_raw(v=1), EnvelopeVersionError, "unsupported_version"),
        (_raw(v=3), EnvelopeVersionError, "unsupported_version"),
        (_raw(v=0), EnvelopeVersionError, "unsupported_version"),
    ],
)
def test_each_kind_of_poison_raises_its_own_error_and_reason(
    payload: bytes | None, error: type[EnvelopeError], reason: str
) -> None:
    with pytest.raises(error) as caught:
        decode(payload)
    assert caught.value.reason == reason


def test_an_oversized_message_is_rejected_before_parsing() -> None:
    big = encode(EVENT._replace(value="x" * 5000))
    with pytest.raises(OversizedEnvelopeError, match=r"over the limit of 2048 bytes"):
        decode(big, max_bytes=2048)
    assert decode(big, max_bytes=len(big)).value == "x" * 5000


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    assert decode(_raw(trace_id="abc")) == EVENT._replace(v=2)


@given(st.binary(max_size=400))
@settings(max_examples=600, deadline=None)
def test_any_bytes_decode_or_raise_an_envelope_error(payload: bytes) -> None:
    try:
        envelope = decode(payload, max_bytes=300)
    except EnvelopeError as error:
        assert error.reason in {
            "truncated",
            "undecodable",
            "malformed",
            "unsupported_version",
            "oversized",
        }
    else:
        assert isinstance(envelope, Envelope)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # A named function: hypothesis cannot see that this lambda, written inline, uses its
    # argument, and warns (an error under filterwarnings=error).
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(),
    _containers,
    max_leaves=12,
)
_values = _json.map(codec.encode) | st.binary(max_size=8) | _json
_fields = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 2, "1", None, True]),
        "kind": st.sampled_from(["event", "watermark", "end", "x", 3, ["event"], {"a": 1}]),
        "pipeline": st.sampled_from(["p", "", 1]),
        "node": st.text(max_size=3),
        "node_id": st.text(max_size=3) | st.integers(-(2**63), 2**63 - 1),
        "interval": st.sampled_from(["1m", None, 60]),
        "ts": st.floats() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=2),
        "bucket": st.integers(-(2**63), 2**63 - 1) | st.floats() | st.none(),
        "watermark": st.floats() | st.none() | st.booleans(),
        "origin": st.text(max_size=3) | st.none(),
        "value": _values,
    },
)


@given(_fields)
@settings(max_examples=600, deadline=None)
def test_any_map_decodes_or_raises_an_envelope_error(fields: dict) -> None:
    payload = msgpack.packb(fields)
    try:
        envelope = decode(payload)
    except EnvelopeError:
        return
    assert envelope.v == 2
    assert isinstance(envelope.ts, int | float) and math.isfinite(envelope.ts)
    assert envelope.pipeline and envelope.node
    assert decode(encode(envelope)) == envelope or (
        isinstance(envelope.value, float) and math.isnan(envelope.value)
    )


@given(_fields)
@settings(max_examples=600, deadline=None)
def test_the_fast_path_accepts_exactly_what_the_full_validator_accepts(fields: dict) -> None:
    from qmtl_engine_kafka.envelope import _validated, from_object

    try:
        expected: object = _validated(fields)
    except EnvelopeError as error:
        expected = type(error)
    try:
        got: object = from_object(fields)
    except EnvelopeError as error:
        got = type(error)
    if isinstance(expected, Envelope) and isinstance(got, Envelope):
        assert codec.encode(tuple(got)) == codec.encode(tuple(expected))  # equal, NaN included
    else:
        assert got == expected
