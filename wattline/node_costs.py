"""Σ energy × interval rate per node, node by node: the one statement that prices rollups,
shared by the cost tier (`analytics.band_rollups.price_days`, by local day and band) and the
readers (`wattline.queries.energy_cost_by_node`, by band), so that the two cannot drift.

Each rollup row goes to its interval by `width_bucket` over the intervals' starts and is
priced only if it starts one. The rows are read node by node by the primary key: read by
bucket and kept to one site's nodes, a site's day read every site's rows of that day
(8 million at 667 sites by evening)."""

from __future__ import annotations

from psycopg import sql

from wattline.domain import Resolution


def node_costs(resolution: Resolution, *, by_day: bool = False) -> sql.Composed:
    """`CROSS JOIN LATERAL (...) a`, for a query over `nodes n`: per node, its rows of
    `resolution` in [%(from)s, %(to)s) summed by band (and by local day with `by_day`).

    Parameters: %(stamps)s the intervals' starts, epoch seconds ascending (float8[]);
    %(rates)s each one's rate in minor units per kWh; %(bands)s each one's band; with
    `by_day`, %(day_of)s each one's local day (its midnight, epoch seconds).
    Columns of `a`: [day,] band, energy_wh, cost_minor, unmonitored_wh, max_power_w."""
    return sql.SQL("""CROSS JOIN LATERAL (
            SELECT {day}(%(bands)s::text[])[r.k] AS band, sum(r.energy_wh) AS energy_wh,
                   sum(r.energy_wh / 1000.0 * (%(rates)s::float8[])[r.k]) AS cost_minor,
                   sum(r.unmonitored_wh) AS unmonitored_wh, max(r.max_power_w) AS max_power_w
            FROM (SELECT extract(epoch FROM x.bucket)::float8 AS bucket_s, x.energy_wh, x.unmonitored_wh,
                         x.max_power_w, width_bucket(extract(epoch FROM x.bucket)::float8, %(stamps)s::float8[]) AS k
                  FROM {table} x WHERE x.node_id = n.id AND x.bucket >= %(from)s AND x.bucket < %(to)s) r
            WHERE r.k > 0 AND r.bucket_s = (%(stamps)s::float8[])[r.k]
            GROUP BY {group}) a""").format(
        day=sql.SQL("to_timestamp((%(day_of)s::float8[])[r.k]) AS day, " if by_day else ""),
        table=sql.Identifier(resolution.table), group=sql.SQL("1, 2" if by_day else "1"))
