"""Seed import path for engines and stream/state helpers.

``MockExecutionEngine`` lives in core; the others come from their distributions and are imported
on first use: ``LocalExecutionEngine`` (qmtl-engine-local), ``ParallelExecutionEngine`` and
``StreamProcessor`` (qmtl-engine-kafka), ``StateManager`` (qmtl-state-redis). The seed's
per-engine modules import too: ``qmtl.sdk.execution.local``, ``.parallel_engine``,
``.state_manager`` and ``.stream_processor``.
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
    return provided(__name__, name, tuple(_PROVIDERS))


def provided(module: str, name: str, names: tuple[str, ...]) -> Any:
    """``name`` from the distribution that provides it (imported on first use), for ``module``
    (this package or one of the seed's submodules) that lists ``names``."""
    if name not in names:
        raise AttributeError(f"module '{module}' has no attribute {name!r}")
    from qmtl._lazy import import_from

    module_name, distribution = _PROVIDERS[name]
    imported = import_from(module_name, distribution, name)
    try:
        return getattr(imported, name)
    except AttributeError:
        raise AttributeError(
            f"{distribution} is installed but does not provide {name}; upgrade {distribution}"
        ) from None
