"""QMTL settings, read once at the application edge.

Sources, highest priority first: arguments, ``QMTL_*`` environment variables, ``qmtl.toml`` in
the working directory, the ``[tool.qmtl]`` table of ``pyproject.toml``. ``QMTL_ENGINE=kafka`` (or
``QMTL_ENGINE__KIND``) selects a kind; ``QMTL_<KIND>__<OPTION>`` sets an option of the plugin that
provides ``<KIND>`` (``QMTL_KAFKA__BOOTSTRAP_SERVERS``, ``QMTL_REDIS__URL``). Core validates
``{kind, options}``; the chosen plugin validates ``options`` against its own settings model.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    PyprojectTomlConfigSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from qmtl.models import QmtlModel

_OWN_FIELDS = {"ENGINE", "STATE", "PLUGIN_AUTOLOAD", "DISABLE_PLUGINS", "PLUGIN_OPTIONS"}


class BackendSelection(QmtlModel):
    """A plugin kind and its options (validated later by the plugin's settings model)."""

    kind: str = Field(description="Registered kind, e.g. 'local', 'kafka', 'memory', 'redis'")
    options: dict[str, Any] = Field(default_factory=dict, description="Options for that kind")


def _selection(value: Any) -> Any:
    return {"kind": value} if isinstance(value, str) else value


class _PluginOptionsSource(PydanticBaseSettingsSource):
    """``QMTL_<KIND>__<OPTION>=value`` → ``plugin_options[kind][option]``."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        options: dict[str, dict[str, Any]] = {}
        for name, value in os.environ.items():
            if not name.startswith("QMTL_") or "__" not in name:
                continue
            kind, _, option = name[len("QMTL_") :].partition("__")
            if kind in _OWN_FIELDS or not option or kind.startswith("TEST"):
                continue
            options.setdefault(kind.lower(), {})[option.lower()] = value
        return {"plugin_options": options} if options else {}


class QmtlSettings(BaseSettings):
    """Which engine and state backend to use, and plugin loading policy."""

    model_config = SettingsConfigDict(
        env_prefix="QMTL_",
        env_nested_delimiter="__",
        extra="ignore",
        toml_file="qmtl.toml",
        pyproject_toml_table_header=("tool", "qmtl"),
    )

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
        default_factory=dict, description="Options per kind, from QMTL_<KIND>__<OPTION>"
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
        return (
            init_settings,
            env_settings,
            _PluginOptionsSource(settings_cls),
            TomlConfigSettingsSource(settings_cls),
            PyprojectTomlConfigSettingsSource(settings_cls),
        )

    def options_for(
        self, selection: BackendSelection, extra: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Options for a selected kind: ``QMTL_<KIND>__*``, then the selection's, then ``extra``."""
        merged = dict(self.plugin_options.get(selection.kind, {}))
        merged.update(selection.options)
        merged.update(extra or {})
        return merged


def load_settings(**overrides: Any) -> QmtlSettings:
    """Read settings from the environment and config files, with ``overrides`` on top."""
    from qmtl.errors import ConfigurationError

    try:
        return QmtlSettings(**overrides)
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(
            f"Invalid QMTL settings: {_broken_toml()} is not valid TOML ({error}); fix the TOML "
            "syntax of that file"
        ) from error
    except ValueError as error:
        raise ConfigurationError(f"Invalid QMTL settings: {error}") from error


def _broken_toml() -> str:
    """Which of the config files QmtlSettings reads fails to parse."""
    for name in ("qmtl.toml", "pyproject.toml"):
        try:
            with open(name, "rb") as handle:
                tomllib.load(handle)
        except OSError:
            continue
        except tomllib.TOMLDecodeError:
            return f"{os.path.abspath(name)}"
    return "qmtl.toml or pyproject.toml"
