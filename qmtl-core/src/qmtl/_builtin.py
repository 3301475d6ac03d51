"""QMTL's built-in plugin: the memory state backend and the mock engine.

Registered by :func:`qmtl.plugins.create_plugin_manager` through the same hooks third-party
plugins implement.
"""

from __future__ import annotations

from typing import Any

from qmtl.hookspecs import hookimpl
from qmtl.registry import NoOptions, Registry


def _memory_state(options: Any) -> Any:
    from qmtl.state import MemoryStateBackend

    return MemoryStateBackend()


def _mock_engine(options: Any) -> Any:
    from qmtl.mock import MockExecutionEngine

    return MockExecutionEngine(options)


@hookimpl
def qmtl_register_engines(registry: Registry) -> None:
    from qmtl.mock import MockEngineSettings

    registry.add(
        "mock", _mock_engine, MockEngineSettings, description="Replace outputs, record calls"
    )


@hookimpl
def qmtl_register_state_backends(registry: Registry) -> None:
    registry.add("memory", _memory_state, NoOptions, description="In-process history (the default)")
