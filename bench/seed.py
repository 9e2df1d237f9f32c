"""Synthetic history for the read-side benchmarks: rollup rows made in SQL, fast."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from analytics.band_rollups import price_unpriced_days
from sensor_sim.seed import UK_STYLE_TARIFF
from wattline.accounts import create_user, issue_key
from wattline.domain import Resolution, Role
from wattline.site_builder import CircuitSpec, PanelSpec, SiteSpec, build_site, build_tenant


def site_with_history(conn: psycopg.Connection[Any], *, circuits: int, days: int, minute_days: int = 1,
                      panels: int = 10, priced: bool = True) -> dict[str, Any]:
    """A site of `circuits` circuits under `panels` boards, with 15-min/1-h/1-d rollups for
    `days` days and 1-min rollups for the last `minute_days`, for circuits and every parent;
    `priced`: the cost tier too."""
    _, c = build_tenant(conn, "bench", "bench")
    boards = tuple(PanelSpec(f"B{p}", f"Board {p}", 400, 0.92, feeder=CircuitSpec(f"F{p}", f"Feeder {p}"),
                             circuits=tuple(CircuitSpec(f"C{i}", f"Circuit {i}") for i in range(p, circuits, panels)))
                   for p in range(panels))
    built = build_site(conn, c, SiteSpec("Bench site", timezone="Europe/London", tariff=UK_STYLE_TARIFF,
                                         panels=(PanelSpec("MSB", "MSB", 400, 0.95, sub_panels=boards),)))
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(days=days)
    # Root, main board, boards and circuits have rollups; the feeders to the boards have none.
    all_nodes = [built.root, *(n for ref, n in built.nodes.items() if not ref.startswith("F"))]
    for resolution, step, since in ((Resolution.MIN15, "15 minutes", start), (Resolution.HOUR1, "1 hour", start),
                                    (Resolution.MIN1, "1 minute", end - timedelta(days=minute_days))):
        conn.execute(sql.SQL("""
            INSERT INTO {} (node_id, bucket, energy_wh, mean_power_w, max_power_w, mean_current_a, samples,
                            coverage)
            SELECT n, b, e, e * 3600 / extract(epoch FROM %(step)s::interval), e * 4000 / extract(epoch FROM
                   %(step)s::interval), 5, 6, 1
            FROM unnest(%(nodes)s::bigint[]) n,
                 generate_series(%(since)s::timestamptz, %(end)s::timestamptz - %(step)s::interval,
                                 %(step)s::interval) b,
                 LATERAL (SELECT (50 + (n %% 17) * 10) * extract(epoch FROM %(step)s::interval) / 3600.0 AS e) x
            """).format(sql.Identifier(resolution.table)),
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
    return {"site": built.site_id, "root": built.root, "circuit": built.nodes["C0"], "token": token, "start": start,
            "end": end, "email": "bench@example.com", "password": "bench-password"}
