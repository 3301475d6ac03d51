"""qmtl-state-redis: QMTL's Redis state backend and the seed-compatible ``StateManager``.

``RedisStateBackend`` implements :class:`qmtl.state.StateBackend`; ``StateManager`` is the
earlier SDK's face over it. Both are imported on first attribute access, so importing this
package (as the plugin loader does) does not import the Redis client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qmtl_state_redis.settings import RedisStateSettings, mask_url

if TYPE_CHECKING:
    from qmtl_state_redis.backend import RedisStateBackend
    from qmtl_state_redis.manager import StateManager

__all__ = ["RedisStateBackend", "RedisStateSettings", "StateManager", "mask_url"]

_LAZY = {
    "RedisStateBackend": "qmtl_state_redis.backend",
    "StateManager": "qmtl_state_redis.manager",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'qmtl_state_redis' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
