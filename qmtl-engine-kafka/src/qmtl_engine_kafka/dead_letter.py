"""Route messages that cannot be used to a dead-letter topic, and count them.

The dead letter keeps the original bytes as its value (so it can be inspected or replayed) and
the original key; headers say why and where it came from:

``qmtl.dlq.reason`` (a stable code such as ``malformed`` or ``oversized``), ``qmtl.dlq.error``
(the message), ``qmtl.dlq.topic`` / ``qmtl.dlq.partition`` / ``qmtl.dlq.offset`` (origin),
``qmtl.dlq.node`` (the node that rejected it, when known), and ``qmtl.dlq.original_size`` with
``qmtl.dlq.truncated=1`` when the original was too large to forward whole.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from qmtl.logs import get_logger
from qmtl_engine_kafka.errors import EnvelopeError, PublishError

__all__ = ["DeadLetterQueue", "dead_letter_headers"]

log = get_logger(__name__)

#: Dead letters larger than this keep only their first bytes (brokers refuse ~1 MB by default).
MAX_DEAD_LETTER_BYTES = 900_000


def dead_letter_headers(message: Any) -> dict[str, str]:
    """The ``qmtl.dlq.*`` headers of a consumed dead letter, as text."""
    return {
        key: value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        for key, value in (message.headers() or [])
        if key.startswith("qmtl.dlq.")
    }


class DeadLetterQueue:
    """Produces dead letters to one topic through an existing confluent-kafka Producer.

    ``count`` is the number sent, ``reasons`` counts them by reason. ``send`` only enqueues; the
    caller flushes its producer (as a worker does before committing offsets), or passes
    ``flush=True``.
    """

    def __init__(self, producer: Any, topic: str, *, flush_timeout_s: float = 30.0) -> None:
        self.producer = producer
        self.topic = topic
        self.flush_timeout_s = flush_timeout_s
        self.reasons: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._failures: list[str] = []

    @property
    def count(self) -> int:
        return sum(self.reasons.values())

    def send(
        self,
        payload: bytes | None,
        *,
        reason: str,
        error: str,
        key: bytes | str | None = None,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        node: str | None = None,
        flush: bool = False,
    ) -> None:
        """Dead-letter ``payload`` with its reason; raise PublishError if the broker refused it."""
        body = payload or b""
        headers = [
            ("qmtl.dlq.reason", reason.encode()),
            ("qmtl.dlq.error", error.encode("utf-8", "replace")[:2000]),
        ]
        for name, value in (
            ("topic", topic),
            ("partition", partition),
            ("offset", offset),
            ("node", node),
        ):
            if value is not None:
                headers.append((f"qmtl.dlq.{name}", str(value).encode("utf-8", "replace")))
        if len(body) > MAX_DEAD_LETTER_BYTES:
            headers.append(("qmtl.dlq.original_size", str(len(body)).encode()))
            headers.append(("qmtl.dlq.truncated", b"1"))
            body = body[:MAX_DEAD_LETTER_BYTES]
        self.producer.produce(
            self.topic, value=body, key=key, headers=headers, on_delivery=self._delivered
        )
        self.producer.poll(0)
        with self._lock:
            self.reasons[reason] += 1
        log.warning(
            "qmtl.kafka.dead_lettered",
            dlq=self.topic,
            reason=reason,
            topic=topic,
            partition=partition,
            offset=offset,
            node=node,
        )
        if flush:
            self.flush()

    def send_envelope_error(
        self, message: Any, error: EnvelopeError, *, node: str | None = None, flush: bool = False
    ) -> None:
        """Dead-letter a consumed message that failed to decode, with the error's reason."""
        self.send(
            message.value(),
            reason=error.reason,
            error=str(error),
            key=message.key(),
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            node=node,
            flush=flush,
        )

    def flush(self) -> None:
        """Wait until every dead letter is acknowledged; raise PublishError for any refused."""
        remaining = self.producer.flush(self.flush_timeout_s)
        with self._lock:
            failures, self._failures = self._failures, []
        if remaining:
            failures.append(
                f"{remaining} message(s) still unacknowledged after {self.flush_timeout_s:g}s"
            )
        if failures:
            raise PublishError(
                f"Dead letters could not be written to '{self.topic}': {'; '.join(failures)}; "
                "create the topic (TopicManager) or check the broker"
            )

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            with self._lock:
                self._failures.append(str(err))
