"""Streaming that never lies: against a real uvicorn with its real pool, 50 concurrent
long exports each end complete, or are refused up front with 503 and Retry-After; never a
200 with a cut-off body."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from launcher.localstack import free_port
from tests.factories import Tenant, auth, wait_for

DAYS = 7
ROWS = DAYS * 1440
START = datetime(2026, 11, 1, tzinfo=UTC)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_fifty_concurrent_exports_are_complete_or_refused_up_front(
        database_url: str, db: psycopg.Connection[Any], tenants: tuple[Tenant, Tenant], tmp_path: Path) -> None:
    a, _ = tenants
    db.execute("""INSERT INTO rollups_1m (node_id, bucket, energy_wh, mean_power_w, max_power_w, mean_current_a,
                                          samples, coverage)
                  SELECT %s, b, 40, 2400, 2500, 10.4, 6, 1
                  FROM generate_series(%s::timestamptz, %s::timestamptz - interval '1 minute', interval '1 minute') b
                  ON CONFLICT DO NOTHING""", (a.circuit_id, START, START + timedelta(days=DAYS)))
    port = free_port()
    env = {**os.environ, "WATTLINE_DATABASE_URL": database_url, "WATTLINE_API_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "api"], env=env, stdout=subprocess.DEVNULL,
                            stderr=(tmp_path / "api.log").open("wb"))
    url = f"http://127.0.0.1:{port}/v1/nodes/{a.circuit_id}/measurements"
    params = {"from": START.isoformat(), "to": (START + timedelta(days=DAYS)).isoformat(), "resolution": "1m"}
    outcomes: list[str] = []

    def export(n: int) -> None:
        fmt = "csv" if n % 3 == 0 else "json"
        try:
            res = httpx.get(url, params={**params, "format": fmt}, headers=auth(a.tokens["viewer"]), timeout=120)
        except httpx.HTTPError as exc:  # a cut connection is a lie too
            outcomes.append(f"broken {type(exc).__name__}")
            return
        if res.status_code == 503:
            outcomes.append("refused" if res.headers.get("retry-after") else "503 without Retry-After")
        elif res.status_code != 200:
            outcomes.append(f"HTTP {res.status_code}")
        elif fmt == "json":
            outcomes.append("complete" if len(orjson.loads(res.content)) == ROWS else "truncated")
        else:
            rows = list(csv.reader(io.StringIO(res.text)))
            outcomes.append("complete" if len(rows) == ROWS + 1 else "truncated")

    try:
        wait_for(lambda: _healthy(f"http://127.0.0.1:{port}/health"), 60)
        threads = [threading.Thread(target=export, args=(n,)) for n in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        proc.terminate()
        proc.wait(30)
    print("50 concurrent exports:", {o: outcomes.count(o) for o in set(outcomes)})
    assert len(outcomes) == 50
    assert set(outcomes) <= {"complete", "refused"}, outcomes
    assert outcomes.count("complete") >= 16  # at least a pool's worth are served


def test_an_exhausted_pool_answers_503_before_any_byte(database_url: str, tenants: tuple[Tenant, Tenant]) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from wattline.settings import Settings

    a, _ = tenants
    app = create_app(Settings(database_url=database_url, api_pool_size=2))
    with TestClient(app, raise_server_exceptions=False) as client:
        held = [app.state.pool.getconn(timeout=10) for _ in range(2)]  # every connection busy
        try:
            res = client.get(f"/v1/nodes/{a.circuit_id}/measurements", headers=auth(a.tokens["viewer"]),
                             params={"from": START.isoformat(), "to": (START + timedelta(days=1)).isoformat()})
        finally:
            for conn in held:
                app.state.pool.putconn(conn)
        assert res.status_code == 503 and res.headers["retry-after"]
        assert res.headers["content-type"] == "application/problem+json"
        served = client.get(f"/v1/nodes/{a.circuit_id}/measurements", headers=auth(a.tokens["viewer"]),
                            params={"from": START.isoformat(), "to": (START + timedelta(days=1)).isoformat()})
        assert served.status_code == 200 and served.json() == []
