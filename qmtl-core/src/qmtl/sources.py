"""Where source nodes get their events, and how an in-process engine orders them.

A source yields events ``(ts, value)``: ``ts`` is event time in epoch seconds (int or float; a
:class:`datetime.datetime` is converted, a naive one read as UTC). What a ``SourceNode``'s
``source`` may be, in streaming:

- a :class:`SourceProcessor` (anything with ``events()``), e.g. :class:`FileSourceProcessor`;
- an object with ``fetch()`` (the earlier SDK's source processors): read once per run, like a
  callable;
- an iterable or generator of ``(ts, value)`` pairs, or of plain values, which are stamped with
  the wall-clock time they are read (ingestion time, for live feeds; give ``ts`` for
  backtests). A value that is itself a 2-tuple with a number first must be wrapped as
  ``(ts, (a, b))``;
- a callable: called once per run; if it returns an iterable (not a string or mapping), that is
  the event stream (so ``source=lambda: my_generator()`` restarts on every run), otherwise
  the result is one event stamped now.

A generator object can be consumed once only; pass a list, a processor or a callable to run a
pipeline more than once.

A live feed closes buckets by wall clock by yielding :class:`Watermark` ``(ts)`` when it has
nothing new (e.g. ``Watermark(time.time())`` on an idle tick): the source's watermark moves to
``ts`` as if an event had been seen, so its open buckets before ``ts - allowed_lateness`` become
final and later events for them are counted late.
"""

from __future__ import annotations

import csv
import heapq
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qmtl.errors import QmtlError, SourceError, SourceExecutionError

if TYPE_CHECKING:
    from qmtl.plan import ExecutionPlan

Event = tuple[float, Any]


class Watermark:
    """Yielded by a source instead of an event: "no event before ``ts`` will follow"."""

    __slots__ = ("ts",)

    def __init__(self, ts: float) -> None:
        self.ts = to_timestamp(ts, "Watermark")

    def __repr__(self) -> str:
        return f"Watermark({self.ts!r})"


class SourceProcessor:
    """Base class of user-defined sources (subclassing it is optional: any object with these
    methods works). Implement one of:

    - ``events()``: yields ``(ts, value)`` pairs in the order they arrive (a stream); a
      one-shot ``execute`` takes the last one, or ``latest()`` when defined;
    - ``fetch()``: the earlier SDK's form, a live read of the current value. A one-shot
      ``execute`` calls it once per run; a streaming run calls it once too and treats the
      result like a callable source's (one event stamped with the time it was read, or, if it
      returns an iterable, those events).
    """


def to_timestamp(ts: Any, where: str) -> float:
    """Epoch seconds of ``ts`` (a real number or a datetime); :class:`SourceError` otherwise."""
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        if not math.isfinite(ts):
            raise SourceError(f"{where}: event time {ts!r} is not a finite number")
        return ts
    if isinstance(ts, datetime):
        aware = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts
        return aware.timestamp()
    raise SourceError(f"{where}: event time {ts!r} is not epoch seconds or a datetime")


def _is_pair(item: Any) -> bool:
    return (
        type(item) is tuple
        and len(item) == 2
        and (isinstance(item[0], int | float | datetime) and not isinstance(item[0], bool))
    )


def _normalise(items: Iterable[Any], name: str, clock: Callable[[], float]) -> Iterator[Event]:
    where = f"source '{name}'"
    try:
        for item in items:
            # The common case (a (float|int, value) tuple) is checked inline: this runs per event.
            if type(item) is tuple and len(item) == 2:
                ts = item[0]
                kind = type(ts)
                if (kind is float or kind is int) and ts == ts and ts not in _INF:
                    yield item
                    continue
                if _is_pair(item):
                    yield to_timestamp(ts, where), item[1]
                    continue
            if type(item) is Watermark:
                yield item.ts, item
                continue
            yield clock(), item
    except QmtlError:
        raise
    except Exception as error:  # the source's own code failed while producing an event
        raise SourceExecutionError(name, error) from error


_INF = (math.inf, -math.inf)


def source_events(
    source: Any, name: str, *, clock: Callable[[], float] = time.time
) -> Iterator[Event]:
    """The events of a source, normalised to ``(ts, value)`` (see the module docstring)."""
    if source is None:
        return iter(())
    if hasattr(source, "events") and callable(source.events):
        return _normalise(_call(source.events, name), name, clock)
    fetch = getattr(source, "fetch", None)
    if callable(source) or callable(fetch):
        produced = _call(source if fetch is None or callable(source) else fetch, name)
        if _is_stream(produced):
            return _normalise(produced, name, clock)
        return iter(((clock(), produced),))
    if _is_stream(source):
        return _normalise(source, name, clock)
    raise SourceError(
        f"source '{name}' is {type(source).__name__}; give an iterable of (ts, value) pairs, "
        "a callable or a SourceProcessor"
    )


def _call(function: Callable[[], Any], name: str) -> Any:
    try:
        return function()
    except QmtlError:
        raise
    except Exception as error:  # the source's own code failed
        raise SourceExecutionError(name, error) from error


def _is_stream(obj: Any) -> bool:
    return isinstance(obj, Iterable) and not isinstance(obj, str | bytes | Mapping)


def merged_events(
    plan: ExecutionPlan,
    *,
    sources: Mapping[str, Any] | None = None,
    events: Iterable[tuple[str, Any, Any]] | None = None,
    clock: Callable[[], float] = time.time,
) -> Iterator[tuple[int, float | None, Any]]:
    """``(source index, ts, value)`` in event-time order across a plan's sources.

    Each source is read lazily at its own pace; the next event is always the earliest head
    (ties by plan order), so a source's own order is kept. When a source ends,
    ``(index, None, None)`` is yielded; a :class:`Watermark` ``wm`` comes as
    ``(index, None, wm)``. ``sources`` replaces named sources' inputs;
    ``events``, a list of ``(source name, ts, value)``, replaces all of them and is fed in
    exactly that arrival order (how tests control arrival).
    """
    roots = [node for node in plan.nodes if not node.upstreams]
    index = {node.name: node.index for node in roots}
    if events is not None:
        return _explicit(plan, index, events)
    overrides = dict(sources or {})
    unknown = sorted(set(overrides) - set(index))
    if unknown:
        raise SourceError(
            f"sources= names {unknown}, which are not sources of pipeline '{plan.pipeline}'; "
            f"its sources are {sorted(index)}"
        )
    streams = []
    for node in roots:
        if node.kind == "query":
            continue  # a query with no match has no events
        raw = overrides[node.name] if node.name in overrides else _declared(node.node)
        streams.append((node.index, source_events(raw, node.name, clock=clock)))
    if len(streams) == 1:
        return _single(*streams[0])
    return _merge(streams)


def all_bounded(
    plan: ExecutionPlan,
    *,
    sources: Mapping[str, Any] | None = None,
    events: Iterable[tuple[str, Any, Any]] | None = None,
) -> bool:
    """Whether every source's data is already at hand (lists, tuples, CSV files, processors
    with ``bounded = True``), so a run may batch work without delaying live outputs."""
    if events is not None:
        return isinstance(events, list | tuple)
    overrides = sources or {}
    for node in plan.nodes:
        if node.upstreams or node.kind == "query":
            continue
        raw = overrides[node.name] if node.name in overrides else _declared(node.node)
        if not (isinstance(raw, list | tuple) or getattr(raw, "bounded", False)):
            return False
    return True


def _declared(node: Any) -> Any:
    return node.source if hasattr(node, "source") else node.fn


def _single(index: int, stream: Iterator[Event]) -> Iterator[tuple[int, float | None, Any]]:
    for ts, value in stream:
        if value.__class__ is Watermark:
            yield index, None, ts
        else:
            yield index, ts, value
    yield index, None, None


def _merge(streams: Sequence[tuple[int, Iterator[Event]]]) -> Iterator[tuple[int, Any, Any]]:
    heap: list[tuple[float, int, Any, Iterator[Event]]] = []
    for index, stream in streams:
        first = next(stream, None)
        if first is None:
            yield index, None, None
        else:
            heap.append((first[0], index, first[1], stream))
    heapq.heapify(heap)
    while heap:
        ts, index, value, stream = heap[0]
        if value.__class__ is Watermark:
            yield index, None, ts
        else:
            yield index, ts, value
        following = next(stream, None)
        if following is None:
            heapq.heappop(heap)
            yield index, None, None
        else:
            heapq.heapreplace(heap, (following[0], index, following[1], stream))


def _explicit(
    plan: ExecutionPlan, index: Mapping[str, int], events: Iterable[tuple[str, Any, Any]]
) -> Iterator[tuple[int, float | None, Any]]:
    for name, ts, value in events:
        if name not in index:
            raise SourceError(
                f"events= names '{name}', which is not a source of pipeline '{plan.pipeline}'; "
                f"its sources are {sorted(index)}"
            )
        yield index[name], to_timestamp(ts, f"source '{name}'"), value


class FileSourceProcessor:
    """Events from a CSV file with a header row (a bounded source).

    ``timestamp_column`` holds epoch seconds or an ISO-8601 time (naive = UTC). The value is
    ``value_column`` when given, else a dict of every other column; cells are converted with
    ``convert`` (default: int, then float, else the text). Rows are read lazily, in file order.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        timestamp_column: str = "timestamp",
        value_column: str | None = None,
        convert: Callable[[str], Any] | None = None,
        delimiter: str = ",",
        encoding: str = "utf-8",
    ) -> None:
        self.bounded = True
        self.path = Path(path)
        self.timestamp_column = timestamp_column
        self.value_column = value_column
        self.convert = convert or _cell
        self.delimiter = delimiter
        self.encoding = encoding

    def events(self) -> Iterator[Event]:
        try:
            handle = self.path.open(newline="", encoding=self.encoding)
        except OSError as error:
            raise SourceError(f"cannot open CSV source {self.path}: {error}") from error
        with handle:
            try:
                yield from self._rows(handle)
            except UnicodeDecodeError as error:
                raise SourceError(
                    f"CSV source {self.path} is not valid {self.encoding} ({error}); pass "
                    "encoding= with the file's encoding (e.g. encoding='latin-1')"
                ) from error

    def _rows(self, handle: Any) -> Iterator[Event]:
        reader = csv.DictReader(handle, delimiter=self.delimiter)
        columns = reader.fieldnames or []
        for needed in (self.timestamp_column, self.value_column):
            if needed is not None and needed not in columns:
                raise SourceError(
                    f"CSV source {self.path} has no column '{needed}'; columns: {columns}"
                )
        for row in reader:
            where = f"CSV source {self.path} line {reader.line_num}"
            if None in row:
                raise SourceError(
                    f"{where} has more cells than the header's {len(columns)} columns; "
                    "fix the row or quote cells that contain the delimiter"
                )
            ts = _csv_time(row.get(self.timestamp_column), where)
            if self.value_column is not None:
                value = self._convert(row[self.value_column], self.value_column, where)
            else:
                value = {
                    k: self._convert(v, k, where)
                    for k, v in row.items()
                    if k != self.timestamp_column
                }
            yield ts, value

    def _convert(self, text: str | None, column: str, where: str) -> Any:
        if text is None:
            raise SourceError(
                f"{where} has no cell for column '{column}' (the row is shorter than the header)"
            )
        try:
            return self.convert(text)
        except Exception as error:  # the user's convert= failed on this cell
            raise SourceError(
                f"{where}: convert= failed on cell {text!r} of column '{column}': "
                f"{type(error).__name__}: {error}"
            ) from error

    def latest(self) -> Any:
        """The last row's value (the one-shot form)."""
        last: Any = None
        for last in self.events():  # noqa: B007
            pass
        if last is None:
            raise SourceError(f"CSV source {self.path} has no rows")
        return last[1]

    def __repr__(self) -> str:
        return (
            f"FileSourceProcessor({str(self.path)!r}, timestamp_column="
            f"{self.timestamp_column!r}, value_column={self.value_column!r})"
        )


def _csv_time(text: str | None, where: str) -> float:
    if text is None or not text.strip():
        raise SourceError(f"{where}: the timestamp cell is empty")
    text = text.strip()
    try:
        return to_timestamp(float(text), where)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SourceError(
            f"{where}: cannot read timestamp {text!r}; use epoch seconds or ISO 8601"
        ) from None
    return to_timestamp(moment, where)


def _cell(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


__all__ = [
    "Event",
    "FileSourceProcessor",
    "SourceProcessor",
    "Watermark",
    "all_bounded",
    "merged_events",
    "source_events",
    "to_timestamp",
]
