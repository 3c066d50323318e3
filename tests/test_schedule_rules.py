"""StrategyContent rules as pure functions with fixed instants: occurrences of daily, weekly and
monthly cycles, daylight-saving gaps and folds, and every refusal."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from openmps.errors import BusinessError
from openmps.schedule_rules import (
    MAX_OCCURRENCES,
    Occurrence,
    Plan,
    from_ms,
    occurrence_suffix,
    parse_strategy,
    to_ms,
    utc_instant,
)

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return to_ms(utc(year, month, day, hour, minute))


def cyclic(zone: str = "Asia/Shanghai", now: datetime = NOW, **content: Any) -> Plan:
    return parse_strategy(2, json.dumps(content), now=now, default_zone=zone)


def fire_times(plan: Plan) -> list[tuple[date | None, datetime]]:
    return [(o.local_date, o.fire_at) for o in plan.occurrences]


def test_ms_round_trip_is_exact() -> None:
    assert to_ms(from_ms(1630303126001)) == 1630303126001
    assert from_ms(1630303126001) == datetime(2021, 8, 30, 5, 58, 46, 1000, tzinfo=UTC)


def test_scheduled_once_fires_at_fixed_time() -> None:
    plan = parse_strategy(
        1,
        json.dumps({"fixedTime": ms(2024, 3, 2, 8, 0)}),
        now=NOW,
        default_zone="Asia/Shanghai",
    )
    assert plan == Plan(1, (Occurrence(utc(2024, 3, 2, 8, 0)),), None)
    assert plan.occurrences[0].key_suffix == ""


def test_daily_in_default_zone_skips_todays_past_occurrence() -> None:
    # 13:45:11 Beijing time is 05:45:11 UTC; on 1 March it is already past at 12:00 UTC.
    plan = cyclic(
        startTime=ms(2024, 2, 28),
        endTime=ms(2024, 3, 3, 15, 0),
        circleType=1,
        circleValue=[1, 7],  # ignored by a daily cycle, as in the MPS documentation's example
        time="13:45:11",
    )
    assert plan.time_zone == "Asia/Shanghai"
    assert fire_times(plan) == [
        (date(2024, 3, 2), utc(2024, 3, 2, 5, 45, 11)),
        (date(2024, 3, 3), utc(2024, 3, 3, 5, 45, 11)),
    ]
    assert [o.key_suffix for o in plan.occurrences] == ["#20240302", "#20240303"]


def test_window_dates_are_local_dates() -> None:
    # endTime 2024-03-03T16:30Z is already 4 March in Shanghai (UTC+8): 4 March is included.
    plan = cyclic(
        startTime=ms(2024, 3, 2), endTime=ms(2024, 3, 3, 16, 30), circleType=1, time="09:00:00"
    )
    assert [d for d, _ in fire_times(plan)] == [
        date(2024, 3, 2),
        date(2024, 3, 3),
        date(2024, 3, 4),
    ]


def test_weekly_matches_iso_weekdays() -> None:
    # 4 March 2024 is a Monday; 1 = Monday, 7 = Sunday.
    plan = cyclic(
        "UTC",
        startTime=ms(2024, 3, 4),
        endTime=ms(2024, 3, 17),
        circleType=2,
        circleValue=[1, 7, 7],
        time="08:00:00",
    )
    assert fire_times(plan) == [
        (date(2024, 3, 4), utc(2024, 3, 4, 8)),
        (date(2024, 3, 10), utc(2024, 3, 10, 8)),
        (date(2024, 3, 11), utc(2024, 3, 11, 8)),
        (date(2024, 3, 17), utc(2024, 3, 17, 8)),
    ]


def test_monthly_skips_days_a_month_lacks() -> None:
    plan = cyclic(
        "UTC",
        now=utc(2025, 1, 1),
        startTime=ms(2025, 1, 1),
        endTime=ms(2025, 4, 30),
        circleType=3,
        circleValue=[31, 30],
        time="00:00:01",
    )
    assert [d for d, _ in fire_times(plan)] == [
        date(2025, 1, 30),
        date(2025, 1, 31),
        date(2025, 3, 30),
        date(2025, 3, 31),
        date(2025, 4, 30),
    ]


def test_time_zone_extension() -> None:
    plan = cyclic(
        startTime=ms(2024, 3, 2),
        endTime=ms(2024, 3, 2, 23),
        circleType=1,
        time="08:00:00",
        timeZone="America/New_York",
    )
    assert plan.time_zone == "America/New_York"
    # startTime 2024-03-02T00:00Z is still 1 March in New York (19:00 EST, UTC-5).
    assert fire_times(plan) == [
        (date(2024, 3, 1), utc(2024, 3, 1, 13)),
        (date(2024, 3, 2), utc(2024, 3, 2, 13)),
    ]


@pytest.mark.parametrize(
    ("zone", "day", "at", "expected"),
    [
        # Spring forward: 02:00-03:00 does not exist; 02:30 fires at 03:30 CEST (01:30 UTC).
        ("Europe/Berlin", date(2024, 3, 30), "02:30:00", utc(2024, 3, 30, 1, 30)),  # CET
        ("Europe/Berlin", date(2024, 3, 31), "02:30:00", utc(2024, 3, 31, 1, 30)),  # gap
        ("Europe/Berlin", date(2024, 4, 1), "02:30:00", utc(2024, 4, 1, 0, 30)),  # CEST
        # Fall back: 02:00-03:00 happens twice; 02:30 fires once, at the first (CEST).
        ("Europe/Berlin", date(2024, 10, 27), "02:30:00", utc(2024, 10, 27, 0, 30)),
        ("Europe/Berlin", date(2024, 10, 28), "02:30:00", utc(2024, 10, 28, 1, 30)),
        # New York: 02:30 does not exist on 10 March (fires 03:30 EDT = 07:30 UTC) ...
        ("America/New_York", date(2024, 3, 10), "02:30:00", utc(2024, 3, 10, 7, 30)),
        # ... and 01:30 happens twice on 3 November: the first, in EDT (05:30 UTC).
        ("America/New_York", date(2024, 11, 3), "01:30:00", utc(2024, 11, 3, 5, 30)),
        ("America/New_York", date(2024, 11, 4), "01:30:00", utc(2024, 11, 4, 6, 30)),
    ],
)
def test_daylight_saving_gap_and_fold(zone: str, day: date, at: str, expected: datetime) -> None:
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    plan = cyclic(
        zone, now=utc(2024, 1, 1), startTime=to_ms(noon), endTime=to_ms(noon), circleType=1, time=at
    )
    assert fire_times(plan) == [(day, expected)]


@pytest.fixture
def server_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def set_zone(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()

    yield set_zone
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(
    ("tz", "offset_s"),
    [
        ("UTC", 0),
        ("Pacific/Kiritimati", 50400),
        ("America/Los_Angeles", -28800),
        ("Asia/Tokyo", 32400),
    ],
)
def test_server_time_zone_does_not_matter(server_zone: Any, tz: str, offset_s: int) -> None:
    server_zone(tz)
    assert time.localtime(to_ms(NOW) // 1000).tm_gmtoff == offset_s  # the process zone changed
    plan = cyclic(
        "Europe/Berlin",
        now=utc(2024, 3, 29),
        startTime=ms(2024, 3, 30),
        endTime=ms(2024, 3, 31, 12),
        circleType=1,
        time="02:30:00",
    )
    assert fire_times(plan) == [
        (date(2024, 3, 30), utc(2024, 3, 30, 1, 30)),
        (date(2024, 3, 31), utc(2024, 3, 31, 1, 30)),
    ]
    once = parse_strategy(1, '{"fixedTime": 1711848600000}', now=NOW, default_zone="UTC")
    assert once.occurrences == (Occurrence(utc(2024, 3, 31, 1, 30)),)


def test_occurrence_cap() -> None:
    start = utc(2024, 3, 2)
    days = MAX_OCCURRENCES - 1
    fits = cyclic(
        "UTC",
        startTime=to_ms(start),
        endTime=ms(2024, 3, 2) + days * 86_400_000,
        circleType=1,
        time="00:00:00",
    )
    assert len(fits.occurrences) == MAX_OCCURRENCES
    with pytest.raises(BusinessError) as caught:
        cyclic(
            "UTC",
            startTime=to_ms(start),
            endTime=ms(2024, 3, 2) + (days + 1) * 86_400_000,
            circleType=1,
            time="00:00:00",
        )
    assert caught.value.detail == (
        "the cycle has more than 1000 occurrences between now and StrategyContent.endTime "
        "(2026-11-27T00:00:00Z); shorten the window or split the push"
    )


def test_a_far_past_start_is_cheap_and_counts_only_the_future() -> None:
    plan = cyclic("UTC", startTime=0, endTime=ms(2024, 3, 3, 23), circleType=1, time="06:00:00")
    assert [d for d, _ in fire_times(plan)] == [date(2024, 3, 2), date(2024, 3, 3)]


def test_occurrence_suffix() -> None:
    assert occurrence_suffix(date(2024, 6, 14)) == "#20240614"


OUT_OF_RANGE = (
    "is out of range: use milliseconds since 1970-01-01 UTC from -62135510400000 "
    "(0001-01-02T00:00:00.000Z) to 253402214399999 (9999-12-30T23:59:59.999Z)"
)

GOOD = {
    "startTime": ms(2024, 3, 2),
    "endTime": ms(2024, 3, 9),
    "circleType": 2,
    "circleValue": [5],
    "time": "08:00:00",
}


@pytest.mark.parametrize(
    ("strategy_type", "content", "message"),
    [
        (3, "{}", "StrategyType must be 0 (immediate), 1 (scheduled) or 2 (cyclic), got 3"),
        (-1, "{}", "StrategyType must be 0 (immediate), 1 (scheduled) or 2 (cyclic), got -1"),
        (1, None, "StrategyContent is required when StrategyType is 1"),
        (2, "  ", "StrategyContent is required when StrategyType is 2"),
        (
            1,
            "{fixedTime: 1}",
            "StrategyContent is not valid JSON: Expecting property name "
            "enclosed in double quotes at character 2",
        ),
        (1, "[1]", "StrategyContent must be a JSON object, got [1]"),
        (
            1,
            "{}",
            "StrategyContent.fixedTime is required when StrategyType is 1 "
            "(milliseconds since 1970-01-01 UTC)",
        ),
        (
            1,
            '{"fixedTime": "1709294400000"}',
            "StrategyContent.fixedTime must be an integer of "
            'milliseconds since 1970-01-01 UTC, got "1709294400000"',
        ),
        (
            1,
            '{"fixedTime": 1.5e12}',
            "StrategyContent.fixedTime must be an integer of "
            "milliseconds since 1970-01-01 UTC, got 1500000000000.0",
        ),
        (
            1,
            '{"fixedTime": true}',
            "StrategyContent.fixedTime must be an integer of "
            "milliseconds since 1970-01-01 UTC, got true",
        ),
        (
            1,
            '{"fixedTime": 1709294400000}',
            "StrategyContent.fixedTime (2024-03-01T12:00:00Z) "
            "is not in the future; the server's time is 2024-03-01T12:00:00Z",
        ),
        (
            1,
            '{"fixedTime": 99999999999999999}',
            f"StrategyContent.fixedTime 99999999999999999 {OUT_OF_RANGE}",
        ),
        (  # 9999-12-31T23:59:59.999Z: in Asia/Shanghai that is year 10000 (was a 500)
            2,
            json.dumps({**GOOD, "endTime": 253402300799999}),
            f"StrategyContent.endTime 253402300799999 {OUT_OF_RANGE}",
        ),
        (  # 0001-01-01T00:00:00Z: in America/New_York that is year 0 (was a 500)
            2,
            json.dumps({**GOOD, "startTime": -62135596800000, "timeZone": "America/New_York"}),
            f"StrategyContent.startTime -62135596800000 {OUT_OF_RANGE}",
        ),
        (
            1,
            '{"fixedTime": 253402214400000}',
            f"StrategyContent.fixedTime 253402214400000 {OUT_OF_RANGE}",
        ),
        (
            2,
            json.dumps({**GOOD, "startTime": None}),
            "StrategyContent.startTime must be an "
            "integer of milliseconds since 1970-01-01 UTC, got null",
        ),
        (
            2,
            json.dumps({k: v for k, v in GOOD.items() if k != "endTime"}),
            "StrategyContent.endTime is required when StrategyType is 2 (milliseconds since "
            "1970-01-01 UTC)",
        ),
        (
            2,
            json.dumps({**GOOD, "endTime": ms(2024, 3, 1)}),
            "StrategyContent.endTime "
            "(2024-03-01T00:00:00Z) is before startTime (2024-03-02T00:00:00Z)",
        ),
        (
            2,
            json.dumps({**GOOD, "circleType": 4}),
            "StrategyContent.circleType must be 1 (daily), 2 (weekly) or 3 (monthly), got 4",
        ),
        (
            2,
            json.dumps({k: v for k, v in GOOD.items() if k != "circleType"}),
            "StrategyContent.circleType must be 1 (daily), 2 (weekly) or 3 (monthly), got null",
        ),
        (
            2,
            json.dumps({**GOOD, "circleValue": [0]}),
            "StrategyContent.circleValue 0 is out of "
            "range for a weekly cycle: use ISO weekdays 1 (Monday) to 7 (Sunday)",
        ),
        (
            2,
            json.dumps({**GOOD, "circleValue": [8]}),
            "StrategyContent.circleValue 8 is out of "
            "range for a weekly cycle: use ISO weekdays 1 (Monday) to 7 (Sunday)",
        ),
        (
            2,
            json.dumps({**GOOD, "circleType": 3, "circleValue": [32]}),
            "StrategyContent."
            "circleValue 32 is out of range for a monthly cycle: use days of the month 1 to 31",
        ),
        (
            2,
            json.dumps({**GOOD, "circleValue": ["1"]}),
            'StrategyContent.circleValue "1" is '
            "out of range for a weekly cycle: use ISO weekdays 1 (Monday) to 7 (Sunday)",
        ),
        (
            2,
            json.dumps({**GOOD, "circleValue": []}),
            "StrategyContent.circleValue must be a "
            "non-empty list of ISO weekdays 1 (Monday) to 7 (Sunday) for a weekly cycle, got []",
        ),
        (
            2,
            json.dumps({**GOOD, "circleValue": 5}),
            "StrategyContent.circleValue must be a "
            "non-empty list of ISO weekdays 1 (Monday) to 7 (Sunday) for a weekly cycle, got 5",
        ),
        (
            2,
            json.dumps({k: v for k, v in GOOD.items() if k != "time"}),
            'StrategyContent.time ("HH:mm:ss") is required when StrategyType is 2',
        ),
        (
            2,
            json.dumps({**GOOD, "time": "24:00:00"}),
            'StrategyContent.time must be "HH:mm:ss" on a 24-hour clock, got "24:00:00"',
        ),
        (
            2,
            json.dumps({**GOOD, "time": "8:00:00"}),
            'StrategyContent.time must be "HH:mm:ss" on a 24-hour clock, got "8:00:00"',
        ),
        (
            2,
            json.dumps({**GOOD, "time": "08:60:00"}),
            'StrategyContent.time must be "HH:mm:ss" on a 24-hour clock, got "08:60:00"',
        ),
        (
            2,
            json.dumps({**GOOD, "time": "08:00"}),
            'StrategyContent.time must be "HH:mm:ss" on a 24-hour clock, got "08:00"',
        ),
        (
            2,
            json.dumps({**GOOD, "timeZone": "Mars/Olympus"}),
            "StrategyContent.timeZone "
            "'Mars/Olympus' is not an IANA time zone name (such as Asia/Shanghai, Europe/Berlin "
            "or UTC)",
        ),
        (
            2,
            json.dumps({**GOOD, "timeZone": "../../etc/passwd"}),
            "StrategyContent.timeZone "
            "'../../etc/passwd' is not an IANA time zone name (such as Asia/Shanghai, "
            "Europe/Berlin or UTC)",
        ),
        (
            2,
            json.dumps({**GOOD, "timeZone": 8}),
            "StrategyContent.timeZone must be an IANA time zone name such as Asia/Shanghai",
        ),
        (
            2,
            json.dumps({**GOOD, "startTime": ms(2024, 2, 1), "endTime": ms(2024, 2, 28)}),
            "the weekly cycle has no occurrence after now (2024-03-01T12:00:00Z) between "
            "startTime and endTime at 08:00:00 Asia/Shanghai",
        ),
    ],
)
def test_refusals(strategy_type: int, content: str | None, message: str) -> None:
    with pytest.raises(BusinessError) as caught:
        parse_strategy(strategy_type, content, now=NOW, default_zone="Asia/Shanghai")
    assert (caught.value.result_code, caught.value.name, caught.value.detail) == (
        3028,
        "INVALID_PARAM",
        message,
    )


def test_the_edges_of_the_range_work_in_zones_a_day_apart() -> None:
    first, last = -62135510400000, 253402214399999
    window = {"startTime": first, "endTime": last, "circleType": 1, "time": "23:59:59"}
    late = datetime(9999, 12, 29, tzinfo=UTC)
    east = cyclic("Pacific/Kiritimati", now=late, **window)  # UTC+14: its last date is 12-31
    assert fire_times(east) == [
        (date(9999, 12, 29), datetime(9999, 12, 29, 9, 59, 59, tzinfo=UTC)),
        (date(9999, 12, 30), datetime(9999, 12, 30, 9, 59, 59, tzinfo=UTC)),
        (date(9999, 12, 31), datetime(9999, 12, 31, 9, 59, 59, tzinfo=UTC)),
    ]
    west = cyclic("Etc/GMT+12", now=late, **window)  # UTC-12
    assert fire_times(west) == [
        (date(9999, 12, 28), datetime(9999, 12, 29, 11, 59, 59, tzinfo=UTC)),
        (date(9999, 12, 29), datetime(9999, 12, 30, 11, 59, 59, tzinfo=UTC)),
        (date(9999, 12, 30), datetime(9999, 12, 31, 11, 59, 59, tzinfo=UTC)),
    ]


def test_utc_instant_refuses_an_offset_past_the_years_1_to_9999() -> None:
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    with pytest.raises(BusinessError) as caught:
        utc_instant(early, "StartTime")
    assert (caught.value.result_code, caught.value.detail) == (
        3028,
        "StartTime 0001-01-01T00:00:00+01:00 is out of range: use a time from "
        "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z",
    )
    inside = datetime(1, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    assert utc_instant(inside, "StartTime") == datetime(1, 1, 1, tzinfo=UTC)
