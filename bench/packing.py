"""`python -m bench packing`: the packed codec for raw readings (#20's first part).

Bytes per reading before (the `readings` hypertable: heap, indexes, TOAST) and after (one
row per sensor and day in a table with its primary key), both in a real PostgreSQL +
TimescaleDB of this run, for the simulator's realistic profile (currents to the mA, on the
10-second grid) and a noisy worst case (µs jitter, full-precision random currents, RSSI);
then packing and unpacking rates on 5 M readings. The ratio is the one to quote."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg

from bench.common import Row, median, percentile, services
from wattline.packed_tier import pack_due
from wattline.packing import Readings, pack, prepare, unpack
from wattline.raw_readings import read

SENSORS = 50
PER_DAY = 8640
START_US = 1_795_996_800_000_000  # a UTC midnight: a sensor's day is one packed row
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def realistic(rng: np.random.Generator, sensor: int) -> Readings:
    ts = START_US + np.arange(PER_DAY, dtype=np.int64) * 10_000_000
    load = 5 + sensor % 20 + 3 * np.sin(np.arange(PER_DAY) / (300 + sensor)) + rng.normal(0, 0.05, PER_DAY)
    return prepare(ts, np.round(np.maximum(load, 0), 3).astype(np.float32))


def noisy(rng: np.random.Generator, sensor: int) -> Readings:
    ts = START_US + np.arange(PER_DAY, dtype=np.int64) * 10_000_000 + rng.integers(-400_000, 400_000, PER_DAY)
    return prepare(ts, rng.uniform(0, 100, PER_DAY).astype(np.float32),
                   rssi_dbw=np.round(rng.normal(-70, 6, PER_DAY), 1).astype(np.float32))


def _bytes_per_reading(conn: psycopg.Connection[Any], make: Callable[[np.random.Generator, int], Readings]
                       ) -> tuple[float, float, float]:
    """Before: `readings` (heap, index, TOAST). After the real packing job: `readings_packed`,
    counted the same way. Returns (before, after, the job's readings/s)."""
    rng = np.random.default_rng(11)
    days = [(make(rng, s), make(rng, s)) for s in range(SENSORS)]  # two days a sensor
    conn.execute("INSERT INTO sensors (id, serial, bridge_id) SELECT g, 'S' || g, 1 FROM generate_series(0, %s) g "
                 "ON CONFLICT DO NOTHING", (SENSORS - 1,))
    copy = "COPY readings (sensor_id, ts, current_a, rssi_dbw, bridge_id) FROM STDIN"
    with conn.cursor() as cur, cur.copy(copy) as cp:
        for sensor, pair in enumerate(days):
            for k, r in enumerate(pair):
                shift = k * PER_DAY * 10_000_000
                for us, a, rssi in zip(r.ts_us.tolist(), r.current_a.tolist(), r.rssi_dbw.tolist(), strict=True):
                    cp.write_row((sensor, EPOCH + timedelta(microseconds=us + shift), a,
                                  None if rssi != rssi else rssi, 1))
    conn.execute("VACUUM ANALYZE readings")
    stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    before = conn.execute("SELECT hypertable_size('readings')").fetchone()[0] / stored
    report = pack_due(conn, timedelta(0), now=datetime(2100, 1, 1, tzinfo=UTC))
    assert report.readings == stored and conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 0
    conn.execute("VACUUM ANALYZE readings_packed")
    after = conn.execute("SELECT hypertable_size('readings_packed')").fetchone()[0] / stored
    conn.execute("TRUNCATE readings_packed, packed_days")
    return float(before), float(after), stored / report.seconds


def _month_reads(conn: psycopg.Connection[Any], sensors: int = 20, days: int = 31) -> list[Row]:
    """A sensor's month, from the packed tier and (the same readings) from `readings`."""
    end = datetime(2026, 11, 1, tzinfo=UTC)
    conn.execute("""INSERT INTO sensors (id, serial, bridge_id) SELECT g, 'S' || g, 1 FROM generate_series(0, %s) g
                    ON CONFLICT DO NOTHING""", (sensors - 1,))
    conn.execute("""INSERT INTO readings (sensor_id, ts, current_a, bridge_id)
                    SELECT s, %(end)s - k * interval '10 seconds',
                           round((8 + s %% 5 + 3 * sin(k / 400.0) + random() / 20)::numeric, 3), 1
                    FROM generate_series(0, %(sensors)s - 1) s, generate_series(1, %(n)s) k""",
                 {"end": end, "sensors": sensors, "n": days * PER_DAY})
    conn.execute("VACUUM ANALYZE readings")
    lo, hi = end - timedelta(days=30), end

    def p95(n: int = 30) -> float:
        times = []
        for k in range(n):
            started = time.perf_counter()
            raw = read(conn, [k % sensors], lo, hi)
            times.append(time.perf_counter() - started)
            assert len(raw) == 30 * PER_DAY
        return percentile(times, 95) * 1000

    hot = p95(10)
    pack_due(conn, timedelta(hours=48), now=end + timedelta(days=3))
    packed = p95()
    conn.execute("TRUNCATE readings, readings_packed, packed_days")
    note = f"{30 * PER_DAY:,} readings"
    return [Row("packing", "a sensor's month from readings: p95", hot, "ms", note),
            Row("packing", "a sensor's month from the packed tier: p95", packed, "ms", f"{note}; target ≤ 50 ms"),
            Row("packing", "month read, packed against readings", hot / packed, "× faster", "same run")]


def run() -> list[Row]:
    rows: list[Row] = []
    with services(durable=False) as stack, psycopg.connect(stack.database_url, autocommit=True) as conn:
        tenant = conn.execute("INSERT INTO resellers (name) VALUES ('b') RETURNING id").fetchone()[0]
        customer = conn.execute("INSERT INTO customers (reseller_id, name) VALUES (%s, 'b') RETURNING id",
                                (tenant,)).fetchone()[0]
        site = conn.execute("INSERT INTO sites (customer_id, name) VALUES (%s, 'b') RETURNING id",
                            (customer,)).fetchone()[0]
        conn.execute("INSERT INTO bridges (id, serial, site_id) VALUES (1, 'B1', %s)", (site,))
        for label, make in (("realistic", realistic), ("noisy worst case", noisy)):
            before, after, rate = _bytes_per_reading(conn, make)
            note = f"{SENSORS} sensors × 2 days at 10 s"
            rows += [Row("packing", f"bytes/reading in readings, {label}", before, "B", note),
                     Row("packing", f"bytes/reading packed, {label}", after, "B",
                         "heap, index and TOAST counted; target ≤ 4 (realistic)"),
                     Row("packing", f"smaller, {label}", before / after, "×", "same run"),
                     Row("packing", f"the packing job, {label}", rate, "readings/s",
                         "read the day, pack, insert, drop the chunk; at full speed")]
        rows += _month_reads(conn)
    rng = np.random.default_rng(3)
    n = 5_000_000
    big = prepare(np.arange(n, dtype=np.int64) * 10_000_000,
                  np.round(12 + rng.normal(0, 0.05, n), 3).astype(np.float32))
    pack(Readings(big.ts_us[:10], *(getattr(big, c)[:10] for c in ("current_a", "voltage_v", "power_factor",
                                                                      "rssi_dbw", "power_w"))))  # compile first
    pack_s = min(_timed(lambda: pack(big)) for _ in range(3))
    packed = pack(big)
    unpack_s = min(_timed(lambda: unpack(packed)) for _ in range(3))
    rows += [Row("packing", "pack, one core, 5 M readings", n / pack_s, "readings/s", "target ≥ 5 M"),
             Row("packing", "unpack, one core, 5 M readings", n / unpack_s, "readings/s", "target ≥ 20 M")]
    rows += _ingest_beside_packing()
    return rows


def _ingest_beside_packing(rounds: int = 3) -> list[Row]:
    """The gateway draining 1 M readings (packs of 50, `bench ingest`'s shape) beside two old
    days of 600 sensors (5.2 M readings) in `readings`: first alone, then while `wattline
    packing` packs those days. Each drain starts from a checkpoint, so that loading the old
    days (or the last drain) does not checkpoint into the next measurement."""
    import subprocess
    import sys

    from bench.ingest import SENSORS as FLEET
    from bench.ingest import T0, empty, gateway_throughput, packs, seed
    from launcher.localstack import free_port

    per_pack, ticks = 50, 10
    rows: list[Row] = []
    alone, beside, overlap = [], [], []
    with services() as stack:
        seed(stack, per_pack)
        items = packs(ticks, T0, per_pack)
        port = free_port()
        env = {**os.environ, "WATTLINE_DATABASE_URL": stack.database_url}
        for _ in range(rounds):
            with psycopg.connect(stack.database_url, autocommit=True) as conn:
                old = datetime.fromtimestamp(T0, UTC).replace(hour=0, minute=0, second=0) - timedelta(days=4)
                conn.execute("""INSERT INTO readings (sensor_id, ts, current_a, bridge_id)
                                SELECT s, %s + k * interval '20 seconds', round((5 + random())::numeric, 3),
                                       (s - 1) / 50 + 1
                                FROM generate_series(1, 600) s, generate_series(0, 8640 - 1) k""", (old,))
                conn.execute("VACUUM ANALYZE readings")
                conn.execute("CHECKPOINT")
            alone.append(gateway_throughput(stack, items, FLEET * ticks, port, since=T0)[0])
            with psycopg.connect(stack.database_url, autocommit=True) as conn:
                conn.execute("DELETE FROM readings WHERE ts >= to_timestamp(%s)", (T0,))
                conn.execute("TRUNCATE rollup_dirty")
                conn.execute("VACUUM readings")
                conn.execute("CHECKPOINT")
            job = subprocess.Popen([sys.executable, "-m", "launcher.cli", "packing", "--once"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=(stack.root / "packing.log").open("ab"))
            ended: list[float] = []

            def wait_job(j: subprocess.Popen[bytes] = job, out: list[float] = ended) -> None:
                j.wait(600)
                out.append(time.perf_counter())

            waiter = threading.Thread(target=wait_job)
            waiter.start()
            time.sleep(2.0)  # past its start-up, into the packing
            started = time.perf_counter()
            beside.append(gateway_throughput(stack, items, FLEET * ticks, port, since=T0)[0])
            drained = time.perf_counter()
            waiter.join()
            overlap.append(min(1.0, (min(ended[0], drained) - started) / (drained - started)))
            empty(stack)
            with psycopg.connect(stack.database_url, autocommit=True) as conn:
                conn.execute("TRUNCATE readings, readings_packed, packed_days")
                conn.execute("CHECKPOINT")
    a, b = median(alone), median(beside)
    rows += [Row("packing", "ingest alone (packs of 50)", a, "readings/s", f"median of {rounds}"),
             Row("packing", "ingest while the packing job runs", b, "readings/s",
                 f"job busy through {min(overlap):.0%} of the drain at least"),
             Row("packing", "ingest beside packing / alone", 100 * b / a, "%", "same stack; target ≥ 90 %")]
    return rows


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
