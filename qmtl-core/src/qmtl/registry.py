"""Typed registries that plugins contribute engines, state backends and deploy targets to."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict

from qmtl.errors import ConfigurationError, PluginError, QmtlError, UnknownBackendError

Category = Literal["engine", "state", "deploy"]

#: Where the kinds QMTL knows about come from, for "pip install ..." hints.
KNOWN_PROVIDERS: dict[str, dict[str, str]] = {
    "engine": {
        "local": "qmtl-engine-local",
        "kafka": "qmtl-engine-kafka",
        "mock": "qmtl-core",
        "threads": "qmtl-engine-threads",
    },
    "state": {"memory": "qmtl-core", "redis": "qmtl-state-redis"},
    "deploy": {"dockerfile": "qmtl-deploy", "image": "qmtl-deploy", "k8s": "qmtl-deploy"},
}

_NOUN = {"engine": "engine", "state": "state backend", "deploy": "deploy target"}


class NoOptions(BaseModel):
    """Settings model of a plugin that takes no options."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class Registration:
    """One kind a plugin registered."""

    category: Category
    kind: str
    factory: Callable[[Any], Any]
    settings_model: type[BaseModel]
    plugin: str
    distribution: str | None
    version: str | None
    description: str

    def create(self, options: Mapping[str, Any] | BaseModel | None = None) -> Any:
        """Validate ``options`` with the plugin's settings model and call its factory.

        A factory that fails with anything but a :class:`QmtlError` raises :class:`PluginError`
        naming the kind and the distribution that registered it.
        """
        validated = self.validate_options(options)
        try:
            return self.factory(validated)
        except QmtlError:
            raise
        except Exception as error:  # third-party factory code
            raise PluginError(
                f"{_NOUN[self.category].capitalize()} '{self.kind}' (from "
                f"{self.distribution or self.plugin}) failed to start: "
                f"{type(error).__name__}: {error}. Check its options, or report it to "
                f"{self.distribution or self.plugin}"
            ) from error

    def validate_options(self, options: Mapping[str, Any] | BaseModel | None) -> BaseModel:
        """Return ``options`` as an instance of this kind's settings model."""
        if isinstance(options, self.settings_model):
            return options
        if isinstance(options, BaseModel):
            options = options.model_dump()
        try:
            return self.settings_model.model_validate(dict(options or {}))
        except ValueError as error:
            raise ConfigurationError(
                f"Invalid options for {_NOUN[self.category]} '{self.kind}' "
                f"(from {self.distribution or self.plugin}): "
                f"{_without_inputs(error, list(self.settings_model.model_fields))}"
            ) from error


def _without_inputs(error: ValueError, fields: list[str]) -> str:
    """A validation error as text without the rejected values (they may be passwords); an
    unknown option names the closest known one."""
    if not isinstance(error, pydantic.ValidationError):
        return str(error)
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in item["loc"]) or "(options)"
        problem = f"{where}: {item['msg']}"
        if item["type"] == "extra_forbidden":
            close = difflib.get_close_matches(where, fields, n=1, cutoff=0.6)
            problem += f" (did you mean '{close[0]}'?)" if close else f" (options: {fields})"
        problems.append(problem)
    return "; ".join(problems)


class Registry:
    """The kinds of one category, filled by plugins through :meth:`add`."""

    def __init__(self, category: Category) -> None:
        self.category: Category = category
        self._entries: dict[str, Registration] = {}
        self._origin: tuple[str, str | None, str | None] = ("qmtl", None, None)

    def add(
        self,
        kind: str,
        factory: Callable[[Any], Any],
        settings_model: type[BaseModel] = NoOptions,
        *,
        description: str = "",
    ) -> None:
        """Register ``kind``; ``factory(options)`` builds it from a ``settings_model`` instance."""
        plugin, distribution, version = self._origin
        existing = self._entries.get(kind)
        if existing is not None and existing.plugin != plugin:
            raise PluginError(
                f"{_NOUN[self.category].capitalize()} '{kind}' is registered by both "
                f"'{existing.plugin}' and '{plugin}'; disable one with QMTL_DISABLE_PLUGINS"
            )
        self._entries[kind] = Registration(
            self.category, kind, factory, settings_model, plugin, distribution, version, description
        )

    def get(self, kind: str) -> Registration:
        """Return the registration of ``kind`` or raise :class:`UnknownBackendError`."""
        try:
            return self._entries[kind]
        except KeyError:
            noun = _NOUN[self.category]
            installed = ", ".join(sorted(self._entries)) or "none"
            package = KNOWN_PROVIDERS[self.category].get(kind)
            fix = (
                f"pip install {package}"
                if package
                else "install the package that provides it, or pick an installed kind"
            )
            close = difflib.get_close_matches(kind, list(self._entries), n=1, cutoff=0.6)
            if close and package is None:
                fix = f"did you mean '{close[0]}'? Or {fix}"
            raise UnknownBackendError(
                f"{noun} '{kind}' is not installed: {fix} (installed: {installed})"
            ) from None

    def kinds(self) -> list[str]:
        """Registered kinds, sorted."""
        return sorted(self._entries)

    def __iter__(self) -> Iterator[Registration]:
        return iter(self._entries.values())

    def __contains__(self, kind: object) -> bool:
        return kind in self._entries

    def _set_origin(self, plugin: str, distribution: str | None, version: str | None) -> None:
        self._origin = (plugin, distribution, version)
