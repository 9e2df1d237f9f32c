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
    interval_costs,
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
    tree = queries.tree(conn, p, site_id)
    node_rows = queries.energy_15m(conn, p, site_id, t_from, t_to, node_ids=[n["id"] for n in tree])
    table = rate_table(versions)
    by_node: dict[int, list[dict[str, Any]]] = {}
    for r in node_rows:
        by_node.setdefault(r["node_id"], []).append(r)
    nodes = []
    for node_id, series in by_node.items():
        nts = np.array([r["bucket_s"] for r in series])
        nwh = np.array([r["energy_wh"] for r in series])
        cal = local_calendar(nts, site["timezone"], site["country"])
        _, by_band, _ = interval_costs(nts, nwh, table, cal)
        bands = {name: money(by_band[i]) for i, name in enumerate(table.band_names) if by_band[i] > 0}
        nodes.append(NodeCost(node_id, float(nwh.sum()), sum(bands.values(), Decimal(0)), bands))
    return SiteCost(inv, nodes)
