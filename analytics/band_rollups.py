"""The cost tier: energy and cost per node, local day and tariff band (`rollups_band_1d`).

Pricing a month per node from the hourly tier reads 720 rows per node; this tier reads
about 30 per node and band. It is derived, like every rollup:
- the rollup worker re-prices the local days it has just re-aggregated, in the same
  transaction, once they are over, so the tier never lags the hourly one; a day still
  running is left unmarked (readers cost it from the hourly tier);
- a tariff or site change un-marks the days it can re-price (a trigger in
  `sql/011_band_rollups.sql`), and `price_unpriced_days` re-prices them, newest first;
- readers use the tier only for days marked in `band_days` and cost every other interval
  from the hourly tier, so a result is right whether or not the worker has caught up.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from analytics.tariffs import interval_prices, load_tariffs, pricing_resolution
from wattline.buckets import bucket_bounds
from wattline.db import fetch_tuples
from wattline.domain import Resolution
from wattline.node_costs import node_costs
from wattline.rollup_queue import lock_all_sites


def price_days(conn: psycopg.Connection[Any], site_id: int, instants: list[datetime]) -> int:
    """Re-price the site's local days that contain `instants` (a day's midnight names it) and
    have ended, and mark them; un-mark those still running. Returns the number of days marked:
    none for a site without a tariff (nothing to price).

    A day is priced once it is over: readers take the tier only for whole days, and a day in
    progress costs a reader at most 24 hourly rows a node. Re-pricing it at each interval's
    close cost a fleet as much as its coarser tiers did, and more as the day went on."""
    site = fetch_tuples(conn, "SELECT timezone, country, extract(epoch FROM now())::float8 FROM sites WHERE id = %s",
                        (site_id,))
    versions = load_tariffs(conn, site_id)
    if not site or not versions or not instants:
        return 0
    tz, country, now_s = site[0]
    # The local days as rollups_1d buckets them, with their real lengths (23 or 25 hours across DST).
    starts, ends = bucket_bounds([t.timestamp() for t in instants], Resolution.DAY1, tz)
    spans = sorted({(float(lo), float(hi)) for lo, hi in zip(starts, ends, strict=True)})
    running = [datetime.fromtimestamp(lo, UTC) for lo, hi in spans if hi > now_s]
    if running and fetch_tuples(conn, "DELETE FROM band_days WHERE site_id = %s AND day = ANY(%s) RETURNING day",
                                (site_id, running)):
        _delete_band_rows(conn, site_id, running)
    spans = [(lo, hi) for lo, hi in spans if hi <= now_s]
    if not spans:
        return 0
    resolution = pricing_resolution(versions, tz)
    step = resolution.minutes * 60.0
    days = [datetime.fromtimestamp(lo, UTC) for lo, _ in spans]
    per_day = [np.arange(lo, hi, step) for lo, hi in spans]
    stamps = np.concatenate(per_day)
    day_of = np.concatenate([np.full(len(s), lo) for s, (lo, _) in zip(per_day, spans, strict=True)])
    rates, bands = interval_prices(stamps, versions, tz, country)
    params = {"site": site_id, "days": days, "stamps": stamps.tolist(), "rates": rates.tolist(), "bands": bands,
              "day_of": day_of.tolist(), "from": days[0], "to": datetime.fromtimestamp(spans[-1][1], UTC)}
    _delete_band_rows(conn, site_id, days)
    conn.execute(sql.SQL("""
        INSERT INTO rollups_band_1d (node_id, bucket, band, energy_wh, cost_minor, unmonitored_wh, max_power_w)
        SELECT n.id, a.day, a.band, a.energy_wh, a.cost_minor, a.unmonitored_wh, a.max_power_w
        FROM nodes n {node_costs} WHERE n.site_id = %(site)s""").format(
        node_costs=node_costs(resolution, by_day=True)), params)
    conn.execute("""INSERT INTO band_days (site_id, day) SELECT %(site)s, unnest(%(days)s::timestamptz[])
                    ON CONFLICT (site_id, day) DO UPDATE SET computed_at = now()""", params)
    return len(days)


def _delete_band_rows(conn: psycopg.Connection[Any], site_id: int, days: list[datetime]) -> None:
    """The site's rows of `days` in the cost tier, node by node (as `price_days` reads)."""
    conn.execute("""DELETE FROM rollups_band_1d WHERE (node_id, bucket) IN (
                        SELECT n.id, d FROM nodes n CROSS JOIN unnest(%s::timestamptz[]) d WHERE n.site_id = %s)""",
                 (days, site_id))


def price_unpriced_days(conn: psycopg.Connection[Any], limit: int = 62) -> int:
    """Price up to `limit` days that are over and have a daily rollup but no mark (new tier, a
    tariff change), newest first. Runs under the rollup lock. Returns the number of days priced."""
    with conn.transaction():
        lock_all_sites(conn)
        todo = fetch_tuples(conn, """
            SELECT n.site_id, r.bucket FROM rollups_1d r JOIN nodes n ON n.id = r.node_id AND n.kind = 'site'
                                                  JOIN sites s ON s.id = n.site_id
            WHERE EXISTS (SELECT 1 FROM tariffs t WHERE t.site_id = n.site_id)
              -- over: its local end, a calendar day on (23 or 25 hours across DST), has passed.
              -- Not `+ 25 hours`: that left yesterday unpriced for the first hour of every day.
              AND ((r.bucket AT TIME ZONE s.timezone) + interval '1 day') AT TIME ZONE s.timezone <= now()
              AND NOT EXISTS (SELECT 1 FROM band_days b WHERE b.site_id = n.site_id AND b.day = r.bucket)
            ORDER BY r.bucket DESC LIMIT %s""", (limit,))
        by_site: dict[int, list[datetime]] = {}
        for site_id, day in todo:
            by_site.setdefault(site_id, []).append(day)
        return sum(price_days(conn, site_id, days) for site_id, days in by_site.items())
