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
from wattline import queries
from wattline.accounts import Principal


@dataclass
class NodeCost:
    node_id: int
    energy_wh: float
    energy_cost_minor: Decimal
    by_band_minor: dict[str, Decimal]


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
    first = t_from.timestamp() // 900 * 900
    stamps = np.arange(first, t_to.timestamp(), 900.0)
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
                                       t_from, t_to)
    by_node: dict[int, dict[str, Decimal]] = {}
    energy: dict[int, float] = {}
    for r in rows:
        name = table.band_names[r["band"]]
        if r["cost_minor"] > 0:
            by_node.setdefault(r["node_id"], {})[name] = money(r["cost_minor"])
        energy[r["node_id"]] = energy.get(r["node_id"], 0.0) + r["energy_wh"]
    return [NodeCost(node_id, wh, sum(by_node.get(node_id, {}).values(), Decimal(0)), by_node.get(node_id, {}))
            for node_id, wh in energy.items()]
