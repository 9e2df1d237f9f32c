"""`python -m bench readingsindex`: what the time index `create_hypertable` adds by default
costs each stored reading (why `sql/041` drops it from `readings`).

Two hypertables shaped as `readings`, both with the (sensor_id, ts) unique index, one also
with the default (ts DESC) index. The fleet's sweeps (1,000,500 sensors, each bridge at its
own offset within the 10 s, in arrival order) go into each by binary COPY in
gateway-sized batches, the two tables alternating sweep by sweep; PostgreSQL's CPU is
summed per table.
"""

from __future__ import annotations

import os
import time

import numpy as np
import psycopg

from bench.common import Row, cpu_s, postgres_processes, readings_like, services
from ingest.copy import COLUMNS, encode_readings

SENSORS = int(os.environ.get("WATTLINE_BENCH_INDEX_SENSORS", "1000500"))
SWEEPS, BATCH = 18, 5000


def run() -> list[Row]:
    with services() as stack, psycopg.connect(stack.database_url, autocommit=True) as conn:
        for table in ("with_time_index", "without_time_index"):
            readings_like(conn, table, "1 day")
        conn.execute("CREATE INDEX ON with_time_index (ts DESC)")  # create_hypertable's default index
        ids = np.arange(1, SENSORS + 1, dtype=np.int64)
        bridge = ids // 30
        offset = (bridge % 1000) / 100.0
        nan = np.full(SENSORS, np.nan, dtype=np.float32)
        rng = np.random.default_rng(1)
        start = time.time() // 86400 * 86400 + 3600
        cpu = {"with_time_index": 0.0, "without_time_index": 0.0}
        for sweep in range(SWEEPS):
            ts = start + sweep * 10.0 + offset
            order = np.argsort(ts, kind="stable")  # as they arrive: by time across the fleet
            amps = rng.uniform(1, 60, SENSORS).round(3).astype(np.float32)
            for table in sorted(cpu, reverse=bool(sweep % 2)):
                before = cpu_s(postgres_processes(stack))
                with conn.cursor() as cur:
                    for lo in range(0, SENSORS, BATCH):
                        pick = order[lo:lo + BATCH]
                        data = encode_readings(ids[pick], ts[pick], amps[pick], nan[pick], nan[pick], nan[pick],
                                               nan[pick], bridge[pick])
                        with cur.copy(f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
                            copy.write(data)
                cpu[table] += cpu_s(postgres_processes(stack)) - before
    rows = SWEEPS * SENSORS
    with_index, without = (1e6 * cpu[t] / rows for t in ("with_time_index", "without_time_index"))
    note = f"{SWEEPS} sweeps of {SENSORS:,} sensors into each, by COPY in batches of {BATCH:,}, alternated"
    return [
        Row("readings index", "PostgreSQL CPU a stored reading, with the time index", with_index, "µs", note),
        Row("readings index", "the same, (sensor_id, ts) only, as `readings` now", without, "µs",
            f"{without / with_index:.2f}× in the same run"),
    ]
