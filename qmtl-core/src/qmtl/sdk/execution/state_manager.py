"""Seed import path: ``from qmtl.sdk.execution.state_manager import StateManager``.

StateManager comes from qmtl-state-redis, imported on first use; when it is not
installed, the error names the package to install.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qmtl_state_redis import StateManager

__all__ = ["StateManager"]


def __getattr__(name: str) -> Any:
    from qmtl.sdk.execution import provided

    return provided(__name__, name, tuple(__all__))
