"""The ``kafka`` engine: a pipeline run as shards over Apache Kafka (SPEC §6).

``run(plan, state=..., on_output=...)`` streams finite sources. Every run has a fresh run id.
With ``workers >= 1`` (the default) the run gets topics and a consumer group of its own and
that many worker threads here, so a notebook's backtest never joins a deployment; with
``workers=0`` it goes to the deployment's topics, served by standing ``qmtl worker`` processes
next to every other run. Either way the caller publishes the sources' events to their shards'
partitions and reads the final buckets back (:mod:`qmtl_engine_kafka._session`).
``execute(...)`` is the one-shot form through the same shards (:mod:`qmtl_engine_kafka.oneshot`).
:meth:`KafkaEngine.deploy` prepares a deployment; :meth:`KafkaEngine.worker` builds one of its
workers (what ``qmtl worker`` runs).
"""

from __future__ import annotations

import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from qmtl.engine import EngineBase
from qmtl.errors import ConfigurationError, QmtlError
from qmtl.logs import get_logger
from qmtl.pending import DEFAULT_TTL, MemoryPendingStore, PendingStore, SharesPendingState
from qmtl.plan import ExecutionPlan
from qmtl.sources import all_bounded, merged_events
from qmtl.state import StateBackend
from qmtl.streaming import NodeSummary, OutputEvent, RunSummary
from qmtl.warm import Cuts
from qmtl_engine_kafka._client import admin_client, check_broker, kafka_module
from qmtl_engine_kafka._deployments import route, served
from qmtl_engine_kafka._layout import Layout, deployment_hash
from qmtl_engine_kafka._session import EVENTS_PER_MESSAGE, Session
from qmtl_engine_kafka.errors import (
    NamespaceInUseWarning,
    PartitionCountError,
    RemoteNodeError,
    RunTimeoutError,
)
from qmtl_engine_kafka.external import TopicSink
from qmtl_engine_kafka.oneshot import execute_over_kafka
from qmtl_engine_kafka.operations.monitor import WorkerMonitor
from qmtl_engine_kafka.settings import KafkaEngineSettings
from qmtl_engine_kafka.topics import (
    PARTITION_RULE,
    RunTopics,
    TopicManager,
    pipeline_topics,
    run_topics,
    topic_partitions,
)
from qmtl_engine_kafka.worker import Worker, WorkerContext, note_deployment

__all__ = ["Deployment", "KafkaEngine", "OpenRun", "RemoteNodeError", "RunTimeoutError"]

log = get_logger(__name__)


def plan_namespace(plan: ExecutionPlan) -> str:
    """The namespace a plan's history keys live under (the pipeline's name by default)."""
    for node in plan.nodes:
        for spec in node.series:
            return spec.key.pipeline
    return plan.pipeline


@dataclass(frozen=True)
class Deployment:
    """A pipeline's standing topics, partition count and shared pending state."""

    topics: RunTopics
    partitions: int
    store: PendingStore


class KafkaEngine(EngineBase):
    """Runs pipelines as shards over Kafka (see the module docstring and the package README)."""

    name = "kafka"

    def __init__(self, options: KafkaEngineSettings | None = None, **overrides: Any) -> None:
        if options is None:
            options = KafkaEngineSettings(**overrides)
        elif overrides:
            options = options.model_copy(update=overrides)
        self.settings = options
        self._admin: Any = None
        self._ready: set[str] = set()
        self._lock = threading.Lock()

    # -- topics ----------------------------------------------------------------------------
    def _admin_client(self) -> Any:
        if self._admin is None:
            self._admin = admin_client(self.settings, "The Kafka engine")
        return self._admin

    def _create(self, topics: list[str], partitions: int) -> None:
        with self._lock:
            missing = [t for t in topics if t not in self._ready]
        if missing:
            TopicManager(self.settings, admin=self._admin_client()).create_topics(
                missing, partitions=partitions
            )
            with self._lock:
                self._ready.update(missing)

    def _check_broker(self, plan: ExecutionPlan) -> Any:
        check_broker(self.settings, f"Pipeline '{plan.pipeline}' on the Kafka engine")
        return self._admin_client()

    def deploy(self, plan: ExecutionPlan, state: StateBackend) -> Deployment:
        """Prepare the pipeline's deployment (idempotent): its topics, and the partition count
        recorded with its pending state. A count that differs from the recorded one (or from
        the existing topic's, when ``partitions`` is given) is refused."""
        admin = self._check_broker(plan)
        if not isinstance(state, SharesPendingState):
            raise ConfigurationError(
                f"Pipeline '{plan.pipeline}': standing `qmtl worker` processes (and runs with "
                f"workers=0) keep pending state where every process sees it, which state "
                f"backend '{getattr(state, 'name', state)}' cannot do; use one that shares "
                "pending state, e.g. state='redis'"
            )
        store = state.pending_store()
        topics = run_topics(plan.pipeline, plan=deployment_hash(plan))
        existing = topic_partitions(self.settings, admin, [topics.shard]).get(topics.shard)
        partitions = self.settings.partitions
        if existing is not None and existing != partitions:
            if "partitions" in self.settings.model_fields_set:
                raise PartitionCountError(
                    f"Pipeline '{plan.pipeline}': partitions={partitions}, but its topic "
                    f"'{topics.shard}' has {existing} partitions and the pipeline's pending "
                    f"state is laid out for them; pass partitions={existing}, or reset the "
                    "deployment first (KafkaEngine.reset(pipeline, state)) to change it"
                )
            partitions = existing
        self._create([topics.shard, topics.out], partitions)
        self._create([topics.dead_letter], 1)
        layout = f"{partitions}:{PARTITION_RULE}"
        recorded = store.remember(topics.shard, "layout", layout)
        if recorded != layout:
            raise PartitionCountError(
                f"Pipeline '{plan.pipeline}' runs with {partitions} partitions, but its pending "
                f"state was recorded with {recorded.split(':')[0]} (topic '{topics.shard}'): "
                "shards would land on other partitions than their state. Recreate the topic "
                f"with partitions={recorded.split(':')[0]}, or reset the deployment "
                "(KafkaEngine.reset(pipeline, state)) to start over"
            )
        if self.settings.seed_topics:
            self.seed_topics(plan)
        sinks = sorted({n.node.topic for n in plan.nodes if isinstance(n.node, TopicSink)})
        if sinks:
            self._create(sinks, 1)  # existing user topics are left as they are
        return Deployment(topics, partitions, store)

    def seed_topics(self, plan: ExecutionPlan, nodes: Iterable[str] | None = None) -> None:
        """Create the seed-named topics: ``qmtl.input.{pipeline}.{source}`` of every source and
        ``qmtl.output.{pipeline}.{node}`` of ``nodes`` (default: all)."""
        self._check_broker(plan)
        named = pipeline_topics(plan.pipeline, [n.name for n in plan.nodes])
        wanted = set(nodes) if nodes is not None else None
        inputs = [named.inputs[n.name] for n in plan.nodes if not n.upstreams and n.kind != "query"]
        outputs = [named.outputs[n.name] for n in plan.nodes if wanted is None or n.name in wanted]
        self._create(inputs, self.settings.input_partitions)
        self._create(outputs, 1)  # one ordered stream per node

    def served(self, pipeline: str) -> list[str]:
        """The plan hashes whose deployments of ``pipeline`` hold partitions right now
        (:func:`qmtl_engine_kafka._deployments.served`)."""
        return served(self._admin_client(), pipeline, self.settings.connect_timeout_s).plans

    def reset(self, plan: ExecutionPlan, state: StateBackend) -> None:
        """Delete a deployment's shard and output topics and its pending state (the history
        stays): what changing its partition count needs, and how an old plan is retired after
        an upgrade. Stop its workers first."""
        admin = self._check_broker(plan)
        topics = run_topics(plan.pipeline, plan=deployment_hash(plan))
        counts = topic_partitions(self.settings, admin, [topics.shard])
        if isinstance(state, SharesPendingState):
            store = state.pending_store()
            recorded = store.recall(topics.shard, "layout")
            count = max(counts.get(topics.shard, 0), int(recorded.split(":")[0] if recorded else 0))
            for scope in [topics.shard, *(topics.scope(p) for p in range(count))]:
                store.forget(scope)
        self._delete([topics.shard, topics.out])

    def _delete(self, topics: list[str]) -> None:
        kafka = kafka_module("The Kafka engine")
        futures = self._admin_client().delete_topics(
            topics, operation_timeout=self.settings.connect_timeout_s
        )
        for topic, future in futures.items():
            try:
                future.result()
            except kafka.KafkaException as error:
                if error.args[0].name() != "UNKNOWN_TOPIC_OR_PART":
                    log.warning("qmtl.kafka.topic_delete_failed", topic=topic, error=str(error))
        with self._lock:
            self._ready.difference_update(topics)

    def worker(
        self,
        plan: ExecutionPlan,
        state: StateBackend,
        *,
        namespace: str | None = None,
        log_every_s: float = 10.0,
        monitor: WorkerMonitor | None = None,
    ) -> Worker:
        """One worker of the pipeline's deployment (what ``qmtl worker`` runs): it serves every
        run on its partitions and forwards the seed input topics into the ``live`` run, whose
        history goes under ``namespace`` (default: the pipeline's name). ``monitor`` receives
        its reports (:mod:`qmtl_engine_kafka.operations`; ``qmtl worker`` builds one from the
        settings)."""
        deployment = self.deploy(plan, state)
        ctx = WorkerContext(
            plan,
            self.settings,
            state,
            deployment.store,
            deployment.topics,
            deployment.partitions,
            live=True,
            namespace=namespace or plan.pipeline,
        )
        if deployment.store.shared:
            note_deployment(ctx)
        return Worker(ctx, log_every_s=log_every_s, monitor=monitor)

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
        warm_start: bool = False,
        **unknown: Any,
    ) -> RunSummary:
        """Stream the plan's finite sources through Kafka to their end; see the module doc.

        ``sources`` / ``events`` / ``clock`` are those of the local engine. ``workers`` worker
        threads serve the run here (default ``settings.workers``; 0: standing ``qmtl worker``
        processes); ``run_id`` names the run (default: fresh); ``timeout`` bounds the run;
        ``warm_start`` continues the history of the run's namespace (:mod:`qmtl.warm`).
        """
        if unknown:  # a misspelt option is an error, not silently ignored
            raise TypeError(
                f"KafkaEngine.run() got unknown option(s) {sorted(unknown)}; it takes "
                "on_output, sources, events, clock, workers, run_id, timeout, warm_start"
            )
        started = time.perf_counter()
        timeout = self.settings.run_timeout_s if timeout is None else timeout
        with self.open_run(plan, state, workers=workers, run_id=run_id) as opened:
            session = opened.session
            if on_output is None:
                session.without_outputs()
            if warm_start:
                opened.warm(namespace=plan_namespace(plan))
            bounded = all_bounded(plan, sources=sources, events=events)
            session.publish(
                merged_events(plan, sources=sources, events=events, clock=clock),
                EVENTS_PER_MESSAGE if bounded else 1,
            )
            ends = session.collect(on_output, timeout, opened.diagnose)
        nodes = {
            node.name: NodeSummary(
                events_in=ends[node.name].get("events", 0),
                late_events=ends[node.name].get("late", 0),
                buckets_out=dict(ends[node.name].get("buckets", {})),
            )
            for node in plan.nodes
        }
        return RunSummary(plan.pipeline, self.name, nodes, time.perf_counter() - started)

    def open_run(
        self,
        plan: ExecutionPlan,
        state: StateBackend,
        *,
        workers: int | None = None,
        run_id: str | None = None,
    ) -> OpenRun:
        """The topics, workers and session of one finite run (a context manager)."""
        workers = self.settings.workers if workers is None else workers
        return OpenRun(self, plan, state, workers, run_id)

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
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.open_run(plan, state, workers=max(1, self.settings.workers)) as opened:
            return execute_over_kafka(
                opened,
                plan,
                state=state,
                inputs=inputs,
                ts=ts,
                timeout=timeout,
                deadline=deadline,
            )

    def close(self) -> None:
        """Nothing long-lived is held between runs except the admin client."""
        self._admin = None

    def __repr__(self) -> str:
        return f"KafkaEngine(bootstrap_servers={self.settings.bootstrap_servers!r})"


class OpenRun:
    """One finite run's topics, in-process workers and :class:`Session` (``session``):
    prepared on entry, stopped and cleaned up on exit."""

    def __init__(
        self,
        engine: KafkaEngine,
        plan: ExecutionPlan,
        state: StateBackend,
        workers: int,
        run_id: str | None,
    ) -> None:
        self.engine = engine
        self.plan = plan
        self.state = state
        self.workers = workers
        self.run = run_id or uuid.uuid4().hex[:16]
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.own: RunTopics | None = None
        self.topics: RunTopics | None = None
        self._session: Session | None = None

    @property
    def session(self) -> Session:
        assert self._session is not None, "use OpenRun as a context manager"
        return self._session

    def __enter__(self) -> OpenRun:
        engine, plan, settings = self.engine, self.plan, self.engine.settings
        namespace = plan_namespace(plan)
        if self.workers > 0:
            engine._check_broker(plan)
            topics = self.own = run_topics(plan.pipeline, self.run)
            partitions = settings.partitions
            engine._create([topics.shard, topics.out], partitions)
            engine._create([topics.dead_letter], 1)
            deployed = run_topics(plan.pipeline)
        else:
            found = served(engine._admin_client(), plan.pipeline, settings.connect_timeout_s)

            def deploy() -> RunTopics:
                return engine.deploy(plan, self.state).topics

            topics = deployed = route(plan, self.state, found, deploy)
            partitions = topic_partitions(settings, engine._admin_client(), [topics.shard])[
                topics.shard
            ]
        if isinstance(self.state, SharesPendingState):
            if self.state.pending_store().recall(deployed.group, f"live:{namespace}"):
                warnings.warn(
                    NamespaceInUseWarning(
                        f"Run {self.run} of pipeline '{plan.pipeline}' writes its history under "
                        f"namespace '{namespace}', which a live deployment of the pipeline is "
                        "writing too: its buckets will be overwritten. Pass namespace=... to "
                        "run() to keep a backtest apart"
                    ),
                    stacklevel=4,
                )
        self.topics = topics
        layout = Layout(plan, partitions, settings.max_message_bytes)
        session = self._session = Session(
            settings, plan, layout, topics, self.run, namespace, from_start=self.own is not None
        )
        self.layout = layout
        store = MemoryPendingStore()  # the run's workers are all in this process
        self.store: PendingStore = store
        for i in range(self.workers):
            ctx = WorkerContext(
                plan,
                settings,
                self.state,
                store,
                topics,
                partitions,
                on_failure=session.failures.setdefault,
            )
            worker = Worker(ctx)
            thread = threading.Thread(
                target=self._work,
                args=(worker, session),
                name=f"qmtl-kafka-{plan.pipeline}-{i}",
                daemon=True,
            )
            self.threads.append(thread)
            thread.start()
        return self

    def warm(self, *, namespace: str) -> None:
        """The run continues the history under ``namespace`` (a warm start): its cuts are
        noted for its workers before anything is published (:meth:`qmtl.warm.Cuts.record`)."""
        assert self.topics is not None
        store = self.store
        if self.workers == 0 and isinstance(self.state, SharesPendingState):
            store = self.state.pending_store()
        record = Cuts(self.layout.namespaced(namespace), self.state).record()
        store.note(self.topics.shard, f"warm:{self.run}:{namespace}", record, DEFAULT_TTL)
        self.session.warm()

    def _work(self, worker: Worker, session: Session) -> None:
        try:
            worker.run_until(self.stop)
        except BaseException as error:  # handed to the run's thread
            session.worker_errors.append(error)

    def diagnose(self) -> str:
        """Why the run may be waiting, for a timeout's or a stall's message."""
        if self.workers > 0:
            return (
                f"{self.workers} worker thread(s) of this process serve it; a node function "
                "may be blocked"
            )
        assert self.topics is not None
        topics = self.topics
        kafka = kafka_module("The Kafka engine")
        try:
            futures = self.engine._admin_client().describe_consumer_groups([topics.group])
            found = futures[topics.group].result(timeout=5).members
        except (kafka.KafkaException, TimeoutError, KeyError) as error:
            return f"the consumer group '{topics.group}' could not be described ({error})"
        members = [
            m
            for m in found
            if m.assignment is None
            or any(tp.topic == topics.shard for tp in m.assignment.topic_partitions)
        ]
        if not found:
            return (
                f"no worker serves it: the consumer group '{topics.group}' has no members; "
                f"start `qmtl worker MODULE:PIPELINE` for pipeline '{self.plan.pipeline}'"
            )
        if not members:
            return (
                f"no worker serves its plan: the {len(found)} member(s) of the consumer group "
                f"'{topics.group}' run other code (other plans); start `qmtl worker "
                f"MODULE:PIPELINE` with this code for pipeline '{self.plan.pipeline}'"
            )
        return (
            f"the consumer group '{topics.group}' has {len(members)} member(s) serving its "
            "plan; they may be busy"
        )

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        if self._session is not None:
            self._session.close()
        if self.own is not None:
            kafka = kafka_module("The Kafka engine")
            try:  # cleanup must not hide the run's outcome
                self.engine._delete([self.own.shard, self.own.out])
            except (QmtlError, kafka.KafkaException) as error:
                log.warning("qmtl.kafka.cleanup_failed", run=self.run, error=str(error))
