"""Resolving which engine and state backend a run uses — once per run, never per node.

A pipeline keeps the engines and state backends its :class:`Resolver` built, so repeated runs
with the same selection reuse them, and the history API reads the state backend the pipeline
last ran with.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from qmtl.engine import Engine
from qmtl.errors import ConfigurationError
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
            plugins = load_plugins(
                autoload=settings.plugin_autoload, disabled=settings.disable_plugins
            )
            check_variables(settings, plugins)
            self._plugins = plugins
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


def check_variables(settings: QmtlSettings, plugins: Plugins) -> None:
    """Refuse ``QMTL_*`` variables that miss an installed kind by a typo, now that the kinds are
    known: ``QMTL_KAFAK__BOOTSTRAP_SERVERS`` (a kind close to ``kafka``) and
    ``QMTL_KAFKA_BOOTSTRAP_SERVERS`` (one underscore before an option of ``kafka``). Variables
    far from every kind are left alone: they may be another tool's, or an absent plugin's."""
    registrations = {r.kind: r for r in plugins.registrations()}
    for kind, names in settings.env_kinds.items():
        if kind in registrations:
            continue
        close = difflib.get_close_matches(kind, list(registrations), n=1, cutoff=0.75)
        if close:
            option = names[0].partition("__")[2]
            raise ConfigurationError(
                f"{names[0]} names kind '{kind}', which no installed plugin registers; did you "
                f"mean QMTL_{close[0].upper()}__{option}? (installed kinds: "
                f"{', '.join(sorted(registrations))})"
            )
    for name in settings.other_variables:
        rest = name[len("QMTL_") :]
        for kind, registration in registrations.items():
            stem = f"{kind.upper()}_"
            option = rest[len(stem) :].lower()
            if rest.startswith(stem) and option in registration.settings_model.model_fields:
                raise ConfigurationError(
                    f"{name} is not read: an option of kind '{kind}' takes two underscores "
                    f"after the kind; did you mean QMTL_{kind.upper()}__{option.upper()}?"
                )
