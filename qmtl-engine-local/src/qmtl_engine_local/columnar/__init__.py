"""The columnar path of the local engine: a backtest over whole columns, same results.

``pipeline.run(columnar=True)`` (or the engine setting ``columnar``, ``QMTL_LOCAL__COLUMNAR``)
runs the streaming semantics of :mod:`qmtl.streaming` over chunks of events instead of one
event at a time, and gives exactly the event path's outputs, history and run summary:

1. **Rounds of chunks.** Each round reads ``chunk_size`` events (default 65,536) from the
   sources whose watermark is lowest (every source in the first round), so no source runs more
   than a chunk ahead and memory stays bounded by the chunk size, whatever the data's length.
   Within a source, events keep their arrival order; across sources order never mattered.
2. **Sources** (:mod:`._sources`): the late rule, last-event-per-bucket and watermarks of
   :class:`~qmtl.streaming.SourceBucketer`, stated on arrays (running maxima, a stable sort).
3. **Nodes** (:mod:`._align`, :mod:`._nodes`), in topological order: the as-of join and
   ``window=N`` warm-up of :class:`~qmtl.streaming.NodeAligner` over runs of final buckets
   (``searchsorted``), then the function once per bucket (``map``), or once per run for
   ``Node(..., vectorized=True)`` (:mod:`qmtl.vectorized`).
4. **Outputs**: each round's final buckets are written to the state (the last ``max_history``
   of each run; the store would trim the rest at once) and handed to ``on_output`` in bucket
   order per series, as the round closes. A failing node raises
   :class:`~qmtl.errors.NodeExecutionError` naming it after its buckets before the failing one
   are written; nothing computed from the failing bucket is.

The event-at-a-time path stays the reference: the engine contract suite and differential tests
on random pipelines run this path against it. numpy is needed (``pip install
'qmtl-engine-local[columnar]'``); without it ``run(columnar=True)`` raises
:class:`~qmtl.extras.MissingExtraError` naming the extra.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from qmtl.errors import ConfigurationError
from qmtl.vectorized import numpy_module

if TYPE_CHECKING:
    from qmtl.deadline import Deadline
    from qmtl.plan import ExecutionPlan
    from qmtl.state import StateBackend
    from qmtl.streaming import OutputEvent, RunSummary

#: Events read from a source per round, unless ``chunk_size`` says otherwise.
DEFAULT_CHUNK = 65_536


def run_columnar(
    plan: ExecutionPlan,
    state: StateBackend,
    *,
    on_output: Callable[[OutputEvent], None] | None = None,
    sources: Mapping[str, Any] | None = None,
    events: Iterable[tuple[str, Any, Any]] | None = None,
    clock: Callable[[], float] = time.time,
    timeout: float | None = None,
    check_values: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
    engine: str = "local",
) -> RunSummary:
    """Run ``plan``'s sources to their end a chunk at a time; the options are
    :func:`qmtl.stream_runner.run_in_process`'s (``timeout`` as there: :mod:`qmtl.deadline`;
    ``check_values``: every source event and node output through :func:`qmtl.codec.check`),
    plus ``chunk_size``."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigurationError(
            f"chunk_size must be a positive number of events, got {chunk_size!r}"
        )
    numpy_module("The columnar path (run(columnar=True))")
    from qmtl_engine_local.columnar._runner import ColumnRunner, readers

    def work(deadline: Deadline | None) -> RunSummary:
        runner = ColumnRunner(
            plan,
            state if deadline is None else deadline.state(state),
            on_output=on_output if deadline is None else deadline.output(on_output),
            engine=engine,
            deadline=deadline,
            check_values=check_values,
        )
        return runner.run(readers(plan, sources=sources, events=events, clock=clock), chunk_size)

    if timeout is None:
        return work(None)
    from qmtl.deadline import run_with_deadline

    return run_with_deadline(plan.pipeline, timeout, work)


__all__ = ["DEFAULT_CHUNK", "run_columnar"]
