"""Seed the catalogue that matches a simulated fleet, through the core's site builder."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from sensor_sim.fleet import Fleet, Site
from sensor_sim.weather import daily_mean_c
from wattline import catalogue, weather
from wattline.domain import Connection
from wattline.site_builder import (
    CircuitSpec,
    PanelSpec,
    SensorSpec,
    SiteSpec,
    TariffSpec,
    build_site,
    build_tenant,
)
from wattline.tariffs import Band

DEMO_RESELLER = "Demo Reseller"
DEMO_CUSTOMER = "Demo Retail Ltd"

UK_STYLE_BANDS = (
    Band("night", Decimal("14.50"), ("weekday", "weekend", "holiday"), time(0, 0), time(7, 0)),
    Band("day", Decimal("28.62"), ("weekday",), time(7, 0), time(16, 0)),
    Band("peak", Decimal("39.10"), ("weekday",), time(16, 0), time(19, 0)),
    Band("day", Decimal("28.62"), ("weekday",), time(19, 0), time(0, 0)),
    Band("weekend", Decimal("22.00"), ("weekend", "holiday"), time(7, 0), time(0, 0)),
)
UK_STYLE_TARIFF = TariffSpec("Business day/night", "GBP", datetime(2024, 1, 1, tzinfo=UTC), UK_STYLE_BANDS,
                             standing_charge_minor_per_day=Decimal("95.00"),
                             demand_charge_minor_per_kw=Decimal("450.00"), vat_rate=Decimal("0.20"))


def site_spec(site: Site, *, unassigned_every: int = 0) -> SiteSpec:
    """The simulated site as a catalogue: a main switchboard feeding one board per panel ref
    (PV on a board of its own, no clamp above it), each circuit's sensors on its phases.
    Every `unassigned_every`-th circuit's sensors are left for an installer to assign (0:
    assign all)."""
    boards: dict[str, list[CircuitSpec]] = {}
    for n, circuit in enumerate(site.circuits):
        bridge = f"BR-{site.code}-{circuit.ref.split('-B')[1][:2]}"
        left = bool(unassigned_every) and n % unassigned_every == unassigned_every - 1
        sensors = () if left else tuple(SensorSpec(serial, bridge, phase, circuit.rated_a * 1.25)
                                        for phase, serial in enumerate(circuit.sensor_serials, start=1))
        boards.setdefault(circuit.panel_ref, []).append(
            CircuitSpec(circuit.ref, circuit.name, sensors, asset_type=circuit.profile.name.lower(),
                        flow="generation" if circuit.generates else "consumption"))
    sub_panels = tuple(PanelSpec(ref, f"Board {ref}", 400.0, 0.92, Connection.THREE_PHASE_WYE, tuple(circuits),
                                 feeder=CircuitSpec(f"{ref}-FEED", f"Feeder to {ref}"))
                       for ref, circuits in boards.items())
    main = PanelSpec(f"{site.code}-MSB", "Main switchboard", 400.0, 0.95, Connection.THREE_PHASE_WYE,
                     sub_panels=sub_panels)
    return SiteSpec(site.name, timezone=site.timezone, floor_area_m2=1500.0 + 100 * site.index,
                    latitude=site.latitude, longitude=site.longitude,
                    opening_hours={d: ["07:00", "19:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat")},
                    bridges=tuple(site.bridge_serials), panels=(main,), tariff=UK_STYLE_TARIFF)


def seed_temperatures(conn: psycopg.Connection[Any], fleet: Fleet, days: int, *,
                      customer: str = DEMO_CUSTOMER, reseller: str = DEMO_RESELLER) -> int:
    """Store the simulated daily mean temperature of each of the fleet's sites for the
    `days` days up to yesterday (local), as the weather the simulator's HVAC loads follow."""
    _, customer_id = build_tenant(conn, reseller, customer)
    stored = 0
    for site in fleet.sites:
        site_id = catalogue.upsert_site(conn, customer_id, site.name, timezone=site.timezone)
        today = datetime.now(ZoneInfo(site.timezone)).date()
        span = [today - timedelta(days=k) for k in range(days, 0, -1)]
        means = daily_mean_c(site.latitude, span)
        stored += weather.save_temperatures(conn, None, site_id, [
            weather.DayTemperature(d, float(t)) for d, t in zip(span, means.tolist(), strict=True)],
            source="simulator")
    return stored


def seed_catalogue(conn: psycopg.Connection[Any], fleet: Fleet, *, unassigned_every: int = 0,
                   customer: str = DEMO_CUSTOMER, reseller: str = DEMO_RESELLER) -> dict[str, int]:
    """Create reseller, customer, sites, panels, circuits, bridges, sensor assignments and a
    tariff for the fleet. Idempotent. Returns counts."""
    counts = {"sites": 0, "circuits": 0, "sensors": 0, "unassigned": 0}
    with conn.transaction():
        _, customer_id = build_tenant(conn, reseller, customer)
        for site in fleet.sites:
            built = build_site(conn, customer_id, site_spec(site, unassigned_every=unassigned_every))
            counts["sites"] += 1
            counts["circuits"] += len(site.circuits)
            counts["sensors"] += len(built.sensors)
            counts["unassigned"] += sum(len(c.sensor_serials) for c in site.circuits) - len(built.sensors)
    return counts
