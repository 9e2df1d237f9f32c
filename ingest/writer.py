"""Decoding a batch of packs and committing it: readings, rejections and rollup work, at once.

One transaction per batch: the readings (binary COPY into a staging table, then
INSERT … ON CONFLICT DO NOTHING into the hypertable), the rollup work queue rows for
the minutes the new readings touch, and every rejection with its raw bytes. Either
all of a batch is durable or none of it is, and only then are its packs acked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
import structlog

from ingest import metrics
from ingest.copy import STAGING_COLUMNS, encode_readings
from ingest.packs import BatchResult, RawPack
from wattline.senml import Limits, Reason, Rejection, bridge_from_topic, decode_pack

log = structlog.get_logger("wattline.ingest")

_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS staging_readings (
    sensor_id bigint NOT NULL, ts timestamptz NOT NULL, current_a real NOT NULL,
    voltage_v real NOT NULL, power_factor real NOT NULL, rssi_dbw real NOT NULL, bridge_id bigint NOT NULL
) ON COMMIT DELETE ROWS"""

_INSERT = """
WITH ins AS (
    INSERT INTO readings (sensor_id, ts, current_a, voltage_v, power_factor, rssi_dbw, bridge_id)
    SELECT sensor_id, ts, current_a, NULLIF(voltage_v, 'NaN'), NULLIF(power_factor, 'NaN'),
           NULLIF(rssi_dbw, 'NaN'), bridge_id
    FROM staging_readings
    ON CONFLICT (sensor_id, ts) DO NOTHING
    RETURNING sensor_id, ts
), dirty AS (
    INSERT INTO rollup_dirty (ts_from, ts_to, sensor_ids)
    SELECT m, m + INTERVAL '1 minute', array_agg(DISTINCT sensor_id)
    FROM (SELECT date_trunc('minute', ts) AS m, sensor_id FROM ins) touched
    GROUP BY m
    RETURNING 1
)
SELECT count(*) FROM ins"""


@dataclass(frozen=True)
class Known:
    id: int
    site_id: int


@dataclass
class _Rejected:
    topic: str
    bridge: str | None
    rejection: Rejection
    payload: bytes


class BatchWriter:
    """Owns one connection; not thread-safe (the gateway writes one batch at a time)."""

    def __init__(self, database_url: str, *, max_skew_s: float = 300.0, max_age_s: float = 400 * 86400.0,
                 cache_ttl_s: float = 60.0) -> None:
        self.database_url = database_url
        self.max_skew_s = max_skew_s
        self.max_age_s = max_age_s
        self.cache_ttl_s = cache_ttl_s
        self._conn: psycopg.Connection[Any] | None = None
        self._bridges: dict[str, Known] = {}
        self._sensors: dict[str, Known] = {}
        self._cache_at = time.monotonic()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.database_url, autocommit=True, connect_timeout=5)
            self._conn.execute(_STAGING_DDL)
        return self._conn

    def write(self, packs: list[RawPack]) -> BatchResult:
        """Decode and commit. Raises psycopg.OperationalError when the database is unreachable;
        then nothing of the batch is committed and the caller keeps it (spool, retry)."""
        if time.monotonic() - self._cache_at > self.cache_ttl_s:
            self._bridges.clear()
            self._sensors.clear()
            self._cache_at = time.monotonic()
        result = BatchResult(packs=len(packs))
        rejected: list[_Rejected] = []
        statuses: list[tuple[str, bool, float]] = []
        decoded = []
        for pack in packs:
            bridge = bridge_from_topic(pack.topic)
            if bridge is None:
                rejected.append(_Rejected(pack.topic, None, Rejection(Reason.TOPIC, "not a wattline/v1 bridge topic"),
                                          pack.payload))
                continue
            if pack.topic.endswith("/status"):
                statuses.append((bridge, pack.payload.strip() == b"online", pack.received_at))
                continue
            d = decode_pack(pack.payload, Limits(pack.received_at, self.max_skew_s, self.max_age_s))
            for r in d.rejections:
                rejected.append(_Rejected(pack.topic, bridge, r, r.record if r.record is not None else pack.payload))
            if len(d):
                decoded.append((pack, bridge, d))

        conn = self._connection()
        with conn.transaction():
            self._resolve_bridges(conn, {b for _, b, _ in decoded} | {s[0] for s in statuses})
            sensor_ids: list[int] = []
            bridge_ids: list[int] = []
            ts: list[float] = []
            cur_a: list[float] = []
            volt: list[float] = []
            pf: list[float] = []
            rssi: list[float] = []
            wanted: dict[str, int] = {}
            for _, bridge, d in decoded:
                known_bridge = self._bridges.get(bridge)
                if known_bridge is not None:
                    for serial in d.serials:
                        if serial not in self._sensors:
                            wanted[serial] = known_bridge.id
            if wanted:
                result.discovered += self._resolve_sensors(conn, wanted)
            for pack, bridge, d in decoded:
                known_bridge = self._bridges.get(bridge)
                if known_bridge is None:
                    rejected.append(_Rejected(pack.topic, bridge, Rejection(
                        Reason.UNKNOWN_BRIDGE, f"bridge {bridge} is not in the catalogue"), pack.payload))
                    continue
                for i, serial in enumerate(d.serials):
                    sensor = self._sensors[serial]
                    if sensor.site_id != known_bridge.site_id:
                        rejected.append(_Rejected(pack.topic, bridge, Rejection(
                            Reason.SPOOFED_SENSOR, f"sensor {serial} belongs to another site", serial),
                            pack.payload))
                        continue
                    sensor_ids.append(sensor.id)
                    bridge_ids.append(known_bridge.id)
                    ts.append(d.ts[i])
                    cur_a.append(d.current[i])
                    volt.append(d.voltage[i])
                    pf.append(d.power_factor[i])
                    rssi.append(d.rssi[i])
            result.readings = len(sensor_ids)
            if sensor_ids:
                data = encode_readings(np.array(sensor_ids, np.int64), np.array(ts), cur_a, volt, pf, rssi,
                                       np.array(bridge_ids, np.int64))
                with conn.cursor() as cur:
                    columns = ", ".join(STAGING_COLUMNS)
                    with cur.copy(f"COPY staging_readings ({columns}) FROM STDIN (FORMAT BINARY)") as cp:
                        cp.write(data)
                    row = cur.execute(_INSERT).fetchone()
                    result.stored = int(row[0]) if row else 0
                result.duplicates = result.readings - result.stored
            if rejected:
                self._store_rejections(conn, rejected)
                for rej in rejected:
                    result.rejected[rej.rejection.reason] += 1
            for bridge, online, at in statuses:
                known = self._bridges.get(bridge)
                if known is not None:
                    conn.execute("""INSERT INTO bridge_status (bridge_id, online, changed_at)
                                    VALUES (%s, %s, to_timestamp(%s))
                                    ON CONFLICT (bridge_id) DO UPDATE
                                    SET online = EXCLUDED.online, changed_at = EXCLUDED.changed_at
                                    WHERE bridge_status.changed_at <= EXCLUDED.changed_at""",
                                 (known.id, online, at))
        return result

    def _resolve_bridges(self, conn: psycopg.Connection[Any], serials: set[str]) -> None:
        missing = [s for s in serials if s not in self._bridges]
        if missing:
            for row in conn.execute("SELECT serial, id, site_id FROM bridges WHERE serial = ANY(%s)", (missing,)):
                self._bridges[row[0]] = Known(row[1], row[2])

    def _resolve_sensors(self, conn: psycopg.Connection[Any], wanted: dict[str, int]) -> int:
        """Look sensors up; the ones never heard of are recorded as discovered on their bridge."""
        serials = list(wanted)
        inserted = conn.execute(
            """INSERT INTO sensors (serial, bridge_id, first_seen_at)
               SELECT s, b, now() FROM unnest(%s::text[], %s::bigint[]) AS u(s, b)
               ON CONFLICT (serial) DO NOTHING RETURNING serial""",
            (serials, [wanted[s] for s in serials])).fetchall()
        for row in conn.execute("""SELECT s.serial, s.id, b.site_id FROM sensors s
                                   JOIN bridges b ON b.id = s.bridge_id WHERE s.serial = ANY(%s)""", (serials,)):
            self._sensors[row[0]] = Known(row[1], row[2])
        if inserted:
            metrics.SENSORS_DISCOVERED.inc(len(inserted))
            log.info("sensors discovered", count=len(inserted))
        return len(inserted)

    @staticmethod
    def _store_rejections(conn: psycopg.Connection[Any], rejected: list[_Rejected]) -> None:
        copy = "COPY rejected_readings (topic, bridge_serial, sensor_serial, reason, detail, payload) FROM STDIN"
        with conn.cursor() as cur, cur.copy(copy) as cp:
            for r in rejected:
                cp.write_row((r.topic[:512], r.bridge, r.rejection.sensor_serial, r.rejection.reason,
                              r.rejection.detail[:500], r.payload))
