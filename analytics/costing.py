"""Cost of a site over a range: the invoice of its total, and the energy cost per node."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np
import psycopg

from analytics.tariffs import (
    Invoice,
    TariffError,
    invoice,
    load_tariffs,
    local_calendar,
    money,
    rate_table,
)
from analytics.worker import site_offset_minutes
from wattline import queries
from wattline.accounts import Principal
from wattline.domain import Resolution


@dataclass
class NodeCost:
    node_id: int
    energy_wh: float
    energy_cost_minor: Decimal
    by_band_minor: dict[str, Decimal]
    unmonitored_wh: float | None = None
    max_power_w: float | None = None


@dataclass
class SiteCost:
    invoice: Invoice
    nodes: list[NodeCost]


def site_cost(conn: psycopg.Connection[Any], p: Principal, site_id: int, t_from: datetime, t_to: datetime
              ) -> SiteCost | None:
    site = queries.site(conn, p, site_id)
    if site is None:
        return None
    versions = load_tariffs(conn, site_id)
    if not versions:
        raise TariffError("the site has no tariff")
    rows = queries.energy_15m(conn, p, site_id, t_from, t_to)
    ts = np.array([r["bucket_s"] for r in rows], dtype=np.float64)
    wh = np.array([r["energy_wh"] for r in rows], dtype=np.float64)
    inv = invoice(ts, wh, versions, site["timezone"], site["country"], t_from, t_to)
    return SiteCost(inv, node_costs(conn, p, site_id, t_from, t_to, versions, site))


def node_costs(conn: psycopg.Connection[Any], p: Principal, site_id: int, t_from: datetime, t_to: datetime,
               versions: list[Any], site: dict[str, Any]) -> list[NodeCost]:
    """Energy cost per node and band. The rate and band of each distinct 15-minute interval
    are worked out once (local calendar, holidays, tariff version); the database multiplies
    and sums per node, so no per-node series travels to Python."""
    # Where every band edge is on the hour (most tariffs), an hour has one rate and the
    # hourly tier is exact and four times smaller; otherwise the 15-minute tier.
    hourly = all(b.start.minute == 0 and b.end.minute == 0 for v in versions for b in v.bands) and all(
        v.valid_from.timestamp() % 3600 == 0 for v in versions) and site_offset_minutes(site["timezone"]) % 60 == 0
    step = 3600.0 if hourly else 900.0
    first = t_from.timestamp() // step * step
    stamps = np.arange(first, t_to.timestamp(), step)
    if len(stamps) == 0:
        return []
    cal = local_calendar(stamps, site["timezone"], site["country"])
    table = rate_table(versions)
    version = np.searchsorted(table.valid_from, stamps, side="right").astype(np.int64) - 1
    valid = version >= 0
    v = np.where(valid, version, 0)
    rates = np.where(valid, table.rates[v, cal.day_type, cal.slot], 0.0)
    bands = table.band_of[v, cal.day_type, cal.slot]
    rows = queries.energy_cost_by_node(conn, p, site_id, stamps.tolist(), rates.tolist(), bands.tolist(),
                                       t_from, t_to, Resolution.HOUR1 if hourly else Resolution.MIN15)
    out: dict[int, NodeCost] = {}
    for r in rows:
        node = out.setdefault(r["node_id"], NodeCost(r["node_id"], 0.0, Decimal(0), {}))
        node.energy_wh += r["energy_wh"]
        if r["cost_minor"] > 0:
            node.by_band_minor[table.band_names[r["band"]]] = money(r["cost_minor"])
            node.energy_cost_minor = sum(node.by_band_minor.values(), Decimal(0))
        if r["unmonitored_wh"] is not None:
            node.unmonitored_wh = (node.unmonitored_wh or 0.0) + r["unmonitored_wh"]
        if r["max_power_w"] is not None:
            node.max_power_w = max(node.max_power_w or 0.0, r["max_power_w"])
    return list(out.values())
