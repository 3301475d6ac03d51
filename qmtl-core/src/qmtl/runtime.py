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
        self._engines: dict[tuple[str | None, str], Engine] = {}
        self._states: dict[tuple[str | None, str], StateBackend] = {}

    def select(
        self,
        engine: str | Engine | None,
        state: str | StateBackend | None,
        engine_options: Mapping[str, Any] | None,
        state_options: Mapping[str, Any] | None,
        *,
        test_mode: bool = False,
        parallel: bool = False,
        brokers: str | None = None,
        redis_uri: str | None = None,
        last_state: StateBackend | None = None,
    ) -> tuple[Engine, StateBackend]:
        """The engine and state backend of a run (built once per selection, then reused).

        Seed keywords: ``test_mode`` means the local engine, ``parallel`` the Kafka engine with
        Redis state, ``brokers`` / ``redis_uri`` their addresses. With no state asked for, the
        pipeline's ``last_state`` is reused, so history reads what the last run wrote.
        """
        engine_options = dict(engine_options or {})
        state_options = dict(state_options or {})
        if test_mode and engine is None:
            engine = "local"
        if parallel and engine is None:
            engine = "kafka"
        if brokers is not None:
            engine_options.setdefault("bootstrap_servers", brokers)
        if redis_uri is not None:
            state = "redis" if state is None else state
            state_options.setdefault("url", redis_uri)
        if parallel and state is None:
            state = "redis"
        return self.engine_for(engine, engine_options), self.state_for(
            state, state_options, last_state
        )

    def engine_for(self, engine: str | Engine | None, options: dict[str, Any]) -> Engine:
        """``engine`` itself when it is an object, else the cached engine of that kind."""
        if engine is not None and not isinstance(engine, str):
            return engine
        key = (engine, repr(sorted(options.items())))
        found = self._engines.get(key)
        if found is None:
            found = self._engines[key] = self.engine(engine, options)
        return found

    def state_for(
        self,
        state: str | StateBackend | None,
        options: dict[str, Any],
        last_state: StateBackend | None = None,
    ) -> StateBackend:
        """``state`` itself when it is an object, ``last_state`` when nothing is asked for,
        else the cached backend of that kind."""
        if state is not None and not isinstance(state, str):
            return state
        if state is None and not options and last_state is not None:
            return last_state
        key = (state, repr(sorted(options.items())))
        found = self._states.get(key)
        if found is None:
            found = self._states[key] = self.state(state, options)
        return found

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
