"""A virtual meter's series and cost, composed from the rollups of the nodes it expands to.

Energy and mean power are linear: the meter's value in a bucket is Σ weight × the node's,
summed in the database (`queries.weighted_series`). Coverage is the least of its nodes' (a
bucket a node has no row for counts as 0): a meter is as complete as its worst part. Cost
is Σ weight × each node's energy cost, priced on its own site's tariffs, so a meter's cost
reconciles with the nodes' costs it is made of.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from analytics.costing import node_costs
from analytics.emissions import whole_hours
from analytics.tariffs import load_tariffs
from wattline import queries, virtual_meters
from wattline.db import fetch_one
from wattline.domain import Resolution
from wattline.emissions import factor_of
from wattline.errors import Forbidden, Invalid
from wattline.principal import Principal
from wattline.tariffs import TariffError

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class MeterSeries:
    bucket_s: F64
    energy_wh: F64
    mean_power_w: F64
    coverage: F64


@dataclass
class MeterCost:
    currency: str
    energy_wh: float = 0.0
    energy_cost_minor: Decimal = Decimal(0)
    by_band_minor: dict[str, Decimal] = field(default_factory=dict)


def meter_series(conn: psycopg.Connection[Any], p: Principal, meter_id: int, resolution: Resolution,
                 t_from: datetime, t_to: datetime) -> MeterSeries | None:
    """The meter's series over [t_from, t_to), or None if `p` cannot see it."""
    if virtual_meters.meter(conn, p, meter_id) is None:
        return None
    rows = queries.weighted_series(conn, p, virtual_meters.expand(conn, meter_id), resolution, t_from, t_to)

    def column(name: str) -> F64:
        return np.array([r[name] for r in rows], dtype=np.float64)

    return MeterSeries(column("bucket_s"), column("energy_wh"), column("mean_power_w"), column("coverage"))


def meter_cost(conn: psycopg.Connection[Any], p: Principal, meter_id: int, t_from: datetime, t_to: datetime
               ) -> MeterCost | None:
    """The meter's energy and energy cost by band over [t_from, t_to), or None if `p` cannot
    see it. Standing and demand charges belong to a site's supply, not to a part of it."""
    if not p.sees_costs:
        raise Forbidden("installers do not see tariffs or costs")
    if virtual_meters.meter(conn, p, meter_id) is None:
        return None
    weights = virtual_meters.expand(conn, meter_id)
    by_site: dict[int, list[int]] = {}
    # One query for every node's site: `meter` above has shown `p` may see them all.
    for node, site_id in virtual_meters.node_sites(conn, weights).items():
        by_site.setdefault(site_id, []).append(node)
    out: MeterCost | None = None
    for site_id, nodes in sorted(by_site.items()):
        site = queries.site(conn, p, site_id)
        versions = load_tariffs(conn, site_id)
        if site is None or not versions:
            raise TariffError(f"site {site_id} has no tariff")
        currency = versions[-1].currency
        if out is None:
            out = MeterCost(currency)
        elif currency != out.currency:
            raise Invalid("Mixed currencies", f"the meter's sites are priced in {out.currency} and {currency}")
        wanted = set(nodes)
        for cost in node_costs(conn, p, site_id, t_from, t_to, versions, site):
            if cost.node_id not in wanted:
                continue
            sign = weights[cost.node_id]
            out.energy_wh += sign * cost.energy_wh
            for band, minor in cost.by_band_minor.items():
                out.by_band_minor[band] = out.by_band_minor.get(band, Decimal(0)) + sign * minor
    if out is not None:
        out.energy_cost_minor = sum(out.by_band_minor.values(), Decimal(0))
    return out


@dataclass(frozen=True)
class MeterCo2e:
    energy_kwh: float
    kg_co2e: float | None  # None: some of its nodes' energy has no factor
    unfactored_node_hours: int


def meter_co2e(conn: psycopg.Connection[Any], p: Principal, meter_id: int, t_from: datetime, t_to: datetime
               ) -> MeterCo2e | None:
    """The meter's energy and CO2e over [t_from, t_to) (whole hours), each node's hours at its
    own site's factors (`analytics.emissions`), or None if `p` cannot see the meter."""
    if virtual_meters.meter(conn, p, meter_id) is None:
        return None
    whole_hours(t_from, t_to)
    weights = virtual_meters.expand(conn, meter_id)
    sites = [s for s in (queries.site(conn, p, site_id) for site_id in set(virtual_meters.node_sites(conn, weights)
                                                                          .values())) if s is not None]
    row = fetch_one(conn, """
        SELECT COALESCE(sum(w.weight * r.energy_wh), 0) AS wh,
               COALESCE(sum(w.weight * r.energy_wh * COALESCE(h.g_per_kwh, f.annual)), 0) AS wh_g_per_kwh,
               count(*) FILTER (WHERE COALESCE(h.g_per_kwh, f.annual) IS NULL AND r.energy_wh > 0) AS unfactored
        FROM unnest(%s::bigint[], %s::int[]) AS w(node_id, weight)
        JOIN nodes n ON n.id = w.node_id
        JOIN unnest(%s::bigint[], %s::float8[]) AS f(site_id, annual) ON f.site_id = n.site_id
        JOIN rollups_1h r ON r.node_id = w.node_id AND r.bucket >= %s AND r.bucket < %s
        LEFT JOIN site_co2e_hourly h ON h.site_id = n.site_id AND h.hour = r.bucket""",
        (list(weights), list(weights.values()), [s["id"] for s in sites], [factor_of(s).g_per_kwh for s in sites],
         t_from, t_to))
    assert row is not None
    unfactored = int(row["unfactored"])
    return MeterCo2e(float(row["wh"]) / 1000, None if unfactored else float(row["wh_g_per_kwh"]) / 1e6, unfactored)
