"""The `wattline` CLI against the real database."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from tests.factories import ROLLUP_TABLES, count, one_circuit_site, snapshot, write
from tests.factories import run_cli as run
from tests.fixtures.services import Services
from wattline.db import drop_database, with_database


def test_db_migrate_creates_then_changes_nothing(services: Services) -> None:
    url = with_database(services.pg_server_url, f"wl_cli_{uuid.uuid4().hex[:8]}")
    try:
        first = run("db", "migrate", env={"WATTLINE_DATABASE_URL": url})
        assert first.exit_code == 0, first.output
        assert "created the database" in first.output and "applied 001_extensions" in first.output
        second = run("db", "migrate", env={"WATTLINE_DATABASE_URL": url})
        assert second.exit_code == 0 and "schema is up to date" in second.output
    finally:
        drop_database(url)


def test_missing_settings_are_a_clear_error() -> None:
    res = run("gateway", env={"WATTLINE_DATABASE_URL": "", "WATTLINE_MQTT_URL": ""})
    assert res.exit_code == 2 and "must be set" in res.output


def test_rollup_command_recomputes_a_range(db: psycopg.Connection[Any], database_url: str) -> None:
    one_circuit_site(db)
    base = datetime(2026, 5, 4, 10, tzinfo=UTC).timestamp()
    write(database_url, [("CT-1", base + i * 10, 10.0) for i in range(361)])
    db.execute("TRUNCATE rollup_dirty")  # as if the worker had never run
    assert count(db, "SELECT count(*) FROM rollups_1h") == 0
    # Data of May: inside a horizon of ten years (the default, 91 days, would keep May as it is).
    decade = {"WATTLINE_MAX_READING_AGE_DAYS": "3650", "WATTLINE_RETENTION_RAW_DAYS": "3650",
              "WATTLINE_RETENTION_1M_DAYS": "3650"}
    res = run("rollup", "--from", "2026-05-04T09:00:00", "--to", "2026-05-04T12:00:00",
              env={"WATTLINE_DATABASE_URL": database_url, **decade})
    assert res.exit_code == 0, res.output
    hour = snapshot(db, "rollups_1h")
    ten = datetime(2026, 5, 4, 10, tzinfo=UTC)
    # Circuit, panel and site: an hour of 10 A at 230 V (the 11:00:00 reading opens the next hour).
    assert [v[0] for k, v in hour.items() if k[1] == ten] == [pytest.approx(2300.0)] * 3
    assert {t: len(snapshot(db, t)) > 0 for t in ROLLUP_TABLES} == dict.fromkeys(ROLLUP_TABLES, True)


def test_demo_seed_is_idempotent(db: psycopg.Connection[Any], database_url: str) -> None:
    for _ in range(2):
        res = run("demo-seed", "--sites", "2", "--bridges", "1", "--sensors", "5",
                  env={"WATTLINE_DATABASE_URL": database_url})
        assert res.exit_code == 0, res.output
    assert count(db, "SELECT count(*) FROM sites") == 2
    assert count(db, "SELECT count(*) FROM users WHERE email LIKE '%%@wattline.example'") == 3
    assert count(db, "SELECT count(*) FROM alert_rules") == 2 * 4  # a starter set per site, once
    # A year and more of the simulator's weather per site, where the site is (London, Berlin).
    assert count(db, "SELECT count(*) FROM site_temperatures WHERE source = 'simulator'") == 2 * 400
    assert count(db, "SELECT count(*) FROM sites WHERE latitude > 50") == 2
    # Rooftop PV on every other site, as generation on a board no clamp sits above.
    assert count(db, "SELECT count(*) FROM nodes WHERE flow = 'generation' AND asset_type = 'pv'") == 1
    # One starter virtual meter: the HVAC circuits of both sites.
    assert count(db, "SELECT count(*) FROM virtual_meters") == 1
    assert count(db, """SELECT count(*) FROM virtual_meter_terms t JOIN nodes n ON n.id = t.node_id
                        WHERE n.asset_type = 'hvac'""") == count(
        db, "SELECT count(*) FROM nodes WHERE asset_type = 'hvac'") > 0


def test_alerts_once_evaluates_every_rule(db: psycopg.Connection[Any], database_url: str) -> None:
    res = run("demo-seed", "--sites", "1", "--bridges", "1", "--sensors", "3",
              env={"WATTLINE_DATABASE_URL": database_url})
    assert res.exit_code == 0, res.output
    res = run("alerts", "--once", env={"WATTLINE_DATABASE_URL": database_url, "WATTLINE_MQTT_URL": "mqtt://unused"})
    assert res.exit_code == 0, res.output
    assert "rules 4, raised 0" in res.output
    assert count(db, "SELECT count(*) FROM alert_rules WHERE evaluated_to IS NOT NULL") == 4


def test_bridge_claim_codes_are_printed_for_labels() -> None:
    from wattline.catalogue import bridge_claim_code
    from wattline.settings import Settings

    key = Settings(secret_key="a-test-secret-of-16-chars").claim_key
    res = run("bridge-claim-code", "BR-1", "br-2", env={"WATTLINE_SECRET_KEY": "a-test-secret-of-16-chars"})
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines == [f"BR-1\t{bridge_claim_code('BR-1', key)}", f"br-2\t{bridge_claim_code('BR-2', key)}"]
    assert all(len(line.split("\t")[1]) == 14 for line in lines)


@pytest.mark.timeout(60)  # should the refusal regress, `wattline api` would serve forever: fail fast instead
def test_up_runs_as_the_demo_without_a_secret() -> None:
    """`./run up` on a fresh machine has no WATTLINE_SECRET_KEY: the demo must start anyway
    (it once did not), and only the demo."""
    from launcher.cli import demo_settings
    from wattline.settings import get_settings

    # demo_settings() sets variables for the services `up` starts: put back exactly what was.
    names = ("WATTLINE_SECRET_KEY", "WATTLINE_DEMO", "WATTLINE_ALLOW_PRIVATE_DESTINATIONS")
    saved = {name: os.environ.pop(name, None) for name in names}
    try:
        settings = demo_settings()
        assert settings.demo and settings.allow_private_destinations
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()
    res = run("api", env={"WATTLINE_SECRET_KEY": "", "WATTLINE_DEMO": "false", "WATTLINE_DATABASE_URL": "x"})
    assert res.exit_code == 2 and "WATTLINE_SECRET_KEY" in res.output  # everything else refuses
