"""The packed tier of raw readings: days moved by the real packing job read back exactly;
late readings merge in once, also while the job packs that day; a job killed with -9 loses
and doubles nothing; a corrupt row is caught by its checksum and quarantined; retention
trims the packed tier to the microsecond."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest

from ingest.packs import RawPack
from ingest.writer import BatchWriter
from tests.factories import all_readings, count, one_circuit_site, pack_all, stored, wait_for, write
from wattline import raw_readings
from wattline.packed_tier import pack_day, scrub
from wattline.retention import run_retention
from wattline.senml import SENML_TOPIC, encode_pack
from wattline.settings import Settings

DAY = 86400
D0 = datetime(2026, 11, 2, tzinfo=UTC).timestamp()  # a Monday, well before "now"


def fill(db: psycopg.Connection[Any], sensors: int, days: int, *, step_s: int = 10, start: float = D0) -> int:
    """`sensors` discovered sensors on BR-1 reporting every `step_s` for `days` days, written
    straight into `readings` (fast); returns how many readings. Every third sensor also reports
    voltage and power factor, every fifth RSSI; sensor 2 moves to a second bridge at noon."""
    one_circuit_site(db)
    db.execute("""INSERT INTO bridges (serial, site_id) SELECT 'BR-2', site_id FROM bridges WHERE serial = 'BR-1'""")
    db.execute("""INSERT INTO sensors (serial, bridge_id, first_seen_at)
                  SELECT 'CT-X' || g, (SELECT id FROM bridges WHERE serial = 'BR-1'), now()
                  FROM generate_series(1, %s) g""", (sensors,))
    db.execute("""
        INSERT INTO readings (sensor_id, ts, current_a, voltage_v, power_factor, rssi_dbw, bridge_id)
        SELECT s.id, to_timestamp(%(start)s + k * %(step)s + (s.id %% 7) * 0.000001),
               round((5 + (s.id %% 11) + 3 * sin(k / 300.0))::numeric, 3)::real,
               CASE WHEN s.id %% 3 = 0 THEN (229 + (k %% 5) * 0.1)::real END,
               CASE WHEN s.id %% 3 = 0 THEN 0.93::real END,
               CASE WHEN s.id %% 5 = 0 THEN (-70 - (k %% 9))::real END,
               CASE WHEN s.serial = 'CT-X2' AND k * %(step)s %% 86400 >= 43200
                    THEN (SELECT id FROM bridges WHERE serial = 'BR-2') ELSE s.bridge_id END
        FROM sensors s, generate_series(0, %(n)s - 1) k WHERE s.serial LIKE 'CT-X%%'""",
               {"start": start, "step": step_s, "n": days * DAY // step_s})
    return sensors * days * DAY // step_s


def columns(raw: raw_readings.Raw) -> dict[str, np.ndarray[Any, Any]]:
    return {f: getattr(raw, f) for f in ("sensor_id", "ts_us", "current_a", "voltage_v", "power_factor", "rssi_dbw",
                                         "bridge_id")}


def assert_same(a: raw_readings.Raw, b: raw_readings.Raw) -> None:
    for name, col in columns(a).items():
        other = getattr(b, name)
        assert col.dtype == other.dtype and np.array_equal(col, other, equal_nan=col.dtype.kind == "f"), name


def test_the_packing_job_moves_days_losslessly_and_drops_their_chunks(db: psycopg.Connection[Any],
                                                                       database_url: str) -> None:
    total = fill(db, sensors=12, days=2)
    before = all_readings(db)
    assert len(before) == total
    chunks = count(db, "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'readings'")
    report = pack_all(database_url)
    assert (report.readings, report.rows) == (total, 12 * 2)
    assert report.chunks_dropped == chunks  # the emptied day chunks are gone, not left as dead rows
    assert count(db, "SELECT count(*) FROM readings") == 0
    assert_same(all_readings(db), before)
    # Each row's columns agree with its readings; the bridge change at noon is kept.
    row = db.execute("""SELECT bridge_ids, bridge_runs, n FROM readings_packed p JOIN sensors s ON s.id = p.sensor_id
                        WHERE s.serial = 'CT-X2' ORDER BY day LIMIT 1""").fetchone()
    assert row is not None and len(row[0]) == 2 and row[1] == [4320, 4320] and row[2] == 8640
    # A range that starts and ends inside packed days reads exactly that range.
    lo, hi = D0 + 3600.5, D0 + DAY + 7200
    ids = sorted(set(before.sensor_id.tolist()))
    part = raw_readings.read(db, ids, lo, hi)
    pick = (before.ts_us >= lo * 1e6) & (before.ts_us < hi * 1e6)
    assert_same(part, before.take(pick))
    span = raw_readings.first_and_last(db, ids[:1], datetime.fromtimestamp(lo, UTC), datetime.fromtimestamp(hi, UTC))
    mine = before.ts_us[pick & (before.sensor_id == ids[0])]
    assert span is not None and [round(t.timestamp() * 1e6) for t in span] == [mine[0], mine[-1]]
    # Packing again finds nothing to do.
    assert pack_all(database_url).readings == 0


def test_a_reader_racing_the_packing_job_reads_each_reading_once(db: psycopg.Connection[Any],
                                                                  database_url: str) -> None:
    """`raw_readings.read` takes the hot tier, then the packed tier, in two statements: while
    the job packs a sensor at a time and then drops the chunks, every read is whole."""
    fill(db, sensors=12, days=2)
    before = all_readings(db)
    ids = sorted(set(before.sensor_id.tolist()))
    stop, reads, wrong = threading.Event(), [0], []

    def read_while_packing() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            while not stop.is_set():
                got = raw_readings.read(conn, ids, D0, D0 + 2 * DAY)
                reads[0] += 1
                if len(got) != len(before) or not np.array_equal(got.ts_us, before.ts_us):
                    wrong.append(len(got))

    reader = threading.Thread(target=read_while_packing)
    reader.start()
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            for day in (int(D0) // DAY, int(D0) // DAY + 1):
                pack_day(conn, day, sensors_per_batch=1)
    finally:
        stop.set()
        reader.join(60)
    assert count(db, "SELECT count(*) FROM readings") == 0 and reads[0] >= 2, reads
    assert wrong == []
    assert_same(raw_readings.read(db, ids, D0, D0 + 2 * DAY), before)


def test_late_readings_merge_into_a_packed_day_once(db: psycopg.Connection[Any], database_url: str) -> None:
    one_circuit_site(db)
    base = D0 + 36000
    write(database_url, [("CT-1", base + i * 10, 10.0) for i in range(360)])
    pack_all(database_url)
    writer = BatchWriter(database_url, max_age_s=10 * 365 * 86400.0)
    resend = [("CT-1", base + i * 10, 99.0) for i in range(0, 360, 7)]  # stored already: first value stays
    new = [("CT-1", base + i * 10 + 5, 20.0) for i in range(0, 360, 3)]
    packs = [RawPack(SENML_TOPIC.format(bridge="BR-1"), encode_pack(resend + new), time.time())]
    result = writer.write(packs)
    writer.close()
    assert (result.stored, result.duplicates) == (len(new), len(resend))
    assert count(db, "SELECT count(*) FROM readings") == 0  # merged into the packed row, not beside it
    raw = all_readings(db)
    assert len(raw) == 360 + len(new)
    assert set(raw.current_a.tolist()) == {10.0, 20.0}
    assert count(db, "SELECT count(*) FROM rollup_dirty") > 0  # the late minutes are queued for rollup


def test_readings_for_a_day_being_packed_are_stored_exactly_once(db: psycopg.Connection[Any],
                                                                 database_url: str) -> None:
    """Ingest writes late readings of a day (resends and new ones, in many small batches)
    while the job packs that very day a sensor at a time: each reading ends up once."""
    total = fill(db, sensors=30, days=1, step_s=20)
    serial = dict(db.execute("SELECT id, serial FROM sensors").fetchall())
    before = all_readings(db)
    new = [(s, D0 + k * 20 + 10, 1.5) for k in range(0, 4320, 9) for s in serial.values()]  # between stored times
    every = np.arange(0, len(before), 11)
    resent = [(serial[i], t, 99.0) for i, t in zip(before.sensor_id[every].tolist(), before.ts_s[every].tolist(),
                                                   strict=True)]
    batches = [new[i:i + 300] + resent[i:i + 300] for i in range(0, max(len(new), len(resent)), 300)]
    stored = 0
    errors: list[BaseException] = []

    def ingest() -> None:
        nonlocal stored
        writer = BatchWriter(database_url, max_age_s=10 * 365 * 86400.0)
        try:
            for batch in batches:
                stored += writer.write([RawPack(SENML_TOPIC.format(bridge="BR-1"), encode_pack(batch),
                                                time.time())]).stored
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            writer.close()

    thread = threading.Thread(target=ingest)
    thread.start()
    with psycopg.connect(database_url, autocommit=True) as conn:
        while thread.is_alive():  # the job packs the day over and over as the late readings land
            pack_day(conn, int(D0 // DAY), sensors_per_batch=1)
    thread.join()
    assert not errors, errors
    pack_all(database_url)
    raw = all_readings(db)
    assert stored == len(new)
    assert len(raw) == total + len(new)
    assert count(db, "SELECT count(*) FROM readings") == 0
    keys = raw.sensor_id * 10**12 + raw.ts_us % 10**12
    assert len(np.unique(keys)) == len(raw)
    assert not (raw.current_a == 99.0).any()  # a resend never replaced what was stored first


@pytest.mark.faults
def test_a_packing_job_killed_with_minus_9_loses_and_doubles_nothing(db: psycopg.Connection[Any],
                                                                     database_url: str) -> None:
    total = fill(db, sensors=40, days=2)
    assert stored(db) == total
    before = all_readings(db)
    env = {**os.environ, "WATTLINE_DATABASE_URL": database_url, "WATTLINE_DEMO": "true",
           "WATTLINE_PACKING_SENSORS_PER_BATCH": "1"}
    command = [sys.executable, "-m", "launcher.cli", "packing", "--once", "--before", "2100-01-01"]
    kills = 0
    for at_rows in (3, 30, 60):  # killed at three points of the job
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        def far_enough(n: int = at_rows, p: subprocess.Popen[bytes] = proc) -> bool:
            return count(db, "SELECT count(*) FROM readings_packed") >= n or p.poll() is not None

        assert wait_for(far_enough, 120)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(30)
        assert count(db, "SELECT count(*) FROM readings_packed") > 0
        assert_same(all_readings(db), before)  # each reading once, whichever tier holds it
    assert kills >= 2
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert count(db, "SELECT count(*) FROM readings") == 0
    assert count(db, "SELECT count(*) FROM readings_packed") == 40 * 2
    assert_same(all_readings(db), before)


def test_a_corrupt_packed_row_is_quarantined_never_read_as_zeros(db: psycopg.Connection[Any],
                                                                 database_url: str) -> None:
    fill(db, sensors=4, days=2)
    before = all_readings(db)
    pack_all(database_url)
    victim, day = db.execute("SELECT sensor_id, day FROM readings_packed ORDER BY sensor_id, day LIMIT 1").fetchall()[0]
    db.execute("UPDATE readings_packed SET data = set_byte(data, 60, get_byte(data, 60) # 85) "
               "WHERE sensor_id = %s AND day = %s", (victim, day))
    corrupt_before = raw_readings.CORRUPT._value.get()
    raw = all_readings(db)
    lost = (before.sensor_id == victim) & (before.ts_us // raw_readings.DAY_US == int(day.timestamp()) // DAY)
    assert_same(raw, before.take(~lost))  # a gap where the row was, nothing read as zeros
    assert raw_readings.CORRUPT._value.get() == corrupt_before + 1
    row = db.execute("SELECT sensor_id, day, reason FROM readings_packed_quarantine").fetchone()
    assert row is not None and row[:2] == (victim, day) and "checksum" in row[2]
    assert count(db, "SELECT count(*) FROM readings_packed WHERE sensor_id = %s AND day = %s", victim, day) == 0
    # The scrub finds one nobody has read yet.
    db.execute("UPDATE readings_packed SET data = set_byte(data, 30, get_byte(data, 30) # 1) "
               "WHERE (sensor_id, day) = (SELECT sensor_id, day FROM readings_packed ORDER BY sensor_id DESC LIMIT 1)")
    assert scrub(db) == (4 * 2 - 1, 1)
    assert count(db, "SELECT count(*) FROM readings_packed_quarantine") == 2
    # Late data for a quarantined day starts it afresh instead of failing the batch.
    serial = db.execute("SELECT serial FROM sensors WHERE id = %s", (victim,)).fetchone()[0]
    write(database_url, [(serial, day.timestamp() + 5, 3.0)])
    assert count(db, "SELECT count(*) FROM readings WHERE sensor_id = %s", victim) == 1


def test_retention_trims_the_packed_tier_to_the_microsecond(db: psycopg.Connection[Any], database_url: str) -> None:
    now = datetime.now(UTC)
    settings = Settings(demo=True, retention_raw_days=93)
    cutoff = now - timedelta(days=93)
    start = (cutoff - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    total = fill(db, sensors=3, days=4, step_s=600, start=start)
    before = all_readings(db)
    pack_all(database_url)
    old = int((before.ts_us < cutoff.timestamp() * 1e6).sum())
    assert 0 < old < total
    dry = {r.table: r.rows for r in run_retention(db, settings, now=now, dry_run=True)}
    assert dry["readings_packed"] == old
    report = {r.table: r for r in run_retention(db, settings, now=now)}
    assert report["readings_packed"].rows == old and report["readings_packed"].chunks >= 1
    after = all_readings(db)
    assert_same(after, before.take(before.ts_us >= cutoff.timestamp() * 1e6))
    assert count(db, "SELECT count(*) FROM readings_packed WHERE first_ts < %s", cutoff) == 0
