"""Emission factors: how many grams of CO2e a site's kWh from the grid stands for.

Three sources, the most specific first:
1. an hourly series uploaded for the site (a grid operator's published intensity, say),
   used for the hours it covers;
2. the site's own annual factor (a supplier's fuel-mix disclosure), with where it comes from;
3. the annual factor of the site's country from the bundled table, whose source and year
   travel with every figure computed from it.

A site with none of them (a country the table lacks, no factor of its own) has no CO2e,
and says so; it is never counted at zero. CO2e itself is computed on read from the hourly
rollups (`analytics.emissions`), so a corrected factor needs no rollup pass.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any, Literal

import psycopg

from wattline import audit
from wattline.csv_upload import parse_rows
from wattline.db import fetch_all, fetch_one
from wattline.errors import Invalid, NotFound, RowErrors
from wattline.principal import Principal

Conn = psycopg.Connection[Any]
Source = Literal["upload", "api"]
Origin = Literal["site", "country", "none"]
TABLE_FILE = "grid_co2e_2021.csv"
TABLE_SOURCE = ("Ember and Energy Institute via Our World in Data (carbon_intensity_elec, CC BY 4.0), "
                "2021, life-cycle")
#: No grid is dirtier than about 1,000 g/kWh (an oil-fired island); twice that is a typo.
MAX_G_PER_KWH = 2000.0
#: One upload holds at most this many hours (about two and a half years).
MAX_HOURS = 22_000
CSV_COLUMNS = ("hour", "g_co2e_per_kwh")
FIRST_HOUR, LAST_HOUR = datetime(1970, 1, 1, tzinfo=UTC), datetime(2199, 12, 31, 23, tzinfo=UTC)


@dataclass(frozen=True)
class GridFactor:
    """One country's annual grid factor from the bundled table."""

    country: str  # ISO 3166-1 alpha-2
    name: str
    year: int
    g_per_kwh: float


@dataclass(frozen=True)
class SiteFactor:
    """The annual factor a site's energy is counted at, and where it comes from."""

    g_per_kwh: float | None
    origin: Origin
    source: str | None  # the site's own note, or the table's source and year
    year: int | None


@dataclass(frozen=True)
class HourFactor:
    """The grid's intensity in one hour at a site (the hour starts at `hour`)."""

    hour: datetime
    g_per_kwh: float


@cache
def grid_factors() -> dict[str, GridFactor]:
    """The bundled table by country code (read once)."""
    text = resources.files("wattline").joinpath("data", TABLE_FILE).read_text(encoding="utf-8")
    rows = csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#"))
    return {r["country"]: GridFactor(r["country"], r["name"], int(r["year"]), float(r["g_co2e_per_kwh"]))
            for r in rows}


def site_factor(conn: Conn, site_id: int) -> SiteFactor:
    """The annual factor of a site: its own, else its country's. Callers check visibility."""
    row = fetch_one(conn, "SELECT country, co2e_g_per_kwh, co2e_source FROM sites WHERE id = %s", (site_id,))
    if row is None:
        raise NotFound("site")
    return factor_of(row)


def factor_of(site: dict[str, Any]) -> SiteFactor:
    """`site_factor` of a sites row already read (it needs country, co2e_g_per_kwh, co2e_source)."""
    if site.get("co2e_g_per_kwh") is not None:
        return SiteFactor(float(site["co2e_g_per_kwh"]), "site", site.get("co2e_source") or "set for the site", None)
    grid = grid_factors().get(site["country"])
    if grid is None:
        return SiteFactor(None, "none", None, None)
    return SiteFactor(grid.g_per_kwh, "country", f"{grid.name}: {TABLE_SOURCE}", grid.year)


def set_site_factor(conn: Conn, actor: Principal | None, site_id: int, g_per_kwh: float | None,
                    source: str | None = None) -> SiteFactor:
    """Give the site its own annual factor, or (None) go back to its country's."""
    if g_per_kwh is not None and (not math.isfinite(g_per_kwh) or not 0 <= g_per_kwh <= MAX_G_PER_KWH):
        raise Invalid("Invalid factor", f"a factor is 0 to {MAX_G_PER_KWH:g} g CO2e/kWh", field="g_co2e_per_kwh")
    source = (source or "").strip() or None
    if source is not None and len(source) > 200:
        raise Invalid("Invalid factor", "the source is at most 200 characters", field="source")
    with conn.transaction():
        updated = conn.execute("UPDATE sites SET co2e_g_per_kwh = %s, co2e_source = %s WHERE id = %s",
                               (g_per_kwh, source if g_per_kwh is not None else None, site_id)).rowcount
        if not updated:
            raise NotFound("site")
        audit.record(conn, actor, "update", "site_emission_factor", site_id, g_per_kwh=g_per_kwh, source=source)
    return site_factor(conn, site_id)


# -- the hourly series --------------------------------------------------------------------------
def _refusals(hours: Sequence[HourFactor]) -> list[tuple[int, str]]:
    seen: set[datetime] = set()
    out: list[tuple[int, str]] = []
    for i, h in enumerate(hours, start=1):
        if h.hour.tzinfo is None:
            out.append((i, f"{h.hour.isoformat()} has no UTC offset"))
        elif not math.isfinite(h.g_per_kwh) or not 0 <= h.g_per_kwh <= MAX_G_PER_KWH:
            out.append((i, f"g_co2e_per_kwh {h.g_per_kwh} is outside 0..{MAX_G_PER_KWH:g}"))
        elif h.hour.minute or h.hour.second or h.hour.microsecond:
            out.append((i, f"{h.hour.isoformat()} is not the start of an hour"))
        elif not FIRST_HOUR <= h.hour <= LAST_HOUR:
            out.append((i, f"{h.hour.isoformat()} is outside {FIRST_HOUR:%Y}..{LAST_HOUR:%Y}"))
        elif h.hour in seen:
            out.append((i, f"{h.hour.isoformat()} is given twice"))
        seen.add(h.hour)
    return out


def _parse_row(row: dict[str, str]) -> HourFactor:
    try:
        hour = datetime.fromisoformat(row["hour"])
    except ValueError:
        raise ValueError(f"hour {row['hour']!r} is not a time like 2026-01-31T13:00:00Z") from None
    try:
        return HourFactor(hour, float(row["g_co2e_per_kwh"]))
    except ValueError:
        raise ValueError(f"g_co2e_per_kwh {row['g_co2e_per_kwh']!r} is not a number") from None


def parse_csv(data: bytes) -> list[HourFactor]:
    """Hours from a CSV with a header `hour,g_co2e_per_kwh` (ISO 8601 with an offset, the
    hour's start). Every bad row is named with its line; nothing is returned unless all are good."""
    return parse_rows(data, CSV_COLUMNS, _parse_row, _refusals, max_rows=MAX_HOURS, what="hours")


def save_hourly(conn: Conn, actor: Principal | None, site_id: int, hours: Sequence[HourFactor], *,
                source: Source) -> int:
    """Store (or replace) the site's hourly factors; all hours or none. Returns how many."""
    if len(hours) > MAX_HOURS:
        raise Invalid("Too many hours", f"at most {MAX_HOURS} hours at a time", field="hours")
    errors = _refusals(hours)
    if errors:
        raise RowErrors("Invalid hourly factors", errors)
    with conn.transaction():
        if fetch_one(conn, "SELECT 1 FROM sites WHERE id = %s FOR SHARE", (site_id,)) is None:
            raise NotFound("site")
        with conn.cursor() as cur:
            cur.executemany("""INSERT INTO site_co2e_hourly (site_id, hour, g_per_kwh, source) VALUES (%s, %s, %s, %s)
                               ON CONFLICT (site_id, hour) DO UPDATE
                                  SET g_per_kwh = EXCLUDED.g_per_kwh, source = EXCLUDED.source, updated_at = now()""",
                            [(site_id, h.hour, h.g_per_kwh, source) for h in hours])
        if hours:
            audit.record(conn, actor, "update", "site_co2e_hourly", site_id, source=source, hours=len(hours),
                         first=min(h.hour for h in hours).isoformat(), last=max(h.hour for h in hours).isoformat())
    return len(hours)


def delete_hourly(conn: Conn, actor: Principal | None, site_id: int, t_from: datetime, t_to: datetime) -> int:
    """Remove the site's hourly factors of hours starting from `t_from` up to, not including, `t_to`."""
    with conn.transaction():
        removed = conn.execute("DELETE FROM site_co2e_hourly WHERE site_id = %s AND hour >= %s AND hour < %s",
                               (site_id, t_from, t_to)).rowcount
        if removed:
            audit.record(conn, actor, "delete", "site_co2e_hourly", site_id, hours=removed,
                         first=t_from.isoformat(), last=(t_to - timedelta(hours=1)).isoformat())
    return removed


def hourly(conn: Conn, site_id: int, t_from: datetime, t_to: datetime) -> list[HourFactor]:
    """The site's hourly factors in a range, by hour. Callers check visibility."""
    return [HourFactor(r["hour"], r["g_per_kwh"]) for r in fetch_all(conn, """
        SELECT hour, g_per_kwh FROM site_co2e_hourly WHERE site_id = %s AND hour >= %s AND hour < %s ORDER BY hour""",
        (site_id, t_from, t_to))]
