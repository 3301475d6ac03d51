"""Importing a sibling distribution on first use, with an error that names how to install it."""

from __future__ import annotations

import importlib
from types import ModuleType

from qmtl.errors import UnknownBackendError


def import_from(module: str, distribution: str, wanted: str) -> ModuleType:
    """Import ``module`` from ``distribution`` or raise naming ``pip install distribution``."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is None or not module.startswith(error.name):
            raise
        raise UnknownBackendError(
            f"{wanted} is provided by {distribution}, which is not installed: "
            f"pip install {distribution}"
        ) from error
