"""Table sources (pandas, polars, pyarrow) and kept histories on the columnar path, against the
event path: a table hands its batches over whole (``TableSource.event_chunks``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa

from qmtl import Node, Pipeline, SourceNode
from qmtl.state import MemoryStateBackend
from qmtl.testing.engine_contract import collect, counts, history

BASE = 1_700_006_400
MINUTE = {"1m": {"interval": "1m", "period": 3, "max_history": 100}}


def test_table_sources_and_kept_histories_match_the_event_path() -> None:
    """A pandas frame (time from its index, rows as dicts), a polars frame (a ``ts`` column, one
    value column) and a pyarrow table, read 700 rows at a time; ``keep_history=True`` keeps
    every bucket."""
    minutes = pd.date_range("2024-03-01 09:30", periods=3_000, freq="17s", tz="UTC")
    closes = np.round(np.cos(np.arange(3_000) / 30) + 100, 4)
    frame = pd.DataFrame({"close": closes}, index=minutes)
    ticks = pl.DataFrame({"ts": BASE + np.arange(0, 6_000, 3), "size": np.arange(2_000) % 5})
    flags = pa.table({"ts": BASE + np.arange(0, 6_000, 45.5), "up": np.arange(132) % 3 == 0})
    results = []
    for columnar in (True, False):
        p = Pipeline("tables", default_intervals=MINUTE, keep_history=True)
        p.add_node(SourceNode("px", source=frame))  # each row a dict {"close": ...}
        p.add_node(SourceNode("size", source=ticks, ts="ts", value="size"))
        p.add_node(SourceNode("up", source=flags, ts="ts", value="up"))
        p.add_node(
            Node("gate", fn=lambda up, close: close if up else None, upstreams=["up", "close"])
        )
        p.add_node(Node("close", fn=lambda px: px["close"], upstreams=["px"]))
        p.add_node(
            Node(
                "vol",
                fn=lambda size: size.sum(axis=1),
                upstreams=["size"],
                window=3,
                vectorized=True,
            )
        )
        out: list[Any] = []
        state = MemoryStateBackend()
        summary = p.run(out.append, state=state, columnar=columnar, chunk_size=700)
        results.append((collect(out), history(p, state), counts(summary)))
    assert results[0] == results[1]
    # 3,000 ticks of 17 s span 850 minutes, all kept although max_history is 100
    assert len(results[0][1][("close", "1m")]) == 850
    assert len(results[0][1][("vol", "1m")]) == 100 - 2  # 6,000 s of ticks, two warm up
