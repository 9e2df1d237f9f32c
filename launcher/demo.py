"""The demo portfolio that `wattline up` and docker-compose start with."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg

from alerts import store
from alerts.rules import Anomaly, BridgeOffline, Budget, RuleParams, SensorOffline
from sensor_sim.fleet import build_fleet
from sensor_sim.seed import seed_catalogue, seed_temperatures
from wattline.accounts import ensure_demo_users

DEMO_UNASSIGNED_EVERY = 10  # every tenth circuit is left for an installer to commission
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
        fleet = build_fleet(sites, bridges, sensors)
        counts = seed_catalogue(conn, fleet, unassigned_every=DEMO_UNASSIGNED_EVERY)
        counts["temperature_days"] = seed_temperatures(conn, fleet, DEMO_WEATHER_DAYS)
        ensure_demo_users(conn)
        counts["alert_rules"] = seed_rules(conn)
    return counts


def seed_rules(conn: psycopg.Connection[Any]) -> int:
    made = 0
    for (site_id,) in conn.execute("SELECT id FROM sites s WHERE NOT EXISTS "
                                   "(SELECT 1 FROM alert_rules r WHERE r.site_id = s.id)").fetchall():
        for name, params in DEMO_RULES:
            store.create_rule(conn, site_id, None, name, params)
            made += 1
    return made
