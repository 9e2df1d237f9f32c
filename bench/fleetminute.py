"""`python -m bench fleetminute`: what one minute of a 100,000 readings/s fleet costs the
rollup workers (#21), at the fleet's real shape.

100,000 readings/s at one reading per sensor every 10 s is 1,000,000 sensors: 667 sites of
500 circuits on three-phase boards (1,500 sensors a site, every one assigned, on bridges of
30). One site is built through the catalogue's own writes; the rest are its copies made in
SQL (`bench.seed.clone_site`), since a million assignments one write at a time would take
hours. Three minutes of readings go in by binary COPY, each bridge's sweep at its own
offset within the 10 s, and the middle minute is queued as the gateway queues a real-time
minute (one row per shard of sites; `WATTLINE_ROLLUP_QUEUE_SHARDS`). Then 1, and then 2,
`wattline rollups` workers drain it: the time from the minute being due to its 1-minute
rollups committed (the lag's part), and the CPU the workers and PostgreSQL spent. The
workers leave the coarser tiers and the price to the close of the minute's 15-minute
interval (`WATTLINE_ROLLUP_COARSE_DELAY_S`); that work is then made due and drained on its
own, once for every site, and is a fifteenth of the fleet's work per minute. Before the
workers, a pass's read of its raw readings is timed two ways, alternated on the same data:
out to the integration gap either side of the minute, and near first (what the worker does).

In real time a minute is due `rollup_settle_s` (15 s) after it closes, so the lag of that
minute is the settle plus its drain; the workers keep up while a minute's drain plus a
fifteenth of an interval's stays under 60 s. The live 10-minute run at 100,000 readings/s
needs the gateway and the publisher beside the workers, more cores than this machine has:
this measures the workers' part.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import psutil
import psycopg

from analytics.worker import RollupEngine
from bench.common import Row, Stack, cpu_s, postgres_processes, services
from bench.ingest import gateway_env, wait_healthy
from bench.rolluploop import PER_BRIDGE, fleet_site
from bench.seed import clone_site
from ingest.copy import COLUMNS, encode_readings
from wattline import raw_readings
from wattline.settings import Settings
from wattline.site_builder import build_site, build_tenant

SITES = int(os.environ.get("WATTLINE_BENCH_FLEET_SITES", "667"))
MINUTES = 3  # the queued minute and one either side: a pass reads the integration gap around it
WORKERS = [int(w) for w in os.environ.get("WATTLINE_BENCH_FLEET_WORKERS", "1,2").split(",")]


def seed(stack: Stack) -> tuple[int, int]:
    """SITES sites of 1,500 sensors; returns (sensors, bridges)."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        _, customer = build_tenant(conn, "bench", "bench")
        spec, _ = fleet_site(0)
        built = build_site(conn, customer, spec)
        clone_site(conn, built.site_id, SITES - 1)
        row = conn.execute("SELECT (SELECT count(*) FROM sensor_assignments), (SELECT count(*) FROM bridges)"
                           ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def load_readings(stack: Stack, minute: int) -> int:
    """Six sweeps a minute of every sensor over [minute - 1, minute + 2), each bridge at its
    own offset within the 10 s; returns how many readings."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT s.id, s.bridge_id FROM sensors s ORDER BY s.bridge_id, s.id").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        bridge = np.array([r[1] for r in rows], dtype=np.int64)
        offset = (bridge % 1000) / 100.0  # 0.00 .. 9.99 s: the bridges spread over the 10 s
        rng = np.random.default_rng(21)
        nan = np.full(len(ids), np.nan, dtype=np.float32)
        total = 0
        with conn.cursor() as cur:
            for sweep in range(6 * MINUTES):
                ts = (minute - 1) * 60.0 + sweep * 10.0 + offset
                amps = rng.uniform(1, 60, len(ids)).round(3).astype(np.float32)
                data = encode_readings(ids, ts, amps, nan, nan, nan, nan, bridge)
                with cur.copy(f"COPY readings ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.write(data)
                total += len(ids)
        conn.execute("ANALYZE readings")
    return total


def queue_minute(conn: psycopg.Connection[Any], minute: int, shards: int) -> None:
    """The minute's work as the gateway queues it, one row per shard of sites, due now: stored
    while the minute ran (before it was due), as real-time readings are, and each sensor's
    first reading of the minute before the minute before was read (`left_pad` false: the
    gateway's word when a bridge's first sweep of a minute lands within the settle)."""
    conn.execute("""INSERT INTO rollup_dirty (ts_from, ts_to, sensor_ids, queued_at, not_before, shard, left_pad)
                    SELECT to_timestamp(%(m)s), to_timestamp(%(m)s) + interval '1 minute',
                           array_agg(s.id ORDER BY s.id), now() - interval '2 s', now(), b.site_id %% %(shards)s,
                           false
                    FROM sensors s JOIN bridges b ON b.id = s.bridge_id GROUP BY b.site_id %% %(shards)s""",
                 {"m": minute * 60.0, "shards": shards})


def start_workers(stack: Stack, count: int) -> list[tuple[subprocess.Popen[bytes], int]]:
    from launcher.localstack import free_port

    out = []
    for n in range(count):
        port = free_port()
        env = {**gateway_env(stack, free_port(), 90 + n), "WATTLINE_ROLLUPS_HEALTH_PORT": str(port),
               "WATTLINE_ROLLUP_COARSE_DELAY_S": "3600"}  # held back, then made due and measured apart
        out.append((subprocess.Popen([sys.executable, "-m", "launcher.cli", "rollups"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=(stack.root / f"rollups{n}.log").open("ab")),
                    port))
    for _, port in out:
        wait_healthy(port)
    return out


Cost = tuple[float, float, float]  # wall s, worker CPU s, database CPU s

READ_ROUNDS = 5


def gap_and_near(settings: Settings) -> tuple[float, float]:
    """The integration gap and how near a pass reads first, as the worker has them."""
    gap = settings.reporting_interval_s * settings.gap_factor
    return gap, RollupEngine(gap).near_s


def pass_sensors(conn: psycopg.Connection[Any], shards: int, per_pass: int) -> list[int]:
    """The sensors of a pass's first `per_pass` shards of `shards` (sites by id modulo), by id."""
    return [r[0] for r in conn.execute(
        """SELECT s.id FROM sensors s JOIN bridges b ON b.id = s.bridge_id
           WHERE b.site_id %% %s < %s ORDER BY s.id""", (shards, per_pass))]


def read_both_ways(stack: Stack, minute: int, shards: int) -> list[Row]:
    """A pass's read of its raw readings (the first `rollup_shards_per_pass` shards of the
    minute), the two ways, alternated on the same data: the whole integration gap either
    side of the minute, and near first (`raw_readings.read_for_integration`, what the worker
    does); each as the median of READ_ROUNDS after one of each to warm the cache."""
    settings = Settings()
    gap, near = gap_and_near(settings)
    t0, t1 = minute * 60.0, (minute + 1) * 60.0
    costs: dict[str, list[Cost]] = {"whole gap": [], "near first": []}
    counts: dict[str, int] = {}
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        sensors = pass_sensors(conn, shards, settings.rollup_shards_per_pass)
        for round_ in range(READ_ROUNDS + 1):
            for way, near_s in (("whole gap", gap), ("near first", near)):
                db, cpu, wall = cpu_s(postgres_processes(stack)), time.process_time(), time.monotonic()
                raw = raw_readings.read_for_integration(conn, sensors, t0, t1, gap, near_s)
                cost = (time.monotonic() - wall, time.process_time() - cpu, cpu_s(postgres_processes(stack)) - db)
                counts[way] = len(raw)
                if round_:
                    costs[way].append(cost)
    whole, first = ([statistics.median(c[k] for c in costs[way]) for k in range(3)] for way in costs)
    note = f"{len(sensors):,} sensors, gap {gap:.0f} s, near {near:.0f} s; median of {READ_ROUNDS}, alternated"
    return [
        Row("fleet minute", "a pass's raw read, whole gap: readings / wall", counts["whole gap"], "readings",
            f"{whole[0]:.2f} s wall; worker / PostgreSQL CPU {whole[1]:.2f} / {whole[2]:.2f} s; {note}"),
        Row("fleet minute", "the same read, near first: readings / wall", counts["near first"], "readings",
            f"{first[0]:.2f} s wall; worker / PostgreSQL CPU {first[1]:.2f} / {first[2]:.2f} s"),
        Row("fleet minute", "near first / whole gap: wall, in the same run", first[0] / whole[0], "×",
            f"CPU: worker {first[1] / whole[1]:.2f}×, PostgreSQL {first[2] / whole[2]:.2f}×"),
    ]


def _measured(stack: Stack, procs: list[psutil.Process], start_work: Callable[[], object],
              done: Callable[[], bool]) -> Cost:
    cpu_w, cpu_db = cpu_s(procs), cpu_s(postgres_processes(stack))
    start = time.monotonic()
    start_work()
    while not done():
        time.sleep(0.5)
        if time.monotonic() - start > 1800:
            raise TimeoutError("the work did not drain in 30 minutes")
    return time.monotonic() - start, cpu_s(procs) - cpu_w, cpu_s(postgres_processes(stack)) - cpu_db


def drain(stack: Stack, minute: int, workers: int, shards: int) -> tuple[Cost, Cost]:
    """Queue the minute, let `workers` drain it, then make its intervals due and let them drain
    those; returns the cost of each."""
    procs = start_workers(stack, workers)
    try:
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM rollups_1m WHERE bucket >= to_timestamp(%s) AND bucket < to_timestamp(%s)",
                         ((minute - 1) * 60.0, (minute + 2) * 60.0))
            conn.execute("DELETE FROM rollup_coarse")
            mine = [psutil.Process(p.pid) for p, _ in procs]
            roots = conn.execute("SELECT count(*) FROM sites").fetchone()
            assert roots is not None

            def minute_done() -> bool:
                done = conn.execute("""SELECT count(*) FROM rollups_1m r JOIN nodes n ON n.id = r.node_id
                                       WHERE n.kind = 'site' AND r.bucket = to_timestamp(%s)""",
                                    (minute * 60.0,)).fetchone()
                left = conn.execute("SELECT count(*) FROM rollup_dirty").fetchone()
                return bool(done and left and done[0] >= roots[0] and left[0] == 0)

            def coarse_done() -> bool:
                left = conn.execute("SELECT count(*) FROM rollup_coarse").fetchone()
                return bool(left and left[0] == 0)

            one_minute = _measured(stack, mine, lambda: queue_minute(conn, minute, shards), minute_done)
            intervals = _measured(stack, mine, lambda: conn.execute("UPDATE rollup_coarse SET not_before = now()"),
                                  coarse_done)
            return one_minute, intervals
    finally:
        for p, _ in procs:
            p.terminate()
        for p, _ in procs:
            try:
                p.wait(300)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def run() -> list[Row]:
    shards = Settings().rollup_queue_shards
    rows: list[Row] = []
    with services() as stack:
        t0 = time.monotonic()
        sensors, bridges = seed(stack)
        seeded = time.monotonic() - t0
        minute = int(time.time() // 60) - 5
        t0 = time.monotonic()
        readings = load_readings(stack, minute)
        loaded = time.monotonic() - t0
        shape = (f"{SITES} sites × 500 three-phase circuits: {sensors:,} sensors assigned, {bridges:,} bridges of "
                 f"{PER_BRIDGE}; {readings // MINUTES:,} readings a minute = {readings / MINUTES / 60:,.0f}/s")
        rows.append(Row("fleet minute", "catalogue seeded (one site built, the rest copied in SQL)", seeded, "s",
                        shape))
        rows.append(Row("fleet minute", "readings loaded by COPY", readings / loaded, "readings/s",
                        f"{readings:,} over {MINUTES} minutes"))
        rows += read_both_ways(stack, minute, shards)
        for workers in WORKERS:
            (wall, cpu_w, cpu_db), (i_wall, i_w, i_db) = drain(stack, minute, workers, shards)
            label = f"{workers} worker{'s' if workers > 1 else ''}"
            per_minute = wall + i_wall / 15
            rows += [
                Row("fleet minute", f"{label}: one real-time minute due → its 1-minute rollups committed", wall, "s",
                    f"the lag ≈ 15 s settle + this; worker / PostgreSQL CPU {cpu_w:.1f} / {cpu_db:.1f} s"),
                Row("fleet minute", f"{label}: its 15-minute interval's coarser tiers and price, every site", i_wall,
                    "s", f"once in 15 minutes; worker / PostgreSQL CPU {i_w:.1f} / {i_db:.1f} s"),
                Row("fleet minute", f"{label}: wall time a minute of the fleet takes", per_minute, "s",
                    f"the minute + a fifteenth of the interval: keeps up while < 60 s ({per_minute / 60:.2f} of one)"),
                Row("fleet minute", f"{label}: cores a minute of the fleet takes, worker + PostgreSQL",
                    (cpu_w + i_w / 15 + cpu_db + i_db / 15) / 60, "cores",
                    f"{(cpu_w + i_w / 15) / 60:.2f} + {(cpu_db + i_db / 15) / 60:.2f} to keep up in real time"),
            ]
    return rows
