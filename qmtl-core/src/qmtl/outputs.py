"""Writing final buckets as rows: what ``qmtl run --stream --output jsonl|csv`` prints.

Each row is one final bucket: ``node``, ``interval``, ``ts`` (the bucket end in epoch seconds,
an integer when whole) and ``value``. JSON Lines hold the value as JSON (a non-finite float is
``null``, a datetime an ISO 8601 string, a ``Decimal`` a string, bytes hex, numpy values their
Python equivalents); CSV holds numbers and strings as they are, ``None`` as an empty cell, and
any other value as its JSON text. Rows are written as they come; to a terminal each is flushed.
"""

from __future__ import annotations

import base64
import csv
import json
import math
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, TextIO

FORMATS = ("jsonl", "csv")
COLUMNS = ("node", "interval", "ts", "value")


def plain(value: Any) -> Any:
    """``value`` as JSON data (see the module docstring)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b16encode(value).decode().lower()
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return plain(tolist())
    return str(value)


def _stamp(ts: float) -> int | float:
    return int(ts) if float(ts).is_integer() else ts


class RowWriter:
    """Writes :class:`~qmtl.streaming.OutputEvent` rows to ``stream`` as they come."""

    def __init__(self, stream: TextIO, format: str) -> None:
        if format not in FORMATS:
            raise ValueError(f"output format must be one of {list(FORMATS)}, got {format!r}")
        self.stream = stream
        self.rows = 0
        self._flush = stream.isatty()
        self._write: Callable[[Any], object]
        if format == "csv":
            writer = csv.writer(stream, lineterminator="\n")
            writer.writerow(COLUMNS)
            self._write = lambda e: writer.writerow(
                (e.node, e.interval, _stamp(e.ts), _cell(e.value))
            )
        else:
            self._write = lambda e: stream.write(
                json.dumps(
                    {
                        "node": e.node,
                        "interval": e.interval,
                        "ts": _stamp(e.ts),
                        "value": plain(e.value),
                    },
                    allow_nan=False,
                )
                + "\n"
            )

    def __call__(self, event: Any) -> None:
        self._write(event)
        self.rows += 1
        if self._flush:
            self.stream.flush()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool | int | float | str):
        return value
    return json.dumps(plain(value), allow_nan=False)


__all__ = ["COLUMNS", "FORMATS", "RowWriter", "plain"]
