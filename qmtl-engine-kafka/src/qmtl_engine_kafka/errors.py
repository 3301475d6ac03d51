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


class OversizedValueError(ValueEncodeError):
    """A node's value does not fit in one Kafka message: the codec's
    :class:`~qmtl.errors.ValueEncodeError` (SPEC §5.4), naming the node, the interval and the
    settings that raise the limit."""

    def __init__(
        self, node: str, interval: str | None, size: int, limit: int, type_name: str = "value"
    ) -> None:
        super().__init__(
            type_name,
            reason=f"{size:,} bytes once encoded, over the Kafka engine's limit of {limit:,}",
            fix=(
                "return a smaller value, or raise the limit: the Kafka engine option "
                "max_message_bytes (QMTL_KAFKA__MAX_MESSAGE_BYTES) together with the topics' "
                "max.message.bytes on the broker"
            ),
            node=node,
            interval=interval,
        )


class PartitionCountError(ConfigurationError):
    """A run's partition count differs from the one recorded with the pipeline's state."""


class PlanMismatchError(EngineError):
    """Workers run another version of the pipeline than the run that sent them messages."""


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


class PlanMismatchEnvelopeError(EnvelopeError):
    """A message of another version of the pipeline (its plan hash differs)."""

    reason = "plan_mismatch"


class EnvelopeVersionError(EnvelopeError):
    """The envelope's ``v`` is a version this QMTL does not read."""

    reason = "unsupported_version"


#: A value the envelope cannot carry: since envelope version 2 this is the codec's own
#: :class:`~qmtl.errors.ValueEncodeError` (kept importable under its old name).
EnvelopeEncodeError = ValueEncodeError
