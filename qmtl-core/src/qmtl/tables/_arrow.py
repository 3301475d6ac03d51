"""pyarrow sources: a ``Table`` or ``RecordBatch`` in memory, a Parquet file read row group by
row group, a CSV file read block by block."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qmtl.errors import SourceError
from qmtl.extras import require
from qmtl.tables._common import (
    Batch,
    Options,
    check_names,
    digest,
    missing_time,
    pick_column,
    rows_of,
    seconds_from_numbers,
    seconds_from_ticks,
    time_column,
)


class _ArrowBatches:
    """Shared by the pyarrow readers: a schema's time column and per-batch conversion."""

    def __init__(self, schema: Any, source: Options) -> None:
        pa = require("pyarrow", source.where)
        self.pa, self.source = pa, source
        names = list(schema.names)
        temporal = [
            f.name for f in schema if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type)
        ]
        self.time_column = time_column(names, temporal, source)
        pick_column(names, source.value, "value", source)
        self.names = check_names([n for n in names if n != self.time_column], source)
        self.columns = [self.time_column, source.value] if source.value is not None else None

    def convert(self, batch: Any, first_row: int) -> Batch:
        seconds = self.seconds(batch.column(self.time_column), first_row)
        if self.source.value is not None:
            return seconds.tolist(), self.values(batch.column(self.source.value))
        columns = [self.values(batch.column(name)) for name in self.names]
        return seconds.tolist(), rows_of(self.names, columns)

    def seconds(self, times: Any, first_row: int) -> Any:
        pa, source, column = self.pa, self.source, self.time_column
        if times.null_count:
            nulls = times.is_null().to_numpy(zero_copy_only=False)
            raise missing_time(source, column, first_row + int(nulls.nonzero()[0][0]))
        kind = times.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            times, kind = self._parse(times), pa.timestamp("us")
        if pa.types.is_timestamp(kind):
            return seconds_from_ticks(times.cast(pa.int64()).to_numpy(), kind.unit)
        if pa.types.is_date32(kind):
            days = times.cast(pa.int32()).to_numpy().astype("int64")
            return seconds_from_ticks(days * 86_400, "s")
        if pa.types.is_date64(kind):
            return seconds_from_ticks(times.cast(pa.int64()).to_numpy(), "ms")
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            return seconds_from_numbers(times.to_numpy(), source, column, first_row)
        raise SourceError(
            f"{source.where}: time column '{column}' is {kind}; give timestamps, dates, ISO 8601 "
            "strings or epoch numbers"
        )

    def _parse(self, times: Any) -> Any:
        pa = self.pa
        try:  # with an offset or Z: converted to UTC
            return times.cast(pa.timestamp("us", tz="UTC"))
        except pa.ArrowInvalid:
            pass
        try:  # without: read as UTC
            return times.cast(pa.timestamp("us"))
        except pa.ArrowInvalid as error:
            raise SourceError(
                f"{self.source.where}: cannot read time column '{self.time_column}' as ISO 8601 "
                f"times ({error}); give one format per column, with or without a UTC offset"
            ) from error

    def values(self, column: Any) -> list[Any]:
        pa = self.pa
        kind = column.type
        if pa.types.is_floating(kind):
            return column.to_numpy(zero_copy_only=False).tolist()  # type: ignore[no-any-return]  # null -> NaN
        if not column.null_count and (pa.types.is_integer(kind) or pa.types.is_boolean(kind)):
            return column.to_numpy(zero_copy_only=False).tolist()  # type: ignore[no-any-return]
        return column.to_pylist()  # type: ignore[no-any-return]


class ArrowReader:
    """A pyarrow ``Table`` or ``RecordBatch``."""

    def __init__(self, data: Any, source: Options) -> None:
        pa = require("pyarrow", source.where)
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        if not isinstance(data, pa.Table):
            raise SourceError(
                f"source '{source.name}' is a pyarrow {type(data).__name__}; give a Table or a "
                "RecordBatch"
            )
        self.table, self.source = data, source
        self.arrow = _ArrowBatches(data.schema, source)
        if data.num_rows:
            self.arrow.convert(data.slice(0, 1).to_batches()[0], 0)
        self._identity: str | None = None

    def batches(self, rows: int) -> Iterator[Batch]:
        start = 0
        for batch in self.table.to_batches(max_chunksize=rows):
            yield self.arrow.convert(batch, start)
            start += batch.num_rows

    def latest(self) -> Any:
        if not self.table.num_rows:
            raise SourceError(f"{self.source.where} has no rows")
        last = self.table.slice(self.table.num_rows - 1, 1).to_batches()[0]
        return self.arrow.convert(last, self.table.num_rows - 1)[1][0]

    def identity(self) -> str:
        if self._identity is None:
            parts = []
            for name in self.table.column_names:
                column = self.table.column(name).combine_chunks()
                kind = column.type
                numeric = self.arrow.pa.types.is_primitive(kind) and not column.null_count
                parts.append(
                    (name, column.to_numpy(zero_copy_only=False) if numeric else column.to_pylist())
                )
            self._identity = f"pyarrow.Table:{self.table.num_rows}:{digest(parts)}"
        return self._identity


class ParquetReader:
    """A Parquet file, read row group by row group (``batch_rows`` rows at a time)."""

    def __init__(self, path: Path, source: Options) -> None:
        require("pyarrow.parquet", source.where)
        self.path, self.source = path, source

    def _open(self) -> tuple[Any, _ArrowBatches]:
        pq = require("pyarrow.parquet", self.source.where)
        pa = require("pyarrow", self.source.where)
        try:
            handle = pq.ParquetFile(self.path, pre_buffer=False)  # no cache across row groups
        except (OSError, pa.ArrowException) as error:
            raise SourceError(f"cannot open {self.source.where}: {error}") from error
        return handle, _ArrowBatches(handle.schema_arrow, self.source)

    def batches(self, rows: int) -> Iterator[Batch]:
        handle, arrow = self._open()
        start = 0
        with handle:
            for batch in handle.iter_batches(batch_size=rows, columns=arrow.columns):
                yield arrow.convert(batch, start)
                start += batch.num_rows

    def latest(self) -> Any:
        handle, arrow = self._open()
        with handle:
            groups = handle.num_row_groups
            table = handle.read_row_group(groups - 1, columns=arrow.columns) if groups else None
        if table is None or not table.num_rows:
            raise SourceError(f"{self.source.where} has no rows")
        last = table.slice(table.num_rows - 1, 1).to_batches()[0]
        return arrow.convert(last, handle.metadata.num_rows - 1)[1][0]

    def identity(self) -> str:
        return f"parquet:{self.path.as_posix()}"


class CsvReader:
    """A CSV file with a header row, read block by block with pyarrow (types inferred from the
    first block: a column must keep one type through the file)."""

    def __init__(self, path: Path, source: Options) -> None:
        require("pyarrow.csv", source.where)
        self.path, self.source = path, source

    def batches(self, rows: int) -> Iterator[Batch]:
        csv = require("pyarrow.csv", self.source.where)
        pa = require("pyarrow", self.source.where)
        try:
            reader = csv.open_csv(self.path)
        except (OSError, pa.ArrowException) as error:
            raise SourceError(f"cannot open {self.source.where}: {error}") from error
        arrow = _ArrowBatches(reader.schema, self.source)
        start = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as error:
                raise SourceError(
                    f"{self.source.where}: after row {start}: {error}. Column types are taken "
                    "from the start of the file; write such a column consistently (e.g. 1.0 "
                    "rather than 1), or convert the file to Parquet"
                ) from error
            yield arrow.convert(batch, start)
            start += batch.num_rows

    def latest(self) -> Any:
        last: Batch | None = None
        for batch in self.batches(1):
            if batch[1]:
                last = batch
        if last is None:
            raise SourceError(f"{self.source.where} has no rows")
        return last[1][-1]

    def identity(self) -> str:
        return f"csv:{self.path.as_posix()}"
