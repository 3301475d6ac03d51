"""What one batch of a node produces, and how a node's output is emitted.

A :class:`Batch` collects a batch's output messages, its bucket writes, and its end markers
(produced only once the writes are stored, see :mod:`qmtl_engine_kafka._task`). An
:class:`Emitter` turns a node's final buckets into bucket writes and output envelopes (the hot
path: one codec-encoded envelope per bucket), announces watermarks once per batch, and ends the
node.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from qmtl.plan import PlanNode, SeriesSpec
from qmtl.state import BucketWrite
from qmtl.streaming import END
from qmtl_engine_kafka import envelope as envelopes
from qmtl_engine_kafka._context import RunContext
from qmtl_engine_kafka.envelope import Envelope

__all__ = ["NEVER", "Batch", "Emitter", "decode_through", "encode_through"]

#: "final through" before any bucket is final.
NEVER = -math.inf
_new_write = _new_envelope = tuple.__new__


def encode_through(x: float) -> Any:
    """A final-through as pending-state data: ``"end"``, ``None`` for never, or the bucket."""
    return "end" if x == END else (None if x == NEVER else x)


def decode_through(x: Any) -> float:
    return END if x == "end" else (NEVER if x is None else x)


class Batch:
    """What one batch produces: output messages, bucket writes, and end markers (which are
    produced only once the writes are stored)."""

    __slots__ = ("ends", "messages", "writes")

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.writes: list[BucketWrite] = []
        self.ends: list[tuple[str, bytes]] = []


class Emitter:
    """One node's output: final buckets to state and to its output topic, watermarks, end."""

    def __init__(self, ctx: RunContext, node: PlanNode) -> None:
        self.ctx = ctx
        self.node = node
        self.topic = ctx.topics.outputs[node.name]
        self.series: tuple[SeriesSpec, ...] = node.series
        self.intervals = [s.interval.value for s in node.series]
        self.counts = [0] * len(node.series)
        #: per series: the final-through readers were last told (by a bucket or a watermark)
        self.told: list[float] = [NEVER] * len(node.series)
        self.through: list[float] = [NEVER] * len(node.series)
        self.ended = False
        self.record = ctx.oneshot is None

    def emit(
        self, batch: Batch, k: int, buckets: Sequence[tuple[int, Any]], through: float
    ) -> None:
        spec = self.series[k]
        if buckets:
            # The hot path: one envelope per bucket, its value through qmtl.codec. A value the
            # codec refuses (or too large) raises ValueEncodeError before its bucket is written.
            seconds, key, max_items, ttl = spec.seconds, spec.key, spec.max_items, spec.ttl
            calendar = None if spec.calendar.aligned else spec.calendar
            interval = self.intervals[k]
            pipeline, name, node_id, run = (
                self.ctx.pipeline,
                self.node.name,
                self.node.node_id,
                self.ctx.run,
            )
            messages, writes, topic = batch.messages, batch.writes, self.topic
            record = self.record
            encode, max_bytes = envelopes.encode, self.ctx.settings.max_message_bytes
            for b, value in buckets:
                end = float((b + 1) * seconds) if calendar is None else calendar.end(b)
                payload = encode(
                    _new_envelope(
                        Envelope,
                        (
                            pipeline,
                            name,
                            end,
                            value,
                            node_id,
                            interval,
                            b,
                            None,
                            "event",
                            None,
                            2,
                            run,
                        ),
                    ),
                    max_bytes,
                )
                if record:
                    writes.append(_new_write(BucketWrite, (key, end, value, max_items, ttl)))
                messages.append((topic, payload))
            self.counts[k] += len(buckets)
            last = buckets[-1][0]
            if last > self.told[k]:
                self.told[k] = last
        if through > self.through[k]:
            self.through[k] = through

    def watermarks(self, batch: Batch) -> None:
        """Tell readers about final buckets past the last event sent (once per batch)."""
        for k, through in enumerate(self.through):
            if through > self.told[k] and through != END:
                wm = self.series[k].calendar.end(through)
                batch.messages.append(
                    (
                        self.topic,
                        envelopes.encode(
                            Envelope(
                                self.ctx.pipeline,
                                self.node.name,
                                wm,
                                None,
                                self.node.node_id,
                                self.intervals[k],
                                None,
                                wm,
                                "watermark",
                                None,
                                1,
                                self.ctx.run,
                            )
                        ),
                    )
                )
                self.told[k] = through

    def end(self, batch: Batch, stats: dict[str, Any]) -> None:
        self.ended = True
        value = {"buckets": dict(zip(self.intervals, self.counts, strict=True)), **stats}
        batch.ends.append(
            (
                self.topic,
                envelopes.encode(
                    Envelope(
                        self.ctx.pipeline,
                        self.node.name,
                        0.0,
                        value,
                        self.node.node_id,
                        None,
                        None,
                        None,
                        "end",
                        None,
                        1,
                        self.ctx.run,
                    )
                ),
            )
        )

    def dump(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "told": [encode_through(x) for x in self.told],
            "through": [encode_through(x) for x in self.through],
            "ended": self.ended,
        }

    def load(self, data: dict[str, Any]) -> None:
        self.counts = list(data["counts"])
        self.told = [decode_through(x) for x in data["told"]]
        self.through = [decode_through(x) for x in data["through"]]
        self.ended = data["ended"]
