"""Synthetic history for the read-side benchmarks: rollup rows made in SQL, fast."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from analytics.band_rollups import price_unpriced_days
from sensor_sim.seed import UK_STYLE_BANDS
from wattline import catalogue
from wattline.accounts import create_user, issue_key
from wattline.domain import Connection, Role


def site_with_history(conn: psycopg.Connection[Any], *, circuits: int, days: int, minute_days: int = 1,
                      panels: int = 10, priced: bool = True) -> dict[str, Any]:
    """A site of `circuits` circuits under `panels` boards, with 15-min/1-h/1-d rollups for
    `days` days and 1-min rollups for the last `minute_days`, for circuits and every parent;
    `priced`: the cost tier too."""
    r = catalogue.upsert_reseller(conn, "bench")
    c = catalogue.upsert_customer(conn, r, "bench")
    site = catalogue.upsert_site(conn, c, "Bench site", timezone="Europe/London")
    root = catalogue.site_root(conn, site)
    msb = catalogue.upsert_node(conn, site, root, "panel", "MSB", "MSB", nominal_voltage_v=400, power_factor=0.95,
                                connection=Connection.THREE_PHASE_WYE)
    boards = [catalogue.upsert_node(conn, site, catalogue.upsert_node(conn, site, msb, "circuit", f"Feeder {p}",
                                                                       f"F{p}"),
                                    "panel", f"Board {p}", f"B{p}", nominal_voltage_v=400, power_factor=0.92,
                                    connection=Connection.THREE_PHASE_WYE) for p in range(panels)]
    nodes = [catalogue.upsert_node(conn, site, boards[i % panels], "circuit", f"Circuit {i}", f"C{i}")
             for i in range(circuits)]
    catalogue.add_tariff(conn, site, "Business day/night", "GBP", datetime(2024, 1, 1, tzinfo=UTC), UK_STYLE_BANDS,
                         standing_charge_minor_per_day=Decimal("95"), demand_charge_minor_per_kw=Decimal("450"),
                         vat_rate=Decimal("0.2"))
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(days=days)
    all_nodes = [root, msb, *boards, *nodes]
    for table, step, since in (("rollups_15m", "15 minutes", start), ("rollups_1h", "1 hour", start),
                               ("rollups_1m", "1 minute", end - timedelta(days=minute_days))):
        conn.execute(f"""
            INSERT INTO {table} (node_id, bucket, energy_wh, mean_power_w, max_power_w, mean_current_a, samples,
                                 coverage)
            SELECT n, b, e, e * 3600 / extract(epoch FROM %(step)s::interval), e * 4000 / extract(epoch FROM
                   %(step)s::interval), 5, 6, 1
            FROM unnest(%(nodes)s::bigint[]) n,
                 generate_series(%(since)s::timestamptz, %(end)s::timestamptz - %(step)s::interval,
                                 %(step)s::interval) b,
                 LATERAL (SELECT (50 + (n %% 17) * 10) * extract(epoch FROM %(step)s::interval) / 3600.0 AS e) x""",
                     {"nodes": all_nodes, "since": since, "end": end, "step": step})
    conn.execute("""INSERT INTO rollups_1d SELECT node_id, time_bucket('1 day', bucket, 'Europe/London'),
                           sum(energy_wh), avg(mean_power_w), max(max_power_w), avg(mean_current_a), sum(samples),
                           avg(coverage)
                    FROM rollups_1h GROUP BY 1, 2""")
    if priced:  # what the rollup worker does for a site with a tariff
        while price_unpriced_days(conn):
            pass
    uid = create_user(conn, email="bench@example.com", password="bench-password", role=Role.CUSTOMER_ADMIN,
                      customer_id=c)
    token = issue_key(conn, uid, ["read"]).token
    return {"site": site, "root": root, "circuit": nodes[0], "token": token, "start": start, "end": end,
            "email": "bench@example.com", "password": "bench-password"}



