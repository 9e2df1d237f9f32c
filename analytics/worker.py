"""Keeping rollups current: the gateway and catalogue writes queue work, this re-computes it.

Per cycle (several workers share the queue: each slice goes to one of them, and each
site's rows are written by one at a time, `wattline.rollup_queue.lock_sites`):
1. take a bounded slice of `rollup_dirty`: the due work of a few shards of sites, which
   the gateway queues apart so that workers split a minute (deleted in the same
   transaction: a crash re-queues it; shards and rows another worker holds are skipped);
2. re-compute those minutes for the circuits whose sensors they name, from raw readings,
   widened by the integration gap on each side (a new reading changes the segment
   before and after it). A real-time minute needs neither neighbour: the minute after is
   still to come, and the gateway marks the rare work whose first readings a pass of the
   minute before may have missed (`left_pad`; `wattline.rollup_queue.read_minutes`);
3. re-sum the hierarchy of the affected sites for those minutes (with remainders);
4. re-aggregate the 15-minute, hourly and daily buckets that contain them, on the site's
   clock (`wattline.buckets`);
5. re-price the local days they fall in (the cost tier, `analytics.band_rollups`).

Steps 4 and 5 cost far more than the rest (a day's price re-read from all its buckets, for
every node of the site), so a pass of real-time minutes leaves them to the close of the
minutes' 15-minute interval (`rollup_coarse`, `coarse_delay_s`): a site's interval is then
summed and priced once, not fifteen times. Late data and catalogue changes do them at once.

A queue row may also name *former* nodes: nodes a catalogue change took sensors from (an
unassignment, a move). Those nodes and their ancestors are swept: a bucket that no longer
has data loses its row, at every tier, so no reading is counted where it no longer is.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import structlog
from prometheus_client import Counter, Histogram
from psycopg import sql

from analytics.band_rollups import price_days, price_unpriced_days
from analytics.hierarchy import Tree, roll_up
from analytics.kernels import roll_up_balance
from analytics.rollup import bucket_stats, readings_power
from analytics.site_catalogues import Catalogue, SiteCatalogues, Span, Wiring
from wattline import raw_readings
from wattline.buckets import bucket_bounds
from wattline.db import fetch_tuples, id_array
from wattline.domain import Resolution
from wattline.rollup_queue import claim_coarse_sites, claim_shards, lock_all_sites, lock_sites, read_minutes
from wattline.service import LoopService
from wattline.settings import Settings

log = structlog.get_logger("wattline.rollups")
SITE_FAILURES = Counter("wattline_rollup_site_failures_total",
                        "Sites whose rollups failed in a pass (their work is put back with a delay)")
REAL_TIME_WORK = Counter("wattline_rollup_real_time_rows_total",
                         "Real-time queue rows (a minute's batch in a shard) taken by rollup passes")
MINUTE_BEFORE = Counter("wattline_rollup_minute_before_rows_total",
                        "Real-time queue rows whose pass re-computed the minute before theirs too (left_pad)")
ROLLUP_LAG = Histogram("wattline_rollup_lag_seconds",
                       "A real-time minute's newest readings stored → its 1-minute rollups committed",
                       buckets=(1, 2, 5, 10, 15, 20, 25, 30, 40, 50, 60, 90, 120, 300, 600))
PASS_SECONDS = Histogram("wattline_rollup_pass_seconds",
                         "A rollup pass that took queue rows: claim to commit",
                         buckets=(0.1, 0.25, 0.5, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30, 60, 120))
MAX_WINDOW_MIN = 24 * 60
PRICING_PERIOD_S = 30.0
COARSE_SITES_IDLE, COARSE_SITES_BUSY = 16, 4  # sites' due intervals a pass takes, without and with minutes
#: A pass takes queue rows until they name this many (sensor or node) × minute pairs: a
#: catalogue change queues a sensor's history a day per row, so a pass stays bounded.
PASS_BUDGET = 2_000_000
_COLUMNS = ("energy_wh", "mean_power_w", "max_power_w", "mean_current_a", "samples", "coverage")
_TIERS = ((Resolution.MIN1, Resolution.MIN15), (Resolution.MIN15, Resolution.HOUR1),
          (Resolution.HOUR1, Resolution.DAY1))

Minutes = dict[int, set[int]]
#: Queue work read back: an id's minutes, which readers never change in place (ids often share one).
Named = Mapping[int, AbstractSet[int]]


class RollupEngine:
    """Re-computes the rollups of queued minutes; `gap_s` is the longest gap integration bridges.

    `near_s` (default half the gap: one and a half report intervals at the default gap
    factor of 3): how far past a window's ends readings are read first; a sensor with no
    reading that near is read again out to the gap (`raw_readings.read_for_integration`).

    `horizon_s` (`Settings.late_data_horizon_s`): minutes older than this are never
    re-computed, since retention has dropped part of the raw readings and 1-minute rows
    their hours and days were summed from; the kept coarse rows stay as they are."""

    def __init__(self, gap_s: float, *, near_s: float | None = None, horizon_s: float | None = None,
                 shards_per_pass: int = 4, coarse_delay_s: float | None = None) -> None:
        self.gap_s = gap_s
        self.near_s = gap_s / 2 if near_s is None else near_s
        self.coarse_delay_s = coarse_delay_s
        self.shards_per_pass = shards_per_pass
        self.pad_min = max(1, math.ceil(gap_s / 60.0))
        self.horizon_s = horizon_s
        self.catalogues = SiteCatalogues()

    def _oldest_minute(self) -> int | None:
        return None if self.horizon_s is None else math.ceil((time.time() - self.horizon_s) / 60.0)

    # -- entry points ----------------------------------------------------------------
    def process_dirty(self, conn: psycopg.Connection[Any], limit: int = 2000) -> int:
        """Take a slice of the queue and re-compute it; returns the number of queue rows done.

        A slice is the due work of the shards this pass claims (`claim_shards`) and any due
        work queued for no shard (catalogue changes, retries) that no other pass holds."""
        newest_stored: dict[float, float] = {}  # a real-time minute -> when its newest readings were queued
        started = time.monotonic()
        with conn.transaction():
            shards = claim_shards(conn, self.shards_per_pass)
            queued = fetch_tuples(conn,
                """SELECT id, extract(epoch FROM ts_from)::float8, extract(epoch FROM ts_to)::float8, sensor_ids,
                          node_ids, attempts, extract(epoch FROM queued_at)::float8,
                          queued_at < not_before AND now() < not_before + interval '1 minute', left_pad, shard
                   FROM rollup_dirty WHERE not_before <= now() AND (shard IS NULL OR shard = ANY(%s))
                   ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED""",
                (shards, limit))
            taken, spent = [], 0
            for row in queued:
                taken.append(row)
                spent += (len(row[3]) + len(row[4])) * max(1, int((row[2] - row[1]) // 60))
                if spent >= PASS_BUDGET:
                    break
            if not taken:
                return 0
            conn.execute("DELETE FROM rollup_dirty WHERE id = ANY(%s)", ([r[0] for r in taken],))
            # Before any reading is read: a gateway commit that might change these minutes
            # now either lands before this pass reads, or marks its work `left_pad`.
            read_minutes(conn, [(int(r[9]), float(r[1])) for r in taken if r[9] is not None])
            # Ids by the minutes their rows name: a real-time minute's sensors come in a row
            # per gateway commit, each sensor in about six, and one pass's rows nearly all
            # name the same minute, so they are joined per distinct set of minutes.
            sensors_by: dict[frozenset[int], list[int]] = defaultdict(list)
            nodes_by: dict[frozenset[int], list[int]] = defaultdict(list)
            oldest = self._oldest_minute()
            real_time = True
            for _, ts_from, ts_to, sensor_ids, node_ids, attempts, queued_at, in_time, left_pad, _ in taken:
                row_real_time = (not node_ids and not attempts and ts_to - ts_from == 60.0
                                 and queued_at - ts_from < 3600.0)
                if row_real_time:
                    newest_stored[ts_from] = max(newest_stored.get(ts_from, 0.0), queued_at)
                    REAL_TIME_WORK.inc()
                    if left_pad:
                        MINUTE_BEFORE.inc()
                else:
                    real_time = False
                first = math.floor(ts_from / 60.0)
                last = max(first, math.ceil(ts_to / 60.0) - 1) if ts_to > ts_from else first
                # The integration gap reaches both ways: a new reading changes the segments before
                # and after it. Readings stored before their minute was due (`in_time`), seen by a
                # pass that starts before the next minute is due, need no minutes after theirs:
                # the next minute's own pass, still to come, reads them. Nor the minutes before,
                # unless the gateway says a pass may have read the minute before without them
                # (`left_pad`, ingest.writer.BatchWriter._left_pads). So a real-time minute is
                # written once, not three times.
                after = 0 if in_time and row_real_time else self.pad_min
                before = 0 if row_real_time and not left_pad else self.pad_min
                minutes = range(max(first - before, oldest if oldest is not None else first - before),
                                last + after + 1)
                sensors_by[frozenset(minutes)] += sensor_ids
                nodes_by[frozenset(minutes)] += node_ids
            touched, former = _join_minutes(sensors_by), _join_minutes(nodes_by)
            defer = real_time and self.coarse_delay_s is not None
            try:
                with conn.transaction():  # a savepoint: a failure undoes only this attempt
                    self.recompute(conn, touched, former, defer_coarse=defer)
            except Exception:
                if conn.broken or conn.closed:
                    raise
                self._site_by_site(conn, touched, former, max(r[5] for r in taken), defer)
                newest_stored.clear()
        written = time.time()
        PASS_SECONDS.observe(time.monotonic() - started)
        for stored in newest_stored.values():
            ROLLUP_LAG.observe(written - stored)
        return len(taken)

    def _site_by_site(self, conn: psycopg.Connection[Any], touched: Named, former: Named, attempts: int,
                      defer: bool) -> None:
        """The slice failed as a whole: re-compute it a site at a time, so that the site whose
        work fails is put back with its reason and a growing delay, and every other site's
        rollups are written now."""
        site_of: dict[tuple[str, int], int] = {}
        for sensor, site in fetch_tuples(conn, """SELECT s.id, b.site_id FROM sensors s
                                                   JOIN bridges b ON b.id = s.bridge_id WHERE s.id = ANY(%s)""",
                                         (list(touched),)):
            site_of[("sensor", int(sensor))] = int(site)
        for node, site in fetch_tuples(conn, "SELECT id, site_id FROM nodes WHERE id = ANY(%s)", (list(former),)):
            site_of[("node", int(node))] = int(site)
        by_site: dict[int, tuple[Minutes, Minutes]] = defaultdict(lambda: (defaultdict(set), defaultdict(set)))
        for sensor, minutes in touched.items():
            if ("sensor", sensor) in site_of:
                by_site[site_of[("sensor", sensor)]][0][sensor] |= minutes
        for node, minutes in former.items():
            if ("node", node) in site_of:
                by_site[site_of[("node", node)]][1][node] |= minutes
        for site, (site_touched, site_former) in sorted(by_site.items()):
            try:
                with conn.transaction():
                    self.recompute(conn, site_touched, site_former, defer_coarse=defer)
            except Exception as exc:
                if conn.broken or conn.closed:
                    raise
                SITE_FAILURES.inc()
                log.error("rollups_failed_for_site", site=site, attempts=attempts + 1, error=type(exc).__name__)
                _put_back(conn, site_touched, site_former, attempts + 1, exc)

    def recompute_range(self, conn: psycopg.Connection[Any], t_from: datetime, t_to: datetime,
                        site_id: int | None = None) -> int:
        """Re-compute every rollup of [t_from, t_to) (optionally one site), a day at a time.

        The range's rows of the site's nodes go first, so the result equals a computation
        from scratch whatever the tree or the assignments were before. A range older than
        the horizon is cut to it: those rollups can no longer be rebuilt, and are kept.
        """
        if (oldest := self._oldest_minute()) is not None:
            t_from = max(t_from, datetime.fromtimestamp(oldest * 60.0, UTC))
            if t_to <= t_from:
                return 0
        sensors = [r[0] for r in fetch_tuples(conn,
            """SELECT DISTINCT a.sensor_id FROM sensor_assignments a JOIN nodes n ON n.id = a.node_id
               WHERE %s::bigint IS NULL OR n.site_id = %s""", (site_id, site_id))]
        first = math.floor(t_from.timestamp() / 60.0)
        last = math.ceil(t_to.timestamp() / 60.0)
        with conn.transaction():
            if site_id is None:
                lock_all_sites(conn)
            else:
                lock_sites(conn, [site_id])
            for resolution in Resolution:
                conn.execute(sql.SQL("""DELETE FROM {} WHERE bucket >= %s AND bucket < %s AND node_id IN
                                        (SELECT id FROM nodes WHERE %s::bigint IS NULL OR site_id = %s)""").format(
                    sql.Identifier(resolution.table)), (t_from, t_to, site_id, site_id))
        done = 0
        for start in range(first, last, MAX_WINDOW_MIN):
            minutes = set(range(start, min(start + MAX_WINDOW_MIN, last)))
            with conn.transaction():
                if site_id is None:
                    lock_all_sites(conn)
                self.recompute(conn, dict.fromkeys(sensors, minutes))
            done += len(minutes)
        return done

    # -- the work ------------------------------------------------------------------------
    def recompute(self, conn: psycopg.Connection[Any], touched: Named, former: Named | None = None, *,
                  defer_coarse: bool = False) -> None:
        """Re-compute the minutes of `touched` sensors' nodes, and sweep `former` nodes' minutes.

        A sensor's minute belongs to the node it was assigned to in that minute
        (`sensor_assignments`): its node's rows are rebuilt from every sensor assigned
        there then. `defer_coarse`: leave the coarser tiers and the price to `process_coarse`
        at the 15-minute interval's close."""
        former = former or {}
        # The sites are found from the spans this worker keeps where it can (the database
        # only for sensors and nodes no kept site has); the catalogues are then read under
        # the sites' locks, and if that read loaded anything, the nodes are decided again
        # from it (a kept copy may be older than an edit).
        known, unknown = self.catalogues.known_spans(conn, touched)
        node_minutes = _node_minutes(chain(chain.from_iterable(known.values()),
                                           _spans(conn, "sensor_id", unknown)), touched, former)
        if not node_minutes:
            return
        node_site, site_tz, rest = self.catalogues.node_sites(node_minutes)
        for node_id, site_id, tz in fetch_tuples(conn, """SELECT n.id, n.site_id, si.timezone FROM nodes n
                                                         JOIN sites si ON si.id = n.site_id
                                                         WHERE n.id = ANY(%s::bigint[])""",
                                                 (id_array(rest),)) if rest else ():
            site_tz[site_id] = tz
            node_site[node_id] = site_id
        # Before anything of these sites is read or written: another worker writing one of them
        # commits first, and what is read below then includes its writes.
        lock_sites(conn, sorted(site_tz))
        catalogue = self.catalogues.read(conn, sorted(site_tz))
        wiring, params = catalogue.wiring, catalogue.electrics
        if catalogue.loaded:
            node_minutes = self._decide_again(conn, touched, former, catalogue, node_site)
        all_minutes = sorted(set().union(*node_minutes.values()))
        for lo, hi in _windows(all_minutes):
            nodes = [n for n, mins in node_minutes.items() if n in node_site and any(lo <= m <= hi for m in mins)]
            sweep = {n for n in nodes if n in former}
            computed: Own = {}
            for (first, last), group in _spans_of_minutes(nodes, node_minutes, lo, hi).items():
                computed |= self._circuits(conn, group, wiring, params, node_minutes, first, last,
                                           sweep.intersection(group))
            sites = sorted({node_site[n] for n in nodes})
            minutes_by_site: Minutes = defaultdict(set)
            for n in nodes:
                minutes_by_site[node_site[n]] |= {m for m in node_minutes[n] if lo <= m <= hi}
            swept = self._hierarchy(conn, catalogue.tree(sites), minutes_by_site, sweep, wiring, computed)
            for site in sites:
                minutes = sorted(minutes_by_site[site])
                if defer_coarse and not swept:
                    self._defer_coarse(conn, site, minutes)
                else:
                    self._coarser(conn, site, site_tz[site], minutes, swept)
                    price_days(conn, site, [datetime.fromtimestamp(m * 60, UTC) for m in minutes])

    @staticmethod
    def _decide_again(conn: psycopg.Connection[Any], touched: Named, former: Named, catalogue: Catalogue,
                      node_site: dict[int, int]) -> Minutes:
        """The nodes' minutes from the catalogues just read under the sites' locks. A sensor
        whose spans now reach a site this pass does not hold (assigned there since the
        spans the sites were found from) has its minutes queued again, due now: the next
        pass finds that site too."""
        spans = [sp for s in touched for sp in catalogue.wiring.sensor_spans.get(s, ())]
        node_site.update((row[0], site) for site, rows in catalogue.tree_rows.items() for row in rows)
        away = {sp[0] for sp in spans if sp[1] not in node_site
                and any(sp[2] <= m * 60.0 < sp[3] for m in touched[sp[0]])}
        if away:
            conn.execute("""INSERT INTO rollup_dirty (ts_from, ts_to, sensor_ids, not_before)
                            SELECT to_timestamp(min(m) * 60.0), to_timestamp((max(m) + 1) * 60.0), %s, now()
                            FROM unnest(%s::int[]) AS m""",
                         (sorted(away), sorted(set().union(*(touched[s] for s in away)))))
        return _node_minutes((sp for sp in spans if sp[0] not in away), touched, former)

    def _defer_coarse(self, conn: psycopg.Connection[Any], site_id: int, minutes: list[int]) -> None:
        """Queue the site's 15-minute intervals of `minutes` for `process_coarse`, due at
        their close plus `coarse_delay_s`; an interval already queued stays as it is."""
        starts = sorted({m * 60 // 900 * 900 for m in minutes})
        conn.execute("""INSERT INTO rollup_coarse (site_id, bucket, not_before)
                        SELECT %s, to_timestamp(b), to_timestamp(b + 900 + %s) FROM unnest(%s::float8[]) b
                        ON CONFLICT (site_id, bucket) DO NOTHING""",
                     (site_id, float(self.coarse_delay_s or 0.0), [float(b) for b in starts]))

    def process_coarse(self, conn: psycopg.Connection[Any], limit: int = 16) -> int:
        """The coarser tiers and the price of the due 15-minute intervals (`_defer_coarse`) of
        up to `limit` sites, a site at a time: one that fails is put back with a growing
        delay and its reason, the rest are written. Returns how many intervals were taken."""
        with conn.transaction():
            # The sites first, by try-lock (a pass writing one holds it, and may be queueing
            # its intervals), then their due intervals: no two transactions wait on each other.
            sites = claim_coarse_sites(conn, limit)
            if not sites:
                return 0
            due = fetch_tuples(conn, """DELETE FROM rollup_coarse WHERE site_id = ANY(%s) AND not_before <= now()
                                        RETURNING site_id, extract(epoch FROM bucket)::float8, attempts""", (sites,))
            if not due:
                return 0
            by_site: dict[int, list[tuple[float, int]]] = defaultdict(list)
            for site, bucket, attempts in due:
                by_site[int(site)].append((float(bucket), int(attempts)))
            zones = dict(fetch_tuples(conn, "SELECT id, timezone FROM sites WHERE id = ANY(%s)", (sorted(by_site),)))
            for site, buckets in sorted(by_site.items()):
                minutes = sorted(int(b // 60) for b, _ in buckets)
                try:
                    with conn.transaction():
                        self._coarser(conn, site, zones[site], minutes, set())
                        price_days(conn, site, [datetime.fromtimestamp(m * 60, UTC) for m in minutes])
                except Exception as exc:
                    if conn.broken or conn.closed:
                        raise
                    SITE_FAILURES.inc()
                    attempts = max(a for _, a in buckets) + 1
                    log.error("coarse_rollups_failed_for_site", site=site, attempts=attempts, error=type(exc).__name__)
                    conn.execute("""INSERT INTO rollup_coarse (site_id, bucket, not_before, attempts, last_error)
                                    SELECT %s, to_timestamp(b), now() + make_interval(secs => %s), %s, %s
                                    FROM unnest(%s::float8[]) b
                                    ON CONFLICT (site_id, bucket) DO UPDATE SET attempts = EXCLUDED.attempts,
                                        last_error = EXCLUDED.last_error""",
                                 (site, _retry_in_s(attempts), attempts, _error_text(exc), [b for b, _ in buckets]))
        return len(due)

    def _circuits(self, conn: psycopg.Connection[Any], nodes: list[int], wiring: Wiring, params: dict[int, Any],
                  node_minutes: Minutes, lo: int, hi: int, sweep: set[int]) -> Own:
        """The measured nodes' own 1-minute rows over [lo, hi], from their sensors' readings;
        returns them as `_hierarchy` reads them back (`Own`)."""
        rows: list[tuple[Any, ...]] = []
        spans_of_node, sensor_spans = wiring.node_spans, wiring.sensor_spans
        sensors = sorted({sp[0] for n in nodes for sp in spans_of_node.get(n, [])})
        t0 = lo * 60.0
        width = hi - lo + 1
        raw = raw_readings.read_for_integration(conn, sensors, t0, (hi + 1) * 60.0, self.gap_s, self.near_s)
        if len(raw):
            index = {s: i for i, s in enumerate(sensors)}
            series = np.searchsorted(np.asarray(sensors, dtype=np.int64), raw.sensor_id)
            ids, ts = raw.sensor_id.astype(np.float64), raw.ts_s
            default_v, default_pf = _node_defaults(ids, ts, sensor_spans, params)
            current = raw.current_a.astype(np.float64)
            # A declared meter's power is its own; a clamp's is V × I × PF, whatever power it sent.
            generating, meters = wiring.generating, wiring.meters
            metering = np.array([s in meters for s in sensors], dtype=np.bool_)
            power = readings_power(current, raw.voltage_v.astype(np.float64), raw.power_factor.astype(np.float64),
                                   default_v, default_pf, np.where(metering[series], raw.power_w, np.nan))
            stats = bucket_stats(series, ts, power, current, len(sensors), t0, 60.0, width, self.gap_s,
                                 presorted=True)
            # Each derived array once: they are computed per access, and reading one per span
            # made a pass quadratic in the sensors it covers.
            max_finite = np.where(np.isfinite(stats.max_power_w), stats.max_power_w, 0.0)
            mean_power_all, mean_current_all, coverage_all = stats.mean_power_w, stats.mean_current_a, stats.coverage
            # Sums over the sensors assigned to each node in each minute of the window: spans
            # over the whole window (nearly all) in one np.add.at per quantity, the rest by slice.
            whole_node, whole_sensor, partial = [], [], []
            for j, node in enumerate(nodes):
                for sensor_id, _, start_s, end_s in spans_of_node.get(node, []):
                    b0 = max(0, min(width, math.ceil(start_s / 60.0) - lo)) if math.isfinite(start_s) else 0
                    b1 = max(0, min(width, math.ceil(end_s / 60.0) - lo)) if math.isfinite(end_s) else width
                    if b0 == 0 and b1 == width:
                        whole_node.append(j)
                        whole_sensor.append(index[sensor_id])
                    elif b0 < b1:
                        partial.append((j, index[sensor_id], slice(b0, b1)))
            per_sensor = (stats.energy_wh, mean_power_all, max_finite, mean_current_all, coverage_all,
                          stats.samples.astype(np.float64), np.ones((len(sensors), width)),
                          np.repeat(metering[:, None].astype(np.float64), width, axis=1))
            sums = np.zeros((len(per_sensor), len(nodes), width))
            rows_of, sensors_of = np.asarray(whole_node, dtype=np.int64), np.asarray(whole_sensor, dtype=np.int64)
            for q, values in enumerate(per_sensor):
                np.add.at(sums[q], rows_of, values[sensors_of])
                for j, i, part in partial:
                    sums[q, j, part] += values[i, part]
            energy, mean_p, max_p, current, coverage, samples, count, signed = sums
            for j, node in enumerate(nodes):
                for m in sorted(node_minutes[node]):
                    b = m - lo
                    if not 0 <= b < width or count[j, b] == 0 or (samples[j, b] == 0 and coverage[j, b] == 0.0):
                        continue
                    # A generating circuit's energy is generation, all of it given out: its
                    # consumption is nil (its power and current stay what its clamps read).
                    # A signed meter's minute nets: consumed where positive, given out where
                    # negative, whatever the node's flow (wattline.generation).
                    wh = float(energy[j, b])
                    gen: float | None
                    if signed[j, b]:
                        consumed, gen = max(wh, 0.0), max(-wh, 0.0)
                    else:
                        gen = wh if node in generating else None
                        consumed = 0.0 if gen is not None else wh
                    rows.append((node, m * 60.0, consumed, float(mean_p[j, b]),
                                 float(max_p[j, b]), float(current[j, b] / count[j, b]), int(samples[j, b]),
                                 float(coverage[j, b] / count[j, b]), None, gen, gen))
        _upsert(conn, Resolution.MIN1, rows)
        if sweep:
            written = {(r[0], round(r[1] / 60)) for r in rows}
            _delete_pairs(conn, ((n, m) for n in sweep for m in node_minutes[n]
                                 if lo <= m <= hi and (n, m) not in written))
        # As stored: coverage is a real, at most 1; a consuming node's generation is nil.
        return {(r[0], round(r[1] / 60)): (r[2], r[3], r[4], r[5], r[6], float(np.float32(min(r[7], 1.0))),
                                          r[9] or 0.0) for r in rows}

    def _hierarchy(self, conn: psycopg.Connection[Any], tree: Tree, minutes_by_site: Minutes,
                   sweep: set[int], wiring: Wiring, computed: Own) -> set[int]:
        """Re-sum the sites' trees for their minutes; returns the swept nodes with their ancestors.

        The measured nodes' own rows are those `_circuits` just wrote (`computed`); only nodes
        it did not write in every minute are read back (in real time: none)."""
        if len(tree.node_ids) == 0:
            return set()
        minutes = sorted(set().union(*minutes_by_site.values()))
        col = {m: k for k, m in enumerate(minutes)}
        idx = tree.index()
        measured_nodes = [int(n) for n in tree.node_ids[tree.measured]]
        stamps = np.array(minutes, dtype=np.float64) * 60.0
        measured = np.zeros((len(tree.node_ids), len(minutes)), dtype=np.bool_)
        spans = [sp for node in measured_nodes for sp in wiring.node_spans.get(node, ())]
        firsts = np.searchsorted(stamps, np.array([sp[2] for sp in spans])).tolist()
        ends = np.searchsorted(stamps, np.array([sp[3] for sp in spans])).tolist()
        for (_, node, _, _), first, end in zip(spans, firsts, ends, strict=True):
            measured[idx[node], first:end] = True
        own = np.zeros((len(_COLUMNS) + 1, len(tree.node_ids), len(minutes)))  # the last: generation_wh
        ones = np.zeros((len(tree.node_ids), len(minutes)))
        for (node, minute), row in computed.items():
            if node in idx and minute in col:
                own[:, idx[node], col[minute]] = row
                ones[idx[node], col[minute]] = 1.0
        unwritten = [n for n in measured_nodes if any((n, m) not in computed for m in minutes)]
        columns = sql.SQL(", ").join(map(sql.Identifier, _COLUMNS))
        for node, bucket, *values in fetch_tuples(conn, sql.SQL(
                """SELECT node_id, extract(epoch FROM bucket)::float8, {}, coalesce(generation_wh, 0)
                   FROM rollups_1m WHERE node_id = ANY(%s) AND bucket = ANY(%s)""").format(columns),
                (unwritten, [datetime.fromtimestamp(m * 60, UTC) for m in minutes])) if unwritten else ():
            j, k = idx[node], col[round(bucket / 60)]
            own[:, j, k] = values
            ones[j, k] = 1.0
        # Sums over the tree, per quantity. A node's coverage is the mean coverage of the
        # measured nodes under it (count = how many); its mean current is the total current.
        # Consumption and generation are summed apart (wattline.generation; signed meters
        # net, kernels.roll_up_balance): power and current over the consuming nodes, and
        # each minute's export at a node is what its generation exceeds its consumption by.
        signed = np.zeros_like(measured)
        for (sensor, node, _, _), first, end in zip(spans, firsts, ends, strict=True):
            if sensor in wiring.meters:
                signed[idx[node], first:end] = True
        consuming = measured & ~tree.generation[:, None]
        energy, generated, remainder, has_consumption, has_generation = roll_up_balance(
            tree.parent, measured, signed, tree.generation, np.ascontiguousarray(own[0]),
            np.ascontiguousarray(own[6]))
        mean_power, max_power, current = (roll_up(tree, consuming, own[c])[0] for c in range(1, 4))
        samples, coverage = (roll_up(tree, measured, own[c])[0] for c in (4, 5))
        count, _, has_data = roll_up(tree, measured, ones)
        exported = np.maximum(generated - energy, 0.0)
        has_children = np.zeros(len(tree.node_ids), dtype=np.bool_)
        has_children[tree.parent[tree.parent >= 0]] = True
        rows = []
        for j in (int(x) for x in np.nonzero(has_data.any(axis=1))[0]):
            node = int(tree.node_ids[j])
            site_minutes = minutes_by_site[int(tree.site_of[j])]
            for k, m in enumerate(minutes):
                if not has_data[j, k] or m not in site_minutes or count[j, k] == 0:
                    continue
                if measured[j, k] and (not has_children[j] or tree.generation[j]):
                    continue  # a measured leaf, or generation measured: its own row is already right
                gen = float(generated[j, k]) if has_generation[j, k] else None
                rows.append((node, m * 60.0, float(energy[j, k]), float(mean_power[j, k]), float(max_power[j, k]),
                             float(current[j, k]), int(samples[j, k]), float(min(coverage[j, k] / count[j, k], 1.0)),
                             None if np.isnan(remainder[j, k]) else float(remainder[j, k]), gen,
                             float(exported[j, k]) if gen is not None and has_consumption[j, k] else None))
        _upsert(conn, Resolution.MIN1, rows)
        swept = _with_ancestors(tree, idx, sweep)
        if swept:
            written = {(r[0], round(r[1] / 60)) for r in rows}
            _delete_pairs(conn, ((n, m) for n in swept
                                 for m in minutes_by_site[int(tree.site_of[idx[n]])]
                                 if (n, m) not in written and not measured[idx[n], col[m]]))
        return swept

    @staticmethod
    def _coarser(conn: psycopg.Connection[Any], site_id: int, tz: str, minutes: list[int], swept: set[int]) -> None:
        """15-min from 1-min, hours from 15-min, local days from hours, for the buckets of `minutes`.

        Buckets follow `wattline.buckets.bucket_bounds` (hours on the site's clock, days
        as long as they really are); coverage is over each bucket's real length.
        """
        if not minutes:
            return
        stamps = np.array(minutes, dtype=np.float64) * 60.0
        for source, target in _TIERS:
            starts, ends = bucket_bounds(stamps, target, tz)
            bounds = np.unique(np.stack([starts, ends], axis=1), axis=0)
            params = {"starts": [datetime.fromtimestamp(b, UTC) for b in bounds[:, 0]],
                      "ends": [datetime.fromtimestamp(e, UTC) for e in bounds[:, 1]], "fine": source.minutes * 60,
                      "site": site_id, "swept": list(swept), "lo": datetime.fromtimestamp(bounds[0, 0], UTC),
                      "hi": datetime.fromtimestamp(bounds[:, 1].max(), UTC)}
            # Node by node, each over [lo, hi) by the primary key, a source row to its bucket by
            # `width_bucket`. Read by bucket and filtered to the site's nodes, every site's
            # interval read the whole fleet's rows of that interval: at 100 sites the close
            # cost a site 0.24 s, against 0.037 s node by node (and flat in the fleet). A
            # range join to the buckets instead made a month's back-fill scan the source once
            # per bucket. coverage is a real: sum(real) adds in single precision, in the order
            # rows come, so it is summed as float8, where the order does not show.
            conn.execute(sql.SQL("""
                INSERT INTO {target} (node_id, bucket, energy_wh, mean_power_w, max_power_w, mean_current_a,
                                      samples, coverage, unmonitored_wh, generation_wh, export_wh)
                SELECT n.id, a.b, a.energy_wh, a.mean_power_w, a.max_power_w, a.mean_current_a, a.samples,
                       a.coverage, a.unmonitored_wh, a.generation_wh, a.export_wh
                FROM nodes n CROSS JOIN LATERAL (
                    SELECT (%(starts)s::timestamptz[])[r.k] AS b, sum(r.energy_wh) AS energy_wh,
                           COALESCE(sum(r.mean_power_w * r.coverage) / NULLIF(sum(r.coverage::float8), 0), 0)
                               AS mean_power_w,
                           max(r.max_power_w) AS max_power_w,
                           COALESCE(sum(r.mean_current_a * r.coverage) / NULLIF(sum(r.coverage::float8), 0), 0)
                               AS mean_current_a,
                           sum(r.samples) AS samples,
                           LEAST(sum(r.coverage::float8) * %(fine)s / extract(epoch FROM
                                 (%(ends)s::timestamptz[])[r.k] - (%(starts)s::timestamptz[])[r.k]), 1) AS coverage,
                           sum(r.unmonitored_wh) AS unmonitored_wh, sum(r.generation_wh) AS generation_wh,
                           sum(r.export_wh) AS export_wh
                    FROM (SELECT s.*, width_bucket(s.bucket, %(starts)s::timestamptz[]) AS k FROM {source} s
                          WHERE s.node_id = n.id AND s.bucket >= %(lo)s AND s.bucket < %(hi)s) r
                    WHERE r.bucket < (%(ends)s::timestamptz[])[r.k]
                    GROUP BY r.k) a
                WHERE n.site_id = %(site)s
                ON CONFLICT (node_id, bucket) DO UPDATE SET
                    energy_wh = EXCLUDED.energy_wh, mean_power_w = EXCLUDED.mean_power_w,
                    max_power_w = EXCLUDED.max_power_w, mean_current_a = EXCLUDED.mean_current_a,
                    samples = EXCLUDED.samples, coverage = EXCLUDED.coverage,
                    unmonitored_wh = EXCLUDED.unmonitored_wh, generation_wh = EXCLUDED.generation_wh,
                    export_wh = EXCLUDED.export_wh, computed_at = now()""").format(
                target=sql.Identifier(target.table), source=sql.Identifier(source.table)), params)
            if swept:  # a swept node's bucket that this pass did not rewrite has no data left
                conn.execute(sql.SQL("""
                    DELETE FROM {target} r
                    WHERE r.node_id = ANY(%(swept)s) AND r.bucket = ANY(%(starts)s::timestamptz[])
                      AND r.computed_at <> now()""").format(target=sql.Identifier(target.table)), params)


Own = dict[tuple[int, int], tuple[float, ...]]  # (node, minute) -> a 1-minute row's _COLUMNS + generation_wh


def _join_minutes(ids_by_minutes: Mapping[frozenset[int], list[int]]) -> dict[int, frozenset[int]]:
    """Each id's minutes: the union of the sets of minutes it is listed under.

    A real-time pass names ~250,000 sensors, each in about six queue rows: a set built or
    joined per sensor and row cost the worker seconds of every minute of the fleet. Ids
    under one set share it (one C call); an id under several gets each distinct union once."""
    into: dict[int, frozenset[int]] = {}
    unions: dict[tuple[frozenset[int], frozenset[int]], frozenset[int]] = {}
    for minutes, ids in ids_by_minutes.items():
        earlier = {k: into[k] for k in into.keys() & ids}
        into.update(dict.fromkeys(ids, minutes))
        for k, have in earlier.items():
            if (joined := unions.get((have, minutes))) is None:
                joined = unions[(have, minutes)] = have | minutes
            into[k] = joined
    return into


def _node_minutes(spans: Iterable[Span], touched: Named, former: Named) -> Minutes:
    """Each node's minutes: a touched sensor's minutes within its spans there, and the swept
    (`former`) nodes' own. A span over all of a sensor's minutes (nearly every one) adds its
    set as it is; the bounds are found once per distinct set (sensors share them)."""
    node_minutes: Minutes = defaultdict(set)
    bounds: dict[int, tuple[float, float]] = {}  # by id(): the sets may be mutable, and `touched` holds them
    for sensor_id, node_id, start_s, end_s in spans:
        minutes = touched[sensor_id]
        if (lo_hi := bounds.get(id(minutes))) is None:
            lo_hi = bounds[id(minutes)] = (min(minutes, default=0) * 60.0, max(minutes, default=0) * 60.0)
        if start_s <= lo_hi[0] and lo_hi[1] < end_s:
            node_minutes[node_id] |= minutes
        else:
            node_minutes[node_id] |= {m for m in minutes if start_s <= m * 60.0 < end_s}
    for node_id, swept_minutes in former.items():
        node_minutes[node_id] |= swept_minutes
    return defaultdict(set, {n: m for n, m in node_minutes.items() if m})


def _spans(conn: psycopg.Connection[Any], by: str, ids: list[int]) -> list[Span]:
    """Assignment spans whose `by` column ("sensor_id" or "node_id") is one of `ids`."""
    if not ids:
        return []
    return [(int(s), int(n), float(f), float(t)) for s, n, f, t in fetch_tuples(conn, sql.SQL(
        """SELECT sensor_id, node_id, extract(epoch FROM valid_from)::float8, extract(epoch FROM valid_to)::float8
           FROM sensor_assignments WHERE {} = ANY(%s::bigint[]) ORDER BY sensor_id, valid_from""").format(
            sql.Identifier(by)), (id_array(ids),))]


def _node_defaults(sensor_col: npt.NDArray[np.float64], ts: npt.NDArray[np.float64],
                   sensor_spans: dict[int, list[Span]], params: dict[int, Any],
                   ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per reading, the conductor voltage and power factor of the node its sensor was on
    then (outside every span: the nearest one's, for the integration at its edges).
    `sensor_col` is sorted. A sensor on one node all along (nearly every one) takes a value
    per sensor, spread over its readings at once; only a moved sensor is looked up per reading."""
    bounds = np.flatnonzero(np.diff(sensor_col)) + 1
    firsts, ends = np.r_[0, bounds].astype(np.int64), np.r_[bounds, len(ts)].astype(np.int64)
    run_v, run_pf = np.empty(len(firsts)), np.empty(len(firsts))
    moved: list[tuple[int, int, list[Span]]] = []
    for k, (lo, hi) in enumerate(zip(firsts.tolist(), ends.tolist(), strict=True)):
        spans = sensor_spans[int(sensor_col[lo])]
        node = params[spans[0][1]]
        run_v[k], run_pf[k] = node.conductor_voltage_v, node.effective_power_factor
        if len(spans) > 1:
            moved.append((lo, hi, spans))
    volts, pf = np.repeat(run_v, ends - firsts), np.repeat(run_pf, ends - firsts)
    for lo, hi, spans in moved:
        starts = np.array([sp[2] for sp in spans])
        which = np.clip(np.searchsorted(starts, ts[lo:hi], side="right") - 1, 0, len(spans) - 1)
        node_v = np.array([params[sp[1]].conductor_voltage_v for sp in spans])
        node_pf = np.array([params[sp[1]].effective_power_factor for sp in spans])
        volts[lo:hi], pf[lo:hi] = node_v[which], node_pf[which]
    return volts, pf


def _with_ancestors(tree: Tree, idx: dict[int, int], nodes: set[int]) -> set[int]:
    out: set[int] = set()
    for node in nodes:
        j = idx.get(node, -1)
        while j >= 0 and int(tree.node_ids[j]) not in out:
            out.add(int(tree.node_ids[j]))
            j = int(tree.parent[j])
    return out


def _put_back(conn: psycopg.Connection[Any], touched: Named, former: Named, attempts: int,
              exc: BaseException) -> None:
    """Queue a site's failed work again after 2^attempts seconds (an hour at most), with why."""
    minutes = set().union(*touched.values(), *former.values())
    if not minutes:
        return
    conn.execute("""INSERT INTO rollup_dirty (ts_from, ts_to, sensor_ids, node_ids, not_before, attempts, last_error)
                    VALUES (to_timestamp(%s), to_timestamp(%s), %s, %s, now() + make_interval(secs => %s), %s, %s)""",
                 (min(minutes) * 60.0, (max(minutes) + 1) * 60.0, sorted(touched), sorted(former),
                  _retry_in_s(attempts), attempts, _error_text(exc)))


def _retry_in_s(attempts: int) -> float:
    """How long failed work waits before its next attempt: 2^attempts seconds, an hour at most."""
    return min(3600.0, 2.0 ** attempts)


def _error_text(exc: BaseException) -> str:
    """A failure's reason as kept beside the work it stopped: type and first line, bounded."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".replace("\x00", "")[:500]


def _spans_of_minutes(nodes: list[int], node_minutes: Minutes, lo: int, hi: int) -> dict[tuple[int, int], list[int]]:
    """The nodes grouped by the first and last of their minutes in [lo, hi], each group read
    over its own span: in real time a few sites re-compute the minute before too, and the
    rest need not read it. Past a few groups (a back-fill's ragged edges), one read over
    [lo, hi] costs less than many."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for n in nodes:
        inside = [m for m in node_minutes[n] if lo <= m <= hi]
        groups[(min(inside), max(inside))].append(n)
    return groups if len(groups) <= 4 else {(lo, hi): nodes}


def _windows(minutes: list[int]) -> list[tuple[int, int]]:
    """Contiguous-enough runs of minutes, at most a day long, to fetch readings in one go."""
    out: list[tuple[int, int]] = []
    for m in minutes:
        if out and m - out[-1][1] <= 30 and m - out[-1][0] < MAX_WINDOW_MIN:
            out[-1] = (out[-1][0], m)
        else:
            out.append((m, m))
    return out


def _delete_pairs(conn: psycopg.Connection[Any], pairs: Iterable[tuple[int, int]]) -> None:
    """Remove the 1-minute rows of these (node, minute) pairs: they have no data any more."""
    nodes, minutes = [], []
    for node, minute in pairs:
        nodes.append(node)
        minutes.append(minute * 60.0)
    if nodes:
        conn.execute("""DELETE FROM rollups_1m r USING unnest(%s::bigint[], %s::float8[]) x(node, bucket_s)
                        WHERE r.node_id = x.node AND r.bucket = to_timestamp(x.bucket_s)""", (nodes, minutes))


def _upsert(conn: psycopg.Connection[Any], resolution: Resolution, rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    conn.execute("""CREATE TEMP TABLE IF NOT EXISTS staging_rollups (
                        node_id bigint, bucket_s float8, energy_wh float8, mean_power_w float8, max_power_w float8,
                        mean_current_a float8, samples int, coverage float8, unmonitored_wh float8,
                        generation_wh float8, export_wh float8)
                    ON COMMIT DELETE ROWS""")
    with conn.cursor() as cur:
        with cur.copy("COPY staging_rollups FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)
        cur.execute(sql.SQL("""
            INSERT INTO {} (node_id, bucket, energy_wh, mean_power_w, max_power_w, mean_current_a,
                            samples, coverage, unmonitored_wh, generation_wh, export_wh)
            SELECT node_id, to_timestamp(bucket_s), energy_wh, mean_power_w, max_power_w, mean_current_a,
                   samples, LEAST(coverage, 1), unmonitored_wh, generation_wh, export_wh
            FROM staging_rollups
            ON CONFLICT (node_id, bucket) DO UPDATE SET
                energy_wh = EXCLUDED.energy_wh, mean_power_w = EXCLUDED.mean_power_w,
                max_power_w = EXCLUDED.max_power_w, mean_current_a = EXCLUDED.mean_current_a,
                samples = EXCLUDED.samples, coverage = EXCLUDED.coverage,
                unmonitored_wh = EXCLUDED.unmonitored_wh, generation_wh = EXCLUDED.generation_wh,
                export_wh = EXCLUDED.export_wh, computed_at = now()""").format(
            sql.Identifier(resolution.table)))
        cur.execute("TRUNCATE staging_rollups")


class RollupPass:
    """One pass of the rollup service: a queue slice, or, when the queue is empty, days the
    cost tier lacks (after a tariff change or a new deployment) at most every PRICING_PERIOD_S."""

    def __init__(self, settings: Settings) -> None:
        self.engine = RollupEngine(settings.reporting_interval_s * settings.gap_factor,
                                   horizon_s=settings.late_data_horizon_s,
                                   shards_per_pass=settings.rollup_shards_per_pass,
                                   coarse_delay_s=settings.rollup_coarse_delay_s if settings.rollup_defer_coarse
                                   else None)
        self.next_pricing = 0.0

    def __call__(self, conn: psycopg.Connection[Any]) -> bool:
        started = time.monotonic()
        # Both queues each pass, so that a fleet that always has minutes due still gets its
        # intervals; but few of them beside minutes, whose lag is the one users feel: an
        # interval's close makes every site's due at once (166 s of work for 667 sites).
        n = self.engine.process_dirty(conn)
        coarse = self.engine.process_coarse(conn, limit=COARSE_SITES_BUSY if n else COARSE_SITES_IDLE)
        if n or coarse:
            log.debug("rollups updated", dirty_rows=n, intervals=coarse, seconds=round(time.monotonic() - started, 3))
            return True  # more may be waiting
        if time.monotonic() >= self.next_pricing:
            if price_unpriced_days(conn):
                return True
            self.next_pricing = time.monotonic() + PRICING_PERIOD_S
        return False


def rollup_service(settings: Settings) -> LoopService:
    """The rollup worker as a long-running service (in the gateway process, or `wattline rollups`)."""
    return LoopService("rollups", settings.require_database_url(), RollupPass(settings), settings.rollup_period_s)
