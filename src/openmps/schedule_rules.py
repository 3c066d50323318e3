"""StrategyContent (reference 4.6) as pure functions: parse and check it, and turn it into the
UTC instants a scheduled or cyclic push fires at. No clock, no store: ``now`` is an argument.

A cyclic push fires once on each local date of its window that matches the cycle, at ``time``
on that date's wall clock in the schedule's time zone (docs/scheduling.md). Wall-clock times
that a daylight-saving change skips or repeats follow zoneinfo's ``fold=0``: a skipped time
fires as many minutes after the gap as it lies into it (02:30 on a spring-forward day in
Europe/Berlin is 03:30 CEST), and a repeated time fires once, at its first occurrence.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from openmps.errors import BusinessError

MAX_OCCURRENCES = 1000  # sub-jobs one cyclic push may create
MAX_ZONE_CHARS = 64  # the store's time_zone column
IMMEDIATE, SCHEDULED, CYCLIC = 0, 1, 2
DAILY, WEEKLY, MONTHLY = 1, 2, 3
CYCLES = {DAILY: "daily", WEEKLY: "weekly", MONTHLY: "monthly"}
# What circleValue holds per cycle: (lowest, highest, meaning).
CYCLE_VALUES = {
    WEEKLY: (1, 7, "ISO weekdays 1 (Monday) to 7 (Sunday)"),
    MONTHLY: (1, 31, "days of the month 1 to 31"),
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# StrategyContent instants: Python's dates end at years 1 and 9999, and a window's local dates
# (any zone is less than a day from UTC) must fit too, so a day is kept free at either end.
MIN_INSTANT = datetime(1, 1, 2, tzinfo=UTC)
MAX_INSTANT = datetime(9999, 12, 30, 23, 59, 59, 999000, tzinfo=UTC)
_TIME_RE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])")


@dataclass(frozen=True)
class Occurrence:
    """One firing of a push: when (UTC) and, for a cyclic push, on which local date."""

    fire_at: datetime
    local_date: date | None = None

    @property
    def key_suffix(self) -> str:
        """What this occurrence appends to every msgKey of the push (docs/scheduling.md)."""
        return occurrence_suffix(self.local_date) if self.local_date else ""


@dataclass(frozen=True)
class Plan:
    """A checked strategy: StrategyType 1 or 2, its occurrences in time order, and (cyclic
    only) the IANA time zone its wall-clock times were read in."""

    strategy_type: int
    occurrences: tuple[Occurrence, ...]
    time_zone: str | None = None


def invalid(detail: str) -> BusinessError:
    return BusinessError(3028, "INVALID_PARAM", detail)


def occurrence_suffix(local_date: date) -> str:
    """``#YYYYMMDD``: a cyclic push's occurrences each need msgKeys of their own."""
    return "#" + local_date.strftime("%Y%m%d")


SUFFIX_CHARS = len("#YYYYMMDD")


def iso_utc(instant: datetime) -> str:
    """``2024-06-14T05:45:11Z``: how messages and the REST API show an instant."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_ms(instant: datetime) -> str:
    """``0001-01-02T00:00:00.000Z``: an instant to the millisecond."""
    return instant.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def from_ms(ms: int) -> datetime:
    """Milliseconds since the epoch as an aware UTC datetime (exact, no float rounding)."""
    return _EPOCH + timedelta(milliseconds=ms)


def to_ms(instant: datetime) -> int:
    return (instant - _EPOCH) // timedelta(milliseconds=1)


def utc_instant(value: datetime, where: str) -> datetime:
    """An aware ``value`` in UTC; 3028 naming ``where`` when UTC has no such instant (a
    time of year 1 or 9999 whose offset takes it out of the years 1 to 9999)."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise invalid(
            f"{where} {value.isoformat()} is out of range: use a time from "
            f"{datetime.min.isoformat()}Z to {datetime.max.isoformat()}Z"
        ) from None


def zone_named(name: object, where: str) -> ZoneInfo:
    """The IANA zone ``name``; 3028 naming ``where`` when there is no such zone."""
    if not isinstance(name, str) or not name.strip():
        raise invalid(f"{where} must be an IANA time zone name such as Asia/Shanghai")
    if len(name) > MAX_ZONE_CHARS:
        raise invalid(f"{where} is longer than {MAX_ZONE_CHARS} characters")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise invalid(
            f"{where} {name!r} is not an IANA time zone name (such as Asia/Shanghai, "
            "Europe/Berlin or UTC)"
        ) from None


def local_to_utc(local_date: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of wall-clock ``at`` on ``local_date`` in ``zone`` (DST rule above)."""
    return datetime.combine(local_date, at.replace(fold=0), tzinfo=zone).astimezone(UTC)


def parse_time_of_day(value: object) -> time:
    """``"HH:mm:ss"`` on a 24-hour clock."""
    match = _TIME_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise invalid(
            f'StrategyContent.time must be "HH:mm:ss" on a 24-hour clock, got {_shown(value)}'
        )
    hours, minutes, seconds = (int(part) for part in match.groups())
    return time(hours, minutes, seconds)


def cycle_occurrences(
    *,
    start: datetime,
    end: datetime,
    circle_type: int,
    circle_value: frozenset[int],
    at: time,
    zone: ZoneInfo,
    now: datetime,
    limit: int = MAX_OCCURRENCES,
) -> list[Occurrence]:
    """Every occurrence after ``now``: each local date from ``start``'s to ``end``'s (in
    ``zone``, both included) that matches the cycle, at wall-clock ``at``.

    Daily matches every date, weekly the ISO weekdays in ``circle_value``, monthly the days
    of the month in it (a month without that day is skipped). Raises 3028 when more than
    ``limit`` occurrences lie ahead. Dates before today (in ``zone``) are not looked at.
    """
    first = max(start.astimezone(zone).date(), now.astimezone(zone).date())
    last = end.astimezone(zone).date()
    out: list[Occurrence] = []
    for offset in range((last - first).days + 1):  # (no day after ``last``: it may be 9999-12-31)
        day = first + timedelta(days=offset)
        if _matches(day, circle_type, circle_value):
            fire_at = local_to_utc(day, at, zone)
            if fire_at > now:
                out.append(Occurrence(fire_at, day))
                if len(out) > limit:
                    raise invalid(
                        f"the cycle has more than {limit} occurrences between now and "
                        f"StrategyContent.endTime ({iso_utc(end)}); shorten the window or "
                        "split the push"
                    )
    return out


def _matches(day: date, circle_type: int, circle_value: frozenset[int]) -> bool:
    if circle_type == DAILY:
        return True
    if circle_type == WEEKLY:
        return day.isoweekday() in circle_value
    return day.day in circle_value


def parse_strategy(
    strategy_type: int | None, content: str | None, *, now: datetime, default_zone: str
) -> Plan:
    """Check StrategyType 1 or 2 and its StrategyContent; 3028 saying what is wrong.

    ``default_zone`` is the setting ``schedule_time_zone``: the zone of a cyclic push whose
    StrategyContent has no ``timeZone`` (our extension).
    """
    if strategy_type not in (SCHEDULED, CYCLIC):
        raise invalid(
            f"StrategyType must be 0 (immediate), 1 (scheduled) or 2 (cyclic), got {strategy_type}"
        )
    fields = _content(strategy_type, content)
    if strategy_type == SCHEDULED:
        fire_at = _instant(fields, "fixedTime", strategy_type)
        if fire_at <= now:
            raise invalid(
                f"StrategyContent.fixedTime ({iso_utc(fire_at)}) is not in the future; "
                f"the server's time is {iso_utc(now)}"
            )
        return Plan(SCHEDULED, (Occurrence(fire_at),))

    start = _instant(fields, "startTime", strategy_type)
    end = _instant(fields, "endTime", strategy_type)
    if end < start:
        raise invalid(
            f"StrategyContent.endTime ({iso_utc(end)}) is before startTime ({iso_utc(start)})"
        )
    circle_type = fields.get("circleType")
    if _integer(circle_type) is None or circle_type not in CYCLES:
        raise invalid(
            "StrategyContent.circleType must be 1 (daily), 2 (weekly) or 3 (monthly), "
            f"got {_shown(circle_type)}"
        )
    assert isinstance(circle_type, int)
    values = _circle_values(fields.get("circleValue"), circle_type)
    if "time" not in fields:
        raise invalid('StrategyContent.time ("HH:mm:ss") is required when StrategyType is 2')
    at = parse_time_of_day(fields["time"])
    zone_name = fields.get("timeZone", default_zone)
    zone = zone_named(zone_name, "StrategyContent.timeZone")
    occurrences = cycle_occurrences(
        start=start,
        end=end,
        circle_type=circle_type,
        circle_value=values,
        at=at,
        zone=zone,
        now=now,
    )
    if not occurrences:
        raise invalid(
            f"the {CYCLES[circle_type]} cycle has no occurrence after now ({iso_utc(now)}) "
            f"between startTime and endTime at {at.isoformat()} {zone.key}"
        )
    return Plan(CYCLIC, tuple(occurrences), zone.key)


def _content(strategy_type: int, content: str | None) -> dict[str, Any]:
    if content is None or not content.strip():
        raise invalid(f"StrategyContent is required when StrategyType is {strategy_type}")
    try:
        decoded = json.loads(content)
    except json.JSONDecodeError as exc:
        raise invalid(
            f"StrategyContent is not valid JSON: {exc.msg} at character {exc.pos + 1}"
        ) from None
    except ValueError as exc:  # an integer of thousands of digits
        raise invalid(f"StrategyContent is not valid JSON: {exc}") from None
    except RecursionError:
        raise invalid("StrategyContent is nested too deeply") from None
    if not isinstance(decoded, dict):
        raise invalid(f"StrategyContent must be a JSON object, got {_shown(decoded)}")
    return decoded


def _instant(fields: dict[str, Any], key: str, strategy_type: int) -> datetime:
    if key not in fields:
        raise invalid(
            f"StrategyContent.{key} is required when StrategyType is {strategy_type} "
            "(milliseconds since 1970-01-01 UTC)"
        )
    ms = _integer(fields[key])
    if ms is None:
        raise invalid(
            f"StrategyContent.{key} must be an integer of milliseconds since 1970-01-01 UTC, "
            f"got {_shown(fields[key])}"
        )
    try:
        instant = from_ms(ms)
    except OverflowError:
        instant = None
    if instant is None or not MIN_INSTANT <= instant <= MAX_INSTANT:
        raise invalid(
            f"StrategyContent.{key} {ms} is out of range: use milliseconds since 1970-01-01 "
            f"UTC from {to_ms(MIN_INSTANT)} ({iso_ms(MIN_INSTANT)}) to {to_ms(MAX_INSTANT)} "
            f"({iso_ms(MAX_INSTANT)})"
        )
    return instant


def _circle_values(value: object, circle_type: int) -> frozenset[int]:
    """The checked circleValue; a daily cycle ignores it."""
    if circle_type == DAILY:
        return frozenset()
    low, high, meaning = CYCLE_VALUES[circle_type]
    name = CYCLES[circle_type]
    if not isinstance(value, list) or not value:
        raise invalid(
            f"StrategyContent.circleValue must be a non-empty list of {meaning} for a "
            f"{name} cycle, got {_shown(value)}"
        )
    out = set()
    for item in value:
        number = _integer(item)
        if number is None or not low <= number <= high:
            raise invalid(
                f"StrategyContent.circleValue {_shown(item)} is out of range for a {name} "
                f"cycle: use {meaning}"
            )
        out.add(number)
    return frozenset(out)


def _integer(value: object) -> int | None:
    """A JSON integer (not a boolean, not a fraction), else None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _shown(value: object) -> str:
    # A lone surrogate ("\\ud800" in StrategyContent) is shown as its escape: raw, it would
    # make the refusal itself impossible to send (UTF-8 cannot encode it).
    text = json.dumps(value, ensure_ascii=False).encode("utf-8", "backslashreplace").decode()
    return text if len(text) <= 60 else text[:60] + "..."
