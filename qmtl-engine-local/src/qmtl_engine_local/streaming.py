"""Streaming on the local engine: every source consumed in event-time order, in one process.

The semantics live in :mod:`qmtl.streaming` (shared with every engine) and the in-process
runner in :mod:`qmtl.stream_runner` (also the oracle of the :mod:`qmtl.testing` contract
suites); this module is the local engine's entry to them.
Sources are ordered by :func:`qmtl.sources.merged_events`: the earliest head first (ties by
plan order), each source read lazily at its own pace and flushed as soon as it ends.

Options of ``pipeline.run(...)`` on the local engine: those every engine takes (``on_output``,
``sources`` replacing named sources' inputs, ``events`` as ``(source, ts, value)`` in arrival
order replacing all sources, ``clock`` stamping values that come without a ts, ``timeout``
bounding the whole run: :mod:`qmtl.deadline`), ``batch``, ``check_values`` (default: the
engine's setting; on, every source event and node output goes through
:func:`qmtl.codec.check`), and ``columnar`` and ``chunk_size``, which select the columnar path
(:mod:`qmtl_engine_local.columnar`, same results).
"""

from __future__ import annotations

from typing import Any

from qmtl.plan import ExecutionPlan
from qmtl.state import StateBackend
from qmtl.stream_runner import run_in_process
from qmtl.streaming import RunSummary


def run_stream(plan: ExecutionPlan, state: StateBackend, **options: Any) -> RunSummary:
    """Run ``plan``'s sources to their end; return the :class:`~qmtl.streaming.RunSummary`."""
    options.setdefault("engine", "local")
    return run_in_process(plan, state, **options)
