"""qmtl-engine-kafka: QMTL over Apache Kafka (or Redpanda).

This release holds the transport layer: topic naming and idempotent creation
(:mod:`~qmtl_engine_kafka.topics`), the versioned JSON envelope
(:mod:`~qmtl_engine_kafka.envelope`), dead-lettering (:mod:`~qmtl_engine_kafka.dead_letter`),
the public :class:`StreamProcessor`, and :class:`KafkaEngineSettings`. The distributed engine and
its ``qmtl worker`` build on these. confluent-kafka is imported only when a client is created.
"""

from qmtl_engine_kafka.dead_letter import DeadLetterQueue, dead_letter_headers
from qmtl_engine_kafka.envelope import ENVELOPE_VERSION, Envelope, decode, encode
from qmtl_engine_kafka.errors import (
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
    "BrokerUnavailableError",
    "DeadLetterQueue",
    "Envelope",
    "EnvelopeEncodeError",
    "EnvelopeError",
    "EnvelopeVersionError",
    "Event",
    "KafkaClientMissingError",
    "KafkaEngineSettings",
    "MalformedEnvelopeError",
    "OversizedEnvelopeError",
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
