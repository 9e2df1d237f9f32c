"""`readings` chunks sized to the fleet: the width follows the sensors, their reporting
interval and shared_buffers; readings land in chunks of that width; the packing job still
drops a packed day's chunks whole; a fixed width must divide a day; the packing service and
`wattline db size-chunks` apply it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.factories import count, one_circuit_site, wait_for, write
from wattline.packed_tier import pack_day, packing_service
from wattline.readings_chunks import (
    BUFFER_SHARE,
    INDEX_BYTES_PER_READING,
    current_width,
    shared_buffers_bytes,
    size_readings_chunks,
)
from wattline.settings import Settings

SENSORS = 100
HOUR = timedelta(hours=1)


@pytest.fixture
def day_chunks(db: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """The schema's width (a day) again after the test: the session's other tests expect it."""
    yield db
    db.execute("SELECT set_chunk_time_interval('readings', INTERVAL '1 day')")


def fleet(db: psycopg.Connection[Any]) -> None:
    """CT-1 on BR-1 plus SENSORS - 1 more registered sensors."""
    one_circuit_site(db)
    db.execute("""INSERT INTO sensors (serial, bridge_id) SELECT 'CT-F' || g, (SELECT id FROM bridges
                  WHERE serial = 'BR-1') FROM generate_series(2, %s) g""", (SENSORS,))


def interval_for_an_hour(db: psycopg.Connection[Any]) -> float:
    """The reporting interval at which SENSORS sensors' hour of index is exactly the budget:
    an hour's chunk fits, two hours' does not."""
    per_s = BUFFER_SHARE * shared_buffers_bytes(db) / (INDEX_BYTES_PER_READING * 3600)
    return SENSORS / per_s * 1.001  # a hair slower, so that float rounding cannot tip the hour out


def test_a_busy_fleet_gets_narrower_chunks_and_packing_still_drops_them_whole(
        day_chunks: psycopg.Connection[Any], database_url: str) -> None:
    db = day_chunks
    fleet(db)
    settings = Settings(database_url=database_url, reporting_interval_s=interval_for_an_hour(db))
    sizing = size_readings_chunks(db, settings)
    assert (sizing.sensors, sizing.was, sizing.width, sizing.changed) == (SENSORS, timedelta(days=1), HOUR, True)
    assert current_width(db) == HOUR
    assert not size_readings_chunks(db, settings).changed  # sizing again changes nothing

    # Three hours of a past day, through the gateway's writer: three chunks an hour wide.
    day = datetime(2026, 11, 2, tzinfo=UTC)
    start = (day + timedelta(hours=5)).timestamp()
    write(database_url, [("CT-1", start + k * 10.0, 4.0) for k in range(3 * 360)])
    ranges = db.execute("""SELECT range_end - range_start FROM timescaledb_information.chunks
                            WHERE hypertable_name = 'readings'""").fetchall()
    assert [r[0] for r in ranges] == [HOUR] * 3
    report = pack_day(db, int(day.timestamp()) // 86400)
    assert (report.readings, report.chunks_dropped, count(db, "SELECT count(*) FROM readings")) == (3 * 360, 3, 0)


def test_a_slow_fleet_keeps_day_chunks_and_a_fixed_width_must_divide_a_day(
        day_chunks: psycopg.Connection[Any], database_url: str) -> None:
    db = day_chunks
    fleet(db)
    assert not size_readings_chunks(db, Settings(database_url=database_url)).changed  # 10 readings/s: a day
    fixed = size_readings_chunks(db, Settings(database_url=database_url, readings_chunk_minutes=15))
    assert (fixed.width, fixed.fixed, current_width(db)) == (timedelta(minutes=15), True, timedelta(minutes=15))
    with pytest.raises(ValueError, match="WATTLINE_READINGS_CHUNK_MINUTES=7 must divide a day"):
        Settings(readings_chunk_minutes=7)


def test_the_packing_service_and_the_cli_size_chunks(day_chunks: psycopg.Connection[Any], database_url: str) -> None:
    db = day_chunks
    fleet(db)
    interval = interval_for_an_hour(db)
    service = packing_service(Settings(database_url=database_url, reporting_interval_s=interval / 2))
    service.start()
    try:
        wait_for(lambda: service.passes >= 1)
    finally:
        service.stop()
    assert (service.errors, current_width(db)) == (0, timedelta(minutes=30))

    env = {**os.environ, "WATTLINE_DATABASE_URL": database_url, "WATTLINE_REPORTING_INTERVAL_S": str(interval)}
    out = subprocess.run([sys.executable, "-m", "launcher.cli", "db", "size-chunks"], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.startswith(f"1:00:00 each (was 0:30:00): {SENSORS} sensors"), out
    assert current_width(db) == HOUR
