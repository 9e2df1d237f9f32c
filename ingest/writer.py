"""Decoding a batch of packs, then committing it: readings, rejections and rollup work, at once.

`prepare` decodes (CPU only, no database), `commit` writes (one transaction), so that the
gateway can decode the next batch while the last one commits. Readings are COPYed straight
into the hypertable inside a savepoint; if any (sensor, time) is already there (a resend),
the savepoint is rolled back and the batch goes through a staging table and
`INSERT … ON CONFLICT DO NOTHING` instead: every reading is stored once either way, and
the common case costs what a bare COPY costs. Only then are the packs acked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
import structlog

from ingest import metrics
from ingest.copy import COLUMNS, encode_readings
from ingest.packs import BatchResult, RawPack
from wattline.senml import DecodedPack, Limits, Reason, Rejection, bridge_from_topic, decode_pack

log = structlog.get_logger("wattline.ingest")

_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS staging_readings (
    sensor_id bigint, ts timestamptz, current_a real, voltage_v real, power_factor real, rssi_dbw real,
    bridge_id bigint
) ON COMMIT DELETE ROWS"""
_COPY_COLUMNS = ", ".join(COLUMNS)


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


@dataclass
class Prepared:
    """A decoded batch, not yet written."""

    packs: list[RawPack]
    decoded: list[tuple[RawPack, str, DecodedPack]] = field(default_factory=list)
    rejected: list[_Rejected] = field(default_factory=list)
    statuses: list[tuple[str, bool, float]] = field(default_factory=list)


class BatchWriter:
    """Owns one connection; `commit` is called from one thread at a time."""

    def __init__(self, database_url: str, *, max_skew_s: float = 300.0, max_age_s: float = 400 * 86400.0) -> None:
        self.database_url = database_url
        self.max_skew_s = max_skew_s
        self.max_age_s = max_age_s
        self._conn: psycopg.Connection[Any] | None = None
        self._bridges: dict[str, Known] = {}
        # serial -> sensor id, and serial -> site id: two dicts so that np.fromiter can map a
        # pack's serials without building a tuple per reading.
        self._sensors: dict[str, int] = {}
        self._sensor_site: dict[str, int] = {}
        self._sites_loaded: set[int] = set()

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
        return self.commit(self.prepare(packs))

    # -- decoding (no database) ------------------------------------------------------------
    def prepare(self, packs: list[RawPack]) -> Prepared:
        out = Prepared(packs)
        for pack in packs:
            bridge = bridge_from_topic(pack.topic)
            if bridge is None:
                problem = Rejection(Reason.TOPIC, "not a wattline/v1 bridge topic")
                out.rejected.append(_Rejected(pack.topic, None, problem, pack.payload))
                continue
            if pack.topic.endswith("/status"):
                out.statuses.append((bridge, pack.payload.strip() == b"online", pack.received_at))
                continue
            d = decode_pack(pack.payload, Limits(pack.received_at, self.max_skew_s, self.max_age_s))
            for r in d.rejections:
                raw = r.record if r.record is not None else pack.payload
                out.rejected.append(_Rejected(pack.topic, bridge, r, raw))
            if len(d):
                out.decoded.append((pack, bridge, d))
        return out

    # -- writing ------------------------------------------------------------------------------
    def commit(self, batch: Prepared) -> BatchResult:
        """Raises psycopg.OperationalError when the database is unreachable; then nothing of the
        batch is committed and the caller keeps it (spool, retry)."""
        result = BatchResult(packs=len(batch.packs))
        rejected = list(batch.rejected)
        conn = self._connection()
        with conn.transaction():
            self._resolve_bridges(conn, {b for _, b, _ in batch.decoded} | {s[0] for s in batch.statuses})
            result.discovered = self._resolve_sensors(conn, batch.decoded)
            columns = self._columns(conn, batch.decoded, rejected)
            if columns is not None:
                result.readings = len(columns[0])
                result.stored = self._store(conn, columns)
                result.duplicates = result.readings - result.stored
                self._queue_rollups(conn, columns[0], columns[1])
            if rejected:
                self._store_rejections(conn, rejected)
                for rej in rejected:
                    result.rejected[rej.rejection.reason] += 1
            for bridge, online, at in batch.statuses:
                known = self._bridges.get(bridge)
                if known is not None:
                    conn.execute("""INSERT INTO bridge_status (bridge_id, online, changed_at)
                                    VALUES (%s, %s, to_timestamp(%s))
                                    ON CONFLICT (bridge_id) DO UPDATE
                                    SET online = EXCLUDED.online, changed_at = EXCLUDED.changed_at
                                    WHERE bridge_status.changed_at <= EXCLUDED.changed_at""",
                                 (known.id, online, at))
        return result

    def _columns(self, conn: psycopg.Connection[Any], decoded: list[tuple[RawPack, str, DecodedPack]],
                 rejected: list[_Rejected]) -> tuple[np.ndarray[Any, Any], ...] | None:
        parts: list[tuple[np.ndarray[Any, Any], ...]] = []
        for pack, bridge, d in decoded:
            known_bridge = self._bridges.get(bridge)
            if known_bridge is None:
                rejected.append(_Rejected(pack.topic, bridge, Rejection(
                    Reason.UNKNOWN_BRIDGE, f"bridge {bridge} is not in the catalogue"), pack.payload))
                continue
            n_all = len(d.serials)
            sites = np.fromiter(map(self._sensor_site.__getitem__, d.serials), dtype=np.int64, count=n_all)
            keep = sites == known_bridge.site_id
            if not keep.all():
                keep = self._recheck_sites(conn, d.serials, keep, known_bridge.site_id)
                for i in np.nonzero(~keep)[0]:
                    serial = d.serials[int(i)]
                    rejected.append(_Rejected(pack.topic, bridge, Rejection(
                        Reason.SPOOFED_SENSOR, f"sensor {serial} belongs to another site", serial),
                        pack.payload))
            n = int(keep.sum())
            if n == 0:
                continue
            ids = np.fromiter(map(self._sensors.__getitem__, d.serials), dtype=np.int64, count=n_all)
            parts.append((ids[keep], np.asarray(d.ts)[keep], np.asarray(d.current)[keep],
                          np.asarray(d.voltage)[keep], np.asarray(d.power_factor)[keep], np.asarray(d.rssi)[keep],
                          np.full(n, known_bridge.id, dtype=np.int64)))
        if not parts:
            return None
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(7))

    def _store(self, conn: psycopg.Connection[Any], columns: tuple[np.ndarray[Any, Any], ...]) -> int:
        data = encode_readings(*columns)
        try:
            with conn.transaction(), conn.cursor() as cur, cur.copy(
                    f"COPY readings ({_COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(data)
            return len(columns[0])
        except psycopg.errors.UniqueViolation:
            pass  # a resend: some of these are stored already
        with conn.cursor() as cur:
            with cur.copy(f"COPY staging_readings ({_COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(data)
            cur.execute(f"""INSERT INTO readings ({_COPY_COLUMNS}) SELECT {_COPY_COLUMNS} FROM staging_readings
                            ON CONFLICT (sensor_id, ts) DO NOTHING""")
            stored = cur.rowcount
            cur.execute("TRUNCATE staging_readings")
        return stored

    @staticmethod
    def _queue_rollups(conn: psycopg.Connection[Any], sensor_ids: np.ndarray[Any, Any],
                       ts: np.ndarray[Any, Any]) -> None:
        """One work-queue row per touched minute, naming the sensors with readings in it."""
        minutes = np.floor(ts / 60.0).astype(np.int64)
        first, last = int(minutes.min()), int(minutes.max())
        # A real-time batch touches a minute or two: a mask per minute beats sorting 100,000
        # keys. A sensor named twice in a minute is harmless (the worker takes a set).
        span = range(first, last + 1) if last - first <= 60 else np.unique(minutes).tolist()
        rows = []
        for minute in span:
            chunk = sensor_ids[minutes == minute]
            if len(chunk):
                # An array literal as text: far cheaper than adapting 100,000 Python ints.
                rows.append((minute * 60, "{" + ",".join(map(str, chunk.tolist())) + "}"))
        with conn.cursor() as cur:
            cur.executemany("""INSERT INTO rollup_dirty (ts_from, ts_to, sensor_ids)
                               VALUES (to_timestamp(%s), to_timestamp(%s) + interval '1 minute', %s::bigint[])""",
                            [(m, m, ids) for m, ids in rows])

    # -- the catalogue cache -----------------------------------------------------------------
    def _resolve_bridges(self, conn: psycopg.Connection[Any], serials: set[str]) -> None:
        missing = [s for s in serials if s not in self._bridges]
        if missing:
            for row in conn.execute("SELECT serial, id, site_id FROM bridges WHERE serial = ANY(%s)", (missing,)):
                self._bridges[row[0]] = Known(row[1], row[2])

    def _resolve_sensors(self, conn: psycopg.Connection[Any], decoded: list[tuple[RawPack, str, DecodedPack]]) -> int:
        """Ids for every serial: a whole site's sensors load on its first miss, and serials
        never heard of are recorded as discovered on their bridge. Returns how many were new."""
        wanted: dict[str, Known] = {}
        sensors = self._sensors
        for _, bridge, d in decoded:
            known_bridge = self._bridges.get(bridge)
            if known_bridge is None:
                continue
            # Not `set(...) - sensors.keys()`: that copies all cached keys into a set per pack.
            for serial in [s for s in d.serials if s not in sensors]:
                wanted[serial] = known_bridge
        if not wanted:
            return 0
        sites = {k.site_id for k in wanted.values()} - self._sites_loaded
        if sites:
            self._load_sensors(conn, "b.site_id", list(sites))
            self._sites_loaded |= sites
        unknown = [s for s in wanted if s not in self._sensors]
        if not unknown:
            return 0
        inserted = conn.execute(
            """INSERT INTO sensors (serial, bridge_id, first_seen_at)
               SELECT s, b, now() FROM unnest(%s::text[], %s::bigint[]) AS u(s, b)
               ON CONFLICT (serial) DO NOTHING RETURNING serial""",
            (unknown, [wanted[s].id for s in unknown])).fetchall()
        self._load_sensors(conn, "s.serial", unknown)
        if inserted:
            metrics.SENSORS_DISCOVERED.inc(len(inserted))
            log.info("sensors discovered", count=len(inserted))
        return len(inserted)

    def _recheck_sites(self, conn: psycopg.Connection[Any], serials: Sequence[str], keep: np.ndarray[Any, Any],
                       site_id: int) -> np.ndarray[Any, Any]:
        """A sensor seen at another site may have been moved by an installer: ask the
        database before calling it spoofed."""
        self._load_sensors(conn, "s.serial", [serials[int(i)] for i in np.nonzero(~keep)[0]])
        return np.array([self._sensor_site[s] == site_id for s in serials], dtype=bool)

    def _load_sensors(self, conn: psycopg.Connection[Any], column: str, values: list[Any]) -> None:
        """Cache id and site of the sensors whose `column` (s.serial or b.site_id) is in `values`."""
        for serial, sensor_id, site_id in conn.execute(
                f"""SELECT s.serial, s.id, b.site_id FROM sensors s JOIN bridges b ON b.id = s.bridge_id
                    WHERE {column} = ANY(%s)""", (values,)):
            self._sensors[serial] = sensor_id
            self._sensor_site[serial] = site_id

    @staticmethod
    def _store_rejections(conn: psycopg.Connection[Any], rejected: list[_Rejected]) -> None:
        copy = "COPY rejected_readings (topic, bridge_serial, sensor_serial, reason, detail, payload) FROM STDIN"
        with conn.cursor() as cur, cur.copy(copy) as cp:
            for r in rejected:
                cp.write_row((r.topic[:512], r.bridge, r.rejection.sensor_serial, r.rejection.reason,
                              r.rejection.detail[:500], r.payload))



