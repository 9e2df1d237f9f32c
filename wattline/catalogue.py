"""Writes to the catalogue: tenants, sites, the electrical hierarchy, bridges, sensors, tariffs.

Every function takes an open connection so that callers decide the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time
from decimal import Decimal
from typing import Any

import psycopg

from wattline.db import fetch_one
from wattline.domain import Connection

Conn = psycopg.Connection[Any]


def _id(conn: Conn, sql: str, params: tuple[Any, ...]) -> int:
    row = fetch_one(conn, sql, params)
    assert row is not None
    return int(row["id"])


def upsert_reseller(conn: Conn, name: str) -> int:
    return _id(conn, """INSERT INTO resellers (name) VALUES (%s)
                        ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id""", (name,))


def upsert_customer(conn: Conn, reseller_id: int, name: str) -> int:
    return _id(conn, """INSERT INTO customers (reseller_id, name) VALUES (%s, %s)
                        ON CONFLICT (reseller_id, name) DO UPDATE SET name = EXCLUDED.name RETURNING id""",
               (reseller_id, name))


def upsert_site(conn: Conn, customer_id: int, name: str, *, timezone: str = "UTC", country: str = "GB",
                floor_area_m2: float | None = None, opening_hours: dict[str, list[str]] | None = None) -> int:
    from psycopg.types.json import Jsonb

    return _id(conn, """INSERT INTO sites (customer_id, name, timezone, country, floor_area_m2, opening_hours)
                        VALUES (%s, %s, %s, %s, %s, %s)
                        ON CONFLICT (customer_id, name) DO UPDATE SET timezone = EXCLUDED.timezone
                        RETURNING id""",
               (customer_id, name, timezone, country, floor_area_m2, Jsonb(opening_hours or {})))


def site_root(conn: Conn, site_id: int) -> int:
    return _id(conn, "SELECT id FROM nodes WHERE site_id = %s AND kind = 'site'", (site_id,))


def upsert_node(conn: Conn, site_id: int, parent_id: int, kind: str, name: str, external_ref: str, *,
                nominal_voltage_v: float | None = None, power_factor: float | None = None,
                connection: Connection | None = None, asset_type: str | None = None) -> int:
    """Create or update a node identified by (site, external_ref), the installers' device id."""
    return _id(conn, """INSERT INTO nodes (site_id, parent_id, kind, name, external_ref, nominal_voltage_v,
                                           power_factor, connection, asset_type)
                        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                        ON CONFLICT (site_id, external_ref) DO UPDATE
                           SET parent_id = EXCLUDED.parent_id, name = EXCLUDED.name,
                               nominal_voltage_v = EXCLUDED.nominal_voltage_v,
                               power_factor = EXCLUDED.power_factor, connection = EXCLUDED.connection,
                               asset_type = EXCLUDED.asset_type
                        RETURNING id""",
               (site_id, parent_id, kind, name, external_ref, nominal_voltage_v, power_factor,
                connection.value if connection else None, asset_type))


def upsert_bridge(conn: Conn, site_id: int, serial: str, name: str = "") -> int:
    return _id(conn, """INSERT INTO bridges (serial, site_id, name) VALUES (%s, %s, %s)
                        ON CONFLICT (serial) DO UPDATE SET name = EXCLUDED.name RETURNING id""",
               (serial, site_id, name))


class AssignmentError(ValueError):
    pass


def assign_sensor(conn: Conn, serial: str, node_id: int, phase: int, ct_rating_a: float,
                  bridge_id: int | None = None) -> int:
    """Map a sensor (discovered or not yet heard) to a circuit phase, and queue its kept
    readings for rollup so that its history appears in the hierarchy (back-fill)."""
    node = fetch_one(conn, "SELECT site_id, kind FROM nodes WHERE id = %s", (node_id,))
    if node is None:
        raise AssignmentError(f"node {node_id} does not exist")
    node_site, kind = node["site_id"], node["kind"]
    if kind not in ("circuit", "panel"):
        raise AssignmentError(f"a sensor clamps a circuit or a panel feed, not a {kind}")
    existing = fetch_one(
        conn, "SELECT s.id, b.site_id FROM sensors s JOIN bridges b ON b.id = s.bridge_id WHERE s.serial = %s",
        (serial,))
    if existing is not None:
        sensor_id, sensor_site = existing["id"], existing["site_id"]
        if sensor_site != node_site:
            raise AssignmentError(f"sensor {serial} reports through a bridge of another site")
        conn.execute("""UPDATE sensors SET node_id = %s, phase = %s, ct_rating_a = %s, assigned_at = now()
                        WHERE id = %s""", (node_id, phase, ct_rating_a, sensor_id))
    else:
        if bridge_id is None:
            raise AssignmentError(f"sensor {serial} has not reported yet: name its bridge")
        sensor_id = _id(conn, """INSERT INTO sensors (serial, bridge_id, node_id, phase, ct_rating_a, assigned_at)
                                 VALUES (%s, %s, %s, %s, %s, now()) RETURNING id""",
                        (serial, bridge_id, node_id, phase, ct_rating_a))
    conn.execute("""INSERT INTO rollup_dirty (ts_from, ts_to, sensor_ids)
                    SELECT min(ts), max(ts), ARRAY[%s::bigint] FROM readings WHERE sensor_id = %s
                    HAVING count(*) > 0""", (sensor_id, sensor_id))
    return int(sensor_id)


@dataclass(frozen=True)
class Band:
    name: str
    rate_minor_per_kwh: Decimal
    day_types: tuple[str, ...]
    start: time
    end: time


def add_tariff(conn: Conn, site_id: int, name: str, currency: str, valid_from: datetime, bands: list[Band], *,
               standing_charge_minor_per_day: Decimal = Decimal(0), demand_charge_minor_per_kw: Decimal = Decimal(0),
               demand_interval_minutes: int = 30, vat_rate: Decimal = Decimal(0)) -> int:
    existing = fetch_one(conn, "SELECT id FROM tariffs WHERE site_id = %s AND valid_from = %s", (site_id, valid_from))
    if existing is not None:
        return int(existing["id"])
    tariff_id = _id(conn, """INSERT INTO tariffs (site_id, name, currency, valid_from, standing_charge_minor_per_day,
                                                  demand_charge_minor_per_kw, demand_interval_minutes, vat_rate)
                             VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
                    (site_id, name, currency, valid_from, standing_charge_minor_per_day,
                     demand_charge_minor_per_kw, demand_interval_minutes, vat_rate))
    for band in bands:
        conn.execute("""INSERT INTO tariff_bands (tariff_id, name, rate_minor_per_kwh, day_types, start_time, end_time)
                        VALUES (%s, %s, %s, %s, %s, %s)""",
                     (tariff_id, band.name, band.rate_minor_per_kwh, list(band.day_types), band.start, band.end))
    return tariff_id
