"""Restarting redis-server in the middle of a run never leaves a silent gap: the run either
completes with the complete history (retrying what failed) or fails with StateBackendError."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from qmtl.errors import StateBackendError
from qmtl.state import SeriesKey
from qmtl_state_redis import RedisStateBackend

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WRITES = 300
DURABLE = ("--appendonly", "yes", "--appendfsync", "always")


def _run_with_restart(server: Any, backend: RedisStateBackend, how: str) -> dict[int, str]:
    """Write buckets 0..WRITES-1 while another thread restarts the server; return, per bucket,
    "ok" or the StateBackendError message the write raised."""
    key = SeriesKey("restart", "node", "1m")
    outcome: dict[int, str] = {}
    halfway = threading.Event()

    def restart() -> None:
        halfway.wait()
        server.kill() if how == "crash" else server.stop()
        time.sleep(0.2)  # writes keep coming while the server is down
        server.start()

    restarter = threading.Thread(target=restart)
    restarter.start()
    try:
        for bucket in range(WRITES):
            if bucket == WRITES // 3:
                halfway.set()
            try:
                backend.write(key, 60.0 * (bucket + 1), bucket, max_items=WRITES, ttl=None)
                outcome[bucket] = "ok"
            except StateBackendError as error:
                outcome[bucket] = str(error)
            time.sleep(0.002)
    finally:
        halfway.set()
        restarter.join()
    return outcome


def _stored(backend: RedisStateBackend) -> set[int]:
    return {item["value"] for item in backend.read(SeriesKey("restart", "node", "1m"))}


@pytest.mark.parametrize(
    ("how", "retries"),
    [("graceful", 3), ("crash", 3), ("graceful", 0), ("crash", 0)],
)
def test_durable_server_restart_keeps_every_acknowledged_write(
    own_redis: Callable[..., Any], how: str, retries: int
) -> None:
    server = own_redis(*DURABLE)
    backend = RedisStateBackend(server.url, retries=retries, connect_timeout=1.0)
    try:
        outcome = _run_with_restart(server, backend, how)
        acknowledged = {bucket for bucket, result in outcome.items() if result == "ok"}
        failed = sorted(set(outcome) - acknowledged)
        # No silent gap: every write that returned normally is in the history.
        assert acknowledged <= _stored(backend)
        # Every write that did not land said so, naming the server. Without retries, the
        # writes sent while the server was down are the ones that failed.
        assert all(server.url in outcome[bucket] for bucket in failed)
        if retries == 0:
            assert failed
        # The run retries what failed (bucket writes are idempotent) and completes.
        key = SeriesKey("restart", "node", "1m")
        for bucket in failed:
            backend.write(key, 60.0 * (bucket + 1), bucket, max_items=WRITES, ttl=None)
        history = backend.read(key)
        assert [item["value"] for item in history] == list(range(WRITES - 1, -1, -1))
    finally:
        backend.close()


def test_restart_without_persistence_fails_the_run_instead_of_leaving_a_gap(
    own_redis: Callable[..., Any],
) -> None:
    server = own_redis()  # --save "" --appendonly no: a restart loses everything
    backend = RedisStateBackend(server.url, retries=2, connect_timeout=1.0)
    try:
        outcome = _run_with_restart(server, backend, "graceful")
        acknowledged = {bucket for bucket, result in outcome.items() if result == "ok"}
        lost = acknowledged - _stored(backend)
        assert lost, "the restart should have lost the buckets written before it"
        errors = [result for result in outcome.values() if result != "ok"]
        assert any("vanished" in message for message in errors), (
            "acknowledged buckets were lost and no write raised StateBackendError"
        )
        # The first write that landed after the restart raised: every write between the last
        # lost bucket and that error failed loudly too, so no write ever "succeeded" into a gap.
        first_error = min(b for b, result in outcome.items() if "vanished" in result)
        assert max(lost) < first_error
        assert all(outcome[b] != "ok" for b in range(max(lost) + 1, first_error))
    finally:
        backend.close()
