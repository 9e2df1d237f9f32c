"""Keeping rollups current: the gateway queues touched minutes, this re-computes them.

Per cycle, under one advisory lock (so concurrent workers never interleave writes):
1. take a slice of `rollup_dirty` (deleted in the same transaction: a crash re-queues it);
2. re-compute those minutes for the circuits whose sensors they name, from raw readings,
   widened by the integration gap on each side (a new reading changes the segment
   before and after it);
3. re-sum the hierarchy of the affected sites for those minutes (with remainders);
4. re-aggregate the 15-minute, hourly and daily buckets that contain them, the last two
   in the site's local time (so a DST day has 23 or 25 hours);
5. re-price the local days they fall in (the cost tier, `analytics.band_rollups`).
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import structlog

from analytics.band_rollups import price_days, price_unpriced_days
from analytics.hierarchy import load_trees, roll_up
from analytics.rollup import bucket_stats, readings_power
from analytics.tariffs import site_offset_minutes
from wattline.db import fetch_tuples
from wattline.domain import Connection
from wattline.queries import local_day_end
from wattline.settings import Settings

log = structlog.get_logger("wattline.rollups")
ROLLUP_LOCK = 0x726F_6C6C  # "roll"
MAX_WINDOW_MIN = 24 * 60
PRICING_PERIOD_S = 30.0
_COLUMNS = ("energy_wh", "mean_power_w", "max_power_w", "mean_current_a", "samples", "coverage")


class RollupEngine:
    def __init__(self, gap_s: float) -> None:
        self.gap_s = gap_s
        self.pad_min = max(1, math.ceil(gap_s / 60.0))

    # -- entry points ----------------------------------------------------------------
    def process_dirty(self, conn: psycopg.Connection[Any], limit: int = 2000) -> int:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLUP_LOCK,))
            taken = fetch_tuples(conn,
                """DELETE FROM rollup_dirty WHERE id IN (
                       SELECT id FROM rollup_dirty ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)
                   RETURNING extract(epoch FROM ts_from)::float8, extract(epoch FROM ts_to)::float8, sensor_ids""",
                (limit,))
            if not taken:
                return 0
            touched: dict[int, set[int]] = defaultdict(set)
            for ts_from, ts_to, sensor_ids in taken:
                first = math.floor(ts_from / 60.0)
                last = max(first, math.ceil(ts_to / 60.0) - 1) if ts_to > ts_from else first
                minutes = range(first - self.pad_min, last + self.pad_min + 1)
                for sensor in sensor_ids:
                    touched[int(sensor)].update(minutes)
            self.recompute(conn, touched)
            return len(taken)

    def recompute_range(self, conn: psycopg.Connection[Any], t_from: datetime, t_to: datetime,
                        site_id: int | None = None) -> int:
        """Re-compute every rollup of [t_from, t_to) (optionally one site), a day at a time."""
        sensors = [r[0] for r in fetch_tuples(conn,
            """SELECT s.id FROM sensors s JOIN nodes n ON n.id = s.node_id
               WHERE %s::bigint IS NULL OR n.site_id = %s""", (site_id, site_id))]
        first = math.floor(t_from.timestamp() / 60.0)
        last = math.ceil(t_to.timestamp() / 60.0)
        done = 0
        for start in range(first, last, MAX_WINDOW_MIN):
            minutes = set(range(start, min(start + MAX_WINDOW_MIN, last)))
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLUP_LOCK,))
                self.recompute(conn, dict.fromkeys(sensors, minutes))
            done += len(minutes)
        return done

    # -- the work ------------------------------------------------------------------------
    def recompute(self, conn: psycopg.Connection[Any], touched: dict[int, set[int]]) -> None:
        meta = fetch_tuples(conn,
            """SELECT s.id, s.node_id, n.site_id, si.timezone,
                      COALESCE(n.nominal_voltage_v, p.nominal_voltage_v, 230),
                      COALESCE(n.power_factor, p.power_factor, 1),
                      COALESCE(n.connection, p.connection, 'single_phase')
               FROM sensors s JOIN nodes n ON n.id = s.node_id
               JOIN sites si ON si.id = n.site_id
               LEFT JOIN nodes p ON p.id = n.parent_id
               WHERE s.node_id IN (SELECT node_id FROM sensors WHERE id = ANY(%s) AND node_id IS NOT NULL)""",
            (list(touched),))
        if not meta:
            return
        node_minutes: dict[int, set[int]] = defaultdict(set)
        sensors_of_node: dict[int, list[int]] = defaultdict(list)
        sensor_info: dict[int, tuple[int, float, float]] = {}
        site_tz: dict[int, str] = {}
        node_site: dict[int, int] = {}
        for sensor_id, node_id, site_id, tz, volts, pf, connection in meta:
            sensors_of_node[node_id].append(sensor_id)
            node_minutes[node_id] |= touched.get(sensor_id, set())
            sensor_info[sensor_id] = (node_id, Connection(connection).conductor_voltage(volts), pf)
            site_tz[site_id] = tz
            node_site[node_id] = site_id
        all_minutes = sorted(set().union(*node_minutes.values()))
        for lo, hi in _windows(all_minutes):
            nodes = [n for n, mins in node_minutes.items() if any(lo <= m <= hi for m in mins)]
            self._circuits(conn, nodes, sensors_of_node, sensor_info, node_minutes, lo, hi)
            sites = sorted({node_site[n] for n in nodes})
            minutes_by_site: dict[int, set[int]] = defaultdict(set)
            for n in nodes:
                minutes_by_site[node_site[n]] |= {m for m in node_minutes[n] if lo <= m <= hi}
            self._hierarchy(conn, sites, minutes_by_site)
            for site in sites:
                minutes = sorted(minutes_by_site[site])
                self._coarser(conn, site, site_tz[site], minutes)
                price_days(conn, site, [datetime.fromtimestamp(m * 60, UTC) for m in minutes])

    def _circuits(self, conn: psycopg.Connection[Any], nodes: list[int], sensors_of_node: dict[int, list[int]],
                  sensor_info: dict[int, tuple[int, float, float]], node_minutes: dict[int, set[int]],
                  lo: int, hi: int) -> None:
        sensors = [s for n in nodes for s in sensors_of_node[n]]
        index = {s: i for i, s in enumerate(sensors)}
        t0 = lo * 60.0
        n_buckets = hi - lo + 1
        data = fetch_tuples(
            conn, """SELECT sensor_id, extract(epoch FROM ts)::float8, current_a,
                            COALESCE(voltage_v, 'NaN'), COALESCE(power_factor, 'NaN')
                     FROM readings WHERE sensor_id = ANY(%s) AND ts >= to_timestamp(%s) AND ts < to_timestamp(%s)
                     ORDER BY sensor_id, ts""",
            (sensors, t0 - self.gap_s, (hi + 1) * 60.0 + self.gap_s))
        if not data:
            return
        arr = np.array(data, dtype=np.float64)
        series = np.array([index[int(s)] for s in arr[:, 0]], dtype=np.int64)
        default_v = np.array([sensor_info[int(s)][1] for s in arr[:, 0]])
        default_pf = np.array([sensor_info[int(s)][2] for s in arr[:, 0]])
        power = readings_power(arr[:, 2], arr[:, 3], arr[:, 4], default_v, default_pf)
        stats = bucket_stats(series, arr[:, 1], power, arr[:, 2], len(sensors), t0, 60.0, n_buckets,
                             self.gap_s, presorted=True)
        rows = []
        coverage = stats.coverage
        mean_p = stats.mean_power_w
        mean_c = stats.mean_current_a
        for node in nodes:
            ix = [index[s] for s in sensors_of_node[node]]
            for m in sorted(node_minutes[node]):
                if not lo <= m <= hi:
                    continue
                b = m - lo
                samples = int(stats.samples[ix, b].sum())
                cov = float(coverage[ix, b].mean())
                if samples == 0 and cov == 0.0:
                    continue
                max_p = stats.max_power_w[ix, b]
                rows.append((node, m * 60.0, float(stats.energy_wh[ix, b].sum()), float(mean_p[ix, b].sum()),
                             float(np.where(np.isfinite(max_p), max_p, 0.0).sum()), float(mean_c[ix, b].mean()),
                             samples, cov, None))
        _upsert(conn, "rollups_1m", rows)

    def _hierarchy(self, conn: psycopg.Connection[Any], sites: list[int], minutes_by_site: dict[int, set[int]]) -> None:
        tree = load_trees(conn, sites)
        if len(tree.node_ids) == 0:
            return
        minutes = sorted(set().union(*minutes_by_site.values()))
        col = {m: k for k, m in enumerate(minutes)}
        idx = tree.index()
        measured_nodes = [int(n) for n in tree.node_ids[tree.measured]]
        own = np.zeros((len(_COLUMNS), len(tree.node_ids), len(minutes)))
        ones = np.zeros((len(tree.node_ids), len(minutes)))
        for node, bucket, *values in fetch_tuples(conn,
                f"""SELECT node_id, extract(epoch FROM bucket)::float8, {', '.join(_COLUMNS)}
                    FROM rollups_1m WHERE node_id = ANY(%s) AND bucket = ANY(%s)""",
                (measured_nodes, [datetime.fromtimestamp(m * 60, UTC) for m in minutes])):
            j, k = idx[node], col[round(bucket / 60)]
            own[:, j, k] = values
            ones[j, k] = 1.0
        # Sums over the tree, per quantity. A node's coverage is the mean coverage of the
        # measured nodes under it (count = how many); its mean current is the total current.
        energy, remainder, has_data = roll_up(tree, own[0])
        mean_power, max_power, current, samples, coverage = (roll_up(tree, own[c])[0] for c in range(1, 6))
        count = roll_up(tree, ones)[0]
        rows = []
        for j in (int(x) for x in np.nonzero(has_data)[0]):
            if tree.measured[j] and np.isnan(remainder[j]).all():
                continue  # a measured leaf: its own row is already right
            node = int(tree.node_ids[j])
            for k, m in enumerate(minutes):
                if m not in minutes_by_site[int(tree.site_of[j])] or count[j, k] == 0:
                    continue
                rows.append((node, m * 60.0, float(energy[j, k]), float(mean_power[j, k]), float(max_power[j, k]),
                             float(current[j, k]), int(samples[j, k]), float(min(coverage[j, k] / count[j, k], 1.0)),
                             None if np.isnan(remainder[j, k]) else float(remainder[j, k])))
        _upsert(conn, "rollups_1m", rows)

    @staticmethod
    def _coarser(conn: psycopg.Connection[Any], site_id: int, tz: str, minutes: list[int]) -> None:
        """15-min from 1-min, hours from 15-min, local days from hours.

        Hours are real hours aligned to the site's clock: the sub-hour part of its UTC
        offset (India's +5:30, say) shifts them; DST changes are whole hours, so a fall-back
        day has 25 distinct hourly buckets and a spring-forward day 23. Days are local
        calendar days (time_bucket with the zone), each as long as it really is."""
        if not minutes:
            return
        stamps = [datetime.fromtimestamp(m * 60, UTC) for m in minutes]
        offset = timedelta(minutes=site_offset_minutes(tz) % 60)
        day_end = local_day_end("t.b", "%(tz)s")
        tiers = (("rollups_1m", "rollups_15m", "time_bucket('15 minutes', {c})", "t.b + interval '15 minutes'", 60),
                 ("rollups_15m", "rollups_1h", "time_bucket('1 hour', {c}, %(offset)s::interval)",
                  "t.b + interval '1 hour'", 900),
                 ("rollups_1h", "rollups_1d", "time_bucket('1 day', {c}, %(tz)s)", day_end, 3600))
        for source, target, bucket, end, fine_s in tiers:
            conn.execute(f"""
                WITH touched AS (SELECT DISTINCT {bucket.format(c="m")} AS b
                                 FROM unnest(%(stamps)s::timestamptz[]) m)
                INSERT INTO {target} (node_id, bucket, energy_wh, mean_power_w, max_power_w, mean_current_a,
                                      samples, coverage, unmonitored_wh)
                SELECT r.node_id, t.b, sum(r.energy_wh),
                       COALESCE(sum(r.mean_power_w * r.coverage) / NULLIF(sum(r.coverage), 0), 0),
                       max(r.max_power_w),
                       COALESCE(sum(r.mean_current_a * r.coverage) / NULLIF(sum(r.coverage), 0), 0),
                       sum(r.samples),
                       LEAST(sum(r.coverage) * %(fine)s / extract(epoch FROM {end} - t.b), 1),
                       sum(r.unmonitored_wh)
                FROM touched t
                JOIN {source} r ON r.bucket >= t.b AND r.bucket < {end}
                WHERE r.node_id IN (SELECT id FROM nodes WHERE site_id = %(site)s)
                GROUP BY r.node_id, t.b
                ON CONFLICT (node_id, bucket) DO UPDATE SET
                    energy_wh = EXCLUDED.energy_wh, mean_power_w = EXCLUDED.mean_power_w,
                    max_power_w = EXCLUDED.max_power_w, mean_current_a = EXCLUDED.mean_current_a,
                    samples = EXCLUDED.samples, coverage = EXCLUDED.coverage,
                    unmonitored_wh = EXCLUDED.unmonitored_wh, computed_at = now()""",
                         {"tz": tz, "stamps": stamps, "fine": fine_s, "site": site_id, "offset": offset})


def _windows(minutes: list[int]) -> list[tuple[int, int]]:
    """Contiguous-enough runs of minutes, at most a day long, to fetch readings in one go."""
    out: list[tuple[int, int]] = []
    for m in minutes:
        if out and m - out[-1][1] <= 30 and m - out[-1][0] < MAX_WINDOW_MIN:
            out[-1] = (out[-1][0], m)
        else:
            out.append((m, m))
    return out


def _upsert(conn: psycopg.Connection[Any], table: str, rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    conn.execute("""CREATE TEMP TABLE IF NOT EXISTS staging_rollups (
                        node_id bigint, bucket_s float8, energy_wh float8, mean_power_w float8, max_power_w float8,
                        mean_current_a float8, samples int, coverage float8, unmonitored_wh float8)
                    ON COMMIT DELETE ROWS""")
    with conn.cursor() as cur:
        with cur.copy("COPY staging_rollups FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)
        cur.execute(f"""
            INSERT INTO {table} (node_id, bucket, energy_wh, mean_power_w, max_power_w, mean_current_a,
                                 samples, coverage, unmonitored_wh)
            SELECT node_id, to_timestamp(bucket_s), energy_wh, mean_power_w, max_power_w, mean_current_a,
                   samples, LEAST(coverage, 1), unmonitored_wh
            FROM staging_rollups
            ON CONFLICT (node_id, bucket) DO UPDATE SET
                energy_wh = EXCLUDED.energy_wh, mean_power_w = EXCLUDED.mean_power_w,
                max_power_w = EXCLUDED.max_power_w, mean_current_a = EXCLUDED.mean_current_a,
                samples = EXCLUDED.samples, coverage = EXCLUDED.coverage,
                unmonitored_wh = EXCLUDED.unmonitored_wh, computed_at = now()""")
        cur.execute("TRUNCATE staging_rollups")


class RollupWorker(threading.Thread):
    """Runs the engine every `rollup_period_s` in the gateway process (or `wattline rollups`)."""

    def __init__(self, database_url: str, settings: Settings) -> None:
        super().__init__(name="rollup-worker", daemon=True)
        self.database_url = database_url
        self.period_s = settings.rollup_period_s
        self.engine = RollupEngine(settings.reporting_interval_s * settings.gap_factor)
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)

    def run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        next_pricing = 0.0
        while not self._stop_event.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.database_url, autocommit=True)
                started = time.monotonic()
                n = self.engine.process_dirty(conn)
                if n:
                    log.debug("rollups updated", dirty_rows=n, seconds=round(time.monotonic() - started, 3))
                    continue  # more may be waiting
                # Idle: price days the cost tier lacks (after a tariff change, or a new
                # deployment), at most every PRICING_PERIOD_S unless there is more to do.
                if time.monotonic() >= next_pricing:
                    if price_unpriced_days(conn):
                        continue
                    next_pricing = time.monotonic() + PRICING_PERIOD_S
            except psycopg.OperationalError as exc:
                log.warning("rollup worker: database unavailable", error=str(exc).splitlines()[0])
                if conn is not None:
                    conn.close()
                conn = None
            self._stop_event.wait(self.period_s)
        if conn is not None:
            conn.close()
