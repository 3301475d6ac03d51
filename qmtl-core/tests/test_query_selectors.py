"""Result selectors: list, filter, random, batch, applied in list order (issue 3, item 2)."""

from __future__ import annotations

import pytest

from qmtl import Node, Pipeline, QueryNode, QueryNodeResultSelector
from qmtl.errors import ModelValidationError, QmtlError
from qmtl.selectors import QueryResult


def universe() -> Pipeline:
    """Six FEATURE nodes with different intervals, periods and params, plus a RAW node."""
    pipeline = Pipeline("universe")
    specs = [
        ("f1", ["FEATURE", "MOMENTUM"], {"1d": {"period": 7}}),
        ("f2", ["FEATURE"], {"1d": {"period": 3}}),
        ("f3", ["FEATURE", "MOMENTUM"], {"1h": {"period": 24}}),
        ("f4", ["FEATURE"], {"1d": {"period": 7, "max_history": 5}, "1h": {"period": 2}}),
        ("f5", ["FEATURE", "VALUE"], {"1d": {"period": 1}}),
        ("f6", ["FEATURE"], {"1h": {"period": 1}}),
    ]
    for i, (name, tags, intervals) in enumerate(specs, start=1):
        pipeline.add_node(
            Node(
                name,
                fn=lambda scale, i=i: i * scale,
                tags=tags,
                interval_settings=intervals,
                scale=10,
            )
        )
    pipeline.add_node(Node("raw", fn=lambda: 0, tags=["RAW"]))
    return pipeline


def run_query(*selectors: object, fn: object = None, **query: object) -> object:
    pipeline = universe()
    pipeline.add_query_node(
        QueryNode(
            "q",
            query.pop("tags", ["FEATURE"]),
            fn=fn,  # type: ignore[arg-type]
            result_selectors=list(selectors),
            **query,
        )
    )  # type: ignore[arg-type]
    return pipeline.execute()["q"]


ALL = {"f1": 10, "f2": 20, "f3": 30, "f4": 40, "f5": 50, "f6": 60}


def test_list_keeps_every_match() -> None:
    assert run_query(QueryNodeResultSelector(mode="list")) == ALL
    assert run_query() == ALL


@pytest.mark.parametrize(
    ("filter_meta", "expected"),
    [
        ({"tags": ["MOMENTUM"]}, ["f1", "f3"]),
        ({"tags": "VALUE"}, ["f5"]),
        ({"tags": ["MOMENTUM", "FEATURE"]}, ["f1", "f3"]),
        ({"tags": ["momentum"]}, []),
        ({"stream_settings": {"intervals": {"1d": {"interval": "1d"}}}}, ["f1", "f2", "f4", "f5"]),
        ({"stream_settings": {"intervals": {"1d": {"period": 7}}}}, ["f1", "f4"]),
        ({"stream_settings": {"intervals": {"1d": {"period": "7d"}}}}, ["f1", "f4"]),
        ({"stream_settings": {"intervals": {"1d": {"period": 7, "max_history": 5}}}}, ["f4"]),
        ({"stream_settings": {"intervals": {"1d": {}, "1h": {}}}}, ["f4"]),
        ({"interval_settings": {"1h": {"period": 24}}}, ["f3"]),
        ({"interval": "1h", "period": 2}, ["f4"]),
        ({"interval": "1d", "period": 24}, []),
        ({"name": "f2"}, ["f2"]),
        ({"params": {"scale": 10}}, list(ALL)),
        ({"params": {"scale": 11}}, []),
        ({"type": "node"}, list(ALL)),
        ({"tags": ["MOMENTUM"], "stream_settings": {"intervals": {"1d": {}}}}, ["f1"]),
    ],
)
def test_filter_needs_every_key_to_hold(filter_meta: dict, expected: list[str]) -> None:
    selected = run_query(QueryNodeResultSelector(mode="filter", filter_meta=filter_meta))
    assert list(selected) == expected  # type: ignore[call-overload]


def test_filter_keys_that_are_not_node_attributes_are_rejected() -> None:
    with pytest.raises(ModelValidationError, match="colour"):
        QueryNodeResultSelector(mode="filter", filter_meta={"colour": "red"})


@pytest.mark.parametrize(
    "bad",
    [
        {"mode": "top"},
        {"mode": "random"},
        {"mode": "batch"},
        {"mode": "filter"},
        {"mode": "random", "sample_size": 0},
        {"mode": "list", "surprise": 1},
    ],
)
def test_invalid_selectors_are_validation_errors(bad: dict) -> None:
    with pytest.raises(QmtlError):
        QueryNodeResultSelector(**bad)
    with pytest.raises(QmtlError):
        QueryNode("q", ["A"], result_selectors=[bad])


def test_random_with_a_seed_is_reproducible_and_draws_from_the_candidates() -> None:
    draw = QueryNodeResultSelector(mode="random", sample_size=2, seed=42)
    first = run_query(draw)
    assert len(first) == 2  # type: ignore[arg-type]
    assert set(first) <= set(ALL)  # type: ignore[call-overload]
    assert all(run_query(draw) == first for _ in range(5))
    seeds = {
        tuple(run_query(QueryNodeResultSelector(mode="random", sample_size=2, seed=s)))  # type: ignore[call-overload]
        for s in range(30)
    }
    assert len(seeds) > 1  # the seed matters


def test_random_without_a_seed_draws_anew_at_each_evaluation() -> None:
    pipeline = universe()
    pipeline.add_query_node(
        QueryNode(
            "q",
            ["FEATURE"],
            result_selectors=[QueryNodeResultSelector(mode="random", sample_size=1)],
        )
    )
    seen = {next(iter(pipeline.execute()["q"])) for _ in range(60)}
    assert seen <= set(ALL)
    assert len(seen) > 1


def test_random_larger_than_the_candidates_keeps_them_all() -> None:
    assert run_query(QueryNodeResultSelector(mode="random", sample_size=50)) == ALL


def test_selectors_apply_in_list_order() -> None:
    momentum = QueryNodeResultSelector(mode="filter", filter_meta={"tags": ["MOMENTUM"]})
    two = QueryNodeResultSelector(mode="random", sample_size=2, seed=1)
    filtered_first = run_query(momentum, two)
    assert set(filtered_first) == {"f1", "f3"}  # type: ignore[call-overload]
    sampled_first = run_query(two, momentum)
    assert set(sampled_first) <= {"f1", "f3"}  # type: ignore[call-overload]
    assert len(sampled_first) < 2 or sampled_first == filtered_first  # type: ignore[arg-type]


def test_batch_exposes_its_batches_in_the_value() -> None:
    value = run_query(QueryNodeResultSelector(mode="batch", batch_size=4))
    assert isinstance(value, QueryResult)
    assert value == ALL
    assert value.batches == [["f1", "f2", "f3", "f4"], ["f5", "f6"]]
    assert value.batch_values() == [{"f1": 10, "f2": 20, "f3": 30, "f4": 40}, {"f5": 50, "f6": 60}]
    unbatched = run_query()
    assert unbatched.batches == [list(ALL)]  # type: ignore[attr-defined]


def test_batch_calls_fn_once_per_batch() -> None:
    calls: list[dict] = []

    def total(batch: dict) -> int:
        calls.append(batch)
        return sum(batch.values())

    value = run_query(
        QueryNodeResultSelector(mode="filter", filter_meta={"interval": "1d"}),
        QueryNodeResultSelector(mode="batch", batch_size=3),
        fn=total,
    )
    assert value == [10 + 20 + 40, 50]
    assert calls == [{"f1": 10, "f2": 20, "f4": 40}, {"f5": 50}]


def test_selectors_given_as_dicts_work_like_models() -> None:
    assert run_query({"mode": "filter", "filter_meta": {"tags": ["VALUE"]}}) == {"f5": 50}


def test_a_query_depends_on_all_matches_and_selection_narrows_its_value() -> None:
    """Selection is a view of the matches: the query depends on all of them."""
    pipeline = universe()
    pipeline.add_query_node(
        QueryNode(
            "q", ["FEATURE"], result_selectors=[{"mode": "filter", "filter_meta": {"name": "f1"}}]
        )
    )
    plan = pipeline.build()
    assert list(plan.node("q").upstreams) == list(ALL)
    assert pipeline.execute()["q"] == {"f1": 10}


def test_filter_accepts_settings_models() -> None:
    from qmtl import IntervalSettings, NodeStreamSettings

    wanted = NodeStreamSettings(intervals={"1d": IntervalSettings(interval="1d", period=7)})
    selected = run_query(
        QueryNodeResultSelector(mode="filter", filter_meta={"stream_settings": wanted})
    )
    assert list(selected) == ["f1", "f4"]  # type: ignore[call-overload]
