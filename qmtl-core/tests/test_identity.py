"""Identity of sources and nodes that stay the user's objects (SPEC §4.2)."""

from __future__ import annotations

import copy
import functools
import json
import os
import pickle
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from qmtl import Node, Pipeline, QueryNode, SourceNode
from qmtl.errors import PipelineValidationError
from qmtl.state import MemoryStateBackend


class PriceFeed:
    """A seed-style source: an object with ``fetch()``."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.lock = threading.Lock()  # runtime machinery: not the series' identity

    def fetch(self) -> float:
        return {"BTC": 60_000.0, "ETH": 3_000.0}[self.symbol]

    def read(self) -> float:
        return self.fetch()

    def __call__(self) -> float:
        return self.fetch()


class Slotted:
    __slots__ = ("__secret", "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.__secret = symbol.lower()

    def fetch(self) -> str:
        return self.symbol


class Keyed:
    """Declares its identity: the session is not part of it."""

    def __init__(self, symbol: str, session: object) -> None:
        self.symbol = symbol
        self.session = session

    def __qmtl_key__(self) -> tuple[str, str]:
        return ("binance", self.symbol)

    def fetch(self) -> str:
        return self.symbol


def prices(symbol: str) -> list[float]:
    """2,000 prices; the two symbols differ in the middle only."""
    values = [float(i) for i in range(2000)]
    values[1000] = 0.0 if symbol == "BTC" else -1.0
    return values


MINUTES = pd.date_range("2024-03-08", periods=2000, freq="min", tz="UTC")


def two_sources(make: Any) -> Pipeline:
    p = Pipeline("feeds")
    p.add_node(SourceNode("btc", source=make("BTC")))
    p.add_node(SourceNode("eth", source=make("ETH")))
    return p


@pytest.mark.parametrize(
    "make",
    [
        PriceFeed,  # an object with fetch()
        lambda s: PriceFeed(s).read,  # a bound method
        lambda s: PriceFeed(s),  # a callable object (__call__)
        Slotted,  # __slots__, a name-mangled one included
        lambda s: functools.partial(PriceFeed.fetch, PriceFeed(s)),
        lambda s: pd.Series(prices(s), index=MINUTES),  # a table source: by its content
        lambda s: np.array(prices(s)),
    ],
    ids=["fetch", "bound-method", "callable-object", "slots", "partial", "pandas", "numpy"],
)
def test_two_instances_are_two_series(make: Any) -> None:
    plan = two_sources(make).build()  # before: "have the same node id", pipeline refused
    assert plan.node("btc").node_id != plan.node("eth").node_id
    # ... and the same state is the same series, whatever the object's address
    again = two_sources(make).build()
    assert again.node("btc").node_id == plan.node("btc").node_id


def test_a_declared_key_is_the_identity() -> None:
    one = Pipeline("k").add_node(SourceNode("a", source=Keyed("BTC", object()))).node_id
    assert one == Pipeline("k").add_node(SourceNode("a", source=Keyed("BTC", [1, 2]))).node_id
    assert one != Pipeline("k").add_node(SourceNode("a", source=Keyed("ETH", object()))).node_id
    p = Pipeline("same")
    p.add_node(SourceNode("a", source=Keyed("BTC", 1)))
    p.add_node(SourceNode("b", source=Keyed("BTC", 2)))
    with pytest.raises(PipelineValidationError, match="__qmtl_key__"):
        p.build()

    class Broken:
        def __qmtl_key__(self) -> str:
            raise RuntimeError("no symbol yet")

        def fetch(self) -> int:
            return 1

    with pytest.raises(PipelineValidationError, match=r"Broken.__qmtl_key__\(\) raised Runtime"):
        Pipeline("b").add_node(SourceNode("a", source=Broken())).node_id  # noqa: B018


def test_ids_are_the_same_in_every_process(tmp_path: Path) -> None:
    """No addresses, no hash() randomisation: two interpreters with different hash seeds
    compute the same ids (what a deployment's workers rely on)."""
    module = tmp_path / "feeds_strategy.py"
    module.write_text(
        textwrap.dedent(
            """
            import json, threading
            from qmtl import Node, Pipeline, SourceNode

            class Feed:
                def __init__(self, symbol, tags):
                    self.symbol, self.tags, self.lock = symbol, tags, threading.Lock()
                def fetch(self):
                    return 1.0

            p = Pipeline("procs")
            p.add_node(SourceNode("btc", source=Feed("BTC", {"spot", "usd", "crypto"})))
            p.add_node(SourceNode("eth", source=Feed("ETH", {"spot", "usd", "crypto"}).fetch))
            p.add_node(Node("ratio", fn=lambda btc, eth: btc / eth, upstreams=["btc", "eth"]))
            print(json.dumps({n.name: n.node_id for n in p.build().nodes}))
            """
        )
    )
    ids = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, str(module)], env=env, capture_output=True, text=True, check=True
        )
        ids.append(json.loads(out.stdout))
    assert ids[0] == ids[1]
    assert len(set(ids[0].values())) == 3


def shared_node_pipelines() -> tuple[Node, Pipeline, Pipeline]:
    node = Node("signal", fn=lambda px: px * 2, upstreams=["px"], tags=["alpha"])
    first = Pipeline("first", default_intervals={"1d": {"interval": "1d", "period": 5}})
    first.add_node(SourceNode("px", source=lambda: 1.0))
    first.add_node(node)
    second = Pipeline(
        "second",
        default_intervals={
            "1d": {"interval": "1d", "period": 20},
            "1h": {"interval": "1h", "period": 24},
        },
    )
    second.add_node(SourceNode("px", source=lambda: 2.0))  # another upstream: another id
    second.add_node(node)
    return node, first, second


def test_one_node_in_two_pipelines_each_describes_itself() -> None:
    node, first, second = shared_node_pipelines()
    before = dict(vars(node))
    first_id = first.build().node("signal").node_id
    second_id = second.build().node("signal").node_id
    assert first_id != second_id
    # before the fix, building the second pipeline rewrote the node, and the first
    # pipeline's definition reported the second's id and intervals
    definition = {n["name"]: n for n in first.to_definition()["nodes"]}["signal"]
    assert definition["node_id"] == first_id
    assert set(definition["stream_settings"]["intervals"]) == {"1d"}
    assert definition["stream_settings"]["intervals"]["1d"]["period"] == 5
    other = {n["name"]: n for n in second.to_definition()["nodes"]}["signal"]
    assert (other["node_id"], set(other["stream_settings"]["intervals"])) == (
        second_id,
        {"1d", "1h"},
    )
    # each pipeline's view of the node
    assert first.nodes["signal"].node_id == first_id
    assert first.nodes["signal"].stream_settings.intervals["1d"].period == 5  # type: ignore[union-attr]
    assert second.nodes["signal"].node_id == second_id
    assert first.nodes["signal"].to_definition() == definition
    # building wrote nothing into the user's object (the weak record of membership aside)
    after = dict(vars(node))
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before if k != "_pipelines")
    # the node itself answers for the pipeline it was last added to (the seed's reading)
    assert node.node_id == second_id
    assert node.stream_settings.intervals["1d"].period == 20  # type: ignore[union-attr]
    # history is kept per pipeline
    first.execute(ts=86_400 * 3, state=MemoryStateBackend())
    assert first.get_node_metadata("signal")["node_id"] == first_id


def test_a_query_node_in_two_pipelines_matches_each_pipelines_nodes() -> None:
    query = QueryNode("alphas", tags=["alpha"])
    pipelines = []
    for count in (1, 2):
        p = Pipeline(f"q{count}")
        for i in range(count):
            p.add_node(SourceNode(f"s{i}", source=lambda i=i: float(i), tags=["alpha"]))
        p.add_query_node(query)
        pipelines.append(p)
    first, second = (p.to_definition()["query_nodes"][0]["matches"] for p in pipelines)
    assert (first, second) == (["s0"], ["s0", "s1"])
    assert pipelines[0].query_nodes["alphas"].upstreams == ["s0"]
    assert pipelines[0].execute() == {"s0": 0.0, "alphas": {"s0": 0.0}}


def test_nodes_in_a_pipeline_still_copy_and_pickle() -> None:
    node, first, _second = shared_node_pipelines()
    first.build()
    clone = pickle.loads(pickle.dumps(Node("n", fn=len, upstreams=["x"])))
    assert clone.upstreams == ["x"]
    copied = copy.deepcopy(node)
    assert copied.name == "signal" and copied.fn is not None
