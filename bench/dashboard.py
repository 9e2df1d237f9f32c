"""The site page's callbacks for a site of 500 circuits with 30 days of history: server
time per callback (Flask test client, no browser), default range and the whole month."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

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
            seeded = site_with_history(conn, circuits=500, days=30, minute_days=1)
        app = create_dash(Settings(secret_key="bench"), database_url=stack.database_url)
        client = app.server.test_client()
        res = client.post("/login", data={"email": seeded["email"], "password": seeded["password"]})
        assert res.status_code == 302
        assert client.get(f"/site/{seeded['site']}").status_code == 200
        zone = ZoneInfo("Europe/London")
        today = datetime.now(UTC).astimezone(zone).date()
        ranges = {"default view (2 days)": (today - timedelta(days=1), today),
                  "whole month (30 days)": (today - timedelta(days=29), today)}
        for label, (start, end) in ranges.items():
            range_inputs = [{"id": "site-range", "property": "start_date", "value": start.isoformat()},
                            {"id": "site-range", "property": "end_date", "value": end.isoformat()}]
            state = [{"id": "site-id", "property": "data", "value": seeded["site"]}]
            overview = _payload(OVERVIEW_OUTPUT, [{"id": i, "property": p} for i, p in (
                ("site-tree", "children"), ("site-sunburst", "figure"), ("site-cost", "children"),
                ("site-node-cost", "children"), ("site-demand", "children"))], range_inputs, state)
            series = _payload("site-series.figure", [{"id": "site-series", "property": "figure"}],
                              [{"id": "site-node", "property": "value", "value": seeded["root"]}, *range_inputs],
                              state)
            for name, body in (("overview (tree, sunburst, cost, demand)", overview), ("power chart", series)):
                times = []
                for _ in range(12):
                    started = time.perf_counter()
                    res = client.post("/_dash-update-component", json=body)
                    times.append(time.perf_counter() - started)
                    assert res.status_code == 200, res.data[:300]
                rows.append(Row("dashboard site page", f"{label}: {name}, p95", percentile(times, 95) * 1000, "ms",
                                "500 circuits × 30 days; target p95 < 500 ms"))
    return rows
