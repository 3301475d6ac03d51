"""What every table reader shares: the options protocol, time conversion to epoch seconds,
row dicts, column checks and content digests (numpy arrays in, plain Python lists out)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, Protocol

from qmtl.errors import SourceError
from qmtl.extras import require

Batch = tuple[list[float], list[Any]]
#: ``ts_unit`` → ticks per second.
UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
#: 3000-01-01T00:00:00Z in epoch seconds: later "seconds" are taken to be a finer unit.
YEAR_3000 = 32_503_680_000


class Options(Protocol):
    """What a reader needs of :class:`qmtl.tables.TableSource`: its options and its name."""

    name: str
    ts: str | None
    value: str | None
    ts_unit: str | None

    @property
    def where(self) -> str: ...


def seconds_from_ticks(ticks: Any, unit: str) -> Any:
    """Float epoch seconds of an int64 array of ``unit`` ticks: whole seconds exactly, the
    fraction added after (so 1_700_000_000_123 ms is 1700000000.123, not a float rounding of
    the whole tick count)."""
    np = require("numpy", "Reading a table source")
    per = UNITS[unit]
    ticks = np.asarray(ticks, dtype=np.int64)
    if per == 1:
        return ticks.astype(np.float64)
    whole, fraction = np.divmod(ticks, per)
    return whole.astype(np.float64) + fraction / per


def seconds_from_numbers(numbers: Any, source: Options, column: str, first_row: int) -> Any:
    """Float epoch seconds of a number column in ``source.ts_unit`` (default seconds), after
    checking that every value is finite and a plausible time in that unit."""
    np = require("numpy", "Reading a table source")
    numbers = np.asarray(numbers)
    if numbers.dtype.kind in "iu":
        seconds = seconds_from_ticks(numbers, source.ts_unit or "s")
    elif numbers.dtype.kind == "f":
        seconds = numbers.astype(np.float64) / UNITS[source.ts_unit or "s"]
    else:
        raise SourceError(
            f"{source.where}: time column '{column}' holds {numbers.dtype} values; give "
            "datetimes, ISO 8601 strings or epoch numbers"
        )
    check_finite(seconds, source, column, first_row)
    largest = float(np.abs(seconds).max()) if len(seconds) else 0.0
    if largest >= YEAR_3000:
        ticks = largest * UNITS[source.ts_unit or "s"]
        guess = next(
            (u for u in ("ms", "us", "ns") if ticks / UNITS[u] < YEAR_3000 and u != source.ts_unit),
            None,
        )
        hint = f"pass ts_unit={guess!r}" if guess else "check the column"
        raise SourceError(
            f"{source.where}: time column '{column}' holds {ticks:.0f}, which as epoch "
            f"{'seconds' if source.ts_unit in (None, 's') else source.ts_unit} is after the year "
            f"3000; it looks like a finer unit: {hint}"
        )
    return seconds


def check_finite(seconds: Any, source: Options, column: str, first_row: int) -> None:
    """Refuse a NaN, infinite or missing time, naming the row."""
    np = require("numpy", "Reading a table source")
    bad = ~np.isfinite(seconds)
    if bad.any():
        row = first_row + int(np.flatnonzero(bad)[0])
        raise SourceError(
            f"{source.where}: row {row} has no usable time in column '{column}' "
            f"(got {seconds[row - first_row]!r}); drop or fill such rows first"
        )


def missing_time(source: Options, column: str, row: int) -> SourceError:
    return SourceError(
        f"{source.where}: row {row} has no time in column '{column}' (null); drop or fill such "
        "rows first"
    )


def rows_of(names: list[str], columns: list[list[Any]]) -> list[dict[str, Any]]:
    """Row dicts from per-column lists."""
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def check_names(names: list[Any], source: Options) -> list[str]:
    """Column names as the keys of row dicts: they must be strings."""
    odd = [name for name in names if not isinstance(name, str)]
    if odd:
        raise SourceError(
            f"{source.where}: column names {odd[:5]!r} are not strings, and each row reaches "
            "the node as a dict keyed by column name; rename them (df.columns = "
            "df.columns.map(str)) or pass value= to pick one column"
        )
    return names


def pick_column(columns: list[str], wanted: str | None, option: str, source: Options) -> None:
    if wanted is not None and wanted not in columns:
        raise SourceError(
            f"{source.where}: {option}={wanted!r} is not a column; columns are {columns}"
        )


def digest(columns: Iterable[tuple[str, Any]]) -> str:
    """A content digest of ``(name, values)`` columns: numpy buffers hashed as bytes, other
    values by their repr."""
    np = require("numpy", "Identifying a table source")
    digest = hashlib.blake2b(digest_size=16)
    for name, values in columns:
        digest.update(f"{name}\x00".encode())
        array = values if isinstance(values, np.ndarray) else None
        if array is not None and array.dtype.kind in "biufmM":
            if array.dtype.kind in "mM":
                array = array.view(np.int64)
            digest.update(array.dtype.str.encode())
            digest.update(np.ascontiguousarray(array).view(np.uint8))
            continue
        items = values.tolist() if hasattr(values, "tolist") else list(values)
        digest.update("\x1f".join(map(repr, items)).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def time_column(columns: list[str], temporal: list[str], source: Options) -> str:
    """The ``ts`` column, or the one datetime/date column when ``ts`` is not given."""
    if source.ts is not None:
        pick_column(columns, source.ts, "ts", source)
        return source.ts
    if len(temporal) == 1:
        return temporal[0]
    found = f"datetime columns {temporal}" if temporal else "no datetime column"
    raise SourceError(
        f"{source.where} has {found}; pass ts='column' to name the time column (columns: {columns})"
    )
