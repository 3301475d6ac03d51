"""qmtl-core's optional extras: libraries imported only when a feature that needs them is used.

| extra | installs | used by |
|---|---|---|
| ``qmtl-core[pandas]`` | pandas | pandas sources, :meth:`~qmtl.pipeline.Pipeline.history_frame` |
| ``qmtl-core[polars]`` | polars, numpy | polars sources, ``history_frame(library="polars")`` |
| ``qmtl-core[arrow]`` | pyarrow, numpy | pyarrow tables, ``.parquet`` and ``.csv`` file sources |
| ``qmtl-core[numpy]`` | numpy | reading numpy values back from Kafka or Redis (qmtl.codec) |
| ``qmtl-core[frames]`` | pandas, polars, pyarrow, numpy | |

:func:`require` imports one of them, or raises :class:`MissingExtraError` naming the extra to
install. Nothing here is imported by ``import qmtl``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from qmtl.errors import QmtlError

#: Top-level module → the qmtl-core extra that installs it.
EXTRAS = {"pandas": "pandas", "polars": "polars", "pyarrow": "arrow", "numpy": "numpy"}


class MissingExtraError(QmtlError, ImportError):
    """A feature needs an optional library that is not installed; the message names the extra."""


def require(module: str, feature: str) -> Any:
    """Import ``module`` (``"pandas"``, ``"pyarrow.parquet"``, ...) for ``feature``.

    Raises :class:`MissingExtraError` (``pip install "qmtl-core[arrow]"``) when the library is
    missing; any other import failure of an installed library propagates unchanged.
    """
    top = module.partition(".")[0]
    try:
        loaded: ModuleType = importlib.import_module(module)
    except ModuleNotFoundError as error:
        # The library itself is absent (or blocked with sys.modules[name] = None): explain.
        # A library that is present but fails to import (a broken install, a missing
        # dependency of its own) propagates unchanged.
        if error.name is None or error.name.partition(".")[0] != top:
            raise
        extra = EXTRAS.get(top, "frames")
        raise MissingExtraError(
            f"{feature} needs {top}, which is not installed: "
            f'pip install "qmtl-core[{extra}]" (or "qmtl-core[frames]" for pandas, polars '
            "and pyarrow together)"
        ) from error
    return loaded


__all__ = ["EXTRAS", "MissingExtraError", "require"]
