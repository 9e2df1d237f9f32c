"""The site page's callbacks for a site of 500 circuits with 30 days of history: server
time per callback (Flask test client, no browser), default range and the whole month; the
month's overview also before the rollup worker has priced the days (cost from the hourly
tier alone), for the ratio."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from analytics.band_rollups import price_unpriced_days
from bench.common import Row, percentile, services
from bench.seed import site_with_history
from wattline.settings import Settings

OVERVIEW_OUTPUT = ("..site-tree.children...site-sunburst.figure...site-cost.children...site-node-cost.children"
                   "...site-demand.children..")


def _payload(output: str, outputs: list[dict[str, str]], inputs: list[dict[str, Any]],
             state: list[dict[str, Any]]) -> dict[str, Any]:
    return {"output": output, "outputs": outputs if len(outputs) > 1 else outputs[0], "inputs": inputs,
            "state": state, "changedPropIds": [f"{i['id']}.{i['property']}" for i in inputs]}


def run() -> list[Row]:
    from dashboard.app import create_dash

    rows: list[Row] = []
    with services() as stack:
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            seeded = site_with_history(conn, circuits=500, days=30, minute_days=1, priced=False)
        app = create_dash(Settings(database_url=stack.database_url))
        client = app.server.test_client()
        res = client.post("/login", data={"email": seeded["email"], "password": seeded["password"]})
        assert res.status_code == 302
        assert client.get(f"/site/{seeded['site']}").status_code == 200
        zone = ZoneInfo("Europe/London")
        today = datetime.now(UTC).astimezone(zone).date()
        ranges = {"whole month, days not yet priced (hourly tier)": (today - timedelta(days=29), today),
                  "default view (2 days)": (today - timedelta(days=1), today),
                  "whole month (30 days)": (today - timedelta(days=29), today)}
        unpriced_p95 = 0.0
        for label, (start, end) in ranges.items():
            if label == "default view (2 days)":
                with psycopg.connect(stack.database_url, autocommit=True) as conn:
                    while price_unpriced_days(conn):  # the rollup worker's idle job
                        pass
            range_inputs = [{"id": "site-range", "property": "start_date", "value": start.isoformat()},
                            {"id": "site-range", "property": "end_date", "value": end.isoformat()}]
            state = [{"id": "site-id", "property": "data", "value": seeded["site"]}]
            overview = _payload(OVERVIEW_OUTPUT, [{"id": i, "property": p} for i, p in (
                ("site-tree", "children"), ("site-sunburst", "figure"), ("site-cost", "children"),
                ("site-node-cost", "children"), ("site-demand", "children"))], range_inputs, state)
            series = _payload("site-series.figure", [{"id": "site-series", "property": "figure"}],
                              [{"id": "site-node", "property": "value", "value": seeded["root"]}, *range_inputs],
                              state)
            jobs = (("overview (tree, sunburst, cost, demand)", overview), ("power chart", series))
            for name, body in jobs[:1] if label.startswith("whole month, days not") else jobs:
                times = []
                for _ in range(12):
                    started = time.perf_counter()
                    res = client.post("/_dash-update-component", json=body)
                    times.append(time.perf_counter() - started)
                    assert res.status_code == 200, res.data[:300]
                p95 = percentile(times, 95) * 1000
                unpriced_p95 = unpriced_p95 or p95
                note = "500 circuits × 30 days; target p95 < 500 ms"
                if label == "whole month (30 days)" and name.startswith("overview"):
                    note += f"; {unpriced_p95 / p95:.1f}× faster than unpriced"
                rows.append(Row("dashboard site page", f"{label}: {name}, p95", p95, "ms", note))
    return rows
