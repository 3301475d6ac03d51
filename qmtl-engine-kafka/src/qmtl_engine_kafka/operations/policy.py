"""What a worker does when a node's function raises: the failure policy.

A failure is never a silent stall: it is counted (``qmtl_worker_node_failures_total``), logged
(``qmtl.kafka.node_failed``) and, for a deployment's run (``live``), seen by the orchestrator
by one of two policies (setting ``failure_policy``):

``exit`` (the default)
    The failing batch is dropped uncommitted (nothing of it is produced, written or saved) and
    replayed after a back-off (``node_retry_backoff_s``, doubling). ``/readyz`` fails from the
    first failure until a batch of that node commits. After ``max_node_failures`` failures in
    a row the worker exits non-zero (:class:`~qmtl_engine_kafka.errors.NodeFailuresError`):
    Kubernetes restarts it (and ``CrashLoopBackOff`` alerts); the restarted worker replays the
    same batch, so a transient failure heals and a deterministic one is retried until fixed
    code is deployed, which then goes on from the failing message: nothing is skipped.
``stop-node``
    The node ends with its error, as in a finite run (buckets before it stay; its readers
    stop), and the worker goes on with its other nodes. ``/readyz`` fails from then on; a
    restarted worker that loads the node's saved state reports it again, so it stays unready.

A *finite* run (any run id but ``live``) always takes ``stop-node`` without touching
readiness: its caller receives the failure as ``NodeExecutionError``, and one bad backtest
must not take down the workers of a deployment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from qmtl_engine_kafka.errors import NodeFailuresError

__all__ = ["FailurePolicy", "PolicyName", "Verdict"]

PolicyName = Literal["exit", "stop-node"]


@dataclass(frozen=True)
class Verdict:
    """What the loop does with a failed batch: replay it after ``retry_after_s`` seconds, or
    (``None``) end the node with its error and commit the batch as usual."""

    retry_after_s: float | None

    @property
    def retry(self) -> bool:
        return self.retry_after_s is not None


STOP_NODE = Verdict(None)


class FailurePolicy:
    """Counts node failures and decides what the worker does about each (module doc)."""

    def __init__(
        self,
        name: PolicyName = "exit",
        *,
        max_failures: int = 3,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
    ) -> None:
        if max_failures < 1:
            raise ValueError(f"max_failures must be at least 1, not {max_failures}")
        self.name = name
        self.max_failures = max_failures
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        #: live nodes whose last batch failed -> failures in a row
        self.failing: dict[str, int] = {}
        #: live nodes stopped on a failure -> the error
        self.stopped: dict[str, str] = {}
        self.last_error: dict[str, str] = {}

    def failed(self, node: str, error: BaseException, *, live: bool) -> Verdict:
        """A node's function raised during a batch; raises :class:`NodeFailuresError` when
        the worker must exit."""
        if not live:
            return STOP_NODE
        message = f"{type(error).__name__}: {error}"
        self.last_error[node] = message
        if self.name == "stop-node":
            self.stopped[node] = message
            return STOP_NODE
        count = self.failing[node] = self.failing.get(node, 0) + 1
        if count >= self.max_failures:
            raise NodeFailuresError(
                f"Node '{node}' failed {count} time(s) in a row (last: {message}); "
                f"failure_policy 'exit' stops the worker so its orchestrator restarts it, and "
                "the restarted worker replays the failing batch. Fix the node's function, or "
                "raise max_node_failures / choose failure_policy='stop-node'"
            ) from error
        return Verdict(min(self.max_backoff_s, self.backoff_s * 2 ** (count - 1)))

    def stopped_earlier(self, node: str, reason: str, *, live: bool) -> None:
        """A node found stopped in its saved state (it failed before a restart)."""
        if live:
            self.stopped[node] = reason

    def recovered(self, node: str) -> None:
        """A batch of ``node`` committed: it is no longer failing."""
        self.failing.pop(node, None)

    def problem(self) -> str | None:
        """Why readiness fails because of nodes, or None."""
        if self.stopped:
            node, reason = next(iter(self.stopped.items()))
            more = f" (and {len(self.stopped) - 1} more)" if len(self.stopped) > 1 else ""
            return f"node '{node}' stopped on a failure: {reason}{more}"
        if self.failing:
            node, count = next(iter(self.failing.items()))
            more = f" (and {len(self.failing) - 1} more)" if len(self.failing) > 1 else ""
            return (
                f"node '{node}' is failing ({count} of {self.max_failures} before the worker "
                f"exits; last: {self.last_error.get(node)}){more}"
            )
        return None

    @property
    def unhealthy_nodes(self) -> int:
        return len(self.failing) + len(self.stopped)
