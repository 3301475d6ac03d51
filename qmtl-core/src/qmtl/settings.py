"""QMTL settings, read once at the application edge.

Sources, highest priority first (SPEC §3): arguments, ``QMTL_*`` environment variables,
``qmtl.toml`` in the working directory, the ``[tool.qmtl]`` table of ``pyproject.toml``.
``QMTL_ENGINE=kafka`` (or ``QMTL_ENGINE__KIND``) selects a kind; ``QMTL_<KIND>__<OPTION>`` sets
an option of the plugin that provides ``<KIND>`` (``QMTL_KAFKA__BOOTSTRAP_SERVERS``,
``QMTL_REDIS__URL``). In a file::

    [engine]                  # or: engine = "kafka"
    kind = "kafka"
    [engine.options]
    bootstrap_servers = "127.0.0.1:9092"
    [state]
    kind = "redis"
    [state.options]
    url = "redis://127.0.0.1:6379/0"

Options follow their kind: options given for one kind never reach another, and for the selected
kind each option is taken from the highest-priority source that sets it (a ``QMTL_KAFKA__*``
variable beats ``[engine.options]`` of ``qmtl.toml``; an argument beats both). Core validates
``{kind, options}``; the chosen plugin validates ``options`` against its own settings model.

A misspelt key in a config file (``engin = "kafka"``, a ``[kafka]`` table) is a
:class:`~qmtl.errors.ConfigurationError` naming the file, the key and the likely fix. So is a
``QMTL_*`` variable close to a setting's name (``QMTL_ENGIN``, ``QMTL_ENGINE_KIND``); other
``QMTL_*`` variables belong to other tools (test services, the worker's heartbeat file) and are
left alone here, then checked against the installed plugins' kinds and options when a run
resolves its engine (:mod:`qmtl.runtime`).
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pydantic
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from qmtl.errors import ConfigurationError
from qmtl.models import QmtlModel

#: The keys of a config table and, upper-cased after ``QMTL_``, the settings variables.
FIELDS = ("engine", "state", "plugin_autoload", "disable_plugins")
_SELECTIONS = ("engine", "state")
_SELECTION_KEYS = ("kind", "options")
_DEFAULT_KIND = {"engine": "local", "state": "memory"}
#: Kinds QMTL ships or documents, to explain a ``[kafka]`` table (no plugin is loaded here).
_KNOWN_KINDS = {
    "engine": ("local", "kafka", "mock", "threads"),
    "state": ("memory", "redis"),
}


class BackendSelection(QmtlModel):
    """A plugin kind and its options (validated later by the plugin's settings model)."""

    kind: str = Field(description="Registered kind, e.g. 'local', 'kafka', 'memory', 'redis'")
    options: dict[str, Any] = Field(default_factory=dict, description="Options for that kind")


def _selection(value: Any) -> Any:
    return {"kind": value} if isinstance(value, str) else value


class _Layered(PydanticBaseSettingsSource):
    """The files and the environment, merged by :func:`_merge` (so ``QmtlSettings()`` reads
    the same settings as :func:`load_settings`)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return _merge(_sources())


class QmtlSettings(BaseSettings):
    """Which engine and state backend to use, and plugin loading policy."""

    model_config = SettingsConfigDict(extra="forbid")

    engine: Annotated[BackendSelection, NoDecode] = Field(
        default=BackendSelection(kind="local"), description="Engine kind and options"
    )
    state: Annotated[BackendSelection, NoDecode] = Field(
        default=BackendSelection(kind="memory"), description="State backend kind and options"
    )
    plugin_autoload: bool = Field(default=True, description="Load entry points of group 'qmtl'")
    disable_plugins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Entry-point names not to load"
    )
    plugin_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Options per kind, every source merged (QMTL_<KIND>__<OPTION> included)",
    )
    env_kinds: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Kind -> the QMTL_<KIND>__<OPTION> variables naming it (checked against "
        "the installed kinds when a run starts)",
    )
    other_variables: list[str] = Field(
        default_factory=list,
        description="QMTL_* variables that are not settings (names only, never values)",
    )

    if TYPE_CHECKING:
        # The constructor as it converts (``engine="kafka"``, ``disable_plugins="a,b"``), for
        # type checkers that lack pydantic's plugin and would otherwise take the field types.
        def __init__(
            self,
            *,
            engine: str | BackendSelection | Mapping[str, Any] = ...,
            state: str | BackendSelection | Mapping[str, Any] = ...,
            plugin_autoload: bool = ...,
            disable_plugins: str | Sequence[str] = ...,
            plugin_options: Mapping[str, Mapping[str, Any]] = ...,
            env_kinds: Mapping[str, Sequence[str]] = ...,
            other_variables: Sequence[str] = ...,
        ) -> None: ...

    _sel_engine = field_validator("engine", mode="before")(_selection)
    _sel_state = field_validator("state", mode="before")(_selection)

    @field_validator("disable_plugins", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _Layered(settings_cls))

    def options_for(
        self, selection: BackendSelection, extra: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Options for a selected kind: every source's (by priority), then ``extra``."""
        merged = dict(self.plugin_options.get(selection.kind, {}))
        merged.update(selection.options)
        merged.update(extra or {})
        return merged


def load_settings(**overrides: Any) -> QmtlSettings:
    """Read settings from the config files and the environment, with ``overrides`` (the
    arguments) on top; see the module docstring for the order and the checks."""
    layers = _sources()
    arguments = _Layer("arguments")
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in FIELDS:
            raise ConfigurationError(
                f"Invalid QMTL settings: load_settings() got unknown setting {key!r}"
                f"{_suggest(key, FIELDS)}; settings are {', '.join(FIELDS)}"
            )
        if key in _SELECTIONS:
            arguments.select(key, value)
        else:
            arguments.values[key] = value
    merged = _merge([*layers, arguments])
    try:
        return QmtlSettings.model_validate(merged)
    except pydantic.ValidationError as error:
        raise ConfigurationError(f"Invalid QMTL settings: {_problems(error)}") from error


# -- the sources -------------------------------------------------------------------------------
class _Layer:
    """What one source says: selections (kind and options per engine/state), plain values, and
    options per kind (``QMTL_<KIND>__<OPTION>``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.kinds: dict[str, str] = {}
        self.options: dict[str, Any] = {}
        self.values: dict[str, Any] = {}
        self.per_kind: dict[str, dict[str, Any]] = {}
        self.env_kinds: dict[str, list[str]] = {}
        self.others: list[str] = []

    def select(self, field: str, value: Any) -> None:
        if isinstance(value, BackendSelection):
            value = value.model_dump()
        if isinstance(value, str):
            self.kinds[field] = value
        elif isinstance(value, Mapping):
            self._table(field, value)
        else:
            self.values[field] = value  # the model reports the wrong type

    def _table(self, field: str, table: Mapping[str, Any]) -> None:
        for key, item in table.items():
            if key == "kind" and not isinstance(item, str):
                self.values[field] = dict(table)  # the model reports the wrong type
            elif key == "kind":
                self.kinds[field] = item
            elif key == "options":
                self.options[field] = item
            else:
                raise ConfigurationError(
                    f"{self.name}: [{field}] has unknown key {key!r}"
                    f'{_suggest(key, _SELECTION_KEYS)}; [{field}] takes kind = "..." and an '
                    f"options table: put {key} under [{field}.options]"
                )


def _sources() -> list[_Layer]:
    """The file and environment sources, lowest priority first."""
    layers = []
    pyproject = _read_toml(Path("pyproject.toml"))
    if pyproject is not None:
        table = pyproject.get("tool", {}).get("qmtl")
        if table is not None:
            layers.append(_file_layer(f"[tool.qmtl] of {Path('pyproject.toml').resolve()}", table))
    own = _read_toml(Path("qmtl.toml"))
    if own is not None:
        layers.append(_file_layer(str(Path("qmtl.toml").resolve()), own))
    layers.append(_env_layer(os.environ))
    return layers


def _read_toml(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ConfigurationError(
            f"Cannot read QMTL settings file {path.resolve()}: {error}"
        ) from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(
            f"Invalid QMTL settings: {path.resolve()} is not valid TOML ({error}); fix the TOML "
            "syntax of that file"
        ) from error


def _file_layer(name: str, table: Any) -> _Layer:
    layer = _Layer(name)
    if not isinstance(table, Mapping):
        raise ConfigurationError(f"Invalid QMTL settings: {name} must be a table")
    for key, value in table.items():
        if key in _SELECTIONS:
            if isinstance(value, Mapping | str):
                layer.select(key, value)
            else:
                layer.values[key] = value  # the model reports the wrong type
        elif key in FIELDS:
            layer.values[key] = value
        else:
            raise ConfigurationError(f"{name}: unknown key {key!r}; {_fix_for_key(key, value)}")
    return layer


def _fix_for_key(key: str, value: Any) -> str:
    for field, kinds in _KNOWN_KINDS.items():
        if key in kinds:
            return (
                f"{key!r} is {'an engine' if field == 'engine' else 'a state backend'} kind: "
                f'select it with [{field}] kind = "{key}" and put its options under '
                f"[{field}.options]"
            )
    return f"{_suggest(key, FIELDS)[2:] or 'remove it'}; the keys are {', '.join(FIELDS)}"


def _env_layer(environ: Mapping[str, str]) -> _Layer:
    layer = _Layer("the environment")
    for name, value in sorted(environ.items()):
        if not name.startswith("QMTL_"):
            continue
        head, nested, tail = name[len("QMTL_") :].partition("__")
        field = head.lower()
        if not nested:
            if field in FIELDS:
                _set_once(layer, name, field, value)
            else:
                _stray(name, head)
                layer.others.append(name)
        elif field in _SELECTIONS:
            _env_selection(layer, name, field, tail, value)
        elif field in FIELDS or not tail:
            raise ConfigurationError(
                f"{name} is not a QMTL setting{_suggest_env(head)}; {_ENV_HELP}"
            )
        else:
            layer.per_kind.setdefault(field, {})[tail.lower()] = value
            layer.env_kinds.setdefault(field, []).append(name)
    return layer


_ENV_HELP = (
    "settings variables are QMTL_ENGINE, QMTL_STATE, QMTL_PLUGIN_AUTOLOAD, QMTL_DISABLE_PLUGINS, "
    "QMTL_ENGINE__KIND / QMTL_ENGINE__OPTIONS__<OPTION> (and the same for STATE), and "
    "QMTL_<KIND>__<OPTION> for a kind's options"
)


def _set_once(layer: _Layer, name: str, field: str, value: str) -> None:
    if field not in _SELECTIONS:
        layer.values[field] = value
        return
    other = layer.kinds.get(field)
    if other is not None and other != value:
        raise ConfigurationError(
            f"{name} and QMTL_{field.upper()}__KIND select different {field} kinds; keep one"
        )
    layer.kinds[field] = value


def _env_selection(layer: _Layer, name: str, field: str, tail: str, value: str) -> None:
    parts = tail.lower().split("__")
    if parts == ["kind"]:
        _set_once(layer, name, field, value)
    elif parts == ["options"]:
        try:
            layer.options[field] = json.loads(value)
        except ValueError:
            layer.options[field] = value  # the model says it is not a mapping
    elif parts[0] == "options" and all(parts[1:]):
        options = layer.options.setdefault(field, {})
        if isinstance(options, dict):
            options["__".join(parts[1:])] = value
    else:
        prefix = f"QMTL_{field.upper()}__"
        raise ConfigurationError(
            f"{name} is not a QMTL setting"
            f"{_suggest(parts[0], _SELECTION_KEYS, prefix.lower())}; use {prefix}KIND or "
            f"{prefix}OPTIONS__<OPTION> (or QMTL_<KIND>__<OPTION>)"
        )


def _stray(name: str, head: str) -> None:
    """Raise for a variable that looks like a misspelt setting (``QMTL_ENGIN``)."""
    hint = _suggest_env(head)
    if hint:
        raise ConfigurationError(f"{name} is not a QMTL setting{hint}; {_ENV_HELP}")


def _suggest_env(head: str) -> str:
    for field in _SELECTIONS:
        stem = f"{field.upper()}_"
        if head.startswith(stem) and len(head) > len(stem):
            return f"; did you mean QMTL_{field.upper()}__{head[len(stem) :]} (two underscores)?"
    close = difflib.get_close_matches(head, [f.upper() for f in FIELDS], n=1, cutoff=0.8)
    return f"; did you mean QMTL_{close[0]}?" if close else ""


def _suggest(key: str, choices: tuple[str, ...] | list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(key.lower(), list(choices), n=1, cutoff=0.6)
    return (
        f"; did you mean {(prefix + close[0]).upper() if prefix else repr(close[0])}?"
        if close
        else ""
    )


# -- merging -----------------------------------------------------------------------------------
def _merge(layers: list[_Layer]) -> dict[str, Any]:
    """One settings mapping from sources in increasing priority (module docstring).

    The selected kind of engine and state is the highest-priority one named. Options are kept
    per kind: a source's ``QMTL_<KIND>__*`` variables and the options of a selection that names
    its kind go to that kind; options of a selection without a kind go to the selected kind.
    Within one kind, a higher-priority source wins option by option.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer.values)
    selected = {}
    for field in _SELECTIONS:
        kind = _DEFAULT_KIND[field]
        for layer in layers:
            kind = layer.kinds.get(field, kind)
        selected[field] = kind
    per_kind: dict[str, dict[str, Any]] = {}
    unusable: dict[str, Any] = {}
    for layer in layers:
        for kind, given in layer.per_kind.items():
            per_kind.setdefault(kind, {}).update(given)
        for field, given in layer.options.items():
            kind = layer.kinds.get(field, selected[field])
            if isinstance(given, Mapping):
                per_kind.setdefault(kind, {}).update(given)
            elif kind == selected[field]:
                unusable[field] = given  # not a mapping: the model reports it
    for field in _SELECTIONS:
        if field not in merged:  # else a value of the wrong type, which the model reports
            kind = selected[field]
            merged[field] = {"kind": kind, "options": unusable.get(field, per_kind.get(kind, {}))}
    merged["plugin_options"] = per_kind
    merged["env_kinds"] = {k: v for layer in layers for k, v in layer.env_kinds.items()}
    merged["other_variables"] = [name for layer in layers for name in layer.others]
    return merged


def _problems(error: pydantic.ValidationError) -> str:
    """Each problem as ``field: message``, never with the rejected value (it may be secret)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in item['loc']) or '(settings)'}: {item['msg']}"
        for item in error.errors(include_url=False, include_input=False)
    )
