"""Real services for the tests: a private PostgreSQL + TimescaleDB and Mosquitto on free
ports (or the ones named by WATTLINE_TEST_PG_URL / WATTLINE_TEST_MQTT_URL), and a fresh
database per test session, built by the same migrations as production."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from wattline.db import create_database, drop_database, with_database
from wattline.localstack import LocalMosquitto, LocalPostgres, ensure_installed, free_port
from wattline.migrate import migrate
from wattline.settings import Settings

LOG_TEE = Path(__file__).resolve().parent.parent / "artifacts" / "logs" / "test-run.log"


def pytest_configure(config: pytest.Config) -> None:
    """Every log line of the run (this process and the services it starts) also goes to
    one file, which tests/test_zz_log_hygiene.py scans for personal data and secrets."""
    from wattline.logs import configure_logging

    LOG_TEE.parent.mkdir(parents=True, exist_ok=True)
    LOG_TEE.write_text("")
    os.environ["WATTLINE_LOG_TEE"] = str(LOG_TEE)
    configure_logging()


@dataclass
class Services:
    pg_server_url: str
    mqtt_url: str
    postgres: LocalPostgres | None
    mosquitto: LocalMosquitto | None


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    pg_url = os.environ.get("WATTLINE_TEST_PG_URL")
    mqtt_url = os.environ.get("WATTLINE_TEST_MQTT_URL")
    pg = mq = None
    # Not pytest's tmp_path: its parents are 0700, and the postgres user must reach its folder.
    root = Path(tempfile.mkdtemp(prefix="wattline-test-"))
    if not pg_url or not mqtt_url:
        ensure_installed()
    if not pg_url:
        pg = LocalPostgres(root / "pg", free_port(), durable=False)
        pg.start()
        pg_url = pg.url
    if not mqtt_url:
        mq = LocalMosquitto(root / "mq", free_port())
        mq.start()
        mqtt_url = mq.url
    yield Services(pg_url, mqtt_url, pg, mq)
    if mq is not None:
        mq.stop()
    if pg is not None:
        pg.stop(mode="immediate")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(services: Services) -> Iterator[str]:
    url = with_database(services.pg_server_url, f"wl_test_{uuid.uuid4().hex[:10]}")
    create_database(url)
    migrate(url)
    yield url
    drop_database(url)


@pytest.fixture(scope="session")
def mqtt_url(services: Services) -> str:
    return services.mqtt_url


_TABLES = ("webhook_deliveries", "alert_episodes", "alert_rules", "webhooks", "audit_log", "support_requests",
           "readings", "rejected_readings", "rollup_dirty", "rollups_1m", "rollups_15m", "rollups_1h",
           "rollups_1d", "rollups_band_1d", "bridge_status", "sensors", "bridges", "tariff_bands", "tariffs",
           "nodes", "sites", "api_keys", "marketing_consents", "users", "customers", "resellers")


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to a database emptied of every row (schema kept)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET wattline.allow_history_rewrite = 'on'")
        conn.execute(f"TRUNCATE {', '.join(_TABLES)} RESTART IDENTITY CASCADE")
        yield conn


def test_settings(tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "mqtt_client_id": f"gw-{uuid.uuid4().hex[:8]}", "mqtt_share_group": f"g{uuid.uuid4().hex[:6]}",
        "spool_dir": tmp_path / "spool", "gateway_metrics_port": 0, "batch_max_seconds": 0.05,
        "rollup_period_s": 0.2,
    }
    base.update(overrides)
    return Settings(**base)


class RunningGateway:
    """A real gateway on its own event loop thread."""

    def __init__(self, settings: Settings, database_url: str, mqtt_url: str) -> None:
        from ingest.gateway import Gateway

        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.gateway: Gateway | None = None

        async def main() -> None:
            self.gateway = Gateway(settings, database_url, mqtt_url)
            self.ready.set()
            await self.gateway.run()

        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(main(),), daemon=True)
        self.thread.start()
        self.ready.wait(10)
        # The broker drops what is published before the shared subscription exists.
        wait_for(lambda: self.gateway is not None and self.gateway.subscribed, 15)

    def stop(self) -> None:
        assert self.gateway is not None
        self.loop.call_soon_threadsafe(self.gateway.stop)
        self.thread.join(15)


@pytest.fixture
def start_gateway(database_url: str, mqtt_url: str, tmp_path: Path) -> Iterator[Callable[..., RunningGateway]]:
    started: list[RunningGateway] = []

    def start(settings: Settings | None = None, **overrides: Any) -> RunningGateway:
        gw = RunningGateway(settings or test_settings(tmp_path, **overrides), database_url, mqtt_url)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        if gw.thread.is_alive():
            gw.stop()


def wait_for(predicate: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s (last value: {last!r})")


def count(conn: psycopg.Connection[Any], sql: str, *params: Any) -> int:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])
