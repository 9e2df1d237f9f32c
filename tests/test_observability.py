"""Observability: every service answers /health truthfully, and the example Grafana
dashboard only queries metrics our services export."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client import REGISTRY

import alerts.scheduler  # noqa: F401 - registers the scheduler's metrics
import ingest.metrics  # noqa: F401 - registers the gateway's metrics
from launcher.localstack import free_port
from tests.factories import wait_for
from wattline.settings import Settings

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"


def test_every_dashboard_query_names_an_exported_metric() -> None:
    families = list(REGISTRY.collect())
    # Labelled metrics have no samples until first used: count their family names too.
    exported = {s.name for m in families for s in m.samples} | {f"{m.name}_total" for m in families
                                                                if m.type == "counter"}
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    names = {n for e in exprs for n in re.findall(r"wattline_[a-z_]+", e)}
    assert names and names <= exported, names - exported


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None


def test_every_service_has_a_health_endpoint_that_tells_the_truth(database_url: str, tmp_path: Path) -> None:
    """API and dashboard: 200 with their database, 503 without. The alert scheduler: 200 once
    a pass has run, with its metrics beside. (The gateway's: tests/faults, 200 once subscribed.)"""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from dashboard.app import create_dash

    dead = f"postgresql://wattline@127.0.0.1:{free_port()}/x?connect_timeout=1"
    for url, code in ((database_url, 200), (dead, 503)):
        with TestClient(create_app(Settings(database_url=url)), raise_server_exceptions=False) as api:
            assert api.get("/health").status_code == code
        dash = create_dash(Settings(database_url=url)).server.test_client()
        res = dash.get("/health")
        assert res.status_code == code, res.data
    port = free_port()
    env = {**os.environ, "WATTLINE_DATABASE_URL": database_url, "WATTLINE_ALERTS_HEALTH_PORT": str(port),
           "WATTLINE_ALERTS_PERIOD_S": "1", "WATTLINE_LOG_TEE": str(tmp_path / "alerts.log")}
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "alerts"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        health = wait_for(lambda: (r := _get(f"http://127.0.0.1:{port}/health")) is not None
                          and r.status_code == 200 and r.json(), 60)
        assert health["status"] == "ok" and health["last_pass_at"] > 0
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        assert "wattline_alerts_last_pass_timestamp_seconds" in metrics
    finally:
        proc.terminate()
        proc.wait(30)
