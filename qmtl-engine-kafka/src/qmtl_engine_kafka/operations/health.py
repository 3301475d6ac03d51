"""Liveness and readiness of a worker, as ``/healthz`` and ``/readyz`` answer them.

**Live** (``/healthz``): the poll loop has completed a round within ``liveness_timeout_s``. A
round includes the batches it applied, so the timeout must exceed the slowest batch (writes,
flushes, a slow node function); a worker that stopped polling is restarted by Kubernetes.

**Ready** (``/readyz``), every one of:

- ``loop``: the poll loop runs (not starting, not stopping);
- one entry per *check* (``kafka``, ``redis``): a probe that a background thread runs every
  ``check_interval_s``; it passed the last time, and not longer ago than
  ``3 x check_interval_s + 10`` seconds (a probe stuck on a dead server counts as failing);
- ``nodes``: the failure policy has no failing or stopped node
  (:mod:`~qmtl_engine_kafka.operations.policy`);
- ``partitions`` is informative: partitions assigned, or waiting for assignment (a worker
  beyond the partition count is idle but ready).

Both answers are JSON: ``{"ready": bool, "checks": {name: "ok" | why not}}`` (``"live"`` for
``/healthz``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from qmtl.logs import get_logger
from qmtl_engine_kafka.operations.policy import FailurePolicy

__all__ = ["HealthState", "Probe"]

log = get_logger(__name__)

#: A reachability probe: returns when the server answers, raises (with the reason) when not.
Probe = Callable[[], None]


class HealthState:
    """What ``/healthz`` and ``/readyz`` report; the loop thread feeds it, the server reads."""

    def __init__(
        self,
        *,
        policy: FailurePolicy | None = None,
        liveness_timeout_s: float = 60.0,
        check_interval_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.liveness_timeout_s = liveness_timeout_s
        self.check_interval_s = check_interval_s
        self._clock = clock
        self._probes: dict[str, Probe] = {}
        #: name -> (passed, why not, when)
        self._results: dict[str, tuple[bool, str, float]] = {}
        self._last_poll: float | None = None
        self._stopping = False
        self._assigned = 0
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    # -- fed by the worker -------------------------------------------------------------------
    def add_check(self, name: str, probe: Probe) -> None:
        """Check ``probe`` for readiness (before :meth:`start`)."""
        self._probes[name] = probe

    def polled(self) -> None:
        self._last_poll = self._clock()

    def assignment(self, partitions: int) -> None:
        self._assigned = partitions

    def stopping(self) -> None:
        self._stopping = True

    # -- the probes' thread ------------------------------------------------------------------
    def start(self) -> None:
        """Run every probe once now (so readiness is known at once), then every
        ``check_interval_s`` in a daemon thread."""
        self._check_all()
        if self._probes and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="qmtl-health", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self.check_interval_s):
            self._check_all()

    def _check_all(self) -> None:
        for name, probe in self._probes.items():
            try:
                probe()
            except Exception as error:  # any failure of a probe means "not reachable"
                reason = str(error) or type(error).__name__
                was = self._results.get(name)
                if was is None or was[0]:
                    log.warning("qmtl.kafka.unready", check=name, reason=reason)
                self._results[name] = (False, reason, self._clock())
            else:
                was = self._results.get(name)
                if was is not None and not was[0]:
                    log.info("qmtl.kafka.ready_again", check=name)
                self._results[name] = (True, "ok", self._clock())

    def close(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- read by the server ------------------------------------------------------------------
    def live(self) -> tuple[bool, dict[str, Any]]:
        now = self._clock()
        if self._last_poll is None:
            loop = "starting: the poll loop has not run yet"
        elif now - self._last_poll > self.liveness_timeout_s:
            loop = (
                f"stalled: no poll round for {now - self._last_poll:.0f}s "
                f"(liveness_timeout_s={self.liveness_timeout_s:g})"
            )
        else:
            loop = "ok"
        return loop == "ok", {"live": loop == "ok", "checks": {"loop": loop}}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        now = self._clock()
        checks: dict[str, str] = {}
        if self._stopping:
            checks["loop"] = "stopping"
        elif self._last_poll is None:
            checks["loop"] = "starting: the poll loop has not run yet"
        else:
            checks["loop"] = "ok"
        stale = 3 * self.check_interval_s + 10
        for name in self._probes:
            result = self._results.get(name)
            if result is None:
                checks[name] = "not checked yet"
            elif result[0] and now - result[2] > stale:
                checks[name] = f"unknown: the last check passed {now - result[2]:.0f}s ago"
            else:
                checks[name] = result[1] if result[0] else f"unreachable: {result[1]}"
        problem = self.policy.problem() if self.policy is not None else None
        checks["nodes"] = problem or "ok"
        ready = all(value == "ok" for value in checks.values())
        checks["partitions"] = (
            f"{self._assigned} assigned" if self._assigned else "waiting for assignment"
        )
        return ready, {"ready": ready, "checks": checks}
