"""Validated data models: intervals, stream settings, pipeline definitions, selectors, results.

Every model derives from :class:`QmtlModel` (frozen, ``extra="forbid"``), so settings are values:
merging defaults returns new objects and never changes the caller's.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Self

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from qmtl.errors import IntervalError, ModelValidationError


def _model_error(model: str, error: pydantic.ValidationError) -> ModelValidationError:
    """One message for every bad field; a nested model's own error is spliced in by path
    instead of being quoted inside its parent's (``nodes.0.stream_settings.intervals.1d...``)."""
    problems: list[tuple[str, str]] = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        inner = (item.get("ctx") or {}).get("error")
        if isinstance(inner, ModelValidationError) and inner.problems:
            problems += [
                (".".join(p for p in (where, sub) if p), msg) for sub, msg in inner.problems
            ]
        else:
            problems.append((where, item["msg"].removeprefix("Value error, ")))
    text = "; ".join(f"{where or '(model)'}: {msg}" for where, msg in problems)
    return ModelValidationError(f"Invalid {model}: {text}", tuple(problems))


class QmtlModel(BaseModel):
    """Base of every QMTL model: immutable and strict about unknown fields.

    Invalid data raises :class:`~qmtl.errors.ModelValidationError` (a ``QmtlError`` and a
    ``ValueError``) naming the model and each bad field.
    """

    # Non-finite floats (a param of inf) keep their value in JSON dumps as Python's json module
    # writes and reads them (Infinity, NaN) instead of turning silently into null.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except pydantic.ValidationError as error:
            raise _model_error(type(self).__name__, error) from error

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except pydantic.ValidationError as error:
            raise _model_error(type(self).__name__, error) from error

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        try:
            return super().model_validate(obj, **kwargs)
        except pydantic.ValidationError as error:
            raise _model_error(cls.__name__, error) from error


class IntervalEnum(StrEnum):
    """A bar interval. The member and its string (``"1d"``) are interchangeable everywhere."""

    SECOND = "1s"
    MINUTE = "1m"
    FIVE_MINUTES = "5m"
    FIFTEEN_MINUTES = "15m"
    THIRTY_MINUTES = "30m"
    HOUR = "1h"
    FOUR_HOURS = "4h"
    DAY = "1d"
    WEEK = "1w"

    @property
    def seconds(self) -> int:
        """Length of the interval in seconds."""
        return INTERVAL_SECONDS[self.value]


INTERVAL_SECONDS: dict[str, int] = {
    "1s": 1,
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "4h": 14400,
    "1d": 86400,
    "1w": 604800,
}

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")


def to_interval(value: IntervalEnum | str) -> IntervalEnum:
    """Return the :class:`IntervalEnum` for ``value``, or raise :class:`IntervalError`."""
    if isinstance(value, IntervalEnum):
        return value
    try:
        return IntervalEnum(str(value).strip())
    except ValueError:
        known = ", ".join(INTERVAL_SECONDS)
        raise IntervalError(f"Unknown interval {value!r}; use one of: {known}") from None


def parse_duration(text: str) -> int:
    """Parse a duration such as ``"7d"``, ``"90m"`` or ``"2h"`` into seconds."""
    match = _DURATION.match(text)
    if not match:
        raise IntervalError(
            f"Cannot read duration {text!r}; write a number and a unit s, m, h, d or w "
            "(for example '7d' or '90m')"
        )
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def period_in_intervals(period: int | str, interval: IntervalEnum | str) -> int:
    """Convert a period (a count of intervals, or a duration string) to a count of intervals."""
    interval = to_interval(interval)
    if isinstance(period, bool):
        raise IntervalError(
            f"Period {period!r} on interval '{interval}' must be an int or a duration"
        )
    if isinstance(period, int):
        count = period
    elif isinstance(period, str) and period.strip().isdigit():
        count = int(period)
    elif isinstance(period, str):
        seconds = parse_duration(period)
        count, remainder = divmod(seconds, interval.seconds)
        if remainder:
            raise IntervalError(
                f"Period {period!r} is not a whole number of '{interval}' intervals; "
                f"use a multiple of {interval.seconds}s"
            )
    else:
        raise IntervalError(
            f"Period {period!r} on interval '{interval}' must be an int or a duration like '7d'"
        )
    if count < 1:
        raise IntervalError(
            f"Period {period!r} on interval '{interval}' must be at least one interval"
        )
    return count


class IntervalSettings(QmtlModel):
    """How one interval of a node's series is kept.

    ``period`` is the retention window as a number of intervals (a duration string such as
    ``"7d"`` is converted); ``None`` means "inherit the pipeline default". ``period × interval`` is
    the series' TTL. ``max_history`` caps the number of stored buckets.
    """

    interval: IntervalEnum = Field(description="Bar interval of the series")
    period: int | None = Field(
        default=None, description="Retention window in intervals; None inherits the default"
    )
    max_history: int = Field(default=100, ge=1, description="Most buckets kept for the series")

    if TYPE_CHECKING:
        # The constructor as it converts (``"1d"``, ``period="7d"``), for type checkers that
        # lack pydantic's plugin and would otherwise take the field types as parameters.
        def __init__(
            self,
            *,
            interval: IntervalEnum | str,
            period: int | str | None = None,
            max_history: int = 100,
        ) -> None: ...

    @model_validator(mode="before")
    @classmethod
    def _convert_period(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("period") is not None and "interval" in data:
            data = dict(data)
            data["interval"] = to_interval(data["interval"])
            data["period"] = period_in_intervals(data["period"], data["interval"])
        return data

    @property
    def ttl_seconds(self) -> int | None:
        """Retention time in seconds, or ``None`` while the period is unset."""
        return None if self.period is None else self.period * self.interval.seconds


def _interval_key(value: Any) -> Any:
    return to_interval(value) if isinstance(value, str) else value


class NodeStreamSettings(QmtlModel):
    """The intervals a node's output series is kept at, keyed by interval."""

    intervals: dict[IntervalEnum, IntervalSettings] = Field(default_factory=dict)

    @field_validator("intervals", mode="before")
    @classmethod
    def _check_keys(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        checked: dict[Any, Any] = {}
        for key, settings in value.items():
            interval = to_interval(key)
            if isinstance(settings, dict):
                settings = {"interval": interval, **settings}
                settings = IntervalSettings.model_validate(settings)
            if isinstance(settings, IntervalSettings) and settings.interval != interval:
                raise IntervalError(
                    f"Interval key '{interval}' holds settings for '{settings.interval}'; "
                    "make the key equal the settings' interval"
                )
            checked[interval] = settings
        return checked


IntervalsInput = dict[IntervalEnum | str, IntervalSettings | dict[str, Any]]


class NodeDefinition(QmtlModel):
    """Serialisable description of a node (the function itself is never serialised)."""

    name: str
    node_id: str
    type: str = "node"
    tags: list[str] = Field(default_factory=list)
    upstreams: list[str] = Field(default_factory=list)
    key_params: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    window: int | None = None
    vectorized: bool | None = None
    stream_settings: NodeStreamSettings | None = None
    shard: str | None = Field(
        default=None,
        description="The shard the node runs in on a sharded engine (None: default rule).",
    )

    @classmethod
    def from_definition(cls, definition: dict[str, Any]) -> NodeDefinition:
        """Validate a ``to_definition()`` dict back into a model."""
        return cls.model_validate(definition)


class QueryNodeDefinition(QmtlModel):
    """Serialisable description of a query node."""

    name: str
    node_id: str | None = None
    type: str = "query"
    query_tags: list[str]
    match_mode: Literal["all", "any"] = "all"
    interval: IntervalEnum | None = None
    period: int | None = None
    matches: list[str] = Field(default_factory=list)
    result_selectors: list[QueryNodeResultSelector] = Field(default_factory=list)
    upstreams: list[str] | None = Field(
        default=None, description="The nodes the query may match (None: every node)"
    )
    stream_settings: NodeStreamSettings | None = Field(
        default=None, description="Intervals the query's value is kept at (None: its matches')"
    )

    @classmethod
    def from_definition(cls, definition: dict[str, Any]) -> QueryNodeDefinition:
        """Validate a ``to_definition()`` dict back into a model."""
        return cls.model_validate(definition)


class PipelineDefinition(QmtlModel):
    """Serialisable description of a pipeline: metadata, not a runnable object.

    A runnable pipeline is rebuilt from code (``module:attribute``).
    """

    name: str
    type: str = "pipeline"
    tags: list[str] = Field(default_factory=list)
    nodes: list[NodeDefinition] = Field(default_factory=list)
    query_nodes: list[QueryNodeDefinition] = Field(default_factory=list)
    default_intervals: NodeStreamSettings | None = None
    bucket_offset: str | None = Field(
        default=None,
        description="where 1d/1w buckets end: a duration ('-8h') or a time zone and session "
        "close ('America/New_York 16:00'); none: UTC midnight, weeks from Monday",
    )
    metadata: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_definition(cls, definition: dict[str, Any]) -> PipelineDefinition:
        """Validate a ``to_definition()`` dict back into a model."""
        return cls.model_validate(definition)


#: ``filter_meta`` keys a ``filter`` selector understands (see :mod:`qmtl.selectors`).
FILTER_KEYS = frozenset(
    {
        "name",
        "node_id",
        "type",
        "kind",
        "tags",
        "upstreams",
        "key_params",
        "params",
        "window",
        "stream_settings",
        "interval_settings",
        "interval",
        "period",
    }
)


class QueryNodeResultSelector(QmtlModel):
    """One step applied to a query node's matches, in list order (see :mod:`qmtl.selectors`).

    ``list`` keeps all; ``filter`` keeps the nodes where every key of ``filter_meta`` holds;
    ``random`` draws ``sample_size`` (the same draw every run with ``seed``); ``batch`` splits
    the selection into batches of ``batch_size`` that the query's value exposes. An unknown
    mode, a missing parameter or an unknown ``filter_meta`` key is a validation error.
    """

    mode: Literal["list", "filter", "random", "batch"] = Field(
        default="list", description="Selection step: list, filter, random or batch"
    )
    filter_meta: dict[str, Any] | None = Field(
        default=None, description="filter: every key must hold (tags, stream_settings, ...)"
    )
    sample_size: int | None = Field(default=None, ge=1, description="random: how many to draw")
    batch_size: int | None = Field(default=None, ge=1, description="batch: names per batch")
    seed: int | None = Field(default=None, description="random: seed for a reproducible draw")

    @model_validator(mode="after")
    def _check_mode_fields(self) -> QueryNodeResultSelector:
        if self.mode == "random" and self.sample_size is None:
            raise ValueError("selector mode 'random' needs sample_size")
        if self.mode == "batch" and self.batch_size is None:
            raise ValueError("selector mode 'batch' needs batch_size")
        if self.mode == "filter" and not self.filter_meta:
            raise ValueError("selector mode 'filter' needs filter_meta")
        unknown = sorted(set(self.filter_meta or {}) - FILTER_KEYS)
        if unknown:
            raise ValueError(
                f"filter_meta key(s) {unknown} are not node attributes; use {sorted(FILTER_KEYS)}"
            )
        return self


QueryNodeDefinition.model_rebuild()


class AnalyzerResult(QmtlModel):
    """One node's outcome in one analyzer query of one run.

    ``status`` is ``OK`` (``value`` holds the node's value), ``FAIL`` (the node raised; ``error``
    says what, ``value`` is ``None``) or ``SKIPPED`` (an upstream failed or a window was still
    warming up, so the node did not run). A query with ``fn`` also gets a result whose ``node`` is
    the query's own name, holding ``fn``'s value. ``batch`` is the batch index under a ``batch``
    selector.
    """

    analyzer_id: str = Field(description="Name of the analyzer")
    query_node: str = Field(description="Query node the result belongs to")
    node: str = Field(description="Matched node (or the query itself for its fn value)")
    value: Any = Field(default=None, description="The node's value when status is OK")
    status: Literal["OK", "FAIL", "SKIPPED"] = Field(default="OK", description="Outcome")
    error: str | None = Field(default=None, description="Why the node failed or was skipped")
    batch: int | None = Field(default=None, description="Batch index under a batch selector")
    generated_at: datetime = Field(description="When the run produced the result (UTC)")


class HistoryItem(QmtlModel):
    """One stored bucket: its timestamp (the bucket end, epoch seconds) and value."""

    timestamp: float
    value: Any
