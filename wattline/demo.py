"""The demo portfolio that `wattline up` and docker-compose start with."""

from __future__ import annotations

import psycopg

from sensor_sim.fleet import build_fleet
from sensor_sim.seed import seed_catalogue
from wattline.accounts import ensure_demo_users

DEMO_UNASSIGNED_EVERY = 10  # every tenth circuit is left for an installer to commission


def seed_demo(database_url: str, *, sites: int, bridges: int, sensors: int) -> dict[str, int]:
    """Catalogue matching `wattline simulate` with the same sizes, and the demo logins."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        counts = seed_catalogue(conn, build_fleet(sites, bridges, sensors), unassigned_every=DEMO_UNASSIGNED_EVERY)
        ensure_demo_users(conn)
    return counts
