"""The iterator form of any engine's ``run``: :class:`ThreadedOutputStream` drives the run in a
thread and hands its final buckets over a bounded queue (what ``pipeline.stream()`` returns for
an engine without a ``stream`` method of its own). :class:`OutputStream` is what every such
iterator offers, whoever made it."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from qmtl.streaming import OutputEvent
from qmtl.summary import RunSummary


class OutputStream(Protocol):
    """What ``pipeline.stream()`` returns: an iterator of final buckets whose ``summary`` is
    the run's once it is exhausted (``None`` before), and ``close()`` to stop the run early."""

    summary: RunSummary | None

    def __iter__(self) -> Iterator[OutputEvent]: ...

    def __next__(self) -> OutputEvent: ...

    def close(self) -> None: ...


class _Stop(Exception):
    """Raised inside a threaded run when its reader went away."""


class ThreadedOutputStream(Iterator[OutputEvent]):
    """Iterator form of any engine's ``run(on_output=...)``: the run happens in a thread and
    hands final buckets over a bounded queue. Closing the iterator (or dropping it) stops the
    run at its next output. ``summary`` is set once the iterator is exhausted; an error of the
    run is raised by ``next``."""

    def __init__(
        self,
        run: Callable[[Callable[[OutputEvent], None]], RunSummary],
        on_output: Callable[[OutputEvent], None] | None = None,
    ) -> None:
        self.summary: RunSummary | None = None
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1024)
        self._stopped = threading.Event()
        self._finished = False

        def emit(event: OutputEvent) -> None:
            if on_output is not None:
                on_output(event)
            while True:
                if self._stopped.is_set():
                    raise _Stop
                try:
                    self._queue.put(("event", event), timeout=0.1)
                    return
                except queue.Full:
                    continue

        def work() -> None:
            try:
                result = run(emit)
            except _Stop:
                return
            except BaseException as error:  # handed to the reader's thread
                self._queue.put(("error", error))
                return
            self._queue.put(("done", result))

        self._thread = threading.Thread(target=work, name="qmtl-stream", daemon=True)
        self._thread.start()

    def __next__(self) -> OutputEvent:
        if self._finished:
            raise StopIteration
        kind, item = self._queue.get()
        if kind == "event":
            return item  # type: ignore[no-any-return]
        self._finished = True
        if kind == "error":
            raise item
        self.summary = item
        raise StopIteration

    def close(self) -> None:
        """Stop the run (at its next output) and release the thread."""
        self._stopped.set()
        self._finished = True

    def __del__(self) -> None:
        self._stopped.set()
