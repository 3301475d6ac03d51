"""Topic names of a pipeline and their idempotent creation on the broker.

Internal traffic uses a constant number of topics per pipeline, whatever its size:

- ``qmtl.shard.{pipeline}.{plan}`` (``partitions`` partitions; ``plan`` is the deployment's
  plan hash, so changed code deploys next to the old one): every message bound for a shard —
  source events, buckets crossing from one shard to another, watermarks, end markers. Shard
  ``s`` lives on partition :func:`partition_for` ``(s.id, partitions)``;
- ``qmtl.out.{pipeline}.{plan}`` (same partitions): every node's final buckets and end markers, read
  by ``run()`` and external readers;
- ``qmtl.dlq.{pipeline}`` (one partition): messages that could not be used, with the reason;
- consumer group ``qmtl.{pipeline}``: every ``qmtl worker`` of the pipeline (each subscribed to
  its plan's shard topic), and ``qmtl.{pipeline}.input.{plan}`` for each deployment's input
  topics.

A finite run with in-process workers gets topics and a group of its own,
``qmtl.run.{run}.shard.{pipeline}``, ``qmtl.run.{run}.out.{pipeline}`` and
``qmtl.run.{run}.{pipeline}``, so it never joins a deployment.

The seed's names stay for what users touch: ``qmtl.input.{pipeline}.{node}`` feeds a source from
outside and ``qmtl.output.{pipeline}.{node}`` carries a node's outputs for subscribers; they
exist only when something creates them (``prepare_pipeline``, ``subscribe_outputs``, the
``seed_topics`` option). Pipeline and node names are sanitised (characters outside
``[A-Za-z0-9._-]`` become ``_``). Two nodes whose names would share a topic, or a name longer
than Kafka's 249 characters, are rejected with both names and the fix. Kafka also refuses two
topics that differ only by ``.`` versus ``_`` (their metric names collide), so the collision
guard compares names with that folding too.
"""

from __future__ import annotations

import hashlib
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
    "PARTITION_RULE",
    "PipelineTopics",
    "RunTopics",
    "TopicManager",
    "dead_letter_topic",
    "input_pattern",
    "input_topic",
    "output_topic",
    "partition_for",
    "pipeline_group",
    "pipeline_topics",
    "run_topics",
    "sanitize",
    "served_plans",
    "topic_partitions",
]

log = get_logger(__name__)

MAX_TOPIC_LENGTH = 249
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
#: The shard -> partition rule, recorded with a deployment's pending state.
PARTITION_RULE = "blake2b-8"


def partition_for(shard_id: str, partitions: int) -> int:
    """The partition of a shard: its id's 8-byte blake2b digest modulo ``partitions`` (stable
    across processes and Python versions, unlike ``hash``)."""
    digest = hashlib.blake2b(shard_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


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
    """``qmtl.output.{pipeline}.{node}``, sanitised: the node's outputs for subscribers."""
    topic = f"qmtl.output.{_part(pipeline, 'pipeline')}.{_part(node, 'node')}"
    return _checked(topic, f"node '{node}' of pipeline '{pipeline}'")


def input_pattern(pipeline: str) -> str:
    """The regex a deployment subscribes with: every seed input topic of ``pipeline``, also
    the ones created after its workers started."""
    return "^" + re.escape(f"qmtl.input.{_part(pipeline, 'pipeline')}.") + "[^.]+$"


def dead_letter_topic(pipeline: str) -> str:
    """``qmtl.dlq.{pipeline}``, sanitised: messages of the pipeline that could not be used."""
    return _checked(f"qmtl.dlq.{_part(pipeline, 'pipeline')}", f"pipeline '{pipeline}'")


def pipeline_group(pipeline: str) -> str:
    """The one consumer group every worker of ``pipeline``'s deployment joins:
    ``qmtl.{pipeline}`` (sanitised). qmtl-deploy's KEDA trigger reads the group's lag by this
    name, so the two cannot drift apart."""
    return _checked(f"qmtl.{_part(pipeline, 'pipeline')}", f"pipeline '{pipeline}'")


@dataclass(frozen=True)
class RunTopics:
    """Where one deployment (``run`` None) or one in-process run sends its traffic."""

    pipeline: str
    shard: str
    out: str
    dead_letter: str
    group: str
    run: str | None = None
    #: a deployment's input consumer group (the seed and external input topics)
    inputs: str = ""
    #: a deployment's plan hash (``""``: an in-process run, or no plan given)
    plan: str = ""

    def scope(self, partition: int) -> str:
        """The pending-state scope of one shard-topic partition."""
        return f"{self.shard}/{partition}"


def run_topics(pipeline: str, run: str | None = None, *, plan: str = "") -> RunTopics:
    """The deployment's topics (``run`` None) or those of an in-process run.

    A deployment is one plan of the pipeline: its shard and output topics and its input group
    carry the plan's hash (``plan``, :func:`qmtl_engine_kafka._layout.deployment_hash`), so a
    deployment of changed code has topics, pending state and input offsets of its own and
    runs next to the old one during a rolling upgrade; every deployment's workers join the one
    group ``qmtl.{pipeline}``, each subscribed to its own shard topic (see "Upgrades" in
    docs/decisions.md).
    """
    name = _part(pipeline, "pipeline")
    prefix = "qmtl." if run is None else f"qmtl.run.{_part(run, 'run')}."
    suffix = f".{_part(plan, 'plan')}" if plan and run is None else ""
    what = f"pipeline '{pipeline}'"
    group = f"{prefix}{name}" if run is not None else pipeline_group(pipeline)
    return RunTopics(
        pipeline,
        _checked(f"{prefix}shard.{name}{suffix}", what),
        _checked(f"{prefix}out.{name}{suffix}", what),
        dead_letter_topic(pipeline),
        group,
        run,
        _checked(f"{group}.input{suffix}", what),
        plan if run is None else "",
    )


def served_plans(pipeline: str, assigned: Iterable[str]) -> list[str]:
    """The plan hashes of ``pipeline``'s deployments among the topics ``assigned`` (the shard
    topics the members of its group hold), sorted."""
    prefix = f"qmtl.shard.{_part(pipeline, 'pipeline')}."
    return sorted({t[len(prefix) :] for t in assigned if t.startswith(prefix)})


@dataclass(frozen=True)
class PipelineTopics:
    """The seed-named topics of one pipeline: per node input and output, plus dead letters."""

    pipeline: str
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]
    dead_letter: str

    def all(self) -> list[str]:
        return [*self.inputs.values(), *self.outputs.values(), self.dead_letter]


def pipeline_topics(pipeline: str, nodes: Iterable[str]) -> PipelineTopics:
    """Name the seed topics of ``pipeline``; two nodes that would share a topic is an error."""
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
