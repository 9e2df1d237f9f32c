"""`python -m bench packing`: the packed codec for raw readings (#20's first part).

Bytes per reading before (the `readings` hypertable: heap, indexes, TOAST) and after (one
row per sensor and day in a table with its primary key), both in a real PostgreSQL +
TimescaleDB of this run, for the simulator's realistic profile (currents to the mA, on the
10-second grid) and a noisy worst case (µs jitter, full-precision random currents, RSSI);
then packing and unpacking rates on 5 M readings. The ratio is the one to quote."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg

from bench.common import Row, services
from wattline.packing import Readings, pack, prepare, unpack

SENSORS = 50
PER_DAY = 8640
START_US = 1_796_000_000_000_000
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
                       ) -> tuple[float, float]:
    rng = np.random.default_rng(11)
    days = [make(rng, s) for s in range(SENSORS)]
    copy = "COPY readings (sensor_id, ts, current_a, rssi_dbw, bridge_id) FROM STDIN"
    with conn.cursor() as cur, cur.copy(copy) as cp:
        for sensor, r in enumerate(days):
            for us, a, rssi in zip(r.ts_us.tolist(), r.current_a.tolist(), r.rssi_dbw.tolist(), strict=True):
                cp.write_row((sensor, EPOCH + timedelta(microseconds=us), a, None if rssi != rssi else rssi, 1))
    conn.execute("VACUUM ANALYZE readings")
    stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    before = conn.execute("SELECT hypertable_size('readings')").fetchone()[0] / stored
    conn.execute("""CREATE TABLE packed_bench (sensor_id bigint, day date, data bytea NOT NULL,
                    PRIMARY KEY (sensor_id, day))""")
    conn.execute("ALTER TABLE packed_bench ALTER COLUMN data SET STORAGE EXTERNAL")  # our bytes, not pglz's
    with conn.cursor() as cur, cur.copy("COPY packed_bench (sensor_id, day, data) FROM STDIN") as cp:
        for sensor, r in enumerate(days):
            cp.write_row((sensor, "2026-11-30", pack(r)))
    conn.execute("VACUUM ANALYZE packed_bench")
    after = conn.execute("SELECT pg_total_relation_size('packed_bench')").fetchone()[0] / stored
    conn.execute("DROP TABLE packed_bench")
    conn.execute("TRUNCATE readings")
    return float(before), float(after)


def run() -> list[Row]:
    rows: list[Row] = []
    with services(durable=False) as stack, psycopg.connect(stack.database_url, autocommit=True) as conn:
        for label, make in (("realistic", realistic), ("noisy worst case", noisy)):
            before, after = _bytes_per_reading(conn, make)
            note = f"{SENSORS} sensors × a day at 10 s"
            rows += [Row("packing", f"bytes/reading in readings, {label}", before, "B", note),
                     Row("packing", f"bytes/reading packed, {label}", after, "B", "heap, index and TOAST counted"),
                     Row("packing", f"smaller, {label}", before / after, "×", "same run")]
    rng = np.random.default_rng(3)
    n = 5_000_000
    big = prepare(np.arange(n, dtype=np.int64) * 10_000_000,
                  np.round(12 + rng.normal(0, 0.05, n), 3).astype(np.float32))
    pack(Readings(big.ts_us[:10], *(getattr(big, c)[:10] for c in ("current_a", "voltage_v", "power_factor",
                                                                      "rssi_dbw"))))  # compile first
    pack_s = min(_timed(lambda: pack(big)) for _ in range(3))
    packed = pack(big)
    unpack_s = min(_timed(lambda: unpack(packed)) for _ in range(3))
    rows += [Row("packing", "pack, one core, 5 M readings", n / pack_s, "readings/s", "target ≥ 5 M"),
             Row("packing", "unpack, one core, 5 M readings", n / unpack_s, "readings/s", "target ≥ 20 M")]
    return rows


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
