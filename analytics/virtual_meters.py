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
from analytics.tariffs import load_tariffs
from wattline import queries, virtual_meters
from wattline.domain import Resolution
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
