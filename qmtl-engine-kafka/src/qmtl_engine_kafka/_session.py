"""One finite run seen from the caller: publishing its sources, collecting its outputs.

:class:`Session` produces every source event straight to its shard's partition (``E``
messages of many events, in arrival order per partition; a live source's ``Watermark`` as
``W``; ``X`` when a source ends) and reads the output topic from the offsets it noted before
publishing, keeping only its run: final buckets go to ``on_output`` in bucket order (a bucket
re-sent after a worker's restart is dropped), end markers carry the per-node counts of the run
summary. The run is over when every node has ended; a node that failed raises
:class:`~qmtl.errors.NodeExecutionError` naming it. A run never waits forever: ``timeout``
bounds it, and hearing nothing of its own for ``stall_timeout_s`` is an error that says which
nodes are still running and whether any worker serves the pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from qmtl import codec
from qmtl.errors import NodeExecutionError, ValueEncodeError
from qmtl.plan import ExecutionPlan
from qmtl.streaming import OutputEvent
from qmtl_engine_kafka._client import consume_error, kafka_module, new_client
from qmtl_engine_kafka._layout import Layout
from qmtl_engine_kafka._send import producer_config
from qmtl_engine_kafka._wire import events, fit, pack, unpack
from qmtl_engine_kafka.errors import (
    EnvelopeError,
    PlanMismatchError,
    PublishError,
    RemoteNodeError,
    RunStalledError,
    RunTimeoutError,
)
from qmtl_engine_kafka.settings import KafkaEngineSettings
from qmtl_engine_kafka.topics import RunTopics

__all__ = ["EVENTS_PER_MESSAGE", "Session"]

#: Source events per ``E`` message of bounded sources (split further when too large).
EVENTS_PER_MESSAGE = _EVENTS_PER_MESSAGE = 1000


class Session:
    """The caller's side of one run: its producer and output reader."""

    def __init__(
        self,
        settings: KafkaEngineSettings,
        plan: ExecutionPlan,
        layout: Layout,
        topics: RunTopics,
        run: str,
        namespace: str,
        *,
        from_start: bool,
    ) -> None:
        self.settings = settings
        self.plan = plan
        self.layout = layout
        self.topics = topics
        self.run = run
        self.common: dict[str, Any] = {"r": run, "h": layout.hash}
        if namespace != plan.pipeline:
            self.common["ns"] = namespace

        self.kafka = kafka_module("The Kafka engine")
        what = f"Pipeline '{plan.pipeline}' on the Kafka engine"
        self.errors: list[str] = []
        self.fatal: str | None = None
        self.producer = new_client(
            "Producer", settings, producer_config(settings, self._delivered, self._error), what=what
        )
        self.reader = new_client(
            "Consumer",
            settings,
            {
                "group.id": f"qmtl-collector-{run}",
                "enable.auto.commit": False,
                # a position lost in a broker restart re-reads rather than skips: the reader
                # drops what it has seen
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
                "fetch.wait.max.ms": 10,
            },
            what=what,
        )
        assignment = []
        for partition in range(layout.partitions):
            tp = self.kafka.TopicPartition(topics.out, partition)
            high = 0
            if not from_start:
                _low, high = self.reader.get_watermark_offsets(
                    tp, timeout=settings.connect_timeout_s, cached=False
                )
            assignment.append(self.kafka.TopicPartition(topics.out, partition, high))
        self.reader.assign(assignment)
        #: node -> the exception a worker in this process reported for it
        self.failures: dict[str, BaseException] = {}
        #: errors of this process's worker threads
        self.worker_errors: list[BaseException] = []

    def warm(self) -> None:
        """The run continues its namespace's history (a warm start, :mod:`qmtl.warm`)."""
        self.common["ws"] = 1

    def without_outputs(self) -> None:
        """The caller reads no outputs: workers then send only end markers and history."""
        self.common["wo"] = 0

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(f"topic '{msg.topic()}': {err.str()}")

    def _error(self, err: Any) -> None:
        if err.fatal():
            self.fatal = err.str()

    # -- publishing ----------------------------------------------------------------------------
    def _produce(self, payload: bytes, partition: int) -> None:
        while True:
            try:
                self.producer.produce(self.topics.shard, payload, partition=partition)
                return
            except BufferError:
                self.producer.poll(0.05)

    def send(self, partition: int, message: dict[str, Any]) -> None:
        """One message of this run to a shard partition."""
        self._produce(pack({**message, **self.common}), partition)

    def _events(self, partition: int, items: list[list[Any]]) -> None:
        try:
            payloads = fit(
                events("E", self.common),
                items,
                self.settings.max_message_bytes,
                lambda _item: None,
                lambda item: (item[0], self._intervals(item[0])),
            )
        except ValueEncodeError as error:
            raise self._refused(items, error) from None
        for payload in payloads:
            self._produce(payload, partition)
        items.clear()

    def _intervals(self, source: str) -> str:
        return ", ".join(s.interval.value for s in self.plan.by_name[source].series)

    def _refused(self, items: list[list[Any]], error: ValueEncodeError) -> ValueEncodeError:
        """The codec's refusal of a source's value, naming the source (as a node that returned
        it: the same error every engine raises)."""
        if error.node is not None:
            return error
        for source, _ts, value in items:
            try:
                codec.check(value, node=source, interval=self._intervals(source))
            except ValueEncodeError as named:
                return named
        return error

    def publish(
        self,
        events: Iterable[tuple[int, float | None, Any]],
        per_message: int = _EVENTS_PER_MESSAGE,
    ) -> None:
        """Every source event to its shard's partition, in arrival order; then end markers.

        ``per_message`` events share a message (1 for live sources: an event is never held
        back waiting for the next one)."""
        nodes = self.plan.nodes
        where = {node.index: self.layout.partition_of(node.name) for node in self.plan.sources}
        waiting: dict[int, list[list[Any]]] = {p: [] for p in set(where.values())}
        ended: set[int] = set()
        sent = 0
        for index, ts, value in events:
            partition = where[index]
            pending = waiting[partition]
            if ts is None:
                if pending:
                    self._events(partition, pending)
                name = nodes[index].name
                if value is None:
                    self.send(partition, {"k": "X", "s": [name]})
                    ended.add(index)
                else:  # a live source's Watermark(ts): buckets close by its clock
                    self.send(partition, {"k": "W", "s": name, "w": value})
                continue
            pending.append([nodes[index].name, ts, value])
            if len(pending) >= per_message:
                self._events(partition, pending)
            sent += 1
            if sent % 10_000 == 0:
                self.producer.poll(0)
        for partition, pending in waiting.items():
            if pending:
                self._events(partition, pending)
        for node in self.plan.sources:
            if node.index not in ended:
                self.send(where[node.index], {"k": "X", "s": [node.name]})
        self.flush()

    def flush(self) -> None:
        remaining = self.producer.flush(self.settings.delivery_timeout_s + 5)
        if remaining or self.errors or self.fatal:
            raise PublishError(
                f"Publishing the sources of pipeline '{self.plan.pipeline}' failed: "
                f"{remaining} unacknowledged, errors {[*self.errors, self.fatal or ''][:3]}"
            )

    # -- collecting ----------------------------------------------------------------------------
    def collect(
        self,
        on_output: Callable[[OutputEvent], None] | None,
        timeout: float | None,
        diagnose: Callable[[], str],
        *,
        raise_failures: bool = True,
        on_values: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Read the output topic until every node ended; return each node's end marker."""
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        heard = started
        stall = self.settings.stall_timeout_s
        names = [n.name for n in self.plan.nodes]
        ends: dict[str, dict[str, Any]] = {}
        last: dict[tuple[str, str], int] = {}
        run, max_bytes = self.run, self.settings.max_message_bytes
        while len(ends) < len(names):
            if self.worker_errors:
                raise self.worker_errors[0]
            now = time.monotonic()
            if deadline is not None and timeout is not None and now > deadline:
                waiting = [n for n in names if n not in ends]
                raise RunTimeoutError(
                    self.plan.pipeline,
                    waiting,
                    timeout,
                    f"nodes still running on Kafka: {waiting[:20]}; {diagnose()}",
                )
            if now - heard > stall:
                waiting = [n for n in names if n not in ends]
                raise RunStalledError(
                    f"Pipeline '{self.plan.pipeline}' (run {run}) heard nothing from its "
                    f"workers for {stall:g}s (stall_timeout_s); nodes still running: "
                    f"{waiting[:20]}; {diagnose()}",
                    waiting,
                )
            for message in self.reader.consume(1000, 0) or self.reader.consume(1, 0.05):
                error = message.error()
                if error is not None:
                    consume_error(self.kafka, error, f"qmtl-collector-{run}")
                    continue
                try:
                    data = unpack(message.value(), max_bytes)
                except EnvelopeError:
                    continue  # not ours to judge: workers dead-letter what they cannot use
                if data.get("r") != run:
                    continue
                heard = time.monotonic()
                kind = data.get("k")
                if kind == "O" and on_output is not None:
                    for node, interval, buckets, stamps, values in data["o"]:
                        key = (node, interval)
                        seen = last.get(key, -1 << 62)
                        for bucket, ts, value in zip(buckets, stamps, values, strict=True):
                            if bucket > seen:  # a bucket re-sent after a restart is dropped
                                seen = bucket
                                on_output(OutputEvent(node, interval, ts, value, bucket))
                        last[key] = seen
                elif kind == "N":
                    for node, end in data["n"].items():
                        ends.setdefault(node, end)
                        if raise_failures and "error" in end and "upstream_failed" not in end:
                            self.raise_failure(node, end)
                elif kind == "1O" and on_values is not None:
                    on_values(data)
                elif kind == "R":
                    raise PlanMismatchError(str(data.get("why")))
        if raise_failures:
            for node in names:
                if "error" in ends[node] and "upstream_failed" not in ends[node]:
                    self.raise_failure(node, ends[node])
        return ends

    def failure(self, node: str, end: dict[str, Any]) -> BaseException:
        """The exception a worker reported for ``node`` in its end marker ``end`` (the very
        exception, when the worker is in this process; a value the codec or a message cannot
        carry is rebuilt as the :class:`~qmtl.errors.ValueEncodeError` it was)."""
        found = self.failures.get(node)
        if found is not None:
            return found
        if isinstance(end.get("value_error"), dict):
            return ValueEncodeError(**end["value_error"])
        return RemoteNodeError(f"node '{node}' failed in a worker: {end.get('error')}")

    def raise_failure(self, node: str, end: dict[str, Any]) -> None:
        cause = self.failure(node, end)
        if isinstance(cause, ValueEncodeError):
            raise cause  # as every engine raises it: naming the node and the interval
        raise NodeExecutionError(node, cause) from cause

    def close(self) -> None:
        self.reader.close()
        self.producer.flush(5)
