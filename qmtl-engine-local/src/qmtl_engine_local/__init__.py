"""The local QMTL engine: one process, no server."""

from qmtl_engine_local.engine import LocalEngineSettings, LocalExecutionEngine

__all__ = ["LocalEngineSettings", "LocalExecutionEngine"]
