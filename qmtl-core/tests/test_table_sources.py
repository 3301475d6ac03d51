"""Sources from tables (SPEC §8a): every kind of table built from the same prices gives exactly
the buckets of the plain list source, values arrive as plain Python objects, and bad time
columns fail naming the source and the fix."""

from __future__ import annotations

import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qmtl import Node, Pipeline, SourceNode
from qmtl.errors import PipelineValidationError, SourceError
from qmtl.extras import MissingExtraError
from qmtl.tables import TableSource

START = 1_704_067_200  # 2024-01-01T00:00:00Z
#: 40 prices, one every 20 minutes: three per hour, so each hourly bar closes on its third price.
STAMPS = [START + 1200 * i for i in range(40)]
PRICES = [100.0 + (i * 7) % 11 + i / 4 for i in range(40)]
VOLUMES = [10 * i + 1 for i in range(40)]
HOURLY = {"1h": {"interval": "1h", "period": 48}}


def _run(source: Any, **columns: Any) -> list[tuple[str, str, float, Any]]:
    pipeline = Pipeline("tables", default_intervals=HOURLY)
    pipeline.add_node(SourceNode("px", source=source, **columns))
    pipeline.add_node(Node("move", fn=lambda px: round(px - 100, 6), upstreams=["px"]))
    out: list[tuple[str, str, float, Any]] = []
    pipeline.run(lambda e: out.append((e.node, e.interval, e.ts, e.value)))
    return out


REFERENCE = _run(list(zip(STAMPS, PRICES, strict=True)))


def test_the_reference_is_the_hand_computed_hourly_close() -> None:
    # Prices at :00, :20 and :40 fall in one hour; the bar is the :40 price, stamped at the end
    # of the hour. Hour 0 holds prices 0..2, so its close is PRICES[2] at START + 3600.
    assert REFERENCE[0] == ("px", "1h", START + 3600.0, PRICES[2])
    assert ("move", "1h", START + 3600.0, round(PRICES[2] - 100, 6)) in REFERENCE
    closes = [value for node, _i, _ts, value in REFERENCE if node == "px"]
    assert closes == [PRICES[i] for i in range(2, 40, 3)] + [PRICES[39]]  # 13 full hours + 1


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"time": STAMPS, "price": PRICES, "volume": VOLUMES})


def _utc_index() -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(STAMPS, unit="s", utc=True), name="time")


def _arrow() -> pa.Table:
    times = pa.array([s * 1000 for s in STAMPS], pa.timestamp("ms", tz="UTC"))
    return pa.table({"time": times, "price": PRICES, "volume": VOLUMES})


def test_a_series_with_a_time_zone_aware_index() -> None:
    index = _utc_index().tz_convert("America/New_York")  # same instants, New York wall time
    assert _run(pd.Series(PRICES, index=index)) == REFERENCE


def test_a_frame_with_a_naive_utc_index_and_a_value_column() -> None:
    frame = _frame().drop(columns="time").set_index(_utc_index().tz_localize(None))
    assert _run(frame, value="price") == REFERENCE


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_an_int64_epoch_column_in_any_unit(unit: str) -> None:
    scale = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[unit]
    frame = _frame().assign(time=np.array(STAMPS, dtype=np.int64) * scale)
    assert frame["time"].dtype == np.int64
    options = {} if unit == "s" else {"ts_unit": unit}
    assert _run(frame, ts="time", value="price", **options) == REFERENCE


def test_a_float_epoch_column_and_the_index_named_by_ts() -> None:
    frame = _frame().assign(time=np.array(STAMPS, dtype=np.float64))
    assert _run(frame, ts="time", value="price") == REFERENCE
    assert _run(frame.set_index("time"), ts="time", value="price") == REFERENCE


def test_a_polars_frame_finds_its_datetime_column() -> None:
    frame = pl.DataFrame({"price": PRICES, "time": STAMPS}).with_columns(
        pl.from_epoch("time", time_unit="s").dt.replace_time_zone("UTC")
    )
    assert _run(frame, value="price") == REFERENCE


def test_a_pyarrow_table() -> None:
    assert _run(_arrow(), value="price") == REFERENCE


def test_a_parquet_file_with_several_row_groups_read_in_small_batches(tmp_path: Path) -> None:
    path = tmp_path / "prices.parquet"
    pq.write_table(_arrow(), path, row_group_size=7)
    assert pq.ParquetFile(path).num_row_groups == 6
    assert _run(str(path), value="price") == REFERENCE
    source = TableSource(path, value="price", batch_rows=5)
    events = source.events()
    assert next(events) == (float(STAMPS[0]), PRICES[0])  # lazy: one batch read, not the file
    assert [e for e in source.events()] == list(zip(map(float, STAMPS), PRICES, strict=True))


def test_csv_files_with_iso_times_or_epoch_numbers(tmp_path: Path) -> None:
    iso = tmp_path / "iso.csv"
    _frame().assign(time=_utc_index().strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(iso, index=False)
    assert iso.read_text().splitlines()[1].startswith("2024-01-01T00:00:00Z,")
    assert _run(iso, ts="time", value="price") == REFERENCE
    epoch = tmp_path / "epoch.csv.gz"
    _frame().to_csv(epoch, index=False)
    assert _run(epoch, ts="time", value="price") == REFERENCE


def test_without_value_each_row_is_a_dict_of_plain_python_values(tmp_path: Path) -> None:
    pq.write_table(_arrow(), tmp_path / "p.parquet", row_group_size=9)
    sources = {
        "pandas": (_frame(), {"ts": "time"}),
        "polars": (pl.from_pandas(_frame()), {"ts": "time"}),
        "arrow": (_arrow(), {}),
        "parquet": (tmp_path / "p.parquet", {}),
    }
    for kind, (data, options) in sources.items():
        events = list(TableSource(data, **options).events())
        assert events[3] == (float(STAMPS[3]), {"price": PRICES[3], "volume": VOLUMES[3]}), kind
        for ts, row in events:
            assert type(ts) is float, kind
            assert type(row["price"]) is float and type(row["volume"]) is int, kind


def test_missing_values_are_nan_in_float_columns_and_none_elsewhere(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"time": [START, START + 60], "px": [1.5, None], "sym": ["a", None], "n": [1, None]}
    ).astype({"n": "Int64"})
    table = pa.table(
        {"time": [START, START + 60], "px": [1.5, None], "sym": ["a", None], "n": [1, None]}
    )
    pq.write_table(table, tmp_path / "gaps.parquet")
    kinds = [frame, pl.from_arrow(table), table, tmp_path / "gaps.parquet"]
    for data in kinds:
        (_t0, first), (_t1, second) = TableSource(data, ts="time").events()
        assert first == {"px": 1.5, "sym": "a", "n": 1}
        assert math.isnan(second["px"]) and second["sym"] is None and second["n"] is None


def test_datetime_values_arrive_as_datetime_not_library_scalars() -> None:
    when = pd.to_datetime([START], unit="s", utc=True)
    frame = pd.DataFrame({"time": [START], "fixed_at": when})
    ((_ts, row),) = TableSource(frame, ts="time").events()
    assert type(row["fixed_at"]) is datetime
    assert row["fixed_at"] == datetime.fromtimestamp(START, UTC)


def test_a_one_shot_run_reads_the_last_row(tmp_path: Path) -> None:
    pq.write_table(_arrow(), tmp_path / "p.parquet", row_group_size=7)
    for data in (pd.Series(PRICES, index=_utc_index()), _arrow(), tmp_path / "p.parquet"):
        pipeline = Pipeline("latest")
        options = {} if isinstance(data, pd.Series) else {"value": "price"}
        pipeline.add_node(SourceNode("px", source=data, **options))
        assert pipeline.execute(ts=START) == {"px": PRICES[-1]}


def test_the_node_id_covers_every_row_of_a_frame() -> None:
    def node_id(prices: list[float]) -> str:
        pipeline = Pipeline("ids")
        pipeline.add_node(SourceNode("px", source=pd.Series(prices, index=_utc_index())))
        return pipeline.build().node("px").node_id

    changed = list(PRICES)
    changed[20] += 0.01  # one price in the middle, where no repr of the frame would look
    assert node_id(PRICES) == node_id(list(PRICES))
    assert node_id(PRICES) != node_id(changed)


def test_millisecond_epochs_never_become_seconds_silently() -> None:
    frame = _frame().assign(time=np.array(STAMPS, dtype=np.int64) * 1000)
    with pytest.raises(SourceError, match=r"source 'px'.*'time'.*year 3000.*ts_unit='ms'"):
        SourceNode("px", source=frame, ts="time", value="price")
    nanos = pa.table({"time": np.array(STAMPS, dtype=np.int64) * 10**9, "price": PRICES})
    with pytest.raises(SourceError, match="ts_unit='ns'"):
        SourceNode("px", source=nanos, ts="time", value="price")


def test_unusable_time_columns_fail_naming_the_source_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"RangeIndex.*ts='column'"):
        SourceNode("px", source=pd.Series(PRICES))
    with pytest.raises(SourceError, match=r"ts='when' is neither a column"):
        SourceNode("px", source=_frame(), ts="when")
    with pytest.raises(SourceError, match=r"value='close' is not a column.*'price'"):
        SourceNode("px", source=_arrow(), value="close")
    with pytest.raises(SourceError, match=r"no datetime column; pass ts="):
        SourceNode("px", source=pl.from_pandas(_frame()))
    gap = _frame().assign(time=pd.to_datetime(STAMPS, unit="s", utc=True))
    gap.loc[5, "time"] = pd.NaT
    with pytest.raises(SourceError, match=r"row 5 has no time in column 'time'"):
        list(TableSource(gap, ts="time", batch_rows=4).events())
    with pytest.raises(SourceError, match=r"'prices\.txt' is not a table file"):
        SourceNode("px", source="prices.txt")
    missing = SourceNode("px", source=str(tmp_path / "absent.parquet"), value="price")
    with pytest.raises(SourceError, match=r"cannot open source 'px' \(Parquet file"):
        list(missing.source.events())
    with pytest.raises(PipelineValidationError, match="ts=, value= and ts_unit= describe"):
        SourceNode("px", source=[(START, 1.0)], value="price")


def test_a_missing_library_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = _frame()
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(MissingExtraError, match=r'pip install "qmtl-core\[pandas\]"'):
        SourceNode("px", source=frame, ts="time")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MissingExtraError, match=r'pip install "qmtl-core\[arrow\]"'):
        SourceNode("px", source="prices.parquet")
    assert isinstance(MissingExtraError("x"), ImportError)


def test_a_table_source_runs_on_the_mock_engine_with_the_same_buckets() -> None:
    pipeline = Pipeline("mocked", default_intervals=HOURLY)
    pipeline.add_node(SourceNode("px", source=pd.Series(PRICES, index=_utc_index())))
    pipeline.add_node(Node("move", fn=lambda px: round(px - 100, 6), upstreams=["px"]))
    out: list[tuple[str, str, float, Any]] = []
    pipeline.run(lambda e: out.append((e.node, e.interval, e.ts, e.value)), engine="mock")
    assert out == REFERENCE
