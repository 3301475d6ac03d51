"""History as a DataFrame (SPEC §8a) and a backtest that keeps its whole history (SPEC §7)."""

from __future__ import annotations

import math
import sys
from typing import Any

import pandas as pd
import polars as pl
import pytest

from qmtl import Node, Pipeline, QueryNode, SourceNode
from qmtl.extras import MissingExtraError
from qmtl.state import MemoryStateBackend
from qmtl.testing.state_contract import FakeClock

HOUR = 3600
#: btc trades every 20 minutes for 6 hours; eth only in hours 0, 1 and 4 (an illiquid symbol).
BTC = [(1200 * i, 100.0 + i) for i in range(18)]
ETH = [(0, 10.0), (1500, 11.0), (4000, 12.0), (15000, 13.0)]


def _pipeline(name: str = "frames", **options: Any) -> Pipeline:
    pipeline = Pipeline(name, default_intervals={"1h": {"interval": "1h", "period": 24}}, **options)
    pipeline.add_node(SourceNode("btc", source=BTC, tags=["PX"]))
    pipeline.add_node(SourceNode("eth", source=ETH, tags=["PX"]))
    pipeline.add_node(Node("ratio", fn=lambda btc, eth: btc / eth, upstreams=["btc", "eth"]))
    pipeline.add_query_node(QueryNode("prices", tags=["PX"]))
    return pipeline


def assert_frame_is_the_history(pipeline: Pipeline, frame: pd.DataFrame, nodes: list[str]) -> None:
    """Every node's every bucket of get_history is its cell; every other cell is NaN."""
    assert isinstance(frame.index, pd.DatetimeIndex) and str(frame.index.tz) == "UTC"
    assert frame.index.name == "ts" and frame.index.is_monotonic_increasing
    for node in nodes:
        history = pipeline.get_history(node, "1h", count=None)
        stored = {pd.Timestamp(item["timestamp"], unit="s", tz="UTC"): item for item in history}
        assert stored, node
        for when, cell in frame[node].items():
            if when in stored:
                assert cell == stored[when]["value"], (node, when)
            else:
                assert isinstance(cell, float) and math.isnan(cell), (node, when, cell)
        assert set(stored) <= set(frame.index)


def test_history_frame_equals_get_history_for_every_node_and_bucket() -> None:
    pipeline = _pipeline()
    pipeline.run()
    frame = pipeline.history_frame(["btc", "eth", "ratio"], interval="1h")
    assert list(frame.columns) == ["btc", "eth", "ratio"]
    assert_frame_is_the_history(pipeline, frame, ["btc", "eth", "ratio"])
    # By hand: six hourly bars; eth has none in hours 2, 3 and 5, ratio uses eth's last close.
    assert frame.index[0] == pd.Timestamp(HOUR, unit="s", tz="UTC") and len(frame) == 6
    assert frame["btc"].tolist() == [102.0, 105.0, 108.0, 111.0, 114.0, 117.0]
    assert frame["eth"].isna().tolist() == [False, False, True, True, False, True]
    assert frame["ratio"].tolist() == [102 / 11, 105 / 12, 108 / 12, 111 / 12, 114 / 13, 117 / 13]


def test_every_node_by_default_with_query_matches_one_column_per_match() -> None:
    pipeline = _pipeline()
    pipeline.run()
    frame = pipeline.history_frame(interval="1h")
    assert list(frame.columns) == ["btc", "eth", "ratio", "prices.btc", "prices.eth"]
    assert frame["prices.btc"].tolist() == frame["btc"].tolist()
    whole = pipeline.history_frame("prices", interval="1h", expand=False)
    values = {item["timestamp"]: item["value"] for item in pipeline.get_history("prices", "1h")}
    assert [whole.loc[pd.Timestamp(ts, unit="s", tz="UTC"), "prices"] for ts in values] == list(
        values.values()
    )


def test_start_is_exclusive_and_end_inclusive_like_get_history() -> None:
    pipeline = _pipeline()
    pipeline.run()
    frame = pipeline.history_frame("btc", interval="1h", start_ts=2 * HOUR, end_ts=4 * HOUR)
    assert frame.index.tolist() == [pd.Timestamp(t, unit="s", tz="UTC") for t in (10800, 14400)]


def test_the_polars_form_has_a_utc_ts_column_and_nulls() -> None:
    pipeline = _pipeline()
    pipeline.run()
    frame = pipeline.history_frame(["btc", "eth"], interval="1h", library="polars")
    assert isinstance(frame, pl.DataFrame)
    assert frame.schema["ts"] == pl.Datetime("us", "UTC")
    expected = pipeline.history_frame(["btc", "eth"], interval="1h")
    assert frame["btc"].to_list() == expected["btc"].tolist()
    assert frame["eth"].to_list() == [None if math.isnan(v) else v for v in expected["eth"]]


def test_a_missing_pandas_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = _pipeline()
    pipeline.run()
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(MissingExtraError, match=r"qmtl-core\[pandas\]"):
        pipeline.history_frame(interval="1h")


def _long_backtest(**options: Any) -> tuple[Pipeline, FakeClock, MemoryStateBackend]:
    clock = FakeClock(now=1_800_000_000.0)
    state = MemoryStateBackend(clock=clock)
    pipeline = Pipeline("backtest", **options)
    seconds = {"1s": {"interval": "1s", "period": 60}}  # ttl 60 s, max_history 100
    pipeline.add_node(
        SourceNode(
            "px", source=[(t, float(t)) for t in range(500)], **{"interval_settings": seconds}
        )
    )
    return pipeline, clock, state


def test_by_default_history_is_cut_at_max_history_and_expires_by_wall_clock() -> None:
    pipeline, clock, state = _long_backtest()
    pipeline.run(state=state)
    assert len(pipeline.history_frame("px", "1s")) == 100
    clock.advance(61)
    assert pipeline.get_history("px", "1s", count=None) == []


@pytest.mark.parametrize("where", ["pipeline", "run"])
def test_keep_history_keeps_the_whole_backtest_until_cleared(where: str) -> None:
    options = {"keep_history": True} if where == "pipeline" else {}
    pipeline, clock, state = _long_backtest(**options)
    pipeline.run(state=state, **({} if where == "pipeline" else {"keep_history": True}))
    clock.advance(10 * 86_400)  # days later, far past the 60 s TTL
    frame = pipeline.history_frame("px", "1s")
    assert len(frame) == 500 and frame["px"].iloc[0] == 0.0 and frame["px"].iloc[-1] == 499.0
    meta = pipeline.get_node_metadata("px", "1s")
    assert (meta["count"], meta["max_items"], meta["ttl"]) == (500, None, None)
    assert pipeline.clear_history() == 1
    assert pipeline.get_history("px", "1s") == []


def test_keep_history_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="keep_history must be True or False"):
        Pipeline("p", keep_history="yes")


def test_history_frame_reads_a_backtest_namespace_like_get_history() -> None:
    """A backtest run with namespace= is read back as a frame from that namespace, and the
    pipeline's own history (another run over other prices) stays apart."""
    pipeline = _pipeline("frames-ns")
    state = MemoryStateBackend()
    pipeline.run(state=state)
    pipeline.run(state=state, sources={"btc": [(t, 2 * v) for t, v in BTC]}, namespace="bt")
    live = pipeline.history_frame("btc", interval="1h", state=state)
    backtest = pipeline.history_frame("btc", interval="1h", state=state, namespace="bt")
    assert live["btc"].tolist() == [102.0, 105.0, 108.0, 111.0, 114.0, 117.0]
    assert backtest["btc"].tolist() == [204.0, 210.0, 216.0, 222.0, 228.0, 234.0]
    history = pipeline.get_history("btc", "1h", count=None, state=state, namespace="bt")
    assert [item["value"] for item in reversed(history)] == backtest["btc"].tolist()
