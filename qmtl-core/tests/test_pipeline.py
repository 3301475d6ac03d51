"""Pipeline structure, default-interval merge and validation (seed 13.2, 13.3; SPEC §4)."""

from __future__ import annotations

import json

import pytest

from qmtl import IntervalEnum, IntervalSettings, Node, NodeStreamSettings, Pipeline, ProcessingNode
from qmtl.errors import (
    CycleError,
    DuplicateNodeError,
    IntervalError,
    MissingPeriodError,
    PipelineValidationError,
    QmtlError,
    UnknownUpstreamError,
)
from qmtl.models import PipelineDefinition

DAY, HOUR = IntervalEnum.DAY, IntervalEnum.HOUR


def _defaults() -> dict:
    return {
        DAY: IntervalSettings(interval=DAY, period=14),
        HOUR: IntervalSettings(interval=HOUR, period=7),
    }


def _node(name: str, period: int | None = None, interval=DAY) -> ProcessingNode:
    settings = (
        None
        if period is None and interval is None
        else NodeStreamSettings(
            intervals={interval: IntervalSettings(interval=interval, period=period)}
        )
    )
    return ProcessingNode(name=name, fn=lambda x: x, upstreams=["up"], stream_settings=settings)


def test_new_pipeline_is_empty() -> None:
    pipeline = Pipeline(name="p")
    assert pipeline.name == "p"
    assert pipeline.nodes == {} and pipeline.query_nodes == {}


def test_add_node_returns_it_and_get_node_finds_it() -> None:
    pipeline = Pipeline(name="p")
    node = Node(name="a", fn=lambda: 1)
    assert pipeline.add_node(node) is node
    found = pipeline.get_node("a")  # the pipeline's view of the user's node (qmtl.members)
    assert found == node and isinstance(found, Node) and found.node is node  # type: ignore[union-attr]
    assert pipeline.get_node("missing") is None


def test_duplicate_name_is_rejected() -> None:
    pipeline = Pipeline(name="p")
    pipeline.add_node(Node(name="a", fn=lambda: 1))
    with pytest.raises(DuplicateNodeError, match="'a'") as caught:
        pipeline.add_node(Node(name="a", fn=lambda: 2))
    assert isinstance(caught.value, ValueError)


def test_merge_takes_the_larger_period_and_inherits_missing_intervals() -> None:
    pipeline = Pipeline(name="p", default_intervals=_defaults())
    short = pipeline.add_node(_node("short", period=1))
    long = pipeline.add_node(_node("long", period=30))
    unset = pipeline.add_node(_node("unset", period=None))
    bare = pipeline.add_node(ProcessingNode(name="bare", fn=lambda x: x, upstreams=["up"]))
    assert short.stream_settings.intervals[DAY].period == 14
    assert long.stream_settings.intervals[DAY].period == 30
    assert unset.stream_settings.intervals[DAY].period == 14
    assert {i: s.period for i, s in bare.stream_settings.intervals.items()} == {DAY: 14, HOUR: 7}
    # A node declaring only 1d also gets the 1h entry of the defaults.
    assert short.stream_settings.intervals[HOUR].period == 7


def test_merge_keeps_intervals_only_on_the_node_and_never_mutates_inputs() -> None:
    defaults = _defaults()
    declared = NodeStreamSettings(intervals={"1m": IntervalSettings(interval="1m", period=90)})
    pipeline = Pipeline(name="p", default_intervals=defaults)
    node = pipeline.add_node(
        ProcessingNode(name="n", fn=lambda x: x, upstreams=["up"], stream_settings=declared)
    )
    assert node.stream_settings.intervals[IntervalEnum.MINUTE].period == 90
    assert set(node.stream_settings.intervals) == {IntervalEnum.MINUTE, DAY, HOUR}
    assert set(declared.intervals) == {IntervalEnum.MINUTE}
    assert defaults[DAY].period == 14
    assert node.declared_stream_settings is declared


def test_missing_period_after_merge_names_node_and_interval() -> None:
    pipeline = Pipeline(name="p")
    with pytest.raises(MissingPeriodError, match=r"Node 'n'.*'1h'") as caught:
        pipeline.add_node(_node("n", period=None, interval=HOUR))
    assert isinstance(caught.value, ValueError)


def test_node_without_intervals_anywhere_gets_the_builtin_default() -> None:
    pipeline = Pipeline(name="p")
    node = pipeline.add_node(Node(name="a", fn=lambda: 1))
    assert {i: s.period for i, s in node.stream_settings.intervals.items()} == {DAY: 1}


def test_dependencies_and_deterministic_topological_order() -> None:
    pipeline = Pipeline(name="p")
    pipeline.add_node(Node(name="C", fn=lambda a, b: a + b, upstreams=["A", "B"]))
    pipeline.add_node(Node(name="B", fn=lambda a: a, upstreams=["A"]))
    pipeline.add_node(Node(name="A", fn=lambda: 1))
    assert pipeline.dependencies() == {"A": set(), "B": {"A"}, "C": {"A", "B"}}
    assert pipeline.get_execution_order() == ["A", "B", "C"]

    wide = Pipeline(name="w")
    for name in ["z", "y", "x"]:
        wide.add_node(Node(name=name, fn=lambda k: 0, key_params=["k"], k=name))
    assert wide.get_execution_order() == ["z", "y", "x"]  # ties keep insertion order


def test_cycle_names_its_path() -> None:
    pipeline = Pipeline(name="p")
    pipeline.add_node(Node(name="A", fn=lambda c: c, upstreams=["C"]))
    pipeline.add_node(Node(name="B", fn=lambda a: a, upstreams=["A"]))
    pipeline.add_node(Node(name="C", fn=lambda b: b, upstreams=["B"]))
    with pytest.raises(CycleError) as caught:
        pipeline.get_execution_order()
    assert isinstance(caught.value, ValueError)
    message = str(caught.value)
    assert any(
        path in message for path in ("A -> B -> C -> A", "B -> C -> A -> B", "C -> A -> B -> C")
    )


def test_long_chain_needs_no_recursion() -> None:
    pipeline = Pipeline(name="chain")
    pipeline.add_node(Node(name="n0", fn=lambda: 0))
    for i in range(1, 5000):
        pipeline.add_node(Node(name=f"n{i}", fn=lambda x: x + 1, upstreams=[f"n{i - 1}"]))
    assert pipeline.execute(ts=0)["n4999"] == 4999


def test_unknown_upstream_names_node_and_upstream() -> None:
    pipeline = Pipeline(name="p")
    pipeline.add_node(Node(name="b", fn=lambda a: a, upstreams=["a"]))
    with pytest.raises(UnknownUpstreamError, match="Node 'b' names upstream 'a'"):
        pipeline.execute()


def test_upstream_must_provide_every_interval_of_the_node() -> None:
    pipeline = Pipeline(name="p")
    pipeline.add_node(Node(name="m", fn=lambda: 1, interval_settings={"1m": {"period": 60}}))
    pipeline.add_node(
        Node(name="h", fn=lambda m: m, upstreams=["m"], interval_settings={"1h": {"period": 24}})
    )
    with pytest.raises(IntervalError, match=r"Node 'h' runs at '1h'.*upstream 'm'.*add '1h'"):
        pipeline.build()


def test_direct_assignment_is_validated_at_build() -> None:
    pipeline = Pipeline(name="p")
    pipeline.nodes["x"] = Node(name="y", fn=lambda: 1)
    with pytest.raises(PipelineValidationError, match=r"nodes\['x'\] holds node 'y'"):
        pipeline.build()


def test_node_id_collisions_are_rejected() -> None:
    pipeline = Pipeline(name="p")
    pipeline.add_node(Node(name="a", fn=lambda: 1))
    pipeline.add_node(Node(name="b", fn=lambda: 1))
    with pytest.raises(PipelineValidationError, match="'a' and 'b' have the same node id"):
        pipeline.build()


def test_every_validation_error_is_a_qmtl_error() -> None:
    for cls in (
        CycleError,
        DuplicateNodeError,
        IntervalError,
        MissingPeriodError,
        UnknownUpstreamError,
    ):
        assert issubclass(cls, QmtlError)


def test_definition_is_plain_json_and_round_trips() -> None:
    pipeline = Pipeline(name="p", owner="desk-1")
    pipeline.add_node(Node(name="A", fn=lambda: 1, tags=["RAW"]))
    pipeline.add_node(Node(name="B", fn=lambda a, k: a + k, upstreams=["A"], key_params=["k"], k=2))
    definition = pipeline.to_definition()
    assert json.loads(json.dumps(definition)) == definition
    model = PipelineDefinition.from_definition(definition)
    assert [n.name for n in model.nodes] == ["A", "B"]
    assert model.nodes[1].upstreams == ["A"]
    assert model.nodes[1].params == {"k": 2}
    assert model.metadata == {"owner": "desk-1"}
    schema = PipelineDefinition.model_json_schema()
    assert schema["title"] == "PipelineDefinition" and "nodes" in schema["properties"]
