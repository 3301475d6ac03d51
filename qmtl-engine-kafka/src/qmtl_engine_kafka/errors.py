"""Errors of the Kafka engine, all under :class:`qmtl.errors.EngineError`.

Envelope errors carry a stable ``reason`` code: the worker puts it on the dead-letter message so
an operator can count and filter poison messages by cause.
"""

from __future__ import annotations

from qmtl.errors import ConfigurationError, EngineError, PipelineTimeoutError, ValueEncodeError


class KafkaClientMissingError(EngineError, ImportError):
    """confluent-kafka is not installed (also an ``ImportError``, as the seed SDK raised)."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} needs the Kafka client library confluent-kafka, which is not installed: "
            "pip install confluent-kafka (or pip install qmtl-engine-kafka)"
        )


class RemoteNodeError(EngineError):
    """A node failed in a worker process; the message is that worker's error."""


class RunTimeoutError(PipelineTimeoutError, EngineError):
    """A Kafka run did not finish in time; ``waiting`` names the nodes still running.

    A :class:`~qmtl.errors.PipelineTimeoutError` like every engine's timeout."""

    def __init__(self, pipeline: str, waiting: list[str], timeout: float, detail: str) -> None:
        super().__init__(pipeline, waiting[0] if waiting else None, timeout, detail)
        self.waiting = waiting


class BrokerUnavailableError(EngineError):
    """No Kafka broker answered at the configured bootstrap servers within the timeout."""


class BrokerRefusedError(BrokerUnavailableError):
    """A broker answered but refused the client: SASL credentials rejected, or its TLS
    certificate not trusted (the message names the settings to fix)."""


class NodeFailuresError(EngineError):
    """A node of a deployment kept failing: the ``exit`` failure policy stops the worker (it
    exits non-zero, so its orchestrator restarts it and the failing batch is replayed)."""


class PublishError(EngineError):
    """A message could not be delivered to its topic."""


class TriggerError(EngineError):
    """A user trigger registered on a StreamProcessor raised; ``__cause__`` holds its error."""


class TopicError(EngineError):
    """A topic could not be created or verified on the broker."""


class TopicNameError(ConfigurationError):
    """A pipeline or node name gives an unusable Kafka topic name (too long, empty, colliding)."""


class TopicCollisionError(TopicNameError):
    """Two different nodes map to the same Kafka topic name after sanitising."""


class EnvelopeError(EngineError, ValueError):
    """A message is not a usable QMTL envelope; ``reason`` is a stable code for dead-lettering."""

    reason = "invalid"


class MalformedEnvelopeError(EnvelopeError):
    """Parsed, but not an envelope: wrong shape, missing or mistyped fields."""

    reason = "malformed"


class UndecodableEnvelopeError(EnvelopeError):
    """Neither an envelope (MessagePack) nor JSON, or a value qmtl.codec cannot decode."""

    reason = "undecodable"


class TruncatedEnvelopeError(EnvelopeError):
    """The bytes end in the middle of a JSON document (or there are none)."""

    reason = "truncated"


class OversizedEnvelopeError(EnvelopeError):
    """The message is larger than the configured maximum envelope size."""

    reason = "oversized"


class EnvelopeVersionError(EnvelopeError):
    """The envelope's ``v`` is a version this QMTL does not read."""

    reason = "unsupported_version"


#: A value the envelope cannot carry: since envelope version 2 this is the codec's own
#: :class:`~qmtl.errors.ValueEncodeError` (kept importable under its old name).
EnvelopeEncodeError = ValueEncodeError
