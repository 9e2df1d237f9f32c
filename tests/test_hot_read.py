"""The hot tier's read goes through the (sensor_id, ts) index even where the planner, left
to itself, would scan the whole chunk: a rollup pass reads many sensors over a few minutes
of a chunk that has statistics (`raw_readings.index_scans_only`, docs/scaling.md)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from wattline import raw_readings
from wattline.db import id_array

SENSORS, STEP_S, SPAN_S = 5000, 60, 1800
START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
LO, HI = START + timedelta(minutes=10), START + timedelta(minutes=20)


def readings_of_a_fleet(db: psycopg.Connection[Any]) -> None:
    """SENSORS sensors every STEP_S for SPAN_S, in the order they arrive (by time), analysed as
    autovacuum would."""
    db.execute("""INSERT INTO readings (sensor_id, ts, current_a, bridge_id)
                  SELECT s, %s + make_interval(secs => t), 1.5, 1
                  FROM generate_series(1, %s) s, generate_series(0, %s - 1, %s) t ORDER BY t, s""",
               (START, SENSORS, SPAN_S, STEP_S))
    db.execute("ANALYZE readings")


def with_constant_ids(ids: list[int]) -> sql.Composed:
    """The read's SELECT with its ids as a constant, which the planner sizes (and weighs id by id)."""
    return sql.SQL("SELECT * FROM readings WHERE sensor_id = ANY({}::bigint[]) AND ts >= {} AND ts < {}").format(
        sql.Literal(id_array(ids)), sql.Literal(LO), sql.Literal(HI))


def plans(db: psycopg.Connection[Any], run: Callable[[], object]) -> str:
    """The plans PostgreSQL executed for what `run` sent, as auto_explain reports them."""
    seen: list[str] = []
    db.add_notice_handler(lambda d: seen.append(d.message_primary or ""))
    for setting in ("LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0",
                    "SET auto_explain.log_level = 'notice'", "SET auto_explain.log_nested_statements = on"):
        db.execute(setting)
    run()
    db.execute("SET auto_explain.log_min_duration = -1")
    return "\n".join(seen)


def test_a_pass_sized_read_takes_the_index_where_the_planner_would_scan_the_chunk(
        db: psycopg.Connection[Any]) -> None:
    readings_of_a_fleet(db)
    ids = list(range(1, SENSORS + 1))
    # The planner's own choice for this read is the whole chunk; else this test shows nothing.
    chosen = "\n".join(r[0] for r in db.execute(sql.SQL("EXPLAIN {}").format(with_constant_ids(ids))))
    assert "Seq Scan on _hyper_" in chosen, chosen

    read: list[raw_readings.Raw] = []
    executed = plans(db, lambda: read.append(raw_readings.read(db, ids, LO, HI)))
    assert "readings_sensor_ts" in executed and "Seq Scan on _hyper_" not in executed, executed
    assert len(read[0]) == SENSORS * 10 * 60 // STEP_S


def test_planning_a_pass_sized_read_does_not_weigh_each_id(db: psycopg.Connection[Any]) -> None:
    """Given the ids as a constant, the planner estimated each one's selectivity: 0.19-0.6 s
    a read of the fleet's 250,500-sensor pass, while the fleet was streaming in."""
    readings_of_a_fleet(db)
    ids = list(range(1, 250_501))
    lo, hi = round(LO.timestamp() * 1e6), round(HI.timestamp() * 1e6)

    def planning(query: sql.Composable) -> float:
        """The planner's time for `query`, best of three (ms)."""
        runs = [db.execute(sql.SQL("EXPLAIN (SUMMARY, FORMAT JSON) {}").format(query)).fetchone() for _ in range(3)]
        return min(float(r[0][0]["Planning Time"]) for r in runs if r)

    as_constant = planning(with_constant_ids(ids))
    as_sent = planning(raw_readings.hot_select(ids, lo, hi))
    assert as_sent * 10 < as_constant, (as_sent, as_constant)


def test_the_setting_is_restored_inside_the_callers_transaction(db: psycopg.Connection[Any]) -> None:
    readings_of_a_fleet(db)
    with db.transaction():
        raw_readings.read(db, [1, 2], LO, HI)
        shown = db.execute("SHOW enable_seqscan").fetchone()
        assert shown is not None and shown[0] == "on"
