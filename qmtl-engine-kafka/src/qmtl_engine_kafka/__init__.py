"""qmtl-engine-kafka: QMTL over Apache Kafka (or Redpanda).

The ``kafka`` engine (:class:`KafkaEngine`, seed name :class:`ParallelExecutionEngine`) runs a
pipeline as shards (:mod:`qmtl.shards`) over a constant number of topics per pipeline, with
Redis state, in worker threads or ``qmtl worker`` processes (:mod:`~qmtl_engine_kafka.worker`:
one consumer and one producer per worker, whatever the pipeline's size). Under it: topic naming
and idempotent creation (:mod:`~qmtl_engine_kafka.topics`), the seed's versioned JSON envelope
for input and output topics (:mod:`~qmtl_engine_kafka.envelope`), dead-lettering
(:mod:`~qmtl_engine_kafka.dead_letter`), the public :class:`StreamProcessor`, and
:class:`KafkaEngineSettings`. confluent-kafka is imported only when a client is created.
"""

from qmtl_engine_kafka._layout import deployment_hash, deployment_topics
from qmtl_engine_kafka.dead_letter import DeadLetterQueue, dead_letter_headers
from qmtl_engine_kafka.engine import KafkaEngine
from qmtl_engine_kafka.envelope import ENVELOPE_VERSION, Envelope, decode, encode
from qmtl_engine_kafka.errors import (
    BrokerRefusedError,
    BrokerUnavailableError,
    EnvelopeEncodeError,
    EnvelopeError,
    EnvelopeVersionError,
    KafkaClientMissingError,
    MalformedEnvelopeError,
    NamespaceInUseWarning,
    OversizedEnvelopeError,
    OversizedValueError,
    PartitionCountError,
    PlanMismatchError,
    PublishError,
    RemoteNodeError,
    RunStalledError,
    RunTimeoutError,
    TopicCollisionError,
    TopicError,
    TopicNameError,
    TriggerError,
    TruncatedEnvelopeError,
    UndecodableEnvelopeError,
)
from qmtl_engine_kafka.external import TopicSink, TopicSource
from qmtl_engine_kafka.parallel import ParallelExecutionEngine
from qmtl_engine_kafka.settings import KafkaEngineSettings, client_config, redacted
from qmtl_engine_kafka.stream_processor import Event, StreamProcessor
from qmtl_engine_kafka.topics import (
    MAX_TOPIC_LENGTH,
    PipelineTopics,
    RunTopics,
    TopicManager,
    dead_letter_topic,
    input_topic,
    output_topic,
    partition_for,
    pipeline_topics,
    run_topics,
    sanitize,
)

__all__ = [
    "ENVELOPE_VERSION",
    "MAX_TOPIC_LENGTH",
    "BrokerRefusedError",
    "BrokerUnavailableError",
    "DeadLetterQueue",
    "Envelope",
    "EnvelopeEncodeError",
    "EnvelopeError",
    "EnvelopeVersionError",
    "Event",
    "KafkaClientMissingError",
    "KafkaEngine",
    "KafkaEngineSettings",
    "MalformedEnvelopeError",
    "NamespaceInUseWarning",
    "OversizedEnvelopeError",
    "OversizedValueError",
    "ParallelExecutionEngine",
    "PartitionCountError",
    "PipelineTopics",
    "PlanMismatchError",
    "PublishError",
    "RemoteNodeError",
    "RunStalledError",
    "RunTimeoutError",
    "RunTopics",
    "StreamProcessor",
    "TopicCollisionError",
    "TopicError",
    "TopicManager",
    "TopicNameError",
    "TopicSink",
    "TopicSource",
    "TriggerError",
    "TruncatedEnvelopeError",
    "UndecodableEnvelopeError",
    "client_config",
    "dead_letter_headers",
    "dead_letter_topic",
    "decode",
    "deployment_hash",
    "deployment_topics",
    "encode",
    "input_topic",
    "output_topic",
    "partition_for",
    "pipeline_topics",
    "redacted",
    "run_topics",
    "sanitize",
]
