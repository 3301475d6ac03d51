"""Sources from tables: pandas, polars and pyarrow frames, Parquet and CSV files (SPEC §8a).

``SourceNode(name, source=table, ts=None, value=None, ts_unit=None)`` wraps ``table`` in a
:class:`TableSource`, an ordinary bounded :class:`~qmtl.sources.SourceProcessor`: every engine
consumes it like any other source (the Kafka engine publishes its events into the source's input
topic). What a table may be:

- a pandas ``DataFrame`` or ``Series``: time is the index by default (a ``DatetimeIndex``, naive
  meaning UTC, or a numeric epoch index), or the column named by ``ts``;
- a polars ``DataFrame``, a pyarrow ``Table`` or ``RecordBatch``: time is the column ``ts``, by
  default the table's only datetime or date column;
- a path (``str`` or ``Path``) to a ``.parquet`` / ``.pq`` file, or a ``.csv`` file (also
  ``.csv.gz``, ``.csv.bz2``), read with pyarrow.

Time converts to epoch seconds, vectorised, one batch at a time: datetime columns by their own
unit and time zone (a naive time is UTC), dates at midnight UTC, ISO 8601 strings parsed, and
number columns as epoch **seconds** unless ``ts_unit`` (``"s"``, ``"ms"``, ``"us"``, ``"ns"``)
says otherwise. A number that is after the year 3000 as seconds is an error suggesting the unit
it looks like, never silently a date in the far future. A missing time is an error naming the
row.

The value of an event is the column ``value``, or else the row as a ``dict`` of every other
column. Values are plain Python objects (``float``, ``int``, ``str``, ``bool``, ``datetime``,
...), so every table kind, the list source and every engine give equal results; a missing value
is ``float("nan")`` in a float column and ``None`` elsewhere.

Data is read in batches of ``batch_rows`` rows (Parquet files by row group, CSV files by block),
never as a Python list of the whole table, so a file far larger than memory streams in bounded
memory. The libraries are optional extras of qmtl-core (:mod:`qmtl.extras`), imported only here
and only when a table is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qmtl.errors import SourceError
from qmtl.tables._arrow import ArrowReader, CsvReader, ParquetReader
from qmtl.tables._common import UNITS
from qmtl.tables._pandas import PandasReader
from qmtl.tables._polars import PolarsReader

#: Rows per batch when reading a table (a Parquet file reads at most one row group ahead).
DEFAULT_BATCH_ROWS = 65_536
_FILE_SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".csv.gz": "csv",
    ".csv.bz2": "csv",
}
_TABLE_LIBRARIES = ("pandas", "polars", "pyarrow")


def is_table(source: Any) -> bool:
    """Whether ``source`` is something :class:`TableSource` reads: a path, or a pandas, polars
    or pyarrow object (recognised without importing any of those libraries)."""
    if isinstance(source, str | Path):
        return True
    return type(source).__module__.partition(".")[0] in _TABLE_LIBRARIES


def file_kind(path: str | Path) -> str | None:
    """``"parquet"``, ``"csv"`` or ``None`` from the file name's suffix."""
    name = Path(path).name.lower()
    for suffix, kind in _FILE_SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    return None


class TableSource:
    """A bounded source reading a table or a table file (see the module docstring).

    ``name`` is the source node's name, used in error messages. Frames are checked when the
    source is made (columns exist, the time column is usable); files are opened only when a
    run reads them, so a module defining a pipeline imports on machines that lack the file
    (Kafka workers, say).
    """

    bounded = True

    def __init__(
        self,
        data: Any,
        *,
        ts: str | None = None,
        value: str | None = None,
        ts_unit: str | None = None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        name: str = "table",
    ) -> None:
        if ts_unit is not None and ts_unit not in UNITS:
            raise SourceError(
                f"source '{name}': ts_unit={ts_unit!r} is not a unit; use one of {list(UNITS)}"
            )
        for option, column in (("ts", ts), ("value", value)):
            if column is not None and not isinstance(column, str):
                raise SourceError(
                    f"source '{name}': {option}= names a column, got {type(column).__name__} "
                    f"{column!r}"
                )
        if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
            raise SourceError(
                f"source '{name}': batch_rows must be an int >= 1, got {batch_rows!r}"
            )
        self.name = name
        self.ts = ts
        self.value = value
        self.ts_unit = ts_unit
        self.batch_rows = batch_rows
        self._what = _describe(data)
        self._reader = _reader(data, self)

    def events(self) -> Iterator[tuple[float, Any]]:
        """``(epoch seconds, value)`` pairs in the table's row order, read batch by batch."""
        for stamps, values in self._reader.batches(self.batch_rows):
            yield from zip(stamps, values, strict=True)

    def event_chunks(self, size: int) -> Iterator[tuple[list[float], list[Any]]]:
        """The same events as ``(times, values)`` batches of ``size`` rows: how the local
        engine's columnar path reads a table whole (:mod:`qmtl.columns`)."""
        return iter(self._reader.batches(size))

    def latest(self) -> Any:
        """The value of the last row (the one-shot form of the source)."""
        return self._reader.latest()

    def identity(self) -> str:
        """What identifies this source's data in its node id: the file's path and the options
        for a file; the frame's content (a digest of every column) and the options for a
        frame. Computed once."""
        return str(self._reader.identity())

    def __qmtl_key__(self) -> tuple[str, str | None, str | None, str | None]:
        """The node id's view of this source (:mod:`qmtl.identity`): its data's identity and
        the options, not its name, its batch size or its reader's state."""
        return (self.identity(), self.ts, self.value, self.ts_unit)

    @property
    def where(self) -> str:
        """How error messages name this source."""
        return f"source '{self.name}' ({self._what})"

    def __repr__(self) -> str:
        return (
            f"TableSource({self.identity()}, ts={self.ts!r}, value={self.value!r}, "
            f"ts_unit={self.ts_unit!r})"
        )


def _describe(data: Any) -> str:
    if isinstance(data, str | Path):
        kind = {"parquet": "Parquet", "csv": "CSV"}.get(file_kind(data) or "", "")
        return f"{kind} file {str(data)!r}".lstrip()
    rows = getattr(data, "num_rows", None)
    if rows is None:
        rows = getattr(data, "height", None)
    if rows is None:
        rows = len(data) if hasattr(data, "__len__") else "?"
    library = type(data).__module__.partition(".")[0]
    return f"a {library} {type(data).__name__} of {rows} rows"


def _reader(data: Any, source: TableSource) -> Any:
    if isinstance(data, str | Path):
        kind = file_kind(data)
        if kind is None:
            raise SourceError(
                f"source '{source.name}': {str(data)!r} is not a table file; give a path to a "
                ".parquet or .csv file (or a DataFrame, a pyarrow Table, a list of (ts, value) "
                "pairs, a callable or a SourceProcessor)"
            )
        return (
            ParquetReader(Path(data), source)
            if kind == "parquet"
            else (CsvReader(Path(data), source))
        )
    library = type(data).__module__.partition(".")[0]
    if library == "pandas":
        return PandasReader(data, source)
    if library == "polars":
        return PolarsReader(data, source)
    if library == "pyarrow":
        return ArrowReader(data, source)
    raise SourceError(
        f"source '{source.name}' is {type(data).__name__}, not a table; give a pandas or polars "
        "DataFrame, a pyarrow Table, or a path to a .parquet or .csv file"
    )


__all__ = ["DEFAULT_BATCH_ROWS", "UNITS", "TableSource", "file_kind", "is_table"]
