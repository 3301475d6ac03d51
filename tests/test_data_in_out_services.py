"""Data in and out on the real services: table sources on the Kafka engine give the local
engine's buckets, and history_frame / keep_history behave on Redis as on memory."""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qmtl import Node, Pipeline, QueryNode, SourceNode

START = 1_704_067_200
STAMPS = [START + 1200 * i for i in range(30)]
PRICES = [100.0 + (i * 7) % 11 + i / 4 for i in range(30)]
HOURLY = {"1h": {"interval": "1h", "period": 48}}


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _pipeline(name: str, source: Any, **columns: Any) -> Pipeline:
    pipeline = Pipeline(name, default_intervals=HOURLY)
    pipeline.add_node(SourceNode("px", source=source, tags=["PX"], **columns))
    pipeline.add_node(
        SourceNode("fx", source=[(START + 2500 * i, 1.0 + i / 100) for i in range(12)], tags=["PX"])
    )
    pipeline.add_node(Node("usd", fn=lambda px, fx: round(px * fx, 6), upstreams=["px", "fx"]))
    pipeline.add_query_node(QueryNode("quotes", tags=["PX"]))
    return pipeline


def _buckets(pipeline: Pipeline, **run: Any) -> list[tuple[str, str, float, Any]]:
    out: list[tuple[str, str, float, Any]] = []
    pipeline.run(lambda e: out.append((e.node, e.interval, e.ts, e.value)), **run)
    return sorted(out, key=lambda row: (row[0], row[2]))


@pytest.mark.integration
def test_frame_and_parquet_sources_on_kafka_match_the_local_engine(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    frame = pd.Series(PRICES, index=pd.to_datetime(STAMPS, unit="s", utc=True))
    table = pa.table({"time": pa.array(STAMPS, pa.int64()), "price": PRICES})
    pq.write_table(table, tmp_path / "px.parquet", row_group_size=8)
    reference = _buckets(_pipeline("local", list(zip(STAMPS, PRICES, strict=True))))
    parquet = {"ts": "time", "value": "price"}
    for source, columns in ((frame, {}), (str(tmp_path / "px.parquet"), parquet)):
        pipeline = _pipeline(_name("tables-kafka"), source, **columns)
        try:
            got = _buckets(
                pipeline,
                engine="kafka",
                state="redis",
                state_options={"url": redis_url},
                engine_options={"bootstrap_servers": kafka_bootstrap, "connect_timeout_s": 10},
                timeout=110,
            )
        finally:
            pipeline.clear_history()
        assert got == reference, type(source).__name__


@pytest.mark.integration
def test_history_frame_equals_get_history_on_redis(redis_url: str) -> None:
    pipeline = _pipeline(_name("frame-redis"), list(zip(STAMPS, PRICES, strict=True)))
    try:
        pipeline.run(state="redis", state_options={"url": redis_url})
        frame = pipeline.history_frame(interval="1h")
        assert list(frame.columns) == ["px", "fx", "usd", "quotes.px", "quotes.fx"]
        for node in ("px", "fx", "usd"):
            history = pipeline.get_history(node, "1h", count=None)
            stored = {pd.Timestamp(i["timestamp"], unit="s", tz="UTC"): i["value"] for i in history}
            assert len(stored) > 5
            for when, cell in frame[node].items():
                if when in stored:
                    assert cell == stored[when], (node, when)
                else:
                    assert math.isnan(cell), (node, when)
        quotes = pipeline.get_history("quotes", "1h", count=None)
        for item in quotes:
            when = pd.Timestamp(item["timestamp"], unit="s", tz="UTC")
            assert frame.loc[when, "quotes.px"] == item["value"]["px"]
    finally:
        pipeline.clear_history()


@pytest.mark.integration
def test_keep_history_on_redis_keeps_every_bucket_without_a_ttl(redis_url: str) -> None:
    import redis

    seconds = {"1s": {"interval": "1s", "period": 30}}  # ttl 30 s, max_history 100
    client = redis.Redis.from_url(redis_url)
    for keep in (False, True):
        pipeline = Pipeline(_name("keep-redis"), default_intervals=seconds)
        pipeline.add_node(SourceNode("px", source=[(START + i, float(i)) for i in range(400)]))
        try:
            pipeline.run(state="redis", state_options={"url": redis_url}, keep_history=keep)
            frame = pipeline.history_frame("px", "1s")
            keys = list(client.scan_iter(match=f"qmtl:{pipeline.name}:*"))
            assert len(keys) == 2  # the series and its metadata
            ttls = {client.ttl(key) for key in keys}
            meta = pipeline.get_node_metadata("px", "1s")
            if keep:
                assert len(frame) == 400 and frame["px"].iloc[0] == 0.0
                assert ttls == {-1}  # persisted: no expiry by wall clock
                assert (meta["max_items"], meta["ttl"]) == (None, None)
            else:
                assert len(frame) == 100 and frame["px"].iloc[0] == 300.0
                assert all(0 < ttl <= 30 for ttl in ttls)
        finally:
            pipeline.clear_history()
    client.close()
