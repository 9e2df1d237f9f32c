"""`python -m bench exports`: measurement exports over a real uvicorn (#20).

- a month of 1-minute rows of one node (43,200 rows): p95 as JSON and as CSV, one client at
  a time, so wall time on loopback is the server's time;
- a month of 15-minute rows of every node of a 500-circuit site (`/v1/sites/{id}/export`):
  rows/s, as CSV and as JSON;
- 50 concurrent month exports: how many bodies are complete, and the API process's peak RSS;
- in-process, the same 43,200 rows encoded by polars (the product) and by the per-row
  Python it replaced (csv module, a dict per row through orjson): the ratio is the one to quote.
"""

from __future__ import annotations

import csv
import io
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from bench.common import Row, api_server, percentile, services
from bench.seed import site_with_history
from wattline import export_format, queries
from wattline.domain import Resolution
from wattline.principal import acting_for


def _seed(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    seeded = site_with_history(conn, circuits=500, days=31, minute_days=0, panels=10, priced=False)
    # Measured values have full precision (what formatting costs), not the seed's round numbers.
    conn.execute("""UPDATE rollups_15m SET energy_wh = energy_wh * (0.5 + random()),
                                           mean_power_w = mean_power_w * (0.5 + random()),
                                           mean_current_a = mean_current_a * (0.5 + random())""")
    end = seeded["end"]
    conn.execute("""INSERT INTO rollups_1m (node_id, bucket, energy_wh, mean_power_w, max_power_w, mean_current_a,
                                           samples, coverage)
                    SELECT %s, b, e, e * 60, e * 66, e / 4, 6, 0.5 + random() / 2
                    FROM generate_series(%s::timestamptz, %s::timestamptz - interval '1 minute',
                                         interval '1 minute') b, LATERAL (SELECT 20 + random() * 20 AS e) x""",
                 (seeded["circuit"], end - timedelta(days=30), end))
    conn.execute("VACUUM ANALYZE")
    seeded["rollup_row_bytes"] = conn.execute(
        "SELECT hypertable_size('rollups_15m')::float8 / count(*) FROM rollups_15m").fetchone()[0]
    seeded["site_rows"] = conn.execute("""SELECT count(*) FROM rollups_15m r JOIN nodes n ON n.id = r.node_id
                                          WHERE n.site_id = %s AND r.bucket >= %s AND r.bucket < %s""",
                                       (seeded["site"], end - timedelta(days=30), end)).fetchone()[0]
    return seeded


def _per_row_python(rows: list[dict[str, Any]], fmt: str) -> bytes:
    """The encoder this product used before: what the ratio compares against."""
    if fmt == "json":
        return orjson.dumps(rows, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(queries.EXPORT_COLUMNS)
    for row in rows:
        row = {**row, "time_utc": row["time_utc"].astimezone(UTC).isoformat().replace("+00:00", "Z")}
        writer.writerow(["" if row[c] is None else row[c] for c in queries.EXPORT_COLUMNS])
    return buf.getvalue().encode()


def _encoding(conn: psycopg.Connection[Any], seeded: dict[str, Any]) -> list[Row]:
    """Encoding alone, in-process, on the same 43,200 rows."""
    end = seeded["end"]
    p = acting_for(conn.execute("SELECT customer_id FROM sites WHERE id = %s", (seeded["site"],)).fetchone()[0])
    batches = list(queries.measurement_batches(conn, p, [seeded["circuit"]], Resolution.MIN1,
                                               end - timedelta(days=30), end))
    b = batches[0]
    rows = []
    for batch in batches:
        for k in range(len(batch)):
            rows.append({"device_id": int(batch.device_id[k]), "device_name": b.nodes["device_name"][0],
                         "time_utc": datetime.fromtimestamp(int(batch.ts_us[k]) / 1e6, UTC),
                         "resolution_minutes": 1, "site_id": b.nodes["site_id"][0],
                         "site_name": b.nodes["site_name"][0], "current_a": float(batch.current_a[k]),
                         "voltage_v": b.nodes["voltage_v"][0], "power_w": float(batch.power_w[k]),
                         "power_factor": b.nodes["power_factor"][0], "energy_wh": float(batch.energy_wh[k]),
                         "coverage": float(batch.coverage[k]), "samples": int(batch.samples[k])})
    out: list[Row] = []
    for fmt in ("json", "csv"):
        export_format.body(batches, fmt)  # polars' first use
        fast = min(_timed(lambda f=fmt: export_format.body(batches, f)) for _ in range(5))
        slow = min(_timed(lambda f=fmt: _per_row_python(rows, f)) for _ in range(3))
        out += [Row("exports", f"encode 43,200 rows as {fmt.upper()}: polars", fast * 1000, "ms", "in-process"),
                Row("exports", f"encode 43,200 rows as {fmt.upper()}: per-row Python", slow * 1000, "ms",
                    "the encoder replaced"),
                Row("exports", f"encode as {fmt.upper()}: faster", slow / fast, "×", "same run")]
    return out


def _timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run() -> list[Row]:
    rows: list[Row] = []
    with services() as stack:
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            seeded = _seed(conn)
            rows += _encoding(conn, seeded)
            rows.append(Row("exports", "disk per rollup row (15-min tier; every tier alike)",
                            seeded["rollup_row_bytes"], "B", "heap and index: what sizing the rollup tiers needs"))
        with api_server(stack) as (base, api):
            headers = {"Authorization": f"Bearer {seeded['token']}"}
            end = seeded["end"]
            month = {"from": (end - timedelta(days=30)).isoformat(), "to": end.isoformat()}
            node_url = f"{base}/v1/nodes/{seeded['circuit']}/measurements"
            with httpx.Client(timeout=120) as client:
                for fmt in ("json", "csv"):
                    params = {**month, "resolution": "1m", "format": fmt}
                    for _ in range(3):
                        client.get(node_url, params=params, headers=headers).raise_for_status()
                    latencies = []
                    for _ in range(20):
                        started = time.perf_counter()
                        res = client.get(node_url, params=params, headers=headers)
                        res.raise_for_status()
                        latencies.append(time.perf_counter() - started)
                    rows.append(Row("exports", f"a node's month at 1 min (43,200 rows), {fmt.upper()}: p95",
                                    percentile(latencies, 95) * 1000, "ms", "one client, loopback"))
                site_url = f"{base}/v1/sites/{seeded['site']}/export"
                for fmt in ("csv", "json"):
                    query = httpx.QueryParams({**month, "resolution": "15m", "format": fmt})
                    best, got = float("inf"), 0
                    for _ in range(3):
                        # curl as the client: on this 2-core machine a Python client reading
                        # 200-450 MB would take a core from the server it measures.
                        out = subprocess.run(["curl", "-sf", "-o", "/dev/null", "-w", "%{time_total} %{size_download}",
                                              "-H", f"Authorization: Bearer {seeded['token']}", f"{site_url}?{query}"],
                                             capture_output=True, text=True, check=True, timeout=300).stdout.split()
                        best, got = min(best, float(out[0])), int(out[1])
                    rows.append(Row("exports", f"a 500-circuit site's month at 15 min, {fmt.upper()}",
                                    seeded["site_rows"] / best, "rows/s",
                                    f"{seeded['site_rows']:,} rows, {got / 1e6:.0f} MB, best of 3; target ≥ 1 M"))
            outcomes: list[str] = []
            before = _peak_rss_mib(api.pid)

            def export(n: int) -> None:
                fmt = "csv" if n % 2 else "json"
                res = httpx.get(node_url, params={**month, "resolution": "1m", "format": fmt}, headers=headers,
                                timeout=300)
                if res.status_code != 200:
                    outcomes.append(f"HTTP {res.status_code}")
                    return
                n_rows = len(orjson.loads(res.content)) if fmt == "json" else res.content.count(b"\n") - 1
                outcomes.append("complete" if n_rows == 43_200 else "truncated")

            threads = [threading.Thread(target=export, args=(n,)) for n in range(50)]
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - started
            rows += [Row("exports", "50 concurrent month exports: complete", outcomes.count("complete"), "of 50",
                         f"all done in {elapsed:.1f} s"),
                     Row("exports", "API peak RSS, after the single exports", before, "MiB"),
                     Row("exports", "API peak RSS, after 50 concurrent", _peak_rss_mib(api.pid), "MiB",
                         "bounded by the pool (16 streams) × a 16,384-row batch")]
    return rows
