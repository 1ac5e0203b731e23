"""The run's clock.

Batch runs can pin "now" (run.as_of): the future-skew check, scored_at and failed_at then depend
only on the input and the configuration, so a re-run gives byte-identical output. Without as_of the
clock is the wall clock, read per call.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import time

from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp as BeamTimestamp
from apache_beam.utils.windowed_value import WindowedValue
from google.protobuf.timestamp_pb2 import Timestamp


class RunClock:
    def __init__(self, as_of: dt.datetime | None = None):
        if as_of is not None and as_of.tzinfo is None:
            raise ValueError("as_of must carry a time zone")
        self._as_of_ns = None if as_of is None else int(as_of.timestamp()) * 1_000_000_000 + as_of.microsecond * 1000

    @property
    def pinned(self) -> bool:
        return self._as_of_ns is not None

    def now_ns(self) -> int:
        return self._as_of_ns if self._as_of_ns is not None else time.time_ns()

    def now_seconds(self) -> float:
        return self.now_ns() / 1e9

    def timestamp(self) -> Timestamp:
        ns = self.now_ns()
        return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)

    __call__ = timestamp


# RFC 3339 section 5.6, exactly: full-date "T" full-time, T and Z in either case, ASCII digits only.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
# What a protobuf Timestamp holds: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
TIMESTAMP_MIN_SECONDS = -62135596800
TIMESTAMP_MAX_SECONDS = 253402300799
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@functools.lru_cache(maxsize=4096)
def _date_days(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a date that must exist; ValueError otherwise (cached: a feed's
    records share a few dates)."""
    if not 1 <= month <= 12:
        raise ValueError(f"month {month:02d} does not exist")
    leap_year = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= day <= _DAYS_IN_MONTH[month - 1] + (month == 2 and leap_year):
        raise ValueError(f"day {day:02d} does not exist in {year:04d}-{month:02d}")
    return _days_from_civil(year, month, day)


def parse_rfc3339_timestamp(text: str) -> Timestamp:
    """An RFC 3339 date-time -> Timestamp; ValueError (with the reason) for anything else.

    Accepted: `2026-11-03T14:22:05Z`, lowercase `t` / `z`, any offset `+hh:mm` / `-hh:mm`
    (`-00:00` is UTC), 1 to 9 fractional digits kept to the nanosecond. Refused: ISO 8601 forms
    that RFC 3339 does not allow (basic format, week or ordinal dates, a space or other separator,
    hour-only or minute-only times, no offset), more than 9 fractional digits, impossible dates,
    and instants a Timestamp cannot hold. A leap second (`23:59:60` in UTC) is read as
    23:59:59.999999999 of that day: Timestamps, like Unix time, have no leap seconds, and this keeps
    the instant inside its day and after every earlier one.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError("not an RFC 3339 date-time (YYYY-MM-DDThh:mm:ss[.frac](Z|+hh:mm))")
    year, month, day, hour, minute, second, fraction, sign, offset_hours, offset_minutes = match.groups()
    days = _date_days(int(year), int(month), int(day))
    hour, minute, second = int(hour), int(minute), int(second)
    if hour > 23 or minute > 59 or second > 60:
        raise ValueError(f"time {hour:02d}:{minute:02d}:{second:02d} does not exist")
    offset = 0
    if sign is not None:
        if int(offset_hours) > 23 or int(offset_minutes) > 59:
            raise ValueError(f"offset {sign}{offset_hours}:{offset_minutes} does not exist")
        offset = (int(offset_hours) * 3600 + int(offset_minutes) * 60) * (1 if sign == "+" else -1)
    nanos = 0
    if fraction is not None:
        if len(fraction) > 9:
            raise ValueError("more than 9 fractional digits (a Timestamp holds nanoseconds)")
        nanos = int(fraction.ljust(9, "0"))
    seconds = days * 86400 + hour * 3600 + minute * 60 + min(second, 59) - offset
    if second == 60:
        if (seconds + 1) % 86400:
            raise ValueError("a leap second (:60) is only 23:59:60 UTC")
        nanos = 999_999_999
    if not TIMESTAMP_MIN_SECONDS <= seconds <= TIMESTAMP_MAX_SECONDS:
        raise ValueError("outside what a Timestamp holds (years 0001 to 9999 in UTC)")
    return Timestamp(seconds=seconds, nanos=nanos)


def beam_time(ts: Timestamp) -> BeamTimestamp:
    """A protobuf Timestamp as a Beam element timestamp (microseconds; finer digits dropped)."""
    return BeamTimestamp(seconds=ts.seconds, micros=ts.nanos // 1000)


_GLOBAL_WINDOWS = (GlobalWindow(),)


def stamped(value: object, at: BeamTimestamp) -> WindowedValue:
    """`value` output at Beam timestamp `at` in the global window, where every stage before
    60_sink's windowing runs: what a TimestampedValue gives there, without Beam assigning the
    window anew for each record (a GlobalWindow built and its end read from a proto constant each
    time, about 2 µs a record and stage)."""
    return WindowedValue(value, at, _GLOBAL_WINDOWS)


def parse_rfc3339(text: str) -> dt.datetime:
    """An RFC 3339 date-time -> an aware datetime in UTC (microseconds); ValueError otherwise."""
    ts = parse_rfc3339_timestamp(text)
    if ts.seconds > TIMESTAMP_MAX_SECONDS - 86400:
        raise ValueError("too close to the end of year 9999")
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)
