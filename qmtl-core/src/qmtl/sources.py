"""Where source nodes get their events, and how an in-process engine orders them.

A source yields events ``(ts, value)`` (SPEC §5.2a). ``ts`` is event time, given as

- a real number of epoch seconds: Python or numpy ints and floats alike (what pandas hands
  out), from year 1 up to year 3000. A number past the year 3000 is almost surely epoch
  milliseconds, microseconds or nanoseconds: it is a :class:`~qmtl.errors.SourceError` that
  names the source and the unit it looks like, never a date in the year 57,961;
- a :class:`datetime.datetime` (a ``pandas.Timestamp`` is one), naive meaning UTC; a
  :class:`datetime.date` is its midnight UTC; a ``numpy.datetime64`` is read as UTC;
- an ISO 8601 string (``"2024-03-08T21:00:00Z"``, naive meaning UTC).

An event is a 2-tuple or a 2-item list ``[ts, value]``. What a ``SourceNode``'s ``source`` may
be, in streaming:

- a :class:`SourceProcessor` (anything with ``events()``), e.g. :class:`FileSourceProcessor`;
- an iterable or generator of events. Every item must be an event: an item that is not (a bare
  value, a 3-tuple, a time that cannot be read) is an error naming the source and the item,
  never stamped with the wall clock. A value that is itself a pair is given as
  ``(ts, (a, b))``;
- a callable, or a seed-style object with ``fetch()``: called once per run; if it returns an
  iterable (not a string or mapping), that is the event stream (so
  ``source=lambda: my_generator()`` restarts on every run), otherwise the result is one live
  value, stamped with the time it was read. Only such live results are stamped.

A generator object can be consumed once only; pass a list, a processor or a callable to run a
pipeline more than once.

A live feed closes buckets by wall clock by yielding :class:`Watermark` ``(ts)`` when it has
nothing new (e.g. ``Watermark(time.time())`` on an idle tick): the source's watermark moves to
``ts`` as if an event had been seen, so its open buckets before ``ts - allowed_lateness`` become
final and later events for them are counted late.

Every engine reads sources through :func:`source_events` / :func:`merged_events` (the Kafka
engine publishes what they yield), so event times are read the same way everywhere.
"""

from __future__ import annotations

import csv
import heapq
import math
import numbers
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol, cast

from qmtl.errors import MissingInputError, QmtlError, SourceError, SourceExecutionError

Event = tuple[float, Any]


class _PlanNode(Protocol):
    """What :func:`merged_events` reads of a plan node (:class:`qmtl.plan.PlanNode`)."""

    @property
    def index(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def upstreams(self) -> tuple[str, ...]: ...
    @property
    def node(self) -> Any: ...


class _Plan(Protocol):
    """What this module reads of a plan (:class:`qmtl.plan.ExecutionPlan`)."""

    @property
    def pipeline(self) -> str: ...
    @property
    def nodes(self) -> tuple[_PlanNode, ...]: ...


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


#: Event times must lie in [year 1, year 3000) as epoch seconds (SPEC §5.2a).
EARLIEST = -62_135_596_800  # 0001-01-01T00:00:00Z
LATEST = 32_503_680_000  # 3000-01-01T00:00:00Z
_UNITS = (("milliseconds", 1e3), ("microseconds", 1e6), ("nanoseconds", 1e9))


def to_timestamp(ts: Any, where: str) -> float:
    """Epoch seconds of an event time (see the module docstring); :class:`SourceError`, naming
    ``where``, for anything else."""
    kind = type(ts)
    if kind is float or kind is int:
        if EARLIEST <= ts < LATEST:
            return ts  # type: ignore[no-any-return]
        raise SourceError(f"{where}: {_out_of_range(ts)}")
    if isinstance(ts, datetime):
        aware = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts
        try:
            return aware.timestamp()
        except ValueError:  # pandas.NaT is a datetime without a time
            raise SourceError(f"{where}: event time {_show(ts)} is not a time") from None
    if isinstance(ts, date):
        return datetime(ts.year, ts.month, ts.day, tzinfo=UTC).timestamp()
    if isinstance(ts, str):
        return _iso(ts, where)
    if isinstance(ts, numbers.Real) and kind is not bool:
        # numpy's ints and floats, Fraction, ...
        number = int(ts) if isinstance(ts, numbers.Integral) else float(ts)
        return to_timestamp(number, where)
    if kind.__name__ == "datetime64":
        return _datetime64(ts, where)
    raise SourceError(
        f"{where}: event time {_show(ts)} is not epoch seconds, a datetime or an ISO 8601 string"
    )


def _out_of_range(ts: float) -> str:
    if not math.isfinite(ts):
        return f"event time {ts!r} is not a finite number"
    side = "after the year 3000" if ts > 0 else "before the year 1"
    for unit, factor in _UNITS:
        if EARLIEST <= ts / factor < LATEST:
            return (
                f"event time {ts!r} is {side} as epoch seconds; it looks like epoch {unit}: "
                f"divide by {factor:.0f} (or pass datetimes)"
            )
    return f"event time {ts!r} is {side} as epoch seconds; give epoch seconds"


def _iso(text: str, where: str) -> float:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise SourceError(
            f"{where}: event time {_show(text)} is not an ISO 8601 time such as "
            "'2024-03-08T21:00:00Z'; give ISO 8601, epoch seconds or a datetime"
        ) from None
    return to_timestamp(moment, where)


def _datetime64(ts: Any, where: str) -> float:
    numpy = sys.modules["numpy"]  # imported: one of its values is here
    if numpy.isnat(ts):
        raise SourceError(f"{where}: event time NaT is not a time")
    return to_timestamp(float(ts.astype("datetime64[ns]").astype(numpy.int64)) / 1e9, where)


def _show(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_event(item: Any, where: str) -> Event:
    """``item`` as ``(epoch seconds, value)``: a 2-tuple or 2-item list whose first item is an
    event time; :class:`SourceError` naming ``where`` and the item otherwise."""
    if not isinstance(item, tuple | list) or len(item) != 2:
        raise SourceError(
            f"{where}: item {_show(item)} is not a (ts, value) pair. A list or generator "
            "source yields (ts, value) pairs, ts in epoch seconds, a datetime or an ISO 8601 "
            "string (wrap a value that is itself a pair as (ts, (a, b))); only the single "
            "result of a callable or fetch() is stamped with the time it is read"
        )
    try:
        return to_timestamp(item[0], where), item[1]
    except SourceError as error:
        raise SourceError(f"{error} (item {_show(item)})") from None


def _normalise(items: Iterable[Any], name: str) -> Iterator[Event]:
    where = f"source '{name}'"
    try:
        for item in items:
            # The common case (a (float|int, value) tuple in range) is checked inline: this
            # runs per event. NaN and infinities fail the range test; as_event reports them.
            if type(item) is tuple and len(item) == 2:
                ts = item[0]
                kind = type(ts)
                if (kind is float or kind is int) and EARLIEST <= ts < LATEST:
                    yield item
                    continue
            elif type(item) is Watermark:
                yield item.ts, item
                continue
            yield as_event(item, where)
    except QmtlError:
        raise
    except Exception as error:  # the source's own code failed while producing an event
        raise SourceExecutionError(name, error) from error


def source_events(
    source: Any, name: str, *, clock: Callable[[], float] = time.time
) -> Iterator[Event]:
    """The events of a source, normalised to ``(ts, value)`` (see the module docstring);
    ``clock`` stamps a callable's (or ``fetch()``'s) single live value."""
    if source is None:
        return iter(())
    if hasattr(source, "events") and callable(source.events):
        return _normalise(_call(source.events, name), name)
    fetch = getattr(source, "fetch", None)
    if callable(source) or callable(fetch):
        produced = _call(source if fetch is None or callable(source) else fetch, name)
        if _is_stream(produced):
            return _normalise(produced, name)
        return iter(((clock(), produced),))
    if _is_stream(source):
        return _normalise(source, name)
    raise SourceError(
        f"source '{name}' is {type(source).__name__}; give an iterable of (ts, value) pairs, "
        "a callable, an object with fetch() or a SourceProcessor"
    )


def latest_of(name: str, source: Any) -> Callable[[], Any]:
    """The one-shot form of a source (what ``execute`` calls once): the callable itself, a
    processor's ``latest()``, a seed-style ``fetch()``, or the value of the last event of an
    iterable or ``events()`` (read by the rules of :func:`source_events`)."""
    if callable(source) and not hasattr(source, "events"):
        return cast("Callable[[], Any]", source)
    for method in ("latest", "fetch"):
        found = getattr(source, method, None)
        if callable(found):
            return cast("Callable[[], Any]", found)

    def last_item() -> Any:
        items = source.events() if hasattr(source, "events") else source
        last: Any = _NOTHING
        for item in items:  # the last event is the latest value
            if type(item) is not Watermark:
                last = item
        if last is _NOTHING:
            raise MissingInputError(f"Source '{name}' produced no value")
        return as_event(last, f"source '{name}'")[1]

    return last_item


_NOTHING: Any = object()


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
    plan: _Plan,
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


def source_inputs(
    plan: _Plan, *, sources: Mapping[str, Any] | None = None
) -> list[tuple[int, str, Any]]:
    """``(plan index, name, input)`` of each source node (query nodes with no match left out):
    its declared input, or the one ``sources`` gives it by name (as :func:`merged_events`)."""
    roots = [node for node in plan.nodes if not node.upstreams and node.kind != "query"]
    overrides = dict(sources or {})
    unknown = sorted(set(overrides) - {node.name for node in roots})
    if unknown:
        raise SourceError(
            f"sources= names {unknown}, which are not sources of pipeline '{plan.pipeline}'; "
            f"its sources are {sorted(node.name for node in roots)}"
        )
    return [
        (
            node.index,
            node.name,
            overrides[node.name] if node.name in overrides else _declared(node.node),
        )
        for node in roots
    ]


def all_bounded(
    plan: _Plan,
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
    plan: _Plan, index: Mapping[str, int], events: Iterable[tuple[str, Any, Any]]
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
        number = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(number):
            return to_timestamp(number, where)
    try:
        moment = datetime.fromisoformat(text)
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
    "EARLIEST",
    "LATEST",
    "Event",
    "FileSourceProcessor",
    "SourceProcessor",
    "Watermark",
    "all_bounded",
    "as_event",
    "latest_of",
    "merged_events",
    "source_events",
    "source_inputs",
    "to_timestamp",
]
