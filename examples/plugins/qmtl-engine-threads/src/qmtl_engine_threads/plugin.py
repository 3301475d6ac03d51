"""Entry point of qmtl-engine-threads: registers the ``threads`` engine.

Published in ``pyproject.toml`` as::

    [project.entry-points.qmtl]
    threads = "qmtl_engine_threads.plugin"

Importing this module stays cheap: the engine module is imported by the factory, when a run
selects ``threads``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qmtl import hookimpl

if TYPE_CHECKING:
    from qmtl.registry import Registry


def _threads_engine(options: Any) -> Any:
    from qmtl_engine_threads.engine import ThreadPoolEngine

    return ThreadPoolEngine(options)


@hookimpl
def qmtl_register_engines(registry: Registry) -> None:
    from qmtl_engine_threads.engine import ThreadsEngineSettings

    registry.add(
        "threads",
        _threads_engine,
        ThreadsEngineSettings,
        description="Independent branches of the DAG on a thread pool (qmtl-engine-threads)",
    )
