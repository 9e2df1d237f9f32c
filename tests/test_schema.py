"""The schema: migrations are idempotent, the extension is really TimescaleDB, and the
constraints say what the data must be."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from tests.factories import count
from tests.fixtures.services import Services
from wattline import catalogue
from wattline.db import create_database, drop_database, with_database
from wattline.domain import Connection
from wattline.migrate import MigrationError, discover, migrate
from wattline.site_builder import SiteSpec, build_site, build_tenant


def test_migrations_apply_once_then_change_nothing(services: Services) -> None:
    url = with_database(services.pg_server_url, f"wl_mig_{uuid.uuid4().hex[:8]}")
    create_database(url)
    try:
        first = migrate(url)
        assert first == [m.version for m in discover()]
        with psycopg.connect(url) as conn:
            before = conn.execute("SELECT count(*) FROM information_schema.columns").fetchone()
        assert migrate(url) == []
        with psycopg.connect(url) as conn:
            after = conn.execute("SELECT count(*) FROM information_schema.columns").fetchone()
            assert before == after
            assert count(conn, "SELECT count(*) FROM schema_migrations") == len(first)
    finally:
        drop_database(url)


def test_every_migration_file_is_idempotent_on_its_own(services: Services) -> None:
    """Re-running a file's SQL on an up-to-date schema must succeed (IF NOT EXISTS etc.)."""
    url = with_database(services.pg_server_url, f"wl_idem_{uuid.uuid4().hex[:8]}")
    create_database(url)
    try:
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            for migration in discover():
                conn.execute(migration.sql.encode())
    finally:
        drop_database(url)


def test_edited_migration_is_refused(services: Services, tmp_path: Any) -> None:
    url = with_database(services.pg_server_url, f"wl_edit_{uuid.uuid4().hex[:8]}")
    create_database(url)
    try:
        (tmp_path / "001_a.sql").write_text("CREATE TABLE IF NOT EXISTS t (x int);")
        assert migrate(url, tmp_path) == ["001_a"]
        (tmp_path / "001_a.sql").write_text("CREATE TABLE IF NOT EXISTS t (x bigint);")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            migrate(url, tmp_path)
    finally:
        drop_database(url)


def test_extension_is_timescaledb_with_hypertables(db: psycopg.Connection[Any]) -> None:
    version = db.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    assert version is not None and version[0].startswith("2.")
    tables = {r[0] for r in db.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")}
    assert {"readings", "rollups_1m", "rollups_15m", "rollups_1h", "rollups_1d"} <= tables
    # create_hypertable really works here, on a fresh table shaped like readings.
    db.execute("DROP TABLE IF EXISTS probe_ht")
    db.execute("CREATE TABLE probe_ht (LIKE readings INCLUDING DEFAULTS)")
    row = db.execute("SELECT create_hypertable('probe_ht', by_range('ts', INTERVAL '1 day'))").fetchone()
    assert row is not None
    db.execute("INSERT INTO probe_ht (sensor_id, ts, current_a, bridge_id) VALUES (1, now(), 1.0, 1)")
    assert count(db, "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'probe_ht'") == 1
    assert count(db, "SELECT count(*) FROM (SELECT time_bucket('1 hour', ts) FROM probe_ht) x") == 1
    db.execute("DROP TABLE probe_ht")


def test_readings_keep_only_the_sensor_time_index(db: psycopg.Connection[Any]) -> None:
    """Every reader names its sensors: `readings` and each of its chunks, new ones too, carry
    the (sensor_id, ts) index and no other (sql/041), which each stored reading pays for."""
    db.execute("""INSERT INTO readings (sensor_id, ts, current_a, bridge_id)
                  VALUES (1, now() - interval '400 days', 1.0, 1)""")  # a chunk made now
    for table in [("public", "readings"), *db.execute(
            """SELECT chunk_schema, chunk_name FROM timescaledb_information.chunks
               WHERE hypertable_name = 'readings'""").fetchall()]:
        defs = [r[0] for r in db.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
                                         table)]
        assert len(defs) == 1 and "UNIQUE" in defs[0] and "(sensor_id, ts)" in defs[0], (table, defs)
    db.execute("DELETE FROM readings WHERE sensor_id = 1")


def _site(db: psycopg.Connection[Any]) -> tuple[int, int]:
    _, customer = build_tenant(db, "R", "C")
    built = build_site(db, customer, SiteSpec("Site", timezone="Europe/London"))
    return built.site_id, built.root


def test_site_gets_root_node_and_tree_rules_hold(db: psycopg.Connection[Any]) -> None:
    site, root = _site(db)
    panel = catalogue.upsert_node(db, site, root, "panel", "MSB", "MSB", nominal_voltage_v=400, power_factor=0.9,
                                  connection=Connection.THREE_PHASE_WYE)
    circuit = catalogue.upsert_node(db, site, panel, "circuit", "C1", "C1")
    with pytest.raises(psycopg.errors.CheckViolation, match="cannot hang off"):
        catalogue.upsert_node(db, site, root, "circuit", "bad", "bad")
    with pytest.raises(psycopg.errors.CheckViolation):
        catalogue.upsert_node(db, site, root, "panel", "no volts", "P2")
    sub = catalogue.upsert_node(db, site, circuit, "panel", "Sub", "SUB", nominal_voltage_v=230, power_factor=0.9,
                                connection=Connection.SINGLE_PHASE)
    deep = catalogue.upsert_node(db, site, sub, "circuit", "C2", "C2")
    with pytest.raises(psycopg.errors.CheckViolation, match="cycle"):
        db.execute("UPDATE nodes SET parent_id = %s WHERE id = %s", (deep, panel))


def test_constraints_reject_bad_rows(db: psycopg.Connection[Any]) -> None:
    site, _ = _site(db)
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("UPDATE sites SET timezone = 'Mars/Olympus' WHERE id = %s", (site,))
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("UPDATE customers SET card_last4 = '12ab'")
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("UPDATE customers SET payment_reference = '4111111111111111'")
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("INSERT INTO users (customer_id, role, email, password_hash) "
                   "SELECT id, 'viewer', 'a@b.c', 'plaintext' FROM customers")
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("INSERT INTO bridges (serial, site_id) VALUES ('bad serial!', %s)", (site,))


def test_audit_log_is_append_only(db: psycopg.Connection[Any]) -> None:
    db.execute("INSERT INTO audit_log (action, subject_type, subject_id) VALUES ('read', 'user', '1')")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("UPDATE audit_log SET action = 'x'")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("DELETE FROM audit_log")
