"""The hooks a QMTL plugin may implement.

The pluggy project name, the marker name and the entry-point group are all ``qmtl``. Hooks are
always called with keyword arguments. A plugin is a module (or object) with functions decorated
``@qmtl.hookimpl``, published under ``[project.entry-points.qmtl]``::

    [project.entry-points.qmtl]
    threads = "qmtl_engine_threads.plugin"

Each ``qmtl_register_*`` hook fires once, when a plugin manager is built for a run or a CLI
command; plugins contribute through the typed registry they are given, and import heavy client
libraries only inside the factories they register.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from qmtl.registry import Registry

PROJECT_NAME = "qmtl"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def qmtl_register_engines(registry: Registry) -> None:
    """Register execution engines.

    Fires: once per plugin manager, before an engine is selected.
    Params: ``registry`` — call ``registry.add(kind, factory, settings_model)``; ``factory`` is
    called as ``factory(options)`` with the validated ``settings_model`` instance and returns an
    object implementing :class:`qmtl.engine.Engine`.
    Returns: nothing; return values are ignored.
    """


@hookspec
def qmtl_register_state_backends(registry: Registry) -> None:
    """Register state backends.

    Fires: once per plugin manager, before a state backend is selected.
    Params: ``registry`` — ``registry.add(kind, factory, settings_model)``; ``factory(options)``
    returns an object implementing :class:`qmtl.state.StateBackend`.
    Returns: nothing; return values are ignored.
    """


@hookspec
def qmtl_register_deploy_targets(registry: Registry) -> None:
    """Register deployment targets (Dockerfile, image, Kubernetes, ...).

    Fires: once per plugin manager, when a ``qmtl deploy`` command or API selects a target.
    Params: ``registry`` — ``registry.add(kind, factory, settings_model)``; ``factory(options)``
    returns the target's generator object.
    Returns: nothing; return values are ignored.
    """


@hookspec
def qmtl_register_commands(cli: Any) -> None:
    """Add commands to the ``qmtl`` command line.

    Fires: once, when the ``qmtl`` CLI starts, before arguments are parsed.
    Params: ``cli`` — the root :class:`click.Group`; call ``cli.add_command(...)``.
    Returns: nothing; return values are ignored.
    """
