"""Nodes: :class:`NodeAligner` aligns one node's upstream buckets at one interval (as-of join,
windows, warm-up), per the package docstring."""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from typing import Any

from qmtl.buckets import Calendar, plain
from qmtl.streaming._common import (
    END,
    MISSING,
    NEVER,
    NOTHING,
    STATE_VERSION,
    decode_bound,
    encode_bound,
)


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
        self.final: list[float] = [NEVER] * upstreams
        #: bucket -> one value per upstream (``MISSING`` where it has none), then how many
        #: upstreams have one: buckets not final for every upstream yet.
        self.pending: dict[int, list[Any]] = {}
        self.last: list[Any] = [MISSING] * upstreams
        self.missing = upstreams
        self.windows: list[deque[Any]] | None = (
            [deque(maxlen=window) for _ in range(upstreams)] if window else None
        )
        self.done: float = NEVER
        self._blank: list[Any] = [*self.last, 0]  # a new pending row (values, then a count)

    # -- the API for engines ----------------------------------------------------------------
    def on_bucket(self, upstream: int, bucket: int, value: Any) -> list[tuple[int, Any]] | None:
        """A final bucket of upstream ``upstream``."""
        return self.push(upstream, ((bucket, value),), bucket)

    def on_watermark(self, upstream: int, watermark: float) -> list[tuple[int, Any]] | None:
        """Upstream ``upstream``'s watermark (epoch seconds; ``END`` when it has ended)."""
        return self.push(upstream, NOTHING, self.calendar.through(watermark))

    def on_end(self, upstream: int) -> list[tuple[int, Any]] | None:
        """Upstream ``upstream`` has ended: all its buckets are final."""
        return self.push(upstream, NOTHING, END)

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
                if row[upstream] is MISSING:
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
                if value is not MISSING:
                    merged[i] = value
            last = merged
            if self.missing:
                self.missing = sum(1 for value in merged if value is MISSING)
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
                if value is not MISSING:
                    if last[i] is MISSING:
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
        value = MISSING
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
        if value is not MISSING:
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
        self.missing = sum(1 for value in self.last if value is MISSING)

    # -- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data for :func:`qmtl.codec.encode` (values as the upstreams gave them; ``[]``
        marks "no value")."""
        return {
            "version": STATE_VERSION,
            "seconds": self.seconds,
            "window": self.size,
            "done": encode_bound(self.done),
            "final": [encode_bound(f) for f in self.final],
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
        self.done = decode_bound(data["done"])
        self.final = [decode_bound(f) for f in data["final"]]
        self.pending = {int(b): _row([_unheld(v) for v in row]) for b, row in data["pending"]}
        self.last = [_unheld(v) for v in data["last"]]
        self.missing = sum(1 for v in self.last if v is MISSING)
        if data["windows"] is not None:
            self.windows = [deque(w, maxlen=self.size) for w in data["windows"]]
        return self


def _row(values: list[Any]) -> list[Any]:
    """A pending row: the values, then how many are present."""
    return [*values, sum(1 for value in values if value is not MISSING)]


def _bucket_of(item: tuple[int, Any]) -> int:
    return item[0]


def _held(value: Any) -> list[Any]:
    return [] if value is MISSING else [value]


def _unheld(held: list[Any]) -> Any:
    return held[0] if held else MISSING
