"""The rollup work queue (`rollup_dirty`): what the rollup worker must re-compute.

The gateway queues the minutes it stored readings in. Catalogue writes queue here too,
in the same transaction as the change, so that no door can change the tree or an
assignment and leave rollups stale:
- a sensor assigned, corrected, moved, replaced or unassigned: its history from the time
  the change takes effect, naming the node it left (`wattline.assignments`);
- a node moved or re-rated (voltage, power factor, connection): the history of every
  sensor under it (the tree is re-summed for those minutes, old and new parents alike).

Long histories are queued one UTC day per row, so that a worker pass takes a bounded
slice and never holds a site's whole history in memory at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from wattline import raw_readings

#: Rollup workers lock what they write per site, so several share the queue: two write
#: different sites at once, never the same site's rows. Work over every site (a full
#: re-computation, pricing the days nobody priced) holds ROLLUP_LOCK exclusively; per-site
#: work holds it shared, then its sites' locks in ascending order (no deadlock among workers).
ROLLUP_LOCK = 0x726F_6C6C  # "roll"
SITE_LOCK_CLASS = 0x726F_6C6C  # the first key of a site's two-key lock (a lock space of its own)
#: The gateway queues real-time work per shard of sites (`Settings.rollup_queue_shards`); a
#: pass claims shards with a try-lock, so workers split a minute instead of queueing behind
#: one another. A shard only spreads work: the site locks above keep writes apart.
SHARD_LOCK_CLASS = 0x7368_7264  # "shrd"
#: How many of the oldest due shards a pass looks at before it gives up claiming more.
_SHARD_CANDIDATES = 64
#: The first key of a (shard, minute)'s lock is this plus the shard (mod 256), the second the
#: minute's number: a pass reading a shard's minute holds it exclusively, a gateway commit
#: that may change that minute tries it shared (`minutes_read`, `read_minutes`).
MINUTE_LOCK_CLASS = 0x6D69_6E00  # "min\0"


def _minute_lock(shard: int, minute_s: float) -> tuple[int, int]:
    return MINUTE_LOCK_CLASS + shard % 256, int(minute_s // 60) % 2_147_483_647


def read_minutes(conn: psycopg.Connection[Any], pairs: Sequence[tuple[int, float]]) -> None:
    """Before a pass reads the readings of these (shard, minute start in Unix s) pairs: hold
    each one's lock exclusively until the transaction ends (waiting out the gateway commits
    that hold it shared) and record it read (`rollup_minutes_read`). A gateway commit that
    then finds it read knows this pass may not have seen its readings."""
    if not pairs:
        return
    keys = sorted({_minute_lock(shard, minute) for shard, minute in pairs})
    conn.execute("SELECT count(pg_advisory_xact_lock(k1, k2)) FROM unnest(%s::int[], %s::int[]) AS k(k1, k2)",
                 ([k[0] for k in keys], [k[1] for k in keys]))
    conn.execute("""INSERT INTO rollup_minutes_read (shard, minute)
                    SELECT DISTINCT s, to_timestamp(m) FROM unnest(%s::int[], %s::float8[]) AS x(s, m)
                    ON CONFLICT DO NOTHING""", ([p[0] for p in pairs], [float(p[1]) for p in pairs]))
    conn.execute("DELETE FROM rollup_minutes_read WHERE minute < now() - interval '2 hours'")


def minutes_read(conn: psycopg.Connection[Any], pairs: Sequence[tuple[int, float]]) -> set[tuple[int, float]]:
    """Of these (shard, minute start) pairs, those a pass may have read without this
    transaction's writes: one is reading it now (its lock is held), or one has read it. Any
    other pair's lock is now held shared until this transaction ends, so a pass that reads
    it will read after this transaction commits, and see its writes. Never waits."""
    if not pairs:
        return set()
    unique = sorted(set(pairs))
    keys = [_minute_lock(*p) for p in unique]
    # The locks first, in a statement of their own: the look at `rollup_minutes_read` must
    # come after them, or a pass could record the minute between the look and the lock.
    got = conn.execute("""SELECT pg_try_advisory_xact_lock_shared(k1, k2)
                          FROM unnest(%s::int[], %s::int[]) WITH ORDINALITY AS k(k1, k2, n) ORDER BY n""",
                       ([k[0] for k in keys], [k[1] for k in keys])).fetchall()
    held: list[tuple[int, float]] = []
    out: set[tuple[int, float]] = set()
    for pair, (ok,) in zip(unique, got, strict=True):
        if ok:
            held.append(pair)
        else:
            out.add(pair)
    if held:
        # A minute older than the records `read_minutes` keeps counts as read.
        out |= {(int(s), float(m)) for s, m in conn.execute(
            """SELECT x.s, x.m FROM unnest(%s::int[], %s::float8[]) AS x(s, m)
               WHERE to_timestamp(x.m) < now() - interval '90 minutes'
                  OR EXISTS (SELECT 1 FROM rollup_minutes_read r
                             WHERE r.shard = x.s AND r.minute = to_timestamp(x.m))""",
            ([p[0] for p in held], [float(p[1]) for p in held]))}
    return out


def claim_shards(conn: psycopg.Connection[Any], most: int) -> list[int]:
    """Claim, until the transaction ends, up to `most` shards with due work, oldest first;
    shards another worker holds are passed over."""
    conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (ROLLUP_LOCK,))  # lock_sites' order
    with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
        candidates = [r[0] for r in cur.execute(
            """SELECT shard FROM rollup_dirty WHERE not_before <= now() AND shard IS NOT NULL
               GROUP BY shard ORDER BY min(id) LIMIT %s""", (_SHARD_CANDIDATES,))]
        claimed: list[int] = []
        for shard in candidates:
            row = cur.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", (SHARD_LOCK_CLASS, shard)).fetchone()
            if row and row[0]:
                claimed.append(int(shard))
                if len(claimed) == most:
                    break
    return claimed


def lock_sites(conn: psycopg.Connection[Any], site_ids: Sequence[int]) -> None:
    """Hold, until the transaction ends, the right to write these sites' rollups."""
    conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (ROLLUP_LOCK,))
    conn.execute("""SELECT count(pg_advisory_xact_lock(%s, (s %% 2147483647)::int))
                    FROM (SELECT DISTINCT s FROM unnest(%s::bigint[]) AS s ORDER BY s) AS ordered""",
                 (SITE_LOCK_CLASS, list(site_ids)))


def claim_coarse_sites(conn: psycopg.Connection[Any], most: int) -> list[int]:
    """Up to `most` sites with due coarse intervals (`rollup_coarse`), oldest due first, whose
    right to write no other transaction holds, now held until this one ends: a try-lock per
    site, so two workers take different sites and neither ever waits on one."""
    conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (ROLLUP_LOCK,))
    # MATERIALIZED: the planner would push the try-lock down into the grouping and take every
    # due site's lock; over the CTE it is tried in order until the limit, as meant.
    rows = conn.execute("""WITH due AS MATERIALIZED (
                               SELECT site_id, min(not_before) AS due FROM rollup_coarse WHERE not_before <= now()
                               GROUP BY site_id ORDER BY due)
                           SELECT site_id FROM due
                           WHERE pg_try_advisory_xact_lock(%s, (site_id %% 2147483647)::int) LIMIT %s""",
                        (SITE_LOCK_CLASS, most)).fetchall()
    return [int(r[0]) for r in rows]


def lock_all_sites(conn: psycopg.Connection[Any]) -> None:
    """Hold, until the transaction ends, the right to write every site's rollups."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLUP_LOCK,))


def queue_history(conn: psycopg.Connection[Any], sensor_ids: Sequence[int], *,
                  former_nodes: Sequence[int] = (), since: datetime | None = None,
                  progress_of: int | None = None) -> int:
    """Queue every day in which any of `sensor_ids` has readings (from `since`, if given)
    for re-computation.

    `former_nodes` are nodes these sensors no longer feed: their own-meter rows over the
    same days are rebuilt from whatever sensors they have left (none: the rows go).
    `progress_of`: a sensor whose back-fill people watch; its progress is the share of
    these rows the worker has done (`wattline.progress`). Returns the number of rows added.
    """
    if not sensor_ids:
        return 0
    progress_id = None
    if progress_of is not None:
        with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
            row = cur.execute("""INSERT INTO work_progress (kind, subject_type, subject_id)
                                 VALUES ('backfill', 'sensor', %s) RETURNING id""", (progress_of,)).fetchone()
        progress_id = row[0] if row else None
    span = raw_readings.first_and_last(conn, sensor_ids, since)
    cur = conn.execute(
        """INSERT INTO rollup_dirty (ts_from, ts_to, sensor_ids, node_ids, progress_id)
           SELECT greatest(d, %(lo)s::timestamptz), least(d + interval '1 day', %(hi)s::timestamptz),
                  %(sensors)s::bigint[], %(nodes)s::bigint[], %(progress)s
           FROM generate_series(time_bucket('1 day', %(lo)s::timestamptz), %(hi)s::timestamptz, interval '1 day') d
           WHERE %(lo)s::timestamptz IS NOT NULL""",
        {"sensors": list(sensor_ids), "nodes": list(former_nodes), "progress": progress_id,
         "lo": span[0] if span else None, "hi": span[1] if span else None})
    if progress_id is not None:
        conn.execute("UPDATE work_progress SET total = %s WHERE id = %s", (cur.rowcount, progress_id))
    return cur.rowcount


def sensors_under(conn: psycopg.Connection[Any], node_ids: Sequence[int]) -> list[int]:
    """The sensors that are or ever were on these nodes or anywhere below them."""
    if not node_ids:
        return []
    with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
        rows = cur.execute("""
            WITH RECURSIVE sub AS (
                SELECT id FROM nodes WHERE id = ANY(%s)
                UNION
                SELECT n.id FROM nodes n JOIN sub ON n.parent_id = sub.id
            )
            SELECT DISTINCT a.sensor_id FROM sensor_assignments a JOIN sub ON sub.id = a.node_id
            ORDER BY a.sensor_id""", (list(node_ids),)).fetchall()
    return [int(r[0]) for r in rows]


def queue_subtrees(conn: psycopg.Connection[Any], node_ids: Sequence[int], *,
                   former_parents: Sequence[int] = ()) -> int:
    """Queue the history of every sensor under these nodes (after a move or a re-rating).

    `former_parents`: the parents that moved nodes left, whose totals lose those sensors.
    """
    return queue_history(conn, sensors_under(conn, node_ids), former_nodes=former_parents)
