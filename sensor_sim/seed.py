"""Seed the catalogue that matches a simulated fleet, through the storage layer."""

from __future__ import annotations

from datetime import UTC, datetime, time
from decimal import Decimal
from typing import Any

import psycopg

from sensor_sim.fleet import Fleet
from wattline import catalogue
from wattline.catalogue import Band
from wattline.domain import Connection

DEMO_RESELLER = "Demo Reseller"
DEMO_CUSTOMER = "Demo Retail Ltd"

UK_STYLE_BANDS = [
    Band("night", Decimal("14.50"), ("weekday", "weekend", "holiday"), time(0, 0), time(7, 0)),
    Band("day", Decimal("28.62"), ("weekday",), time(7, 0), time(16, 0)),
    Band("peak", Decimal("39.10"), ("weekday",), time(16, 0), time(19, 0)),
    Band("day", Decimal("28.62"), ("weekday",), time(19, 0), time(0, 0)),
    Band("weekend", Decimal("22.00"), ("weekend", "holiday"), time(7, 0), time(0, 0)),
]


def seed_catalogue(conn: psycopg.Connection[Any], fleet: Fleet, *, unassigned_every: int = 0,
                   customer: str = DEMO_CUSTOMER, reseller: str = DEMO_RESELLER) -> dict[str, int]:
    """Create reseller, customer, sites, panels, circuits, bridges, sensor assignments and a
    tariff. Idempotent. Every `unassigned_every`-th circuit's sensors are left for an
    installer to assign (0: assign all). Returns counts."""
    counts = {"sites": 0, "circuits": 0, "sensors": 0, "unassigned": 0}
    with conn.transaction():
        reseller_id = catalogue.upsert_reseller(conn, reseller)
        customer_id = catalogue.upsert_customer(conn, reseller_id, customer)
        for site in fleet.sites:
            site_id = catalogue.upsert_site(
                conn, customer_id, site.name, timezone=site.timezone, floor_area_m2=1500.0 + 100 * site.index,
                opening_hours={d: ["07:00", "19:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat")})
            counts["sites"] += 1
            root = catalogue.site_root(conn, site_id)
            main = catalogue.upsert_node(conn, site_id, root, "panel", "Main switchboard", f"{site.code}-MSB",
                                         nominal_voltage_v=400.0, power_factor=0.95,
                                         connection=Connection.THREE_PHASE_WYE)
            bridges = {serial: catalogue.upsert_bridge(conn, site_id, serial, f"Bridge {serial}")
                       for serial in site.bridge_serials}
            panels: dict[str, int] = {}
            for n, circuit in enumerate(site.circuits):
                if circuit.panel_ref not in panels:
                    feeder = catalogue.upsert_node(conn, site_id, main, "circuit", f"Feeder to {circuit.panel_ref}",
                                                   f"{circuit.panel_ref}-FEED")
                    panels[circuit.panel_ref] = catalogue.upsert_node(
                        conn, site_id, feeder, "panel", f"Board {circuit.panel_ref}", circuit.panel_ref,
                        nominal_voltage_v=400.0, power_factor=0.92, connection=Connection.THREE_PHASE_WYE)
                node = catalogue.upsert_node(conn, site_id, panels[circuit.panel_ref], "circuit", circuit.name,
                                             circuit.ref, asset_type=circuit.profile.name.lower())
                counts["circuits"] += 1
                bridge_serial = f"BR-{site.code}-{circuit.ref.split('-B')[1][:2]}"
                if unassigned_every and n % unassigned_every == unassigned_every - 1:
                    counts["unassigned"] += len(circuit.sensor_serials)
                    continue
                for phase, serial in enumerate(circuit.sensor_serials, start=1):
                    catalogue.assign_sensor(conn, serial, node, phase, circuit.rated_a * 1.25,
                                            bridge_id=bridges[bridge_serial])
                    counts["sensors"] += 1
            catalogue.add_tariff(conn, site_id, "Business day/night", "GBP", datetime(2024, 1, 1, tzinfo=UTC),
                                 UK_STYLE_BANDS, standing_charge_minor_per_day=Decimal("95.00"),
                                 demand_charge_minor_per_kw=Decimal("450.00"), vat_rate=Decimal("0.20"))
    return counts
