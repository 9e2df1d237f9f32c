"""The measurements route over a month of 1-minute data, served by a real uvicorn process."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import psycopg

from bench.common import Row, api_server, percentile, services
from bench.seed import site_with_history


def run() -> list[Row]:
    rows: list[Row] = []
    with services() as stack:
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            seeded = site_with_history(conn, circuits=20, days=31, minute_days=30, panels=2)
        with api_server(stack) as (base, _):
            headers = {"Authorization": f"Bearer {seeded['token']}"}
            end = seeded["end"]
            cases = [
                ("1 day at 1 min (1,440 rows)", end - timedelta(days=1), "1m", "json", 200),
                ("30 days at 1 min (43,200 rows)", end - timedelta(days=30), "1m", "json", 20),
                ("30 days at 1 min as CSV", end - timedelta(days=30), "1m", "csv", 20),
                ("30 days at 1 h (720 rows)", end - timedelta(days=30), "1h", "json", 200),
            ]
            for label, t_from, resolution, fmt, n in cases:
                params = {"from": t_from.isoformat(), "to": end.isoformat(), "resolution": resolution, "format": fmt}
                url = f"{base}/v1/nodes/{seeded['circuit']}/measurements"

                def one(_: int, url: str = url, params: dict[str, str] = params) -> float:
                    started = time.perf_counter()
                    res = httpx.get(url, params=params, headers=headers, timeout=60)
                    res.raise_for_status()
                    return time.perf_counter() - started

                with ThreadPoolExecutor(4) as pool:
                    list(pool.map(one, range(4)))  # warm
                    started = time.perf_counter()
                    latencies = list(pool.map(one, range(n)))
                    elapsed = time.perf_counter() - started
                rows += [Row("api measurements", f"{label}: throughput (4 clients)", n / elapsed, "req/s"),
                         Row("api measurements", f"{label}: p95 latency", percentile(latencies, 95) * 1000, "ms")]
    return rows
