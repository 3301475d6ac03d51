"""Topic names: the seed's sanitising cases, the collision guard and Kafka's length limit;
creation waiting until every partition's leader answers (with a stand-in admin client)."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest

from qmtl_engine_kafka import (
    MAX_TOPIC_LENGTH,
    KafkaEngineSettings,
    TopicCollisionError,
    TopicError,
    TopicManager,
    TopicNameError,
    dead_letter_topic,
    input_topic,
    output_topic,
    pipeline_topics,
    sanitize,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("my pipeline@2025", "my_pipeline_2025"),
        ("node#1", "node_1"),
        ("A.B-C", "A.B-C"),
        ("가격", "__"),
        ("a/b\\c:d", "a_b_c_d"),
    ],
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


class _Admin:
    """A broker that lists a new topic with a leader before that leader serves requests:
    ListOffsets answers NOT_LEADER_FOR_PARTITION ``not_serving`` times, then succeeds."""

    def __init__(self, not_serving: int, error: str = "NOT_LEADER_FOR_PARTITION") -> None:
        self.not_serving = not_serving
        self.error = error
        self.probes = 0
        self.created: list[str] = []

    def list_topics(self, timeout: float) -> Any:
        partition = SimpleNamespace(leader=1, error=None)
        topics = {t: SimpleNamespace(error=None, partitions={0: partition}) for t in self.created}
        return SimpleNamespace(topics=topics, brokers={1: object()})

    def create_topics(self, new_topics: list[Any], **_: Any) -> dict[str, Future[None]]:
        futures = {}
        for topic in new_topics:
            self.created.append(topic.topic)
            futures[topic.topic] = Future()
            futures[topic.topic].set_result(None)
        return futures

    def list_offsets(self, requests: dict[Any, Any], **_: Any) -> dict[Any, Future[Any]]:
        from confluent_kafka import KafkaError, KafkaException

        self.probes += 1
        futures: dict[Any, Future[Any]] = {}
        for tp in requests:
            futures[tp] = Future()
            if self.probes <= self.not_serving:
                code = getattr(KafkaError, self.error)
                futures[tp].set_exception(KafkaException(KafkaError(code)))
            else:
                futures[tp].set_result(SimpleNamespace(offset=0))
        return futures


def _manager(admin: _Admin, attempts: int = 6) -> TopicManager:
    settings = KafkaEngineSettings(topic_create_attempts=attempts, topic_create_backoff_s=0.01)
    return TopicManager(settings, admin=admin)


def test_a_new_topic_is_ready_only_once_its_leader_answers() -> None:
    admin = _Admin(not_serving=2)
    assert _manager(admin).create_topics(["qmtl.output.p.n"]) == {"qmtl.output.p.n": True}
    assert admin.created == ["qmtl.output.p.n"]
    assert admin.probes == 3  # two NOT_LEADER_FOR_PARTITION answers, then ready


def test_a_leader_that_never_answers_is_a_topic_error_naming_the_topic() -> None:
    admin = _Admin(not_serving=100)
    with pytest.raises(TopicError, match=r"qmtl\.output\.p\.n.*NOT_LEADER_FOR_PARTITION"):
        _manager(admin, attempts=3).create_topics(["qmtl.output.p.n"])


def test_a_probe_error_waiting_cannot_cure_leaves_the_listed_leader_trusted() -> None:
    admin = _Admin(not_serving=100, error="TOPIC_AUTHORIZATION_FAILED")
    assert _manager(admin).create_topics(["qmtl.output.p.n"]) == {"qmtl.output.p.n": True}
    assert admin.probes == 1
