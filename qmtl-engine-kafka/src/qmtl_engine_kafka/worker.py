"""The Kafka engine's worker: one consumer, one producer, every shard of its partitions.

A :class:`Worker` joins its pipeline's consumer group (``cooperative-sticky``), so Kafka's group
protocol spreads the shard topic's partitions — and with them the shards — over the workers,
and moves a dead worker's share to the survivors. Whatever the pipeline's size, a worker has
one consumer, one producer and one thread. Per batch (at most ``batch_size`` messages, applied
for at most ``batch_time_s``; the consumer seeks back to the rest), in this order:

1. apply each message to the shards of its partition (:mod:`qmtl_engine_kafka._shard`: the
   core's runner over each shard, state per run and shard; :mod:`qmtl_engine_kafka._apply`),
   skipping offsets already in the saved state, writing final buckets to the state backend in
   bulk as they come; forward input-topic messages (:mod:`qmtl_engine_kafka._forward`);
   dead-letter what cannot be used, with the reason (another plan's: ``plan_mismatch``);
2. once every bucket of the batch is written, produce what the batch produced — buckets
   crossing into other shards' partitions (with their final-through in the same message, so a
   watermark never overtakes a bucket it covers), outputs to the output topic — and then the
   end markers: a node's end on Kafka implies its history is stored; flush and check every
   delivery;
3. save each touched partition's shards and next offset (one fenced call per partition);
4. commit those offsets and the forwarded input offsets.

A deployment's worker has a second consumer, for the seed input topics, in a group of its own
(``qmtl.{pipeline}.input.{plan}``): cooperative-sticky balances the *number* of partitions each
member holds, not their topics, so in one group a worker could get every input partition and
another every shard partition.

A crash anywhere replays from the saved offsets: the recomputation is deterministic, bucket
writes overwrite themselves, and readers drop buckets they have passed. The producer is
idempotent with librdkafka's gapless guarantee; a fatal producer error ends the worker (a
restart replays).

The loop reports to a :class:`~qmtl_engine_kafka.operations.WorkerMonitor` (metrics, health,
failure policy; :mod:`qmtl_engine_kafka.operations`): every round, every committed batch (its
time, source events, late events, buckets written and newest event time), dead letters by
reason, the assigned partitions, and every partition's lag every few seconds. A node of the
deployment's run that raises asks the monitor's failure policy first: end the node with its
error (finite runs always do), or drop the batch's shard work uncommitted and replay it after
a back-off (input forwarding is not undone: it computes nothing).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from qmtl.errors import EngineError
from qmtl.logs import get_logger
from qmtl_engine_kafka import _wire
from qmtl_engine_kafka._apply import Applier
from qmtl_engine_kafka._client import consume_error, kafka_module
from qmtl_engine_kafka._forward import Forwarder, Out
from qmtl_engine_kafka._group import GroupMember, WorkerContext
from qmtl_engine_kafka._layout import Layout
from qmtl_engine_kafka._partition import Partition
from qmtl_engine_kafka._send import Sender
from qmtl_engine_kafka._shard import Produced
from qmtl_engine_kafka._wire import LIVE_RUN
from qmtl_engine_kafka.dead_letter import DeadLetterQueue
from qmtl_engine_kafka.errors import EnvelopeError, MalformedEnvelopeError
from qmtl_engine_kafka.operations.monitor import WorkerMonitor
from qmtl_engine_kafka.topics import input_pattern

__all__ = ["HEARTBEAT_ENV", "LIVE_RUN", "Worker", "WorkerContext", "note_deployment"]

log = get_logger(__name__)

HEARTBEAT_ENV = "QMTL_WORKER_HEARTBEAT_FILE"
#: How often a deployment's worker says its namespace is live (and for how long it holds).
_LIVE_NOTE_S, _LIVE_TTL_S = 30.0, 90


def note_deployment(ctx: WorkerContext) -> None:
    """Say (for ``_LIVE_TTL_S``) that this deployment runs: its namespace is live, and its
    plan is deployed (what a ``workers=0`` run looks at while the group is still forming)."""
    store, group = ctx.store, ctx.topics.group  # per pipeline, whichever plan writes it
    store.note(group, f"live:{ctx.namespace}", "1", _LIVE_TTL_S)
    store.note(group, f"plan:{ctx.topics.plan}", "1", _LIVE_TTL_S)
    store.note(group, "deployed", ctx.topics.plan, _LIVE_TTL_S)


class Worker(GroupMember):
    """Serves every run on its partitions until ``run_until``'s ``stop`` is set.

    ``monitor`` receives the loop's reports (default: one without metrics or server, whose
    failures end their node, as in a finite run).
    """

    def __init__(
        self,
        ctx: WorkerContext,
        *,
        log_every_s: float = 10.0,
        heartbeat_file: str | None = None,
        monitor: WorkerMonitor | None = None,
    ) -> None:
        settings = ctx.settings
        what = f"The Kafka worker of pipeline '{ctx.plan.pipeline}'"
        layout = Layout(ctx.plan, ctx.partitions, settings.max_message_bytes)
        super().__init__(ctx, layout, kafka_module("The Kafka engine's worker"), what)
        self.monitor = monitor or WorkerMonitor(ctx.plan.pipeline)
        #: live nodes whose batch failed and waits for its replay (until ``resume_at``)
        self.failing: set[str] = set()
        self.resume_at = 0.0
        self.fatal: Any = None
        self.sender = Sender(
            settings, layout, ctx.topics, live=ctx.live, what=what, on_fatal=self._fatal
        )
        self.dlq = DeadLetterQueue(self.sender.producer, ctx.topics.dead_letter)
        if ctx.live:
            self.forwarder = Forwarder(
                ctx.plan,
                layout,
                consumer=self.inputs,
                dlq=self.dlq,
                max_bytes=settings.max_message_bytes,
                idle_flush_s=settings.idle_flush_s,
                connect_timeout_s=settings.connect_timeout_s,
            )
            self.subscribe([input_pattern(ctx.plan.pipeline), *self.forwarder.topics()])
        else:
            self.subscribe([])
        self._rejected: set[str] = set()
        self.slice_s = min(settings.batch_time_s, settings.max_poll_interval_s / 2)
        self.applier = Applier(layout, self.slice_s)
        self.log_every_s = log_every_s
        heartbeat = heartbeat_file or os.environ.get(HEARTBEAT_ENV)
        self.heartbeat = Path(heartbeat) if heartbeat else None
        self.error: BaseException | None = None

    # -- the loop ------------------------------------------------------------------------------
    def _fatal(self, reason: str) -> None:
        """The producer hit a fatal error (librdkafka's thread): the loop stops on it."""
        self.fatal = reason

    def run_until(self, stop: threading.Event) -> None:
        """The poll loop; returns after ``stop`` is set (or raises what broke the worker)."""
        idle_wait = self.settings.poll_interval_s
        last_log = last_beat = last_note = 0.0
        processed_at_log = 0
        monitor = self.monitor
        try:
            while not stop.is_set():
                if self.fatal is not None:
                    raise EngineError(
                        f"The producer of pipeline '{self.ctx.plan.pipeline}''s worker hit a "
                        f"fatal error: {self.fatal}; the worker stops (a restart replays from "
                        "the saved state)"
                    )
                messages = self._poll_shards(idle_wait if self.inputs is None else 0)
                inputs: list[Any] = []
                if self.inputs is not None:
                    inputs = self._poll(self.inputs, 0 if messages else idle_wait)
                if messages or self.forwarder is not None:
                    self.process(messages, inputs)
                monitor.polled()
                now = time.monotonic()
                if now - last_beat >= 1.0:
                    if self.heartbeat is not None:
                        self._beat()
                    held = len(self.forwarder.heard) if self.forwarder is not None else 0
                    monitor.assignment(len(self.partitions) + held)
                    last_beat = now
                if self.ctx.live and self.ctx.store.shared and now - last_note >= _LIVE_NOTE_S:
                    note_deployment(self.ctx)
                    last_note = now
                log_due = now - last_log >= self.log_every_s
                lags: dict[tuple[str, int], int] = {}
                if log_due or monitor.lag_due():  # the log's lags refresh the gauge too
                    lags = self.lags()
                    monitor.lag({k: v for k, v in lags.items() if v >= 0})
                if log_due:
                    processed = self.applier.applied + self.stats["forwarded"]
                    log.info(
                        "qmtl.kafka.worker_progress",
                        pipeline=self.ctx.plan.pipeline,
                        processed=processed,
                        rate=round((processed - processed_at_log) / max(now - last_log, 1e-9), 1)
                        if last_log
                        else 0.0,
                        buckets=self.stats["buckets"],
                        dead_letters=self.dlq.count,
                        partitions=sorted(self.partitions),
                        lag=-1 if any(v < 0 for v in lags.values()) else sum(lags.values()),
                    )
                    processed_at_log, last_log = processed, now
        except BaseException as error:
            self.error = error
            raise
        finally:
            self.close()

    def _poll_shards(self, wait: float) -> list[Any]:
        """The shard consumer's next messages; none while a failed batch waits for its
        replay (the failure policy's back-off)."""
        if self.resume_at:
            if time.monotonic() < self.resume_at:
                time.sleep(min(self.settings.poll_interval_s, 0.05))
                return []
            self.resume_at = 0.0
        return self._poll(self.consumer, wait)

    def _poll(self, consumer: Any, wait: float) -> list[Any]:
        """What ``consumer`` has (up to ``batch_size``), waiting at most ``wait`` for the first
        message only: ``consume(n, timeout)`` waits until its batch is full or the timeout, so a
        single blocking call would delay every message of a quiet stream by ``wait``."""
        batch = self.settings.batch_size
        messages: list[Any] = consumer.consume(batch, 0)
        if messages or not wait:
            return messages
        messages = consumer.consume(1, wait)
        if messages and batch > 1:
            messages += consumer.consume(batch - 1, 0)
        return messages

    def process(self, messages: list[Any], inputs: list[Any] | None = None) -> int:
        """Apply one batch — shard-topic ``messages``, then input-topic ``inputs`` to forward
        — and commit it (see the module doc); returns messages applied."""
        started = time.monotonic()
        produced = Produced()
        forwards = self.forwarder.grouped() if self.forwarder is not None else None
        touched: set[int] = set()
        clock = time.monotonic
        deadline = clock() + self.slice_s
        rest: list[Any] = []
        applied = 0
        dead = Counter(self.dlq.reasons)
        for i, message in enumerate(messages):
            if i and clock() > deadline:
                rest = messages[i:]
                break
            if message.error() is not None:
                self._consume_error(message)
                continue
            owned = self.partitions.get(message.partition())
            if owned is None:
                continue
            offset = message.offset()
            if offset < owned.next_offset:
                self.stats["replayed"] += 1
                continue  # its effect is in the saved state already
            touched.add(owned.partition)
            if not self._apply(owned, message, deadline):
                owned.next_offset = offset  # part of it is applied: resume there
                rest = messages[i:]
                break
            owned.next_offset = offset + 1
            applied += 1
        if forwards is not None and self.forwarder is not None:
            if inputs and (rest or clock() > deadline):
                rest += inputs  # forwarded by the next batch
            elif inputs:
                taken = self.forwarder.take_all(inputs, forwards, self._consume_error)
                self.stats["forwarded"] += taken
                applied += taken
            self.forwarder.finish(forwards)
        failed: list[tuple[str, BaseException, bool]] = []
        for partition in touched:
            owned = self.partitions[partition]
            for state, shard in owned.touched():
                before = len(produced.failures)
                shard.collect(produced, state.outputs)
                live = state.run == LIVE_RUN
                failed += [(n, e, live) for n, e in produced.failures[before:]]
            for node, reason in owned.stopped():
                self.monitor.stopped_earlier(node, reason, live=True)
        retry = self._judge(failed)
        if retry is not None:  # the failure policy replays the batch's shard work
            self._replay(touched, messages, retry, forwards, dead)
            return 0
        if self.ctx.on_failure is not None:  # before the end markers reach the caller
            for node, error in produced.failures:
                self.ctx.on_failure(node, error)
        self.sender.send(produced, forwards, dead=self.dlq.count > sum(dead.values()))
        commits = self._save(touched)
        forwarded = self._forwarded()
        if rest:
            self._rewind(rest)
        self._commit(commits, forwarded)
        self.stats["messages"] += applied
        self.stats["buckets"] += produced.written
        self._report(started, produced, dead, bool(touched or forwarded))
        return applied

    def _consume_error(self, message: Any) -> None:
        """A consume error in place of a message: counted and logged (a deployment's input
        pattern matching no topic yet is normal, not worth a log)."""
        error = message.error()
        if self.ctx.live and error.code() == self.kafka.KafkaError.UNKNOWN_TOPIC_OR_PART:
            return
        if consume_error(self.kafka, error, self.topics.group):
            self.stats["consume_errors"] += 1

    def _judge(self, failed: list[tuple[str, BaseException, bool]]) -> float | None:
        """Each node failure of the batch, logged and judged by the failure policy: the
        longest back-off asked for, or ``None`` to end the failed nodes as in a finite run.
        Raises :class:`~qmtl_engine_kafka.errors.NodeFailuresError` when the worker must exit
        (nothing of the batch committed)."""
        retry: float | None = None
        for node, error, live in failed:
            log.error("qmtl.kafka.node_failed", node=node, error=f"{type(error).__name__}: {error}")
            verdict = self.monitor.failed(node, error, live=live)
            if verdict.retry_after_s is not None:
                self.failing.add(node)
                retry = max(retry or 0.0, verdict.retry_after_s)
        return retry

    def _replay(
        self,
        touched: set[int],
        messages: list[Any],
        after_s: float,
        forwards: Out | None,
        dead: Counter[str],
    ) -> None:
        """Drop the batch's shard work (nothing of it is produced, saved or committed; bucket
        writes already made are rewritten by the replay): the touched partitions reload their
        saved state and the shard consumer seeks back to the batch's first messages, polled
        again after ``after_s``. Forwarded input messages still go out and commit."""
        for partition in touched:
            owned = self.partitions.get(partition)
            if owned is not None:
                self.partitions[partition] = owned.reloaded(uuid.uuid4().hex)
        self._rewind([m for m in messages if m.topic() == self.topics.shard])
        self.sender.send(Produced(), forwards, dead=self.dlq.count > sum(dead.values()))
        self._commit([], self._forwarded())
        self.resume_at = time.monotonic() + after_s
        self._report_dead(dead)

    def _save(self, touched: set[int]) -> list[Any]:
        """Save each touched partition (fenced); the offsets to commit."""
        commits = []
        for partition in touched:
            owned = self.partitions.get(partition)
            if owned is None:
                continue
            if owned.save():
                commits.append(
                    self.kafka.TopicPartition(self.topics.shard, partition, owned.next_offset)
                )
            else:
                # Another worker claimed the partition while this one was busy (paused past
                # the session timeout): drop it uncommitted; the new owner redoes the batch.
                self.stats["fenced"] += 1
                log.warning("qmtl.kafka.fenced", scope=owned.scope)
                del self.partitions[partition]
        return commits

    def _forwarded(self) -> list[Any]:
        """The input offsets whose forwards were acknowledged."""
        forwarded = []
        if self.forwarder is not None:
            for (topic, partition), offset in self.forwarder.offsets.items():
                forwarded.append(self.kafka.TopicPartition(topic, partition, offset))
            self.forwarder.offsets.clear()
        return forwarded

    def _report(self, started: float, produced: Produced, dead: Counter[str], work: bool) -> None:
        """A committed batch, to the monitor (once per batch, never per message)."""
        monitor = self.monitor
        if work:
            monitor.batch(
                time.monotonic() - started,
                events=produced.events,
                buckets=produced.written,
                late=produced.late,
                watermark=produced.newest if produced.newest > -float("inf") else None,
            )
        self._report_dead(dead)
        if self.failing and work:
            for node in self.failing:
                monitor.recovered(node)
            self.failing.clear()

    def _report_dead(self, before: Counter[str]) -> None:
        if self.dlq.reasons != before:
            self.monitor.dead_letters(self.dlq.reasons - before)

    def _apply(self, owned: Partition, message: Any, deadline: float) -> bool:
        """Apply one shard-topic message; ``False`` when the time slice cut it (its position
        is kept in ``owned.resume``: the next batch goes on from there)."""
        offset = message.offset()
        skip = owned.resume[1] if owned.resume is not None and owned.resume[0] == offset else 0
        owned.resume = None
        try:
            data = _wire.unpack(message.value(), self.settings.max_message_bytes)
            if data.get("h") != self.layout.hash:
                self._reject(message, data)
                return True
            state = owned.run(data["r"], data.get("ns") or self.ctx.plan.pipeline)
            if state is None:
                return True  # the run ended here: a late duplicate
            state.outputs = data.get("wo", 1) != 0
            if state.run == LIVE_RUN:
                state.warm = self.settings.warm_start
            elif data.get("ws"):  # a warm finite run: its buckets sent on say so too
                state.warm = True
                self.sender.warm.add(state.run)
            done = self.applier.apply(state, data, skip, deadline)
        except EnvelopeError as error:
            self.dlq.send_envelope_error(message, error)
            return True
        except (KeyError, TypeError, ValueError, IndexError) as error:
            malformed = MalformedEnvelopeError(
                f"The message does not fit the engine's format: {type(error).__name__}: {error}"
            )
            self.dlq.send_envelope_error(message, malformed)
            return True
        if done is None:
            return True
        owned.resume = (offset, done)
        return False

    def _reject(self, message: Any, data: dict[str, Any]) -> None:
        from qmtl_engine_kafka.errors import PlanMismatchEnvelopeError

        why = (
            f"The message belongs to plan {data.get('h')!r} of pipeline "
            f"'{self.ctx.plan.pipeline}', but this worker runs plan {self.layout.hash!r}: the "
            "pipeline's code differs between the sender and the workers; deploy the same code "
            "to both"
        )
        self.dlq.send_envelope_error(message, PlanMismatchEnvelopeError(why))
        run = data.get("r")
        if isinstance(run, str) and run not in self._rejected:
            self._rejected.add(run)
            self.sender.reject(message.partition(), run, why)

    def _beat(self) -> None:
        assert self.heartbeat is not None
        try:
            self.heartbeat.touch()
        except OSError as error:
            log.warning("qmtl.kafka.heartbeat_failed", path=str(self.heartbeat), error=str(error))

    def close(self) -> None:
        self.leave()
        self.sender.producer.flush(5)
