"""Seed import path: ``from qmtl.sdk.execution.local import LocalExecutionEngine``.

LocalExecutionEngine comes from qmtl-engine-local, imported on first use; when it is not
installed, the error names the package to install.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qmtl_engine_local import LocalExecutionEngine

__all__ = ["LocalExecutionEngine"]


def __getattr__(name: str) -> Any:
    from qmtl.sdk.execution import provided

    return provided(__name__, name, tuple(__all__))
