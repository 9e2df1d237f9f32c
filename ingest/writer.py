"""Decoding a batch of packs, then committing it: readings, rejections and rollup work, at once.

`prepare` decodes, maps serials to ids from the catalogue cache and encodes the COPY data
(CPU only, no database); `commit` writes (one transaction). The gateway prepares the next
batch while the last one commits, so commit should hold little but the COPY: a pack whose
bridge or sensors the cache lacks is left unmapped and mapped in `commit`, which can ask
the database. Readings are COPYed straight
into the hypertable inside a savepoint; if any (sensor, time) is already there (a resend),
the savepoint is rolled back and the batch goes through a staging table and
`INSERT … ON CONFLICT DO NOTHING` instead: every reading is stored once either way, and
the common case costs what a bare COPY costs. Only then are the packs acked.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import structlog
from psycopg import sql

from ingest import metrics, sparkplug_host
from ingest.copy import COLUMNS, SensorIds, SensorIdsDumper, encode_readings
from ingest.packs import BatchResult, RawPack, SparkplugNote
from wattline import raw_readings
from wattline.db import connect_long_lived
from wattline.rollup_queue import minutes_read
from wattline.senml import DecodedPack, Limits, Reason, Rejection, bridge_from_topic, decode_pack, encode_pack

log = structlog.get_logger("wattline.ingest")
SPARKPLUG_PREFIX = sparkplug_host.TOPIC_PREFIX
OVER_RATE = "the bridge sent more bytes a second than its share (bridge_max_bytes_per_s)"

_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS staging_readings (
    sensor_id bigint, ts timestamptz, current_a real, voltage_v real, power_factor real, rssi_dbw real,
    power_w real, bridge_id bigint
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


Columns = tuple[np.ndarray[Any, Any], ...]  # one array per COLUMNS entry


@dataclass(frozen=True)
class RollupWork:
    """Queue rows for a batch: one per (minute, shard of sites) it has readings in. Row k
    names `ids[lo[k]:hi[k]]` (1-based, inclusive: PostgreSQL array slices)."""

    minutes: list[float]  # minute start, Unix s
    shards: list[int]
    lo: list[int]
    hi: list[int]
    ids: SensorIds
    row_of: npt.NDArray[np.int64]  # each reading's row, in the batch's order


@dataclass
class Rows:
    """Readings ready to write: binary COPY data and the rollup work they make."""

    count: int
    copy_data: bytes
    dirty: RollupWork | None  # the minutes they fall in, for the rollup queue
    columns: Columns = ()
    days: list[int] = field(default_factory=list)  # UTC day numbers the readings fall on


@dataclass
class Prepared:
    """A decoded batch, not yet written."""

    packs: list[RawPack]
    mapped: list[Columns] = field(default_factory=list)
    unmapped: list[tuple[RawPack, str, DecodedPack]] = field(default_factory=list)  # mapped in commit
    rows: Rows | None = None  # `mapped`, encoded, when nothing is unmapped
    rejected: list[_Rejected] = field(default_factory=list)
    statuses: list[tuple[str, bool, float]] = field(default_factory=list)
    generation: int = 0  # of the catalogue cache it was mapped from


#: Sensor ids whose last committed reading time the writer keeps (8 bytes each, at most
#: 64 MiB): a sensor past it always counts as sending its first reading of a minute.
_STORED_TS_IDS = 1 << 23


class BatchWriter:
    """Owns one connection; `commit` is called from one thread at a time."""

    def __init__(self, database_url: str, *, max_skew_s: float = 300.0, max_age_s: float = 400 * 86400.0,
                 rollup_settle_s: float | None = None, rollup_shards: int = 16,
                 rollup_gap_s: float | None = None) -> None:
        """`rollup_settle_s`: a minute's rollup work is due that long after the minute ends
        (`Settings.rollup_settle_s`); None: due at once (tools, tests). `rollup_shards`:
        `Settings.rollup_queue_shards`. `rollup_gap_s`: the longest gap integration bridges
        (`Settings.gap_factor` reporting intervals); None: every queued minute re-computes
        the minute before it too."""
        self.database_url = database_url
        self.rollup_settle_s = rollup_settle_s
        self.rollup_shards = rollup_shards
        self.rollup_gap_s = rollup_gap_s
        # A committed reading's time per sensor id (NaN: none known), for `_left_pads`.
        self._stored_ts = np.full(0, np.nan)
        self.max_skew_s = max_skew_s
        self.max_age_s = max_age_s
        self._conn: psycopg.Connection[Any] | None = None
        self._generation = 0
        self._forget_catalogue()

    def _forget_catalogue(self) -> None:
        """Empty the catalogue cache. After a failed commit: its transaction may have
        discovered sensors and cached their ids, which the rollback took away again."""
        self._generation += 1
        self._bridges: dict[str, Known] = {}
        self._bridge_site: dict[int, int] = {}  # bridge id -> site id, for the rollup shard
        # serial -> sensor id, serial -> site id, and per site serial -> sensor id: the last
        # maps a pack's serials with one np.fromiter, no tuple per reading, and holds the
        # sites whose sensors have all been loaded. Read by `prepare` while `commit` fills
        # them in another thread: dict operations are atomic under the GIL, and a serial
        # not there yet only leaves its pack for `commit` to map.
        self._sensors: dict[str, int] = {}
        self._sensor_site: dict[str, int] = {}
        self._site_sensors: dict[int, dict[str, int]] = {}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def abort(self) -> None:
        """From another thread: break the connection under a call that hangs (a half-open
        peer), so that the call fails with OperationalError instead of waiting forever.
        Shutting the socket down is safe while libpq uses it; closing it would not be."""
        conn = self._conn
        if conn is None or conn.closed:
            return
        with contextlib.suppress(OSError):
            sock = socket.socket(fileno=os.dup(conn.fileno()))
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.close()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect_long_lived(self.database_url)
            self._conn.adapters.register_dumper(SensorIds, SensorIdsDumper)
            self._conn.execute(_STAGING_DDL)
        return self._conn

    def write(self, packs: list[RawPack]) -> BatchResult:
        return self.commit(self.prepare(packs))

    # -- decoding (no database) ------------------------------------------------------------
    def prepare(self, packs: list[RawPack]) -> Prepared:
        """Decode the packs and map what the cache knows; a pack whose decoding raises is
        rejected alone (`processing_error`), its neighbours go on."""
        out = Prepared(packs, generation=self._generation)
        mapped = _Mapped()
        gathered = _SparkplugReadings()
        for pack in packs:
            if pack.sparkplug is not None and pack.sparkplug.readings:
                _alone(pack, out, lambda p: gathered.add(p, out))
            else:
                _alone(pack, out, lambda p: self._prepare_pack(p, out, mapped))
        for pack in gathered.packs():
            _alone(pack, out, lambda p: self._prepare_pack(p, out, mapped))
        if mapped.ids:
            out.mapped.append(mapped.columns())
        if not out.unmapped:
            out.rows = encode_rows(out.mapped, self._bridge_site, self.rollup_shards)
        return out

    def _prepare_pack(self, pack: RawPack, out: Prepared, mapped: _Mapped) -> None:
        note = pack.sparkplug
        if note is not None:
            _sparkplug_refusals(note, out)
            if pack.topic.startswith(SPARKPLUG_PREFIX):
                return  # a birth, a death, or refused whole: nothing to store but its session
        bridge = bridge_from_topic(pack.topic)
        if bridge is None:
            problem = Rejection(Reason.TOPIC, "not a wattline/v1 bridge topic")
            out.rejected.append(_Rejected(pack.topic, None, problem, pack.payload))
            return
        if pack.limited:
            out.rejected.append(_Rejected(pack.topic, bridge, Rejection(Reason.RATE_LIMITED, OVER_RATE), pack.payload))
            return
        if pack.topic.endswith("/status"):
            out.statuses.append((bridge, pack.payload.strip() == b"online", pack.received_at))
            return
        d = decode_pack(pack.payload, Limits(pack.received_at, self.max_skew_s, self.max_age_s))
        for r in d.rejections:
            raw = r.record if r.record is not None else pack.payload
            out.rejected.append(_Rejected(pack.topic, bridge, r, raw))
        if len(d) and not self._map_cached(bridge, d, mapped):
            out.unmapped.append((pack, bridge, d))

    def _map_cached(self, bridge: str, d: DecodedPack, mapped: _Mapped) -> bool:
        """Add the pack's readings to `mapped` if the cache knows its bridge and all its
        sensors at that bridge's site; False leaves the pack to `commit`."""
        known_bridge = self._bridges.get(bridge)
        if known_bridge is None:
            return False
        site = self._site_sensors.get(known_bridge.site_id)
        if site is None:
            return False
        ids: list[Any] = list(map(site.get, d.serials))
        if None in ids:
            return False
        mapped.add(ids, d, known_bridge.id)
        return True

    # -- writing ------------------------------------------------------------------------------
    def commit(self, batch: Prepared) -> BatchResult:
        """Raises psycopg.OperationalError when the database is unreachable; then nothing of the
        batch is committed and the caller keeps it (spool, retry)."""
        if batch.generation != self._generation:
            batch = self.prepare(batch.packs)  # mapped from a cache that has been forgotten since
        try:
            return self._commit(batch)
        except BaseException:
            self._forget_catalogue()
            raise

    def _commit(self, batch: Prepared) -> BatchResult:
        result = BatchResult(packs=len(batch.packs))
        rejected = list(batch.rejected)
        conn = self._connection()
        with conn.transaction():
            self._resolve_bridges(conn, {b for _, b, _ in batch.unmapped} | {s[0] for s in batch.statuses})
            result.discovered = self._resolve_sensors(conn, batch.unmapped)
            rows = batch.rows
            if rows is None:
                rows = encode_rows(batch.mapped + self._map(conn, batch.unmapped, rejected), self._bridge_site,
                                   self.rollup_shards)
            if rows.count:
                result.readings = rows.count
                result.stored = self._store(conn, rows)
                result.duplicates = result.readings - result.stored
                if rows.dirty is not None:
                    self._queue_rollups(conn, rows.dirty, self._left_pads(conn, rows))
            if rejected:
                self._store_rejections(conn, rejected)
                for rej in rejected:
                    result.rejected[rej.rejection.reason] += 1
            sparkplug_host.save(conn, batch.packs)
            for bridge, online, at in batch.statuses:
                known = self._bridges.get(bridge)
                if known is not None:
                    conn.execute("""INSERT INTO bridge_status (bridge_id, online, changed_at)
                                    VALUES (%s, %s, to_timestamp(%s))
                                    ON CONFLICT (bridge_id) DO UPDATE
                                    SET online = EXCLUDED.online, changed_at = EXCLUDED.changed_at
                                    WHERE bridge_status.changed_at <= EXCLUDED.changed_at""",
                                 (known.id, online, at))
        self._remember_stored(rows)  # committed: a pass that reads these minutes now sees them
        return result

    def _remember_stored(self, rows: Rows) -> None:
        """Note a committed time of each sensor in `rows` (ids past _STORED_TS_IDS stay unknown)."""
        if not rows.count:
            return
        ids, ts = rows.columns[0], rows.columns[1]
        keep = ids < _STORED_TS_IDS
        ids, ts = ids[keep], ts[keep]
        if len(ids) and int(ids.max()) >= len(self._stored_ts):
            grown = np.full(min(_STORED_TS_IDS, max(int(ids.max()) + 1, 2 * len(self._stored_ts))), np.nan)
            grown[:len(self._stored_ts)] = self._stored_ts
            self._stored_ts = grown
        self._stored_ts[ids] = ts

    def _left_pads(self, conn: psycopg.Connection[Any], rows: Rows) -> list[bool]:
        """Per queue row of `rows.dirty`: must its pass re-compute the minute before its own?

        A reading changes the minute before its own only as its sensor's first reading of
        the minute, within the integration gap of the minute's start (the segment from the
        sensor's last reading before). Such a reading matters only if a pass may already
        have read that minute without it (`rollup_queue.minutes_read`): then its queue row
        says so, and its pass re-computes the minute before. A sensor with a reading
        committed earlier in [minute start, this reading] has had its first already."""
        work = rows.dirty
        assert work is not None
        if self.rollup_gap_s is None:
            return [True] * len(work.minutes)
        ids, ts = rows.columns[0], rows.columns[1]
        starts = np.floor(ts / 60.0) * 60.0
        early = np.flatnonzero(ts < starts + self.rollup_gap_s)
        known = np.full(len(early), np.nan)
        inside = ids[early] < len(self._stored_ts)
        known[inside] = self._stored_ts[ids[early][inside]]
        first = early[~((known >= starts[early]) & (known <= ts[early]))]  # NaN compares False
        if not len(first):
            return [False] * len(work.minutes)
        holds_first = np.zeros(len(work.minutes), dtype=np.bool_)
        holds_first[work.row_of[first]] = True
        has_first: list[bool] = holds_first.tolist()
        before = [(shard, m - 60.0) for shard, m, f in zip(work.shards, work.minutes, has_first, strict=True) if f]
        read = minutes_read(conn, before)
        return [f and (shard, m - 60.0) in read for shard, m, f in zip(work.shards, work.minutes, has_first,
                                                                        strict=True)]

    def _queue_rollups(self, conn: psycopg.Connection[Any], work: RollupWork, left_pads: list[bool]) -> None:
        """One computation per closed minute, not one per batch: every batch of a minute's
        readings in a shard is taken by the same pass once it is due. One statement: the
        rows slice one id array, so a batch across many shards costs one round trip."""
        settle = self.rollup_settle_s
        due = [0.0 if settle is None else m + 60.0 + settle for m in work.minutes]  # 0: now
        conn.execute("""INSERT INTO rollup_dirty (ts_from, ts_to, sensor_ids, not_before, shard, left_pad)
                        SELECT to_timestamp(w.m), to_timestamp(w.m) + interval '1 minute',
                               (%(ids)b::bigint[])[w.lo:w.hi], greatest(now(), to_timestamp(w.due)), w.shard, w.pad
                        FROM unnest(%(m)s::float8[], %(due)s::float8[], %(shard)s::int[], %(lo)s::int[],
                                    %(hi)s::int[], %(pad)s::bool[]) AS w(m, due, shard, lo, hi, pad)""",
                     {"ids": work.ids, "m": work.minutes, "due": due, "shard": work.shards, "lo": work.lo,
                      "hi": work.hi, "pad": left_pads})

    def _map(self, conn: psycopg.Connection[Any], unmapped: list[tuple[RawPack, str, DecodedPack]],
             rejected: list[_Rejected]) -> list[Columns]:
        """Columns of the packs the cache could not map, after `_resolve_*` asked the database:
        an unknown bridge, or a sensor now at another site than its pack's bridge, is rejected."""
        parts: list[Columns] = []
        for pack, bridge, d in unmapped:
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
            if not keep.any():
                continue
            ids = np.fromiter(map(self._sensors.__getitem__, d.serials), dtype=np.int64, count=n_all)
            parts.append(tuple(column[keep] for column in _columns(ids, d, known_bridge.id)))
        return parts

    def _store(self, conn: psycopg.Connection[Any], rows: Rows) -> int:
        """Store the rows; returns how many were new. Holds a shared lock on each day they fall
        on (the packing job takes it exclusively); readings of a day whose packing has begun go
        through `merge_late` (wattline.raw_readings explains the protocol)."""
        packed = raw_readings.lock_days(conn, rows.days)
        if not packed:
            return self._copy(conn, rows.copy_data, rows.count)
        sensor_ids, ts, current, volts, pf, rssi, power, bridge = rows.columns
        ts_us = np.rint(np.asarray(ts, dtype=np.float64) * 1e6).astype(np.int64)
        late = np.isin(raw_readings.day_of(ts_us), list(packed))
        raw = raw_readings.concat([raw_readings.Raw.build(*(np.asarray(c)[late] for c in (
            sensor_ids, ts_us, current, volts, pf, rssi, power, bridge)))])
        merged, leftover = raw_readings.merge_late(conn, raw)
        metrics.LATE_MERGED.inc(merged)
        rest = raw.take(leftover)
        hot = [np.concatenate([c[~late], r]) for c, r in zip(
            rows.columns, (rest.sensor_id, rest.ts_s, rest.current_a, rest.voltage_v, rest.power_factor,
                           rest.rssi_dbw, rest.power_w, rest.bridge_id), strict=True)]
        if not len(hot[0]):
            return merged
        return merged + self._copy(conn, encode_readings(*hot), len(hot[0]))

    def _copy(self, conn: psycopg.Connection[Any], copy_data: bytes, count: int) -> int:
        """COPY into `readings`; returns how many were new."""
        try:
            with conn.transaction(), conn.cursor() as cur, cur.copy(
                    f"COPY readings ({_COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(copy_data)
            return count
        except psycopg.errors.UniqueViolation:
            pass  # a resend: some of these are stored already
        with conn.cursor() as cur:
            with cur.copy(f"COPY staging_readings ({_COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(copy_data)
            cur.execute(sql.SQL("""INSERT INTO readings ({columns}) SELECT {columns} FROM staging_readings
                                   ON CONFLICT (sensor_id, ts) DO NOTHING""").format(columns=sql.SQL(_COPY_COLUMNS)))
            stored = cur.rowcount
            cur.execute("TRUNCATE staging_readings")
        return stored

    # -- the catalogue cache -----------------------------------------------------------------
    def _resolve_bridges(self, conn: psycopg.Connection[Any], serials: set[str]) -> None:
        missing = [s for s in serials if s not in self._bridges]
        if missing:
            for row in conn.execute("SELECT serial, id, site_id FROM bridges WHERE serial = ANY(%s)", (missing,)):
                self._bridges[row[0]] = Known(row[1], row[2])
                self._bridge_site[row[1]] = row[2]

    def _resolve_sensors(self, conn: psycopg.Connection[Any], unmapped: list[tuple[RawPack, str, DecodedPack]]) -> int:
        """Ids for every serial of the packs the cache could not map: a site's sensors all
        load the first time one of its packs is seen, and serials never heard of are
        recorded as discovered on their bridge. Returns how many were new."""
        bridges = [(self._bridges[bridge], d) for _, bridge, d in unmapped if bridge in self._bridges]
        sites = {b.site_id for b, _ in bridges} - self._site_sensors.keys()
        if sites:
            for site_id in sites:
                self._site_sensors[site_id] = {}
            self._load_sensors(conn, "b.site_id", list(sites))
        wanted: dict[str, Known] = {}
        sensors = self._sensors
        for known_bridge, d in bridges:
            # Not `set(...) - sensors.keys()`: that copies all cached keys into a set per pack.
            for serial in [s for s in d.serials if s not in sensors]:
                wanted[serial] = known_bridge
        unknown = list(wanted)
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
                sql.SQL("""SELECT s.serial, s.id, b.site_id FROM sensors s JOIN bridges b ON b.id = s.bridge_id
                           WHERE {} = ANY(%s)""").format(sql.Identifier(*column.split("."))), (values,)):
            moved_from = self._sensor_site.get(serial)
            if moved_from is not None and moved_from != site_id:
                self._site_sensors.get(moved_from, {}).pop(serial, None)
            self._sensors[serial] = sensor_id
            self._sensor_site[serial] = site_id
            loaded = self._site_sensors.get(site_id)
            if loaded is not None:
                loaded[serial] = sensor_id

    def reject_unprocessable(self, pack: RawPack, exc: BaseException) -> None:
        """Keep a pack that could not be processed, byte for byte, with the reason."""
        conn = self._connection()
        with conn.transaction():
            self._store_rejections(conn, [_unprocessable(pack, exc)])

    @staticmethod
    def _store_rejections(conn: psycopg.Connection[Any], rejected: list[_Rejected]) -> None:
        copy = "COPY rejected_readings (topic, bridge_serial, sensor_serial, reason, detail, payload) FROM STDIN"
        with conn.cursor() as cur, cur.copy(copy) as cp:
            for r in rejected:
                cp.write_row((r.topic[:512], r.bridge, r.rejection.sensor_serial, r.rejection.reason,
                              r.rejection.detail[:500], r.payload))


def _alone(pack: RawPack, out: Prepared, prepare: Callable[[RawPack], None]) -> None:
    """Prepare one pack; if that raises, nothing of the pack stays but its rejection
    (`processing_error`), and its neighbours go on."""
    marks = len(out.rejected), len(out.statuses), len(out.unmapped)
    try:
        prepare(pack)
    except Exception as exc:
        del out.rejected[marks[0]:], out.statuses[marks[1]:], out.unmapped[marks[2]:]
        out.rejected.append(_unprocessable(pack, exc))


def _sparkplug_refusals(note: SparkplugNote, out: Prepared) -> None:
    for refusal in note.refused:
        out.rejected.append(_Rejected(note.topic, note.key[1] if note.key else None, Rejection(
            refusal.reason, refusal.detail, refusal.sensor), note.payload))


class _SparkplugReadings:
    """A batch's Sparkplug readings, bridge by bridge, decoded as one SenML pack each: a
    Sparkplug message carries a reading or a few, and a pack's decoding costs about the
    same whatever it holds. The readings' rules are SenML's (time skew against the latest
    receipt of the bridge's messages, age, ranges). A (sensor, time) that comes twice (a
    redelivery) is gathered once: the store would keep one anyway, and in one pack SenML
    would refuse the second as `duplicate_in_pack`."""

    def __init__(self) -> None:
        self._readings: dict[str, dict[tuple[str, float], float]] = {}
        self._received: dict[str, float] = {}

    def add(self, pack: RawPack, out: Prepared) -> None:
        note = pack.sparkplug
        assert note is not None
        _sparkplug_refusals(note, out)
        if pack.limited:
            out.rejected.append(_Rejected(pack.topic, bridge_from_topic(pack.topic),
                                          Rejection(Reason.RATE_LIMITED, OVER_RATE), encode_pack(list(note.readings))))
            return
        bridge = self._readings.setdefault(pack.topic, {})
        for sensor, ts, amps in note.readings:
            bridge.setdefault((sensor, ts), amps)
        self._received[pack.topic] = max(self._received.get(pack.topic, 0.0), pack.received_at)

    def packs(self) -> list[RawPack]:
        return [RawPack(topic, encode_pack([(sensor, ts, amps) for (sensor, ts), amps in readings.items()]),
                        self._received[topic]) for topic, readings in self._readings.items()]


def _unprocessable(pack: RawPack, exc: BaseException) -> _Rejected:
    bridge = bridge_from_topic(pack.topic) if isinstance(pack.topic, str) else None
    detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".replace("\x00", "")
    return _Rejected(str(pack.topic).replace("\x00", ""), bridge, Rejection(Reason.PROCESSING_ERROR, detail),
                     pack.payload)


class _Mapped:
    """A batch's mapped readings as plain lists, turned into arrays once per batch: at tens
    of readings a pack, seven small arrays per pack cost more than the readings in them.
    Voltage, power factor, RSSI and power are NaN unless a pack measured them (most do not): only
    those packs' values are copied, into arrays made NaN at once."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.ts: list[float] = []
        self.current: list[float] = []
        self.bridge: list[int] = []
        self.measured: list[tuple[int, DecodedPack]] = []  # (first row, pack) of packs with extras

    def add(self, ids: list[int], d: DecodedPack, bridge_id: int) -> None:
        if d.measured_extra:
            self.measured.append((len(self.ids), d))
        self.ids += ids
        self.ts += d.ts
        self.current += d.current
        self.bridge += [bridge_id] * len(ids)

    def columns(self) -> Columns:
        rows = len(self.ids)
        voltage, power_factor, rssi, power = (np.full(rows, np.nan) for _ in range(4))
        for first, d in self.measured:
            end = first + len(d)
            voltage[first:end], power_factor[first:end], rssi[first:end] = d.voltage, d.power_factor, d.rssi
            power[first:end] = d.power
        return (np.array(self.ids, dtype=np.int64), np.array(self.ts, dtype=np.float64),
                np.array(self.current, dtype=np.float64), voltage, power_factor, rssi, power,
                np.array(self.bridge, dtype=np.int64))


def _columns(ids: np.ndarray[Any, Any], d: DecodedPack, bridge_id: int) -> Columns:
    return (ids, np.asarray(d.ts), np.asarray(d.current), np.asarray(d.voltage), np.asarray(d.power_factor),
            np.asarray(d.rssi), np.asarray(d.power), np.full(len(ids), bridge_id, dtype=np.int64))


def encode_rows(parts: list[Columns], bridge_site: dict[int, int] | None = None, shards: int = 1) -> Rows:
    """Concatenate packs' columns into COPY data and the rollup work of each touched minute.
    `bridge_site` (bridge id -> site id) puts each reading's work in its site's shard
    (site id modulo `shards`); a bridge it lacks goes to shard 0."""
    if not parts:
        return Rows(0, b"", None)
    columns = tuple(np.concatenate([p[i] for p in parts]) for i in range(len(COLUMNS)))
    minutes = np.floor(columns[1] / 60.0).astype(np.int64)
    first, last = int(minutes.min()), int(minutes.max())
    days = list(range(first // 1440, last // 1440 + 1)) if last - first <= 2880 else np.unique(minutes // 1440).tolist()
    work = rollup_work(columns[0], minutes, columns[COLUMNS.index("bridge_id")], bridge_site or {}, shards)
    return Rows(len(columns[0]), encode_readings(*columns), work, columns, days)


def rollup_work(sensor_ids: npt.NDArray[np.int64], minutes: npt.NDArray[np.int64], bridges: npt.NDArray[np.int64],
                bridge_site: dict[int, int], shards: int) -> RollupWork:
    """Group a batch's sensor ids by (minute, shard). A real-time batch touches a minute or
    two, so the group number is small and numpy's stable sort of it is a radix sort: no
    comparison sort of 100,000 keys. A sensor named twice in a group is harmless (the
    worker takes a set)."""
    first, last = int(minutes.min()), int(minutes.max())
    if last - first <= 60:
        starts, minute_no = np.arange(first, last + 1), minutes - first
    else:  # a spool replay or late data over days
        starts, minute_no = np.unique(minutes, return_inverse=True)
    by_bridge, which = np.unique(bridges, return_inverse=True)
    shard = (np.fromiter((bridge_site.get(b, 0) for b in by_bridge.tolist()), np.int64, len(by_bridge))
             % shards)[which]
    group = minute_no * shards + shard
    groups = len(starts) * shards
    order = np.argsort(group.astype(np.int16) if groups < 2**15 else group, kind="stable")
    counts = np.bincount(group, minlength=groups)
    ends = np.cumsum(counts)
    present = np.flatnonzero(counts)
    row_of_group = np.zeros(groups, dtype=np.int64)
    row_of_group[present] = np.arange(len(present))
    return RollupWork(minutes=(starts[present // shards] * 60.0).tolist(), shards=(present % shards).tolist(),
                      lo=(ends[present] - counts[present] + 1).tolist(), hi=ends[present].tolist(),
                      ids=SensorIds(sensor_ids[order]), row_of=row_of_group[group])
