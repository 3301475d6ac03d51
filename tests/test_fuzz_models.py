"""Property-based fuzzing of the definition models and of the Kafka message envelope.

Contract: any JSON-ish input to ``model_validate`` of PipelineDefinition, NodeDefinition,
QueryNodeDefinition, IntervalSettings, NodeStreamSettings and QueryNodeResultSelector either
validates or raises :class:`~qmtl.errors.ModelValidationError` (never a bare TypeError,
KeyError, ...), and whatever validates survives ``model_dump(mode="json")`` -> JSON text ->
``model_validate`` unchanged. The envelope part feeds corrupted versions of real envelopes
(truncated, bytes flipped, fields swapped for junk) to ``decode``: an Envelope or an
EnvelopeError with a dead-letter reason, nothing else.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmtl.errors import ModelValidationError
from qmtl.models import (
    INTERVAL_SECONDS,
    IntervalSettings,
    NodeDefinition,
    NodeStreamSettings,
    PipelineDefinition,
    QueryNodeDefinition,
    QueryNodeResultSelector,
)

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

INTERVALS = list(INTERVAL_SECONDS)

# Anything json.loads could produce (plus non-finite floats, which Python's json accepts).
scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a valid value, sometimes junk: reaches the validators behind the type checks."""
    return st.one_of(valid, valid, valid, json_values)


periods = st.integers(-3, 400) | st.sampled_from(["7d", "90m", "2h", "1w", "abc", "0d", " 3 "])
interval_names = st.sampled_from(INTERVALS) | st.sampled_from(["2d", "1M", "", "1D", " 1d "])
interval_settings = st.fixed_dictionaries(
    {"interval": maybe(interval_names)},
    optional={"period": maybe(periods | st.none()), "max_history": maybe(st.integers(-2, 500))},
)
stream_settings = st.fixed_dictionaries(
    {
        "intervals": maybe(
            st.dictionaries(
                st.one_of(interval_names, interval_names, scalars),
                maybe(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "period": maybe(periods),
                            "max_history": maybe(st.integers(0, 50)),
                        },
                    )
                ),
                max_size=3,
            )
        )
    }
)
names = st.text(min_size=1, max_size=10)
name_lists = st.lists(names, max_size=3)
selectors = st.fixed_dictionaries(
    {"mode": maybe(st.sampled_from(["list", "filter", "random", "batch", "all"]))},
    optional={
        "filter_meta": maybe(
            st.dictionaries(
                st.sampled_from(["tags", "interval", "colour"]), json_values, max_size=2
            )
            | st.none()
        ),
        "sample_size": maybe(st.integers(-1, 5) | st.none()),
        "batch_size": maybe(st.integers(-1, 5) | st.none()),
        "seed": maybe(st.integers(0, 99) | st.none()),
    },
)
node_definitions = st.fixed_dictionaries(
    {"name": maybe(names), "node_id": maybe(names)},
    optional={
        "type": maybe(st.sampled_from(["node", "source"])),
        "tags": maybe(name_lists),
        "upstreams": maybe(name_lists),
        "key_params": maybe(name_lists),
        "params": maybe(st.dictionaries(st.text(max_size=5), json_values, max_size=3)),
        "window": maybe(st.integers(1, 10) | st.none()),
        "stream_settings": maybe(stream_settings | st.none()),
    },
)
query_definitions = st.fixed_dictionaries(
    {"name": maybe(names), "query_tags": maybe(name_lists)},
    optional={
        "node_id": maybe(names | st.none()),
        "match_mode": maybe(st.sampled_from(["all", "any"])),
        "interval": maybe(interval_names | st.none()),
        "period": maybe(st.integers(-1, 50) | st.none()),
        "matches": maybe(name_lists),
        "result_selectors": maybe(st.lists(selectors, max_size=2)),
    },
)
pipeline_definitions = st.fixed_dictionaries(
    {"name": maybe(names)},
    optional={
        "tags": maybe(name_lists),
        "nodes": maybe(st.lists(node_definitions, max_size=3)),
        "query_nodes": maybe(st.lists(query_definitions, max_size=2)),
        "default_intervals": maybe(stream_settings | st.none()),
        "metadata": maybe(st.dictionaries(st.text(max_size=5), json_values, max_size=3)),
    },
)

MODELS: list[tuple[type, st.SearchStrategy[Any]]] = [
    (IntervalSettings, interval_settings),
    (NodeStreamSettings, stream_settings),
    (QueryNodeResultSelector, selectors),
    (NodeDefinition, node_definitions),
    (QueryNodeDefinition, query_definitions),
    (PipelineDefinition, pipeline_definitions),
]


def _validate_or_reject(model: type, data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ModelValidationError as error:
        assert str(error).startswith(f"Invalid {model.__name__}"), str(error)
        return None


def _round_trips(model: type, instance: Any) -> None:
    dumped = instance.model_dump(mode="json")
    text = json.dumps(dumped)  # what a definition file or a message would hold
    again = model.model_validate(json.loads(text))
    # Compared as JSON text, so a NaN param (never equal to itself) is checked as well.
    assert json.dumps(again.model_dump(mode="json")) == text
    assert again.model_dump_json() == instance.model_dump_json()
    if "NaN" not in text:
        assert again == instance


@pytest.mark.parametrize("model,strategy", MODELS, ids=[m.__name__ for m, _ in MODELS])
def test_structured_input_validates_or_raises_model_validation_error(
    model: type, strategy: st.SearchStrategy[Any]
) -> None:
    @FUZZ
    @given(strategy)
    def check(data: Any) -> None:
        instance = _validate_or_reject(model, data)
        if instance is not None:
            _round_trips(model, instance)

    check()


@pytest.mark.parametrize("model", [m for m, _ in MODELS], ids=[m.__name__ for m, _ in MODELS])
def test_arbitrary_json_validates_or_raises_model_validation_error(model: type) -> None:
    @FUZZ
    @given(json_values | st.dictionaries(st.text(max_size=10), json_values, max_size=6))
    def check(data: Any) -> None:
        instance = _validate_or_reject(model, data)
        if instance is not None:
            _round_trips(model, instance)

    check()


@FUZZ
@given(pipeline_definitions)
def test_valid_pipeline_definitions_survive_exclude_none_dumps(data: dict[str, Any]) -> None:
    """``Pipeline.to_definition`` dumps with ``exclude_none``; that form must validate too."""
    instance = _validate_or_reject(PipelineDefinition, data)
    if instance is None:
        return
    compact = json.loads(json.dumps(instance.model_dump(mode="json", exclude_none=True)))
    again = PipelineDefinition.model_validate(compact)
    # Compared as JSON text, so NaN metadata (never equal to itself) is checked as well.
    assert again.model_dump_json() == instance.model_dump_json()


def test_a_real_pipeline_definition_round_trips() -> None:
    from qmtl.node import Node, QueryNode
    from qmtl.pipeline import Pipeline

    pipeline = Pipeline("fuzz", default_intervals={"1m": {"period": 5}}, owner="desk-7")
    pipeline.add_node(
        Node(
            "px",
            lambda: 1.0,
            tags=["price"],
            interval_settings={"1h": {"period": "2d", "max_history": 9}},
        )
    )
    pipeline.add_node(
        Node(
            "ma",
            lambda px, n: px * n,
            upstreams=["px"],
            tags=["sig"],
            n=3,
            key_params=["n"],
            window=2,
        )
    )
    pipeline.add_query_node(
        QueryNode(
            "prices",
            tags=["price"],
            interval="1h",
            period=48,
            result_selectors=[{"mode": "random", "sample_size": 1, "seed": 1}],
        )
    )
    definition = pipeline.to_definition()
    model = Pipeline.from_definition(json.loads(json.dumps(definition)))
    assert model.model_dump(mode="json", exclude_none=True) == definition
    assert model.nodes[0].stream_settings.intervals["1h"].period == 48  # '2d' at 1h


# -------------------------------------------------------------------------------- envelope


def _envelope_bytes(value: Any) -> bytes:
    from qmtl_engine_kafka.envelope import Envelope, encode

    return encode(
        Envelope(
            pipeline="p",
            node="n",
            ts=1_700_000_000.5,
            value=value,
            interval="1m",
            bucket=28_333_333,
            watermark=1_700_000_000.0,
            origin="n/0",
        )
    )


@FUZZ
@given(json_values, st.data())
def test_corrupted_envelopes_decode_or_raise_an_envelope_error(value: Any, data: Any) -> None:
    from qmtl_engine_kafka.envelope import Envelope, decode
    from qmtl_engine_kafka.errors import EnvelopeEncodeError, EnvelopeError

    try:
        payload = _envelope_bytes(value)
    except EnvelopeEncodeError:
        return
    corruption = data.draw(st.sampled_from(["truncate", "flip", "junk-field", "none"]))
    if corruption == "truncate":
        payload = payload[: data.draw(st.integers(0, max(0, len(payload) - 1)))]
    elif corruption == "flip":
        at = data.draw(st.integers(0, len(payload) - 1))
        payload = (
            payload[:at] + bytes([payload[at] ^ data.draw(st.integers(1, 255))]) + payload[at + 1 :]
        )
    elif corruption == "junk-field":
        import msgpack

        obj = msgpack.unpackb(payload)
        field = data.draw(st.sampled_from(sorted(obj)))
        # 'kind' gets only hashable junk until the known bug is fixed: a list or dict 'kind'
        # raises a bare TypeError (xfail case kafka-kind-unhashable in test_bad_input.py).
        obj[field] = data.draw(scalars if field == "kind" else json_values)
        try:
            payload = msgpack.packb(obj)
        except OverflowError:
            return  # an int beyond 64 bits: MessagePack cannot say it at all
    try:
        envelope = decode(payload)
    except EnvelopeError as error:
        assert error.reason in {
            "malformed",
            "undecodable",
            "truncated",
            "oversized",
            "unsupported_version",
        }
        return
    assert isinstance(envelope, Envelope)
    if corruption == "none":
        assert envelope.node == "n" and envelope.ts == 1_700_000_000.5
