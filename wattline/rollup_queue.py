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

#: The advisory lock the rollup worker holds while it writes, so that workers never interleave.
ROLLUP_LOCK = 0x726F_6C6C  # "roll"


def queue_history(conn: psycopg.Connection[Any], sensor_ids: Sequence[int], *,
                  former_nodes: Sequence[int] = (), since: datetime | None = None) -> int:
    """Queue every day in which any of `sensor_ids` has readings (from `since`, if given)
    for re-computation.

    `former_nodes` are nodes these sensors no longer feed: their own-meter rows over the
    same days are rebuilt from whatever sensors they have left (none: the rows go).
    Returns the number of queue rows added.
    """
    if not sensor_ids:
        return 0
    cur = conn.execute(
        """INSERT INTO rollup_dirty (ts_from, ts_to, sensor_ids, node_ids)
           SELECT greatest(d, x.lo), least(d + interval '1 day', x.hi), %(sensors)s::bigint[], %(nodes)s::bigint[]
           FROM (SELECT min(ts) AS lo, max(ts) AS hi FROM readings
                 WHERE sensor_id = ANY(%(sensors)s) AND ts >= COALESCE(%(since)s::timestamptz, '-infinity')) x,
                generate_series(time_bucket('1 day', x.lo), x.hi, interval '1 day') d
           WHERE x.lo IS NOT NULL""",
        {"sensors": list(sensor_ids), "nodes": list(former_nodes), "since": since})
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
