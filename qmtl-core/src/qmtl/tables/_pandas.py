"""pandas ``DataFrame`` and ``Series`` sources: time is the index unless ``ts`` names a column."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from qmtl.errors import SourceError
from qmtl.extras import require
from qmtl.tables._common import (
    Batch,
    Options,
    check_finite,
    check_names,
    digest,
    missing_time,
    pick_column,
    rows_of,
    seconds_from_numbers,
    seconds_from_ticks,
)


class PandasReader:
    """A pandas ``DataFrame`` or ``Series``; time is the index unless ``ts`` names a column."""

    def __init__(self, data: Any, source: Options) -> None:
        pd = require("pandas", source.where)
        self.pd, self.source = pd, source
        self.kind = type(data).__name__
        if isinstance(data, pd.Series):
            if source.value is not None:
                raise SourceError(
                    f"source '{source.name}' is a pandas Series, which is the value itself; "
                    "drop value= (or pass a DataFrame and name its column)"
                )
            frame = data.to_frame(name=data.name if isinstance(data.name, str) else "value")
        elif isinstance(data, pd.DataFrame):
            frame = data
        else:
            raise SourceError(
                f"source '{source.name}' is a pandas {type(data).__name__}; give a DataFrame "
                "or a Series"
            )
        self.frame = frame
        columns = list(frame.columns)
        ts = source.ts
        self.time_column: str | None = None  # None: the index
        if ts is not None and ts in columns:
            self.time_column = ts
        elif ts is not None and ts != frame.index.name:
            raise SourceError(
                f"{source.where}: ts={ts!r} is neither a column nor the index's name; columns "
                f"are {columns}"
            )
        pick_column(columns, source.value, "value", source)
        self.series = isinstance(data, pd.Series)
        self.names = check_names([c for c in columns if c != self.time_column], source)
        # Fail now, not at the run, on an unusable time axis (checks the first rows only).
        self._seconds(frame.iloc[:1], 0)
        self._identity: str | None = None

    def batches(self, rows: int) -> Iterator[Batch]:
        frame = self.frame
        for start in range(0, len(frame), rows):
            chunk = frame.iloc[start : start + rows]
            yield self._seconds(chunk, start).tolist(), self._values(chunk)

    def latest(self) -> Any:
        if not len(self.frame):
            raise SourceError(f"{self.source.where} has no rows")
        return self._values(self.frame.iloc[-1:])[0]

    def identity(self) -> str:
        if self._identity is None:
            frame = self.frame
            parts = [("<index>", _pandas_array(self.pd, frame.index))]
            parts += [(str(c), _pandas_array(self.pd, frame[c])) for c in frame.columns]
            self._identity = f"pandas.{self.kind}:{len(frame)}:{digest(parts)}"
        return self._identity

    def _seconds(self, chunk: Any, first_row: int) -> Any:
        pd, source = self.pd, self.source
        if self.time_column is None:
            axis, column = chunk.index, chunk.index.name or "<index>"
            if isinstance(axis, pd.RangeIndex):
                raise SourceError(
                    f"{source.where}: the index is a RangeIndex (row numbers), not times; set a "
                    "DatetimeIndex (df.set_index('time')) or pass ts='column'"
                )
        else:
            axis, column = chunk[self.time_column], self.time_column
        dtype = axis.dtype
        if isinstance(dtype, pd.PeriodDtype):
            raise SourceError(
                f"{source.where}: time '{column}' is a period; convert it with "
                ".to_timestamp() (the start of each period) first"
            )
        if not pd.api.types.is_datetime64_any_dtype(dtype):
            if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
                if axis.hasnans:
                    raise missing_time(source, column, first_row + _first_true(axis.isna()))
                return seconds_from_numbers(axis.to_numpy(), source, column, first_row)
            try:
                axis = pd.to_datetime(axis, utc=True, format="ISO8601")
            except (ValueError, TypeError) as error:
                raise SourceError(
                    f"{source.where}: cannot read time column '{column}' as ISO 8601 times: "
                    f"{error}; give datetimes, ISO 8601 strings or epoch numbers"
                ) from error
        times = pd.DatetimeIndex(axis)
        if times.hasnans:
            raise missing_time(source, column, first_row + _first_true(times.isna()))
        seconds = seconds_from_ticks(times.asi8, times.unit)
        check_finite(seconds, source, column, first_row)
        return seconds

    def _values(self, chunk: Any) -> list[Any]:
        if self.series:
            return _pandas_list(self.pd, chunk.iloc[:, 0])
        if self.source.value is not None:
            return _pandas_list(self.pd, chunk[self.source.value])
        names = self.names
        return rows_of(names, [_pandas_list(self.pd, chunk[name]) for name in names])


def _first_true(mask: Any) -> int:
    np = require("numpy", "Reading a pandas source")
    return int(np.asarray(mask).nonzero()[0][0])


def _pandas_array(pd: Any, values: Any) -> Any:
    """A numpy array for hashing: the UTC ticks of datetimes, else the values."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        times = pd.DatetimeIndex(values)
        return times.as_unit("ns").asi8
    return values.to_numpy()


def _pandas_list(pd: Any, column: Any) -> list[Any]:
    """Plain Python values of a column: datetimes as ``datetime``, numpy scalars as Python
    numbers, a missing value as NaN in a float column and ``None`` elsewhere."""
    dtype = column.dtype
    kind = getattr(dtype, "kind", "O")
    if kind in "fiub" and not isinstance(dtype, pd.api.extensions.ExtensionDtype):
        return column.to_numpy().tolist()  # type: ignore[no-any-return]
    if pd.api.types.is_datetime64_any_dtype(dtype):
        values = list(pd.DatetimeIndex(column).to_pydatetime())
    else:
        values = column.tolist()
    missing = column.isna().to_numpy()
    if missing.any():
        empty = math.nan if pd.api.types.is_float_dtype(dtype) else None
        for i in missing.nonzero()[0]:
            values[i] = empty
    return values
