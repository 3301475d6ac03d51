"""The live ingest hot path gives what the general path gives: the seed event reader returns an
event only when :func:`decode` returns the same event (never for bytes decode refuses, a
watermark, an end or a run's message); the seed output writer writes :func:`encode`'s bytes;
``Forwarder.take_all`` builds the same ``F``/``OW``/``OX`` messages and dead letters as
``take`` per message; a forwarded message too large is split, never truncated."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmtl import codec
from qmtl.node import SourceNode
from qmtl.pipeline import Pipeline
from qmtl_engine_kafka import Envelope, EnvelopeError, decode, encode
from qmtl_engine_kafka._forward import Forward, Forwarder
from qmtl_engine_kafka._layout import Layout
from qmtl_engine_kafka._wire import fit_events, unpack
from qmtl_engine_kafka.envelope import event_reader, event_writer
from qmtl_engine_kafka.errors import OversizedValueError
from qmtl_engine_kafka.topics import input_topic

PIPELINE, NODE = "fast-path", "ticks"
_values = st.one_of(
    st.floats(),
    st.integers(-(2**70), 2**70),
    st.text(max_size=300),
    st.tuples(st.integers(0, 9), st.text(max_size=3)),
    st.lists(st.floats(), max_size=4),
    st.just(Decimal("1.5")),
    st.just(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    st.none(),
)
_stamps = st.floats(allow_nan=True, allow_infinity=True) | st.integers(0, 2**40)


def _same(left: Any, right: Any) -> bool:
    """Equal values, NaN included."""
    return codec.encode(left) == codec.encode(right)


@given(
    ts=_stamps,
    value=_values,
    kind=st.sampled_from(["event", "event", "event", "watermark", "end"]),
    run=st.sampled_from([None, None, "r1"]),
    names=st.sampled_from([(PIPELINE, NODE), (PIPELINE, "other"), ("another", NODE)]),
    cut=st.integers(0, 40),
    flip=st.integers(0, 400),
)
@settings(max_examples=800, deadline=None)
def test_the_reader_returns_an_event_only_when_decode_returns_that_event(
    ts: float, value: Any, kind: str, run: str | None, names: tuple[str, str], cut: int, flip: int
) -> None:
    read = event_reader(PIPELINE, NODE)
    pipeline, node = names
    envelope = Envelope(pipeline=pipeline, node=node, ts=ts, value=value, kind=kind, run=run)  # type: ignore[arg-type]
    whole = encode(envelope)
    damaged = bytearray(whole)
    if flip < len(damaged):
        damaged[flip] ^= 0x5A
    for data in (whole, whole[: len(whole) - cut], bytes(damaged)):
        event = read(data)
        try:
            expected = decode(data)
        except EnvelopeError:
            assert event is None
            continue
        if event is not None:
            assert (expected.kind, expected.run, expected.pipeline, expected.node) == (
                "event",
                None,
                PIPELINE,
                NODE,
            )
            assert _same(event[0], expected.ts) and type(event[0]) is type(expected.ts)
            assert _same(event[1], expected.value)


@pytest.mark.parametrize(
    ("ts", "value"),
    [(1_700_000_000.25, 101.5), (1_700_000_000, 3), (1_700_000_000.5, "AAPL"), (1.0, (1, 2))],
)
def test_what_producers_send_takes_the_fast_path(ts: float, value: Any) -> None:
    """publish_event's messages (float or whole-second ts; floats, ints, text, tuples)."""
    assert event_reader(PIPELINE, NODE)(encode(Envelope(PIPELINE, NODE, ts, value))) == (ts, value)


def test_tombstones_and_non_finite_times_are_left_to_decode() -> None:
    read = event_reader(PIPELINE, NODE)
    assert read(b"") is None
    for ts in (math.inf, -math.inf, math.nan):
        assert read(encode(Envelope(PIPELINE, NODE, ts, 1.0))) is None


@given(
    ts=st.floats(allow_nan=False) | st.integers(0, 2**40),
    bucket=st.integers(-(2**40), 2**40) | st.none(),
    value=_values,
    interval=st.sampled_from(["1m", "1s", None]),
    run=st.sampled_from(["live", None]),
)
@settings(max_examples=300, deadline=None)
def test_the_writer_writes_what_encode_writes(
    ts: float, bucket: int | None, value: Any, interval: str | None, run: str | None
) -> None:
    write = event_writer(PIPELINE, NODE, "ab12", interval, run)
    envelope = Envelope(PIPELINE, NODE, ts, value, "ab12", interval, bucket, run=run)
    assert write(ts, bucket, value) == encode(envelope)


def test_a_forward_too_large_is_split_in_order_and_one_event_too_large_is_named() -> None:
    forward = Forward("qmtl.input.p.ticks/0", 1, False)
    for offset in range(40):
        forward.add(NODE, offset, 1_700_000_000.0 + offset, "x" * 200)
    payloads = fit_events(forward.message("live", "h"), 2048, checked=True)
    assert len(payloads) > 1 and all(len(p) <= 2048 for p in payloads)
    parts = [unpack(p, 2048) for p in payloads]
    assert [o for part in parts for o in _offsets(part)] == list(range(40))
    assert [x for part in parts for x in part["x"]] == ["x" * 200] * 40
    assert all(part["n"] == [NODE] and "i" not in part for part in parts)  # one source
    alone = Forward("qmtl.input.p.ticks/0", 1, False)
    alone.add(NODE, 0, 1.0, "x" * 5000)
    with pytest.raises(OversizedValueError, match=NODE):
        fit_events(alone.message("live", "h"), 2048)


def _offsets(message: dict[str, Any]) -> list[int]:
    """An F message's input offsets: listed, or consecutive from ``f0``."""
    if "f" in message:
        return list(message["f"])
    return list(range(message["f0"], message["f0"] + len(message["t"])))


# -- take_all against take, message by message ------------------------------------------------
class _Message:
    def __init__(self, topic: str, partition: int, offset: int, payload: bytes | None) -> None:
        self._at = (topic, partition, offset)
        self._payload = payload

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._at[0]

    def partition(self) -> int:
        return self._at[1]

    def offset(self) -> int:
        return self._at[2]

    def value(self) -> bytes | None:
        return self._payload

    def key(self) -> None:
        return None


class _Metadata:
    def __init__(self, topic: str) -> None:
        self.topics = {topic: type("T", (), {"partitions": {0: None, 1: None}})()}


class _Consumer:
    def list_topics(self, topic: str, timeout: float) -> _Metadata:
        return _Metadata(topic)


class _DeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []

    def send_envelope_error(self, message: Any, error: EnvelopeError, **_: Any) -> None:
        self.sent.append((message.offset(), error.reason))


def _forwarder(dlq: _DeadLetters) -> Forwarder:
    pipeline = Pipeline(PIPELINE)
    for name in (NODE, "other"):
        pipeline.add_node(
            SourceNode(
                name, source=[(0, name)], interval_settings={"1m": {"interval": "1m", "period": 10}}
            )
        )
    plan = pipeline.build()
    return Forwarder(
        plan,
        Layout(plan, 2),
        consumer=_Consumer(),
        dlq=dlq,  # type: ignore[arg-type]
        max_bytes=1_000_000,
        idle_flush_s=None,
        connect_timeout_s=1.0,
    )


def _messages() -> list[_Message]:
    ticks, other = input_topic(PIPELINE, NODE), input_topic(PIPELINE, "other")
    base = 1_700_000_000.0
    plain = [encode(Envelope(PIPELINE, NODE, base + i, float(i))) for i in range(6)]
    return [
        _Message(ticks, 0, 0, plain[0]),
        _Message(ticks, 0, 1, plain[1]),
        _Message(ticks, 1, 0, plain[2]),  # another partition: another origin
        _Message(ticks, 0, 2, encode(Envelope(PIPELINE, NODE, base + 9, None, kind="watermark"))),
        _Message(ticks, 0, 3, plain[3]),
        _Message(ticks, 0, 4, b"\x81\xa1v"),  # cut short: dead-lettered
        _Message(ticks, 0, 5, None),  # a tombstone: dead-lettered
        _Message(ticks, 0, 6, encode(Envelope(PIPELINE, NODE, base + 7, 7.0, run="r1"))),
        _Message(ticks, 0, 7, plain[4]),
        _Message(other, 0, 0, encode(Envelope(PIPELINE, "other", base, "x"))),
        _Message(ticks, 0, 8, encode(Envelope(PIPELINE, NODE, base + 8, 8.0, watermark=base))),
        _Message(ticks, 0, 9, plain[5]),
        _Message(ticks, 0, 10, encode(Envelope(PIPELINE, NODE, 0.0, None, kind="end"))),
    ]


def _sent(forwarder: Forwarder, out: Any) -> list[tuple[Any, list[dict[str, Any]]]]:
    forwarder.finish(out)
    return [
        (where, [m.message(where[1], "h") if isinstance(m, Forward) else m for m in messages])
        for where, messages in sorted(out.items())
    ]


def test_take_all_forwards_what_take_forwards_message_by_message() -> None:
    fast_dlq, slow_dlq = _DeadLetters(), _DeadLetters()
    fast, slow = _forwarder(fast_dlq), _forwarder(slow_dlq)
    messages = _messages()
    fast_out, slow_out = fast.grouped(), slow.grouped()
    assert fast.take_all(messages, fast_out, lambda _m: None) == len(messages)
    for message in messages:
        slow.take(message, slow_out)
    assert _sent(fast, fast_out) == _sent(slow, slow_out)
    assert fast_dlq.sent == slow_dlq.sent == [(4, "truncated"), (5, "truncated")]
    assert (
        fast.offsets
        == slow.offsets
        == {
            (input_topic(PIPELINE, NODE), 0): 11,
            (input_topic(PIPELINE, NODE), 1): 1,
            (input_topic(PIPELINE, "other"), 0): 1,
        }
    )
    live = [m for (_p, run), ms in _sent(fast, fast_out) if run == "live" for m in ms]
    ticks = [m for m in live if m["k"] == "F" and m["o"].endswith(".ticks/0")]
    # events of partition 0 around the watermark, the end and the dead letters, in order
    assert [_offsets(m) for m in ticks] == [[0, 1], [3, 7, 8, 9]]
    assert (ticks[0]["f0"], ticks[1]["f"]) == (0, [3, 7, 8, 9])  # consecutive: the first only
