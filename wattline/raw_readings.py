"""Raw readings in two tiers, read the same way.

- `readings`: one row per (sensor, time), as the gateway writes them.
- `readings_packed`: one row per sensor and UTC day, compressed by `wattline.packing`, for
  days older than the late-data window (`WATTLINE_LATE_WINDOW_HOURS`, default 48).

Each (sensor, time) lives in exactly one tier. Three parties move readings, and an advisory
lock per UTC day (class `DAY_LOCK`) keeps them apart:

- the packing job (`packed_tier.pack_day`) holds it exclusively while it packs a batch of
  sensors' day into packed rows (one transaction), and while it finally drops the day's
  chunk of `readings`. In between, a packed (sensor, day) has rows in both tiers and the
  packed row is the one that counts; a kill at any point loses and doubles nothing;
- ingest holds it shared while it writes readings of that day. For a day whose packing has
  begun (`packed_days`), a sensor that already has a packed row gets its readings merged in
  (`merge_late`: unpack, merge, re-pack, under the row's lock); one that has none is
  inserted into `readings` as usual, for the job to pick up;
- readers read the hot tier, then the packed tier (`read`: a reading leaves `readings` only
  in or after the transaction that commits its packed row, which never goes away), and drop
  the `readings` rows of a (sensor, day) whose packed row they got: each reading once.

A packed row that fails its checksum is moved to `readings_packed_quarantine`, counted and
logged; it is never read as data (its readings read as a gap, not as zeros).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import structlog
from prometheus_client import Counter
from psycopg import sql
from psycopg.rows import tuple_row

from wattline.db import PG_EPOCH_US, copy_out_arrays, id_array

log = structlog.get_logger("wattline.raw_readings")

#: Advisory lock class of a reading day; the key is the day's number since 1970 (sql/026).
DAY_LOCK = 20
DAY_US = 86_400_000_000

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]

CORRUPT = Counter("wattline_packed_rows_corrupt_total", "Packed rows that failed their checksum and were quarantined")


@dataclass(frozen=True)
class Raw:
    """Readings of several sensors, ordered by (sensor, time), each (sensor, time) once.
    Optional columns are NaN where a reading has none; times in Unix microseconds."""

    sensor_id: I64
    ts_us: I64
    current_a: F32
    voltage_v: F32
    power_factor: F32
    rssi_dbw: F32
    power_w: F32  # a meter's signed power (migration 037); NaN for a clamp
    bridge_id: I64

    @classmethod
    def build(cls, sensor_id: npt.ArrayLike, ts_us: npt.ArrayLike, current_a: npt.ArrayLike, voltage_v: npt.ArrayLike,
              power_factor: npt.ArrayLike, rssi_dbw: npt.ArrayLike, power_w: npt.ArrayLike,
              bridge_id: npt.ArrayLike) -> Raw:
        """Columns in any array form, cast to the stored types."""
        f32 = [np.ascontiguousarray(c, dtype=np.float32) for c in (current_a, voltage_v, power_factor, rssi_dbw,
                                                                   power_w)]
        return cls(np.ascontiguousarray(sensor_id, dtype=np.int64), np.ascontiguousarray(ts_us, dtype=np.int64),
                   f32[0], f32[1], f32[2], f32[3], f32[4], np.ascontiguousarray(bridge_id, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ts_us)

    @property
    def ts_s(self) -> npt.NDArray[np.float64]:
        """Times in Unix seconds."""
        return self.ts_us / 1e6

    def take(self, pick: npt.NDArray[Any] | slice) -> Raw:
        """The readings a mask, index array or slice picks."""
        return Raw(*(np.ascontiguousarray(getattr(self, f)[pick]) for f in _FIELDS))


_FIELDS = ("sensor_id", "ts_us", "current_a", "voltage_v", "power_factor", "rssi_dbw", "power_w", "bridge_id")


def empty() -> Raw:
    """No readings."""
    f = np.empty(0, dtype=np.float32)
    return Raw(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), f, f, f, f, f, np.empty(0, dtype=np.int64))


#: Bounds for "no bound": datetime's own range (years 1 to 9999), beyond any reading's.
_NEVER, _ALWAYS = -62_135_596_800_000_000, 253_402_300_799_000_000


def _us(t: datetime | float) -> int:
    if isinstance(t, int | float):
        return _ALWAYS if t == float("inf") else _NEVER if t == float("-inf") else round(t * 1e6)
    return round(t.timestamp() * 1e6)


def _dt(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def day_of(ts_us: I64) -> I64:
    """The UTC day number (since 1970) of each time."""
    return np.floor_divide(ts_us, DAY_US)


def concat(parts: Sequence[Raw]) -> Raw:
    """Parts merged into one ordered set; where a (sensor, time) repeats, the earliest part wins
    (callers put the tier stored first first)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty()
    if len(parts) == 1 and _in_order(parts[0]):
        return parts[0]  # the usual read: one tier's rows, as the (sensor, ts) index gave them
    cols = [np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS]
    order = np.lexsort((cols[1], cols[0]))  # stable: ties keep the earlier part first
    cols = [c[order] for c in cols]
    keep = np.ones(len(order), dtype=bool)
    keep[1:] = (cols[0][1:] != cols[0][:-1]) | (cols[1][1:] != cols[1][:-1])
    return Raw(*(np.ascontiguousarray(c[keep]) for c in cols))


def _in_order(raw: Raw) -> bool:
    """Whether the readings are ordered by (sensor, time) with no (sensor, time) twice."""
    s, t = raw.sensor_id, raw.ts_us
    return bool(np.all((s[1:] > s[:-1]) | ((s[1:] == s[:-1]) & (t[1:] > t[:-1]))))


def _q(conn: psycopg.Connection[Any], query: str, params: Any = None) -> psycopg.Cursor[tuple[Any, ...]]:
    """Execute on a tuple-row cursor, whatever row factory the caller's connection has."""
    return conn.cursor(row_factory=tuple_row).execute(query, params)


# -- packed rows ---------------------------------------------------------------------------------
def _expand_bridges(ids: Sequence[int], runs: Sequence[int], n: int) -> I64:
    out = np.repeat(np.asarray(ids, dtype=np.int64), np.asarray(runs, dtype=np.int64))
    if len(out) != n:
        from wattline.packing import CorruptPack
        raise CorruptPack(f"bridge runs cover {len(out)} readings, the row has {n}")
    return out


def _runs(bridge_id: I64) -> tuple[list[int], list[int]]:
    starts = np.flatnonzero(np.r_[True, bridge_id[1:] != bridge_id[:-1]])
    lengths = np.diff(np.r_[starts, len(bridge_id)])
    return bridge_id[starts].tolist(), lengths.tolist()


def unpack_row(sensor_id: int, data: bytes | memoryview, bridge_ids: Sequence[int], bridge_runs: Sequence[int]) -> Raw:
    """A packed row's readings; `CorruptPack` if it does not check out."""
    from wattline.packing import unpack
    r = unpack(data)
    n = len(r)
    return Raw(np.full(n, sensor_id, dtype=np.int64), r.ts_us, r.current_a, r.voltage_v, r.power_factor, r.rssi_dbw,
               r.power_w,
               _expand_bridges(bridge_ids, bridge_runs, n))


@dataclass(frozen=True)
class PackedRow:
    """A sensor's day as a `readings_packed` row."""

    sensor_id: int
    day: datetime
    data: bytes
    n: int
    first_ts: datetime
    last_ts: datetime
    bridge_ids: list[int]
    bridge_runs: list[int]
    last_current_a: float
    last_rssi_dbw: float | None

    def values(self) -> tuple[Any, ...]:
        """Parameters of `_UPSERT`."""
        return (self.sensor_id, self.day, self.first_ts, self.last_ts, self.n, self.bridge_ids, self.bridge_runs,
                self.last_current_a, self.last_rssi_dbw, self.data)


def pack_row(raw: Raw, day: int) -> PackedRow:
    """One sensor's readings of one UTC day (ordered, unique times) as a packed row."""
    from wattline.packing import Readings, pack
    data = pack(Readings(raw.ts_us, raw.current_a, raw.voltage_v, raw.power_factor, raw.rssi_dbw, raw.power_w))
    ids, runs = _runs(raw.bridge_id)
    rssi = float(raw.rssi_dbw[-1])
    return PackedRow(int(raw.sensor_id[0]), _dt(day * DAY_US), data, len(raw), _dt(int(raw.ts_us[0])),
                     _dt(int(raw.ts_us[-1])), ids, runs, float(raw.current_a[-1]), None if rssi != rssi else rssi)


_UPSERT = """INSERT INTO readings_packed (sensor_id, day, first_ts, last_ts, n, bridge_ids, bridge_runs,
                                          last_current_a, last_rssi_dbw, data)
              VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
              ON CONFLICT (sensor_id, day) DO UPDATE SET first_ts = EXCLUDED.first_ts, last_ts = EXCLUDED.last_ts,
                  n = EXCLUDED.n, bridge_ids = EXCLUDED.bridge_ids, bridge_runs = EXCLUDED.bridge_runs,
                  last_current_a = EXCLUDED.last_current_a, last_rssi_dbw = EXCLUDED.last_rssi_dbw,
                  data = EXCLUDED.data, packed_at = now()"""


def write_rows(conn: psycopg.Connection[Any], rows: Iterable[PackedRow]) -> int:
    """Insert or replace packed rows; returns how many."""
    values = [r.values() for r in rows]
    if values:
        with conn.cursor() as cur:
            cur.executemany(_UPSERT, values)
    return len(values)


def quarantine(conn: psycopg.Connection[Any], sensor_id: int, day: datetime, reason: str) -> None:
    """Move a packed row that does not check out aside, byte for byte; never raises (a reader
    in a read-only transaction only reports it, and the packing job's scrub moves it later)."""
    CORRUPT.inc()
    log.error("packed row corrupt", sensor_id=sensor_id, day=day.date().isoformat(), reason=reason)
    try:
        with conn.transaction():
            _q(conn, """WITH moved AS (DELETE FROM readings_packed WHERE sensor_id = %s AND day = %s
                                           RETURNING sensor_id, day, data)
                            INSERT INTO readings_packed_quarantine (sensor_id, day, reason, data)
                            SELECT sensor_id, day, %s, data FROM moved""", (sensor_id, day, reason))
    except psycopg.Error as exc:
        log.warning("packed row left for the scrub", sensor_id=sensor_id, error=type(exc).__name__)


def _unpack_or_quarantine(conn: psycopg.Connection[Any], rows: Iterable[tuple[Any, ...]]) -> list[Raw]:
    """(sensor_id, day, data, bridge_ids, bridge_runs) rows unpacked; corrupt ones quarantined."""
    from wattline.packing import CorruptPack
    out, corrupt = [], []
    for sensor_id, day, data, ids, runs in rows:
        try:
            out.append(unpack_row(sensor_id, data, ids, runs))
        except CorruptPack as exc:
            corrupt.append((sensor_id, day, str(exc)))
    for sensor_id, day, reason in corrupt:
        quarantine(conn, sensor_id, day, reason)
    return out


# -- reading -------------------------------------------------------------------------------------
_DAYS = 1 << 20  # more UTC days than Unix time has yet: (sensor, day) as one int64 key
# A `readings` row in binary COPY: a field count, then each field's length and value. Every
# field is fixed-width and never NULL (NaN stands for a value not measured), so the answer
# is read into numpy with no Python object per reading (`wattline.db.copy_out_arrays`).
# `SELECT_ROW` selects a row so, and `ROW` is its dtype (the packing job reads days with them too).
_VALUES = ("current_a", "voltage_v", "power_factor", "rssi_dbw", "power_w")
ROW = np.dtype([("fields", ">i2"), ("l0", ">i4"), ("sensor_id", ">i8"), ("l1", ">i4"), ("ts", ">i8"),
                *((f, t) for i, v in enumerate(_VALUES) for f, t in ((f"l{2 + i}", ">i4"), (v, ">f4"))),
                ("lb", ">i4"), ("bridge_id", ">i8")])
SELECT_ROW = """SELECT sensor_id, ts, current_a, COALESCE(voltage_v, 'NaN'), COALESCE(power_factor, 'NaN'),
                       COALESCE(rssi_dbw, 'NaN'), COALESCE(power_w, 'NaN'), bridge_id FROM readings"""
#: The ids come through a one-row sub-select, which the planner sees as a parameter: given
#: them as a constant it estimated each id's selectivity (0.19-0.6 s for a pass's 250,500 at
#: the fleet's rate) and, sized so, JIT-compiled the read (55 ms), for a plan that
#: `index_scans_only` settles anyway. The bounds stay literal: chunks are excluded by them.
_HOT_SELECT = SELECT_ROW + """ WHERE sensor_id = ANY((SELECT {sensors}::bigint[])::bigint[])
                                AND ts >= {lo} AND ts < {hi}"""


def from_rows(rows: npt.NDArray[np.void]) -> Raw:
    """Readings from binary COPY rows of `SELECT_ROW` (in the order they came)."""
    return Raw.build(rows["sensor_id"], rows["ts"].astype(np.int64) + PG_EPOCH_US, rows["current_a"], rows["voltage_v"],
                     rows["power_factor"], rows["rssi_dbw"], rows["power_w"], rows["bridge_id"])
_PACKED_READ = """SELECT sensor_id, day, data, bridge_ids, bridge_runs FROM readings_packed
                  WHERE sensor_id = ANY(%(sensors)s::bigint[]) AND day > %(lo)s - interval '1 day' AND day < %(hi)s
                    AND last_ts >= %(lo)s AND first_ts < %(hi)s"""


def hot_select(sensor_ids: list[int], lo: int, hi: int) -> sql.Composed:
    """The sensors' `readings` rows in [lo, hi) µs, as `ROW`s spell them; see `_HOT_SELECT`."""
    return sql.SQL(_HOT_SELECT).format(sensors=sql.Literal(id_array(sensor_ids)), lo=sql.Literal(_dt(lo)),
                                       hi=sql.Literal(_dt(hi)))


def binary_copy(select: sql.Composable) -> sql.Composed:
    """`select` as a binary COPY (`copy_out_arrays` reads it)."""
    return sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(select)


@contextmanager
def index_scans_only(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Within: no sequential scan where an index serves (`enable_seqscan` off); after: the
    setting as it was.

    Once a growing chunk has statistics the planner reads a rollup pass's sensors (a quarter
    of the fleet, ~11 % of a 5-minute chunk's rows) by scanning the whole chunk; through the
    (sensor_id, ts) index the same read took half the PostgreSQL CPU (`bench hotread`), and on
    a day chunk the scan grew all day (docs/scaling.md). The setting is restored rather than
    left to the end of the transaction, which may be the caller's."""
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        prior = cur.execute("SELECT current_setting('enable_seqscan')").fetchone()
        cur.execute("SELECT set_config('enable_seqscan', 'off', true)")
        yield
        cur.execute("SELECT set_config('enable_seqscan', %s, true)", (prior[0] if prior else "on",))


def _read_hot(conn: psycopg.Connection[Any], sensor_ids: list[int], lo: int, hi: int) -> Raw:
    """The `readings` rows of the sensors in [lo, hi) µs."""
    with index_scans_only(conn):
        arrays = list(copy_out_arrays(conn, binary_copy(hot_select(sensor_ids, lo, hi)), ROW, rows=1 << 20))
    return from_rows(np.concatenate(arrays))


def read(conn: psycopg.Connection[Any], sensor_ids: Sequence[int], t_from: datetime | float,
         t_to: datetime | float) -> Raw:
    """The sensors' readings in [t_from, t_to) from both tiers (times as datetimes or Unix s).

    Two statements, the hot tier first: a reading leaves the hot tier only in or after the
    transaction that commits its packed row, and a packed row never goes away, so each
    reading is in the first answer or the second; where both hold it, the packed row counts."""
    if not len(sensor_ids):
        return empty()
    lo, hi = _us(t_from), _us(t_to)
    ids = [int(s) for s in sensor_ids]
    hot = _read_hot(conn, ids, lo, hi)
    with conn.cursor(row_factory=tuple_row, binary=True) as cur:
        packed = cur.execute(_PACKED_READ, {"sensors": id_array(ids), "lo": _dt(lo), "hi": _dt(hi)}).fetchall()
    parts = _unpack_or_quarantine(conn, packed)
    # A (sensor, day) being packed has rows in both tiers until the day's chunk is dropped:
    # the packed row counts (it holds every one of them, so it overlaps the range whenever
    # they do). A row that failed its checksum counts for nothing, so its day's rows show.
    superseded = {(int(p.sensor_id[0]), int(p.ts_us[0]) // DAY_US) for p in parts if len(p)}
    if superseded and len(hot):
        day_keys = hot.sensor_id * _DAYS + hot.ts_us // DAY_US
        hot = hot.take(~np.isin(day_keys, [s * _DAYS + d for s, d in superseded]))
    for k, part in enumerate(parts):
        inside = (part.ts_us >= lo) & (part.ts_us < hi)
        if not inside.all():
            parts[k] = part.take(inside)
    return concat([*parts, hot])


def read_for_integration(conn: psycopg.Connection[Any], sensor_ids: Sequence[int], t_from: float, t_to: float,
                         gap_s: float, near_s: float) -> Raw:
    """What integrating the sensors over [t_from, t_to) (Unix s) takes: their readings
    inside, and each one's nearest reading either side within `gap_s`, which the segment
    across each end runs to (`analytics.kernels.integrate_buckets`). Readings farther out
    may come too; they change nothing inside.

    A first read reaches only `near_s` past each end: at a sensor's usual report interval
    (`near_s` above it) that holds both neighbours. Only the sensors it found no reading
    for before `t_from`, or none from `t_to` on, are read again out to `gap_s`. Reading the
    whole gap either side fetched 12 readings a sensor for a real-time minute's 6 (gap 30 s,
    a report every 10 s), half of them never used; this fetches 9."""
    if near_s >= gap_s:
        return read(conn, sensor_ids, t_from - gap_s, t_to + gap_s)
    raw = read(conn, sensor_ids, t_from - near_s, t_to + near_s)
    ids = np.unique(np.asarray(sensor_ids, dtype=np.int64))
    early = raw.ts_us < _us(t_from)
    has_before = np.isin(ids, np.unique(raw.sensor_id[early]), assume_unique=True)
    has_after = np.isin(ids, np.unique(raw.sensor_id[raw.ts_us >= _us(t_to)]), assume_unique=True)
    parts = [raw]
    if not has_before.all():
        parts.append(read(conn, ids[~has_before].tolist(), t_from - gap_s, t_from - near_s))
    if not has_after.all():
        parts.append(read(conn, ids[~has_after].tolist(), t_to + near_s, t_to + gap_s))
    return concat(parts) if len(parts) > 1 else raw  # `read` has put it in order already


def first_and_last(conn: psycopg.Connection[Any], sensor_ids: Sequence[int], t_from: datetime | None = None,
                   t_to: datetime | None = None) -> tuple[datetime, datetime] | None:
    """The first and the last reading time of any of the sensors in [t_from, t_to), both tiers.
    Packed rows whose day lies wholly inside the range answer from their columns; only a row
    that straddles an end is unpacked."""
    if not len(sensor_ids):
        return None
    lo = _us(t_from) if t_from is not None else _NEVER
    hi = _us(t_to) if t_to is not None else _ALWAYS
    ids = [int(s) for s in sensor_ids]
    hot = _q(conn, """SELECT (extract(epoch FROM min(ts)) * 1000000)::int8,
                                 (extract(epoch FROM max(ts)) * 1000000)::int8
                          FROM readings WHERE sensor_id = ANY(%s) AND ts >= %s AND ts < %s""",
                       (ids, _dt(lo), _dt(hi))).fetchone()
    found = [v for v in (hot or ()) if v is not None]
    meta = _q(conn, """SELECT sensor_id, day, (extract(epoch FROM first_ts) * 1000000)::int8,
                                  (extract(epoch FROM last_ts) * 1000000)::int8
                           FROM readings_packed WHERE sensor_id = ANY(%s) AND last_ts >= %s AND first_ts < %s
                           ORDER BY day""", (ids, _dt(lo), _dt(hi))).fetchall()
    inside = [(m[2], m[3]) for m in meta if m[2] >= lo and m[3] < hi]
    for first, last in inside:
        found += [first, last]
    straddling = [m for m in meta if not (m[2] >= lo and m[3] < hi)]
    if straddling:
        rows = _q(conn, """SELECT sensor_id, day, data, bridge_ids, bridge_runs FROM readings_packed
                               WHERE (sensor_id, day) IN (SELECT * FROM unnest(%s::bigint[], %s::timestamptz[]))""",
                            ([m[0] for m in straddling], [m[1] for m in straddling])).fetchall()
        for part in _unpack_or_quarantine(conn, rows):
            ts = part.ts_us[(part.ts_us >= lo) & (part.ts_us < hi)]
            if len(ts):
                found += [int(ts[0]), int(ts[-1])]
    if not found:
        return None
    return _dt(min(found)), _dt(max(found))


# -- late data into a packed day -----------------------------------------------------------------
def lock_days(conn: psycopg.Connection[Any], days: Sequence[int]) -> set[int]:
    """Shared locks on these UTC days for the transaction; returns those whose packing has begun."""
    row = _q(conn, "SELECT wattline_lock_reading_days(%s::timestamptz[])",
                       ([_dt(int(d) * DAY_US) for d in days],)).fetchone()
    stamps = row[0] if row else []
    return {_us(t) // DAY_US for t in stamps}


def merge_late(conn: psycopg.Connection[Any], raw: Raw) -> tuple[int, npt.NDArray[np.bool_]]:
    """Merge readings of days whose packing has begun (the caller holds `lock_days` on them)
    into their sensors' packed rows: unpack, merge (a time already stored keeps its first
    reading), re-pack, under the row's lock. Returns how many were new, and a mask of the
    readings whose sensor has no packed row that day yet (they go into `readings`)."""
    days = day_of(raw.ts_us)
    pairs = np.unique(np.stack([raw.sensor_id, days]), axis=1)
    rows = _q(conn,
        """SELECT sensor_id, (extract(epoch FROM day) / 86400)::int8, data, bridge_ids, bridge_runs
           FROM readings_packed WHERE (sensor_id, day) IN
               (SELECT s, to_timestamp(d * 86400) FROM unnest(%s::bigint[], %s::bigint[]) AS u(s, d))
           ORDER BY sensor_id, day FOR UPDATE""", (pairs[0].tolist(), pairs[1].tolist())).fetchall()
    leftover = np.ones(len(raw), dtype=bool)
    stored, updated = 0, []
    from wattline.packing import CorruptPack
    for sensor_id, day, data, ids, runs in rows:
        mine = (raw.sensor_id == sensor_id) & (days == day)
        leftover &= ~mine
        try:
            old = unpack_row(sensor_id, data, ids, runs)
        except CorruptPack as exc:
            quarantine(conn, sensor_id, _dt(day * DAY_US), str(exc))
            leftover |= mine  # the day's row is gone; these start it afresh in `readings`
            continue
        merged = concat([old, raw.take(mine)])
        if len(merged) > len(old):
            stored += len(merged) - len(old)
            updated.append(pack_row(merged, day))
    write_rows(conn, updated)
    return stored, leftover
