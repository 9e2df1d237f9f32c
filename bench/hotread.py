"""`python -m bench hotread`: a rollup pass's read of the hot tier three ways: its ids as a
constant with the planner left to choose, the same with sequential scans off
(`raw_readings.index_scans_only`), and its ids as a parameter as well (`raw_readings.hot_select`:
what `read` does).

The fleet of `bench fleetminute` (667 sites, 1,000,500 sensors, 100,000 readings/s),
`readings` chunks sized for it as `wattline up` sizes them, three minutes of readings
inside one chunk, analysed as autovacuum analyses a growing chunk. The read is the first
one a pass makes: its sensors (`rollup_shards_per_pass` shards of the fleet) over the minute
and `near_s` either side. The ways take turns on the same data; each figure is the median
of ROUNDS after one of each to warm the cache.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from bench.common import Row, Stack, cpu_s, postgres_processes, readings_like, services
from bench.fleetminute import gap_and_near, load_readings, pass_sensors, seed
from wattline.db import copy_out_arrays, id_array
from wattline.raw_readings import ROW, SELECT_ROW, binary_copy, hot_select, index_scans_only
from wattline.readings_chunks import describe_sizing, size_chunks
from wattline.settings import Settings

ROUNDS = 5
Conn = psycopg.Connection[Any]
Query = Callable[[list[int], int, int], sql.Composable]


def with_constant_ids(sensor_ids: list[int], lo: int, hi: int) -> sql.Composable:
    """The read as `hot_select` spelled it before: the ids as a constant, which the planner sizes."""
    return sql.SQL("{} WHERE sensor_id = ANY({}::bigint[]) AND ts >= {} AND ts < {}").format(
        sql.SQL(SELECT_ROW), sql.Literal(id_array(sensor_ids)),
        *(sql.Literal(datetime.fromtimestamp(t / 1e6, UTC)) for t in (lo, hi)))


#: The ways compared: the statement, and what is set around it.
WAYS: dict[str, tuple[Query, Callable[[Conn], AbstractContextManager[Any]]]] = {
    "ids as a constant, planner's choice": (with_constant_ids, lambda conn: nullcontext()),
    "ids as a constant, sequential scans off": (with_constant_ids, index_scans_only),
    "ids as a parameter, sequential scans off (as `read` does)": (hot_select, index_scans_only),
}


def chunk_minute(width_s: float) -> int:
    """A minute half an hour ago whose neighbours lie in the same chunk as it."""
    minute = int(time.time() // 60) - 30
    per_chunk = max(1, round(width_s / 60))
    while per_chunk >= 3 and (minute - 1) % per_chunk > per_chunk - 3:
        minute -= 1
    return minute


def run() -> list[Row]:
    settings = Settings()
    with services() as stack:
        seed(stack)
        sizing = size_chunks(stack.database_url, settings)
        minute = chunk_minute(sizing.width.total_seconds())
        loaded = load_readings(stack, minute)
        return measure(stack, settings, minute, loaded, describe_sizing(sizing)) + planning(stack, settings,
                                                                                          sizing.width)


def measure(stack: Stack, settings: Settings, minute: int, loaded: int, sizing: str) -> list[Row]:
    _, near = gap_and_near(settings)
    lo, hi = int((minute * 60 - near) * 1e6), int(((minute + 1) * 60 + near) * 1e6)
    costs: dict[str, list[tuple[float, float]]] = {way: [] for way in WAYS}
    counts: dict[str, int] = {}
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        sensors = pass_sensors(conn, settings.rollup_queue_shards, settings.rollup_shards_per_pass)
        for round_ in range(ROUNDS + 1):
            for way in (list(WAYS) if round_ % 2 else list(WAYS)[::-1]):
                db, wall = cpu_s(postgres_processes(stack)), time.monotonic()
                query, setting = WAYS[way]
                with setting(conn):
                    rows = sum(len(a) for a in copy_out_arrays(conn, binary_copy(query(sensors, lo, hi)), ROW,
                                                                rows=1 << 20))
                cost = (time.monotonic() - wall, cpu_s(postgres_processes(stack)) - db)
                counts[way] = rows
                if round_:
                    costs[way].append(cost)
        plans: dict[str, list[float]] = {"constant": [], "parameter": []}
        for _ in range(ROUNDS):
            for form, select in (("constant", with_constant_ids), ("parameter", hot_select)):
                explain = sql.SQL("EXPLAIN (SUMMARY, FORMAT JSON) {}").format(select(sensors, lo, hi))
                plan = conn.execute(explain).fetchone()
                if plan:
                    plans[form].append(float(plan[0][0]["Planning Time"]))
    assert len(set(counts.values())) == 1, counts  # every way reads the same rows
    chosen, pinned, sent = ([statistics.median(c[k] for c in costs[way]) for k in range(2)] for way in WAYS)
    note = (f"{len(sensors):,} sensors over {60 + 2 * near:.0f} s of {loaded:,} readings; chunks {sizing}; "
            f"median of {ROUNDS}, the ways in turn; CPU includes planning")
    return [
        Row("hot read", "a pass's hot read, ids as a constant, planner's choice: PostgreSQL CPU", chosen[1], "s",
            f"{chosen[0]:.2f} s wall; {rows:,} readings; {note}"),
        Row("hot read", "the same, sequential scans off: PostgreSQL CPU", pinned[1], "s", f"{pinned[0]:.2f} s wall"),
        Row("hot read", "the same, ids as a parameter too (as `read` does): PostgreSQL CPU", sent[1], "s",
            f"{sent[0]:.2f} s wall"),
        Row("hot read", "sequential scans off / planner's choice, in the same run", pinned[1] / chosen[1], "×",
            f"wall {pinned[0] / chosen[0]:.2f}×"),
        Row("hot read", "ids as a parameter / as a constant, both with scans off, in the same run",
            sent[1] / pinned[1], "×", f"wall {sent[0] / pinned[0]:.2f}×"),
        Row("hot read", "planning the read, ids as a constant / as a parameter", statistics.median(plans["constant"]),
            "ms", f"{statistics.median(plans['parameter']):.2f} ms as a parameter; median of {ROUNDS}"),
    ]


def planning(stack: Stack, settings: Settings, width: timedelta) -> list[Row]:
    """The planner's time for a pass-sized read (250,500 literal ids, 90 s) when the table holds
    as many chunks of `width` as the hot tier keeps (the late window and the day being
    written), against the same rows in day chunks: two tables shaped as `readings`."""
    chunks = int((timedelta(hours=settings.late_window_hours) + timedelta(days=1)) / width)
    end = datetime.fromtimestamp(time.time() // width.total_seconds() * width.total_seconds(), UTC)
    ids = sql.Literal(id_array(range(1, 250_501)))
    tables = {"many": width, "day": timedelta(days=1)}
    times: dict[str, list[float]] = {t: [] for t in tables}
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        for table, w in tables.items():
            readings_like(conn, table, w)
            conn.execute(sql.SQL("""INSERT INTO {} (sensor_id, ts, current_a, bridge_id)
                                    SELECT 1, %s - g * %s, 1, 1 FROM generate_series(1, %s) g""").format(
                sql.Identifier(table)), (end, width, chunks))
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
        made = conn.execute("""SELECT count(*) FROM timescaledb_information.chunks
                               WHERE hypertable_name = 'many'""").fetchone()
        for round_ in range(4 * ROUNDS + 1):
            for table in (list(tables) if round_ % 2 else list(tables)[::-1]):
                plan = conn.execute(sql.SQL("""EXPLAIN (SUMMARY, FORMAT JSON) SELECT sensor_id, ts, current_a FROM {}
                                               WHERE sensor_id = ANY({}::bigint[]) AND ts >= {} AND ts < {}""").format(
                    sql.Identifier(table), ids, sql.Literal(end - timedelta(seconds=150)),
                    sql.Literal(end - timedelta(seconds=60)))).fetchone()
                if round_ and plan:
                    times[table].append(float(plan[0][0]["Planning Time"]))
    many, day = (statistics.median(times[t]) for t in tables)
    note = (f"250,500 literal ids; median of {4 * ROUNDS}, alternated (parsing the ids, the same either way, "
            "is not in it)")
    return [
        Row("hot read", f"planning a pass's read among {made[0] if made else 0:,} chunks of {width}", many, "ms", note),
        Row("hot read", "the same rows in day chunks", day, "ms", f"many / day: {many / day:.2f}× in the same run"),
    ]
