"""The Analyzer (issue 3, item 3; seed-behaviours 13.4 items 28-35)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from qmtl.analyzer import AnalyzerExecutionError
from qmtl.errors import UnknownNodeError
from qmtl.mock import MockExecutionEngine
from qmtl.sdk.analyzer import Analyzer
from qmtl.sdk.models import AnalyzerResult, IntervalEnum, IntervalSettings, QueryNodeResultSelector
from qmtl.sdk.node import Node, QueryNode
from qmtl.sdk.pipeline import Pipeline
from qmtl.state import MemoryStateBackend

SEED_README = Path(__file__).resolve().parents[2] / "docs" / "seed-README.ko.md"


def readme_block(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", SEED_README.read_text(encoding="utf-8"), re.DOTALL)
    found = [block for block in blocks if marker in block]
    assert len(found) == 1
    return found[0]


def test_the_seed_readme_analyzer_example_runs_as_written() -> None:
    code = readme_block('Analyzer(name="test-analyzer")')
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(SEED_README), "exec"), namespace)
    # n1 is the only node tagged A and B; it has the 1d interval the filter asks for, and
    # random(sample_size=1) of one candidate is that candidate.
    assert printed.getvalue().strip() == "{'q1': {'n1': 1}}"
    analyzer = namespace["analyzer"]
    assert namespace["results"] == {"q1": {"n1": 1}}
    assert analyzer.results_cache == {"q1": {"n1": 1}}
    [result] = analyzer.analyzer_results
    assert isinstance(result, AnalyzerResult)
    assert (
        result.analyzer_id,
        result.query_node,
        result.node,
        result.value,
        result.status,
        result.error,
    ) == ("test-analyzer", "q1", "n1", 1, "OK", None)
    assert result.generated_at.tzinfo is not None


def sources(analyzer: Pipeline, **nodes: tuple[object, list[str]]) -> None:
    for name, (value, tags) in nodes.items():
        analyzer.add_node(Node(name=name, fn=lambda value=value: value, tags=tags))


def test_results_for_a_tag_query() -> None:
    """13.4 item 28: FEATURE matches n1 and n3."""
    analyzer = Analyzer(name="a")
    sources(analyzer, n1=(10, ["FEATURE"]), n2=(20, ["RAW"]), n3=(30, ["FEATURE", "RAW"]))
    analyzer.add_query_node(
        QueryNode(
            name="q1", tags=["FEATURE"], result_selectors=[QueryNodeResultSelector(mode="list")]
        )
    )
    assert analyzer.execute(local=True) == {"q1": {"n1": 10, "n3": 30}}


def test_single_tag_query() -> None:
    """13.4 item 33."""
    analyzer = Analyzer(name="a")
    sources(analyzer, n1=(10, ["A"]), n2=(20, ["B"]))
    analyzer.add_query_node(QueryNode(name="qA", tags=["A"]))
    assert analyzer.execute() == {"qA": {"n1": 10}}


def test_interval_and_period_filters() -> None:
    """13.4 items 29 and 30."""
    analyzer = Analyzer(name="a")
    analyzer.add_node(
        Node("n1", fn=lambda: 1, tags=["FEATURE"], interval_settings={"1d": {"period": 7}})
    )
    analyzer.add_node(
        Node("n2", fn=lambda: 2, tags=["FEATURE"], interval_settings={"1h": {"period": 7}})
    )
    analyzer.add_node(
        Node("n3", fn=lambda: 3, tags=["FEATURE"], interval_settings={"1d": {"period": 3}})
    )
    analyzer.add_query_node(QueryNode("daily", ["FEATURE"], interval=IntervalEnum.DAY))
    analyzer.add_query_node(QueryNode("weekly", ["FEATURE"], interval="1d", period=7))
    assert analyzer.execute() == {"daily": {"n1": 1, "n3": 3}, "weekly": {"n1": 1}}


def test_random_sampling_over_candidates_including_one_inheriting_the_default() -> None:
    """13.4 item 31."""
    analyzer = Analyzer(
        name="a",
        default_intervals={IntervalEnum.DAY: IntervalSettings(interval=IntervalEnum.DAY, period=1)},
    )
    analyzer.add_node(
        Node("f1", fn=lambda: 1, tags=["FEATURE"], interval_settings={"1d": {"period": 1}})
    )
    analyzer.add_node(
        Node("f2", fn=lambda: 2, tags=["FEATURE"], interval_settings={"1d": {"period": 2}})
    )
    analyzer.add_node(Node("f3", fn=lambda: 3, tags=["FEATURE"]))  # inherits 1d
    analyzer.add_node(Node("raw", fn=lambda: 4, tags=["RAW"]))
    analyzer.add_query_node(
        QueryNode(
            "q",
            ["FEATURE"],
            interval="1d",
            result_selectors=[QueryNodeResultSelector(mode="random", sample_size=1)],
        )
    )
    for _ in range(10):
        [(name, value)] = analyzer.execute()["q"].items()
        assert name in {"f1", "f2", "f3"}
        assert value == int(name[1])


def test_analyzer_tags_and_definition() -> None:
    """13.4 item 32."""
    plain = Analyzer(name="plain")
    assert plain.tags == ["ANALYZER"]
    analyzer = Analyzer(name="corr", tags=["CORRELATION"])
    assert analyzer.tags == ["ANALYZER", "CORRELATION"]
    assert Analyzer(name="x", tags=["ANALYZER", "X"]).tags == ["ANALYZER", "X"]
    sources(analyzer, n1=(1, ["A"]))
    analyzer.add_query_node(QueryNode("q", ["A"]))
    definition = analyzer.to_definition()
    assert definition["type"] == "analyzer"
    assert "ANALYZER" in definition["tags"] and "CORRELATION" in definition["tags"]
    assert definition["query_nodes"][0]["matches"] == ["n1"]
    assert Pipeline.from_definition(definition).type == "analyzer"


def test_filter_on_exact_tags_with_kwargs_functions_and_inputs() -> None:
    """13.4 item 34: **kwargs nodes reading upstream 'input', inputs {"input": 1}."""
    analyzer = Analyzer(name="a")
    analyzer.add_node(Node("input", fn=lambda: 0))
    analyzer.add_node(Node("ab", fn=lambda **kw: kw["input"], upstreams=["input"], tags=["A", "B"]))
    analyzer.add_node(Node("a", fn=lambda **kw: kw["input"] + 100, upstreams=["input"], tags=["A"]))
    analyzer.add_query_node(QueryNode("q", ["A"]))
    selectors = {"q": [QueryNodeResultSelector(mode="filter", filter_meta={"tags": ["A", "B"]})]}
    results = analyzer.execute(inputs={"input": 1}, selectors=selectors)
    assert results == {"q": {"ab": 1}}
    assert 1 in results["q"].values()


def test_pipeline_with_default_intervals_and_add_node() -> None:
    """13.4 item 35."""
    pipeline = Pipeline(name="p", default_intervals={"1d": {"interval": "1d", "period": 1}})
    pipeline.add_node(Node("A", fn=lambda: 42))
    pipeline.add_node(Node("B", fn=lambda a: a * 2, upstreams=["A"]))
    assert pipeline.execute() == {"A": 42, "B": 84}


def test_processing_nodes_get_their_real_upstream_values() -> None:
    """The whole DAG runs through the engine in topological order before queries evaluate."""
    analyzer = Analyzer(name="a")
    analyzer.add_node(Node("price", fn=lambda: 100.0))
    analyzer.add_node(
        Node("ret", fn=lambda price: price / 50 - 1, upstreams=["price"], tags=["FEATURE"])
    )
    analyzer.add_node(Node("double", fn=lambda ret: ret * 2, upstreams=["ret"], tags=["FEATURE"]))
    analyzer.add_query_node(QueryNode("features", ["FEATURE"]))
    analyzer.add_node(
        Node(
            "score",
            fn=lambda features: sum(features.values()),
            upstreams=["features"],
            tags=["SCORE"],
        )
    )
    analyzer.add_query_node(QueryNode("scores", ["SCORE"]))
    assert analyzer.execute() == {"features": {"ret": 1.0, "double": 2.0}, "scores": {"score": 3.0}}
    assert analyzer.last_run is not None and analyzer.last_run.values["price"] == 100.0


def test_state_before_the_first_run() -> None:
    analyzer = Analyzer(name="a")
    assert analyzer.results_cache == {}
    assert analyzer.analyzer_results == []
    assert analyzer.last_run is None


def test_call_site_selectors_replace_the_nodes_own() -> None:
    analyzer = Analyzer(name="a")
    sources(analyzer, x=(1, ["F", "X"]), y=(2, ["F"]), z=(3, ["F"]))
    analyzer.add_query_node(
        QueryNode(
            "q",
            ["F"],
            result_selectors=[QueryNodeResultSelector(mode="filter", filter_meta={"tags": ["X"]})],
        )
    )
    assert analyzer.execute() == {"q": {"x": 1}}
    replaced = analyzer.execute(selectors={"q": [{"mode": "filter", "filter_meta": {"name": "z"}}]})
    assert replaced == {"q": {"z": 3}}
    assert analyzer.execute(selectors={"q": []}) == {"q": {"x": 1, "y": 2, "z": 3}}
    assert analyzer.execute() == {"q": {"x": 1}}  # the node's own selectors are unchanged
    with pytest.raises(UnknownNodeError, match="nope"):
        analyzer.execute(selectors={"nope": []})


def failing_analyzer() -> Analyzer:
    def broken() -> float:
        raise ZeroDivisionError("no volume today")

    analyzer = Analyzer(name="fails")
    analyzer.add_node(Node("good", fn=lambda: 5, tags=["F"]))
    analyzer.add_node(Node("bad", fn=broken, tags=["F"]))
    analyzer.add_node(Node("after_bad", fn=lambda bad: bad + 1, upstreams=["bad"], tags=["F"]))
    analyzer.add_node(Node("other", fn=lambda: 7, tags=["G"]))
    analyzer.add_query_node(QueryNode("f", ["F"]))
    analyzer.add_query_node(QueryNode("g", ["G"]))
    return analyzer


def test_a_failing_node_is_a_fail_result_and_other_branches_still_run() -> None:
    analyzer = failing_analyzer()
    results = analyzer.execute(ts=86_400 * 3)
    assert results == {"f": {"good": 5}, "g": {"other": 7}}
    by_node = {r.node: r for r in analyzer.analyzer_results}
    assert by_node["good"].status == "OK" and by_node["good"].value == 5
    assert by_node["bad"].status == "FAIL" and by_node["bad"].value is None
    assert by_node["bad"].error == "ZeroDivisionError: no volume today"
    assert by_node["after_bad"].status == "SKIPPED" and "bad" in (by_node["after_bad"].error or "")
    for result in analyzer.analyzer_results:  # never an error string where a value goes
        assert not isinstance(result.value, str)
    run = analyzer.last_run
    assert run is not None and run.status == "PARTIAL" and not run.ok
    assert run.failures == {"bad": "ZeroDivisionError: no volume today"}
    assert set(run.skipped) == {"after_bad"}
    assert analyzer.get_history("bad") == []  # nothing recorded for the failed node
    assert analyzer.get_interval_data("good") == [5]


def test_strict_raises_after_recording() -> None:
    analyzer = failing_analyzer()
    with pytest.raises(AnalyzerExecutionError, match="'bad'") as caught:
        analyzer.execute(strict=True)
    assert caught.value.run.failures == {"bad": "ZeroDivisionError: no volume today"}
    assert analyzer.results_cache == {"f": {"good": 5}, "g": {"other": 7}}
    assert analyzer.get_interval_data("f") == [{"good": 5}]


def test_a_failing_query_fn_is_reported_not_returned() -> None:
    analyzer = Analyzer(name="a")
    sources(analyzer, n=(1, ["F"]))
    analyzer.add_query_node(QueryNode("q", ["F"], fn=lambda found: found["missing"]))
    assert analyzer.execute() == {}
    [node_result, query_result] = analyzer.analyzer_results
    assert node_result.status == "OK" and node_result.value == 1
    assert query_result.node == "q" and query_result.status == "FAIL"
    assert "KeyError" in (query_result.error or "")


def test_results_are_recorded_in_the_state_backend_with_their_history() -> None:
    analyzer = failing_analyzer()
    state = MemoryStateBackend()
    day = 86_400
    for n in range(3):
        analyzer.execute(state=state, ts=day * n + 10)
    history = analyzer.get_history("f", interval="1d", count=10)
    assert [item["value"] for item in history] == [{"good": 5}] * 3
    assert [item["timestamp"] for item in history] == [3.0 * day, 2.0 * day, 1.0 * day]
    runs = analyzer.get_result_history("f", count=2)
    assert [run["timestamp"] for run in runs] == [3.0 * day, 2.0 * day]
    statuses = {r.node: r.status for r in runs[0]["results"]}
    assert statuses == {"good": "OK", "bad": "FAIL", "after_bad": "SKIPPED"}
    assert all(isinstance(r, AnalyzerResult) for r in runs[0]["results"])
    with pytest.raises(UnknownNodeError):
        analyzer.get_result_history("good")


def test_batch_selector_shows_in_results() -> None:
    analyzer = Analyzer(name="a")
    sources(analyzer, **{f"n{i}": (i, ["F"]) for i in range(5)})
    analyzer.add_query_node(
        QueryNode(
            "q", ["F"], result_selectors=[QueryNodeResultSelector(mode="batch", batch_size=2)]
        )
    )
    results = analyzer.execute()
    assert results["q"].batches == [["n0", "n1"], ["n2", "n3"], ["n4"]]
    assert [r.batch for r in analyzer.analyzer_results] == [0, 0, 1, 1, 2]


def test_runs_through_the_mock_engine() -> None:
    analyzer = Analyzer(name="a")
    analyzer.add_node(Node("price", fn=lambda: 1.0, tags=["P"]))
    analyzer.add_node(Node("twice", fn=lambda price: price * 2, upstreams=["price"], tags=["P"]))
    analyzer.add_query_node(QueryNode("q", ["P"]))
    engine = MockExecutionEngine(mocks={"price": 21.0})
    assert analyzer.execute(engine=engine) == {"q": {"price": 21.0, "twice": 42.0}}
    assert engine.calls["twice"] == [{"price": 21.0}]
    assert analyzer.execute(local=False, engine="mock") == {"q": {"price": 1.0, "twice": 2.0}}


def test_a_window_warming_up_is_skipped_not_failed() -> None:
    analyzer = Analyzer(name="warm")
    analyzer.add_node(Node("p", fn=lambda: 1.0, tags=["F"]))
    analyzer.add_node(
        Node("avg", fn=lambda p: sum(p) / len(p), upstreams=["p"], window=2, tags=["F"])
    )
    analyzer.add_query_node(QueryNode("q", ["F"]))
    day = 86_400
    assert analyzer.execute(ts=0) == {}  # the query waits for every match, as on any engine
    assert [(r.node, r.status) for r in analyzer.analyzer_results] == [
        ("p", "OK"),
        ("avg", "SKIPPED"),
    ]
    assert analyzer.last_run is not None and analyzer.last_run.status == "OK"
    assert analyzer.execute(ts=day) == {"q": {"p": 1.0, "avg": 1.0}}


def test_the_pipeline_execute_inputs_form_still_works() -> None:
    analyzer = Analyzer(name="a")
    analyzer.add_node(Node("x", fn=lambda: 0, tags=["F"]))
    analyzer.add_query_node(QueryNode("q", ["F"]))
    assert analyzer.execute({"x": 5}) == {"q": {"x": 5}}
    assert MockExecutionEngine().execute_pipeline(analyzer, inputs={"x": 6}) == {"q": {"x": 6}}
    with pytest.raises(ValueError, match="local=True/False"):
        analyzer.execute("yes")  # type: ignore[arg-type]


@pytest.mark.integration
def test_the_analyzer_gives_the_same_results_and_failures_on_kafka(kafka_bootstrap: str) -> None:
    pytest.importorskip("qmtl_engine_kafka", reason="qmtl-engine-kafka is not installed")
    import os

    def build() -> Analyzer:
        def broken(p: float) -> float:
            raise ValueError("boom")

        analyzer = Analyzer(name=f"analyzer-kafka-{os.urandom(3).hex()}")
        analyzer.add_node(Node("p", fn=lambda: 2.0, tags=["F"]))
        analyzer.add_node(Node("sq", fn=lambda p: p * p, upstreams=["p"], tags=["F"]))
        analyzer.add_node(Node("bad", fn=broken, upstreams=["p"], tags=["F"]))
        analyzer.add_query_node(QueryNode("q", ["F"]))
        analyzer.add_node(Node("tot", fn=lambda q: sum(q.values()), upstreams=["q"], tags=["G"]))
        analyzer.add_query_node(QueryNode("g", ["G"]))
        return analyzer

    local, kafka = build(), build()
    expected = {"q": {"p": 2.0, "sq": 4.0}, "g": {"tot": 6.0}}
    assert local.execute(ts=86_400) == expected
    assert (
        kafka.execute(
            local=False,
            engine="kafka",
            ts=86_400,
            timeout=90,
            engine_options={"bootstrap_servers": kafka_bootstrap},
        )
        == expected
    )

    def outcome(analyzer: Analyzer) -> list[tuple[str, str, str, object]]:
        return [(r.query_node, r.node, r.status, r.error) for r in analyzer.analyzer_results]

    assert outcome(kafka) == outcome(local)
    assert ("q", "bad", "FAIL", "ValueError: boom") in outcome(kafka)
    assert kafka.last_run is not None and kafka.last_run.failures == {"bad": "ValueError: boom"}
    assert kafka.get_interval_data("q") == [{"p": 2.0, "sq": 4.0}]
    assert kafka.get_history("bad") == []
