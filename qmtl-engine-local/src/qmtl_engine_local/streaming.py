"""Streaming on the local engine: every source consumed in event-time order, in one process.

The semantics live in :mod:`qmtl.streaming` (shared with every engine) and the in-process
runner in :mod:`qmtl.stream_runner` (also the oracle of the :mod:`qmtl.testing` contract
suites); this module is the local engine's entry to them.
Sources are ordered by :func:`qmtl.sources.merged_events`: the earliest head first (ties by
plan order), each source read lazily at its own pace and flushed as soon as it ends.

Options of ``pipeline.run(...)`` on the local engine: ``on_output``, ``sources`` (replace named
sources' inputs), ``events`` (``(source, ts, value)`` in arrival order, replacing all sources),
``clock`` (stamps values that come without a ts), ``columnar`` (run a chunk at a time over
columns: :mod:`qmtl_engine_local.columnar`, same results) and ``chunk_size`` (its chunk).
"""

from __future__ import annotations

from typing import Any

from qmtl.plan import ExecutionPlan
from qmtl.state import StateBackend
from qmtl.stream_runner import OutputStream, run_in_process, stream_in_process
from qmtl.streaming import RunSummary


def run_stream(plan: ExecutionPlan, state: StateBackend, **options: Any) -> RunSummary:
    """Run ``plan``'s sources to their end; return the :class:`~qmtl.streaming.RunSummary`."""
    options.setdefault("engine", "local")
    columnar = options.pop("columnar", False)
    chunk_size = options.pop("chunk_size", None)
    if columnar:
        from qmtl_engine_local.columnar import DEFAULT_CHUNK, run_columnar

        return run_columnar(
            plan, state, chunk_size=DEFAULT_CHUNK if chunk_size is None else chunk_size, **options
        )
    return run_in_process(plan, state, **options)


def iter_stream(plan: ExecutionPlan, state: StateBackend, **options: Any) -> OutputStream:
    """The iterator form of :func:`run_stream`; its ``summary`` is set at the end."""
    options.setdefault("engine", "local")
    return stream_in_process(plan, state, **options)
