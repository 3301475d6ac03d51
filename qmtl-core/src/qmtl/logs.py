"""Loggers for library code: structlog when the application configured it, stdlib otherwise.

QMTL's modules log with ``log = get_logger(__name__)``. An application (or the ``qmtl`` CLI,
which configures structlog at the edge) that called :func:`structlog.configure` gets every event
through its own processors. An application that configured nothing gets the standard library's
behaviour instead of structlog's default of printing every level to stdout: events go to the
``logging`` logger of the module, so warnings and errors reach stderr through Python's
last-resort handler, info and debug stay silent, and ``logging.basicConfig(level=...)`` or a
handler on ``qmtl`` / ``qmtl_engine_kafka`` / ... turns them on. A notebook's or a backtest's
stdout stays the user's.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

_STDLIB_PROCESSORS: list[Any] = [
    structlog.stdlib.filter_by_level,
    structlog.processors.KeyValueRenderer(key_order=["event"], sort_keys=True),
]


class _LibraryLogger:
    """A structlog-style logger (``log.info("event", key=value)``) that picks its route per
    call, so configuring structlog after import still takes effect."""

    __slots__ = ("_name", "_stdlib")

    def __init__(self, name: str) -> None:
        self._name = name
        self._stdlib: Any = None

    def _target(self) -> Any:
        if structlog.is_configured():
            return structlog.get_logger(self._name)
        if self._stdlib is None:
            self._stdlib = structlog.wrap_logger(
                logging.getLogger(self._name),
                processors=_STDLIB_PROCESSORS,
                wrapper_class=structlog.stdlib.BoundLogger,
            )
        return self._stdlib

    def __getattr__(self, method: str) -> Any:
        return getattr(self._target(), method)


def get_logger(name: str) -> Any:
    """The logger for module ``name`` (see the module documentation for where events go)."""
    return _LibraryLogger(name)


__all__ = ["get_logger"]
