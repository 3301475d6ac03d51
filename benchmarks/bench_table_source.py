"""table_source: streaming a 10-million-row Parquet file keeps memory bounded.

Two Parquet files are generated in a temporary folder (never in the repository), written row
group by row group so generating them is bounded too: a small one (100,000 rows) and a large one
(10,000,000 rows by default, ``QMTL_BENCH_TABLE_ROWS``), both one event per second with a float
price, in row groups of 100,000 rows. Each runs through ``SourceNode(source=path, ts="ts",
value="price")`` and a node at 1m on the local engine in a fresh subprocess, which resets its
peak RSS (``/proc/self/clear_refs``) just before the run and reports the peak's growth over the
RSS it had then (``VmHWM`` minus ``VmRSS``; Linux), and its throughput. Side by side:

- ``small_peak_rss_growth_mb`` / ``large_peak_rss_growth_mb``: peak memory added by the run;
- ``large_to_small_growth_ratio``: about 1 when memory does not grow with the file (100× the
  rows, the same row groups), far above 1 if the file were read as a whole or held as a list
  of events (10M events as Python tuples alone would be well over a gigabyte);
- ``*_rss_growth_10_to_90pct_mb``: RSS growth from 10 % to 90 % of the stream, about 0 when
  nothing accumulates per event (a leak would climb with the rows);
- ``*_events_per_s`` and ``*_file_mb``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SMALL_ROWS = 100_000
ROW_GROUP = 100_000  # rows per row group, in both files
BASE = 1_700_000_000

RUN = r"""
import json, sys, time
from qmtl import Node, Pipeline, SourceNode
from qmtl.state import MemoryStateBackend

def status(field):
    with open("/proc/self/status") as lines:
        for line in lines:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

path = sys.argv[1]
minute = {"1m": {"interval": "1m", "period": 60}}
pipeline = Pipeline("table-bench", default_intervals=minute)
pipeline.add_node(SourceNode("px", source=path, ts="ts", value="price"))
pipeline.add_node(Node("ret", fn=lambda px: px / 100 - 1, upstreams=["px"]))
pipeline.build()
# Warm up outside the figures: plugins resolved, pyarrow (and what it loads on a first read,
# pandas included) imported, one batch read.
pipeline.run(state=MemoryStateBackend(), sources={"px": [(1e9 + i, 1.0) for i in range(1000)]})
first = pipeline.nodes["px"].source.events()
next(first)
first.close()
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # reset the peak (VmHWM) to the current RSS
before = status("VmRSS")
expected = 2 * (int(sys.argv[2]) // 60)  # buckets out: px and ret at 1m
marks, seen, samples = {expected // 10: "10", expected * 9 // 10: "90"}, [0], {}

def sample(_event):
    seen[0] += 1
    mark = marks.get(seen[0])
    if mark:
        samples[mark] = status("VmRSS")

started = time.perf_counter()
summary = pipeline.run(sample, state=MemoryStateBackend())
seconds = time.perf_counter() - started
peak = status("VmHWM")
print(json.dumps({"events": summary.events_in, "seconds": seconds,
                  "growth_mb": peak - before, "peak_mb": peak,
                  "growth_10_to_90_mb": samples["90"] - samples["10"]}))
"""


def _write(path: Path, rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("ts", pa.int64()), ("price", pa.float64())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, ROW_GROUP):
            n = min(ROW_GROUP, rows - start)
            seconds = BASE + np.arange(start, start + n, dtype=np.int64)
            price = 100.0 + np.sin(seconds / 3600.0)
            writer.write_table(pa.table({"ts": seconds, "price": price}, schema=schema))


def _measure(path: Path, rows: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(path), str(rows)],
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark run failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run() -> dict[str, Any]:
    large_rows = int(os.environ.get("QMTL_BENCH_TABLE_ROWS", "10000000"))
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="qmtl-bench-table-") as folder:
        for name, rows in (("small", SMALL_ROWS), ("large", large_rows)):
            path = Path(folder) / f"{name}.parquet"
            _write(path, rows)
            measured = _measure(path, rows)
            assert measured["events"] == rows, measured
            figures[f"{name}_rows"] = rows
            figures[f"{name}_file_mb"] = round(path.stat().st_size / 2**20, 1)
            figures[f"{name}_peak_rss_growth_mb"] = round(measured["growth_mb"], 1)
            figures[f"{name}_peak_rss_mb"] = round(measured["peak_mb"], 1)
            figures[f"{name}_rss_growth_10_to_90pct_mb"] = round(measured["growth_10_to_90_mb"], 1)
            figures[f"{name}_events_per_s"] = round(rows / measured["seconds"])
    small = max(figures["small_peak_rss_growth_mb"], 1.0)
    figures["large_to_small_growth_ratio"] = round(figures["large_peak_rss_growth_mb"] / small, 2)
    return figures


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
