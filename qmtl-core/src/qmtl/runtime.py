"""Resolving which engine and state backend a run uses — once per run, never per node.

A pipeline keeps the engines and state backends its :class:`Resolver` built, so repeated runs
with the same selection reuse them, and the history API reads the state backend the pipeline
last ran with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qmtl.engine import Engine
from qmtl.plugins import Plugins, load_plugins
from qmtl.settings import BackendSelection, QmtlSettings, load_settings
from qmtl.state import StateBackend


class Resolver:
    """Loads settings and plugins lazily, once, and builds engines and state backends."""

    def __init__(self, settings: QmtlSettings | None = None) -> None:
        self._settings = settings
        self._plugins: Plugins | None = None

    @property
    def settings(self) -> QmtlSettings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def plugins(self) -> Plugins:
        if self._plugins is None:
            settings = self.settings
            self._plugins = load_plugins(
                autoload=settings.plugin_autoload, disabled=settings.disable_plugins
            )
        return self._plugins

    def engine(self, kind: str | None, options: Mapping[str, Any]) -> Engine:
        selection = self._select(self.settings.engine, kind)
        registration = self.plugins.engines.get(selection.kind)
        return registration.create(self.settings.options_for(selection, options))  # type: ignore[no-any-return]

    def state(self, kind: str | None, options: Mapping[str, Any]) -> StateBackend:
        selection = self._select(self.settings.state, kind)
        registration = self.plugins.states.get(selection.kind)
        return registration.create(self.settings.options_for(selection, options))  # type: ignore[no-any-return]

    @staticmethod
    def _select(configured: BackendSelection, kind: str | None) -> BackendSelection:
        if kind is None or kind == configured.kind:
            return configured
        return BackendSelection(kind=kind)
