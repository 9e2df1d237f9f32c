"""Normalised benchmarking across a customer's sites: energy per m² of floor area and per
hour open, so that a big store and a small one can be compared."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

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
    out = []
    for s in sites:
        kwh = (energy.get(s["id"]) or 0.0) / 1000.0
        open_h = opening_hours_between(s["opening_hours"] or {}, s["timezone"], t_from, t_to)
        area = s["floor_area_m2"]
        out.append({"site_id": s["id"], "site_name": s["name"], "energy_kwh": kwh, "floor_area_m2": area,
                    "kwh_per_m2": kwh / area if area else None, "opening_hours": open_h,
                    "kwh_per_opening_hour": kwh / open_h if open_h else None, "rank_per_m2": None})
    ranked = sorted((b for b in out if b["kwh_per_m2"] is not None), key=lambda b: b["kwh_per_m2"])
    for i, b in enumerate(ranked, 1):
        b["rank_per_m2"] = i
    return out
