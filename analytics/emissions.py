"""CO2e per node and period, from the hourly rollups and the site's emission factors.

Each hour of a node's energy is counted at the site's hourly factor for that hour if one
was uploaded, else at its annual factor (`wattline.emissions.SiteFactor`). One query for
all of a site's nodes. Energy with no factor at all (a country the bundled table lacks, no
factor of the site's own, an hour the series misses) makes the node's CO2e unknown, never
zero: `unfactored_kwh` says how much.

The energy counted is what each node draws from the grid: its consumption, less the
generation it used itself where it has generation below it (wattline.queries.IMPORT_WH);
rooftop PV lowers a site's location-based emissions by what it displaces.

Periods are the site's local days or months, or the whole range. The hourly tier is the
source, so a range is taken in whole UTC hours, and a local day in a zone with a
half-hour offset is counted from the hour that holds its start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

import psycopg
from psycopg import sql

from wattline.db import fetch_all
from wattline.emissions import SiteFactor, factor_of
from wattline.errors import Invalid
from wattline.principal import Principal
from wattline.queries import IMPORT_WH, scope

Conn = psycopg.Connection[Any]
Period = Literal["total", "day", "month"]


@dataclass(frozen=True)
class NodeCo2e:
    """A node's energy and CO2e in one period (`period` None: the whole range)."""

    node_id: int
    name: str
    kind: str
    period: date | None
    energy_kwh: float
    kg_co2e: float | None  # None: some of the energy has no factor
    unfactored_kwh: float
    hourly_hours: int  # hours counted at the hourly series rather than the annual factor


def whole_hours(t_from: datetime, t_to: datetime) -> None:
    for name, t in (("from", t_from), ("to", t_to)):
        if t.minute or t.second or t.microsecond:
            raise Invalid("Invalid range", f"`{name}` must be the start of an hour (CO2e is counted by the hour)",
                          field=name)


def co2e_by_node(conn: Conn, p: Principal, site: dict[str, Any], t_from: datetime, t_to: datetime,
                 by: Period = "total") -> tuple[SiteFactor, list[NodeCo2e]]:
    """The site's factor and each visible node's CO2e in [t_from, t_to), by period.
    `site` is a sites row the caller may see (id, timezone, country and the factor columns)."""
    whole_hours(t_from, t_to)
    factor = factor_of(site)
    where, params = scope(p)
    period = {"total": sql.SQL("NULL::date"),
              "day": sql.SQL("(date_trunc('day', r.bucket AT TIME ZONE %(tz)s))::date"),
              "month": sql.SQL("(date_trunc('month', r.bucket AT TIME ZONE %(tz)s))::date")}[by]
    rows = fetch_all(conn, sql.SQL("""
        WITH r AS (SELECT r.node_id, r.bucket, {import_wh} AS energy_wh, h.g_per_kwh AS hourly
                   FROM rollups_1h r JOIN nodes n ON n.id = r.node_id
                   LEFT JOIN site_co2e_hourly h ON h.site_id = %(site)s AND h.hour = r.bucket
                   WHERE n.site_id = %(site)s AND r.bucket >= %(from)s AND r.bucket < %(to)s)
        SELECT n.id AS node_id, n.name, n.kind, {period} AS period,
               COALESCE(sum(r.energy_wh), 0) AS energy_wh,
               COALESCE(sum(r.energy_wh * COALESCE(r.hourly, %(annual)s::float8)), 0) AS wh_g_per_kwh,
               COALESCE(sum(r.energy_wh) FILTER (WHERE COALESCE(r.hourly, %(annual)s::float8) IS NULL), 0)
                   AS unfactored_wh,
               count(r.hourly) AS hourly_hours
        FROM nodes n JOIN sites s ON s.id = n.site_id JOIN customers c ON c.id = s.customer_id
        LEFT JOIN r ON r.node_id = n.id
        WHERE n.site_id = %(site)s AND {where}
        GROUP BY n.id, 4 ORDER BY n.id, 4""").format(period=period, where=where, import_wh=IMPORT_WH),
        {**params, "site": site["id"], "from": t_from, "to": t_to, "tz": site["timezone"],
         "annual": factor.g_per_kwh})
    out = []
    for r in rows:
        if by != "total" and r["period"] is None:
            continue  # a node with no energy in the range has no periods
        unfactored = float(r["unfactored_wh"]) / 1000
        out.append(NodeCo2e(r["node_id"], r["name"], r["kind"], r["period"], float(r["energy_wh"]) / 1000,
                            None if unfactored > 0 else float(r["wh_g_per_kwh"]) / 1e6, unfactored,
                            int(r["hourly_hours"])))
    return factor, out


def site_totals(conn: Conn, sites: list[dict[str, Any]], t_from: datetime, t_to: datetime) -> dict[int, float | None]:
    """Each site's kg CO2e over the hourly buckets that start in [t_from, t_to), as the
    benchmark counts their energy (None: some energy has no factor); one query for all.
    `sites` are sites rows the caller may see."""
    annual = [factor_of(s).g_per_kwh for s in sites]  # by position, as the sites
    rows = fetch_all(conn, sql.SQL("""
        SELECT f.site_id, sum({import_wh} * COALESCE(h.g_per_kwh, f.annual)) AS wh_g_per_kwh,
               count(*) FILTER (WHERE COALESCE(h.g_per_kwh, f.annual) IS NULL AND {import_wh} > 0) AS unfactored
        FROM unnest(%s::bigint[], %s::float8[]) AS f(site_id, annual)
        JOIN nodes n ON n.site_id = f.site_id AND n.kind = 'site'
        JOIN rollups_1h r ON r.node_id = n.id AND r.bucket >= %s AND r.bucket < %s
        LEFT JOIN site_co2e_hourly h ON h.site_id = f.site_id AND h.hour = r.bucket
        GROUP BY f.site_id""").format(import_wh=IMPORT_WH), ([s["id"] for s in sites], annual, t_from, t_to))
    found = {r["site_id"]: None if r["unfactored"] else float(r["wh_g_per_kwh"] or 0.0) / 1e6 for r in rows}
    return {s["id"]: found.get(s["id"], 0.0 if g is not None else None) for s, g in zip(sites, annual, strict=True)}
