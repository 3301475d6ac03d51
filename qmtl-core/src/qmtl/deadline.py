"""Timeouts of in-process runs (``timeout=`` of ``execute``, ``run`` and ``stream``).

The run happens on a worker thread and the caller waits at most ``timeout`` seconds for it, then
raises :class:`~qmtl.errors.PipelineTimeoutError` naming the node that was running. Python
cannot pre-empt a function: that node finishes in the background and the run stops at its next
step (the next node, or the next source event). Nothing is recorded after the timeout: the state
backend refuses writes and ``on_output`` is not called any more, since the caller was told the
run failed. A node's function is never wrapped or changed. Without a timeout none of this runs:
the run happens in the caller's thread at full speed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from qmtl.errors import PipelineTimeoutError

if TYPE_CHECKING:
    from qmtl.plan import PlanNode
    from qmtl.state import BucketWrite, SeriesKey, StateBackend

T = TypeVar("T")
InvokeHook = Callable[["PlanNode", Sequence[Any]], Any]


class Stopped(Exception):
    """Raised on the worker thread at its next step once the caller has given up."""


class Deadline:
    """What the worker thread checks: whether the caller gave up, and which node runs."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.running: str | None = None

    def on_node(self, name: str | None) -> bool:
        """For :func:`qmtl.engine.execute_plan`: record the node starting; ``False`` stops."""
        if self.stopped.is_set():
            return False
        self.running = name
        return True

    def hook(self, inner: InvokeHook | None) -> InvokeHook:
        """An invoke hook that records which node runs (then calls ``inner`` or the node)."""

        def invoke(node: PlanNode, args: Sequence[Any]) -> Any:
            self.running = node.name
            try:
                return node.invoke(args) if inner is None else inner(node, args)
            finally:
                self.running = None

        return invoke

    def events(self, events: Iterable[T]) -> Iterator[T]:
        """``events``, stopping (:class:`Stopped`) once the caller gave up."""
        stopped = self.stopped
        for event in events:
            if stopped.is_set():
                raise Stopped
            yield event

    def output(self, on_output: Callable[[Any], None] | None) -> Callable[[Any], None] | None:
        """``on_output``, not called any more once the caller gave up."""
        if on_output is None:
            return None
        stopped = self.stopped

        def emit(event: Any) -> None:
            if not stopped.is_set():
                on_output(event)

        return emit

    def state(self, state: StateBackend) -> StateBackend:
        """``state``, refusing writes once the caller gave up."""
        return _StopWrites(state, self.stopped)


class _StopWrites:
    """A state backend view that drops writes after the timeout (reads go through)."""

    def __init__(self, state: StateBackend, stopped: threading.Event) -> None:
        self._state = state
        self._stopped = stopped

    def write(self, key: SeriesKey, timestamp: float, value: Any, **kwargs: Any) -> None:
        if not self._stopped.is_set():
            self._state.write(key, timestamp, value, **kwargs)

    def write_many(self, writes: Iterable[BucketWrite]) -> None:
        if not self._stopped.is_set():
            self._state.write_many(writes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._state, name)


def run_with_deadline(pipeline: str, timeout: float, work: Callable[[Deadline], T]) -> T:
    """``work(deadline)`` on a worker thread; its result, its error, or, after ``timeout``
    seconds, :class:`PipelineTimeoutError` naming the node that was running."""
    deadline = Deadline()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = work(deadline)
        except Stopped:
            pass
        except BaseException as error:  # re-raised in the caller's thread below
            outcome["error"] = error

    worker = threading.Thread(target=target, name=f"qmtl-{pipeline}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        deadline.stopped.set()
        raise PipelineTimeoutError(pipeline, deadline.running, timeout)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]  # type: ignore[no-any-return]
