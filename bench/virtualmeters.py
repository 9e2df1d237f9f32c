"""`python -m bench virtualmeters`: what a virtual meter costs (#22), on a 500-circuit site.

A meter has no rollup rows: the rollup pass does nothing for it, whatever the number of
meters (`analytics.virtual_meters`). It costs at read time instead, composed from its
nodes' rollups. Measured beside the same read of one node, in the same run:
- a day of 1-minute points and a month of 15-minute points, for a meter of 5 terms
  (MSB − two boards + a circuit of each) and one of 50 circuits, against the site root's;
- a month's energy cost of the 5-term meter, against the whole site's cost (invoice and
  every node's cost), which it is computed from.
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial

import psycopg

from analytics.costing import site_cost
from analytics.virtual_meters import meter_cost, meter_series
from bench.common import Row, median_time, services
from bench.seed import site_with_history
from wattline import queries, virtual_meters
from wattline.domain import Resolution
from wattline.principal import acting_for
from wattline.virtual_meters import Term

REPEATS = 15


def run() -> list[Row]:
    rows: list[Row] = []
    with services() as stack, psycopg.connect(stack.database_url, autocommit=True) as conn:
        seeded = site_with_history(conn, circuits=500, days=31, minute_days=1, panels=10, priced=True)
        node: dict[str, int] = dict(conn.execute("SELECT external_ref, id FROM nodes WHERE site_id = %s",
                                 (seeded["site"],)).fetchall())
        found = conn.execute("SELECT customer_id FROM sites WHERE id = %s", (seeded["site"],)).fetchone()
        assert found is not None
        customer = int(found[0])
        small = virtual_meters.save_meter(conn, None, customer, "MSB without boards 0 and 1, with C0 and C1", [
            Term(1, node_id=node["MSB"]), Term(-1, node_id=node["B0"]), Term(-1, node_id=node["B1"]),
            Term(1, node_id=node["C0"]), Term(1, node_id=node["C1"])])
        large = virtual_meters.save_meter(conn, None, customer, "50 circuits",
                                          [Term(1, node_id=node[f"C{i}"]) for i in range(50)])
        conn.execute("VACUUM ANALYZE")
        p = acting_for(customer)
        end = seeded["end"]
        for label, resolution, start in (("a day of 1-minute points", Resolution.MIN1, end - timedelta(days=1)),
                                         ("a month of 15-minute points", Resolution.MIN15, end - timedelta(days=30))):
            base = median_time(partial(queries.node_series, conn, p, [seeded["root"]], resolution, start, end), REPEATS)
            for meter, terms in ((small, 5), (large, 50)):
                took = median_time(partial(meter_series, conn, p, meter, resolution, start, end), REPEATS)
                rows.append(Row("virtual meters", f"{label}, {terms} terms / one node", took / base, "×",
                                f"median of {REPEATS}: {took * 1000:.1f} against {base * 1000:.1f} ms"))
        start = end - timedelta(days=30)
        site = median_time(partial(site_cost, conn, p, seeded["site"], start, end), REPEATS)
        priced = median_time(partial(meter_cost, conn, p, small, start, end), REPEATS)
        rows.append(Row("virtual meters", "a month's cost, 5 terms / the whole site's", priced / site, "×",
                        f"median of {REPEATS}: {priced * 1000:.1f} against {site * 1000:.1f} ms; "
                        "the meter is priced from its site's node costs"))
        rows.append(Row("virtual meters", "rows a rollup pass writes for a meter", 0, "rows",
                        "composed when read: meters add nothing to the pass"))
    return rows
