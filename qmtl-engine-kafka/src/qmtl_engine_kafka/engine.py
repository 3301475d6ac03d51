"""The ``kafka`` engine: a pipeline run as consumer groups over Apache Kafka (SPEC §6).

``run(plan, state=..., on_output=...)`` streams finite sources: it creates the pipeline's topics,
starts ``workers`` worker threads in this process (0: rely on ``qmtl worker`` processes),
publishes every source's events to its input topic followed by an end marker, and consumes the
nodes' output topics until every node has ended. ``execute(...)`` is the one-shot form over the
same machinery (see :mod:`qmtl_engine_kafka.oneshot`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from qmtl.engine import EngineBase
from qmtl.errors import ConfigurationError, NodeExecutionError, ValueEncodeError
from qmtl.logs import get_logger
from qmtl.plan import ExecutionPlan
from qmtl.sources import merged_events
from qmtl.state import StateBackend
from qmtl.streaming import NodeSummary, OutputEvent, RunSummary
from qmtl_engine_kafka import envelope as envelopes
from qmtl_engine_kafka._client import admin_client, check_broker, kafka_module, new_client
from qmtl_engine_kafka.envelope import Envelope
from qmtl_engine_kafka.errors import (
    EnvelopeError,
    PublishError,
    RemoteNodeError,
    RunTimeoutError,
)
from qmtl_engine_kafka.pending import pending_store_for
from qmtl_engine_kafka.settings import KafkaEngineSettings
from qmtl_engine_kafka.topics import (
    TopicManager,
    merge_topic,
    pipeline_topics,
    topic_partitions,
)
from qmtl_engine_kafka.worker import LIVE_RUN, RunContext, Worker

__all__ = ["KafkaEngine", "RemoteNodeError", "RunTimeoutError"]

log = get_logger(__name__)


class KafkaEngine(EngineBase):
    """Runs pipelines over Kafka with per-node consumer groups (see the package README)."""

    name = "kafka"

    def __init__(self, options: KafkaEngineSettings | None = None, **overrides: Any) -> None:
        if options is None:
            options = KafkaEngineSettings(**overrides)
        elif overrides:
            options = options.model_copy(update=overrides)
        self.settings = options
        self._admin: Any = None
        self._ready_topics: set[str] = set()
        self._lock = threading.Lock()

    # -- topics ----------------------------------------------------------------------------
    def _admin_client(self) -> Any:
        if self._admin is None:
            self._admin = admin_client(self.settings, "The Kafka engine")
        return self._admin

    def prepare(self, plan: ExecutionPlan) -> dict[str, int]:
        """Create the pipeline's topics (idempotent); return each source's input partitions.

        Raises :class:`~qmtl_engine_kafka.errors.BrokerUnavailableError` within
        ``connect_timeout_s`` when no broker answers.
        """
        admin = self._admin_client()
        check_broker(self.settings, f"Pipeline '{plan.pipeline}' on the Kafka engine")
        topics = pipeline_topics(plan.pipeline, [n.name for n in plan.nodes])
        sources = [n.name for n in plan.nodes if not n.upstreams]
        inputs = [topics.inputs[s] for s in sources]
        manager = TopicManager(self.settings, admin=admin)
        with self._lock:
            missing_inputs = [t for t in inputs if t not in self._ready_topics]
            if missing_inputs:
                manager.create_topics(missing_inputs)
                self._ready_topics.update(missing_inputs)
        partitions = topic_partitions(self.settings, admin, inputs)
        single = [*topics.outputs.values(), topics.dead_letter]
        single += [
            merge_topic(plan.pipeline, s)
            for s in sources
            if partitions.get(topics.inputs[s], 1) > 1
        ]
        with self._lock:
            missing = [t for t in single if t not in self._ready_topics]
            if missing:
                manager.create_topics(missing, partitions=1)
                self._ready_topics.update(missing)
        return {s: partitions.get(topics.inputs[s], 1) for s in sources}

    # -- streaming -------------------------------------------------------------------------
    def run(
        self,
        plan: ExecutionPlan,
        *,
        state: StateBackend,
        on_output: Callable[[OutputEvent], None] | None = None,
        sources: Mapping[str, Any] | None = None,
        events: Iterable[tuple[str, Any, Any]] | None = None,
        clock: Callable[[], float] = time.time,
        workers: int | None = None,
        run_id: str | None = None,
        timeout: float | None = None,
    ) -> RunSummary:
        """Stream the plan's finite sources through Kafka to their end; see the module doc.

        ``sources`` / ``events`` / ``clock`` are those of the local engine. ``workers`` worker
        threads run the nodes here (default ``settings.workers``; 0 relies on ``qmtl worker``
        processes started with the same ``--run``); ``run_id`` names the run (default: a
        fresh id with in-process workers, ``"live"`` with external ones); ``timeout`` bounds the
        whole run.
        """
        started = time.perf_counter()
        workers = self.settings.workers if workers is None else workers
        timeout = self.settings.run_timeout_s if timeout is None else timeout
        if run_id is None:
            run_id = uuid.uuid4().hex if workers > 0 else LIVE_RUN
        partitions = self.prepare(plan)
        store = pending_store_for(state)
        if workers == 0 and not store.shared:
            raise ConfigurationError(
                f"Pipeline '{plan.pipeline}': workers=0 relies on `qmtl worker` processes, "
                "which need a shared state backend: use state='redis'"
            )
        failures: dict[str, BaseException] = {}
        ctx = RunContext(
            plan,
            run_id,
            self.settings,
            state,
            store,
            partitions,
            batch_size=self.settings.batch_size,
            on_failure=lambda node, error: failures.setdefault(node, error),
        )
        session = _Session(self, ctx, workers)
        try:
            session.start()
            session.publish(merged_events(plan, sources=sources, events=events, clock=clock))
            ends = session.collect(on_output, failures, timeout)
        finally:
            session.close()
            if not store.shared:
                store.close()
        nodes = {}
        for node in plan.nodes:
            end = ends[node.name]
            nodes[node.name] = NodeSummary(
                events_in=end.get("events", 0),
                late_events=end.get("late", 0),
                buckets_out=dict(end.get("buckets", {})),
            )
        return RunSummary(plan.pipeline, self.name, nodes, time.perf_counter() - started)

    # -- one-shot --------------------------------------------------------------------------
    def execute(
        self,
        plan: ExecutionPlan,
        *,
        state: StateBackend,
        inputs: Mapping[str, Any] | None = None,
        ts: float | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        from qmtl_engine_kafka.oneshot import execute_over_kafka

        return execute_over_kafka(
            plan,
            settings=self.settings,
            prepare=self.prepare,
            open_session=lambda ctx, workers: _Session(self, ctx, workers),
            state=state,
            inputs=inputs,
            ts=ts,
            timeout=timeout,
        )

    def close(self) -> None:
        """Nothing long-lived is held between runs except the admin client."""
        self._admin = None

    def __repr__(self) -> str:
        return f"KafkaEngine(bootstrap_servers={self.settings.bootstrap_servers!r})"


class _Session:
    """One run's publisher, collector and in-process workers."""

    def __init__(self, engine: KafkaEngine, ctx: RunContext, workers: int) -> None:
        self.engine = engine
        self.ctx = ctx
        self.kafka = kafka_module("The Kafka engine")
        settings = engine.settings
        self.settings = settings
        self.workers = workers
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.worker_objects: list[Worker] = []
        self.errors: list[BaseException] = []
        self.delivery_errors: list[str] = []
        self.producer = new_client(
            "Producer",
            settings,
            {
                "enable.idempotence": settings.idempotent_producer,
                "linger.ms": settings.linger_ms,
                "message.timeout.ms": int(settings.delivery_timeout_s * 1000),
                "queue.buffering.max.messages": 1_000_000,
                # above max_message_bytes, so the envelope's own size check is the one that
                # fires (a ValueEncodeError naming the node), never librdkafka's
                "message.max.bytes": settings.max_message_bytes + 65_536,
                "on_delivery": self._delivered,
            },
            what=f"Pipeline '{ctx.pipeline}' on the Kafka engine",
        )
        self.collector: Any = None

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.delivery_errors.append(f"topic '{msg.topic()}': {err.str()}")

    def start(self) -> None:
        """Position the output collector at the end of every output topic, start workers."""
        kafka, ctx = self.kafka, self.ctx
        self.collector = new_client(
            "Consumer",
            self.settings,
            {
                "group.id": f"qmtl-collector-{ctx.run}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "fetch.wait.max.ms": 10,
            },
            what=f"Pipeline '{ctx.pipeline}' on the Kafka engine",
        )
        assignment = []
        for topic in ctx.topics.outputs.values():
            tp = kafka.TopicPartition(topic, 0)
            _low, high = self.collector.get_watermark_offsets(
                tp, timeout=self.settings.connect_timeout_s, cached=False
            )
            assignment.append(kafka.TopicPartition(topic, 0, high))
        self.collector.assign(assignment)
        for i in range(self.workers):
            worker = Worker(ctx)
            self.worker_objects.append(worker)
            thread = threading.Thread(
                target=self._work,
                args=(worker,),
                name=f"qmtl-kafka-{ctx.pipeline}-{i}",
                daemon=True,
            )
            self.threads.append(thread)
            thread.start()

    def _work(self, worker: Worker) -> None:
        try:
            worker.run_until(self.stop)
        except BaseException as error:  # handed to the run's thread
            self.errors.append(error)

    def publish(self, events: Iterable[tuple[int, float | None, Any]]) -> None:
        """Every source event (and live-source watermark) to partition 0 of its input topic
        (one ordered stream per source), then an end marker on every input partition."""
        ctx, producer = self.ctx, self.producer
        nodes = ctx.plan.nodes
        pipeline, run = ctx.pipeline, ctx.run
        inputs = ctx.topics.inputs
        ended: set[int] = set()
        encode, max_bytes = envelopes.encode, self.settings.max_message_bytes
        produce = producer.produce
        count = 0
        for index, ts, value in events:
            name = nodes[index].name
            if ts is None:
                if value is None:
                    self._end(index)
                    ended.add(index)
                else:  # a live source's Watermark(ts): close buckets by its clock
                    payload = encode(
                        Envelope(
                            pipeline,
                            name,
                            value,
                            None,
                            "",
                            None,
                            None,
                            value,
                            "watermark",
                            None,
                            1,
                            run,
                        )
                    )
                    produce(inputs[name], payload, partition=0)
                continue
            try:
                payload = encode(
                    Envelope(
                        pipeline, name, ts, value, "", None, None, None, "event", None, 1, run
                    ),
                    max_bytes,
                )
            except ValueEncodeError as error:
                intervals = ", ".join(s.interval.value for s in nodes[index].series)
                raise error.at(name, intervals) from None
            while True:
                try:
                    produce(inputs[name], payload, partition=0)
                    break
                except BufferError:
                    producer.poll(0.05)
            count += 1
            if count % 1000 == 0:
                producer.poll(0)
        for node in ctx.plan.sources:
            if node.index not in ended:
                self._end(node.index)
        self._flush()

    def _end(self, index: int) -> None:
        ctx = self.ctx
        name = ctx.plan.nodes[index].name
        payload = envelopes.encode(
            Envelope(ctx.pipeline, name, 0.0, None, "", None, None, None, "end", None, 1, ctx.run)
        )
        for partition in range(ctx.input_partitions.get(name, 1)):
            self.producer.produce(ctx.topics.inputs[name], payload, partition=partition)

    def _flush(self) -> None:
        remaining = self.producer.flush(self.settings.delivery_timeout_s + 5)
        if remaining or self.delivery_errors:
            raise PublishError(
                f"Publishing the sources of pipeline '{self.ctx.pipeline}' failed: "
                f"{remaining} unacknowledged, errors {self.delivery_errors[:3]}"
            )

    def collect(
        self,
        on_output: Callable[[OutputEvent], None] | None,
        failures: dict[str, BaseException],
        timeout: float | None,
        *,
        raise_failures: bool = True,
    ) -> dict[str, dict[str, Any]]:
        """Consume every node's output until all ended; raise the first node failure (or,
        with ``raise_failures=False``, return the ends with their ``error``)."""
        ctx = self.ctx
        deadline = None if timeout is None else time.monotonic() + timeout
        names = {n.name for n in ctx.plan.nodes}
        ends: dict[str, dict[str, Any]] = {}
        seen: set[tuple[str, str, int]] = set()
        run = ctx.run
        max_bytes = self.settings.max_message_bytes
        decode = envelopes.decode
        while len(ends) < len(names):
            if self.errors:
                raise self.errors[0]
            if deadline is not None and time.monotonic() > deadline:
                waiting = [n.name for n in ctx.plan.nodes if n.name not in ends]
                raise RunTimeoutError(
                    ctx.pipeline,
                    waiting,
                    timeout or 0.0,
                    f"on Kafka, nodes still running: {waiting}; are workers running "
                    f"(workers=0 needs `qmtl worker ... --run {run}`)?",
                )
            for message in self.collector.consume(1000, 0.05):
                if message.error() is not None:
                    continue
                try:
                    env = decode(message.value(), max_bytes)
                except EnvelopeError:
                    continue  # the worker dead-letters it; nothing for the caller
                if (env.run or LIVE_RUN) != run or env.node not in names:
                    continue
                if env.kind == "event":
                    key = (env.node, env.interval or "", env.bucket or 0)
                    if key in seen:
                        continue  # a replay after a worker restart
                    seen.add(key)
                    if on_output is not None:
                        on_output(
                            OutputEvent(
                                env.node, env.interval or "", env.ts, env.value, env.bucket or 0
                            )
                        )
                elif env.kind == "end":
                    value = env.value if isinstance(env.value, dict) else {}
                    if raise_failures and "error" in value and "upstream_failed" not in value:
                        if "value_error" in value and env.node not in failures:
                            failures[env.node] = ValueEncodeError(**value["value_error"])
                        self._raise_failure(env.node, value["error"], failures)
                    ends.setdefault(env.node, value)
        failed = [n for n, v in ends.items() if "error" in v]
        if failed and raise_failures:
            origin = next((n for n in failed if "upstream_failed" not in ends[n]), failed[0])
            self._raise_failure(origin, ends[origin]["error"], failures)
        return ends

    def failure(self, node: str, message: str, failures: dict[str, BaseException]) -> BaseException:
        """The exception a node's worker reported (or one carrying its message)."""
        for _ in range(50):  # the in-process worker reports its exception right after its end
            if node in failures or self.workers == 0:
                break
            time.sleep(0.01)
        return failures.get(node) or RemoteNodeError(f"node '{node}' failed in a worker: {message}")

    def _raise_failure(self, node: str, message: str, failures: dict[str, BaseException]) -> None:
        for _ in range(20):  # the in-process worker reports its exception right after its end
            if node in failures or self.workers == 0:
                break
            time.sleep(0.01)
        cause = failures.get(node) or RemoteNodeError(
            f"node '{node}' failed in a worker: {message}"
        )
        if isinstance(cause, ValueEncodeError):
            raise cause  # the value's own error, as on the local engine
        raise NodeExecutionError(node, cause) from cause

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        if self.collector is not None:
            self.collector.close()
        self.producer.flush(5)
