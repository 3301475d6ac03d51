"""Seed import path: ``from qmtl.sdk.execution.parallel_engine import ParallelExecutionEngine``.

ParallelExecutionEngine comes from qmtl-engine-kafka, imported on first use; when it is not
installed, the error names the package to install.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qmtl_engine_kafka import ParallelExecutionEngine

__all__ = ["ParallelExecutionEngine"]


def __getattr__(name: str) -> Any:
    from qmtl.sdk.execution import provided

    return provided(__name__, name, tuple(__all__))
