"""A virtual meter's series and cost, composed from the rollups of the nodes it expands to.

Energy and mean power are linear: the meter's value in a bucket is Σ weight × the node's.
Coverage is the least of its nodes' (a bucket a node has no row for counts as 0): a meter
is as complete as its worst part. Cost is Σ weight × each node's energy cost, priced on its
own site's tariffs, so a meter's cost reconciles with the nodes' costs it is made of.
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


def combine(node_id: npt.ArrayLike, bucket_s: npt.ArrayLike, energy_wh: npt.ArrayLike, mean_power_w: npt.ArrayLike,
            coverage: npt.ArrayLike, weights: dict[int, int]) -> MeterSeries:
    """Rows of (node, bucket, energy, mean power, coverage), one per node and bucket, into
    the meter's series: one row per bucket any of its nodes has."""
    nodes = np.asarray(node_id, dtype=np.int64)
    stamps, col = np.unique(np.asarray(bucket_s, dtype=np.float64), return_inverse=True)
    order = sorted(weights)
    row = np.searchsorted(order, nodes)
    w = np.array([weights[n] for n in order], dtype=np.float64)
    shape = (len(order), len(stamps))
    energy, power, cover = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    energy[row, col] = energy_wh
    power[row, col] = mean_power_w
    cover[row, col] = coverage
    return MeterSeries(stamps, w @ energy, w @ power, cover.min(axis=0) if len(order) else np.zeros(len(stamps)))


def meter_series(conn: psycopg.Connection[Any], p: Principal, meter_id: int, resolution: Resolution,
                 t_from: datetime, t_to: datetime) -> MeterSeries | None:
    """The meter's series over [t_from, t_to), or None if `p` cannot see it."""
    if virtual_meters.meter(conn, p, meter_id) is None:
        return None
    weights = virtual_meters.expand(conn, meter_id)
    rows = queries.node_series(conn, p, sorted(weights), resolution, t_from, t_to)
    return combine([r["node_id"] for r in rows], [r["bucket"].timestamp() for r in rows],
                   [r["energy_wh"] for r in rows], [r["mean_power_w"] for r in rows], [r["coverage"] for r in rows],
                   weights)


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
    for node in weights:
        found = queries.node(conn, p, node)
        if found is not None:
            by_site.setdefault(int(found["site_id"]), []).append(node)
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
