"""The packing job: days older than the late-data window move from `readings` into one
packed row per sensor and day (`wattline packing`), plus the checksum scrub and the
packed tier's retention. The locking protocol is in `wattline.raw_readings`."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import structlog
from psycopg import sql

from wattline import raw_readings
from wattline.db import copy_out_arrays
from wattline.raw_readings import (
    DAY_LOCK,
    DAY_US,
    PackedRow,
    Raw,
    _dt,
    _q,
    _unpack_or_quarantine,
    _us,
    concat,
    pack_row,
    quarantine,
    write_rows,
)
from wattline.readings_chunks import size_readings_chunks
from wattline.service import ERRORS, LoopService
from wattline.settings import Settings

log = structlog.get_logger("wattline.packing")


# -- the packing job -----------------------------------------------------------------------------
_READ_DAY = """COPY (""" + raw_readings.SELECT_ROW + """ WHERE ts >= {lo} AND ts < {hi}
                       AND sensor_id >= {first} AND sensor_id < {end} AND sensor_id <> ALL({skip}::bigint[]))
               TO STDOUT (FORMAT BINARY)"""


def _read_day(conn: psycopg.Connection[Any], lo_us: int, hi_us: int, first_sensor: int, end_sensor: int,
              skip: list[int]) -> Raw:
    """A range of sensors' readings in [lo, hi) from `readings`, but those of the sensors in
    `skip`, by one binary COPY (optional columns come as NaN, so rows are fixed-width)."""
    query = sql.SQL(_READ_DAY).format(lo=sql.Literal(_dt(lo_us)), hi=sql.Literal(_dt(hi_us)),
                                      first=sql.Literal(first_sensor), end=sql.Literal(end_sensor),
                                      skip=sql.Literal(skip))
    return concat([raw_readings.from_rows(np.concatenate(list(copy_out_arrays(conn, query, raw_readings.ROW))))])


def _packed_rows(raw: Raw, day: int) -> list[PackedRow]:
    """The day's readings (ordered by sensor and time) as a packed row per sensor. The
    batches skip sensors already packed that day, and under the day's lock nothing else
    makes one, so there is never a row to merge into."""
    sensors = np.unique(raw.sensor_id)
    bounds = [*np.searchsorted(raw.sensor_id, sensors, side="left").tolist(), len(raw)]
    return [pack_row(raw.take(slice(bounds[k], bounds[k + 1])), day) for k in range(len(sensors))]


@dataclass
class PackReport:
    """What a packing pass moved."""

    days: int = 0
    readings: int = 0
    rows: int = 0
    batches: int = 0
    chunks_dropped: int = 0
    seconds: float = 0.0
    per_day: dict[str, int] = field(default_factory=dict)


def _sensors_in_day(conn: psycopg.Connection[Any], lo_us: int, hi_us: int) -> list[int]:
    """The sensors with readings in [lo, hi), by a skip scan of the (sensor_id, ts) index:
    one probe per sensor that has readings, none per sensor that has not (a fleet's catalogue
    may hold many more sensors than one day heard from)."""
    return [r[0] for r in _q(conn, """
        WITH RECURSIVE s AS (
            (SELECT sensor_id FROM readings WHERE ts >= %(lo)s AND ts < %(hi)s ORDER BY sensor_id LIMIT 1)
            UNION ALL
            SELECT (SELECT r.sensor_id FROM readings r WHERE r.ts >= %(lo)s AND r.ts < %(hi)s
                    AND r.sensor_id > s.sensor_id ORDER BY r.sensor_id LIMIT 1)
            FROM s WHERE s.sensor_id IS NOT NULL)
        SELECT sensor_id FROM s WHERE sensor_id IS NOT NULL""", {"lo": _dt(lo_us), "hi": _dt(hi_us)}).fetchall()]


def _sensor_ranges(sensors: list[int], per_batch: int) -> list[tuple[int, int]]:
    """[first, end) ranges of sensor ids, each holding `per_batch` of `sensors` (sorted)."""
    return [(sensors[k], sensors[min(k + per_batch, len(sensors)) - 1] + 1)
            for k in range(0, len(sensors), per_batch)]


def _packed_sensors(conn: psycopg.Connection[Any], day: int, first: int, end: int) -> list[int]:
    return [r[0] for r in _q(conn, """SELECT sensor_id FROM readings_packed
                                      WHERE day = %s AND sensor_id >= %s AND sensor_id < %s""",
                             (_dt(day * DAY_US), first, end)).fetchall()]


def pack_day(conn: psycopg.Connection[Any], day: int, *, sensors_per_batch: int = 50, duty: float = 1.0,
             stop: threading.Event | None = None, report: PackReport | None = None) -> PackReport:
    """Pack one UTC day (number since 1970): a batch of sensors per transaction, each
    sensor's day read from `readings` and written as one packed row; then, in one last
    transaction, the day's chunk of `readings` is dropped. Safe to kill and re-run.

    Until that drop a packed sensor's readings are in both tiers, and the packed row is the
    one that counts (readers drop the `readings` rows of a (sensor, day) that has a packed
    row). Deleting row by row instead wrote ~83 bytes of WAL a reading (a day of 2.6 M
    readings: 215 MB), which slowed ingest beside the job; a dropped chunk writes almost none.

    `duty`: the share of time spent working. After each batch the job rests for as long as
    the batch took × (1/duty − 1), like VACUUM's cost delay: packing is background work that
    only has to keep up with a day a day, and ingest needs the cores more."""
    report = report or PackReport()
    lo, hi = day * DAY_US, (day + 1) * DAY_US
    rest = 1.0 / duty - 1.0 if 0 < duty < 1 else 0.0
    for first, end in _sensor_ranges(_sensors_in_day(conn, lo, hi), sensors_per_batch):
        if stop is not None and stop.is_set():
            return report
        started = time.perf_counter()
        with conn.transaction():
            _q(conn, "SELECT pg_advisory_xact_lock(%s, %s)", (DAY_LOCK, day))
            _q(conn, "INSERT INTO packed_days (day) VALUES (%s) ON CONFLICT DO NOTHING", (_dt(lo),))
            taken = _read_day(conn, lo, hi, first, end, _packed_sensors(conn, day, first, end))
            report.rows += write_rows(conn, _packed_rows(taken, day))
            report.readings += len(taken)
            report.batches += 1
        if rest and len(taken):
            pause = (time.perf_counter() - started) * rest
            if stop is not None:
                stop.wait(pause)
            else:
                time.sleep(pause)
    if stop is not None and stop.is_set():
        return report
    with conn.transaction():
        _q(conn, "SELECT pg_advisory_xact_lock(%s, %s)", (DAY_LOCK, day))
        # Sensors first heard of that day after the listing above (late readings of a sensor
        # with no packed row are stored in `readings`).
        packed = set(_packed_sensors(conn, day, -(2 ** 63), 2 ** 63 - 1))
        for sensor in (s for s in _sensors_in_day(conn, lo, hi) if s not in packed):
            taken = _read_day(conn, lo, hi, sensor, sensor + 1, [])
            report.rows += write_rows(conn, _packed_rows(taken, day))
            report.readings += len(taken)
        # Every reading of the day is in a packed row now. The chunks that lie wholly inside
        # the day are dropped (drop_chunks' own rule; every width `readings_chunks` sets divides
        # a day); the rows of a chunk that straddles midnight are deleted.
        dropped = len(_q(conn, "SELECT drop_chunks('readings', older_than => %s::timestamptz, "
                               "newer_than => %s::timestamptz)", (_dt(hi), _dt(lo))).fetchall())
        _q(conn, "DELETE FROM readings WHERE ts >= %s AND ts < %s", (_dt(lo), _dt(hi)))
        report.chunks_dropped += dropped
        _q(conn, "UPDATE packed_days SET finished_at = now() WHERE day = %s", (_dt(lo),))
    report.days += 1
    return report


def packable_days(conn: psycopg.Connection[Any], before: datetime) -> list[int]:
    """UTC days that end by `before` and still have readings in `readings`, oldest first:
    found from the hypertable's chunks, not by scanning rows."""
    rows = _q(conn, """SELECT range_start, range_end FROM timescaledb_information.chunks
                           WHERE hypertable_name = 'readings' AND range_start < %s ORDER BY range_start""",
                        (before,)).fetchall()
    last = _us(before) // DAY_US  # days < last end by `before`
    days: set[int] = set()
    for start, end in rows:
        first_day = _us(start) // DAY_US
        end_day = -(-_us(end) // DAY_US)
        days.update(range(first_day, min(end_day, last)))
    return sorted(days)


def pack_due(conn: psycopg.Connection[Any], window: timedelta, *, now: datetime | None = None,
             sensors_per_batch: int = 50, duty: float = 1.0, stop: threading.Event | None = None,
             on_day: Callable[[int, PackReport], None] | None = None) -> PackReport:
    """Pack every day that ended more than `window` ago (one pass of the packing service)."""
    started = time.perf_counter()
    report = PackReport()
    for day in packable_days(conn, (now or datetime.now(UTC)) - window):
        if stop is not None and stop.is_set():
            break
        before = report.readings
        pack_day(conn, day, sensors_per_batch=sensors_per_batch, duty=duty, stop=stop, report=report)
        report.per_day[_dt(day * DAY_US).date().isoformat()] = report.readings - before
        if on_day is not None:
            on_day(day, report)
    report.seconds = time.perf_counter() - started
    return report


# -- scrub and retention -------------------------------------------------------------------------
def scrub(conn: psycopg.Connection[Any], *, since: datetime | None = None, batch: int = 2000) -> tuple[int, int]:
    """Check every packed row's checksum (packed since `since`, if given); quarantine those
    that fail. Returns (rows checked, rows quarantined)."""
    from wattline.packing import CorruptPack, verify
    checked = bad = 0
    after: tuple[int, datetime] = (-(2 ** 63), _dt(0))
    while True:
        rows = _q(conn, """SELECT sensor_id, day, data FROM readings_packed
                               WHERE (sensor_id, day) > (%s, %s) AND packed_at >= COALESCE(%s::timestamptz, '-infinity')
                               ORDER BY sensor_id, day LIMIT %s""", (*after, since, batch)).fetchall()
        if not rows:
            return checked, bad
        for sensor_id, day, data in rows:
            checked += 1
            try:
                verify(data)
            except CorruptPack as exc:
                bad += 1
                quarantine(conn, sensor_id, day, str(exc))
        after = (rows[-1][0], rows[-1][1])


def trim_before(conn: psycopg.Connection[Any], cutoff: datetime) -> int:
    """Retention of the packed tier to the microsecond: rows of days wholly before `cutoff`
    go (the caller has dropped whole chunks first), a row that straddles it is re-packed
    without its older readings. Returns how many readings went."""
    removed = 0
    with conn.transaction():
        gone = _q(conn, "DELETE FROM readings_packed WHERE last_ts < %s RETURNING n", (cutoff,)).fetchall()
        removed += sum(int(r[0]) for r in gone)
        rows = _q(conn, """SELECT sensor_id, (extract(epoch FROM day) / 86400)::int8, data, bridge_ids,
                                      bridge_runs FROM readings_packed WHERE first_ts < %s FOR UPDATE""",
                            (cutoff,)).fetchall()
        keep_from = _us(cutoff)
        rewritten = []
        for part in _unpack_or_quarantine(conn, ((r[0], _dt(r[1] * DAY_US), r[2], r[3], r[4]) for r in rows)):
            kept = part.take(part.ts_us >= keep_from)
            removed += len(part) - len(kept)
            rewritten.append(pack_row(kept, int(part.ts_us[0]) // DAY_US))
        write_rows(conn, rewritten)
    return removed


def packed_readings_older_than(conn: psycopg.Connection[Any], cutoff: datetime) -> int:
    """How many packed readings retention would remove (a dry run's count; rows that straddle
    the cut-off are unpacked to count exactly)."""
    row = _q(conn, "SELECT COALESCE(sum(n), 0) FROM readings_packed WHERE last_ts < %s", (cutoff,)).fetchone()
    count = int(row[0]) if row else 0
    rows = _q(conn, """SELECT sensor_id, day, data, bridge_ids, bridge_runs FROM readings_packed
                           WHERE first_ts < %s AND last_ts >= %s""", (cutoff, cutoff)).fetchall()
    for part in _unpack_or_quarantine(conn, rows):
        count += int((part.ts_us < _us(cutoff)).sum())
    return count


def nice_this_process() -> None:
    """Packing is background work: give the cores to ingest first (once per process: `nice`
    adds to the niceness it has)."""
    with contextlib.suppress(OSError):
        os.nice(10)


def lower_backend_priority(conn: psycopg.Connection[Any]) -> None:
    """The same for the connection's PostgreSQL backend, when the server runs on this
    machine and lets us (the embedded one of `wattline up` does): PostgreSQL has no
    per-session CPU priority. Elsewhere only the duty cycle paces the job. Setting an
    absolute priority, it is safe to call on every pass."""
    host = conn.info.host
    if not (host.startswith("/") or host in ("127.0.0.1", "::1", "localhost")):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, conn.info.backend_pid, 10)
    except OSError as exc:
        log.info("packing backend keeps its priority", reason=type(exc).__name__)


def _size_chunks(conn: psycopg.Connection[Any], settings: Settings) -> None:
    """The fleet may have grown since the last pass: size `readings`' next chunks to it. A
    failure here is logged and counted, and the pass packs on."""
    try:
        sizing = size_readings_chunks(conn, settings)
    except Exception as exc:  # any failure is this step's own; packing goes on
        ERRORS.labels(service="packing", kind="chunk sizing").inc()
        log.error("sizing readings chunks failed", error=f"{type(exc).__name__}: {exc}")
        return
    if sizing.changed:
        log.info("readings chunks resized", width=str(sizing.width), was=str(sizing.was), sensors=sizing.sensors,
                 fixed=sizing.fixed)


def packing_service(settings: Settings, *, on_report: Callable[[PackReport], None] | None = None) -> LoopService:
    """`wattline packing` as a long-running service: each pass packs the days that are due,
    then checks the checksums of the rows packed since the last check (all of them once a day)."""
    window = timedelta(hours=settings.late_window_hours)
    scrubbed: dict[str, datetime | None] = {"since": None, "full_at": None}
    service: LoopService

    def one_pass(conn: psycopg.Connection[Any]) -> bool:
        _size_chunks(conn, settings)
        report = pack_due(conn, window, sensors_per_batch=settings.packing_sensors_per_batch,
                          duty=settings.packing_duty_cycle, stop=service.stop_event)
        if report.readings:
            log.info("packed", days=report.days, readings=report.readings, rows=report.rows,
                     seconds=round(report.seconds, 1))
        now = datetime.now(UTC)
        full = scrubbed["full_at"] is None or now - scrubbed["full_at"] > timedelta(days=1)
        checked, bad = scrub(conn, since=None if full else scrubbed["since"])
        if bad:
            log.error("packed rows quarantined", checked=checked, quarantined=bad)
        scrubbed["since"] = now
        if full:
            scrubbed["full_at"] = now
        if on_report is not None:
            on_report(report)
        return False

    def pass_at_low_priority(conn: psycopg.Connection[Any]) -> bool:
        lower_backend_priority(conn)  # the loop may have reconnected since the last pass
        return one_pass(conn)

    service = LoopService("packing", settings.database_url, pass_at_low_priority,
                          settings.packing_every_minutes * 60.0, setup=nice_this_process)
    return service
