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


def clone_site(conn: psycopg.Connection[Any], site_id: int, copies: int) -> None:
    """`copies` copies of a site in SQL, for fleets too large to build a write at a time: the
    same tree (node by node, depth by depth), bridges, sensors and their assignments, and
    tariff versions. Copy k's names and serials end in `-k` (sites: ` #k`). It copies what
    the rollups and pricing read, not people, alerts or credentials."""
    with conn.transaction():
        conn.execute("CREATE TEMP TABLE copies ON COMMIT DROP AS SELECT k FROM generate_series(1, %s) k", (copies,))
        conn.execute("""INSERT INTO sites (customer_id, name, timezone, country, latitude, longitude)
                        SELECT customer_id, name || ' #' || k, timezone, country, latitude, longitude
                        FROM sites, copies WHERE id = %s""", (site_id,))
        conn.execute("""CREATE TEMP TABLE site_map ON COMMIT DROP AS
                        SELECT c.k, s.id AS site_id FROM copies c JOIN sites t ON t.id = %s
                        JOIN sites s ON s.customer_id = t.customer_id AND s.name = t.name || ' #' || c.k""",
                     (site_id,))
        conn.execute("""CREATE TEMP TABLE template ON COMMIT DROP AS
                        WITH RECURSIVE t(id, depth) AS (
                            SELECT id, 0 FROM nodes WHERE site_id = %s AND kind = 'site'
                            UNION ALL SELECT n.id, t.depth + 1 FROM nodes n JOIN t ON n.parent_id = t.id)
                        SELECT t.depth, n.*, p.kind AS parent_kind, coalesce(p.external_ref, '') AS parent_ref
                        FROM t JOIN nodes n ON n.id = t.id LEFT JOIN nodes p ON p.id = n.parent_id""", (site_id,))
        deepest = conn.execute("SELECT max(depth) FROM template").fetchone()
        assert deepest is not None
        for depth in range(1, int(deepest[0]) + 1):  # parents first: each level joins the one above
            conn.execute("""INSERT INTO nodes (site_id, parent_id, kind, name, external_ref, nominal_voltage_v,
                                               power_factor, connection, asset_type, flow)
                            SELECT m.site_id, np.id, t.kind, t.name, t.external_ref, t.nominal_voltage_v,
                                   t.power_factor, t.connection, t.asset_type, t.flow
                            FROM template t CROSS JOIN site_map m
                            JOIN nodes np ON np.site_id = m.site_id AND np.kind = t.parent_kind
                                         AND coalesce(np.external_ref, '') = t.parent_ref
                            WHERE t.depth = %s""", (depth,))
        conn.execute("""INSERT INTO bridges (serial, site_id, name)
                        SELECT b.serial || '-' || m.k, m.site_id, b.name FROM bridges b, site_map m
                        WHERE b.site_id = %s""", (site_id,))
        conn.execute("""INSERT INTO sensors (serial, bridge_id, node_id, phase, ct_rating_a, assigned_at,
                                             reports_power)
                        SELECT s.serial || '-' || m.k, nb.id, nn.id, s.phase, s.ct_rating_a, s.assigned_at,
                               s.reports_power
                        FROM sensors s JOIN bridges b ON b.id = s.bridge_id AND b.site_id = %s
                        LEFT JOIN nodes tn ON tn.id = s.node_id CROSS JOIN site_map m
                        JOIN bridges nb ON nb.serial = b.serial || '-' || m.k
                        LEFT JOIN nodes nn ON nn.site_id = m.site_id AND nn.external_ref = tn.external_ref""",
                     (site_id,))
        conn.execute("""INSERT INTO sensor_assignments (sensor_id, node_id, phase, ct_rating_a, valid_from, valid_to,
                                                        reason)
                        SELECT ns.id, nn.id, a.phase, a.ct_rating_a, a.valid_from, a.valid_to, a.reason
                        FROM sensor_assignments a JOIN sensors s ON s.id = a.sensor_id
                        JOIN nodes tn ON tn.id = a.node_id AND tn.site_id = %s CROSS JOIN site_map m
                        JOIN sensors ns ON ns.serial = s.serial || '-' || m.k
                        JOIN nodes nn ON nn.site_id = m.site_id AND nn.external_ref = tn.external_ref""",
                     (site_id,))
        conn.execute("""INSERT INTO tariffs (site_id, name, currency, valid_from, standing_charge_minor_per_day,
                                             demand_charge_minor_per_kw, demand_interval_minutes, vat_rate,
                                             export_rate_minor_per_kwh)
                        SELECT m.site_id, t.name, t.currency, t.valid_from, t.standing_charge_minor_per_day,
                               t.demand_charge_minor_per_kw, t.demand_interval_minutes, t.vat_rate,
                               t.export_rate_minor_per_kwh
                        FROM tariffs t, site_map m WHERE t.site_id = %s""", (site_id,))
        conn.execute("""INSERT INTO tariff_bands (tariff_id, name, rate_minor_per_kwh, day_types, start_time, end_time)
                        SELECT nt.id, b.name, b.rate_minor_per_kwh, b.day_types, b.start_time, b.end_time
                        FROM tariff_bands b JOIN tariffs t ON t.id = b.tariff_id AND t.site_id = %s
                        CROSS JOIN site_map m
                        JOIN tariffs nt ON nt.site_id = m.site_id AND nt.valid_from = t.valid_from""",
                     (site_id,))
    conn.execute("ANALYZE")
