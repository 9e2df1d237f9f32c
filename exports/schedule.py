"""The periods of an export job, in a site's local calendar: days, Monday-start weeks or
months, each [start, end) at local midnight (23 or 25 hours across DST)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

Schedule = Literal["daily", "weekly", "monthly"]


def _period_start(day: date, schedule: Schedule) -> date:
    if schedule == "weekly":
        return day - timedelta(days=day.weekday())
    if schedule == "monthly":
        return day.replace(day=1)
    return day


def _next(start: date, schedule: Schedule) -> date:
    if schedule == "daily":
        return start + timedelta(days=1)
    if schedule == "weekly":
        return start + timedelta(days=7)
    return date(start.year + start.month // 12, start.month % 12 + 1, 1)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), zone)


def complete_periods(schedule: Schedule, tz: str, since: datetime, now: datetime) -> list[tuple[datetime, datetime]]:
    """Every complete period from the one that was last complete at `since`, up to `now`."""
    zone = ZoneInfo(tz)
    current = _period_start(now.astimezone(zone).date(), schedule)  # the period now running
    first = _period_start(since.astimezone(zone).date(), schedule)
    # The period last complete at `since` is the one before the period `since` falls in.
    start = _period_start(first - timedelta(days=1), schedule)
    out = []
    while start < current:
        end = _next(start, schedule)
        out.append((_midnight(start, zone), _midnight(end, zone)))
        start = end
    return out
