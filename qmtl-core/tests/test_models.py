"""Intervals, periods and stream settings (SPEC §4.1)."""

from __future__ import annotations

import pytest

from qmtl.errors import IntervalError, ModelValidationError, QmtlError
from qmtl.models import (
    IntervalEnum,
    IntervalSettings,
    NodeStreamSettings,
    parse_duration,
    period_in_intervals,
    to_interval,
)


def test_interval_enum_and_string_are_interchangeable() -> None:
    assert IntervalEnum.DAY == "1d"
    assert {IntervalEnum.HOUR: 1}["1h"] == 1
    assert f"{IntervalEnum.MINUTE}" == "1m"
    assert str(IntervalEnum.WEEK) == "1w"
    assert to_interval("1d") is IntervalEnum.DAY
    assert {i.value for i in IntervalEnum} >= {
        "1s",
        "1m",
        "5m",
        "15m",
        "30m",
        "1h",
        "4h",
        "1d",
        "1w",
    }


@pytest.mark.parametrize(
    ("period", "interval", "expected"),
    [
        ("7d", "1d", 7),
        ("2d", "1h", 48),
        ("90m", "1m", 90),
        (14, "1d", 14),
        ("3", "1h", 3),
        ("1w", "1d", 7),
    ],
)
def test_period_converts_durations_to_interval_counts(period, interval, expected) -> None:
    assert period_in_intervals(period, interval) == expected
    assert IntervalSettings(interval=interval, period=period).period == expected


def test_period_times_interval_is_the_ttl() -> None:
    # The seed's metadata example: a 1d series with period "7d" has ttl 604800.
    assert IntervalSettings(interval="1d", period="7d").ttl_seconds == 604_800


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"interval": "2x"}, ["interval", "1d"]),
        ({"interval": "1h", "period": "90m"}, ["90m", "whole number", "1h"]),
        ({"interval": "1d", "period": 0}, ["at least one"]),
        ({"interval": "1d", "period": "7 days"}, ["duration", "7d"]),
        ({"interval": "1d", "max_history": 0}, ["max_history"]),
        ({"interval": "1d", "colour": "red"}, ["colour"]),
    ],
)
def test_bad_interval_settings_raise_a_qmtl_error_naming_the_problem(settings, words) -> None:
    with pytest.raises(ModelValidationError) as caught:
        IntervalSettings(**settings)
    assert isinstance(caught.value, QmtlError)
    assert isinstance(caught.value, ValueError)
    for word in words:
        assert word in str(caught.value)


def test_unknown_interval_names_the_known_ones() -> None:
    with pytest.raises(IntervalError, match="use one of: 1s, 1m"):
        to_interval("2h")


def test_stream_settings_key_must_equal_its_settings_interval() -> None:
    with pytest.raises(ModelValidationError, match="key '1d' holds settings for '1h'"):
        NodeStreamSettings(intervals={"1d": IntervalSettings(interval="1h", period=1)})


def test_stream_settings_accept_plain_dicts_and_fill_the_interval() -> None:
    settings = NodeStreamSettings(intervals={"1h": {"period": "2d", "max_history": 50}})
    entry = settings.intervals[IntervalEnum.HOUR]
    assert (entry.interval, entry.period, entry.max_history) == (IntervalEnum.HOUR, 48, 50)


def test_settings_are_immutable_values() -> None:
    settings = IntervalSettings(interval="1d", period=3)
    with pytest.raises(ModelValidationError):
        settings.period = 4  # type: ignore[misc]
    assert settings.period == 3


def test_parse_duration_units() -> None:
    assert parse_duration("90m") == 5400
    assert parse_duration("2w") == 1_209_600
