"""The demo portfolio that `wattline up` and docker-compose start with."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg

from alerts import store
from alerts.rules import Anomaly, BridgeOffline, Budget, RuleParams, SensorOffline
from sensor_sim.fleet import build_fleet
from sensor_sim.seed import seed_catalogue, seed_temperatures
from wattline import virtual_meters
from wattline.accounts import ensure_demo_users

DEMO_UNASSIGNED_EVERY = 10  # every tenth circuit is left for an installer to commission
DEMO_PV_EVERY = 2  # every other site has rooftop PV (the first, the third, ...)
DEMO_WEATHER_DAYS = 400  # of simulated daily mean temperatures, up to yesterday
DEMO_RULES: tuple[tuple[str, RuleParams], ...] = (
    ("Silent clamps", SensorOffline(intervals=6)),
    ("Bridge offline", BridgeOffline(hold_minutes=5)),
    ("Unusual consumption", Anomaly()),
    ("Monthly budget", Budget(cap=Decimal("25000"))),
)


def seed_demo(database_url: str, *, sites: int, bridges: int, sensors: int) -> dict[str, int]:
    """Catalogue matching `wattline simulate` with the same sizes, the demo logins, and a
    starter set of alert rules on each site that has none."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        fleet = build_fleet(sites, bridges, sensors, pv_every=DEMO_PV_EVERY)
        counts = seed_catalogue(conn, fleet, unassigned_every=DEMO_UNASSIGNED_EVERY)
        counts["temperature_days"] = seed_temperatures(conn, fleet, DEMO_WEATHER_DAYS)
        ensure_demo_users(conn)
        counts["alert_rules"] = seed_rules(conn)
        counts["virtual_meters"] = seed_meters(conn)
    return counts


def seed_meters(conn: psycopg.Connection[Any]) -> int:
    """A starter virtual meter for each customer that has none: its heating and cooling
    circuits across every site, the load the weather page explains."""
    made = 0
    for (customer_id,) in conn.execute("SELECT id FROM customers c WHERE NOT EXISTS "
                                       "(SELECT 1 FROM virtual_meters m WHERE m.customer_id = c.id)").fetchall():
        circuits = [r[0] for r in conn.execute(
            """SELECT n.id FROM nodes n JOIN sites s ON s.id = n.site_id
               WHERE s.customer_id = %s AND n.kind = 'circuit' AND n.asset_type = 'hvac'
               ORDER BY n.id LIMIT %s""", (customer_id, virtual_meters.MAX_TERMS)).fetchall()]
        if circuits:
            virtual_meters.save_meter(conn, None, customer_id, "Heating and cooling, all sites",
                                      [virtual_meters.Term(1, node_id=c) for c in circuits])
            made += 1
    return made


def seed_rules(conn: psycopg.Connection[Any]) -> int:
    made = 0
    for (site_id,) in conn.execute("SELECT id FROM sites s WHERE NOT EXISTS "
                                   "(SELECT 1 FROM alert_rules r WHERE r.site_id = s.id)").fetchall():
        for name, params in DEMO_RULES:
            store.create_rule(conn, site_id, None, name, params)
            made += 1
    return made
