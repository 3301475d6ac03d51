"""History as a DataFrame: what :meth:`qmtl.pipeline.Pipeline.history_frame` builds.

One row per bucket end (a UTC timestamp, the index ``ts`` in pandas, the first column ``ts`` in
polars), one column per node, a bucket a node has no value for is missing (NaN in pandas, null
in polars). A node whose values are dicts (a query node's ``{match: value}``, a source reading
table rows) is expanded into one column per key, named ``node.key``, unless ``expand=False``
keeps the dicts in one column. pandas and polars are optional extras (:mod:`qmtl.extras`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qmtl.errors import ConfigurationError
from qmtl.extras import require

#: ``[{"timestamp", "value"}]`` per node, as the state backend returns it (newest first).
Histories = Mapping[str, Sequence[Mapping[str, Any]]]
LIBRARIES = ("pandas", "polars")


def columns_of(histories: Histories, *, expand: bool = True) -> dict[str, dict[float, Any]]:
    """Column name → {bucket end: value}, dict-valued nodes expanded to ``node.key``."""
    columns: dict[str, dict[float, Any]] = {}
    for node, items in histories.items():
        values = {item["timestamp"]: item["value"] for item in reversed(items)}
        dicts = [v for v in values.values() if v is not None]
        if expand and dicts and all(isinstance(v, dict) for v in dicts):
            keys = dict.fromkeys(key for value in dicts for key in value)
            for key in keys:
                columns[f"{node}.{key}"] = {
                    ts: value[key]
                    for ts, value in values.items()
                    if value is not None and key in value
                }
        else:
            columns[node] = values
    return columns


def to_frame(histories: Histories, *, library: str = "pandas", expand: bool = True) -> Any:
    """A pandas or polars DataFrame of ``histories`` (see the module docstring)."""
    if library not in LIBRARIES:
        raise ConfigurationError(
            f"history_frame: library={library!r} is not one of {list(LIBRARIES)}"
        )
    columns = columns_of(histories, expand=expand)
    stamps = sorted({ts for column in columns.values() for ts in column})
    if library == "polars":
        return _polars(columns, stamps)
    return _pandas(columns, stamps)


def _pandas(columns: dict[str, dict[float, Any]], stamps: list[float]) -> Any:
    pd = require("pandas", "history_frame")

    def times(seconds: list[float]) -> Any:
        return pd.DatetimeIndex(pd.to_datetime(seconds, unit="s", utc=True), name="ts")

    data = {
        name: pd.Series(list(column.values()), index=times(list(column)), dtype=None)
        if column
        else pd.Series([], index=times([]), dtype=object)
        for name, column in columns.items()
    }
    return pd.DataFrame(data, index=times(stamps), columns=list(columns))


def _polars(columns: dict[str, dict[float, Any]], stamps: list[float]) -> Any:
    pl = require("polars", 'history_frame(library="polars")')
    micros = [round(ts * 1_000_000) for ts in stamps]
    data = {"ts": pl.Series("ts", micros, dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))}
    for name, column in columns.items():
        data[name] = pl.Series(name, [column.get(ts) for ts in stamps], strict=False)
    return pl.DataFrame(data)


__all__ = ["LIBRARIES", "columns_of", "to_frame"]
