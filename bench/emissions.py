"""`python -m bench emissions`: what CO2e costs to read (#22), on a 500-circuit site with a
month of hourly rollups.

CO2e is computed on read from the hourly rollups and the site's factors
(`analytics.emissions`), never stored. Measured beside the same month's energy per node
(`queries.usage_by_node`, the same tier), in the same run:
- the month per node at the annual factor, and by local day;
- the month per node with an hourly factor series covering every hour of it;
- the portfolio's figure (every site's total, one query).
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial

import psycopg

from analytics.emissions import Period, co2e_by_node, site_totals
from bench.common import Row, median_time, services
from bench.seed import site_with_history
from wattline import emissions, queries
from wattline.principal import acting_for

REPEATS = 15


def run() -> list[Row]:
    rows: list[Row] = []
    with services() as stack, psycopg.connect(stack.database_url, autocommit=True) as conn:
        seeded = site_with_history(conn, circuits=500, days=31, minute_days=1, panels=10, priced=False)
        found = conn.execute("SELECT customer_id FROM sites WHERE id = %s", (seeded["site"],)).fetchone()
        assert found is not None
        p = acting_for(int(found[0]))
        site = queries.site(conn, p, seeded["site"])
        assert site is not None
        end = seeded["end"]
        start = end - timedelta(days=30)
        nodes = conn.execute("SELECT count(*) FROM nodes WHERE site_id = %s", (seeded["site"],)).fetchone()
        conn.execute("VACUUM ANALYZE")
        base = median_time(partial(queries.usage_by_node, conn, p, seeded["site"], start, end), REPEATS)
        note = f"{nodes[0] if nodes else '?'} nodes × 720 hours; median of {REPEATS}"
        cases: tuple[tuple[str, Period], ...] = (("a month per node", "total"),
                                                 ("a month per node and local day", "day"))
        for label, by in cases:
            took = median_time(partial(co2e_by_node, conn, p, site, start, end, by), REPEATS)
            rows.append(Row("emissions", f"{label}, annual factor / the month's kWh per node", took / base, "×",
                            f"{note}: {took * 1000:.1f} against {base * 1000:.1f} ms"))
        emissions.save_hourly(conn, None, seeded["site"], [
            emissions.HourFactor(start + timedelta(hours=h), 150.0 + h % 24) for h in range(720)], source="api")
        conn.execute("VACUUM ANALYZE site_co2e_hourly")
        took = median_time(partial(co2e_by_node, conn, p, site, start, end, "total"), REPEATS)
        rows.append(Row("emissions", "a month per node, hourly factors / the month's kWh per node", took / base, "×",
                        f"{note}, 720 hourly factors: {took * 1000:.1f} against {base * 1000:.1f} ms"))
        portfolio = median_time(partial(site_totals, conn, [site], start, end), REPEATS)
        rows.append(Row("emissions", "the site's month (portfolio figure) / the month's kWh per node",
                        portfolio / base, "×", f"{portfolio * 1000:.1f} against {base * 1000:.1f} ms"))
    return rows
