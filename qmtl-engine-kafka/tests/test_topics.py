"""Topic names: the seed's sanitising cases, the collision guard and Kafka's length limit."""

from __future__ import annotations

import pytest

from qmtl_engine_kafka import (
    MAX_TOPIC_LENGTH,
    TopicCollisionError,
    TopicNameError,
    dead_letter_topic,
    input_topic,
    output_topic,
    pipeline_topics,
    sanitize,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("my pipeline@2025", "my_pipeline_2025"), ("node#1", "node_1"), ("A.B-C", "A.B-C"),
     ("가격", "__"), ("a/b\\c:d", "a_b_c_d")],
)
def test_sanitize_replaces_characters_kafka_refuses(name: str, expected: str) -> None:
    assert sanitize(name) == expected


def test_input_and_output_topics_follow_the_documented_pattern() -> None:
    assert input_topic("my pipeline", "node1") == "qmtl.input.my_pipeline.node1"
    assert output_topic("my pipeline", "node1") == "qmtl.output.my_pipeline.node1"
    assert dead_letter_topic("my pipeline") == "qmtl.dlq.my_pipeline"


def test_pipeline_topics_names_every_topic_of_every_node() -> None:
    topics = pipeline_topics("p", ["A", "B"])
    assert topics.inputs == {"A": "qmtl.input.p.A", "B": "qmtl.input.p.B"}
    assert topics.outputs == {"A": "qmtl.output.p.A", "B": "qmtl.output.p.B"}
    assert sorted(topics.all()) == sorted(
        ["qmtl.input.p.A", "qmtl.input.p.B", "qmtl.output.p.A", "qmtl.output.p.B", "qmtl.dlq.p"]
    )


@pytest.mark.parametrize(("first", "second"), [("node#1", "node@1"), ("a.b", "a_b")])
def test_two_nodes_sharing_a_topic_is_an_error_naming_both(first: str, second: str) -> None:
    with pytest.raises(TopicCollisionError) as caught:
        pipeline_topics("p", [first, "other", second])
    message = str(caught.value)
    assert f"'{first}'" in message and f"'{second}'" in message
    assert "rename" in message


def test_a_topic_over_kafkas_length_limit_is_rejected_with_the_fix() -> None:
    fits = "n" * (MAX_TOPIC_LENGTH - len("qmtl.output.p."))
    assert len(output_topic("p", fits)) == MAX_TOPIC_LENGTH
    with pytest.raises(TopicNameError, match=r"250 characters long.*249.*shorten"):
        output_topic("p", fits + "x")


@pytest.mark.parametrize("name", ["", ".", ".."])
def test_a_name_with_nothing_usable_is_rejected(name: str) -> None:
    with pytest.raises(TopicNameError, match="cannot be part of a Kafka topic name"):
        input_topic("p", name)
