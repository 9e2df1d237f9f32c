"""How wide a chunk of `readings` is: sized so that the chunk being written stays in memory.

Every reading goes into the newest chunk's (sensor_id, ts) index at its sensor's place, so a
fleet's inserts touch every leaf of that index within seconds, and the rollup worker reads
the chunk's newest minutes back. Once autoanalyze has given a chunk statistics, the planner
reads a pass's ~250,000 sensors by a sequential scan of the whole chunk; on a day chunk that
scan grows all day, out of the buffers and then out of the machine's time (the live bench,
`python -m bench rolluploop`, fell behind after ~15 minutes of a day chunk: docs/scaling.md).
A chunk that stays in memory bounds that scan, and keeps the index inserts cheap; the read
itself now takes the index (`raw_readings.index_scans_only`), which costs half the scan's
CPU even on a 5-minute chunk. TimescaleDB's own guidance is the same: the indexes being
written fit in a quarter of memory.

So the width comes from the fleet: the registered sensors at their reporting interval give
the readings a second, `INDEX_BYTES_PER_READING` their index, and the chunk is the widest
step of `STEPS` whose index fits in `BUFFER_SHARE` of `shared_buffers`. A small site keeps
day chunks; a million sensors get minutes. A new width applies from the next chunk (the one
being written keeps its range), and every step divides a day, so the packing job still drops
a packed day's chunks whole. `readings_chunk_minutes` fixes the width instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg

from wattline.settings import Settings

#: Widths a chunk may take, narrowest first; each divides a day evenly.
STEPS = tuple(timedelta(minutes=m) for m in (1, 2, 5, 10, 15, 30, 60, 120, 240, 360, 720, 1440))
#: A (bigint, timestamptz) b-tree entry is 16 bytes of key, an 8-byte tuple header and a 4-byte
#: line pointer; leaves filled at random split to about 70 % full. ~40 bytes a reading.
INDEX_BYTES_PER_READING = 40
#: The newest chunk's index may take this share of shared_buffers; the rest holds the
#: chunk's heap (which the rollup worker reads back) and the rollup tables.
BUFFER_SHARE = 0.25


@dataclass(frozen=True)
class ChunkSizing:
    """What a sizing decided, and from what."""

    sensors: int
    readings_per_s: float
    buffers_bytes: int
    width: timedelta
    was: timedelta
    fixed: bool  # set by `readings_chunk_minutes`, not derived

    @property
    def changed(self) -> bool:
        """Whether this sizing set a new width."""
        return self.width != self.was


def width_for(readings_per_s: float, buffers_bytes: int) -> timedelta:
    """The widest step whose chunk index fits in `BUFFER_SHARE` of the buffers (the narrowest
    step if none does)."""
    budget = BUFFER_SHARE * buffers_bytes
    fitting = [s for s in STEPS if readings_per_s * s.total_seconds() * INDEX_BYTES_PER_READING <= budget]
    return fitting[-1] if fitting else STEPS[0]


def current_width(conn: psycopg.Connection[Any]) -> timedelta:
    """The width `readings`' next chunk will have."""
    row = conn.execute("""SELECT time_interval FROM timescaledb_information.dimensions
                           WHERE hypertable_name = 'readings' AND dimension_number = 1""").fetchone()
    if row is None or not isinstance(row[0], timedelta):
        raise RuntimeError("readings is not a hypertable partitioned by time")
    return row[0]


def shared_buffers_bytes(conn: psycopg.Connection[Any]) -> int:
    """The server's shared_buffers in bytes (the setting counts blocks of `block_size`)."""
    row = conn.execute("""SELECT setting::bigint * current_setting('block_size')::bigint
                          FROM pg_settings WHERE name = 'shared_buffers'""").fetchone()
    return int(row[0]) if row else 0


def size_readings_chunks(conn: psycopg.Connection[Any], settings: Settings) -> ChunkSizing:
    """Decide the width of `readings`' next chunks and set it if it changed. Called when the
    stack starts (after migrations) and on every pass of the packing job, as the fleet grows."""
    row = conn.execute("SELECT count(*) FROM sensors").fetchone()
    sensors, buffers = int(row[0]) if row else 0, shared_buffers_bytes(conn)
    rate = sensors / settings.reporting_interval_s
    minutes = settings.readings_chunk_minutes
    width = timedelta(minutes=minutes) if minutes is not None else width_for(rate, buffers)
    was = current_width(conn)
    if width != was:
        conn.execute("SELECT set_chunk_time_interval('readings', %s::interval)", (width,))
    return ChunkSizing(sensors, rate, buffers, width, was, fixed=minutes is not None)


def size_chunks(database_url: str, settings: Settings) -> ChunkSizing:
    """`size_readings_chunks` on a connection of its own (`wattline up`, `wattline db size-chunks`)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return size_readings_chunks(conn, settings)


def describe_sizing(sizing: ChunkSizing) -> str:
    """One line for a person: the width and why."""
    why = ("fixed by WATTLINE_READINGS_CHUNK_MINUTES" if sizing.fixed else
           f"{sizing.sensors:,} sensors, ~{sizing.readings_per_s:,.0f} readings/s, "
           f"shared_buffers {sizing.buffers_bytes / 2**20:,.0f} MiB")
    change = f" (was {sizing.was})" if sizing.changed else ""
    return f"{sizing.width} each{change}: {why}; a new width applies from the next chunk"
