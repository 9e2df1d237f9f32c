"""One builder for a catalogue: tenant, site, panels, circuits, bridges, sensors, tariff.

The simulator's seed, the benchmarks and the tests describe a site as data (`SiteSpec`)
and build it here, through the catalogue's own write functions, so that a fixture never
builds a tree by a path the product does not take. Building is idempotent: every object
is keyed by its name, external reference or serial.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg

from wattline import assignments, catalogue
from wattline.domain import Connection
from wattline.generation import Flow
from wattline.tariffs import Band, add_tariff


@dataclass(frozen=True)
class SensorSpec:
    """A clamp on one phase of a circuit, reporting through a bridge of the site."""

    serial: str
    bridge: str
    phase: int = 1
    ct_rating_a: float = 100.0


@dataclass(frozen=True)
class CircuitSpec:
    """A circuit of a panel; `sensors` empty leaves it unmonitored (or for an installer)."""

    ref: str
    name: str
    sensors: tuple[SensorSpec, ...] = ()
    asset_type: str | None = None
    flow: Flow = "consumption"


@dataclass(frozen=True)
class PanelSpec:
    """A distribution board. `feeder` hangs it off a new circuit of its parent panel;
    `sensors` meter the board's own feed (its remainder is what its circuits do not explain)."""

    ref: str
    name: str
    nominal_voltage_v: float = 400.0
    power_factor: float = 0.95
    connection: Connection = Connection.THREE_PHASE_WYE
    circuits: tuple[CircuitSpec, ...] = ()
    sub_panels: tuple[PanelSpec, ...] = ()
    feeder: CircuitSpec | None = None
    sensors: tuple[SensorSpec, ...] = ()


@dataclass(frozen=True)
class TariffSpec:
    """A tariff version for the site."""

    name: str
    currency: str
    valid_from: datetime
    bands: tuple[Band, ...]
    standing_charge_minor_per_day: Decimal = Decimal(0)
    demand_charge_minor_per_kw: Decimal = Decimal(0)
    vat_rate: Decimal = Decimal(0)


@dataclass(frozen=True)
class SiteSpec:
    """A site and its electrical tree, as data."""

    name: str
    timezone: str = "UTC"
    country: str = "GB"
    floor_area_m2: float | None = None
    opening_hours: dict[str, list[str]] | None = None
    latitude: float | None = None
    longitude: float | None = None
    bridges: tuple[str, ...] = ()
    panels: tuple[PanelSpec, ...] = ()
    tariff: TariffSpec | None = None


@dataclass
class BuiltSite:
    """The ids of what `build_site` made, by the spec's keys."""

    site_id: int
    root: int
    nodes: dict[str, int] = field(default_factory=dict)  # external ref -> node id
    bridges: dict[str, int] = field(default_factory=dict)  # serial -> bridge id
    sensors: dict[str, int] = field(default_factory=dict)  # serial -> sensor id
    tariff_id: int | None = None


def build_tenant(conn: psycopg.Connection[Any], reseller: str, customer: str) -> tuple[int, int]:
    """The reseller and customer of these names (created if missing): (reseller_id, customer_id)."""
    reseller_id = catalogue.upsert_reseller(conn, reseller)
    return reseller_id, catalogue.upsert_customer(conn, reseller_id, customer)


def build_site(conn: psycopg.Connection[Any], customer_id: int, spec: SiteSpec) -> BuiltSite:
    """Create or update the site of `spec` under the customer, with its whole tree."""
    site_id = catalogue.upsert_site(conn, customer_id, spec.name, timezone=spec.timezone, country=spec.country,
                                    floor_area_m2=spec.floor_area_m2, opening_hours=spec.opening_hours,
                                    latitude=spec.latitude, longitude=spec.longitude)
    built = BuiltSite(site_id, catalogue.site_root(conn, site_id))
    for serial in spec.bridges:
        built.bridges[serial] = catalogue.upsert_bridge(conn, site_id, serial, f"Bridge {serial}")
    for panel in spec.panels:
        _panel(conn, built, built.root, panel)
    if spec.tariff is not None:
        t = spec.tariff
        built.tariff_id = add_tariff(
            conn, site_id, t.name, t.currency, t.valid_from, list(t.bands),
            standing_charge_minor_per_day=t.standing_charge_minor_per_day,
            demand_charge_minor_per_kw=t.demand_charge_minor_per_kw, vat_rate=t.vat_rate)
    return built


def _panel(conn: psycopg.Connection[Any], built: BuiltSite, parent: int, spec: PanelSpec) -> None:
    if spec.feeder is not None:
        parent = _circuit(conn, built, parent, spec.feeder)
    panel = catalogue.upsert_node(conn, built.site_id, parent, "panel", spec.name, spec.ref,
                                  nominal_voltage_v=spec.nominal_voltage_v, power_factor=spec.power_factor,
                                  connection=spec.connection)
    built.nodes[spec.ref] = panel
    _sensors(conn, built, panel, spec.sensors)
    for circuit in spec.circuits:
        _circuit(conn, built, panel, circuit)
    for sub in spec.sub_panels:
        _panel(conn, built, panel, sub)


def _circuit(conn: psycopg.Connection[Any], built: BuiltSite, panel: int, spec: CircuitSpec) -> int:
    node = catalogue.upsert_node(conn, built.site_id, panel, "circuit", spec.name, spec.ref,
                                 asset_type=spec.asset_type, flow=spec.flow)
    built.nodes[spec.ref] = node
    _sensors(conn, built, node, spec.sensors)
    return node


def _sensors(conn: psycopg.Connection[Any], built: BuiltSite, node: int, sensors: tuple[SensorSpec, ...]) -> None:
    for sensor in sensors:
        assignments.register_sensor(conn, sensor.serial, built.bridges[sensor.bridge])
        built.sensors[sensor.serial] = assignments.assign(conn, None, sensor.serial, node, sensor.phase,
                                                          sensor.ct_rating_a)
