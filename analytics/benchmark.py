"""Normalised benchmarking across a customer's sites: energy per m² of floor area, per
hour open, and at the same weather (degree days), so that a big store and a small one,
in a cold town and a mild one, can be compared."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from analytics.degree_days import weather_normalised
from analytics.emissions import site_totals
from wattline import queries
from wattline.db import fetch_all
from wattline.opening_hours import opening_hours_between
from wattline.principal import Principal


def site_benchmarks(conn: psycopg.Connection[Any], p: Principal, customer_id: int, t_from: datetime,
                    t_to: datetime) -> list[dict[str, Any]]:
    sites = [s for s in queries.sites(conn, p, limit=10_000) if s["customer_id"] == customer_id]
    if not sites:
        return []
    energy = {r["site_id"]: r["wh"] for r in fetch_all(conn, """
        SELECT n.site_id, sum(r.energy_wh) AS wh FROM nodes n
        JOIN rollups_1h r ON r.node_id = n.id AND r.bucket >= %s AND r.bucket < %s
        WHERE n.kind = 'site' AND n.site_id = ANY(%s) GROUP BY n.site_id""",
        (t_from, t_to, [s["id"] for s in sites]))}
    # The range's whole local days, on the first site's calendar: one range for all sites,
    # so that the reference weather is one.
    zone = ZoneInfo(sites[0]["timezone"])
    first_day = (t_from.astimezone(zone) + timedelta(days=1) - timedelta(microseconds=1)).date()
    weather = weather_normalised(conn, sites, first_day, max(t_to.astimezone(zone).date(), first_day))
    co2e = site_totals(conn, sites, t_from, t_to)
    out = []
    for s in sites:
        kwh = (energy.get(s["id"]) or 0.0) / 1000.0
        w = weather[s["id"]]
        normalised = kwh + w.adjustment_kwh if w.adjustment_kwh is not None else None
        open_h = opening_hours_between(s["opening_hours"] or {}, s["timezone"], t_from, t_to)
        area = s["floor_area_m2"]
        out.append({"site_id": s["id"], "site_name": s["name"], "energy_kwh": kwh, "floor_area_m2": area,
                    "kwh_per_m2": kwh / area if area else None, "opening_hours": open_h,
                    "kwh_per_opening_hour": kwh / open_h if open_h else None, "rank_per_m2": None,
                    "hdd": w.hdd, "cdd": w.cdd, "kwh_weather_normalised": normalised,
                    "kwh_per_m2_weather_normalised": normalised / area if normalised is not None and area else None,
                    "kg_co2e": co2e[s["id"]],
                    "kg_co2e_per_m2": co2e[s["id"]] / area if co2e[s["id"]] is not None and area else None})
    ranked = sorted((b for b in out if b["kwh_per_m2"] is not None), key=lambda b: b["kwh_per_m2"])
    for i, b in enumerate(ranked, 1):
        b["rank_per_m2"] = i
    return out
