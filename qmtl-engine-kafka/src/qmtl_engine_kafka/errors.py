"""Errors of the Kafka engine, all under :class:`qmtl.errors.EngineError`.

Envelope errors carry a stable ``reason`` code: the worker puts it on the dead-letter message so
an operator can count and filter poison messages by cause.
"""

from __future__ import annotations

from qmtl.errors import ConfigurationError, EngineError


class KafkaClientMissingError(EngineError, ImportError):
    """confluent-kafka is not installed (also an ``ImportError``, as the seed SDK raised)."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} needs the Kafka client library confluent-kafka, which is not installed: "
            "pip install confluent-kafka (or pip install qmtl-engine-kafka)"
        )


class BrokerUnavailableError(EngineError):
    """No Kafka broker answered at the configured bootstrap servers within the timeout."""


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


class OversizedValueError(EngineError, ValueError):
    """A node's value does not fit in one Kafka message; the message names the node, the
    interval and the settings that raise the limit."""

    def __init__(self, node: str, interval: str | None, size: int, limit: int) -> None:
        self.node = node
        self.interval = interval
        where = f" at interval '{interval}'" if interval else ""
        super().__init__(
            f"Node '{node}'{where} produced a value of {size} bytes encoded, more than one "
            f"Kafka message may carry ({limit} bytes, the engine's max_message_bytes); return a "
            "smaller value, or raise max_message_bytes together with the broker's "
            "message.max.bytes (and the topics' max.message.bytes)"
        )


class PartitionCountError(ConfigurationError):
    """A run's partition count differs from the one recorded with the pipeline's state."""


class PlanMismatchError(EngineError):
    """Workers run another version of the pipeline than the run that sent them messages."""


class RunTimeoutError(EngineError, TimeoutError):
    """A Kafka run did not finish in time; ``waiting`` names the nodes still running."""

    def __init__(self, message: str, waiting: list[str]) -> None:
        super().__init__(message)
        self.waiting = waiting


class NamespaceInUseWarning(UserWarning):
    """A finite run writes its history into the namespace a live deployment writes."""


class RunStalledError(EngineError, TimeoutError):
    """A finite run heard nothing of its own for ``stall_timeout_s``; ``waiting`` names the
    nodes still running."""

    def __init__(self, message: str, waiting: list[str]) -> None:
        super().__init__(message)
        self.waiting = waiting


class EnvelopeError(EngineError, ValueError):
    """A message is not a usable QMTL envelope; ``reason`` is a stable code for dead-lettering."""

    reason = "invalid"


class MalformedEnvelopeError(EnvelopeError):
    """Valid JSON, but not an envelope: wrong shape, missing or mistyped fields."""

    reason = "malformed"


class UndecodableEnvelopeError(EnvelopeError):
    """Not UTF-8 JSON at all."""

    reason = "undecodable"


class TruncatedEnvelopeError(EnvelopeError):
    """The bytes end in the middle of a JSON document (or there are none)."""

    reason = "truncated"


class OversizedEnvelopeError(EnvelopeError):
    """The message is larger than the configured maximum envelope size."""

    reason = "oversized"


class PlanMismatchEnvelopeError(EnvelopeError):
    """A message of another version of the pipeline (its plan hash differs)."""

    reason = "plan_mismatch"


class EnvelopeVersionError(EnvelopeError):
    """The envelope's ``v`` is a version this QMTL does not read."""

    reason = "unsupported_version"


class EnvelopeEncodeError(EngineError, TypeError):
    """A node's value cannot be written as JSON (the message names the node and the type)."""
