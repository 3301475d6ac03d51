"""Fast builds stay exact builds: what the build remembers and indexes never changes a result.

- The tag index a pipeline keeps up to date gives what a scan of the nodes gives, whatever
  happened to ``pipeline.nodes`` and to the nodes' tags (a differential test).
- Node ids are the ones earlier versions computed (stored history is keyed by them).
- Settings validated once per content still reject what they rejected.
"""

from __future__ import annotations

import gc
import json
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmtl import Node, Pipeline, QueryNode
from qmtl.errors import CycleError, ModelValidationError
from qmtl.identity import stable_repr
from qmtl.members import raw_members
from qmtl.queries import resolve_queries

TAGS = ["A", "B", "C", "D"]
CHANGES = ["add", "assign", "replace", "del", "pop", "popitem", "update", "setdefault"]
QUERIES = [
    QueryNode("qa", ["A"]),
    QueryNode("qab", ["A", "B"]),
    QueryNode("qany", ["C", "D"], match_mode="any"),
    QueryNode("qd1", ["B"], interval="1d", period=3),
    QueryNode("qh", ["A", "C"], interval="1h"),
    QueryNode("qp", ["D"], period=2),
]
OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from([*CHANGES, "retag", "clear"]),
        st.integers(0, 12),
        st.lists(st.sampled_from(TAGS), max_size=3),
        st.sampled_from([None, {"1d": {"period": 3}}, {"1h": {"period": 2}, "1d": {"period": 1}}]),
    ),
    max_size=40,
)


def node(i: int, tags: list[str], intervals: Any) -> Node:
    return Node(f"n{i}", fn=lambda i=i: i, tags=tags, interval_settings=intervals)


def apply(pipeline: Pipeline, operation: tuple[str, int, list[str], Any]) -> None:
    kind, i, tags, intervals = operation
    name, nodes = f"n{i}", pipeline.nodes
    fresh = node(i, tags, intervals)
    if kind == "add" and name not in nodes:
        pipeline.add_node(fresh)
    elif kind in ("assign", "replace"):
        nodes[name] = fresh
    elif kind == "del" and name in nodes:
        del nodes[name]
    elif kind == "pop":
        nodes.pop(name, None)
    elif kind == "popitem" and nodes:
        nodes.popitem()
    elif kind == "update":
        nodes.update({name: fresh})
    elif kind == "setdefault":
        nodes.setdefault(name, fresh)
    elif kind == "retag" and name in nodes:
        nodes[name].tags[:] = tags  # the node's own list, edited in place
    elif kind == "clear" and i == 0:
        nodes.clear()


@settings(max_examples=200, deadline=None)
@given(OPERATIONS)
def test_the_kept_index_resolves_like_a_scan_whatever_happened(
    operations: list[tuple[str, int, list[str], Any]],
) -> None:
    pipeline = Pipeline("index", default_intervals={"1d": {"interval": "1d", "period": 1}})
    for operation in operations:
        apply(pipeline, operation)
        queries = {q.name: q for q in QUERIES}
        nodes = raw_members(pipeline.nodes)
        settings = {name: pipeline.settings_of(name) for name in nodes}  # what the build uses
        resolved = resolve_queries(nodes, queries, settings, pipeline.tag_index)
        for name, query in queries.items():  # the scan reads each node as the pipeline sees it
            assert resolved[name] == [
                n for n, candidate in pipeline.nodes.items() if query.matches(candidate)
            ]


def test_a_query_sees_tags_edited_after_the_node_was_added() -> None:
    pipeline = Pipeline("retag")
    pipeline.add_node(Node("a", fn=lambda: 1, tags=["RAW"]))
    pipeline.add_node(Node("b", fn=lambda: 2, tags=["RAW"]))
    pipeline.nodes["b"].tags.append("PICK")
    pipeline.add_query_node(QueryNode("picked", ["PICK"]))
    assert pipeline.execute(ts=0)["picked"] == {"b": 2}


def test_an_index_given_other_nodes_or_another_order_follows_them() -> None:
    pipeline = Pipeline("order")
    for i in range(6):
        pipeline.add_node(node(i, ["A", "B"] if i % 2 else ["A"], None))
    queries = {q.name: q for q in QUERIES[:2]}
    backwards = dict(reversed(list(raw_members(pipeline.nodes).items())))
    assert resolve_queries(backwards, queries, None, pipeline.tag_index) == {
        "qa": ["n5", "n4", "n3", "n2", "n1", "n0"],
        "qab": ["n5", "n3", "n1"],
    }
    fewer = {name: n for name, n in raw_members(pipeline.nodes).items() if name != "n3"}
    assert resolve_queries(fewer, queries, None, pipeline.tag_index)["qab"] == ["n1", "n5"]


# -- ids ------------------------------------------------------------------------------------
class Fixed(Node):
    """A node whose function fingerprint is a constant: a function's own fingerprint includes
    its bytecode, which differs between Python versions; everything else in the id does not."""

    def fingerprint(self) -> str:
        return f"fixed:{self.name}"


def golden_pipeline() -> Pipeline:
    pipeline = Pipeline("golden", default_intervals={"1d": {"interval": "1d", "period": 7}})
    hourly = {"1h": {"period": 24}}
    pipeline.add_node(Fixed("price", fn=lambda: 100.0, tags=["RAW"], interval_settings=hourly))
    pipeline.add_node(
        Fixed("scaled", fn=lambda price, factor: price * factor, upstreams=["price"], factor=3.0)
    )
    pipeline.add_node(
        Fixed(
            "odd",
            fn=lambda price, k: (price, k),
            upstreams=["price"],
            key_params=["k"],
            k=[None, True, -0.0, math.inf, float("nan"), "é\u2028", 10**30, (1, "x")],
            interval_settings={"1h": {"period": 24}, "1d": {"period": 2, "max_history": 5}},
        )
    )
    pipeline.add_node(Fixed("avg", fn=lambda scaled: sum(scaled), upstreams=["scaled"], window=3))
    return pipeline


def test_node_ids_are_the_ones_stored_history_is_keyed_by() -> None:
    """Ids as computed before builds were made fast (stored history is keyed by them)."""
    ids = {n.name: n.node_id for n in golden_pipeline().build().nodes}
    assert ids == GOLDEN


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(),
    )
)
def test_scalars_are_written_as_json_writes_them(value: Any) -> None:
    assert stable_repr(value) == json.dumps(value)


# -- settings and the collector ---------------------------------------------------------------
def test_settings_remembered_by_content_still_reject_what_they_rejected() -> None:
    Node("one", fn=lambda: 1, interval_settings={"1d": {"period": 1}})  # valid, remembered
    with pytest.raises(ModelValidationError, match="Node 'true'"):
        Node("true", fn=lambda: 1, interval_settings={"1d": {"period": True}})  # True == 1
    with pytest.raises(ModelValidationError, match="Node 'zero'"):
        Node("zero", fn=lambda: 1, interval_settings={"1d": {"period": 0}})
    with pytest.raises(ModelValidationError, match="Node 'again'"):
        Node("again", fn=lambda: 1, interval_settings={"1d": {"period": 0}})


def test_the_collector_is_running_after_a_build_whatever_its_outcome() -> None:
    pipeline = Pipeline("cycle")
    pipeline.add_node(Node("a", fn=lambda b: b, upstreams=["b"]))
    pipeline.add_node(Node("b", fn=lambda a: a, upstreams=["a"]))
    with pytest.raises(CycleError):
        pipeline.build()
    assert gc.isenabled()
    gc.disable()
    try:
        golden_pipeline().build()
        assert not gc.isenabled()  # a caller who turned it off keeps it off
    finally:
        gc.enable()


def test_many_nodes_with_equal_settings_each_have_their_own_history() -> None:
    rng = random.Random(3)
    pipeline = Pipeline("many")
    for i in range(300):
        period = rng.choice([1, 2])
        pipeline.add_node(
            Node(f"n{i}", fn=lambda i=i: i, interval_settings={"1d": {"period": period}})
        )
    results = pipeline.execute(ts=0)
    assert results == {f"n{i}": i for i in range(300)}
    assert [pipeline.get_interval_data(f"n{i}") for i in (0, 299)] == [[0], [299]]


GOLDEN: dict[str, str] = {  # computed by qmtl at commit 556336b, before issue 16
    "price": "6e9ddbf23fd40eb35e23c276ed6e13407a1912e4598e130203b3b0e33de84afb",
    "scaled": "1fea48a3308ff98fc8fab98f048f506f77d6d927b879f2e91c7203376bdc41b8",
    "odd": "a63cef6560f2e0c633453528b58a82e6de9db31675690732f4abf78ddc2e957c",
    "avg": "547d76ea3b8a07c709f895f27cbc954977e1dfcf17a83b68f6dd765ee817248a",
}
