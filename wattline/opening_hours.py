"""A site's opening hours: `{"mon": ["07:00", "19:00"], ...}`, local time, per weekday."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from wattline.errors import Invalid

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: A local time of day, "00:00" to "24:00" (the end of the day).
HOUR_MINUTE = re.compile(r"^(?:[01]\d|2[0-3]):[0-5]\d$|^24:00$")


def validate_opening_hours(hours: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The hours in their stored form, or `Invalid` naming the day and what is wrong."""
    out: dict[str, list[str]] = {}
    for day, span in hours.items():
        if day not in DAY_NAMES:
            raise Invalid("Invalid opening hours", f"{day!r} is not a day: use {', '.join(DAY_NAMES)}",
                          field="opening_hours")
        if isinstance(span, str) or len(span) != 2 or not all(isinstance(t, str) and HOUR_MINUTE.match(t)
                                                              for t in span):
            raise Invalid("Invalid opening hours", f"{day}: give [opening, closing] as HH:MM, 00:00 to 24:00",
                          field="opening_hours")
        if span[0] >= span[1]:
            raise Invalid("Invalid opening hours", f"{day}: closing {span[1]} must be after opening {span[0]}",
                          field="opening_hours")
        out[day] = [span[0], span[1]]
    return out


def opening_hours_between(opening: dict[str, list[str]], zone: str, t_from: datetime, t_to: datetime) -> float:
    """Hours the site was open in [t_from, t_to), day by day in its local time (so a
    DST change day counts its real length), partial days clipped."""
    tz = ZoneInfo(zone)
    total = 0.0
    day: date = t_from.astimezone(tz).date()
    last = t_to.astimezone(tz).date()
    while day <= last:
        hours = opening.get(DAY_NAMES[day.weekday()])
        if hours and len(hours) == 2 and all(isinstance(h, str) and HOUR_MINUTE.match(h) for h in hours):
            a, b = ([int(x) for x in h.split(":")] for h in hours)
            start = datetime.combine(day, datetime.min.time(), tz) + timedelta(hours=a[0], minutes=a[1])
            end = datetime.combine(day, datetime.min.time(), tz) + timedelta(hours=b[0], minutes=b[1])
            lo, hi = max(start, t_from), min(end, t_to)
            if hi > lo:
                total += (hi - lo).total_seconds() / 3600.0
        day += timedelta(days=1)
    return total
