"""Query nodes: matching (SPEC §4.2, seed-behaviours 13.4 items 26-27), DAG membership, engines."""

from __future__ import annotations

import pytest

from qmtl import Node, Pipeline, QueryNode
from qmtl.errors import CycleError, PipelineValidationError, QmtlError
from qmtl.mock import MockExecutionEngine
from qmtl.models import IntervalEnum, IntervalSettings, QueryNodeDefinition
from qmtl.queries import resolve_queries


def source(name: str, value: object, tags: list[str], **settings: object) -> Node:
    return Node(name, fn=lambda: value, tags=tags, **settings)  # type: ignore[arg-type]


def matches(pipeline: Pipeline, query: str) -> list[str]:
    return list(pipeline.build().node(query).upstreams)


# -- construction and definitions (13.4 item 26) -------------------------------------------


def test_query_node_keeps_name_tags_interval_and_period() -> None:
    qn = QueryNode(name="q", tags=["FEATURE", "RAW"], interval="1d", period=7)
    assert qn.name == "q"
    assert qn.query_tags == ["FEATURE", "RAW"]
    assert qn.interval == "1d" and qn.interval is IntervalEnum.DAY
    assert qn.period == 7
    definition = qn.to_definition()
    assert definition["query_tags"] == ["FEATURE", "RAW"]
    assert definition["interval"] == "1d"
    assert definition["period"] == 7


def test_query_node_definition_round_trips() -> None:
    qn = QueryNode(
        "q",
        ["A"],
        match_mode="any",
        interval=IntervalEnum.HOUR,
        period="2d",
        result_selectors=[{"mode": "random", "sample_size": 2, "seed": 5}],
    )
    definition = qn.to_definition()
    model = QueryNodeDefinition.from_definition(definition)
    assert model.model_dump(mode="json", exclude_none=True) == definition
    rebuilt = QueryNode.from_definition(definition)
    assert rebuilt.to_definition() == definition
    assert rebuilt.period == 48  # "2d" on 1h is 48 intervals


def test_a_single_tag_string_is_one_tag_not_its_letters() -> None:
    assert QueryNode("q", "FEATURE").query_tags == ["FEATURE"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tags": []}, "at least one tag"),
        ({"tags": ["A"], "match_mode": "none"}, "match_mode"),
        ({"tags": ["A"], "period": "7d"}, "needs interval"),
        ({"tags": ["A"], "interval": "2d"}, "Unknown interval"),
        ({"tags": ["A"], "result_selectors": [{"mode": "top"}]}, "mode"),
    ],
)
def test_bad_query_nodes_are_validation_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(QmtlError, match=message):
        QueryNode("q", **kwargs)


# -- matching --------------------------------------------------------------------------------


def three_nodes() -> Pipeline:
    pipeline = Pipeline("tags")
    pipeline.add_node(source("n1", 1, ["A", "B"]))
    pipeline.add_node(source("n2", 2, ["A", "C"]))
    pipeline.add_node(source("n3", 3, ["B", "C"]))
    return pipeline


def test_tag_matching_is_and_by_default() -> None:
    """13.4 item 27: {A,B}, {A,C}, {B,C}: [A,B] matches only the first; [C] the other two."""
    pipeline = three_nodes()
    pipeline.add_query_node(QueryNode("ab", ["A", "B"]))
    pipeline.add_query_node(QueryNode("c", ["C"]))
    assert matches(pipeline, "ab") == ["n1"]
    assert matches(pipeline, "c") == ["n2", "n3"]
    assert pipeline.execute() == {
        "n1": 1,
        "n2": 2,
        "n3": 3,
        "ab": {"n1": 1},
        "c": {"n2": 2, "n3": 3},
    }


def test_match_mode_any_needs_one_tag() -> None:
    pipeline = three_nodes()
    pipeline.add_query_node(QueryNode("any", ["A", "Z"], match_mode="any"))
    pipeline.add_query_node(QueryNode("all", ["A", "Z"]))
    assert matches(pipeline, "any") == ["n1", "n2"]
    assert matches(pipeline, "all") == []
    assert pipeline.execute()["all"] == {}


def test_tags_compare_exactly() -> None:
    pipeline = Pipeline("exact")
    pipeline.add_node(source("upper", 1, ["FEATURE"]))
    pipeline.add_node(source("lower", 2, ["feature"]))
    pipeline.add_node(source("longer", 3, ["FEATURES"]))
    pipeline.add_query_node(QueryNode("q", ["FEATURE"]))
    assert pipeline.execute()["q"] == {"upper": 1}


def test_interval_filter_and_enum_equals_string() -> None:
    """13.4 item 29: n1 FEATURE@1d, n2 FEATURE@1h; FEATURE+1d returns only n1."""
    pipeline = Pipeline("intervals")
    pipeline.add_node(source("n1", 1, ["FEATURE"], interval_settings={"1d": {"period": 1}}))
    pipeline.add_node(source("n2", 2, ["FEATURE"], interval_settings={"1h": {"period": 1}}))
    pipeline.add_query_node(QueryNode("q", ["FEATURE"], interval="1d"))
    assert pipeline.execute()["q"] == {"n1": 1}
    by_enum = QueryNode("q", ["FEATURE"], interval=IntervalEnum.DAY)
    assert by_enum.to_definition() == QueryNode("q", ["FEATURE"], interval="1d").to_definition()
    pipeline.query_nodes["q"] = by_enum
    assert pipeline.execute()["q"] == {"n1": 1}


def test_period_filter() -> None:
    """13.4 item 30: FEATURE@1d period 7 and period 3; FEATURE+1d+7 returns only the first."""
    pipeline = Pipeline("periods")
    pipeline.add_node(source("n1", 1, ["FEATURE"], interval_settings={"1d": {"period": 7}}))
    pipeline.add_node(source("n2", 2, ["FEATURE"], interval_settings={"1d": {"period": 3}}))
    pipeline.add_query_node(QueryNode("q", ["FEATURE"], interval="1d", period=7))
    assert pipeline.execute()["q"] == {"n1": 1}
    pipeline.query_nodes["q"] = QueryNode("q", ["FEATURE"], interval="1d", period="7d")
    assert pipeline.execute()["q"] == {"n1": 1}


def test_interval_and_period_must_hold_on_the_same_entry() -> None:
    """1d with period 3 and 1h with period 7 is not "1d with period 7"."""
    pipeline = Pipeline("same-entry")
    pipeline.add_node(
        source(
            "mixed",
            1,
            ["F"],
            interval_settings={
                "1d": {"period": 3},
                "1h": {"period": 7},
            },
        )
    )
    pipeline.add_node(source("right", 2, ["F"], interval_settings={"1d": {"period": 7}}))
    pipeline.add_query_node(QueryNode("q", ["F"], interval="1d", period=7))
    pipeline.add_query_node(QueryNode("period_only", ["F"], period=7))
    assert matches(pipeline, "q") == ["right"]
    assert matches(pipeline, "period_only") == ["mixed", "right"]


def test_matching_uses_effective_settings_inherited_from_defaults() -> None:
    """13.4 item 31 (set-up): a node inheriting 1d from the pipeline defaults matches 1d."""
    pipeline = Pipeline(
        "defaults", default_intervals={"1d": IntervalSettings(interval=IntervalEnum.DAY, period=5)}
    )
    pipeline.add_node(source("inherits", 1, ["F"]))
    pipeline.add_node(source("hourly", 2, ["F"], interval_settings={"1h": {"period": 1}}))
    pipeline.add_query_node(QueryNode("q", ["F"], interval="1d", period=5))
    assert matches(pipeline, "q") == ["inherits", "hourly"]  # hourly inherits 1d/5 as well
    pipeline.add_query_node(QueryNode("h", ["F"], interval="1h"))
    assert matches(pipeline, "h") == ["hourly"]


def test_matches_are_resolved_at_build_from_an_index_not_per_query_scans(monkeypatch) -> None:
    pipeline = three_nodes()
    pipeline.add_query_node(QueryNode("q", ["C"], interval="1d"))

    def scan(self: QueryNode, node: Node) -> bool:
        raise AssertionError("resolution must not test nodes one by one")

    monkeypatch.setattr(QueryNode, "matches", scan)
    pipeline.build()
    assert pipeline.query_nodes["q"].upstreams == ["n2", "n3"]
    assert pipeline.to_definition()["query_nodes"][0]["matches"] == ["n2", "n3"]


def test_resolve_queries_agrees_with_a_naive_scan() -> None:
    nodes = {}
    for i in range(200):
        tags = [f"T{i % 7}", f"U{i % 5}"] + (["X"] if i % 11 == 0 else [])
        intervals = {"1d": {"period": 1 + i % 3}} if i % 2 else {"1h": {"period": 1 + i % 4}}
        node = source(f"n{i}", i, tags, interval_settings=intervals)
        node.stream_settings = node.declared_stream_settings
        nodes[node.name] = node
    queries = {
        "a": QueryNode("a", ["T1", "U2"]),
        "b": QueryNode("b", ["T3", "X"], match_mode="any"),
        "c": QueryNode("c", ["T2"], interval="1d", period=2),
        "d": QueryNode("d", ["U1"], period=3),
        "e": QueryNode("e", ["nope"]),
    }
    resolved = resolve_queries(nodes, queries)
    for name, query in queries.items():
        assert resolved[name] == [n for n, node in nodes.items() if query.matches(node)]


# -- a query node is part of the DAG ---------------------------------------------------------


def consumer_pipeline() -> Pipeline:
    pipeline = Pipeline("consumer")
    pipeline.add_node(source("aapl", 10.0, ["PRICE"]))
    pipeline.add_node(source("msft", 30.0, ["PRICE"]))
    pipeline.add_node(source("volume", 999, ["VOLUME"]))
    pipeline.add_query_node(QueryNode("prices", ["PRICE"]))
    pipeline.add_node(
        Node("mean", fn=lambda prices: sum(prices.values()) / len(prices), upstreams=["prices"])
    )
    pipeline.add_node(
        Node(
            "spread",
            fn=lambda prices, mean: max(prices.values()) - mean,
            upstreams=["prices", "mean"],
        )
    )
    return pipeline


def test_processing_nodes_consume_a_query_nodes_dict_on_the_local_engine() -> None:
    pipeline = consumer_pipeline()
    results = pipeline.execute(engine="local", ts=86_400 * 10)
    assert results["prices"] == {"aapl": 10.0, "msft": 30.0}
    assert results["mean"] == 20.0
    assert results["spread"] == 10.0
    order = pipeline.get_execution_order()
    assert order.index("prices") > max(order.index("aapl"), order.index("msft"))
    assert order.index("mean") > order.index("prices")
    assert pipeline.get_history("prices") == [
        {"timestamp": 86_400 * 11.0, "value": {"aapl": 10.0, "msft": 30.0}}
    ]


def test_processing_nodes_consume_a_query_nodes_dict_on_the_mock_engine() -> None:
    pipeline = consumer_pipeline()
    engine = MockExecutionEngine(mocks={"aapl": 50.0})
    results = pipeline.execute(engine=engine)
    assert results["prices"] == {"aapl": 50.0, "msft": 30.0}
    assert results["mean"] == 40.0
    assert engine.calls["mean"] == [{"prices": {"aapl": 50.0, "msft": 30.0}}]
    assert engine.execute_pipeline(pipeline)["spread"] == 10.0


def test_query_fn_is_applied_to_the_matched_dict() -> None:
    pipeline = three_nodes()
    pipeline.add_query_node(QueryNode("total", ["C"], fn=lambda found: sum(found.values())))
    pipeline.add_node(Node("double", fn=lambda total: total * 2, upstreams=["total"]))
    results = pipeline.execute()
    assert results["total"] == 5
    assert results["double"] == 10


def test_a_query_matching_its_own_reader_is_a_cycle() -> None:
    pipeline = Pipeline("loop")
    pipeline.add_node(source("a", 1, ["F"]))
    pipeline.add_query_node(QueryNode("q", ["F"]))
    pipeline.add_node(Node("b", fn=lambda q: len(q), upstreams=["q"], tags=["F"]))
    with pytest.raises(CycleError, match="q"):
        pipeline.build()


def test_query_node_id_follows_its_matches() -> None:
    pipeline = three_nodes()
    pipeline.add_query_node(QueryNode("q", ["C"]))
    first = pipeline.build().node("q").node_id
    pipeline.add_node(source("n4", 4, ["C"]))
    assert pipeline.build().node("q").node_id != first
    assert matches(pipeline, "q") == ["n2", "n3", "n4"]


def test_query_node_name_clashing_with_a_node_is_rejected() -> None:
    pipeline = three_nodes()
    with pytest.raises(PipelineValidationError, match="n1"):
        pipeline.add_query_node(QueryNode("n1", ["A"]))


def test_a_node_assigned_into_query_nodes_is_rejected_at_build() -> None:
    pipeline = three_nodes()
    pipeline.query_nodes["x"] = Node("x", fn=lambda: 1)  # type: ignore[assignment]
    with pytest.raises(PipelineValidationError, match=r"query_nodes\['x'\] is Node"):
        pipeline.build()


def test_a_tag_listed_twice_on_a_node_matches_it_once() -> None:
    pipeline = Pipeline("twice")
    pipeline.add_node(source("n", 1, ["A", "A"]))
    pipeline.add_query_node(QueryNode("q", ["A"]))
    pipeline.add_query_node(QueryNode("q2", ["A", "A"], match_mode="any"))
    assert matches(pipeline, "q") == ["n"]
    assert matches(pipeline, "q2") == ["n"]
