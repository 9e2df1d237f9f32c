"""The read side shared by the API and the dashboard. Every query is scoped by tenant here,
not in handlers: a row another tenant owns is simply not found (callers answer 404)."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from wattline import raw_readings
from wattline.buckets import bucket_bounds
from wattline.db import PG_EPOCH_US, copy_out_arrays, fetch_all, fetch_one
from wattline.domain import Resolution
from wattline.electrical import UNCONFIGURED, electrical
from wattline.node_costs import node_costs
from wattline.principal import Principal

Row = dict[str, Any]
Conn = psycopg.Connection[Any]


def scope(p: Principal, alias: str = "c", *, sites: str | None = "s") -> tuple[sql.Composable, dict[str, Any]]:
    """SQL predicate on a customers alias limiting rows to what `p` may see; `sites` names
    the query's sites alias, for users granted only some sites (None: the query has none,
    and shows organisation-level rows)."""
    if p.reseller_id is not None:
        return (sql.SQL("{}.reseller_id = %(scope_reseller)s").format(sql.Identifier(alias)),
                {"scope_reseller": p.reseller_id})
    where = sql.SQL("{}.id = %(scope_customer)s").format(sql.Identifier(alias))
    if p.site_ids is not None and sites is not None:
        where = sql.SQL("{} AND {}.id = ANY(%(scope_sites)s)").format(where, sql.Identifier(sites))
    return where, {"scope_customer": p.customer_id, "scope_sites": sorted(p.site_ids or ())}


_all = fetch_all
_one = fetch_one


# -- tenants and sites --------------------------------------------------------------------
def customers(conn: Conn, p: Principal, *, limit: int = 100, offset: int = 0) -> list[Row]:
    """Customers the principal may see, by id."""
    where, params = scope(p, sites=None)
    return _all(conn, sql.SQL("""SELECT c.id, c.name, c.reseller_id, c.created_at FROM customers c WHERE {where}
                          ORDER BY c.id LIMIT %(limit)s OFFSET %(offset)s""").format(where=where),
                {**params, "limit": limit, "offset": offset})


def customer(conn: Conn, p: Principal, customer_id: int) -> Row | None:
    """One customer, with its billing contact and card's last four digits (callers decide who sees them)."""
    where, params = scope(p, sites=None)
    return _one(conn, sql.SQL("""SELECT c.id, c.name, c.reseller_id, c.billing_email, c.card_last4, c.created_at
                          FROM customers c WHERE c.id = %(id)s AND {where}""").format(
                              where=where), {**params, "id": customer_id})


def sites(conn: Conn, p: Principal, *, limit: int = 100, offset: int = 0) -> list[Row]:
    """Sites the principal may see, by id."""
    where, params = scope(p)
    return _all(conn, sql.SQL("""SELECT s.id, s.customer_id, s.name, s.timezone, s.country, s.floor_area_m2,
                                 s.opening_hours, s.latitude, s.longitude, s.hdd_base_c, s.cdd_base_c,
                                 s.co2e_g_per_kwh, s.co2e_source
                          FROM sites s JOIN customers c ON c.id = s.customer_id WHERE {where}
                          ORDER BY s.id LIMIT %(limit)s OFFSET %(offset)s""").format(where=where),
                {**params, "limit": limit, "offset": offset})


def site(conn: Conn, p: Principal, site_id: int) -> Row | None:
    """One site the principal may see, or None."""
    where, params = scope(p)
    return _one(conn, sql.SQL("""SELECT s.id, s.customer_id, s.name, s.timezone, s.country, s.floor_area_m2,
                                 s.opening_hours, s.latitude, s.longitude, s.hdd_base_c, s.cdd_base_c, s.address,
                                 s.co2e_g_per_kwh, s.co2e_source
                          FROM sites s JOIN customers c ON c.id = s.customer_id
                          WHERE s.id = %(id)s AND {where}""").format(where=where), {**params, "id": site_id})


def node(conn: Conn, p: Principal, node_id: int) -> Row | None:
    """One node (with its site's zone) the principal may see, or None."""
    where, params = scope(p)
    return _one(conn, sql.SQL("""SELECT n.id, n.site_id, n.parent_id, n.kind, n.name, n.external_ref,
                                 n.nominal_voltage_v, n.power_factor, n.connection, n.asset_type, n.flow, s.timezone
                          FROM nodes n JOIN sites s ON s.id = n.site_id JOIN customers c ON c.id = s.customer_id
                          WHERE n.id = %(id)s AND {where}""").format(where=where), {**params, "id": node_id})


def tree(conn: Conn, p: Principal, site_id: int) -> list[Row]:
    """The site's nodes, parents before children, with the number of sensors on each."""
    where, params = scope(p)
    return _all(conn, sql.SQL("""
        WITH RECURSIVE t AS (
            SELECT n.id, n.parent_id, n.kind, n.name, n.external_ref, n.flow, 0 AS depth, ARRAY[n.id] AS path
            FROM nodes n JOIN sites s ON s.id = n.site_id JOIN customers c ON c.id = s.customer_id
            WHERE n.site_id = %(site)s AND n.parent_id IS NULL AND {where}
            UNION ALL
            SELECT n.id, n.parent_id, n.kind, n.name, n.external_ref, n.flow, t.depth + 1, t.path || n.id
            FROM nodes n JOIN t ON n.parent_id = t.id
        )
        SELECT t.id, t.parent_id, t.kind, t.name, t.external_ref, t.flow, t.depth,
               (SELECT count(*) FROM sensors se WHERE se.node_id = t.id) AS sensors
        FROM t ORDER BY t.path""").format(where=where), {**params, "site": site_id})


# -- hardware -------------------------------------------------------------------------------
def bridges(conn: Conn, p: Principal, site_id: int, *, limit: int = 10_000, offset: int = 0) -> list[Row]:
    """A site's bridges with their retained online status and sensor count."""
    where, params = scope(p)
    return _all(conn, sql.SQL("""SELECT b.id, b.serial, b.name, b.site_id, bs.online,
                                 bs.changed_at AS status_changed_at,
                                 (SELECT count(*) FROM sensors se WHERE se.bridge_id = b.id) AS sensors
                          FROM bridges b JOIN sites s ON s.id = b.site_id JOIN customers c ON c.id = s.customer_id
                          LEFT JOIN bridge_status bs ON bs.bridge_id = b.id
                          WHERE b.site_id = %(site)s AND {where} ORDER BY b.serial
                          LIMIT %(limit)s OFFSET %(offset)s""").format(where=where),
                {**params, "site": site_id, "limit": limit, "offset": offset})


def bridge(conn: Conn, p: Principal, bridge_id: int) -> Row | None:
    """One bridge the principal may see, or None."""
    where, params = scope(p)
    return _one(conn, sql.SQL("""SELECT b.id, b.serial, b.name, b.site_id, bs.online, bs.changed_at AS status_changed_at
                          FROM bridges b JOIN sites s ON s.id = b.site_id JOIN customers c ON c.id = s.customer_id
                          LEFT JOIN bridge_status bs ON bs.bridge_id = b.id
                          WHERE b.id = %(id)s AND {where}""").format(where=where), {**params, "id": bridge_id})


_SENSOR_COLUMNS = """se.id, se.serial, se.bridge_id, b.serial AS bridge_serial, se.node_id, n.name AS node_name,
                     se.phase, se.ct_rating_a, se.assigned_at, se.first_seen_at, se.reports_power,
                     last.ts AS last_seen_at, last.current_a AS last_current_a, last.rssi_dbw AS last_rssi_dbw"""
_LAST_READING = "LEFT JOIN LATERAL wattline_last_reading(se.id) last ON true"  # both tiers (sql/026)


def sensors(conn: Conn, p: Principal, site_id: int, *, discovered_only: bool = False,
            bridge_id: int | None = None, limit: int = 100_000, offset: int = 0) -> list[Row]:
    """A site's sensors with their last reading and RSSI; `discovered_only`: not yet assigned."""
    where, params = scope(p)
    extra = " AND se.node_id IS NULL" if discovered_only else ""
    if bridge_id is not None:
        extra += " AND se.bridge_id = %(bridge)s"
    return _all(conn, sql.SQL("""SELECT {sensor_columns}
                          FROM sensors se JOIN bridges b ON b.id = se.bridge_id
                          JOIN sites s ON s.id = b.site_id JOIN customers c ON c.id = s.customer_id
                          LEFT JOIN nodes n ON n.id = se.node_id {last_reading}
                          WHERE b.site_id = %(site)s AND {where}{extra} ORDER BY se.serial
                          LIMIT %(limit)s OFFSET %(offset)s""").format(
                              sensor_columns=sql.SQL(_SENSOR_COLUMNS), last_reading=sql.SQL(_LAST_READING),
                              where=where, extra=sql.SQL(extra)),
                {**params, "site": site_id, "bridge": bridge_id, "limit": limit, "offset": offset})


def sensor_by_serial(conn: Conn, p: Principal, serial: str) -> Row | None:
    """One sensor by serial, if it reports through a bridge the principal may see."""
    where, params = scope(p)
    return _one(conn, sql.SQL("""SELECT {sensor_columns}, b.site_id
                          FROM sensors se JOIN bridges b ON b.id = se.bridge_id
                          JOIN sites s ON s.id = b.site_id JOIN customers c ON c.id = s.customer_id
                          LEFT JOIN nodes n ON n.id = se.node_id {last_reading}
                          WHERE se.serial = %(serial)s AND {where}""").format(
                              sensor_columns=sql.SQL(_SENSOR_COLUMNS), last_reading=sql.SQL(_LAST_READING),
                              where=where), {**params, "serial": serial})


# -- measurements --------------------------------------------------------------------------
#: PowerRadar's export columns, then Wattline's generation: what the node generated and gave
#: out (wattline.generation; empty where it has no generation, and for a sensor's own rows).
EXPORT_COLUMNS = ("device_id", "device_name", "time_utc", "resolution_minutes", "site_id", "site_name",
                  "current_a", "voltage_v", "power_w", "power_factor", "energy_wh", "coverage", "samples",
                  "generation_wh", "export_wh")


@dataclass(frozen=True)
class MeasurementBatch:
    """Export rows as columns: per-row arrays, and the per-node columns once per node (`nodes`,
    keyed like EXPORT_COLUMNS and joined on `device_id` by the encoder)."""

    resolution_minutes: int
    nodes: dict[str, list[Any]]
    device_id: npt.NDArray[np.int64]
    ts_us: npt.NDArray[np.int64]
    current_a: npt.NDArray[np.float64]
    power_w: npt.NDArray[np.float64]
    energy_wh: npt.NDArray[np.float64]
    coverage: npt.NDArray[np.float32]  # NaN: not known (a sensor's on-request buckets)
    samples: npt.NDArray[np.int32]
    generation_wh: npt.NDArray[np.float64] | None = None  # NaN or None: no generation
    export_wh: npt.NDArray[np.float64] | None = None

    def __len__(self) -> int:
        return len(self.ts_us)


_ROLLUP_COPY = np.dtype([("n", ">i2"), ("l0", ">i4"), ("node_id", ">i8"), ("l1", ">i4"), ("bucket", ">i8"),
                         ("l2", ">i4"), ("current", ">f8"), ("l3", ">i4"), ("power", ">f8"), ("l4", ">i4"),
                         ("energy", ">f8"), ("l5", ">i4"), ("coverage", ">f4"), ("l6", ">i4"), ("samples", ">i4"),
                         ("l7", ">i4"), ("generation", ">f8"), ("l8", ">i4"), ("export", ">f8")])


def measurement_nodes(conn: Conn, p: Principal, node_ids: list[int]) -> dict[str, list[Any]]:
    """The per-node export columns of the visible nodes among `node_ids` (in that order).

    Voltage and power factor are what the tree configures for the node (`wattline.electrical`:
    the rollups keep energy and power, not per-reading voltage); NULL where nothing does."""
    where, params = scope(p)
    rows = {r["device_id"]: r for r in _all(conn, sql.SQL("""
        SELECT n.id AS device_id, n.name AS device_name, s.id AS site_id, s.name AS site_name
        FROM nodes n JOIN sites s ON s.id = n.site_id JOIN customers c ON c.id = s.customer_id
        WHERE n.id = ANY(%(nodes)s) AND {where}""").format(where=where), {**params, "nodes": node_ids})}
    visible = [n for n in node_ids if n in rows]
    params_of = electrical(conn, visible)
    out: dict[str, list[Any]] = {c: [] for c in ("device_id", "device_name", "site_id", "site_name", "voltage_v",
                                                 "power_factor")}
    for n in visible:
        e = params_of.get(n, UNCONFIGURED)
        for column, value in (*rows[n].items(), ("voltage_v", e.configured_conductor_voltage_v),
                              ("power_factor", e.power_factor)):
            out[column].append(value)
    return out


def measurement_batches(conn: Conn, p: Principal, node_ids: list[int], resolution: Resolution, t_from: datetime,
                        t_to: datetime, *, rows: int = 16_384) -> Generator[MeasurementBatch]:
    """PowerRadar-style export rows of the visible nodes among `node_ids` (by node id, each
    oldest first), from the rollup tier, `rows` at a time: one binary COPY read straight into
    numpy columns, so memory stays flat whatever the range and nothing is done per row in
    Python but receive it. Nothing is yielded for nodes the principal cannot see."""
    nodes = measurement_nodes(conn, p, node_ids)
    if not nodes["device_id"]:
        return
    # NaN for no generation: a fixed-width binary row has no room for NULL's missing field.
    query = sql.SQL("""COPY (SELECT node_id, bucket, mean_current_a, mean_power_w, energy_wh, coverage, samples,
                                    COALESCE(generation_wh, 'NaN'), COALESCE(export_wh, 'NaN')
                             FROM {table} WHERE node_id = ANY({nodes}) AND bucket >= {lo} AND bucket < {hi}
                             ORDER BY node_id, bucket) TO STDOUT (FORMAT BINARY)""").format(
        table=sql.Identifier(resolution.table), nodes=sql.Literal(nodes["device_id"]), lo=sql.Literal(t_from),
        hi=sql.Literal(t_to))
    for arr in copy_out_arrays(conn, query, _ROLLUP_COPY, rows=rows):
        yield MeasurementBatch(resolution.minutes, nodes, arr["node_id"].astype(np.int64),
                               arr["bucket"].astype(np.int64) + PG_EPOCH_US, arr["current"].astype(np.float64),
                               arr["power"].astype(np.float64), arr["energy"].astype(np.float64),
                               arr["coverage"].astype(np.float32), arr["samples"].astype(np.int32),
                               arr["generation"].astype(np.float64), arr["export"].astype(np.float64))


def node_series(conn: Conn, p: Principal, node_ids: list[int], resolution: Resolution, t_from: datetime,
                t_to: datetime) -> list[Row]:
    """Energy and power of several nodes (one site's tree, say) for charts."""
    where, params = scope(p)
    return _all(conn, sql.SQL("""SELECT r.node_id, r.bucket, r.energy_wh, r.mean_power_w, r.max_power_w, r.coverage,
                                 r.unmonitored_wh
                          FROM {resolution_table} r JOIN nodes n ON n.id = r.node_id
                          JOIN sites s ON s.id = n.site_id JOIN customers c ON c.id = s.customer_id
                          WHERE r.node_id = ANY(%(nodes)s) AND r.bucket >= %(from)s AND r.bucket < %(to)s
                            AND {where} ORDER BY r.node_id, r.bucket""").format(
                                resolution_table=sql.Identifier(resolution.table), where=where),
                {**params, "nodes": node_ids, "from": t_from, "to": t_to})


def weighted_series(conn: Conn, p: Principal, weights: dict[int, int], resolution: Resolution, t_from: datetime,
                    t_to: datetime) -> list[Row]:
    """Σ weight × each node's energy and mean power per bucket (a virtual meter), summed in
    the database: one row a bucket comes back, not one a node and bucket. Coverage is the
    least of the nodes' (0 where any node has no row)."""
    where, params = scope(p)
    return _all(conn, sql.SQL("""
        SELECT extract(epoch FROM r.bucket)::float8 AS bucket_s, sum(w.weight * r.energy_wh) AS energy_wh,
               sum(w.weight * r.mean_power_w) AS mean_power_w,
               CASE WHEN count(*) = %(terms)s THEN min(r.coverage) ELSE 0 END AS coverage
        FROM unnest(%(nodes)s::bigint[], %(weights)s::int[]) AS w(node_id, weight)
        JOIN {table} r ON r.node_id = w.node_id
        JOIN nodes n ON n.id = r.node_id JOIN sites s ON s.id = n.site_id JOIN customers c ON c.id = s.customer_id
        WHERE r.bucket >= %(from)s AND r.bucket < %(to)s AND {where}
        GROUP BY r.bucket ORDER BY r.bucket""").format(table=sql.Identifier(resolution.table), where=where),
                {**params, "nodes": list(weights), "weights": list(weights.values()), "terms": len(weights),
                 "from": t_from, "to": t_to})


def usage_by_node(conn: Conn, p: Principal, site_id: int, t_from: datetime, t_to: datetime) -> list[Row]:
    """Energy per node of a site over a range, from the finest tier that covers it cheaply."""
    where, params = scope(p)
    table = Resolution.HOUR1.table if (t_to - t_from).total_seconds() > 2 * 86400 else Resolution.MIN15.table
    return _all(conn, sql.SQL("""SELECT n.id AS node_id, n.parent_id, n.kind, n.name,
                                 COALESCE(sum(r.energy_wh), 0) AS energy_wh,
                                 sum(r.unmonitored_wh) AS unmonitored_wh, max(r.max_power_w) AS max_power_w
                          FROM nodes n JOIN sites s ON s.id = n.site_id JOIN customers c ON c.id = s.customer_id
                          LEFT JOIN {table} r ON r.node_id = n.id AND r.bucket >= %(from)s AND r.bucket < %(to)s
                          WHERE n.site_id = %(site)s AND {where}
                          GROUP BY n.id ORDER BY n.id""").format(
                              table=sql.Identifier(table),
                              where=where), {**params, "site": site_id, "from": t_from, "to": t_to})


def energy_balance(conn: Conn, p: Principal, site_id: int, t_from: datetime, t_to: datetime,
                   resolution: Resolution) -> list[Row]:
    """The site root's consumption, generation, import, export and self-consumption (Wh) per
    bucket (wattline.generation). Export is netted minute by minute, then summed."""
    where, params = scope(p)
    return _all(conn, sql.SQL("""SELECT r.bucket, r.energy_wh AS consumption_wh,
                                 COALESCE(r.generation_wh, 0) AS generation_wh,
                                 {import_wh} AS import_wh, COALESCE(r.export_wh, 0) AS export_wh,
                                 COALESCE(r.generation_wh - r.export_wh, 0) AS self_consumption_wh, r.coverage
                          FROM {table} r JOIN nodes n ON n.id = r.node_id AND n.kind = 'site'
                          JOIN sites s ON s.id = n.site_id JOIN customers c ON c.id = s.customer_id
                          WHERE n.site_id = %(site)s AND {where} AND r.bucket >= %(from)s AND r.bucket < %(to)s
                          ORDER BY r.bucket""").format(table=sql.Identifier(resolution.table), where=where,
                                                       import_wh=IMPORT_WH),
                {**params, "site": site_id, "from": t_from, "to": t_to})


def site_power_now(conn: Conn, p: Principal, site_id: int) -> Row | None:
    """The site root's latest complete-ish minute."""
    where, params = scope(p)
    return _one(conn, sql.SQL("""SELECT r.bucket, r.mean_power_w, r.coverage FROM rollups_1m r
                          JOIN nodes n ON n.id = r.node_id AND n.kind = 'site'
                          JOIN sites s ON s.id = n.site_id JOIN customers c ON c.id = s.customer_id
                          WHERE n.site_id = %(site)s AND {where} AND r.bucket > now() - interval '15 minutes'
                          ORDER BY r.bucket DESC LIMIT 1""").format(where=where), {**params, "site": site_id})


#: What a node draws from the grid in a bucket: its consumption, less the generation it
#: consumed itself (generation − export) where generation was measured with it.
IMPORT_WH = sql.SQL("CASE WHEN r.export_wh IS NULL THEN r.energy_wh "
                    "ELSE r.energy_wh - r.generation_wh + r.export_wh END")


def energy_15m(conn: Conn, p: Principal, site_id: int, t_from: datetime, t_to: datetime,
               node_ids: list[int] | None = None) -> list[Row]:
    """15-minute energy a site's nodes (default: its root) import, the costing input: with
    rooftop PV, what the meter bills is the import, not the consumption."""
    where, params = scope(p)
    node_filter = "r.node_id = ANY(%(nodes)s)" if node_ids is not None else "n.kind = 'site'"
    return _all(conn, sql.SQL("""SELECT r.node_id, extract(epoch FROM r.bucket)::float8 AS bucket_s,
                                 {import_wh} AS energy_wh, COALESCE(r.export_wh, 0) AS export_wh
                          FROM rollups_15m r JOIN nodes n ON n.id = r.node_id
                          JOIN sites s ON s.id = n.site_id JOIN customers c ON c.id = s.customer_id
                          WHERE n.site_id = %(site)s AND {node_filter} AND r.bucket >= %(from)s
                            AND r.bucket < %(to)s AND {where}
                          ORDER BY r.node_id, r.bucket""").format(node_filter=sql.SQL(node_filter), where=where,
                                                                  import_wh=IMPORT_WH),
                {**params, "site": site_id, "from": t_from, "to": t_to, "nodes": node_ids})


def energy_cost_by_node(conn: Conn, p: Principal, site_id: int, stamps: list[float], rates: list[float],
                        bands: list[str], t_from: datetime, t_to: datetime,
                        resolution: Resolution = Resolution.MIN15) -> list[Row]:
    """Σ energy × rate per node of a site and band, given each interval's rate and band (15-min
    or hourly intervals, `stamps` ascending): `wattline.node_costs`, as the cost tier prices."""
    where, params = scope(p)
    return _all(conn, sql.SQL("""
        SELECT n.id AS node_id, a.band, a.energy_wh, a.cost_minor, a.unmonitored_wh, a.max_power_w
        FROM nodes n JOIN sites s ON s.id = n.site_id JOIN customers c ON c.id = s.customer_id
        {node_costs}
        WHERE n.site_id = %(site)s AND {where}""").format(node_costs=node_costs(resolution), where=where),
                {**params, "site": site_id, "stamps": stamps, "rates": rates, "bands": bands,
                 "from": t_from, "to": t_to})


def priced_days(conn: Conn, p: Principal, site_id: int, t_from: datetime, t_to: datetime) -> list[Row]:
    """The site's whole local days inside [t_from, t_to) that the cost tier has priced."""
    where, params = scope(p)
    rows = _all(conn, sql.SQL("""
        SELECT b.day, extract(epoch FROM b.day)::float8 AS day_s, s.timezone
        FROM band_days b JOIN sites s ON s.id = b.site_id JOIN customers c ON c.id = s.customer_id
        WHERE b.site_id = %(site)s AND {where} AND b.day >= %(from)s AND b.day < %(to)s
        ORDER BY b.day""").format(where=where), {**params, "site": site_id, "from": t_from, "to": t_to})
    if not rows:
        return []
    _, ends = bucket_bounds([r["day_s"] for r in rows], Resolution.DAY1, rows[0]["timezone"])
    limit = t_to.timestamp()
    return [{"day": r["day"], "day_s": r["day_s"], "end_s": float(end)}
            for r, end in zip(rows, ends, strict=True) if end <= limit]


def band_costs_by_node(conn: Conn, p: Principal, site_id: int, days: list[datetime]) -> list[Row]:
    """Energy and cost per node and band over priced days, from the cost tier, node by node."""
    where, params = scope(p)
    return _all(conn, sql.SQL("""
        SELECT n.id AS node_id, a.band, a.energy_wh, a.cost_minor, a.unmonitored_wh, a.max_power_w
        FROM nodes n JOIN sites s ON s.id = n.site_id JOIN customers c ON c.id = s.customer_id
        CROSS JOIN LATERAL (
            SELECT r.band, sum(r.energy_wh) AS energy_wh, sum(r.cost_minor) AS cost_minor,
                   sum(r.unmonitored_wh) AS unmonitored_wh, max(r.max_power_w) AS max_power_w
            FROM rollups_band_1d r WHERE r.node_id = n.id AND r.bucket = ANY(%(days)s) GROUP BY r.band) a
        WHERE n.site_id = %(site)s AND {where}""").format(where=where), {**params, "site": site_id, "days": days})


def sensor_readings(conn: Conn, p: Principal, serial: str, t_from: datetime, t_to: datetime) -> tuple[
        Row | None, raw_readings.Raw]:
    """A visible sensor's metadata (with its node's `Electrical` parameters) and raw readings in a range."""
    where, params = scope(p)
    meta = _one(conn, sql.SQL("""
        SELECT se.id, se.serial, se.node_id, n.name AS node_name, s.id AS site_id, s.name AS site_name, s.timezone,
               se.reports_power
        FROM sensors se JOIN bridges b ON b.id = se.bridge_id JOIN sites s ON s.id = b.site_id
        JOIN customers c ON c.id = s.customer_id LEFT JOIN nodes n ON n.id = se.node_id
        WHERE se.serial = %(serial)s AND {where}""").format(where=where), {**params, "serial": serial})
    if meta is None:
        return None, raw_readings.empty()
    node = meta["node_id"]
    meta["electrical"] = electrical(conn, [node]).get(node, UNCONFIGURED) if node is not None else UNCONFIGURED
    return meta, raw_readings.read(conn, [meta["id"]], t_from, t_to)
