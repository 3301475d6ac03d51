"""One source fed by several ordered origins (partitions): :class:`MergedSource`, the merge rule
of the package docstring."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice
from operator import le, lt
from typing import Any

from qmtl.buckets import Calendar, plain
from qmtl.streaming._bucketer import SourceBucketer
from qmtl.streaming._common import (
    END,
    NEVER,
    STATE_VERSION,
    Closure,
    decode_bound,
    encode_bound,
)


class MergedSource:
    """One source fed by several ordered origins (see the package docstring's merge rule).

    ``origins`` lists every origin that may feed the source, in tie-break order (later wins);
    ``keyed``: each key lives on one origin (see the package docstring). :meth:`on_event` /
    :meth:`on_watermark` / :meth:`end` return the source's closures like
    :class:`SourceBucketer` (``None`` for a late event); :attr:`ended` is true once every known
    origin has ended.
    """

    def __init__(
        self,
        seconds: Sequence[int],
        allowed_lateness: float | None,
        origins: Sequence[str],
        *,
        keyed: bool = False,
        calendars: Sequence[Calendar] | None = None,
    ) -> None:
        if not origins:
            raise ValueError("a merged source needs at least one origin")
        self.seconds = tuple(int(s) for s in seconds)
        #: each interval's calendar (default: no offset), shared by every origin's bucketer
        self.calendars = tuple(calendars or (plain(s) for s in self.seconds))
        self.lateness = allowed_lateness
        self.origins = list(origins)
        self.keyed = keyed
        self.rank = {origin: i for i, origin in enumerate(self.origins)}
        self.parts: dict[str, SourceBucketer] = {}
        self.heard: list[str] = []  #: origins that delivered an event, in first-heard order
        self._heard: set[str] = set()
        self.offsets: dict[str, int] = {}  #: last applied offset per origin
        self.ended_origins: set[str] = set()
        self.final: list[float] = [NEVER] * len(self.seconds)
        #: per interval: bucket -> (ts of its last event, origin rank, value)
        self.pending: list[dict[int, tuple[float, int, Any]]] = [{} for _ in self.seconds]
        self.events = 0
        self.late = 0
        #: an event before this is late: the end of the latest final bucket, any interval
        self._late_before = NEVER

    @property
    def ended(self) -> bool:
        return len(self.ended_origins) == len(self.origins)

    def _part(self, origin: str) -> SourceBucketer:
        part = self.parts.get(origin)
        if part is None:
            if origin not in self.rank:  # an origin not announced: it ranks last
                self.rank[origin] = len(self.origins)
                self.origins.append(origin)
            part = self.parts[origin] = SourceBucketer(self.seconds, self.lateness, self.calendars)
        return part

    def duplicate(self, origin: str, offset: int | None) -> bool:
        """Whether ``offset`` of ``origin`` was applied already; records it otherwise."""
        if offset is None:
            return False
        if offset <= self.offsets.get(origin, -1):
            return True
        self.offsets[origin] = offset
        return False

    def on_event(self, origin: str, ts: float, value: Any) -> list[Closure] | None:
        self.events += 1
        if ts < self._late_before:
            self.late += 1
            return None
        part = self.parts.get(origin) or self._part(origin)
        if origin not in self._heard:
            self._heard.add(origin)
            self.heard.append(origin)
        closed = part.on_event(ts, (ts, value))
        if closed is None:
            self.late += 1
            return None
        if not closed:
            return []  # no bucket of this origin closed: nothing else can have
        return self._merge(origin, closed)

    def on_events(
        self, origin: str, offsets: Sequence[int], times: Sequence[float], values: Sequence[Any]
    ) -> list[Closure]:
        """Events of ``origin`` at its ``offsets``, in arrival order: :meth:`duplicate` and
        :meth:`on_event` for each, their closures in order. Ascending offsets and times from
        the late bound on (an input partition read in order) go to the origin's bucketer at
        once (:meth:`SourceBucketer.on_events`): no event of such a batch can be late for the
        merge, since its final buckets never pass the origin's own event times."""
        applied = self.offsets.get(origin, -1)
        count, start = len(times), 0
        while start < count and offsets[start] <= applied:
            start += 1  # applied already (a forward repeated after a crash)
        if start == count:
            return []
        if (
            times[start] < self._late_before
            or (type(offsets) is not range and not all(map(lt, offsets, islice(offsets, 1, None))))
            or not all(map(le, islice(times, start, None), islice(times, start + 1, None)))
        ):
            out: list[Closure] = []
            for offset, ts, value in zip(offsets, times, values, strict=True):
                if not self.duplicate(origin, offset):
                    out.extend(self.on_event(origin, ts, value) or ())
            return out
        self.offsets[origin] = offsets[-1]
        self.events += count - start
        part = self.parts.get(origin) or self._part(origin)
        if origin not in self._heard:
            self._heard.add(origin)
            self.heard.append(origin)
        late = part.late
        if start:
            times, values = times[start:], values[start:]
        closed = part.on_columns(times, values, stamped=True)
        self.late += part.late - late
        return self._merge(origin, closed) if closed else []

    def on_watermark(self, origin: str, watermark: float) -> list[Closure]:
        """``origin`` promises no event before ``watermark`` (its partition's clock)."""
        return self._merge(origin, self._part(origin).on_watermark(watermark))

    def end(self, origin: str) -> list[Closure]:
        """``origin`` has no more events."""
        self.ended_origins.add(origin)
        return self._merge(origin, self._part(origin).flush())

    def flush(self) -> list[Closure]:
        """End every origin (end of stream)."""
        closed: list[Closure] = []
        for origin in self.origins:
            if origin not in self.ended_origins:
                closed.extend(self.end(origin))
        return closed

    def _merge(self, origin: str, closed: list[Closure] | tuple[()]) -> list[Closure]:
        rank = self.rank[origin]
        for k, buckets, _through in closed:
            pending, done = self.pending[k], self.final[k]
            for b, (ts, value) in buckets:
                if b <= done:
                    continue
                held = pending.get(b)
                if held is None or (ts, rank) >= (held[0], held[1]):
                    pending[b] = (ts, rank, value)
        out: list[Closure] = []
        parts = self.parts
        relevant = (self.heard or self.origins) if self.keyed else self.origins
        for k in range(len(self.seconds)):
            frontier = END
            for name in relevant:
                part = parts.get(name)
                through = part.final[k] if part is not None else NEVER
                if through < frontier:
                    frontier = through
            if frontier <= self.final[k]:
                continue
            self.final[k] = frontier
            end = self.calendars[k].end(frontier)
            if end > self._late_before:
                self._late_before = end
            pending = self.pending[k]
            ready = sorted(b for b in pending if b <= frontier)
            out.append((k, [(b, pending.pop(b)[2]) for b in ready], frontier))
        return out

    def seed(self, final: Sequence[float]) -> None:
        """:meth:`SourceBucketer.seed` for every origin: history's buckets are final."""
        self.final = list(final)
        self._late_before = max(c.end(f) for c, f in zip(self.calendars, final, strict=True))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for :func:`qmtl.codec.encode` (values as the origins gave them)."""
        return {
            "version": STATE_VERSION,
            "seconds": list(self.seconds),
            "allowed_lateness": self.lateness,
            "origins": list(self.origins),
            "keyed": self.keyed,
            "parts": {o: p.to_dict() for o, p in self.parts.items()},
            "heard": list(self.heard),
            "offsets": dict(self.offsets),
            "ended": sorted(self.ended_origins),
            "final": [encode_bound(f) for f in self.final],
            "pending": [
                [[b, ts, r, v] for b, (ts, r, v) in sorted(p.items())] for p in self.pending
            ],
            "events": self.events,
            "late": self.late,
        }

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], calendars: Sequence[Calendar] | None = None
    ) -> MergedSource:
        """The state of :meth:`to_dict`, on ``calendars`` (default: no offset)."""
        self = cls(
            data["seconds"],
            data["allowed_lateness"],
            data["origins"],
            keyed=data["keyed"],
            calendars=calendars,
        )
        self.parts = {
            o: SourceBucketer.from_dict(p, self.calendars) for o, p in data["parts"].items()
        }
        self.heard = list(data["heard"])
        self._heard = set(self.heard)
        self.offsets = {o: int(x) for o, x in data["offsets"].items()}
        self.ended_origins = set(data["ended"])
        self.final = [decode_bound(f) for f in data["final"]]
        ends = [c.end(f) for c, f in zip(self.calendars, self.final, strict=True)]
        self._late_before = max(ends)
        self.pending = [{int(b): (ts, r, v) for b, ts, r, v in p} for p in data["pending"]]
        self.events, self.late = data["events"], data["late"]
        return self
