"""A range beside the one before it and the same range a year earlier; and a daily profile
of this week against the typical weekday.

Ranges move by local calendar days (a week before a DST change is still seven local days),
and a year earlier is the same local dates (29 February falls back to the 28th).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import psycopg

from analytics.costing import site_cost
from wattline import queries
from wattline.domain import Resolution
from wattline.principal import Principal
from wattline.tariffs import TariffError

PROFILE_WEEKS = 4


@dataclass(frozen=True)
class Period:
    """One side of a comparison: its local dates, energy and (where priced) cost."""

    label: str
    start: datetime
    end: datetime
    kwh: float
    cost: Any  # Decimal in major units, or None without a tariff (or for installers)


def _year_back(day: date) -> date:
    try:
        return day.replace(year=day.year - 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year - 1, day=28)


def _root(conn: psycopg.Connection[Any], p: Principal, site_id: int) -> int:
    return int(next(n["id"] for n in queries.tree(conn, p, site_id) if n["kind"] == "site"))


def _kwh(conn: psycopg.Connection[Any], p: Principal, node_id: int, start: datetime, end: datetime) -> float:
    rows = queries.node_series(conn, p, [node_id], Resolution.HOUR1, start, end)
    return float(sum(r["energy_wh"] or 0.0 for r in rows)) / 1000.0


def compare(conn: psycopg.Connection[Any], p: Principal, site_id: int, start: datetime, end: datetime
            ) -> list[Period]:
    """The range [start, end) (local midnights), the same number of local days before it, and
    the same local dates a year earlier."""
    site = queries.site(conn, p, site_id)
    if site is None:
        return []
    zone = ZoneInfo(site["timezone"])
    first, last = start.astimezone(zone).date(), end.astimezone(zone).date()
    days = (last - first).days
    spans = (("chosen range", first, last), ("the period before", first - timedelta(days=days), first),
             ("a year earlier", _year_back(first), _year_back(last)))
    root = _root(conn, p, site_id)
    out = []
    for label, a, b in spans:
        t0, t1 = datetime.combine(a, datetime.min.time(), zone), datetime.combine(b, datetime.min.time(), zone)
        cost = None
        if p.sees_costs:
            try:
                priced = site_cost(conn, p, site_id, t0, t1)
                cost = priced.invoice.total if priced else None
            except TariffError:
                cost = None
        out.append(Period(label, t0, t1, _kwh(conn, p, root, t0, t1), cost))
    return out


@dataclass(frozen=True)
class Profile:
    """kW by local hour of day: each day of this week so far, and the typical weekday (the
    median over the weekdays of the PROFILE_WEEKS weeks before this one)."""

    days: dict[str, list[float | None]]
    typical_weekday: list[float | None]


def daily_profile(conn: psycopg.Connection[Any], p: Principal, site_id: int, now: datetime | None = None) -> Profile:
    """This week's days hour by hour against the typical weekday, for the site's root."""
    site = queries.site(conn, p, site_id)
    if site is None:
        return Profile({}, [None] * 24)
    zone = ZoneInfo(site["timezone"])
    today = (now or datetime.now(UTC)).astimezone(zone).date()
    monday = today - timedelta(days=today.weekday())
    since = datetime.combine(monday - timedelta(weeks=PROFILE_WEEKS), datetime.min.time(), zone)
    until = datetime.combine(today + timedelta(days=1), datetime.min.time(), zone)
    rows = queries.node_series(conn, p, [_root(conn, p, site_id)], Resolution.HOUR1, since, until)
    if not rows:
        return Profile({}, [None] * 24)
    frame = pd.DataFrame({"at": pd.to_datetime([r["bucket"] for r in rows], utc=True).tz_convert(zone),
                          "kw": [(r["mean_power_w"] or 0.0) / 1000.0 for r in rows]})
    frame["day"] = frame["at"].dt.date
    frame["hour"] = frame["at"].dt.hour
    before = frame[(frame["day"] < monday) & (frame["at"].dt.day_of_week < 5)]
    typical = before.groupby("hour")["kw"].median().reindex(range(24))
    this_week = frame[frame["day"] >= monday]
    days: dict[str, list[float | None]] = {}
    for day, group in this_week.groupby("day"):
        hours = group.groupby("hour")["kw"].mean().reindex(range(24))
        days[f"{day:%a %d}"] = [None if np.isnan(v) else round(float(v), 3) for v in hours]
    return Profile(days, [None if np.isnan(v) else round(float(v), 3) for v in typical])
