"""Event-time streaming semantics (SPEC §5.2) as pure objects every engine reuses.

Vocabulary. For an interval of ``seconds``, bucket ``b`` holds event times
``[b * seconds, (b + 1) * seconds)``; ``b = floor(ts / seconds)`` and the bucket's timestamp
everywhere (state, outputs) is its end ``(b + 1) * seconds``. That is the rule of every interval
up to ``1d``; ``1w`` buckets start on Monday 00:00 UTC, and a pipeline's ``bucket_offset`` moves
``1d``/``1w`` boundaries (a duration, or a time zone and session close with daylight saving):
those intervals have a :class:`~qmtl.buckets.Calendar` (``index(ts)``, ``end(b)``,
``through(wm)``; :mod:`qmtl.buckets` states the rule), which the objects below take per
interval; epoch multiples are computed inline. A series is *final through* ``f`` when no bucket
``<= f`` can change any more; a watermark ``wm`` (epoch seconds) makes every bucket whose end is
``<= wm`` final (:func:`final_through`, :meth:`~qmtl.buckets.Calendar.through`).

The objects:

- :class:`SourceBucketer` turns one source's events into final buckets: a bucket's value is the
  last event in it (by ts, ties by arrival); the source's watermark is the highest ts seen minus
  ``allowed_lateness``; an event before the end of a bucket that is already final (at any of
  the source's intervals; with aligned calendars, the finest decides) is *late*: counted and
  dropped, never merged. :meth:`SourceBucketer.flush` ends the stream.
- :class:`MergedSource` is one source fed by several ordered streams at once (*origins*: the
  partitions of a Kafka input topic). The **merge rule**: each origin is bucketed on its own
  (a :class:`SourceBucketer`, its own watermark and lateness: an origin is ordered, the
  origins are not ordered with one another); bucket ``b`` of the source is final once it is
  final in every origin that matters, so the source's watermark is their minimum and no bucket
  is computed from part of its data; its value is the bucket's last event by ts across origins,
  a tie going to the later origin in the known list (the higher partition). The origins that
  matter: all of them when the source's events are spread over the partitions; for a *keyed*
  topic (each key on one partition), those that delivered an event to this source, or all
  before any did — and every origin's watermark also moves with its partition's clock
  (:meth:`MergedSource.on_watermark`), so the sources routed from one input partition share
  that partition's watermark and an illiquid symbol's buckets close with it. An event arriving
  after its bucket is final is late (counted, dropped). Each origin's last applied offset is
  kept, so a message delivered twice (a forward repeated after a crash) is applied once.
- :class:`NodeAligner` is one node at one interval: it receives its upstreams' final buckets
  and watermarks and returns the buckets that became computable, with their arguments (as-of
  join; ``window=N`` buffers with warm-up gating). Buckets come out in increasing order.
- :class:`OutputEvent` (a final bucket: ``node``, ``interval``, ``ts`` = bucket end, ``value``,
  ``bucket``) and :class:`RunSummary` (what a run did, from :mod:`qmtl.summary`), shared by
  every engine.

:mod:`qmtl.stream_runner` wires these objects over a whole :class:`~qmtl.plan.ExecutionPlan` in
one process (the local and mock engines, and the oracle of :mod:`qmtl.testing`).

The state objects are bounded (pending buckets wait only for slower upstreams; windows keep
``N`` values; the as-of join keeps one) and turn into plain data with ``to_dict`` /
``from_dict`` (lists, dicts, numbers and the node values as they are; ``-inf`` is ``None``, an
ended stream ``"end"``), which :func:`qmtl.codec.encode` carries, so a distributed engine can
persist them between batches with every value type of SPEC §5.4 intact.

Failure policy: a node that raises stops the run with :class:`~qmtl.errors.NodeExecutionError`
naming the node (chaining the cause). Buckets written before stay (state writes are idempotent
per bucket, so a re-run after the fix converges), and so do the failing node's buckets before
the failing one; the failing bucket and nothing computed from it is written. How far *other*
nodes got depends on the engine's scheduling (batching, partitions): do not rely on it.

Sources yield :class:`qmtl.sources.Watermark` to close buckets by wall clock when idle.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from itertools import compress, islice
from operator import le, lt, ne
from typing import Any, NamedTuple, cast

from qmtl.buckets import Calendar, plain
from qmtl.summary import NodeSummary as NodeSummary  # re-exported: engines import it here
from qmtl.summary import RunSummary as RunSummary

#: "Final through" of a stream that has ended: every bucket is final.
END = math.inf
_NEVER = -math.inf
_MISSING: Any = object()
_NOTHING: tuple[Any, ...] = ()
#: ``(interval position, [(bucket, value), ...], final through)`` of one interval.
Closure = tuple[int, list[tuple[int, Any]], float]
STATE_VERSION = 1


def final_through(watermark: float, seconds: int) -> float:
    """The last bucket index a watermark makes final (``-inf`` if none, ``END`` stays END), on
    the interval's calendar without offset (epoch multiples; Monday weeks)."""
    return plain(seconds).through(watermark)


def _enc(x: float) -> Any:
    if x == END:
        return "end"
    if x == _NEVER:
        return None
    return x


def _dec(x: Any) -> float:
    if x == "end":
        return END
    if x is None:
        return _NEVER
    return x  # type: ignore[no-any-return]


class OutputEvent(NamedTuple):
    """A final bucket of one node at one interval."""

    node: str
    interval: str
    ts: float  #: the bucket end, epoch seconds
    value: Any
    bucket: int  #: the bucket's index: ``floor(event ts / interval seconds)`` on epoch multiples


# -- sources --------------------------------------------------------------------------------
class SourceBucketer:
    """One source at all its intervals: events in, final buckets out.

    :meth:`on_event` returns ``None`` for a late event, else a (possibly empty) list of
    ``(interval_position, [(bucket, value), ...], final_through)`` for every interval whose
    final bucket advanced (buckets in increasing order; the list may be empty when the
    watermark crossed a bucket that had no event).
    """

    __slots__ = (
        "_closes",
        "_ends",
        "_finest",
        "_late_before",
        "_next",
        "_rows",
        "calendars",
        "events",
        "final",
        "late",
        "lateness",
        "open",
        "pairs",
        "placed",
        "seconds",
        "watermark",
    )

    def __new__(
        cls,
        seconds: Sequence[int],
        allowed_lateness: float | None = None,
        calendars: Sequence[Calendar] | None = None,
    ) -> SourceBucketer:
        # intervals on a calendar take the subclass, so on_event stays the epoch-multiple loop
        if cls is SourceBucketer and calendars and not all(c.aligned for c in calendars):
            cls = _CalendarBucketer
        return object.__new__(cls)

    def __init__(
        self,
        seconds: Sequence[int],
        allowed_lateness: float | None = None,
        calendars: Sequence[Calendar] | None = None,
    ) -> None:
        if not seconds:
            raise ValueError("a source needs at least one interval")
        self.seconds = tuple(int(s) for s in seconds)
        #: each interval's calendar (default: no offset)
        self.calendars = tuple(calendars or (plain(s) for s in self.seconds))
        self.lateness = float(allowed_lateness or 0.0)
        self.watermark = _NEVER  #: highest event ts seen
        self.final: list[float] = [_NEVER] * len(self.seconds)
        self.open: list[dict[int, tuple[float, Any]]] = [{} for _ in self.seconds]
        self._split()
        self.events = 0
        self.late = 0
        self._bounds()

    def _split(self) -> None:
        # Epoch-multiple intervals are bucketed inline (pairs; calendar None in _rows), the
        # others by their calendar (placed). With epoch multiples only, the finest interval's
        # final bucket decides lateness; otherwise the latest final bucket end does.
        table = tuple(zip(self.seconds, self.calendars, self.open, strict=True))
        self._rows = tuple((s, None if c.aligned else c, o) for s, c, o in table)
        self.pairs = tuple((s, o) for s, c, o in self._rows if c is None)
        self.placed = tuple((c, o) for _s, c, o in self._rows if c is not None)
        finest = min(range(len(self.seconds)), key=self.seconds.__getitem__)
        self._finest = -1 if self.placed else finest

    def _bounds(self) -> None:
        # Per interval, the watermark that closes its next bucket; an event before
        # _late_before is late.
        self._closes = [c.end(f + 1) for c, f in zip(self.calendars, self.final, strict=True)]
        self._next = min(self._closes)
        #: per interval, the end of its last final bucket
        self._ends = [c.end(f) for c, f in zip(self.calendars, self.final, strict=True)]
        self._late_before = max(self._ends)

    def on_event(self, ts: float, value: Any) -> list[Closure] | tuple[()] | None:
        self.events += 1
        if ts < self._late_before:
            self.late += 1
            return None
        for s, opened in self.pairs:
            b = int(ts // s)
            slot = opened.get(b)
            if slot is None or ts >= slot[0]:
                opened[b] = (ts, value)
        if ts <= self.watermark:
            return _NOTHING
        self.watermark = ts
        wm = ts - self.lateness
        if wm < self._next:
            return _NOTHING
        return self._advance(wm)

    def on_events(self, events: Sequence[tuple[float, Any]]) -> list[Closure]:
        """Several events in arrival order: what :meth:`on_event` returns for each, merged into
        one closure per interval whose final bucket advanced (its buckets in order, its last
        *final through*).

        Events in time order with no ``allowed_lateness`` (a backtest over sorted data) and
        intervals on epoch multiples take a fast path: each interval's bucket changes are found
        in one pass over the batch, since then each interval has one open bucket and an event in
        a later bucket closes it.
        """
        if not events:
            return []
        return self.on_columns([event[0] for event in events], [event[1] for event in events])

    def on_columns(
        self, times: Sequence[float], values: Sequence[Any], *, stamped: bool = False
    ) -> list[Closure]:
        """:meth:`on_events` of events given as two columns: their times and their values
        (``stamped``: each value is kept as ``(ts, value)``, as :class:`MergedSource`'s
        origins keep them, without a pair made per event)."""
        if not times:
            return []

        def stamp(j: int) -> Any:
            return (times[j], values[j])

        at = stamp if stamped else cast("Callable[[int], Any]", values.__getitem__)
        if (
            self.lateness
            or self.placed  # intervals on a calendar: one event at a time
            or times[0] < self.watermark
            or not all(map(le, times, islice(times, 1, None)))
            or any(len(opened) > 1 for opened in self.open)
        ):
            return self._each(zip(times, map(at, range(len(times))), strict=True))
        count = len(times)
        self.events += count
        self.watermark = last = times[-1]
        closed: list[Closure] = []
        final = self.final
        for i, (s, opened) in enumerate(self.pairs):
            first, newest = int(times[0] // s), int(last // s)
            ready: list[tuple[int, Any]] = []
            if opened:
                ((b, (_ts, value)),) = opened.items()
                if b != first:
                    ready.append((b, value))
            if (newest - first) * 4 < count:  # a few buckets: find where each ends by bisection
                b, j = first, 0  # (ts // s >= b + 1 exactly when ts >= (b + 1) * s)
                while b != newest:
                    j = bisect_left(times, (b + 1) * s, j)
                    ready.append((b, at(j - 1)))
                    b = int(times[j] // s)
            else:
                buckets = [int(ts // s) for ts in times]
                ready += [
                    (buckets[j - 1], at(j - 1))
                    for j in compress(range(1, count), map(ne, islice(buckets, 1, None), buckets))
                ]
            opened.clear()
            opened[newest] = (last, at(count - 1))
            through = newest - 1  # every bucket before the watermark's is final
            if through > final[i]:
                final[i] = through
                closed.append((i, ready, through))
        self._bounds()
        return closed

    def _each(self, events: Iterable[tuple[float, Any]]) -> list[Closure]:
        """:meth:`on_events` one event at a time."""
        merged: dict[int, tuple[list[tuple[int, Any]], float]] = {}
        for ts, value in events:
            for i, buckets, through in self.on_event(ts, value) or _NOTHING:
                if i in merged:
                    merged[i][0].extend(buckets)
                    merged[i] = (merged[i][0], through)
                else:
                    merged[i] = (list(buckets), through)
        return [(i, buckets, through) for i, (buckets, through) in sorted(merged.items())]

    def on_watermark(self, watermark: float) -> list[Closure]:
        """Move the watermark without an event (idle flush by wall clock): every bucket ending
        ``<= watermark - allowed_lateness`` becomes final."""
        if watermark <= self.watermark:
            return []
        self.watermark = watermark
        return self._advance(watermark - self.lateness if watermark != END else END)

    def flush(self) -> list[Closure]:
        """End of stream: every open bucket becomes final."""
        return self._advance(END)

    def _advance(self, wm: float) -> list[Closure]:
        closed: list[Closure] = []
        final, closes = self.final, self._closes
        for i, (s, calendar, opened) in enumerate(self._rows):
            if wm < closes[i]:
                continue
            if calendar is None:
                through = END if wm == END else int(wm // s) - 1
                closes[i] = (through + 2) * s
            else:
                through = calendar.through(wm)
                closes[i] = calendar.end(through + 1)
                self._ends[i] = calendar.end(through)
            final[i] = through
            if len(opened) == 1:
                (b,) = opened
                if b <= through:
                    closed.append((i, [(b, opened.pop(b)[1])], through))
                else:
                    closed.append((i, [], through))
                continue
            ready = sorted(b for b in opened if b <= through)
            closed.append((i, [(b, opened.pop(b)[1]) for b in ready], through))
        self._next = min(closes)
        f = self._finest
        if f >= 0:  # epoch multiples only: the finest interval's final bucket decides
            self._late_before = (final[f] + 1) * self.seconds[f]
        else:
            ends, seconds = self._ends, self.seconds
            for j, (_s, calendar, _o) in enumerate(self._rows):
                if calendar is None:
                    ends[j] = (final[j] + 1) * seconds[j]
            self._late_before = max(ends)
        return closed

    def seed(self, final: Sequence[float]) -> None:
        """Start after history (a warm start, :mod:`qmtl.warm`): per interval, the newest
        stored bucket (``-inf``: none) is final, so an event before its end is late."""
        self.final = list(final)
        self._bounds()
        self.watermark = max(self.watermark, self._late_before)  # as if history's events came

    def to_dict(self) -> dict[str, Any]:
        """Plain data for :func:`qmtl.codec.encode` (values as the source gave them)."""
        return {
            "version": STATE_VERSION,
            "seconds": list(self.seconds),
            "allowed_lateness": self.lateness,
            "watermark": _enc(self.watermark),
            "final": [_enc(f) for f in self.final],
            "open": [[[b, ts, v] for b, (ts, v) in sorted(o.items())] for o in self.open],
            "events": self.events,
            "late": self.late,
        }

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], calendars: Sequence[Calendar] | None = None
    ) -> SourceBucketer:
        """The state of :meth:`to_dict`, on ``calendars`` (default: no offset)."""
        self = cls(data["seconds"], data["allowed_lateness"], calendars)
        self.watermark = _dec(data["watermark"])
        self.final = [_dec(f) for f in data["final"]]
        self.open = [{int(b): (ts, v) for b, ts, v in o} for o in data["open"]]
        self._split()
        self.events, self.late = data["events"], data["late"]
        self._bounds()
        return self


class _CalendarBucketer(SourceBucketer):
    """A source with intervals on a calendar (weeks, offset days): each event is also placed
    in those intervals' buckets by :meth:`~qmtl.buckets.Calendar.index`."""

    __slots__ = ()

    def on_event(self, ts: float, value: Any) -> list[Closure] | tuple[()] | None:
        # SourceBucketer.on_event with the calendar intervals' loop (kept apart from the
        # epoch-multiple path, which runs per event for every source)
        self.events += 1
        if ts < self._late_before:
            self.late += 1
            return None
        for s, opened in self.pairs:
            b = int(ts // s)
            slot = opened.get(b)
            if slot is None or ts >= slot[0]:
                opened[b] = (ts, value)
        for calendar, opened in self.placed:
            b = calendar.index(ts)
            slot = opened.get(b)
            if slot is None or ts >= slot[0]:
                opened[b] = (ts, value)
        if ts <= self.watermark:
            return _NOTHING
        self.watermark = ts
        wm = ts - self.lateness
        if wm < self._next:
            return _NOTHING
        return self._advance(wm)


class MergedSource:
    """One source fed by several ordered origins (see the module docstring's merge rule).

    ``origins`` lists every origin that may feed the source, in tie-break order (later wins);
    ``keyed``: each key lives on one origin (see the module docstring). :meth:`on_event` /
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
        self.final: list[float] = [_NEVER] * len(self.seconds)
        #: per interval: bucket -> (ts of its last event, origin rank, value)
        self.pending: list[dict[int, tuple[float, int, Any]]] = [{} for _ in self.seconds]
        self.events = 0
        self.late = 0
        #: an event before this is late: the end of the latest final bucket, any interval
        self._late_before = _NEVER

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
                through = part.final[k] if part is not None else _NEVER
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
            "final": [_enc(f) for f in self.final],
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
        self.final = [_dec(f) for f in data["final"]]
        ends = [c.end(f) for c, f in zip(self.calendars, self.final, strict=True)]
        self._late_before = max(ends)
        self.pending = [{int(b): (ts, r, v) for b, ts, r, v in p} for p in data["pending"]]
        self.events, self.late = data["events"], data["late"]
        return self


# -- nodes ----------------------------------------------------------------------------------
class NodeAligner:
    """One node at one interval: aligns its upstreams' final buckets (SPEC §5.2).

    Bucket ``b`` is computed once it is final for every upstream, some upstream has a value in
    ``b`` and every upstream has a value at or before ``b``; an upstream without a value in
    ``b`` contributes its latest earlier value (as-of join). With ``window=N`` each upstream
    contributes the list of its own last ``N`` values at buckets ``<= b`` (oldest first) and
    ``b`` is computed only once every list is full.

    Methods return ``None`` when the node's own final bucket did not advance, else the list of
    ``(bucket, args)`` to compute (``args`` in upstream order), possibly empty; afterwards
    :attr:`done` is the node's own *final through* (its watermark, in buckets), which an engine
    forwards to the node's readers. A bucket from upstream ``i`` also means that upstream is
    final through that bucket (every engine emits a series in bucket order). Buckets ``<=
    done`` are ignored as replays.
    """

    __slots__ = (
        "_blank",
        "calendar",
        "done",
        "final",
        "last",
        "missing",
        "pending",
        "seconds",
        "size",
        "width",
        "windows",
    )

    def __init__(
        self,
        upstreams: int,
        seconds: int,
        window: int | None = None,
        calendar: Calendar | None = None,
    ) -> None:
        self.seconds = int(seconds)
        self.calendar = calendar or plain(self.seconds)  #: the interval's buckets
        self.size = window
        self.width = upstreams
        self.final: list[float] = [_NEVER] * upstreams
        #: bucket -> one value per upstream (``_MISSING`` where it has none), then how many
        #: upstreams have one: buckets not final for every upstream yet.
        self.pending: dict[int, list[Any]] = {}
        self.last: list[Any] = [_MISSING] * upstreams
        self.missing = upstreams
        self.windows: list[deque[Any]] | None = (
            [deque(maxlen=window) for _ in range(upstreams)] if window else None
        )
        self.done: float = _NEVER
        self._blank: list[Any] = [*self.last, 0]  # a new pending row (values, then a count)

    # -- the API for engines ----------------------------------------------------------------
    def on_bucket(self, upstream: int, bucket: int, value: Any) -> list[tuple[int, Any]] | None:
        """A final bucket of upstream ``upstream``."""
        return self.push(upstream, ((bucket, value),), bucket)

    def on_watermark(self, upstream: int, watermark: float) -> list[tuple[int, Any]] | None:
        """Upstream ``upstream``'s watermark (epoch seconds; ``END`` when it has ended)."""
        return self.push(upstream, _NOTHING, self.calendar.through(watermark))

    def on_end(self, upstream: int) -> list[tuple[int, Any]] | None:
        """Upstream ``upstream`` has ended: all its buckets are final."""
        return self.push(upstream, _NOTHING, END)

    def push(
        self, upstream: int, buckets: Sequence[tuple[int, Any]], through: float
    ) -> list[tuple[int, Any]] | None:
        """Buckets of ``upstream`` (increasing) and its new *final through*, in one call.

        The ``args`` lists returned belong to the caller, who must not change them (one may be
        the aligner's own latest values, kept for the as-of join)."""
        width = self.width
        if width == 1 and not self.pending:
            return self._push_one(buckets, through)
        done = self.done
        if buckets:
            if buckets[-1][0] > through:
                through = buckets[-1][0]
            if buckets[0][0] <= done:  # replays of buckets already computed
                buckets = buckets[bisect_right(buckets, done, key=_bucket_of) :]
            pending, blank = self.pending, self._blank
            for b, value in buckets:
                row = pending.get(b)
                if row is None:
                    row = pending[b] = blank.copy()
                if row[upstream] is _MISSING:
                    row[-1] += 1  # the row's last slot counts the upstreams present
                row[upstream] = value
        final = self.final
        if through <= final[upstream]:
            return None
        final[upstream] = through
        frontier = min(final) if width > 1 else through
        if frontier <= done:
            return None
        self.done = frontier
        pending = self.pending
        if not pending:
            return []
        keys = sorted(pending)
        if keys[-1] > frontier:
            keys = keys[: bisect_right(keys, frontier)]
        if self.windows is not None:
            return self._windowed(keys)
        ready: list[tuple[int, Any]] = []
        last = self.last
        for b in keys:
            row = pending.pop(b)
            if row.pop() == width:  # every upstream has a value in b: the row is the args
                last = row
                self.missing = 0
                ready.append((b, row))
                continue
            merged = last.copy()
            for i, value in enumerate(row):
                if value is not _MISSING:
                    merged[i] = value
            last = merged
            if self.missing:
                self.missing = sum(1 for value in merged if value is _MISSING)
            if not self.missing:
                ready.append((b, merged))
        self.last = last
        return ready

    def _windowed(self, keys: list[int]) -> list[tuple[int, Any]]:
        ready: list[tuple[int, Any]] = []
        pending, last, size = self.pending, self.last, self.size
        windows = self.windows
        assert windows is not None
        for b in keys:
            row = pending.pop(b)
            row.pop()
            for i, value in enumerate(row):
                if value is not _MISSING:
                    if last[i] is _MISSING:
                        self.missing -= 1
                    last[i] = value
                    windows[i].append(value)
            if all(len(w) == size for w in windows):
                ready.append((b, [list(w) for w in windows]))
        return ready

    def _push_one(
        self, buckets: Sequence[tuple[int, Any]], through: float
    ) -> list[tuple[int, Any]] | None:
        # One upstream: nothing to align, each final bucket is computable at once.
        if buckets and buckets[-1][0] > through:
            through = buckets[-1][0]
        done = self.done
        if through <= done:
            return None
        self.final[0] = self.done = through
        ready: list[tuple[int, Any]] = []
        value = _MISSING
        windows = self.windows
        if windows is None:
            for b, value in buckets:
                if b > done:
                    ready.append((b, [value]))
        else:
            window, size = windows[0], self.size
            for b, value in buckets:
                if b > done:
                    window.append(value)
                    if len(window) == size:
                        ready.append((b, [list(window)]))
        if value is not _MISSING:
            self.last = [value]
            self.missing = 0
        return ready

    @property
    def watermark(self) -> float:
        """The node's own watermark in epoch seconds (end of its last final bucket)."""
        return self.calendar.end(self.done)

    def seed(self, done: float, history: Sequence[Sequence[Any]]) -> None:
        """Continue after bucket ``done`` (a warm start, :mod:`qmtl.warm`): every upstream is
        final through it, and ``history[i]`` holds upstream ``i``'s stored values at buckets
        ``<= done``, oldest first (its latest for the as-of join, its last N for a window)."""
        self.done = done
        self.final = [done] * self.width
        for i, values in enumerate(history):
            if values:
                self.last[i] = values[-1]
                if self.windows is not None:
                    self.windows[i].extend(values)
        self.missing = sum(1 for value in self.last if value is _MISSING)

    # -- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data for :func:`qmtl.codec.encode` (values as the upstreams gave them; ``[]``
        marks "no value")."""
        return {
            "version": STATE_VERSION,
            "seconds": self.seconds,
            "window": self.size,
            "done": _enc(self.done),
            "final": [_enc(f) for f in self.final],
            "pending": [
                [b, [_held(v) for v in row[:-1]]] for b, row in sorted(self.pending.items())
            ],
            "last": [_held(v) for v in self.last],
            "windows": [list(w) for w in self.windows] if self.windows is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], calendar: Calendar | None = None) -> NodeAligner:
        """The state of :meth:`to_dict`, on ``calendar`` (default: no offset)."""
        self = cls(len(data["final"]), data["seconds"], data["window"], calendar)
        self.done = _dec(data["done"])
        self.final = [_dec(f) for f in data["final"]]
        self.pending = {int(b): _row([_unheld(v) for v in row]) for b, row in data["pending"]}
        self.last = [_unheld(v) for v in data["last"]]
        self.missing = sum(1 for v in self.last if v is _MISSING)
        if data["windows"] is not None:
            self.windows = [deque(w, maxlen=self.size) for w in data["windows"]]
        return self


def _row(values: list[Any]) -> list[Any]:
    """A pending row: the values, then how many are present."""
    return [*values, sum(1 for value in values if value is not _MISSING)]


def _bucket_of(item: tuple[int, Any]) -> int:
    return item[0]


def _held(value: Any) -> list[Any]:
    return [] if value is _MISSING else [value]


def _unheld(held: list[Any]) -> Any:
    return held[0] if held else _MISSING
