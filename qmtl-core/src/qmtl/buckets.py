"""Bucket calendars: which bucket of an interval an event time falls in, and where it ends.

The rule (SPEC §4.1), used by every engine through :mod:`qmtl.streaming`, the one-shot form and
the state timestamps:

- **Epoch multiples.** An interval of ``s`` seconds has buckets ``[b*s, (b+1)*s)``, ``b =
  floor(ts / s)`` (UTC): ``1s`` to ``1d``. These are :class:`Uniform` calendars with origin 0,
  and the hot paths compute them inline.
- **Weeks start on Monday 00:00 UTC** (ISO weeks), not on the epoch's Thursday: ``1w`` is
  ``Uniform(604800, origin=MONDAY)``, ``MONDAY`` being 1970-01-05T00:00Z.
- **A pipeline's** ``bucket_offset`` **moves** ``1d`` **and** ``1w`` **boundaries** (intraday
  intervals keep epoch multiples):

  * a duration (``"-8h"``, ``"16h"``, ``"-5h30m"``; strictly between -7d and 7d) moves every
    boundary by that much, like pandas' ``resample(offset=...)``: with ``"-8h"`` days end at
    16:00 UTC and weeks on Sunday 16:00 UTC (so Monday's session opens the week); with
    ``"16h"`` days also end at 16:00 UTC but weeks start on Monday 16:00 UTC;
  * a time zone and a session close, ``"America/New_York 16:00"``: the day of date D is
    ``[close(D-1), close(D))`` with ``close(D)`` = D at 16:00 New York time, daylight saving
    included, so days are 23 or 25 hours long on the days the clocks change; the week is the
    sessions of Monday to Sunday (ending at Sunday's close). ``"ZONE 00:00"`` means the zone's
    calendar days. A close that does not exist on a spring-forward day (02:30) falls at the
    same instant one hour later in the new local time; an ambiguous one at its first
    occurrence (PEP 495, ``fold=0``). ``"UTC 16:00"`` is the same calendar as ``"-8h"``.

Every calendar maps ``ts -> bucket index`` (:meth:`Calendar.index`) and ``bucket -> end``
(:meth:`Calendar.end`); a bucket's timestamp everywhere is its end. :meth:`Calendar.through`
is the last bucket a watermark makes final (every bucket whose end is ``<= watermark``).
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: 1970-01-05T00:00:00Z, the first Monday after the epoch: where ISO weeks start.
MONDAY = 4 * 86_400
DAY = 86_400
WEEK = 7 * DAY
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_DURATION_PART = re.compile(r"(\d+)([dhms])")
_UNITS = {"d": DAY, "h": 3600, "m": 60, "s": 1}


class Calendar:
    """Buckets of one interval (see the module docstring)."""

    __slots__ = ("aligned", "seconds", "spec")

    #: nominal bucket length in seconds (``IntervalEnum.seconds``)
    seconds: int
    #: whether buckets are the epoch multiples ``[b*s, (b+1)*s)`` (engines' inline fast path)
    aligned: bool
    #: how ``to_definition`` and persisted state name the calendar (``"1d@-8h"``)
    spec: str

    def index(self, ts: float) -> int:
        """The bucket holding event time ``ts``."""
        raise NotImplementedError

    def end(self, bucket: float) -> float:
        """Where ``bucket`` ends (epoch seconds; ``±inf`` stays itself)."""
        raise NotImplementedError

    def through(self, watermark: float) -> float:
        """The last bucket whose end is ``<= watermark`` (``±inf`` stays itself)."""
        if watermark == math.inf or watermark == -math.inf:
            return watermark
        return self.index(watermark) - 1

    def __repr__(self) -> str:
        return f"Calendar({self.spec!r})"


class Uniform(Calendar):
    """Buckets ``[origin + b*s, origin + (b+1)*s)``."""

    __slots__ = ("origin",)

    def __init__(self, seconds: int, origin: int = 0, spec: str | None = None) -> None:
        self.seconds = int(seconds)
        self.origin = int(origin) % self.seconds  # the same buckets, numbered from the epoch
        self.aligned = self.origin == 0
        self.spec = spec or f"{self.seconds}s@{self.origin}"

    def index(self, ts: float) -> int:
        return int((ts - self.origin) // self.seconds)

    def end(self, bucket: float) -> float:
        return float(self.origin + (bucket + 1) * self.seconds)

    def through(self, watermark: float) -> float:
        if watermark == math.inf or watermark == -math.inf:
            return watermark
        return int((watermark - self.origin) // self.seconds) - 1


class Sessions(Calendar):
    """Days closing at a local time of a time zone (``days=1``), or Monday-to-Sunday weeks of
    them (``days=7``). Bucket ``b`` of days is the session of date 1970-01-01 + b days."""

    __slots__ = ("_ends", "_last", "close", "days", "zone")

    def __init__(self, zone: ZoneInfo, close: time, days: int, spec: str) -> None:
        self.zone = zone
        self.close = close
        self.days = days
        self.seconds = days * DAY
        self.aligned = False
        self.spec = spec
        self._ends: dict[int, float] = {}
        #: (start, end, bucket) of the last bucket found: events mostly stay in it
        self._last: tuple[float, float, int] = (math.inf, -math.inf, 0)

    def _day_end(self, day: int) -> float:
        found = self._ends.get(day)
        if found is None:
            local = date.fromordinal(_EPOCH_DAY + day)
            if self.close == time(0):  # midnight: the session of D is the calendar day D
                local += timedelta(days=1)
            moment = datetime.combine(local, self.close, tzinfo=self.zone)
            found = self._ends[day] = moment.timestamp()
        return found

    def _day(self, ts: float) -> int:
        local = datetime.fromtimestamp(ts, self.zone)
        day = local.toordinal() - _EPOCH_DAY
        if self.close != time(0) and local.time() >= self.close:
            day += 1
        # the local clock may disagree with the ends around a gap or a fold: the ends decide
        while ts >= self._day_end(day):
            day += 1
        while ts < self._day_end(day - 1):
            day -= 1
        return day

    def index(self, ts: float) -> int:
        start, end, bucket = self._last
        if start <= ts < end:
            return bucket
        day = self._day(ts)
        bucket = day if self.days == 1 else (day - 4) // 7  # day 4 is Monday 1970-01-05
        self._last = (self.end(bucket - 1), self.end(bucket), bucket)
        return bucket

    def end(self, bucket: float) -> float:
        if bucket == math.inf or bucket == -math.inf:
            return bucket
        b = int(bucket)
        return self._day_end(b if self.days == 1 else 4 + 7 * b + 6)


_PLAIN: dict[int, Uniform] = {}


def plain(seconds: int) -> Uniform:
    """The calendar of an interval with no offset: epoch multiples, weeks from Monday."""
    found = _PLAIN.get(seconds)
    if found is None:
        origin = MONDAY if seconds == WEEK else 0
        found = _PLAIN[seconds] = Uniform(seconds, origin, _label(seconds))
    return found


def _label(seconds: int) -> str:
    for unit, size in (("w", WEEK), ("d", DAY), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class BucketOffset:
    """A pipeline's parsed ``bucket_offset``: builds the calendar of each interval.

    ``text`` is how it was given (recorded by ``to_definition``); :func:`parse_offset` makes
    one.
    """

    __slots__ = ("_made", "close", "seconds", "text", "zone")

    def __init__(
        self, text: str, seconds: int = 0, zone: ZoneInfo | None = None, close: time | None = None
    ) -> None:
        self.text = text
        self.seconds = seconds
        self.zone = zone
        self.close = close
        self._made: dict[int, Calendar] = {}

    def calendar(self, seconds: int) -> Calendar:
        """The calendar of an interval of ``seconds`` under this offset (one object per
        interval, shared by every series of the pipeline)."""
        if seconds not in (DAY, WEEK) or not (self.seconds or self.zone):
            return plain(seconds)
        found = self._made.get(seconds)
        if found is None:
            spec = f"{_label(seconds)}@{self.text}"
            if self.zone is not None:
                assert self.close is not None
                found = Sessions(self.zone, self.close, seconds // DAY, spec)
            else:
                origin = (MONDAY if seconds == WEEK else 0) + self.seconds
                found = Uniform(seconds, origin, spec)
            self._made[seconds] = found
        return found

    def __repr__(self) -> str:
        return f"BucketOffset({self.text!r})"


#: No offset: epoch multiples, weeks from Monday.
NO_OFFSET = BucketOffset("")


def parse_offset(value: object, owner: str) -> BucketOffset | None:
    """A ``bucket_offset`` (a duration string, a :class:`~datetime.timedelta`, whole seconds, or
    ``"ZONE HH:MM"``) as a :class:`BucketOffset`; ``None`` for none. ``ValueError`` naming
    ``owner`` and the forms it takes otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, timedelta):
        return _duration(value.total_seconds(), str(value), owner)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _duration(value, f"{value}s", owner)
    if not isinstance(value, str):
        raise ValueError(_usage(owner, value))
    text = value.strip()
    parts = text.split()
    if len(parts) == 2:
        return _session(parts[0], parts[1], text, owner)
    sign, body = (-1, text[1:]) if text.startswith("-") else (1, text.removeprefix("+"))
    pieces = _DURATION_PART.findall(body)
    if not body or "".join(n + u for n, u in pieces) != body:
        raise ValueError(_usage(owner, value))
    seconds = sign * sum(int(n) * _UNITS[u] for n, u in pieces)
    return _duration(seconds, text, owner)


def _duration(seconds: float, text: str, owner: str) -> BucketOffset | None:
    if seconds != int(seconds) or not -WEEK < seconds < WEEK:
        raise ValueError(
            f"{owner}: bucket_offset {text!r} must be whole seconds strictly between -7d and 7d "
            "(a day's or a week's boundary moves by it), e.g. '-8h'"
        )
    return BucketOffset(text, int(seconds)) if seconds else None


def _session(zone_name: str, clock: str, text: str, owner: str) -> BucketOffset:
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", clock)
    if match is None or int(match[1]) > 23 or int(match[2]) > 59:
        raise ValueError(
            f"{owner}: bucket_offset {text!r}: the session close {clock!r} is not a time "
            "HH:MM between 00:00 and 23:59, e.g. 'America/New_York 16:00'"
        )
    close = time(int(match[1]), int(match[2]))
    if zone_name in ("UTC", "Etc/UTC", "Z"):  # a fixed zone: the same days as a duration
        hours = close.hour * 3600 + close.minute * 60
        return BucketOffset(text, hours - DAY if hours else 0)
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{owner}: bucket_offset {text!r}: {zone_name!r} is not a time zone of the IANA "
            "database; use a name such as 'America/New_York' or 'Europe/London' (the tzdata "
            "package provides them where the system has none)"
        ) from None
    return BucketOffset(text, zone=zone, close=close)


def _usage(owner: str, value: object) -> str:
    return (
        f"{owner}: bucket_offset {value!r} is not a duration such as '-8h' or '16h30m', nor a "
        "time zone and session close such as 'America/New_York 16:00'"
    )


__all__ = [
    "DAY",
    "MONDAY",
    "NO_OFFSET",
    "WEEK",
    "BucketOffset",
    "Calendar",
    "Sessions",
    "Uniform",
    "parse_offset",
    "plain",
]
