"""The measurements route over a month of 1-minute data, served by a real uvicorn process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import psycopg

from bench.common import Row, percentile, services
from bench.seed import site_with_history
from launcher.localstack import free_port


def run() -> list[Row]:
    rows: list[Row] = []
    with services() as stack:
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            seeded = site_with_history(conn, circuits=20, days=31, minute_days=30, panels=2)
        port = free_port()
        env = {**os.environ, "WATTLINE_DATABASE_URL": stack.database_url, "WATTLINE_API_PORT": str(port)}
        api = subprocess.Popen([sys.executable, "-m", "launcher.cli", "api"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(base + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
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
        finally:
            api.terminate()
            api.wait(30)
    return rows
