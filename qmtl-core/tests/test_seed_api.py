"""The seed document's API (issue 13 items 10-12): fetch() sources, SourceProcessor
subclasses, QueryNode's seed keywords, the seed's import paths."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from qmtl import Node, Pipeline, QueryNode, QueryNodeResultSelector, SourceNode
from qmtl.errors import IntervalError, UnknownUpstreamError
from qmtl.mock import MockExecutionEngine
from qmtl.sdk.node import SourceProcessor
from qmtl.state import MemoryStateBackend

DAY = {"1d": {"interval": "1d", "period": 1}}
HOURS = {"1d": {"period": 1}, "1h": {"period": 24}}


class PriceFeed(SourceProcessor):
    """The seed's pattern: a SourceProcessor subclass implementing fetch()."""

    def __init__(self) -> None:
        self.calls = 0

    def fetch(self) -> dict[str, float]:
        self.calls += 1
        return {"price": 100.0 + self.calls}


class DuckFeed:
    """Any object with fetch() (the seed's SourceNode called source.fetch())."""

    def __init__(self) -> None:
        self.calls = 0

    def fetch(self) -> float:
        self.calls += 1
        return 7.0


def _pipeline(feed: Any) -> Pipeline:
    pipeline = Pipeline("seed-source")
    pipeline.add_node(SourceNode("price_source", source=feed, interval_settings=DAY))
    pipeline.add_node(
        Node("double", fn=lambda price_source: price_source, upstreams=["price_source"])
    )
    return pipeline


@pytest.mark.parametrize("engine", ["mock", "mock-object"])
def test_a_fetch_source_is_called_once_per_one_shot_run(engine: str) -> None:
    feed = PriceFeed()
    pipeline = _pipeline(feed)
    chosen: Any = MockExecutionEngine() if engine == "mock-object" else engine
    assert pipeline.execute(engine=chosen, ts=86_400) == {
        "price_source": {"price": 101.0},
        "double": {"price": 101.0},
    }
    assert feed.calls == 1
    assert pipeline.execute(engine=chosen, ts=2 * 86_400)["price_source"] == {"price": 102.0}
    assert feed.calls == 2
    assert pipeline.get_interval_data("price_source", count=None) == [
        {"price": 102.0},
        {"price": 101.0},
    ]


def test_a_duck_typed_fetch_source_runs_one_shot_and_streaming() -> None:
    feed = DuckFeed()
    pipeline = _pipeline(feed)
    assert pipeline.execute(engine="mock", ts=0) == {"price_source": 7.0, "double": 7.0}
    assert feed.calls == 1
    outputs: list[Any] = []
    summary = pipeline.run(outputs.append, engine="mock", state=MemoryStateBackend())
    assert feed.calls == 2  # once per run: one event, stamped when it was read
    assert summary.nodes["price_source"].events_in == 1
    assert [(o.node, o.value) for o in outputs] == [("price_source", 7.0), ("double", 7.0)]


def test_query_node_takes_the_seed_keywords() -> None:
    pipeline = Pipeline("seed-query")
    for name, tags in (("n1", ["A", "B"]), ("n2", ["A"]), ("n3", ["A", "B"])):
        pipeline.add_node(Node(name, fn=lambda name=name: name, tags=tags, interval_settings=HOURS))
    query = QueryNode(
        "q",
        tags=["A"],
        upstreams=["n1", "n2"],  # only these may match
        stream_settings={"intervals": {"1h": {"interval": "1h", "period": 24}}},
        result_selector=QueryNodeResultSelector(mode="filter", filter_meta={"tags": ["B"]}),
    )
    pipeline.add_query_node(query)
    assert pipeline.execute(engine="mock", ts=3600) | {} == {
        "n1": "n1",
        "n2": "n2",
        "n3": "n3",
        "q": {"n1": "n1"},  # n3 is outside upstreams=, n2 fails the selector
    }
    plan = pipeline.build()
    assert plan.node("q").upstreams == ("n1", "n2")
    assert [s.interval.value for s in plan.node("q").series] == ["1h"]  # its own intervals
    assert plan.node("q").series[0].period == 24
    definition = query.to_definition()
    assert definition["upstreams"] == ["n1", "n2"]
    rebuilt = QueryNode.from_definition(definition)
    assert rebuilt.candidates == ["n1", "n2"] and rebuilt.result_selectors == query.result_selectors


def test_query_node_seed_keywords_are_validated_at_build() -> None:
    pipeline = Pipeline("seed-query-bad")
    pipeline.add_node(Node("n1", fn=lambda: 1, tags=["A"], interval_settings=DAY))
    pipeline.add_query_node(QueryNode("q", tags=["A"], upstreams=["n9"]))
    with pytest.raises(UnknownUpstreamError, match=r"Query node 'q' names upstream 'n9'"):
        pipeline.build()
    other = Pipeline("seed-query-interval")
    other.add_node(Node("n1", fn=lambda: 1, tags=["A"], interval_settings=DAY))
    other.add_query_node(QueryNode("q", tags=["A"], interval_settings={"1h": {"period": 2}}))
    with pytest.raises(IntervalError, match=r"'q' runs at '1h' but its upstream 'n1'"):
        other.build()


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("qmtl.sdk", ["Analyzer", "Pipeline", "Node", "QueryNode"]),
        ("qmtl.sdk.node", ["SourceProcessor", "SourceNode"]),
        ("qmtl.sdk.visualization", ["visualize_pipeline"]),
    ],
)
def test_the_seed_module_paths_import(module: str, names: list[str]) -> None:
    imported = importlib.import_module(module)
    for name in names:
        assert getattr(imported, name) is not None


@pytest.mark.parametrize(
    ("module", "name", "distribution", "package"),
    [
        ("local", "LocalExecutionEngine", "qmtl-engine-local", "qmtl_engine_local"),
        ("parallel_engine", "ParallelExecutionEngine", "qmtl-engine-kafka", "qmtl_engine_kafka"),
        ("state_manager", "StateManager", "qmtl-state-redis", "qmtl_state_redis"),
        ("stream_processor", "StreamProcessor", "qmtl-engine-kafka", "qmtl_engine_kafka"),
    ],
)
def test_the_seed_engine_modules_import_and_name_what_to_install(
    monkeypatch: pytest.MonkeyPatch, module: str, name: str, distribution: str, package: str
) -> None:
    from qmtl.errors import UnknownBackendError

    imported = importlib.import_module(f"qmtl.sdk.execution.{module}")
    assert imported.__all__ == [name]
    monkeypatch.setitem(__import__("sys").modules, package, None)  # as if not installed
    with pytest.raises(UnknownBackendError, match=f"pip install {distribution}"):
        getattr(imported, name)
    with pytest.raises(AttributeError):
        imported.Nothing  # noqa: B018


def test_visualize_pipeline_draws_the_seed_mapping_and_refuses_matplotlib_options() -> None:
    from qmtl.errors import ConfigurationError
    from qmtl.sdk.visualization import visualize_pipeline

    nodes = {
        "a": Node("a", fn=lambda: 1),
        "b": Node("b", fn=lambda a: a, upstreams=["a"]),
    }
    text = visualize_pipeline(nodes, "seed", format="dot")
    assert '"a" -> "b";' in text
    with pytest.raises(ConfigurationError, match="figsize"):
        visualize_pipeline(nodes, "seed", figsize=(12, 8))  # type: ignore[call-arg]
