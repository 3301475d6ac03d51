"""polars ``DataFrame`` sources: time is the column ``ts``, by default the only datetime one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from qmtl.errors import SourceError
from qmtl.extras import require
from qmtl.tables._common import (
    Batch,
    Options,
    check_finite,
    digest,
    missing_time,
    pick_column,
    seconds_from_numbers,
    seconds_from_ticks,
    time_column,
)


class PolarsReader:
    """A polars ``DataFrame``; time is the column ``ts``, by default its only datetime column."""

    def __init__(self, data: Any, source: Options) -> None:
        pl = require("polars", source.where)
        if not isinstance(data, pl.DataFrame):
            hint = " (call .collect() first)" if isinstance(data, pl.LazyFrame) else ""
            raise SourceError(
                f"source '{source.name}' is a polars {type(data).__name__}; give a DataFrame" + hint
            )
        self.pl, self.source, self.frame = pl, source, data
        schema = data.schema
        temporal = [n for n, t in schema.items() if isinstance(t, pl.Datetime | pl.Date)]
        self.time_column = time_column(list(schema), temporal, source)
        pick_column(list(schema), source.value, "value", source)
        self.names = [n for n in schema if n != self.time_column]
        self._seconds(data.head(1), 0)
        self._identity: str | None = None

    def batches(self, rows: int) -> Iterator[Batch]:
        start = 0
        for chunk in self.frame.iter_slices(rows):
            yield self._seconds(chunk, start).tolist(), self._values(chunk)
            start += chunk.height

    def latest(self) -> Any:
        if not self.frame.height:
            raise SourceError(f"{self.source.where} has no rows")
        return self._values(self.frame.tail(1))[0]

    def identity(self) -> str:
        if self._identity is None:
            content = digest(_polars_columns(self.frame))
            self._identity = f"polars.DataFrame:{self.frame.height}:{content}"
        return self._identity

    def _seconds(self, chunk: Any, first_row: int) -> Any:
        pl, source, column = self.pl, self.source, self.time_column
        times = chunk[column]
        if times.null_count():
            raise missing_time(source, column, first_row + int(times.is_null().arg_max()))
        dtype = times.dtype
        if isinstance(dtype, pl.String):
            try:
                times = times.str.to_datetime(time_unit="us", time_zone="UTC")
            except pl.exceptions.PolarsError as error:
                raise SourceError(
                    f"{source.where}: cannot read time column '{column}' as ISO 8601 times: {error}"
                ) from error
            dtype = times.dtype
        if isinstance(dtype, pl.Datetime):
            seconds = seconds_from_ticks(times.to_physical().to_numpy(), dtype.time_unit)
        elif isinstance(dtype, pl.Date):
            seconds = seconds_from_ticks(
                times.to_physical().to_numpy().astype("int64") * 86_400, "s"
            )
        elif dtype.is_numeric():
            return seconds_from_numbers(times.to_numpy(), source, column, first_row)
        else:
            raise SourceError(
                f"{source.where}: time column '{column}' is {dtype}; give datetimes, dates, "
                "ISO 8601 strings or epoch numbers"
            )
        check_finite(seconds, source, column, first_row)
        return seconds

    def _values(self, chunk: Any) -> list[Any]:
        pl = self.pl
        floats = pl.col(pl.Float32, pl.Float64).fill_null(float("nan"))
        if self.source.value is not None:
            column = chunk.select(pl.col(self.source.value)).with_columns(floats).to_series()
            values: list[Any] = column.to_list()
            return values
        return list(chunk.select(self.names).with_columns(floats).iter_rows(named=True))


def _polars_columns(frame: Any) -> Iterator[tuple[str, Any]]:
    """Columns for hashing: numbers, times and booleans as numpy buffers (and their null
    masks), anything else by value."""
    for name in frame.columns:
        series = frame[name]
        dtype = series.dtype
        if dtype.is_numeric() or dtype.is_temporal() or dtype.__class__.__name__ == "Boolean":
            yield name, series.to_physical().to_numpy()
            if series.null_count():
                yield f"{name}<null>", series.is_null().to_numpy()
        else:
            yield name, series.to_list()
