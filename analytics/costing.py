"""Cost of a site over a range: the invoice of its total, and the energy cost per node."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import psycopg

from analytics.tariffs import (
    Invoice,
    TariffVersion,
    interval_prices,
    invoice,
    load_tariffs,
    money,
    pricing_resolution,
)
from wattline import queries
from wattline.errors import Forbidden, NotFound
from wattline.principal import Principal
from wattline.tariffs import Draft, TariffError, validate_bands


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
    if not p.sees_costs:  # the API refuses first; this holds for every other door
        raise Forbidden("installers do not see tariffs or costs")
    site = queries.site(conn, p, site_id)
    if site is None:
        return None
    versions = load_tariffs(conn, site_id)
    if not versions:
        raise TariffError("the site has no tariff")
    rows = queries.energy_15m(conn, p, site_id, t_from, t_to)
    ts = np.array([r["bucket_s"] for r in rows], dtype=np.float64)
    wh = np.array([r["energy_wh"] for r in rows], dtype=np.float64)
    exported = np.array([r["export_wh"] for r in rows], dtype=np.float64)
    inv = invoice(ts, wh, versions, site["timezone"], site["country"], t_from, t_to, export_wh=exported)
    return SiteCost(inv, node_costs(conn, p, site_id, t_from, t_to, versions, site))


def node_costs(conn: psycopg.Connection[Any], p: Principal, site_id: int, t_from: datetime, t_to: datetime,
               versions: list[Any], site: dict[str, Any]) -> list[NodeCost]:
    """Energy cost per node and band. Whole local days the cost tier has priced are read from
    it (`analytics.band_rollups`); every other interval is priced here, once per distinct
    interval (local calendar, holidays, tariff version), and the database multiplies and sums
    per node, so no per-node series travels to Python."""
    resolution = pricing_resolution(versions, site["timezone"])
    step = resolution.minutes * 60.0
    first = t_from.timestamp() // step * step
    stamps = np.arange(first, t_to.timestamp(), step)
    if len(stamps) == 0:
        return []
    priced = queries.priced_days(conn, p, site_id, t_from, t_to)
    starts = np.array([d["day_s"] for d in priced], dtype=np.float64)
    ends = np.array([d["end_s"] for d in priced], dtype=np.float64)
    day = np.searchsorted(starts, stamps, side="right") - 1
    in_priced_day = (day >= 0) & (stamps < ends[np.maximum(day, 0)]) if len(starts) else np.zeros(len(stamps), bool)
    rest = stamps[~in_priced_day]
    rows = queries.band_costs_by_node(conn, p, site_id, [d["day"] for d in priced]) if priced else []
    if len(rest):
        rates, bands = interval_prices(rest, versions, site["timezone"], site["country"])
        rows += queries.energy_cost_by_node(conn, p, site_id, rest.tolist(), rates.tolist(), bands, t_from, t_to,
                                            resolution)
    out: dict[int, NodeCost] = {}
    cost: dict[int, dict[str, float]] = {}
    for r in rows:
        node = out.setdefault(r["node_id"], NodeCost(r["node_id"], 0.0, Decimal(0), {}))
        node.energy_wh += r["energy_wh"]
        if r["cost_minor"] > 0:
            bands_of = cost.setdefault(node.node_id, {})
            bands_of[r["band"]] = bands_of.get(r["band"], 0.0) + r["cost_minor"]
        if r["unmonitored_wh"] is not None:
            node.unmonitored_wh = (node.unmonitored_wh or 0.0) + r["unmonitored_wh"]
        if r["max_power_w"] is not None:
            node.max_power_w = max(node.max_power_w or 0.0, r["max_power_w"])
    for node in out.values():  # round once per band, after both sources are summed
        node.by_band_minor = {band: money(minor) for band, minor in cost.get(node.node_id, {}).items()}
        node.energy_cost_minor = sum(node.by_band_minor.values(), Decimal(0))
    return list(out.values())


def last_complete_month(tz: str, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The last whole local month before now, as [start, end)."""
    zone = ZoneInfo(tz)
    today = (now or datetime.now(UTC)).astimezone(zone)
    end = datetime(today.year, today.month, 1, tzinfo=zone)
    start = datetime(end.year - (end.month == 1), (end.month - 2) % 12 + 1, 1, tzinfo=zone)
    return start, end


def preview_draft(conn: psycopg.Connection[Any], p: Principal, site_id: int, draft: Draft,
                  now: datetime | None = None) -> dict[str, Any]:
    """The last complete month re-priced under the draft, beside what it cost under the tariffs
    in force, line by line (bands, standing, demand, VAT). Nothing is stored."""
    if not p.sees_costs:
        raise Forbidden("installers do not see tariffs or costs")
    site = queries.site(conn, p, site_id)
    if site is None:
        raise NotFound("site")
    validate_bands(draft.bands)
    t_from, t_to = last_complete_month(site["timezone"], now)
    rows = queries.energy_15m(conn, p, site_id, t_from, t_to)
    ts = np.array([r["bucket_s"] for r in rows], dtype=np.float64)
    wh = np.array([r["energy_wh"] for r in rows], dtype=np.float64)
    exported = np.array([r["export_wh"] for r in rows], dtype=np.float64)
    # The draft as the only version over the whole month: what the month would have cost.
    as_version = TariffVersion(0, draft.name, draft.currency, t_from - timedelta(days=1),
                               draft.standing_charge_minor_per_day, draft.demand_charge_minor_per_kw,
                               draft.demand_interval_minutes, draft.vat_rate, draft.bands,
                               draft.export_rate_minor_per_kwh)
    proposed = invoice(ts, wh, [as_version], site["timezone"], site["country"], t_from, t_to, export_wh=exported)
    versions = load_tariffs(conn, site_id)
    actual = invoice(ts, wh, versions, site["timezone"], site["country"], t_from, t_to,
                     export_wh=exported) if versions else None
    labels = list(dict.fromkeys([*(line.label for line in actual.lines)] if actual else []) |
                  dict.fromkeys(line.label for line in proposed.lines))
    now_lines = {line.label: line for line in actual.lines} if actual else {}
    new_lines = {line.label: line for line in proposed.lines}
    lines = [{"label": label,
              "kind": (now_lines.get(label) or new_lines[label]).kind,
              "quantity": (now_lines.get(label) or new_lines[label]).quantity,
              "actual_minor": now_lines[label].minor if label in now_lines else None,
              "draft_minor": new_lines[label].minor if label in new_lines else None} for label in labels]
    return {"from": t_from, "to": t_to, "currency": proposed.currency,
            "actual_currency": actual.currency if actual else None, "energy_kwh": float(wh.sum()) / 1000.0,
            "lines": lines, "actual_total_minor": actual.total_minor if actual else None,
            "draft_total_minor": proposed.total_minor}
