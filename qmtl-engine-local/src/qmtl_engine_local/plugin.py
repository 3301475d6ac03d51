"""Entry point of qmtl-engine-local: registers the ``local`` engine."""

from __future__ import annotations

from typing import Any

from qmtl import hookimpl
from qmtl.registry import Registry


def _local_engine(options: Any) -> Any:
    from qmtl_engine_local.engine import LocalExecutionEngine

    return LocalExecutionEngine(options)


@hookimpl
def qmtl_register_engines(registry: Registry) -> None:
    from qmtl_engine_local.engine import LocalEngineSettings

    registry.add("local", _local_engine, LocalEngineSettings, description="One process, no server")
