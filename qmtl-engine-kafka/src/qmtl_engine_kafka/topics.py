"""Topic names of a pipeline and their idempotent creation on the broker.

Names: ``qmtl.input.{pipeline}.{node}`` feeds a source node from outside,
``qmtl.output.{pipeline}.{node}`` carries every event a node emits,
``qmtl.merge.{pipeline}.{node}`` a multi-partition source's per-partition buckets, and
``qmtl.dlq.{pipeline}`` holds the pipeline's dead letters; a node's consumer group is
``qmtl.{pipeline}.{node}``, and :func:`pipeline_group` names the pipeline-wide group of the
sharded engine's workers (``qmtl.{pipeline}``). Pipeline and node names are sanitised
(characters outside ``[A-Za-z0-9._-]`` become ``_``). Two nodes whose names would share a topic,
or a name longer than Kafka's 249 characters, are rejected with both names and the fix.
Kafka also refuses two topics that differ only by ``.`` versus ``_`` (their metric names
collide), so the collision guard compares names with that folding too.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from qmtl.errors import QmtlError
from qmtl.logs import get_logger
from qmtl_engine_kafka._client import admin_client, kafka_module
from qmtl_engine_kafka.errors import (
    BrokerUnavailableError,
    TopicCollisionError,
    TopicError,
    TopicNameError,
)
from qmtl_engine_kafka.settings import KafkaEngineSettings

__all__ = [
    "MAX_TOPIC_LENGTH",
    "PipelineTopics",
    "TopicManager",
    "dead_letter_topic",
    "group_id",
    "input_topic",
    "merge_topic",
    "output_topic",
    "pipeline_group",
    "pipeline_topics",
    "sanitize",
    "topic_partitions",
]

log = get_logger(__name__)

MAX_TOPIC_LENGTH = 249
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def sanitize(name: str) -> str:
    """Replace every character Kafka does not allow in a topic name with ``_``."""
    return _UNSAFE.sub("_", str(name))


def _checked(topic: str, what: str) -> str:
    if len(topic) > MAX_TOPIC_LENGTH:
        raise TopicNameError(
            f"The Kafka topic for {what} would be {len(topic)} characters long, over Kafka's "
            f"limit of {MAX_TOPIC_LENGTH}: '{topic[:60]}...'; shorten the pipeline or node name"
        )
    return topic


def _part(name: str, what: str) -> str:
    part = sanitize(name)
    if part in ("", ".", ".."):
        raise TopicNameError(
            f"The {what} name {name!r} cannot be part of a Kafka topic name; "
            "give it at least one letter or digit"
        )
    return part


def input_topic(pipeline: str, node: str) -> str:
    """``qmtl.input.{pipeline}.{node}``, sanitised: where external producers feed a source."""
    topic = f"qmtl.input.{_part(pipeline, 'pipeline')}.{_part(node, 'node')}"
    return _checked(topic, f"node '{node}' of pipeline '{pipeline}'")


def output_topic(pipeline: str, node: str) -> str:
    """``qmtl.output.{pipeline}.{node}``, sanitised: every event the node emits."""
    topic = f"qmtl.output.{_part(pipeline, 'pipeline')}.{_part(node, 'node')}"
    return _checked(topic, f"node '{node}' of pipeline '{pipeline}'")


def dead_letter_topic(pipeline: str) -> str:
    """``qmtl.dlq.{pipeline}``, sanitised: messages of the pipeline that could not be used."""
    return _checked(f"qmtl.dlq.{_part(pipeline, 'pipeline')}", f"pipeline '{pipeline}'")


def merge_topic(pipeline: str, node: str) -> str:
    """``qmtl.merge.{pipeline}.{node}``: a multi-partition source's per-partition buckets."""
    topic = f"qmtl.merge.{_part(pipeline, 'pipeline')}.{_part(node, 'node')}"
    return _checked(topic, f"node '{node}' of pipeline '{pipeline}'")


def group_id(pipeline: str, node: str) -> str:
    """The consumer group of a node: ``qmtl.{pipeline}.{node}`` (sanitised)."""
    return f"qmtl.{sanitize(pipeline)}.{sanitize(node)}"


def pipeline_group(pipeline: str) -> str:
    """The one consumer group every worker of ``pipeline`` joins: ``qmtl.{pipeline}``
    (sanitised). The sharded engine's workers consume as this group, and qmtl-deploy's KEDA
    trigger reads the group's lag by this name, so the two cannot drift apart."""
    return _checked(f"qmtl.{_part(pipeline, 'pipeline')}", f"pipeline '{pipeline}'")


@dataclass(frozen=True)
class PipelineTopics:
    """Every topic of one pipeline: per node input and output, plus the dead-letter topic."""

    pipeline: str
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]
    dead_letter: str

    def all(self) -> list[str]:
        return [*self.inputs.values(), *self.outputs.values(), self.dead_letter]


def pipeline_topics(pipeline: str, nodes: Iterable[str]) -> PipelineTopics:
    """Name all topics of ``pipeline``; two nodes that would share a topic is an error."""
    inputs: dict[str, str] = {}
    outputs: dict[str, str] = {}
    seen: dict[str, str] = {}  # folded node part -> node name
    for node in nodes:
        if node in inputs:
            continue
        inputs[node] = input_topic(pipeline, node)
        outputs[node] = output_topic(pipeline, node)
        folded = sanitize(node).replace(".", "_")
        other = seen.setdefault(folded, node)
        if other != node:
            raise TopicCollisionError(
                f"Nodes '{other}' and '{node}' of pipeline '{pipeline}' map to the same Kafka "
                f"topic ('{outputs[node]}' vs '{output_topic(pipeline, other)}'; Kafka treats "
                "'.' and '_' alike and QMTL replaces characters outside [A-Za-z0-9._-] with "
                "'_'); rename one of them"
            )
    return PipelineTopics(pipeline, inputs, outputs, dead_letter_topic(pipeline))


# Errors the broker gives while it is busy electing or propagating metadata: worth retrying.
_RETRIABLE_CODES = {
    "_TIMED_OUT",
    "_TRANSPORT",
    "_ALL_BROKERS_DOWN",
    "REQUEST_TIMED_OUT",
    "NOT_CONTROLLER",
    "LEADER_NOT_AVAILABLE",
    "UNKNOWN_TOPIC_OR_PART",
    "NETWORK_EXCEPTION",
    "COORDINATOR_NOT_AVAILABLE",
    "NOT_LEADER_FOR_PARTITION",
    "BROKER_NOT_AVAILABLE",
    "THROTTLING_QUOTA_EXCEEDED",
    "_UNKNOWN_TOPIC",
    "_WAIT_COORD",
    "_NOT_IMPLEMENTED",
    "_UNKNOWN_PARTITION",
    "OFFSET_NOT_AVAILABLE",
    "REPLICA_NOT_AVAILABLE",
    "UNKNOWN_LEADER_EPOCH",
    "FENCED_LEADER_EPOCH",
    "NOT_ENOUGH_REPLICAS",
}


class TopicManager:
    """Creates topics idempotently: create, verify, back off and retry.

    A topic is ready when the broker lists it with a leader for every partition **and** every
    leader answers a ListOffsets request: a new topic's leader can appear in metadata a moment
    before it serves requests, and a produce or offset lookup in that moment fails with
    NOT_LEADER_FOR_PARTITION (or UNKNOWN_TOPIC_OR_PART). ``create_topic`` returns True for a new
    topic and for one that already existed; anything that stays wrong after
    ``settings.topic_create_attempts`` (backing off from ``topic_create_backoff_s``, doubling,
    at most 2 s) raises :class:`TopicError` naming the topic.
    """

    def __init__(self, settings: KafkaEngineSettings, *, admin: Any = None) -> None:
        self.settings = settings
        self._admin = admin if admin is not None else admin_client(settings, "TopicManager")

    def create_topic(
        self,
        topic: str,
        *,
        partitions: int | None = None,
        replication_factor: int | None = None,
        config: Mapping[str, str] | None = None,
    ) -> bool:
        return self.create_topics(
            [topic], partitions=partitions, replication_factor=replication_factor, config=config
        )[topic]

    def create_topics(
        self,
        topics: Iterable[str],
        *,
        partitions: int | None = None,
        replication_factor: int | None = None,
        config: Mapping[str, str] | None = None,
    ) -> dict[str, bool]:
        """Make sure every topic exists and has a leader for each partition."""
        kafka = kafka_module("TopicManager")
        partitions = partitions or self.settings.partitions
        replication = replication_factor or self.settings.replication_factor
        wanted = list(dict.fromkeys(_checked(t, f"topic '{t}'") for t in topics))
        pending = wanted
        backoff = self.settings.topic_create_backoff_s
        last_error = ""
        attempts = self.settings.topic_create_attempts
        for attempt in range(1, attempts + 1):
            missing, metadata = self._not_ready(pending)
            if not missing:
                pending, error = self._not_serving(pending, metadata)
                last_error = error or last_error
                if not pending or attempt == attempts:
                    break
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            pending = missing
            if attempt == attempts:
                break
            timeout = self.settings.connect_timeout_s
            futures = self._admin.create_topics(
                [
                    kafka.admin.NewTopic(
                        t,
                        num_partitions=partitions,
                        replication_factor=replication,
                        config=dict(config or {}),
                    )
                    for t in pending
                ],
                operation_timeout=timeout,
                request_timeout=timeout,
            )
            for topic, future in futures.items():
                try:
                    future.result()
                    log.info(
                        "qmtl.kafka.topic_created",
                        topic=topic,
                        partitions=partitions,
                        replication_factor=replication,
                    )
                except kafka.KafkaException as e:
                    error = e.args[0]
                    name = error.name() if hasattr(error, "name") else str(error)
                    if name == "TOPIC_ALREADY_EXISTS":
                        continue
                    if name not in _RETRIABLE_CODES:
                        raise TopicError(
                            f"Kafka refused to create topic '{topic}' with {partitions} "
                            f"partition(s) and replication factor {replication}: "
                            f"{error.str() if hasattr(error, 'str') else error}; check the "
                            "engine's partitions/replication_factor options and the broker's "
                            "topic policy"
                        ) from e
                    last_error = f"{topic}: {error}"
            time.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
        if pending:
            raise TopicError(
                f"Topics {pending} were not ready (listed with a leader answering for every "
                f"partition) after {attempts} attempts on "
                f"{self.settings.bootstrap_servers}"
                + (f" (last error: {last_error})" if last_error else "")
                + "; check the broker's log"
            )
        created = {topic: True for topic in wanted}
        return created

    def _not_ready(self, topics: list[str]) -> tuple[list[str], Any]:
        """The topics the broker does not list with a leader for every partition, and the
        metadata."""
        kafka = kafka_module("TopicManager")
        try:
            metadata = self._admin.list_topics(timeout=self.settings.connect_timeout_s)
        except kafka.KafkaException as e:
            raise BrokerUnavailableError(
                f"No Kafka broker answered at {self.settings.bootstrap_servers} within "
                f"{self.settings.connect_timeout_s:g}s while checking topics: {e.args[0]}; "
                "start the broker or fix bootstrap_servers"
            ) from e
        missing = []
        for topic in topics:
            found = metadata.topics.get(topic)
            ready = (
                found is not None
                and found.error is None
                and bool(found.partitions)
                and all(p.leader >= 0 and p.error is None for p in found.partitions.values())
            )
            if not ready:
                missing.append(topic)
        return missing, metadata

    def _not_serving(self, topics: list[str], metadata: Any) -> tuple[list[str], str]:
        """The topics with a partition whose leader does not answer ListOffsets yet, and the
        last error. An error that waiting cannot cure (e.g. no Describe permission) skips the
        check for that topic: the listed leader is then taken at its word."""
        kafka = kafka_module("TopicManager")
        requests = {
            kafka.TopicPartition(topic, partition): kafka.admin.OffsetSpec.latest()
            for topic in topics
            for partition in metadata.topics[topic].partitions
        }
        if not requests:
            return [], ""
        futures = self._admin.list_offsets(
            requests, request_timeout=self.settings.connect_timeout_s
        )
        waiting: list[str] = []
        last_error = ""
        for tp, future in futures.items():
            try:
                future.result()
            except kafka.KafkaException as e:
                error = e.args[0]
                name = error.name() if hasattr(error, "name") else str(error)
                if name in _RETRIABLE_CODES:
                    if tp.topic not in waiting:
                        waiting.append(tp.topic)
                    last_error = f"{tp.topic}/{tp.partition}: {name}"
                else:
                    log.warning(
                        "qmtl.kafka.topic_probe_skipped",
                        topic=tp.topic,
                        partition=tp.partition,
                        error=name,
                    )
        return [t for t in topics if t in waiting], last_error


def topic_partitions(
    settings: KafkaEngineSettings, admin: Any, topics: Iterable[str]
) -> dict[str, int]:
    """Partition count of each existing topic (metadata request bounded by connect timeout)."""
    kafka = kafka_module("The Kafka engine")
    try:
        metadata = admin.list_topics(timeout=settings.connect_timeout_s)
    except kafka.KafkaException as e:
        raise QmtlError(str(e)) from e
    return {t: len(metadata.topics[t].partitions) for t in topics if t in metadata.topics}
