"""Outdoor temperature per site and day, and the savings projects measured against it.

A site's daily mean outdoor temperature arrives as a CSV upload, through the API, or from
the simulator. Heating and cooling degree days are not stored: they are computed on read
from the means at the site's own bases (`analytics.degree_days`), so changing a base needs
no re-import. A day is the site's local calendar day, like a daily rollup.

A savings project (measurement and verification) is a site, a name and the first day of
its reporting period; its baseline is fitted on the days before it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import psycopg

from wattline import audit
from wattline.csv_upload import parse_rows
from wattline.db import fetch_all, fetch_one
from wattline.errors import Conflict, Invalid, NotFound, RowErrors
from wattline.principal import Principal

Conn = psycopg.Connection[Any]
Source = Literal["upload", "api", "simulator"]
#: The coldest and hottest daily means we accept (the records are −89 °C and about 40 °C).
MIN_C, MAX_C = -90.0, 60.0
#: One upload holds at most this many days (about 55 years).
MAX_DAYS = 20_000
CSV_COLUMNS = ("day", "mean_c")
#: The days a temperature or a project may be on: before metering began there is nothing to
#: compare, and far ahead is a typo (both would also overflow the date arithmetic).
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(2199, 12, 31)


@dataclass(frozen=True)
class DayTemperature:
    """The mean outdoor temperature of one local day at a site."""

    day: date
    mean_c: float


def _latest_day() -> date:
    # The day furthest east (UTC+14) is the last one that may have ended; later ones are forecasts.
    return (datetime.now(UTC) + timedelta(hours=14)).date()


def _refusals(days: Sequence[DayTemperature]) -> list[tuple[int, str]]:
    """What is wrong with each entry, by 1-based position."""
    seen: dict[date, int] = {}
    latest = _latest_day()
    out: list[tuple[int, str]] = []
    for i, d in enumerate(days, start=1):
        if not math.isfinite(d.mean_c) or not MIN_C <= d.mean_c <= MAX_C:
            out.append((i, f"mean_c {d.mean_c} is outside {MIN_C:g}..{MAX_C:g} °C"))
        elif d.day < FIRST_DAY:
            out.append((i, f"{d.day} is before {FIRST_DAY}"))
        elif d.day > latest:
            out.append((i, f"{d.day} has not ended yet (a daily mean is measured, not forecast)"))
        elif d.day in seen:
            out.append((i, f"{d.day} is given twice (first at {seen[d.day]})"))
        seen.setdefault(d.day, i)
    return out


def _parse_row(row: dict[str, str]) -> DayTemperature:
    try:
        day = date.fromisoformat(row["day"])
    except ValueError:
        raise ValueError(f"day {row['day']!r} is not a date like 2026-01-31") from None
    try:
        return DayTemperature(day, float(row["mean_c"]))
    except ValueError:
        raise ValueError(f"mean_c {row['mean_c']!r} is not a number") from None


def parse_csv(data: bytes) -> list[DayTemperature]:
    """Days from a CSV with a header `day,mean_c` (ISO dates, °C). Every bad row is named
    with its line (`RowErrors`); nothing is returned unless all rows are good."""
    return parse_rows(data, CSV_COLUMNS, _parse_row, _refusals, max_rows=MAX_DAYS, what="days")


def save_temperatures(conn: Conn, actor: Principal | None, site_id: int, days: Sequence[DayTemperature], *,
                      source: Source) -> int:
    """Store (or replace) the site's daily means; all days or none. Returns how many."""
    if len(days) > MAX_DAYS:
        raise Invalid("Too many days", f"at most {MAX_DAYS} days at a time", field="days")
    errors = _refusals(days)
    if errors:
        raise RowErrors("Invalid temperatures", errors)
    with conn.transaction():
        if fetch_one(conn, "SELECT 1 FROM sites WHERE id = %s FOR SHARE", (site_id,)) is None:
            raise NotFound("site")
        with conn.cursor() as cur:
            cur.executemany("""INSERT INTO site_temperatures (site_id, day, mean_c, source) VALUES (%s, %s, %s, %s)
                               ON CONFLICT (site_id, day) DO UPDATE
                                  SET mean_c = EXCLUDED.mean_c, source = EXCLUDED.source, updated_at = now()""",
                            [(site_id, d.day, d.mean_c, source) for d in days])
        if days:
            audit.record(conn, actor, "update", "site_temperatures", site_id, source=source, days=len(days),
                         first=min(d.day for d in days).isoformat(), last=max(d.day for d in days).isoformat())
    return len(days)


def delete_temperatures(conn: Conn, actor: Principal | None, site_id: int, day_from: date, day_to: date) -> int:
    """Remove the site's daily means from `day_from` up to, not including, `day_to`."""
    with conn.transaction():
        removed = conn.execute("DELETE FROM site_temperatures WHERE site_id = %s AND day >= %s AND day < %s",
                               (site_id, day_from, day_to)).rowcount
        if removed:
            audit.record(conn, actor, "delete", "site_temperatures", site_id, days=removed,
                         first=day_from.isoformat(), last=(day_to - timedelta(days=1)).isoformat())
    return removed


def temperatures(conn: Conn, site_id: int, day_from: date, day_to: date) -> list[DayTemperature]:
    """The site's daily means from `day_from` up to, not including, `day_to`, by day.
    Callers check that the reader may see the site."""
    return [DayTemperature(r["day"], r["mean_c"]) for r in fetch_all(conn, """
        SELECT day, mean_c FROM site_temperatures WHERE site_id = %s AND day >= %s AND day < %s ORDER BY day""",
        (site_id, day_from, day_to))]


# -- savings projects ---------------------------------------------------------------------------
def create_project(conn: Conn, actor: Principal | None, site_id: int, name: str, starts_on: date, *,
                   baseline_days: int = 365) -> int:
    """A savings project of the site: its reporting period starts on `starts_on`, and its
    baseline is fitted on the `baseline_days` before."""
    name = name.strip()
    if not name:
        raise Invalid("Invalid project", "a project needs a name", field="name")
    if not 14 <= baseline_days <= 1096:
        raise Invalid("Invalid project", "a baseline is 14 to 1,096 days", field="baseline_days")
    if not FIRST_DAY + timedelta(days=baseline_days) <= starts_on <= LAST_DAY:
        raise Invalid("Invalid project", f"a project starts between {FIRST_DAY + timedelta(days=baseline_days)} "
                      f"(its baseline after {FIRST_DAY}) and {LAST_DAY}", field="starts_on")
    try:
        with conn.transaction():
            row = fetch_one(conn, """INSERT INTO savings_projects (site_id, name, starts_on, baseline_days)
                                     VALUES (%s, %s, %s, %s) RETURNING id""", (site_id, name, starts_on, baseline_days))
            assert row is not None
            audit.record(conn, actor, "create", "savings_project", row["id"], site_id=site_id)
    except psycopg.errors.UniqueViolation as exc:
        raise Conflict(f"the site already has a project named {name!r}", field="name") from exc
    except psycopg.errors.ForeignKeyViolation as exc:
        raise NotFound("site") from exc
    return int(row["id"])


def delete_project(conn: Conn, actor: Principal | None, project_id: int) -> None:
    """Delete a savings project (the readings and temperatures it was measured on stay)."""
    with conn.transaction():
        if conn.execute("DELETE FROM savings_projects WHERE id = %s", (project_id,)).rowcount == 0:
            raise NotFound("savings project")
        audit.record(conn, actor, "delete", "savings_project", project_id)


def projects(conn: Conn, site_id: int) -> list[dict[str, Any]]:
    """The site's savings projects, newest start first."""
    return fetch_all(conn, """SELECT id, site_id, name, starts_on, baseline_days, created_at FROM savings_projects
                              WHERE site_id = %s ORDER BY starts_on DESC, id DESC""", (site_id,))


def project(conn: Conn, project_id: int) -> dict[str, Any] | None:
    """One savings project, with its site id (callers check that the reader may see the site)."""
    return fetch_one(conn, """SELECT id, site_id, name, starts_on, baseline_days, created_at FROM savings_projects
                              WHERE id = %s""", (project_id,))
