"""Nodes: calling convention, identity and definitions (seed behaviours 13.1)."""

from __future__ import annotations

import pytest

from qmtl import Node, Pipeline, ProcessingNode, SourceNode
from qmtl.errors import MissingInputError, PipelineValidationError, UnbindableFunctionError
from qmtl.models import NodeDefinition


class Fetcher:
    def fetch(self) -> int:
        return 7


def test_source_node_fields() -> None:
    source = Fetcher()
    node = Node(
        name="src", fn=source.fetch, interval_settings={"1d": {"interval": "1d", "period": 1}}
    )
    assert node.name == "src"
    assert node.tags == []
    assert node.upstreams == []
    assert node.key_params == []
    # Documented choice: source ids are content hashes too, not the name.
    assert len(node.node_id) == 64 and node.node_id != "src"


def test_processing_node_keeps_upstream_order() -> None:
    node = ProcessingNode(name="p", fn=lambda a, b: a + b, upstreams=["upstream1", "upstream2"])
    assert node.upstreams == ["upstream1", "upstream2"]


def multiply(value: int, factor: int = 2) -> int:
    return value * factor


def test_same_computation_same_id_whatever_the_name() -> None:
    a = Node(name="first", fn=multiply, upstreams=["u"], key_params=["factor"], factor=3)
    b = Node(name="second", fn=multiply, upstreams=["u"], key_params=["factor"], factor=3)
    c = Node(name="third", fn=multiply, upstreams=["u"], key_params=["factor"], factor=4)
    assert a.node_id == b.node_id
    assert a.node_id != c.node_id


def test_key_param_order_does_not_matter() -> None:
    def f(x, a, b):
        return x

    one = Node(name="n", fn=f, upstreams=["x"], key_params=["a", "b"], a=10, b=20)
    two = Node(name="n", fn=f, upstreams=["x"], key_params=["b", "a"], a=10, b=20)
    assert one.node_id == two.node_id


def test_code_change_changes_the_id() -> None:
    assert (
        Node(name="n", fn=lambda x: x + 1, upstreams=["u"]).node_id
        != Node(name="n", fn=lambda x: x + 2, upstreams=["u"]).node_id
    )


def _closure(k: int):
    return lambda x: x * k


def test_closure_values_and_defaults_enter_the_id() -> None:
    assert (
        Node(name="n", fn=_closure(2), upstreams=["u"]).node_id
        == Node(name="m", fn=_closure(2), upstreams=["u"]).node_id
    )
    assert (
        Node(name="n", fn=_closure(2), upstreams=["u"]).node_id
        != Node(name="n", fn=_closure(3), upstreams=["u"]).node_id
    )
    assert (
        Node(name="n", fn=lambda x, k=1: x, upstreams=["u"]).node_id
        != Node(name="n", fn=lambda x, k=2: x, upstreams=["u"]).node_id
    )


def test_upstream_and_settings_enter_the_id_inside_a_pipeline() -> None:
    def build(source_value: int, period: int) -> Pipeline:
        pipeline = Pipeline(name="p")
        pipeline.add_node(Node(name="a", fn=lambda: source_value))
        pipeline.add_node(
            Node(
                name="b",
                fn=lambda a: a,
                upstreams=["a"],
                interval_settings={"1d": {"period": period}},
            )
        )
        pipeline.build()
        return pipeline

    base = build(1, 5).nodes["b"].node_id
    assert build(1, 5).nodes["b"].node_id == base
    assert build(2, 5).nodes["b"].node_id != base  # the upstream changed
    assert build(1, 6).nodes["b"].node_id != base  # the settings changed


def add(value: int) -> int:
    return value + 1


def test_single_upstream_is_passed_positionally() -> None:
    assert Node(name="n", fn=add, upstreams=["upstream"]).execute({"upstream": 5}) == 6


def test_params_flow_into_the_call() -> None:
    node = Node(name="n", fn=multiply, upstreams=["value"], key_params=["factor"], factor=3)
    assert node.execute({"value": 5}) == 15


def test_two_upstreams_by_name_and_kwargs_functions() -> None:
    assert (
        Node(name="c", fn=lambda a, b: a + b, upstreams=["a", "b"]).execute({"a": 3, "b": 4}) == 7
    )

    def lengths(**values):
        return sum(len(v) if isinstance(v, str) else v for v in values.values())

    node = Node(name="k", fn=lengths, upstreams=["A", "B", "C"])
    assert node.call_style == "keyword"
    assert node.execute({"A": 5, "B": "text", "C": 10}) == 19


def test_by_name_when_parameters_are_named_after_upstreams_in_another_order() -> None:
    node = Node(name="d", fn=lambda b, a: a - b, upstreams=["a", "b"])
    assert node.execute({"a": 10, "b": 3}) == 7


def test_missing_upstream_input_is_a_value_error() -> None:
    with pytest.raises(MissingInputError, match="upstream") as caught:
        Node(name="n", fn=add, upstreams=["upstream"]).execute({})
    assert isinstance(caught.value, ValueError)


def test_unbindable_function_fails_at_construction_naming_the_node() -> None:
    with pytest.raises(UnbindableFunctionError, match="Node 'bad'"):
        Node(name="bad", fn=lambda: 1, upstreams=["a", "b"])
    with pytest.raises(UnbindableFunctionError, match="'oops'"):
        Node(name="bad2", fn=lambda x: x, upstreams=["a"], oops=1)


def test_processing_node_needs_an_upstream() -> None:
    with pytest.raises(PipelineValidationError, match="ProcessingNode 'p'"):
        ProcessingNode(name="p", fn=lambda: 1)


def test_source_node_rejects_upstreams() -> None:
    with pytest.raises(PipelineValidationError, match="cannot have upstreams"):
        SourceNode(name="s", source=lambda: 1, upstreams=["x"])


def test_node_definition_round_trips_without_the_function() -> None:
    node = Node(name="A", fn=lambda: 1, tags=["RAW"], upstreams=[])
    definition = node.to_definition()
    assert {"name", "tags", "upstreams", "node_id"} <= set(definition)
    assert "fn" not in definition
    model = NodeDefinition.from_definition(definition)
    assert (model.name, model.tags, model.upstreams, model.node_id) == (
        "A",
        ["RAW"],
        [],
        node.node_id,
    )
