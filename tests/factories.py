"""Builders and helpers the tests share. Catalogues are built through the core's site
builder (`wattline.site_builder`), the same path the simulator's seed and the benchmarks take."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from psycopg import sql

from ingest.packs import RawPack
from ingest.writer import BatchWriter
from sensor_sim.faults import Faults
from sensor_sim.fleet import build_fleet
from sensor_sim.publisher import Report, Simulator
from sensor_sim.seed import seed_catalogue
from wattline import raw_readings
from wattline.domain import Connection, Resolution, Role
from wattline.packed_tier import PackReport, pack_due
from wattline.senml import NAME_PREFIX, SENML_TOPIC, encode_pack
from wattline.site_builder import (
    BuiltSite,
    CircuitSpec,
    PanelSpec,
    SensorSpec,
    SiteSpec,
    TariffSpec,
    build_site,
    build_tenant,
)
from wattline.tariffs import Band

GAP = 30.0  # the integration gap of the default settings: 3 × 10 s
ROLLUP_TABLES = tuple(r.table for r in Resolution)
FLAT_BANDS = (Band("flat", Decimal("25"), ("weekday", "weekend", "holiday"), dtime(0), dtime(0)),)


# -- waiting and counting ----------------------------------------------------------------------
def wait_for(predicate: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s (last value: {last!r})")


def count(conn: psycopg.Connection[Any], query: str, *params: Any) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def auth(token: str) -> dict[str, str]:
    """The header that authenticates with `token`."""
    return {"Authorization": f"Bearer {token}"}


# -- catalogues -------------------------------------------------------------------------------
def one_circuit_site(db: psycopg.Connection[Any], tz: str = "Europe/London", *, reseller: str = "R",
                     customer: str = "C", name: str = "S") -> BuiltSite:
    """A single-phase 230 V, PF 1 panel "P" with circuit "C" measured by CT-1 on bridge BR-1."""
    _, customer_id = build_tenant(db, reseller, customer)
    return build_site(db, customer_id, SiteSpec(name, timezone=tz, bridges=("BR-1",), panels=(
        PanelSpec("P", "P", 230.0, 1.0, Connection.SINGLE_PHASE,
                  circuits=(CircuitSpec("C", "C", (SensorSpec("CT-1", "BR-1"),)),)),)))


@dataclass
class Tenant:
    """A reseller, its customer and site (panel, circuit, bridge, sensor, tariff), a key per
    role, an alert rule with an open alert, and a webhook."""

    name: str
    reseller_id: int
    customer_id: int
    site_id: int
    panel_id: int
    circuit_id: int
    bridge_id: int
    bridge_serial: str
    tokens: dict[str, str]
    key_ids: dict[str, int]
    sensor_serial: str
    discovered_serial: str
    rule_id: int = 0
    alert_id: int = 0
    webhook_id: int = 0
    user_ids: dict[str, int] = field(default_factory=dict)


@functools.cache
def password_hash(password: str) -> str:
    """An argon2id hash of `password`, made once per test process: one costs about 0.2 s
    here, and a pair of tenants has ten people who all sign in with their tenant's."""
    from wattline.accounts import hash_password

    return hash_password(password)


def make_tenant(db: psycopg.Connection[Any], tag: str) -> Tenant:
    from alerts import store as alert_store
    from alerts.rules import Threshold
    from wattline.accounts import create_user, issue_key

    r, c = build_tenant(db, f"Reseller {tag}", f"Customer {tag}")
    bridge_serial = f"BR-{tag}"
    built = build_site(db, c, SiteSpec(
        f"Site {tag}", timezone="Europe/London", bridges=(bridge_serial,),
        panels=(PanelSpec(f"{tag}-MSB", "MSB", 230.0, 1.0, Connection.SINGLE_PHASE, circuits=(
            CircuitSpec(f"{tag}-C1", f"Chiller {tag}", (SensorSpec(f"CT-{tag}-1", bridge_serial),)),)),),
        tariff=TariffSpec("Flat", "GBP", datetime(2024, 1, 1, tzinfo=UTC), FLAT_BANDS,
                          standing_charge_minor_per_day=Decimal("50"), vat_rate=Decimal("0.2"))))
    site, circuit = built.site_id, built.nodes[f"{tag}-C1"]
    tokens: dict[str, str] = {}
    key_ids: dict[str, int] = {}
    user_ids: dict[str, int] = {}
    for role in Role:
        reseller, customer = (r, None) if role is Role.RESELLER_ADMIN else (None, c)
        uid = create_user(db, email=f"{role.value}-{tag}-{uuid.uuid4().hex[:6]}@example.com", password=None,
                          role=role, reseller_id=reseller, customer_id=customer)
        db.execute("UPDATE users SET password_hash = %s WHERE id = %s", (password_hash("pw-" + tag), uid))
        key = issue_key(db, uid, ["read", "write", "commission", "admin"])
        tokens[role.value] = key.token
        key_ids[role.value] = key.id
        user_ids[role.value] = uid
    rule_id = alert_store.create_rule(db, site, circuit, "Chiller above 10 kW", Threshold(above_w=10_000))
    alert = db.execute("""INSERT INTO alert_episodes (rule_id, subject, message, started_at)
                          VALUES (%s, %s, %s, now() - interval '1 hour') RETURNING id""",
                       (rule_id, str(circuit), f"Chiller {tag} above 10 kW")).fetchone()
    assert alert is not None
    webhook_id, _ = alert_store.create_webhook(db, c, f"https://example.com/hooks/{tag}")
    return Tenant(tag, r, c, site, built.nodes[f"{tag}-MSB"], circuit, built.bridges[bridge_serial], bridge_serial,
                  tokens, key_ids, f"CT-{tag}-1", f"CT-{tag}-NEW", rule_id, alert[0], webhook_id, user_ids)


# -- readings and rollups ---------------------------------------------------------------------
def write(database_url: str, readings: list[tuple[str, float, float]], now: float | None = None,
          bridge: str = "BR-1") -> None:
    """Store (serial, time, amps) readings through the gateway's writer, as packs of 500."""
    writer = BatchWriter(database_url, max_age_s=10 * 365 * 86400.0)
    packs = [RawPack(SENML_TOPIC.format(bridge=bridge), encode_pack(readings[i:i + 500]), now or time.time())
             for i in range(0, len(readings), 500)]
    writer.write(packs)
    writer.close()


def write_metered(database_url: str, readings: list[tuple[str, float, float, float | None]],
                  bridge: str = "BR-1") -> None:
    """Store (serial, time, amps, watts) readings through the gateway's writer, as packs of
    500; watts None sends current only (a clamp), else a meter's signed SenML `power` too."""
    records: list[dict[str, Any]] = []
    for serial, t, amps, watts in readings:
        records.append({"bn": f"{NAME_PREFIX}{serial}:", "bt": t, "n": "current", "u": "A", "v": amps})
        if watts is not None:
            records.append({"n": "power", "u": "W", "v": watts})
    writer = BatchWriter(database_url, max_age_s=10 * 365 * 86400.0)
    chunks = [records[i:i + 1000] for i in range(0, len(records), 1000)]
    result = writer.write([RawPack(SENML_TOPIC.format(bridge=bridge), orjson.dumps(c), time.time()) for c in chunks])
    writer.close()
    assert not result.rejected, result.rejected


def drain(db: psycopg.Connection[Any], engine: Any = None) -> None:
    """Run the rollup engine until the queue is empty, as if the minutes a gateway queued
    had closed and settled (`Settings.rollup_settle_s`), and their 15-minute intervals too;
    work put back after a failure keeps its delay."""
    from analytics.worker import RollupEngine

    engine = engine or RollupEngine(GAP)
    db.execute("UPDATE rollup_dirty SET not_before = now() WHERE attempts = 0 AND not_before > now()")
    while engine.process_dirty(db):
        pass
    # The intervals a deferring engine left for their close, as if it had come.
    db.execute("UPDATE rollup_coarse SET not_before = now() WHERE attempts = 0 AND not_before > now()")
    while engine.process_coarse(db):
        pass


def snapshot(db: psycopg.Connection[Any], table: str) -> dict[tuple[int, datetime], tuple[Any, ...]]:
    """A rollup table's rows by (node, bucket), rounded for comparison."""
    rows = db.execute(sql.SQL("""SELECT node_id, bucket, round(energy_wh::numeric, 6), round(mean_power_w::numeric, 4),
                                        round(max_power_w::numeric, 4), samples, round(coverage::numeric, 4),
                                        round(unmonitored_wh::numeric, 6)
                                 FROM {}""").format(sql.Identifier(table))).fetchall()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def equals_a_recompute_from_scratch(db: psycopg.Connection[Any], t_from: datetime, t_to: datetime) -> None:
    """Every rollup table as the queue left it equals a re-computation of [t_from, t_to) from
    scratch by a fresh engine (which replaces it)."""
    from analytics.worker import RollupEngine

    kept = {t: snapshot(db, t) for t in ROLLUP_TABLES}
    for table in ROLLUP_TABLES:
        db.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
    RollupEngine(GAP).recompute_range(db, t_from, t_to)
    for table in ROLLUP_TABLES:
        assert snapshot(db, table) == kept[table], table


# -- the simulator ---------------------------------------------------------------------------------
def one_reading(bridge: str, serial: str, t: float) -> list[RawPack]:
    """A batch of one pack from `bridge` with one current reading, received at `t`."""
    return [RawPack(SENML_TOPIC.format(bridge=bridge), encode_pack([(serial, t, 5.0)]), t)]


def stored(db: psycopg.Connection[Any]) -> int:
    """Readings stored, in both tiers."""
    return count(db, "SELECT (SELECT count(*) FROM readings) + (SELECT COALESCE(sum(n), 0) FROM readings_packed)")


def all_readings(db: psycopg.Connection[Any]) -> raw_readings.Raw:
    """Every stored reading, both tiers, through the product's own reader."""
    ids = [r[0] for r in db.execute("SELECT id FROM sensors ORDER BY id")]
    return raw_readings.read(db, ids, float("-inf"), float("inf"))


def stored_set(db: psycopg.Connection[Any]) -> set[tuple[str, float]]:
    serial = dict(db.execute("SELECT id, serial FROM sensors").fetchall())
    raw = all_readings(db)
    return {(serial[s], round(t, 3)) for s, t in zip(raw.sensor_id.tolist(), raw.ts_s.tolist(), strict=True)}


#: Where a test's raw readings sit when it reads them: as written, or moved to the packed tier.
TIERS = ("hot", "packed")


def pack_all(database_url: str) -> PackReport:
    """Pack every day there is, today's too, as if the late-data window had passed."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return pack_due(conn, timedelta(0), now=datetime(9000, 1, 1, tzinfo=UTC), sensors_per_batch=3)


def move_to_tier(database_url: str, tier: str) -> None:
    """Put the readings written so far in `tier` (for tests that run on both)."""
    if tier == "packed":
        report = pack_all(database_url)
        with psycopg.connect(database_url) as conn:
            assert count(conn, "SELECT count(*) FROM readings") == 0
        assert report.readings > 0


def run_sim(mqtt_url: str, faults: Faults | None = None, *, minutes: float = 5, sites: int = 1,
            bridges: int = 2, sensors: int = 6, start: float | None = None,
            seed_db: psycopg.Connection[Any] | None = None,
            unassigned_every: int = 0, wire: str = "senml") -> Report:
    """Back-fill `minutes` of a simulated fleet through the broker (seeding its catalogue
    first), as SenML or Sparkplug B (`wire`)."""
    fleet = build_fleet(sites, bridges, sensors)
    if seed_db is not None:
        seed_catalogue(seed_db, fleet, unassigned_every=unassigned_every)
    sim = Simulator(fleet, mqtt_url, faults=faults, client_id=f"sim-{time.monotonic_ns()}", wire=wire)
    report = Report(keep_expected=True)
    begin = start if start is not None else (time.time() // 600) * 600 - 3600
    try:
        sim.backfill(begin, begin + minutes * 60, report)
    finally:
        sim.close()
    return report


def expected_set(report: Report) -> set[tuple[str, float]]:
    return {(s, round(t, 3)) for s, t in report.expected}


# -- the CLI -----------------------------------------------------------------------------------------
def run_cli(*args: str, env: dict[str, str]) -> Any:
    """Run `wattline ARGS` in-process with these environment variables."""
    from typer.testing import CliRunner

    from launcher.cli import app
    from wattline.settings import get_settings

    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, list(args), env=env)
    finally:
        get_settings.cache_clear()


def write_surges(database_url: str, serial: str, bridge: str, starts: list[datetime], amps: float = 50.0) -> None:
    """An hour of `amps` from each start, with half an hour of 2 A either side (for alert tests)."""
    readings = []
    for start in starts:
        t0 = start.timestamp()
        readings += [(serial, t0 - 1800 + i * 10, 2.0) for i in range(180)]
        readings += [(serial, t0 + i * 10, amps) for i in range(360)]
        readings += [(serial, t0 + 3600 + i * 10, 2.0) for i in range(180)]
    write(database_url, readings, bridge=bridge)
