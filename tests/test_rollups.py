"""Rollups in the database: incremental equals full re-computation, late data touches only
its buckets, local days of 23 and 25 hours, nested meters and back-fill on assignment."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
import pytest

from analytics.worker import RollupEngine, _join_minutes
from ingest.packs import RawPack
from ingest.writer import BatchWriter
from sensor_sim.seed import UK_STYLE_TARIFF
from tests.factories import (
    GAP,
    ROLLUP_TABLES,
    TIERS,
    all_readings,
    count,
    drain,
    move_to_tier,
    one_circuit_site,
    run_sim,
    snapshot,
    stored,
    wait_for,
    write,
)
from tests.fixtures.gateway import RunningGateway
from wattline import assignments, catalogue
from wattline.buckets import bucket_bounds
from wattline.domain import Connection, Resolution
from wattline.senml import SENML_TOPIC, encode_pack
from wattline.site_builder import CircuitSpec, PanelSpec, SensorSpec, SiteSpec, build_site, build_tenant

COVERAGE = 4  # index in a snapshot row


@pytest.mark.parametrize("tier", TIERS)
def test_incremental_rollups_equal_full_recompute_and_raw_energy(
        db: psycopg.Connection[Any], mqtt_url: str, start_gateway: Callable[..., RunningGateway], database_url: str,
        tier: str) -> None:
    start_gateway()
    t0 = (time.time() // 3600) * 3600 - 3 * 3600
    report = run_sim(mqtt_url, seed_db=db, minutes=40, start=t0)
    wait_for(lambda: stored(db) >= len(report.expected))
    drain(db)
    incremental = {t: snapshot(db, t) for t in ROLLUP_TABLES}
    move_to_tier(database_url, tier)  # the full re-computation reads the readings from there
    db.execute(f"TRUNCATE {', '.join(ROLLUP_TABLES)}")
    RollupEngine(GAP).recompute_range(db, datetime.fromtimestamp(t0 - 3600, UTC),
                                      datetime.fromtimestamp(t0 + 7200, UTC))
    for table in ROLLUP_TABLES:
        assert snapshot(db, table) == incremental[table], table
    # The site total equals the trapezoid energy of every assigned sensor's raw readings.
    raw = all_readings(db)
    arr = np.column_stack([raw.sensor_id, raw.ts_s, raw.current_a]).astype(float)
    volts = 400 / np.sqrt(3)
    expected = 0.0
    for sensor in np.unique(arr[:, 0]):
        s = arr[arr[:, 0] == sensor]
        p = s[:, 2] * volts * 0.92
        dt = np.diff(s[:, 1])
        ok = dt <= GAP
        expected += float(((p[1:] + p[:-1]) / 2 * dt)[ok].sum() / 3600)
    site_total = db.execute("SELECT sum(energy_wh) FROM rollups_1d r JOIN nodes n ON n.id = r.node_id "
                            "WHERE n.kind = 'site'").fetchone()
    assert site_total is not None and site_total[0] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("tier", TIERS)
def test_late_reading_recomputes_exactly_its_buckets(db: psycopg.Connection[Any], database_url: str,
                                                     tier: str) -> None:
    circuit = one_circuit_site(db).nodes["C"]
    base = datetime(2026, 5, 4, 10, tzinfo=UTC).timestamp()
    # Every 10 s for an hour, but a hole from 10:20:00 to 10:21:00 (wider than the gap limit).
    readings = [("CT-1", base + i * 10, 10.0) for i in range(360) if not 120 < i < 126]
    write(database_url, readings)
    drain(db)
    move_to_tier(database_url, tier)  # packed: the late reading merges into the day's packed row
    before = snapshot(db, "rollups_1m")
    computed_before = computed_at(db)
    minute = datetime.fromtimestamp(base + 1200, UTC)
    assert before[(circuit, minute)][COVERAGE] < 1  # the hole lowers coverage
    time.sleep(0.05)
    write(database_url, [("CT-1", base + 1230, 10.0)])  # arrives late, into the hole
    drain(db)
    after = snapshot(db, "rollups_1m")
    changed = {k[1] for k in after if after[k] != before.get(k)}
    touched = {k[1] for k, at in computed_at(db).items() if at != computed_before.get(k)}
    assert changed == {minute}
    # Only the late reading's minute and its integration neighbours were re-computed.
    assert touched <= {minute - timedelta(minutes=1), minute, minute + timedelta(minutes=1)}
    assert after[(circuit, minute)][COVERAGE] > before[(circuit, minute)][COVERAGE]


def test_a_real_time_minute_is_rolled_up_once_after_it_closes(db: psycopg.Connection[Any],
                                                               database_url: str) -> None:
    """The gateway queues a minute's work to be due `rollup_settle_s` after the minute ends:
    every batch of that minute is then taken by one pass, so the minute is computed once,
    not at each batch. Late data (an older minute) is due at once. The lag from the
    minute's newest readings stored to its rollups committed is measured."""
    from prometheus_client import REGISTRY

    circuit = one_circuit_site(db).nodes["C"]
    into = time.time() % 60
    if not 6 <= into <= 50:  # two sweeps 5 s apart, both in this minute, with time to spare
        time.sleep((66 - into) % 60)
    now = time.time()
    minute = now // 60 * 60
    writer = BatchWriter(database_url, rollup_settle_s=15.0)
    try:
        for ts in (now - 3600.0, now - 5.0, now):
            writer.write([RawPack(SENML_TOPIC.format(bridge="BR-1"), encode_pack([("CT-1", ts, 10.0)]), time.time())])
    finally:
        writer.close()
    due = {round(r[0]): r[1] for r in db.execute("""SELECT extract(epoch FROM ts_from)::float8,
                                                           not_before <= now() FROM rollup_dirty""")}
    late = (now - 3600.0) // 60 * 60
    assert due[late] is True
    rows = db.execute("""SELECT extract(epoch FROM not_before)::float8 FROM rollup_dirty
                         WHERE ts_from = to_timestamp(%s)""", (minute,)).fetchall()
    assert len(rows) == 2  # both sweeps of this minute, one row a batch
    assert all(abs(r[0] - (minute + 75.0)) < 0.01 for r in rows)

    engine = RollupEngine(GAP)
    assert engine.process_dirty(db) == 1  # only the late minute is due
    assert db.execute("SELECT count(*) FROM rollups_1m WHERE node_id = %s AND bucket = to_timestamp(%s)",
                      (circuit, minute)).fetchone() == (0,)
    lag_count = REGISTRY.get_sample_value("wattline_rollup_lag_seconds_count") or 0.0
    db.execute("UPDATE rollup_dirty SET not_before = now()")  # the minute has closed and settled
    assert engine.process_dirty(db) == 2  # one pass takes every batch of the minute
    assert db.execute("SELECT count(*) FROM rollup_dirty").fetchone() == (0,)
    assert db.execute("SELECT samples FROM rollups_1m WHERE node_id = %s AND bucket = to_timestamp(%s)",
                      (circuit, minute)).fetchone() == (2,)
    # One lag observation per real-time minute taken (the late minute is not real time).
    assert REGISTRY.get_sample_value("wattline_rollup_lag_seconds_count") == lag_count + 1


def test_a_minute_stored_in_time_leaves_the_next_minute_to_its_own_pass(db: psycopg.Connection[Any],
                                                                       database_url: str) -> None:
    """A real-time minute whose readings were stored before it was due re-computes itself and
    the minute before (the integration gap), not the minute after: that minute's own pass is
    still to come and reads them. The two passes in turn give what a full re-computation
    gives. Readings stored after their minute was due still re-compute both neighbours."""
    circuit = one_circuit_site(db).nodes["C"]
    m0 = time.time() // 60 * 60 - 1800  # real time: within the hour
    write(database_url, [("CT-1", m0 + i * 10 + 3, 10.0 + i % 7) for i in range(4 * 6)])
    drain(db)
    full = snapshot(db, "rollups_1m")
    sensors = [r[0] for r in db.execute("SELECT id FROM sensors")]
    engine = RollupEngine(GAP)

    def minutes_written(minute: float, *, in_time: bool) -> set[float]:
        db.execute("DELETE FROM rollups_1m")
        db.execute("""INSERT INTO rollup_dirty (ts_from, ts_to, sensor_ids, queued_at, not_before)
                      VALUES (to_timestamp(%s), to_timestamp(%s), %s, now() - make_interval(secs => %s), now())""",
                   (minute, minute + 60, sensors, 2.0 if in_time else 0.0))
        assert engine.process_dirty(db) == 1
        return {r[0] - m0 for r in db.execute(
            "SELECT extract(epoch FROM bucket)::float8 FROM rollups_1m WHERE node_id = %s", (circuit,))}

    assert minutes_written(m0 + 60, in_time=True) == {0.0, 60.0}
    assert minutes_written(m0 + 60, in_time=False) == {0.0, 60.0, 120.0}
    # In real time: minute 1's pass, then minute 2's (which writes minute 1 again, as its left
    # neighbour): every row as a full re-computation has it.
    db.execute("DELETE FROM rollups_1m")
    for minute in (m0 + 60, m0 + 120):
        db.execute("""INSERT INTO rollup_dirty (ts_from, ts_to, sensor_ids, queued_at, not_before)
                      VALUES (to_timestamp(%s), to_timestamp(%s), %s, now() - interval '2 s', now())""",
                   (minute, minute + 60, sensors))
        assert engine.process_dirty(db) == 1
    got = snapshot(db, "rollups_1m")
    assert got and all(got[k] == full[k] for k in got)
    assert {k[1].timestamp() - m0 for k in got if k[0] == circuit} == {0.0, 60.0, 120.0}


def test_queue_rows_naming_an_id_twice_join_its_minutes() -> None:
    """Rows of one minute name a sensor once per gateway commit; rows of several minutes
    name it under each. Every id gets the union of its minutes, and ids with the same
    minutes share one set."""
    got = _join_minutes({frozenset({10}): [1, 2, 2, 1, 4], frozenset({11, 12}): [2, 3, 3, 4],
                         frozenset({13}): [4, 2]})
    assert got == {1: {10}, 2: {10, 11, 12, 13}, 3: {11, 12}, 4: {10, 11, 12, 13}}
    assert got[2] is got[4]


def computed_at(db: psycopg.Connection[Any]) -> dict[tuple[int, datetime], datetime]:
    return {(r[0], r[1]): r[2] for r in db.execute("SELECT node_id, bucket, computed_at FROM rollups_1m")}


@pytest.mark.parametrize("tier", TIERS)
def test_a_near_first_read_integrates_each_minute_as_the_whole_gap_does(db: psycopg.Connection[Any],
                                                                       database_url: str, tier: str) -> None:
    """A minute is integrated from a first read of its readings and those up to `near_s`
    past its ends, then, for a sensor that showed no neighbour that near, a second read out
    to the gap (`raw_readings.read_for_integration`). Reports at irregular intervals put
    every case at some minute's edge: the neighbour near, between near and the gap, exactly
    at either, beyond the gap; each minute, re-computed alone, equals reading the whole gap."""
    circuit = one_circuit_site(db).nodes["C"]
    sensor = count(db, "SELECT id FROM sensors WHERE serial = 'CT-1'")
    base = datetime(2026, 5, 4, 10, tzinfo=UTC).timestamp()
    rng = np.random.default_rng(8)
    steps = [2.0, 9.5, 10.0, 12.0, 14.9, 15.0, 16.0, 22.0, 29.5, 30.0, 31.0, 45.0]
    times = {base + m * 60 + edge for m in range(1, 40, 3) for edge in (-30.0, -15.0, 60.0, 75.0)}
    t = base
    while t < base + 2400:
        t += float(rng.choice(steps))
        times.add(t)
    write(database_url, [("CT-1", t, float(rng.uniform(1, 40))) for t in sorted(times)])
    move_to_tier(database_url, tier)
    minutes = range(int(base // 60), int(base // 60) + 40)
    by_near: dict[float, dict[Any, Any]] = {}
    for near in (GAP, 15.0, 5.0):
        db.execute("TRUNCATE rollups_1m")
        engine = RollupEngine(GAP, near_s=near)
        for m in minutes:
            with db.transaction():
                engine.recompute(db, {sensor: {m}})
        by_near[near] = {k: v for k, v in snapshot(db, "rollups_1m").items() if k[0] == circuit}
    assert len(by_near[GAP]) >= 38
    assert by_near[15.0] == by_near[GAP]
    assert by_near[5.0] == by_near[GAP]


@pytest.mark.parametrize(("day", "hours"), [("2026-03-29", 23), ("2026-10-25", 25), ("2026-06-10", 24)])
def test_local_days_of_23_and_25_hours(db: psycopg.Connection[Any], database_url: str, day: str, hours: int) -> None:
    circuit = one_circuit_site(db).nodes["C"]
    start = datetime.fromisoformat(day).replace(tzinfo=ZoneInfo("Europe/London"))
    t0 = start.timestamp() - 60
    write(database_url, [("CT-1", t0 + i * 10, 10.0) for i in range(int((hours * 3600 + 120) / 10) + 1)])
    drain(db)
    row = db.execute("SELECT energy_wh, coverage, samples FROM rollups_1d WHERE node_id = %s AND bucket = %s",
                     (circuit, start)).fetchone()
    assert row is not None
    assert row[0] == pytest.approx(2300.0 * hours, rel=1e-9)  # 10 A × 230 V for the whole local day
    assert row[1] == pytest.approx(1.0, abs=1e-4)
    assert row[2] == hours * 360
    assert count(db, "SELECT count(*) FROM rollups_1h WHERE node_id = %s AND bucket >= %s AND bucket < %s",
                 circuit, start, datetime.fromtimestamp(start.timestamp() + hours * 3600, UTC)) == hours


def test_main_meter_remainder_and_nested_sums(db: psycopg.Connection[Any], database_url: str) -> None:
    _, customer = build_tenant(db, "R", "C")
    sub = PanelSpec("SUB", "Sub", 230.0, 1.0, Connection.SINGLE_PHASE, feeder=CircuitSpec("F", "Feeder"),
                    circuits=(CircuitSpec("B", "B", (SensorSpec("CT-B", "BR-1", ct_rating_a=200.0),)),))
    built = build_site(db, customer, SiteSpec("S", bridges=("BR-1",), panels=(PanelSpec(
        "MSB", "MSB", 230.0, 1.0, Connection.SINGLE_PHASE, sensors=(SensorSpec("CT-MAIN", "BR-1", ct_rating_a=200.0),),
        circuits=(CircuitSpec("A", "A", (SensorSpec("CT-A", "BR-1", ct_rating_a=200.0),)),), sub_panels=(sub,)),)))
    root = built.root
    msb, a, feeder, sub_id, b = (built.nodes[ref] for ref in ("MSB", "A", "F", "SUB", "B"))
    base = datetime(2026, 5, 4, 10, tzinfo=UTC).timestamp()
    amps = {"CT-MAIN": 50.0, "CT-A": 20.0, "CT-B": 10.0}
    write(database_url, [(s, base + i * 10, amps[s]) for i in range(61) for s in amps])
    drain(db)
    hour = datetime.fromtimestamp(base, UTC).replace(minute=0)
    got = {n: db.execute("SELECT energy_wh, unmonitored_wh FROM rollups_1h WHERE node_id = %s AND bucket = %s",
                         (n, hour)).fetchone() for n in (root, msb, a, feeder, sub_id, b)}
    wh = {k: v * 230.0 * 600 / 3600 for k, v in amps.items()}  # 10 minutes of readings
    assert got[msb][0] == pytest.approx(wh["CT-MAIN"])
    assert got[msb][1] == pytest.approx(wh["CT-MAIN"] - wh["CT-A"] - wh["CT-B"])
    assert got[feeder][0] == pytest.approx(wh["CT-B"]) and got[sub_id][0] == pytest.approx(wh["CT-B"])
    assert got[root][0] == pytest.approx(wh["CT-MAIN"])  # the main meter, never main + children


@pytest.mark.parametrize("tier", TIERS)
def test_assigning_a_discovered_sensor_backfills_its_history(db: psycopg.Connection[Any], database_url: str,
                                                             tier: str) -> None:
    site = one_circuit_site(db).site_id
    other = catalogue.upsert_node(db, site, db.execute("SELECT id FROM nodes WHERE kind='panel'").fetchone()[0],
                                  "circuit", "D", "D")
    base = datetime(2026, 5, 4, 10, tzinfo=UTC).timestamp()
    write(database_url, [("CT-NEW", base + i * 10, 5.0) for i in range(61)])
    drain(db)
    move_to_tier(database_url, tier)  # the back-fill reads the history from there
    assert count(db, "SELECT count(*) FROM discovered_sensors WHERE serial = 'CT-NEW'") == 1
    assert count(db, "SELECT count(*) FROM rollups_1m WHERE node_id = %s", other) == 0
    assignments.assign(db, None, "CT-NEW", other, 1, 32.0)
    drain(db)
    energy = db.execute("SELECT sum(energy_wh) FROM rollups_1m WHERE node_id = %s", (other,)).fetchone()
    assert energy is not None and energy[0] == pytest.approx(5.0 * 230.0 * 600 / 3600)
    assert count(db, "SELECT count(*) FROM discovered_sensors") == 0


def test_late_data_never_rebuilds_a_coarse_bucket_from_what_retention_left(
        db: psycopg.Connection[Any], database_url: str) -> None:
    """Readings are accepted, and history re-computed, only where the finer rows of every
    hour and day they touch are still kept: the oldest accepted age and retention agree."""
    from wattline.settings import Settings

    settings = Settings(retention_raw_days=10, retention_1m_days=10, max_reading_age_days=400)
    assert settings.late_data_horizon_s == 8 * 86400  # two days inside retention
    built = one_circuit_site(db, "UTC")
    now = time.time()
    old_day = (now // 86400 - 9) * 86400  # a day retention has already cut into
    write(database_url, [("CT-1", old_day + 43200 + i * 10, 10.0) for i in range(361)], now=now)
    drain(db)
    kept = snapshot(db, "rollups_1d")
    db.execute("DELETE FROM rollups_1m")  # what the retention job does to 1-minute rows
    db.execute("DELETE FROM readings WHERE ts < to_timestamp(%s)", (old_day + 43200 + 1800,))
    # A late reading that old is refused at the gateway, with its reason ...
    writer = BatchWriter(database_url, max_age_s=settings.late_data_horizon_s)
    result = writer.write([RawPack(SENML_TOPIC.format(bridge="BR-1"),
                                   encode_pack([("CT-1", old_day + 50000, 10.0)]), now)])
    writer.close()
    assert result.stored == 0
    reason = db.execute("SELECT reason FROM rejected_readings").fetchone()
    assert reason is not None and reason[0] == "ancient_timestamp"
    # ... and a re-queued history (the sensor moved) leaves the kept day as it was.
    other = catalogue.create_node(db, None, built.site_id, built.nodes["P"], "circuit", "D", "D")
    assignments.correct(db, None, "CT-1", other, 1, 100.0)
    drain(db, RollupEngine(GAP, horizon_s=settings.late_data_horizon_s))
    assert snapshot(db, "rollups_1d") == kept


def test_one_sites_failure_stays_with_that_site(db: psycopg.Connection[Any], database_url: str) -> None:
    """A site whose rollups cannot be written (here: its 15-minute rows are refused by a
    trigger) is put back with its reason and a delay; the other site's rollups are written."""
    a = one_circuit_site(db, "UTC")
    _, other_customer = build_tenant(db, "R2", "C2")
    b = build_site(db, other_customer, SiteSpec("S2", bridges=("BR-2",), panels=(
        PanelSpec("P", "P", 230.0, 1.0, Connection.SINGLE_PHASE, circuits=(
            CircuitSpec("C", "C", (SensorSpec("CT-2", "BR-2"),)),)),)))
    db.execute("""CREATE OR REPLACE FUNCTION wl_test_refuse_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
                  BEGIN RAISE EXCEPTION 'site A is broken'; END $$""")
    db.execute(psycopg.sql.SQL("""CREATE TRIGGER wl_test_refuse_rollup BEFORE INSERT OR UPDATE ON rollups_15m
                                  FOR EACH ROW WHEN (NEW.node_id IN ({})) EXECUTE FUNCTION wl_test_refuse_rollup()""")
               .format(psycopg.sql.SQL(", ").join(map(psycopg.sql.Literal, [a.root, *a.nodes.values()]))))
    try:
        base = datetime(2026, 5, 4, 10, tzinfo=UTC).timestamp()
        write(database_url, [("CT-1", base + i * 10, 10.0) for i in range(61)], bridge="BR-1")
        write(database_url, [("CT-2", base + i * 10, 10.0) for i in range(61)], bridge="BR-2")
        drain(db)
        assert count(db, "SELECT count(*) FROM rollups_15m WHERE node_id = %s", b.root) > 0  # written
        assert count(db, "SELECT count(*) FROM rollups_1m WHERE node_id = %s", a.root) == 0  # not half-written
        row = db.execute("SELECT attempts, last_error, not_before > now() FROM rollup_dirty").fetchone()
        assert row is not None and row[0] == 1 and "site A is broken" in row[1] and row[2]
    finally:
        db.execute("DROP TRIGGER wl_test_refuse_rollup ON rollups_15m")
    db.execute("UPDATE rollup_dirty SET not_before = now()")  # the delay passes; the site is mended
    drain(db)
    assert count(db, "SELECT count(*) FROM rollups_15m WHERE node_id = %s", a.root) > 0
    assert count(db, "SELECT count(*) FROM rollup_dirty") == 0


def test_two_workers_share_the_queue_each_slice_once(db: psycopg.Connection[Any], database_url: str) -> None:
    """Scale-out: two rollup workers drain one queue at once (each on its own connection).
    Every queue row is done by exactly one of them, both do some, and the rollups equal a
    full re-computation: a site's rows are never written by both at once."""
    import threading

    from sensor_sim.fleet import build_fleet
    from sensor_sim.seed import seed_catalogue

    fleet = build_fleet(4, 2, 6)
    seed_catalogue(db, fleet)
    t0 = (time.time() // 3600) * 3600 - 3 * 3600
    rng = np.random.default_rng(7)
    writer = BatchWriter(database_url)
    for tick in range(0, 30 * 60, 10):  # half an hour, every bridge's sweep as its own batch
        for bridge, idx in fleet.sensors_by_bridge().items():
            amps = rng.uniform(0, 40, len(idx)).round(3)
            writer.write([RawPack(SENML_TOPIC.format(bridge=bridge), encode_pack(
                [(fleet.serials[i], t0 + tick, float(a)) for i, a in zip(idx, amps, strict=True)]), time.time())])
    writer.close()
    queued = count(db, "SELECT count(*) FROM rollup_dirty")
    assert queued >= 100
    # the gateway queued each site's work in the site's own shard (4 sites, 16 shards)
    assert count(db, "SELECT count(DISTINCT shard) FROM rollup_dirty") == 4
    done = [0, 0]
    start = threading.Barrier(2)

    def work(k: int) -> None:
        engine = RollupEngine(GAP, shards_per_pass=1)  # a pass claims one site's shard: both have work
        with psycopg.connect(database_url, autocommit=True) as conn:
            start.wait()
            while (n := engine.process_dirty(conn, limit=3)) or count(conn, "SELECT count(*) FROM rollup_dirty"):
                done[k] += n

    workers = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
    assert count(db, "SELECT count(*) FROM rollup_dirty") == 0
    assert sum(done) == queued and min(done) > 0, done
    incremental = {t: snapshot(db, t) for t in ROLLUP_TABLES}
    assert incremental["rollups_1m"]
    db.execute(f"TRUNCATE {', '.join(ROLLUP_TABLES)}")
    RollupEngine(GAP).recompute_range(db, datetime.fromtimestamp(t0 - 3600, UTC),
                                      datetime.fromtimestamp(t0 + 7200, UTC))
    for table in ROLLUP_TABLES:
        fresh = snapshot(db, table)
        assert fresh.keys() == incremental[table].keys(), table
        # Equal but for summation order: the two workers' slices differ from one full pass,
        # and means add float32 currents (relative error ~1e-7).
        for key, got in incremental[table].items():
            assert [float("nan") if v is None else float(v) for v in got] == pytest.approx(
                [float("nan") if v is None else float(v) for v in fresh[key]], rel=1e-6, abs=1e-6, nan_ok=True), \
                (table, key)


def test_real_time_minutes_leave_the_coarser_tiers_to_their_interval_close(
        db: psycopg.Connection[Any], database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deferring engine writes a real-time minute's 1-minute rollups at once and queues
    its site's 15-minute interval once, however many minutes touch it; at the interval's
    close the coarser tiers and the price equal a full recompute's. A site whose interval
    fails is put back with its reason; the other site's is written."""
    first = one_circuit_site(db, "UTC")
    _, customer = build_tenant(db, "R2", "C2")
    second = build_site(db, customer, SiteSpec("S2", timezone="Europe/Paris", bridges=("BR-2",), tariff=UK_STYLE_TARIFF,
                                               panels=(
        PanelSpec("P", "P", 230.0, 1.0, Connection.SINGLE_PHASE,
                  circuits=(CircuitSpec("C", "C", (SensorSpec("CT-2", "BR-2"),)),)),)))
    now = time.time()
    start = now // 900 * 900 - 900  # the whole of the last closed 15 minutes, and this one so far
    stamps = np.arange(start, now - 1, 10.0)
    for serial, bridge in (("CT-1", "BR-1"), ("CT-2", "BR-2")):
        writer = BatchWriter(database_url)
        for t in stamps:  # a batch per sweep, as a gateway writes them in real time
            writer.write([RawPack(SENML_TOPIC.format(bridge=bridge), encode_pack([(serial, float(t), 12.5)]),
                                  float(t) + 1.0)])
        writer.close()
    db.execute("UPDATE rollup_dirty SET not_before = now()")
    engine = RollupEngine(GAP, coarse_delay_s=45.0)
    while engine.process_dirty(db):
        pass
    minutes = count(db, "SELECT count(DISTINCT bucket) FROM rollups_1m")
    assert minutes >= 15
    assert count(db, "SELECT count(*) FROM rollups_15m") == 0  # left for the interval's close
    queued = db.execute("""SELECT site_id, extract(epoch FROM bucket)::float8, extract(epoch FROM not_before)::float8
                           FROM rollup_coarse ORDER BY 1, 2""").fetchall()
    # Once an interval (the key), the neighbour minutes' intervals too where a pass reached them.
    assert {(s, b) for s, b, _ in queued} >= {(site, b) for site in (first.site_id, second.site_id)
                                              for b in (start, start + 900)}
    assert all(due == b + 900 + 45.0 for _, b, due in queued)
    # What is due (an interval closed over 45 s ago) is done; this interval waits for its close.
    engine.process_coarse(db)
    waiting = db.execute("SELECT site_id, extract(epoch FROM bucket)::float8 FROM rollup_coarse").fetchall()
    assert {(first.site_id, start + 900), (second.site_id, start + 900)} <= set(waiting)
    assert all(due > time.time() - 1 for s, b, due in queued if (s, b) in set(waiting))
    of_second = sum(1 for s, _ in waiting if s == second.site_id)

    # The intervals close; the second site's price fails once.
    from analytics.band_rollups import price_days as real_price

    def failing(conn: psycopg.Connection[Any], site_id: int, instants: list[datetime]) -> int:
        if site_id == second.site_id:
            raise RuntimeError("tariff table unreadable")
        return real_price(conn, site_id, instants)

    monkeypatch.setattr("analytics.worker.price_days", failing)
    db.execute("UPDATE rollup_coarse SET not_before = now()")
    assert engine.process_coarse(db) == len(waiting)
    kept = db.execute("SELECT site_id, attempts, last_error FROM rollup_coarse").fetchall()
    assert {k[0] for k in kept} == {second.site_id} and all(k[1] == 1 and "unreadable" in k[2] for k in kept)
    assert count(db, """SELECT count(*) FROM rollups_15m r JOIN nodes n ON n.id = r.node_id
                        WHERE n.site_id = %s AND r.bucket = to_timestamp(%s)""", second.site_id, start + 900) == 0
    assert count(db, """SELECT count(*) FROM rollups_15m r JOIN nodes n ON n.id = r.node_id
                        WHERE n.site_id = %s AND r.bucket = to_timestamp(%s)""", first.site_id, start + 900) == 3
    monkeypatch.setattr("analytics.worker.price_days", real_price)
    db.execute("UPDATE rollup_coarse SET not_before = now()")
    assert engine.process_coarse(db) == of_second

    deferred = {t: snapshot(db, t) for t in ("rollups_15m", "rollups_1h", "rollups_1d")}
    band = db.execute("SELECT node_id, bucket, band, round(cost_minor::numeric, 6) FROM rollups_band_1d "
                      "ORDER BY 1, 2, 3").fetchall()
    RollupEngine(GAP).recompute_range(db, datetime.fromtimestamp(start - 3600, UTC),
                                      datetime.fromtimestamp(now + 3600, UTC))
    assert {t: snapshot(db, t) for t in deferred} == deferred
    assert db.execute("SELECT node_id, bucket, band, round(cost_minor::numeric, 6) FROM rollups_band_1d "
                      "ORDER BY 1, 2, 3").fetchall() == band
    assert deferred["rollups_15m"]
    # Only days that are over are priced (these two intervals' days are, just after midnight).
    _, ends = bucket_bounds([start, now], Resolution.DAY1, "Europe/Paris")
    assert count(db, "SELECT count(*) FROM band_days WHERE site_id = %s", second.site_id) in {
        len({e for e in ends if e <= at}) for at in (now, time.time())}  # a midnight may pass meanwhile


def test_two_workers_claim_different_sites_intervals(db: psycopg.Connection[Any], database_url: str) -> None:
    """Coarse intervals are claimed a site at a time by try-lock: a second worker takes the
    next site instead of waiting on the first's."""
    from wattline.rollup_queue import claim_coarse_sites

    _, customer = build_tenant(db, "R", "C")
    sites = [catalogue.upsert_site(db, customer, f"S{k}") for k in range(2)]
    db.execute("""INSERT INTO rollup_coarse (site_id, bucket, not_before)
                  SELECT s, to_timestamp(900), now() - make_interval(secs => s) FROM unnest(%s::bigint[]) s""",
               (sites,))
    with psycopg.connect(database_url) as a, psycopg.connect(database_url) as b, a.transaction(), b.transaction():
        first = claim_coarse_sites(a, 1)
        second = claim_coarse_sites(b, 1)
        assert first == [sites[1]] and second == [sites[0]]  # the oldest due first, then the next
        assert claim_coarse_sites(b, 5) == [sites[0]]  # b holds its own; a's is not offered
