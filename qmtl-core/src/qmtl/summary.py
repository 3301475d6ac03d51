"""What a streaming run did: the run summary every engine returns (see :mod:`qmtl.streaming`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class NodeSummary:
    """What one node did in a run."""

    events_in: int = 0
    late_events: int = 0
    buckets_out: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "events_in": self.events_in,
            "late_events": self.late_events,
            "buckets_out": dict(self.buckets_out),
        }


@dataclass
class RunSummary:
    """What a streaming run did: source events in, late events dropped, final buckets out."""

    pipeline: str
    engine: str
    nodes: dict[str, NodeSummary]
    elapsed_seconds: float = 0.0

    @property
    def events_in(self) -> int:
        return sum(n.events_in for n in self.nodes.values())

    @property
    def late_events(self) -> int:
        return sum(n.late_events for n in self.nodes.values())

    @property
    def buckets_out(self) -> int:
        return sum(sum(n.buckets_out.values()) for n in self.nodes.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "engine": self.engine,
            "events_in": self.events_in,
            "late_events": self.late_events,
            "buckets_out": self.buckets_out,
            "elapsed_seconds": round(self.elapsed_seconds, 6),
            "nodes": {name: n.to_dict() for name, n in self.nodes.items()},
        }
