"""The Kafka engine's worker: each node a consumer group, batches committed after their effects.

A :class:`Worker` runs some (or all) nodes of one pipeline run in one thread. Every node is a
task (:mod:`qmtl_engine_kafka._task`) with its own consumer in group ``qmtl.{pipeline}.{node}``:

- a **source** task reads its input topic ``qmtl.input.{pipeline}.{node}``. Each input partition
  is an *origin* with its own :class:`~qmtl.streaming.SourceBucketer`. With one input partition
  its final buckets are the source's series. With more, each origin's final buckets ("partials",
  carrying the ts of their last event) go to ``qmtl.merge.{pipeline}.{node}`` (one partition),
  which the same group also reads: the member holding it merges them;
- any other node's task reads its upstreams' output topics (one partition each, so the ``range``
  assignor gives all of them to the same member) and feeds one
  :class:`~qmtl.streaming.NodeAligner` per interval.

(:mod:`qmtl_engine_kafka._slots` holds that per-input pending state and the event-time logic;
:mod:`qmtl_engine_kafka._batch` what a batch produces.) A task's final buckets are written to
the state backend (``write_many``, one round trip per batch) and produced to
``qmtl.output.{pipeline}.{node}`` as event envelopes, followed by a watermark envelope when the
node's final bucket advanced past its last event, and an ``end`` envelope (with the node's
counts) once every input ended.

Per batch (messages applied for at most ``slice_s``; the consumer seeks back to the rest), in
this order: hand every output to the producer; write the buckets (overlapping the deliveries);
produce end markers, then flush; save the pending state (aligners/bucketers plus the next
offset of every input partition applied); commit those offsets. A crash anywhere replays the
batch from the saved offsets: messages below them are skipped (the pending state already holds
them), the rest recompute the same buckets, which overwrite themselves in the state backend and
are ignored by readers that already have them (a NodeAligner ignores buckets it has passed).
Because an end marker follows its batch's write, a node's end on Kafka implies its whole
history is stored, so a run that saw every end is complete.

The loop reports to a :class:`~qmtl_engine_kafka.operations.WorkerMonitor` (metrics, health,
failure policy): every round, every committed batch (from the task), every dead letter count
change, and the partitions' lag every few seconds.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from qmtl.errors import EngineError
from qmtl.logs import get_logger
from qmtl_engine_kafka._client import kafka_module, new_client
from qmtl_engine_kafka._context import LIVE_RUN, OneShot, RunContext
from qmtl_engine_kafka._task import Task
from qmtl_engine_kafka.dead_letter import DeadLetterQueue
from qmtl_engine_kafka.operations.monitor import WorkerMonitor
from qmtl_engine_kafka.topics import group_id, merge_topic

# RunContext, OneShot, LIVE_RUN, group_id and merge_topic are re-exported: callers built runs
# from this module before the split.
__all__ = [
    "HEARTBEAT_ENV",
    "LIVE_RUN",
    "OneShot",
    "RunContext",
    "Worker",
    "group_id",
    "merge_topic",
]

log = get_logger(__name__)

HEARTBEAT_ENV = "QMTL_WORKER_HEARTBEAT_FILE"


class Worker:
    """Runs tasks for ``nodes`` (default: all) of one pipeline run in one thread.

    ``run_until(stop)`` polls every node's consumer in turn (batches of up to
    ``ctx.batch_size``), applies and commits each batch, logs processed counts and consumer lag
    every ``log_every_s``, and touches the heartbeat file (``QMTL_WORKER_HEARTBEAT_FILE``) from
    the loop. ``stop`` set: the current batch finishes and commits, then consumers close (they
    leave their groups, so their partitions move at once). ``monitor`` receives the loop's
    reports (default: one without metrics or server, whose failures end their node).
    """

    def __init__(
        self,
        ctx: RunContext,
        nodes: Iterable[str] | None = None,
        *,
        log_every_s: float = 10.0,
        heartbeat_file: str | None = None,
        monitor: WorkerMonitor | None = None,
    ) -> None:
        self.ctx = ctx
        self.monitor = monitor or WorkerMonitor(ctx.pipeline)
        self.kafka = kafka_module("The Kafka engine's worker")
        wanted = None if nodes is None else set(nodes)
        if wanted is not None:
            unknown = sorted(wanted - set(ctx.plan.by_name))
            if unknown:
                raise EngineError(
                    f"Pipeline '{ctx.pipeline}' has no node(s) {unknown}; its "
                    f"nodes are {sorted(ctx.plan.by_name)}"
                )
        self.stats: Counter[str] = Counter()
        self.delivery_errors: list[str] = []
        self.producer = new_client(
            "Producer",
            ctx.settings,
            {
                "enable.idempotence": ctx.settings.idempotent_producer,
                "linger.ms": ctx.settings.linger_ms,
                "message.timeout.ms": int(ctx.settings.delivery_timeout_s * 1000),
                "queue.buffering.max.messages": 1_000_000,
                # above max_message_bytes, so the envelope's own size check is the one that
                # fires (a ValueEncodeError naming the node), never librdkafka's
                "message.max.bytes": ctx.settings.max_message_bytes + 65_536,
                "on_delivery": self._delivered,
            },
            what=f"The Kafka worker of pipeline '{ctx.pipeline}'",
        )
        self.dlq = DeadLetterQueue(self.producer, ctx.topics.dead_letter)
        self.tasks = [
            Task(ctx, node, self.kafka, self.stats, self.monitor)
            for node in ctx.plan.nodes
            if wanted is None or node.name in wanted
        ]
        # A round polls every consumer once; its batches together must stay well inside
        # max.poll.interval.ms, or a consumer waiting its turn would leave its group.
        slice_s = min(
            ctx.settings.batch_time_s,
            ctx.settings.max_poll_interval_s / (2 * max(1, len(self.tasks))),
        )
        for task in self.tasks:
            task.slice_s = slice_s
        self.log_every_s = log_every_s
        heartbeat = heartbeat_file or os.environ.get(HEARTBEAT_ENV)
        self.heartbeat = Path(heartbeat) if heartbeat else None
        self.error: BaseException | None = None

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.delivery_errors.append(f"topic '{msg.topic()}': {err.str()}")

    def run_until(self, stop: threading.Event) -> None:
        """The poll loop; returns after ``stop`` is set (or raises what broke the worker)."""
        tasks = self.tasks
        idle_wait = self.ctx.settings.poll_interval_s
        last_log = last_beat = time.monotonic()
        processed_at_log = 0
        monitor, dlq = self.monitor, self.dlq
        reported = Counter(dlq.reasons)
        try:
            while not stop.is_set():
                busy = False
                for task in tasks:
                    messages = task.poll(0 if busy else idle_wait / max(1, len(tasks)))
                    if messages:
                        busy = True
                        task.process(messages, self.producer, dlq, self.delivery_errors)
                        if dlq.reasons != reported:
                            monitor.dead_letters(dlq.reasons - reported)
                            reported = Counter(dlq.reasons)
                        if stop.is_set():
                            break
                monitor.polled()
                now = time.monotonic()
                if now - last_beat >= 1.0:
                    if self.heartbeat is not None:
                        self._beat()
                    monitor.assignment(sum(len(t.assigned) for t in tasks))
                    last_beat = now
                log_due = now - last_log >= self.log_every_s
                lags: dict[str, dict[tuple[str, int], int]] = {}
                if log_due or monitor.lag_due():  # the log's lags refresh the gauge too
                    lags = {t.node.name: t.lags() for t in tasks}
                    monitor.lag({k: v for by in lags.values() for k, v in by.items() if v >= 0})
                if log_due:
                    processed = self.stats["messages"]
                    log.info(
                        "qmtl.kafka.worker_progress",
                        pipeline=self.ctx.pipeline,
                        run=self.ctx.run,
                        processed=processed,
                        rate=round((processed - processed_at_log) / (now - last_log), 1),
                        buckets=self.stats["buckets"],
                        dead_letters=self.dlq.count,
                        lag={
                            node: -1 if any(v < 0 for v in by.values()) else sum(by.values())
                            for node, by in lags.items()
                        },
                    )
                    processed_at_log, last_log = processed, now
        except BaseException as error:
            self.error = error
            raise
        finally:
            self.close()

    def _beat(self) -> None:
        assert self.heartbeat is not None
        try:
            self.heartbeat.touch()
        except OSError as error:
            log.warning("qmtl.kafka.heartbeat_failed", path=str(self.heartbeat), error=str(error))

    def close(self) -> None:
        for task in self.tasks:
            try:
                task.close()
            except Exception as error:  # closing must reach every consumer
                log.warning("qmtl.kafka.close_failed", node=task.node.name, error=str(error))
        self.tasks = []
        self.producer.flush(5)
