"""Entry point of qmtl-state-redis for the ``qmtl`` plugin group: state kind ``redis``.

Importing this module does not import the Redis client; the factory does, when a pipeline
selects ``state="redis"``.
"""

from __future__ import annotations

from typing import Any

from qmtl import hookimpl
from qmtl.registry import Registry
from qmtl_state_redis.settings import RedisStateSettings


def _create(options: RedisStateSettings) -> Any:
    from qmtl_state_redis.backend import RedisStateBackend

    return RedisStateBackend(options)


@hookimpl
def qmtl_register_state_backends(registry: Registry) -> None:
    registry.add(
        "redis",
        _create,
        RedisStateSettings,
        description="Per-node, per-interval history in Redis sorted sets (qmtl-state-redis)",
    )
