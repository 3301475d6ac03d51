"""qmtl-engine-kafka: QMTL over Apache Kafka (or Redpanda).

The ``kafka`` engine (:class:`KafkaEngine`, seed name :class:`ParallelExecutionEngine`) runs a
pipeline as one consumer group per node with Redis state, in worker threads or ``qmtl worker``
processes (:mod:`~qmtl_engine_kafka.worker`). Under it: topic naming and idempotent creation
(:mod:`~qmtl_engine_kafka.topics`), the versioned envelope (values by qmtl.codec)
(:mod:`~qmtl_engine_kafka.envelope`), dead-lettering (:mod:`~qmtl_engine_kafka.dead_letter`),
the public :class:`StreamProcessor`, and :class:`KafkaEngineSettings`. confluent-kafka is
imported only when a client is created.
"""

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
    OversizedEnvelopeError,
    PublishError,
    TopicCollisionError,
    TopicError,
    TopicNameError,
    TriggerError,
    TruncatedEnvelopeError,
    UndecodableEnvelopeError,
)
from qmtl_engine_kafka.parallel import ParallelExecutionEngine
from qmtl_engine_kafka.settings import KafkaEngineSettings, client_config, redacted
from qmtl_engine_kafka.stream_processor import Event, StreamProcessor
from qmtl_engine_kafka.topics import (
    MAX_TOPIC_LENGTH,
    PipelineTopics,
    TopicManager,
    dead_letter_topic,
    input_topic,
    output_topic,
    pipeline_topics,
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
    "OversizedEnvelopeError",
    "ParallelExecutionEngine",
    "PipelineTopics",
    "PublishError",
    "StreamProcessor",
    "TopicCollisionError",
    "TopicError",
    "TopicManager",
    "TopicNameError",
    "TriggerError",
    "TruncatedEnvelopeError",
    "UndecodableEnvelopeError",
    "client_config",
    "dead_letter_headers",
    "dead_letter_topic",
    "decode",
    "encode",
    "input_topic",
    "output_topic",
    "pipeline_topics",
    "redacted",
    "sanitize",
]
