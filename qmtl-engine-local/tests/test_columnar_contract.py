"""The columnar path passes the engine contract: its oracle is the event-at-a-time path.

Every case (chain, diamond, as-of join, windows, two intervals, queries, lateness, a failing
node) and the arrival-order property run through ``run(columnar=True)`` and are compared with
:func:`qmtl.stream_runner.run_in_process`, one event at a time. Tiny chunks put chunk
boundaries inside buckets, windows and out-of-order runs.
"""

from __future__ import annotations

from qmtl.testing.engine_contract import EngineContract
from qmtl_engine_local import LocalEngineSettings, LocalExecutionEngine


class TestColumnarContract(EngineContract):
    engine = LocalExecutionEngine
    run_options = {"columnar": True}  # noqa: RUF012 — read-only


class TestColumnarContractInTinyChunks(EngineContract):
    engine = LocalExecutionEngine
    run_options = {"columnar": True, "chunk_size": 3}  # noqa: RUF012 — read-only


class TestColumnarBySetting(EngineContract):
    """Chosen by the engine setting (``QMTL_LOCAL__COLUMNAR``) rather than per run."""

    max_examples = 10

    @staticmethod
    def engine() -> LocalExecutionEngine:
        return LocalExecutionEngine(LocalEngineSettings(columnar=True, chunk_size=17))
