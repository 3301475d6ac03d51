"""Building the plugin manager and collecting what plugins register.

Nothing here runs at import. :func:`load_plugins` is called at the application edge (a
``pipeline.execute``/``run`` call or a CLI command) and its result is reused for the whole run,
so plugin lookups never happen per node call.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from qmtl import hookspecs
from qmtl.errors import PluginError, PluginLoadError
from qmtl.registry import Category, Registration, Registry

GROUP = hookspecs.PROJECT_NAME
BUILTIN_PLUGIN = "qmtl.builtin"


def create_plugin_manager(
    *, autoload: bool = True, disabled: Collection[str] = ()
) -> pluggy.PluginManager:
    """Return a new plugin manager with QMTL's hookspecs, built-ins and entry points loaded.

    ``autoload=False`` (``QMTL_PLUGIN_AUTOLOAD=0``) loads only the built-ins; ``disabled``
    (``QMTL_DISABLE_PLUGINS=a,b``) names entry points to skip. An entry point that fails to
    import raises :class:`PluginLoadError` naming it and its distribution.
    """
    from qmtl import _builtin

    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    pm.register(_builtin, name=BUILTIN_PLUGIN)
    for name in disabled:
        pm.set_blocked(name)
    if autoload:
        for entry_point in metadata.entry_points(group=GROUP):
            if pm.is_blocked(entry_point.name):
                continue
            try:
                pm.load_setuptools_entrypoints(GROUP, name=entry_point.name)
            except Exception as error:  # any import-time failure of third-party code
                dist = entry_point.dist.name if entry_point.dist else "an unknown distribution"
                raise PluginLoadError(
                    f"Plugin entry point '{entry_point.name} = {entry_point.value}' from "
                    f"{dist} failed to load: {type(error).__name__}: {error}. Reinstall or fix "
                    f"{dist}, or skip it with QMTL_DISABLE_PLUGINS={entry_point.name}"
                ) from error
        check_core_compatibility(pm)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as error:
        name, origin, _version = _origin(pm, error.plugin)
        raise PluginLoadError(
            f"Plugin '{name}' (from {origin or 'an unknown distribution'}) does not fit QMTL's "
            f"hooks: {error}. Fix the hook name (see qmtl.hookspecs) or skip the plugin with "
            f"QMTL_DISABLE_PLUGINS={name}"
        ) from error
    return pm


class QmtlWarning(UserWarning):
    """Base class of the warnings QMTL issues."""


class PluginCompatibilityWarning(QmtlWarning):
    """A loaded plugin's distribution requires a qmtl-core version other than the installed one."""


def check_core_compatibility(pm: pluggy.PluginManager) -> None:
    """Warn for each loaded plugin whose distribution requires a qmtl-core range that excludes
    the installed qmtl-core; the warning names the plugin, its distribution, the range and the
    installed version."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    core = _version("qmtl-core")
    if core is None:  # running from a source tree without metadata: nothing to compare
        return
    installed = Version(core)
    for plugin, dist in pm.list_plugin_distinfo():
        for line in dist.requires or ():
            try:
                requirement = Requirement(line)
            except InvalidRequirement:
                continue
            if canonicalize_name(requirement.name) != "qmtl-core":
                continue
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            if requirement.specifier.contains(installed, prereleases=True):
                continue
            name, distribution = pm.get_name(plugin), dist.metadata["name"]
            wanted = f"qmtl-core{requirement.specifier}"
            warnings.warn(
                PluginCompatibilityWarning(
                    f"Plugin '{name}' from {distribution} {dist.version} requires {wanted}, but "
                    f"qmtl-core {core} is installed; it may fail. Install a {distribution} "
                    f"release built for qmtl-core {core}, or pip install '{wanted}'"
                ),
                stacklevel=3,
            )


@dataclass
class Plugins:
    """Everything the loaded plugins registered, by category."""

    manager: pluggy.PluginManager
    engines: Registry = field(default_factory=lambda: Registry("engine"))
    states: Registry = field(default_factory=lambda: Registry("state"))
    deploy_targets: Registry = field(default_factory=lambda: Registry("deploy"))

    def registry(self, category: Category) -> Registry:
        """The registry of ``category``."""
        return {"engine": self.engines, "state": self.states, "deploy": self.deploy_targets}[
            category
        ]

    def registrations(self) -> list[Registration]:
        """Every registration, engines first."""
        return [*self.engines, *self.states, *self.deploy_targets]

    def distributions(self) -> list[tuple[str, str | None, str | None]]:
        """``(plugin name, distribution, version)`` of every registered plugin."""
        return [_origin(self.manager, plugin) for plugin in self.manager.get_plugins()]


def _origin(pm: pluggy.PluginManager, plugin: object) -> tuple[str, str | None, str | None]:
    name = pm.get_name(plugin) or repr(plugin)
    for loaded, dist in pm.list_plugin_distinfo():
        if loaded is plugin:
            return name, dist.metadata["name"], dist.version
    if name == BUILTIN_PLUGIN:
        return name, "qmtl-core", _version("qmtl-core")
    return name, None, None


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


_HOOKS: dict[Category, str] = {
    "engine": "qmtl_register_engines",
    "state": "qmtl_register_state_backends",
    "deploy": "qmtl_register_deploy_targets",
}


def load_plugins(*, autoload: bool = True, disabled: Collection[str] = ()) -> Plugins:
    """Build a plugin manager and fill the registries, attributing each kind to its plugin."""
    pm = create_plugin_manager(autoload=autoload, disabled=disabled)
    plugins = Plugins(manager=pm)
    for category, hook_name in _HOOKS.items():
        registry = plugins.registry(category)
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            registry._set_origin(*_origin(pm, impl.plugin))
            try:
                impl.function(registry=registry)
            except PluginError:
                raise
            except Exception as error:  # third-party registration code
                raise PluginLoadError(
                    f"Plugin '{impl.plugin_name}' failed in {hook_name}: "
                    f"{type(error).__name__}: {error}"
                ) from error
    return plugins


def register_commands(pm: pluggy.PluginManager, cli: Any) -> None:
    """Let plugins add commands to the root CLI group.

    A plugin whose ``qmtl_register_commands`` raises is a :class:`PluginLoadError` naming it
    (the ``qmtl`` command prints one line instead of a traceback).
    """
    for impl in pm.hook.qmtl_register_commands.get_hookimpls():
        try:
            impl.function(cli=cli)
        except PluginError:
            raise
        except Exception as error:  # third-party registration code
            name, dist, _version = _origin(pm, impl.plugin)
            raise PluginLoadError(
                f"Plugin '{name}' (from {dist or 'an unknown distribution'}) failed to add its "
                f"commands: {type(error).__name__}: {error}. Reinstall or fix "
                f"{dist or name}, or skip it with QMTL_DISABLE_PLUGINS={name}"
            ) from error
