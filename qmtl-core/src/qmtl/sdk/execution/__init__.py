"""Seed import path for engines and stream/state helpers.

``MockExecutionEngine`` lives in core; the others come from their distributions and are imported
on first use: ``LocalExecutionEngine`` (qmtl-engine-local), ``ParallelExecutionEngine`` and
``StreamProcessor`` (qmtl-engine-kafka), ``StateManager`` (qmtl-state-redis).
"""

from __future__ import annotations

from typing import Any

from qmtl.mock import MockExecutionEngine

__all__ = [
    "LocalExecutionEngine",
    "MockExecutionEngine",
    "ParallelExecutionEngine",
    "StateManager",
    "StreamProcessor",
]

_PROVIDERS = {
    "LocalExecutionEngine": ("qmtl_engine_local", "qmtl-engine-local"),
    "ParallelExecutionEngine": ("qmtl_engine_kafka", "qmtl-engine-kafka"),
    "StreamProcessor": ("qmtl_engine_kafka", "qmtl-engine-kafka"),
    "StateManager": ("qmtl_state_redis", "qmtl-state-redis"),
}


def __getattr__(name: str) -> Any:
    if name not in _PROVIDERS:
        raise AttributeError(f"module 'qmtl.sdk.execution' has no attribute {name!r}")
    from qmtl._lazy import import_from

    module_name, distribution = _PROVIDERS[name]
    module = import_from(module_name, distribution, name)
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(
            f"{distribution} is installed but does not provide {name}; upgrade {distribution}"
        ) from None
