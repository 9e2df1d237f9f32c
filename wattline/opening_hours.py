"""A site's opening hours: `{"mon": ["07:00", "19:00"], ...}`, local time, per weekday."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def opening_hours_between(opening: dict[str, list[str]], zone: str, t_from: datetime, t_to: datetime) -> float:
    """Hours the site was open in [t_from, t_to), day by day in its local time (so a
    DST change day counts its real length), partial days clipped."""
    tz = ZoneInfo(zone)
    total = 0.0
    day: date = t_from.astimezone(tz).date()
    last = t_to.astimezone(tz).date()
    while day <= last:
        hours = opening.get(DAY_NAMES[day.weekday()])
        if hours:
            a, b = ([int(x) for x in h.split(":")] for h in hours)
            start = datetime.combine(day, datetime.min.time(), tz) + timedelta(hours=a[0], minutes=a[1])
            end = datetime.combine(day, datetime.min.time(), tz) + timedelta(hours=b[0], minutes=b[1])
            lo, hi = max(start, t_from), min(end, t_to)
            if hi > lo:
                total += (hi - lo).total_seconds() / 3600.0
        day += timedelta(days=1)
    return total
