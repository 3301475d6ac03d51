"""Checking what a user passes to ``execute``, ``run``, ``stream`` and the history API.

Every argument is checked at the API edge, before anything runs or any state backend is touched,
so a fresh pipeline and one that already ran answer a bad argument the same way, and no engine's
internals ever see it. A wrong argument is a :class:`~qmtl.errors.ConfigurationError` naming the
pipeline, the argument and what to pass; an option nobody takes names the closest one.

``run``/``stream`` options are one set across engines: :data:`qmtl.engine.RUN_OPTIONS`, which
every engine takes (``timeout`` included), plus the keyword parameters an engine's own ``run``
names (the local engine's ``batch``, the Kafka engine's ``workers`` and ``run_id``).
"""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from qmtl.engine import RUN_OPTIONS
from qmtl.errors import ConfigurationError

#: The keywords of ``Pipeline.execute`` (the seed's included).
EXECUTE_OPTIONS = (
    "inputs",
    "ts",
    "timeout",
    "engine",
    "state",
    "engine_options",
    "state_options",
    "test_mode",
    "parallel",
    "brokers",
    "redis_uri",
    "debug",
)


def unknown_option(pipeline: str, method: str, name: str, known: Iterable[str]) -> None:
    """Raise for an option ``method`` does not take, naming the closest one."""
    choices = sorted(known)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ConfigurationError(
        f"{method}() of pipeline '{pipeline}' got an unknown option '{name}'; {hint}"
        f"its options are {choices}"
    )


def check_execute(
    pipeline: str,
    unknown: Mapping[str, Any],
    *,
    inputs: Any,
    engine: Any,
    engine_options: Any,
    flags: Mapping[str, Any],
    texts: Mapping[str, Any],
) -> Mapping[str, Any] | None:
    """Refuse keywords ``execute`` does not take and unusable values of its own keywords;
    return ``engine_options`` with ``debug`` folded in (``flags["debug"]``)."""
    for name in unknown:
        unknown_option(pipeline, "execute", name, EXECUTE_OPTIONS)
    where = f"execute() of pipeline '{pipeline}'"
    for name, value in flags.items():
        check_flag(where, name, value)
    for name, value in texts.items():
        check_text(where, name, value)
    if inputs is not None and not isinstance(inputs, Mapping):
        raise ConfigurationError(
            f"{where}: inputs= must map node names to values, not {type(inputs).__name__}"
        )
    check_mapping(where, "engine_options", engine_options)
    if not flags.get("debug"):
        return engine_options  # type: ignore[no-any-return]
    if engine is not None and not isinstance(engine, str):
        raise ConfigurationError(
            f"{where}: debug=True configures the engine it creates; with an engine object, "
            "create it in debug mode (LocalExecutionEngine(debug=True))"
        )
    return {**(engine_options or {}), "debug": True}


def run_options_of(engine: Any) -> set[str]:
    """The options ``pipeline.run(...)`` accepts on ``engine``."""
    known = set(RUN_OPTIONS)
    try:
        parameters = inspect.signature(engine.run).parameters.values()
    except (TypeError, ValueError):
        return known
    for parameter in parameters:
        if parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            known.add(parameter.name)
    return known - {"plan", "state", "self"}


def check_run(pipeline: str, method: str, engine: Any, options: Mapping[str, Any]) -> None:
    """Refuse ``run``/``stream`` options the engine does not take, and common options with
    unusable values (the engine checks its own)."""
    known = run_options_of(engine)
    for name in options:
        if name not in known:
            unknown_option(pipeline, method, name, known)
    where = f"{method}() of pipeline '{pipeline}'"
    for name in ("on_output", "clock"):
        value = options.get(name)
        if value is not None and not callable(value):
            raise ConfigurationError(
                f"{where}: {name}={_short(value)} is not callable; pass a function"
            )
    sources = options.get("sources")
    if sources is not None and not isinstance(sources, Mapping):
        raise ConfigurationError(
            f"{where}: sources= must map source names to their events, such as "
            f"{{'price': [(ts, value), ...]}}, not {type(sources).__name__}"
        )
    events = options.get("events")
    if events is not None and (
        not isinstance(events, Iterable) or isinstance(events, str | bytes | Mapping)
    ):
        raise ConfigurationError(
            f"{where}: events= must be a list of (source, ts, value), not {type(events).__name__}"
        )
    check_number(where, "timeout", options.get("timeout"), positive=True)


def check_number(where: str, name: str, value: Any, *, positive: bool = False) -> None:
    """``value`` is ``None`` or a finite real number (``> 0`` when ``positive``)."""
    if value is None:
        return
    number = not isinstance(value, bool) and isinstance(value, numbers.Real)
    if not number or not math.isfinite(value) or (positive and value <= 0):
        wanted = "a positive number of seconds" if positive else "finite epoch seconds"
        raise ConfigurationError(f"{where}: {name}={_short(value)} is not usable; pass {wanted}")


def check_count(where: str, count: Any) -> None:
    """``count`` is ``None`` (every bucket) or a whole number ``>= 0``."""
    if count is None:
        return
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
        raise ConfigurationError(
            f"{where}: count={_short(count)} is not usable; pass a whole number >= 0 (the newest "
            "buckets to return), or count=None for all of them"
        )


def check_backend(
    where: str, what: str, value: Any, needs: tuple[str, ...], kind_example: str
) -> None:
    """``value`` is ``None``, a kind (a string) or an object with the methods ``needs``."""
    if value is None or isinstance(value, str):
        if isinstance(value, str) and not value:
            raise ConfigurationError(
                f"{where}: {what}='' is empty; pass a kind such as {kind_example}"
            )
        return
    missing = [name for name in needs if not callable(getattr(value, name, None))]
    if missing:
        raise ConfigurationError(
            f"{where}: {what}={_short(value)} is neither a kind (a string such as "
            f"{kind_example}) nor a {what} object (it has no {', '.join(missing)}())"
        )


def check_mapping(where: str, name: str, value: Any) -> None:
    if value is not None and not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{where}: {name} must be a mapping of option names to values, not "
            f"{type(value).__name__}"
        )


def check_flag(where: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{where}: {name}={_short(value)} must be True or False")


def check_text(where: str, name: str, value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigurationError(f"{where}: {name}={_short(value)} must be a non-empty string")


def check_selection(
    where: str,
    engine: Any,
    state: Any,
    engine_options: Any,
    state_options: Any,
    *,
    engine_needs: tuple[str, ...] = ("execute",),
) -> None:
    """The engine/state arguments every running and history method takes."""
    check_backend(where, "engine", engine, engine_needs, "'local' or 'kafka'")
    check_backend(where, "state", state, ("read", "write"), "'memory' or 'redis'")
    check_mapping(where, "engine_options", engine_options)
    check_mapping(where, "state_options", state_options)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
