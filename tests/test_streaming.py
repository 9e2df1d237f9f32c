"""Streaming that never lies, at memory speed: against a real uvicorn with its real pool,
50 concurrent month exports all end complete (a client refused while the pool is full
comes back after Retry-After) with the API's memory bounded; a full pool
answers 503 with Retry-After before any byte; clients that leave mid-body give their
connection back at once; a COPY that fails mid-stream raises, and leaves the connection usable."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from launcher.localstack import free_port
from tests.factories import Tenant, auth, wait_for

DAYS = 30  # a month of 1-minute rows: 43,200
ROWS = DAYS * 1440
START = datetime(2026, 11, 1, tzinfo=UTC)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


def _month_of_minutes(db: psycopg.Connection[Any], node_id: int) -> None:
    db.execute("""INSERT INTO rollups_1m (node_id, bucket, energy_wh, mean_power_w, max_power_w, mean_current_a,
                                          samples, coverage)
                  SELECT %s, b, 40, 2400, 2500, 10.4, 6, 1
                  FROM generate_series(%s::timestamptz, %s::timestamptz - interval '1 minute', interval '1 minute') b
                  ON CONFLICT DO NOTHING""", (node_id, START, START + timedelta(days=DAYS)))


def test_fifty_concurrent_month_exports_are_all_complete_in_bounded_memory(
        database_url: str, db: psycopg.Connection[Any], tenants: tuple[Tenant, Tenant], tmp_path: Path) -> None:
    a, _ = tenants
    _month_of_minutes(db, a.circuit_id)
    port = free_port()
    env = {**os.environ, "WATTLINE_DATABASE_URL": database_url, "WATTLINE_API_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "api"], env=env, stdout=subprocess.DEVNULL,
                            stderr=(tmp_path / "api.log").open("wb"))
    url = f"http://127.0.0.1:{port}/v1/nodes/{a.circuit_id}/measurements"
    params = {"from": START.isoformat(), "to": (START + timedelta(days=DAYS)).isoformat(), "resolution": "1m"}
    outcomes: list[str] = []

    refusals: list[int] = []

    def export(n: int) -> None:
        """A client that honours Retry-After: a full pool may refuse it (503 before any byte,
        after STREAM_WAIT_S); it comes back as told, and in the end gets its whole month."""
        fmt = "csv" if n % 3 == 0 else "json"
        for _ in range(10):
            try:
                res = httpx.get(url, params={**params, "format": fmt}, headers=auth(a.tokens["viewer"]), timeout=120)
            except httpx.HTTPError as exc:  # a cut connection is a lie too
                outcomes.append(f"broken {type(exc).__name__}")
                return
            if res.status_code != 503:
                break
            if not res.headers.get("retry-after"):
                outcomes.append("503 without Retry-After")
                return
            refusals.append(n)
            time.sleep(float(res.headers["retry-after"]))
        if res.status_code != 200:
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
        peak = _peak_rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    print("50 concurrent exports:", {o: outcomes.count(o) for o in set(outcomes)}, f"{len(refusals)} refusal(s) "
          f"retried as told, peak RSS {peak:.0f} MiB")
    assert outcomes == ["complete"] * 50, outcomes
    # 16 streams at once (the pool), each holding at most a few 16,384-row batches: the
    # API stays far below what 50 whole bodies (~500 MB of JSON) would take.
    assert peak < 800, peak


def test_clients_that_hang_up_give_their_connection_back_at_once(
        database_url: str, db: psycopg.Connection[Any], tenants: tuple[Tenant, Tenant], tmp_path: Path) -> None:
    """Four times as many hang-ups as the pool has connections, one after another: each
    finds a connection free. (Left to the garbage collector, a hung-up export held its
    connection until the next full collection, and the third request here waited for a 503.)"""
    a, _ = tenants
    _month_of_minutes(db, a.circuit_id)
    port = free_port()
    env = {**os.environ, "WATTLINE_DATABASE_URL": database_url, "WATTLINE_API_PORT": str(port),
           "WATTLINE_API_POOL_SIZE": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "api"], env=env, stdout=subprocess.DEVNULL,
                            stderr=(tmp_path / "api.log").open("wb"))
    url = f"http://127.0.0.1:{port}/v1/nodes/{a.circuit_id}/measurements"
    params = {"from": START.isoformat(), "to": (START + timedelta(days=DAYS)).isoformat(), "resolution": "1m"}
    try:
        wait_for(lambda: _healthy(f"http://127.0.0.1:{port}/health"), 60)
        for n in range(8):
            with httpx.stream("GET", url, params={**params, "format": "csv" if n % 2 else "json"},
                              headers=auth(a.tokens["viewer"]), timeout=60) as res:
                assert res.status_code == 200, (n, res.status_code)
                next(res.iter_bytes())
        res = httpx.get(url, params={**params, "format": "csv"}, headers=auth(a.tokens["viewer"]), timeout=60)
        assert res.status_code == 200 and res.text.count("\n") == ROWS + 1
    finally:
        proc.terminate()
        proc.wait(30)


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


def test_a_copy_that_fails_mid_stream_raises_and_leaves_the_connection_usable(
        db: psycopg.Connection[Any]) -> None:
    from psycopg import sql

    from wattline.db import copy_out

    query = sql.SQL("COPY (SELECT 1 / (100000 - g) FROM generate_series(1, 200000) g) TO STDOUT")
    got = 0
    with pytest.raises(psycopg.errors.DivisionByZero):
        for block in copy_out(db, query):
            got += len(block)
    assert got > 0  # rows came before the failure
    assert db.execute("SELECT 42").fetchone() == (42,)
    # Stopped early by its reader: cancelled and drained, the connection goes on.
    blocks = copy_out(db, sql.SQL("COPY (SELECT g FROM generate_series(1, 5000000) g) TO STDOUT"))
    assert bytes(next(blocks)) == b"1\n"
    blocks.close()
    assert db.execute("SELECT 43").fetchone() == (43,)
    # A query that fails before any row raises at once.
    with pytest.raises(psycopg.errors.UndefinedTable):
        next(copy_out(db, sql.SQL("COPY (SELECT * FROM no_such_table) TO STDOUT")))
    assert db.execute("SELECT 44").fetchone() == (44,)
