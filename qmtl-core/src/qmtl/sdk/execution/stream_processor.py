"""Seed import path: ``from qmtl.sdk.execution.stream_processor import StreamProcessor``.

StreamProcessor comes from qmtl-engine-kafka, imported on first use; when it is not
installed, the error names the package to install.
"""

from typing import Any

#: Resolved on first use by ``__getattr__`` (the class lives in another distribution).
PROVIDES = ("StreamProcessor",)
__all__ = list(PROVIDES)


def __getattr__(name: str) -> Any:
    from qmtl.sdk.execution import provided

    return provided(__name__, name, PROVIDES)
