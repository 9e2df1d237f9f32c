"""Alerts through the real pipeline: the simulator puts a known event into normal load,
Mosquitto and the gateway carry it, the rollup worker rolls it up, and the scheduler must
raise one episode for it, clear it when it ends, and stay quiet on normal circuits."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest

from alerts import store
from alerts.rules import (
    AfterHours,
    Anomaly,
    BaseLoad,
    BridgeOffline,
    Budget,
    Cycling,
    RuleParams,
    SensorOffline,
    Threshold,
)
from alerts.scheduler import run_pass
from analytics.worker import RollupEngine
from sensor_sim.faults import Faults, LoadChange
from sensor_sim.fleet import Circuit, Fleet, build_fleet
from sensor_sim.profiles import Profile
from sensor_sim.publisher import Report, Simulator
from sensor_sim.seed import seed_catalogue
from tests.factories import TIERS, count, move_to_tier, stored, wait_for
from tests.fixtures.gateway import RunningGateway, settings_for
from tests.fixtures.receivers import Receiver
from wattline.settings import Settings
from wattline.signing import verify

V_PHASE = 400.0 / 3 ** 0.5  # the seeded boards: 400 V three-phase wye
PF = 0.92


def circuit(fleet: Fleet, profile: Profile, nth: int = 0) -> Circuit:
    return [c for c in fleet.sites[0].circuits if c.profile == profile and c.phases == 1][nth]


def node_of(db: psycopg.Connection[Any], c: Circuit) -> int:
    row = db.execute("SELECT id FROM nodes WHERE external_ref = %s", (c.ref,)).fetchone()
    assert row is not None
    return int(row[0])


def site_id(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT id FROM sites").fetchone()
    assert row is not None
    return int(row[0])


def publish(mqtt_url: str, fleet: Fleet, start: float, end: float, *, interval_s: float = 10.0,
            faults: Faults | None = None) -> Report:
    sim = Simulator(fleet, mqtt_url, interval_s=interval_s, faults=faults, client_id=f"sim-{time.monotonic_ns()}")
    try:
        return sim.backfill(start, end)
    finally:
        sim.close()


def settle(db: psycopg.Connection[Any], readings: int, gap_s: float = 30.0) -> None:
    """Wait until the gateway stored `readings` and roll up whatever is still dirty."""
    try:
        wait_for(lambda: stored(db) >= readings, timeout_s=60)
    except AssertionError:
        print(db.execute("SELECT reason, count(*) FROM rejected_readings GROUP BY 1").fetchall(), stored(db), readings)
        raise
    engine = RollupEngine(gap_s)
    while engine.process_dirty(db):
        pass


def episodes(db: psycopg.Connection[Any], rule_id: int) -> list[dict[str, Any]]:
    with db.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute("SELECT subject, started_at, cleared_at, message FROM alert_episodes "
                           "WHERE rule_id = %s ORDER BY started_at", (rule_id,)).fetchall()


def evaluate(db: psycopg.Connection[Any], settings: Settings, now: float) -> None:
    with httpx.Client() as http:
        report = run_pass(db, settings, http, now=datetime.fromtimestamp(now, UTC))
    assert report.errors == 0


def rule(db: psycopg.Connection[Any], params: RuleParams, node_id: int | None = None) -> int:
    return store.create_rule(db, site_id(db), node_id, f"{params.kind} test", params)


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def near(a: datetime, b: float, tolerance_s: float) -> bool:
    return abs(a.timestamp() - b) <= tolerance_s


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    # The webhook receivers of these tests run on this machine.
    return settings_for(tmp_path, alerts_first_lookback_h=24 * 40, alerts_settle_s=60.0,
                        allow_private_destinations=True)


# -- threshold ---------------------------------------------------------------------------------
def test_threshold_fires_once_across_evaluations_and_clears(
        db: psycopg.Connection[Any], mqtt_url: str, start_gateway: Callable[..., RunningGateway],
        settings: Settings) -> None:
    fleet = build_fleet(1, 1, 16)
    seed_catalogue(db, fleet)
    heater, normal = circuit(fleet, Profile.HVAC), circuit(fleet, Profile.HVAC, 1)
    start_gateway()
    t0 = (time.time() // 3600) * 3600 - 5 * 3600
    event = (t0 + 3600, t0 + 3600 + 40 * 60)
    # 3 × the rating on top of normal load: far above anything the profile does.
    surge = LoadChange(heater.sensor_serials, *event, offset_a=3 * heater.rated_a)
    report = publish(mqtt_url, fleet, t0, t0 + 3 * 3600, faults=Faults(load_changes=(surge,)))
    settle(db, report.readings_generated)

    def limit(c: Circuit) -> Threshold:
        return Threshold(above_w=2 * c.rated_a * V_PHASE * PF, hold_minutes=15)
    hot = rule(db, limit(heater), node_of(db, heater))
    quiet = rule(db, limit(normal), node_of(db, normal))

    # First pass half way through the event: raised, not yet cleared.
    evaluate(db, settings, event[0] + 25 * 60 + settings.alerts_settle_s)
    [ep] = episodes(db, hot)
    assert ep["cleared_at"] is None and near(ep["started_at"], event[0], 60)
    # Later passes see the end: the same episode clears; nothing new is raised.
    evaluate(db, settings, event[1] + 10 * 60)
    evaluate(db, settings, t0 + 3 * 3600 + settings.alerts_settle_s)
    [ep] = episodes(db, hot)
    assert near(ep["cleared_at"], event[1], 60), ep
    assert episodes(db, quiet) == []
    # Re-evaluating the same data from scratch (a scheduler that lost its cursor) finds
    # the same episode and adds nothing.
    db.execute("UPDATE alert_rules SET evaluated_to = NULL")
    evaluate(db, settings, t0 + 3 * 3600 + settings.alerts_settle_s)
    assert len(episodes(db, hot)) == 1 and episodes(db, quiet) == []


def test_threshold_respects_hours_and_hold(db: psycopg.Connection[Any], mqtt_url: str,
                                           start_gateway: Callable[..., RunningGateway], settings: Settings) -> None:
    fleet = build_fleet(1, 1, 16)
    seed_catalogue(db, fleet)
    heater = circuit(fleet, Profile.HVAC)
    start_gateway()
    t0 = (time.time() // 3600) * 3600 - 4 * 3600
    short = LoadChange(heater.sensor_serials, t0 + 1800, t0 + 1800 + 8 * 60, offset_a=3 * heater.rated_a)
    report = publish(mqtt_url, fleet, t0, t0 + 2 * 3600, faults=Faults(load_changes=(short,)))
    settle(db, report.readings_generated)
    node = node_of(db, heater)
    watt = 2 * heater.rated_a * V_PHASE * PF
    held_too_briefly = rule(db, Threshold(above_w=watt, hold_minutes=15), node)
    local_hour = at(t0 + 1800).astimezone(ZoneInfo("Europe/London")).hour
    outside = ("13:00", "20:00") if local_hour < 12 else ("01:00", "08:00")
    out_of_hours = rule(db, Threshold(above_w=watt, hold_minutes=5, hours=outside), node)
    in_hours = rule(db, Threshold(above_w=watt, hold_minutes=5), node)
    evaluate(db, settings, t0 + 2 * 3600 + settings.alerts_settle_s)
    assert episodes(db, held_too_briefly) == []
    assert episodes(db, out_of_hours) == []
    assert len(episodes(db, in_hours)) == 1


# -- offline -----------------------------------------------------------------------------------
@pytest.mark.parametrize("tier", TIERS)
def test_silent_sensor_raises_once_and_clears_when_it_reports_again(
        db: psycopg.Connection[Any], mqtt_url: str, start_gateway: Callable[..., RunningGateway],
        settings: Settings, database_url: str, tier: str) -> None:
    fleet = build_fleet(1, 1, 8)
    seed_catalogue(db, fleet)
    quiet = fleet.serials[3]
    start_gateway()
    t0 = time.time() // 10 * 10 - 1800
    silence = LoadChange((quiet,), t0 + 600, t0 + 3600, silent=True)
    report = publish(mqtt_url, fleet, t0, t0 + 1200, faults=Faults(load_changes=(silence,)))
    settle(db, report.readings_generated)
    move_to_tier(database_url, tier)  # packed: the sensor's last reading and its return are read from there
    offline = rule(db, SensorOffline(intervals=6))
    evaluate(db, settings, t0 + 1200)
    evaluate(db, settings, t0 + 1210)
    [ep] = episodes(db, offline)
    assert ep["subject"] == quiet and ep["cleared_at"] is None
    assert near(ep["started_at"], t0 + 590, 1)
    # The sensor comes back at t0 + 1200.
    more = publish(mqtt_url, fleet, t0 + 1200, t0 + 1500)
    settle(db, report.readings_generated + more.readings_generated)
    evaluate(db, settings, t0 + 1500)
    [ep] = episodes(db, offline)
    assert near(ep["cleared_at"], t0 + 1200, 1)
    evaluate(db, settings, t0 + 1510)
    assert len(episodes(db, offline)) == 1


def test_bridge_offline_from_its_retained_status(db: psycopg.Connection[Any], mqtt_url: str,
                                                 start_gateway: Callable[..., RunningGateway],
                                                 settings: Settings) -> None:
    fleet = build_fleet(1, 2, 4)
    seed_catalogue(db, fleet)
    start_gateway()
    down = fleet.sites[0].bridge_serials[1]
    t0 = time.time() // 10 * 10 - 600
    faults = Faults(offline_bridge=down, offline_after_ticks=5, offline_for_ticks=10_000)
    sim = Simulator(fleet, mqtt_url, faults=faults, client_id=f"sim-{time.monotonic_ns()}")
    try:
        sim.backfill(t0, t0 + 300)
        wait_for(lambda: count(db, "SELECT count(*) FROM bridge_status WHERE NOT online") == 1)
        offline = rule(db, BridgeOffline(hold_minutes=0))
        evaluate(db, settings, time.time() + 1)
        evaluate(db, settings, time.time() + 2)
        [ep] = episodes(db, offline)
        assert ep["subject"] == down and ep["cleared_at"] is None
        sim.client.publish(f"wattline/v1/bridges/{down}/status", b"online", qos=1, retain=True).wait_for_publish(10)
        wait_for(lambda: count(db, "SELECT count(*) FROM bridge_status WHERE NOT online") == 0)
    finally:
        sim.close()
    evaluate(db, settings, time.time() + 3)
    [ep] = episodes(db, offline)
    assert ep["cleared_at"] is not None


# -- weekly baselines: anomaly, after-hours, base load -------------------------------------------
DAY = 86400.0
LONDON = ZoneInfo("Europe/London")  # the zone of the fleet's first site


def local_midnight(days_ago: int) -> float:
    today = datetime.now(LONDON).date() - timedelta(days=days_ago)
    return datetime.combine(today, datetime.min.time(), LONDON).timestamp()


def test_weekly_baselines_catch_anomaly_after_hours_use_and_rising_base_load(
        db: psycopg.Connection[Any], mqtt_url: str, start_gateway: Callable[..., RunningGateway],
        tmp_path: Any) -> None:
    """26 days at a 5-minute reporting interval: three events on three circuits, and the
    same rules on untouched circuits as controls."""
    interval = 300.0
    settings = settings_for(tmp_path, reporting_interval_s=interval, alerts_first_lookback_h=24 * 40,
                             alerts_settle_s=60.0)
    fleet = build_fleet(1, 1, 16)
    seed_catalogue(db, fleet)
    start_gateway(settings)
    end = local_midnight(0)
    start = end - 26 * DAY
    spike, spike_ctl = circuit(fleet, Profile.LIGHTING), circuit(fleet, Profile.LIGHTING, 1)
    night, night_ctl = circuit(fleet, Profile.BASE), circuit(fleet, Profile.LIGHTING, 2)
    creep, creep_ctl = circuit(fleet, Profile.MOTOR), circuit(fleet, Profile.LIGHTING, 3)
    spike_at = end - 2 * DAY + 10 * 3600  # 10:00 two days ago, for 3 hours
    night_day = local_midnight(3)  # all of that night: 00:00-06:00 and 20:00-24:00
    changes = (
        LoadChange(spike.sensor_serials, spike_at, spike_at + 3 * 3600, factor=3.0),
        LoadChange(night.sensor_serials, night_day, night_day + 6 * 3600, offset_a=night.rated_a),
        LoadChange(night.sensor_serials, night_day + 20 * 3600, local_midnight(2), offset_a=night.rated_a),
        # Base load: a motor that now never switches off, for the last 4 days.
        LoadChange(creep.sensor_serials, end - 4 * DAY, end + DAY, offset_a=0.4 * creep.rated_a),
    )
    report = publish(mqtt_url, fleet, start, end, interval_s=interval, faults=Faults(load_changes=changes))
    settle(db, report.readings_generated, gap_s=interval * 3)

    rules = {
        "spike": rule(db, Anomaly(weeks=3), node_of(db, spike)),
        "spike_ctl": rule(db, Anomaly(weeks=3), node_of(db, spike_ctl)),
        "night": rule(db, AfterHours(), node_of(db, night)),
        "night_ctl": rule(db, AfterHours(), node_of(db, night_ctl)),
        "creep": rule(db, BaseLoad(recent_days=3, baseline_days=14), node_of(db, creep)),
        "creep_ctl": rule(db, BaseLoad(recent_days=3, baseline_days=14), node_of(db, creep_ctl)),
    }
    # Evaluate day by day over the last week, as a scheduler would have.
    for day in range(7, -1, -1):
        evaluate(db, settings, end - day * DAY + 3600)
    found = {name: episodes(db, rid) for name, rid in rules.items()}
    [anomaly] = found["spike"]
    assert near(anomaly["started_at"], spike_at, 3600) and near(anomaly["cleared_at"], spike_at + 3 * 3600, 3600)
    [after_hours] = found["night"]
    assert after_hours["started_at"] == at(night_day) and after_hours["cleared_at"] == at(local_midnight(2))
    [base] = found["creep"]
    assert end - 4 * DAY <= base["started_at"].timestamp() <= end - DAY and base["cleared_at"] is None
    for control in ("spike_ctl", "night_ctl", "creep_ctl"):
        assert found[control] == [], (control, found[control])


# -- asset health: cycling -----------------------------------------------------------------------
def test_short_cycling_compressor(db: psycopg.Connection[Any], mqtt_url: str,
                                  start_gateway: Callable[..., RunningGateway], settings: Settings) -> None:
    fleet = build_fleet(1, 1, 16)
    seed_catalogue(db, fleet)
    fridge = circuit(fleet, Profile.REFRIGERATION)
    start_gateway()
    t0 = (time.time() // 3600) * 3600 - 6 * 3600
    # Normal cycle: 20 minutes, 3 starts an hour. Hours 2 and 3: a 4-minute cycle, 15 an hour.
    fault = LoadChange(fridge.sensor_serials, t0 + 2 * 3600, t0 + 4 * 3600, cycle_period_s=240.0)
    report = publish(mqtt_url, fleet, t0, t0 + 5 * 3600, faults=Faults(load_changes=(fault,)))
    settle(db, report.readings_generated)
    healthy = store.create_rule(db, site_id(db), node_of(db, fridge), "before", Cycling(max_starts_per_hour=6),
                                enabled=False)
    cycling = rule(db, Cycling(max_starts_per_hour=6), node_of(db, fridge))
    evaluate(db, settings, t0 + 5 * 3600 + settings.alerts_settle_s)
    [ep] = episodes(db, cycling)
    assert ep["started_at"] == at(t0 + 2 * 3600) and ep["cleared_at"] == at(t0 + 4 * 3600), ep
    assert "starts an hour" in ep["message"]
    # On the healthy hours alone the same rule is quiet.
    db.execute("UPDATE alert_rules SET enabled = (id = %s)", (healthy,))
    db.execute("UPDATE alert_rules SET evaluated_to = %s WHERE id = %s", (at(t0 + 3600), healthy))
    evaluate(db, settings, t0 + 2 * 3600 + settings.alerts_settle_s)
    assert episodes(db, healthy) == []


# -- budget --------------------------------------------------------------------------------------
def test_budget_projection_raises_and_clears_when_the_cap_is_raised(
        db: psycopg.Connection[Any], mqtt_url: str, start_gateway: Callable[..., RunningGateway],
        settings: Settings) -> None:
    fleet = build_fleet(1, 1, 8)
    seed_catalogue(db, fleet)
    start_gateway()
    now = time.time() // 60 * 60
    report = publish(mqtt_url, fleet, now - 2 * 3600, now)
    settle(db, report.readings_generated)
    tight = rule(db, Budget(cap=Decimal("1.00")))
    generous = rule(db, Budget(cap=Decimal("10000000")))
    evaluate(db, settings, now)
    evaluate(db, settings, now + 60)
    [ep] = episodes(db, tight)
    assert ep["cleared_at"] is None and "projected to cost" in ep["message"]
    assert episodes(db, generous) == []
    store.update_rule(db, tight, params=Budget(cap=Decimal("10000000")))
    evaluate(db, settings, now + 120)
    [ep] = episodes(db, tight)
    assert ep["cleared_at"] is not None


# -- webhooks ------------------------------------------------------------------------------------
def test_webhooks_are_signed_retried_with_backoff_and_sent_once_per_event(
        db: psycopg.Connection[Any], mqtt_url: str, start_gateway: Callable[..., RunningGateway],
        settings: Settings, receiver: Callable[[int], Receiver]) -> None:
    fleet = build_fleet(1, 1, 8)
    seed_catalogue(db, fleet)
    quiet = fleet.serials[2]
    start_gateway()
    t0 = time.time() // 10 * 10 - 900
    report = publish(mqtt_url, fleet, t0, t0 + 600,
                     faults=Faults(load_changes=(LoadChange((quiet,), t0 + 300, t0 + 900, silent=True),)))
    settle(db, report.readings_generated)
    endpoint = receiver(2)
    customer = db.execute("SELECT id FROM customers").fetchone()
    assert customer is not None
    hook_id, secret = store.create_webhook(db, customer[0], endpoint.url, allow_private=True)
    offline = rule(db, SensorOffline(intervals=6))
    evaluate(db, settings, t0 + 600)  # raised; the first delivery fails (503)
    row = db.execute("SELECT attempts, next_attempt_at - now(), delivered_at FROM webhook_deliveries").fetchone()
    assert row is not None and row[0] == 1 and row[2] is None
    assert timedelta(seconds=3) < row[1] < timedelta(seconds=7)  # 5 s ± jitter
    evaluate(db, settings, t0 + 610)  # not due yet: nothing sent
    assert len(endpoint.received) == 1
    for attempt in (2, 3):
        db.execute("UPDATE webhook_deliveries SET next_attempt_at = now()")  # time passes
        evaluate(db, settings, t0 + 600 + attempt)
    delivered = db.execute("SELECT attempts, delivered_at FROM webhook_deliveries").fetchone()
    assert delivered is not None and delivered[0] == 3 and delivered[1] is not None
    assert len(endpoint.received) == 3
    headers, body = endpoint.received[-1]
    assert headers["Wattline-Event"] == "alert.raised"
    assert verify(secret, body, headers["Wattline-Signature"])
    assert not verify("whsec_wrong" + secret, body, headers["Wattline-Signature"])
    assert not verify(secret, body.replace(b"silent", b"SILENT"), headers["Wattline-Signature"])
    assert quiet.encode() in body
    # Later passes send nothing more for the same episode. (After t0 + 650 every sensor
    # would look silent: the stream stops at t0 + 600.)
    evaluate(db, settings, t0 + 640)
    assert len(endpoint.received) == 3
    assert len(episodes(db, offline)) == 1
    # A receiver that never recovers: given up after the last attempt, with the error kept.
    store.create_webhook(db, customer[0], "http://127.0.0.1:9/unreachable", allow_private=True)
    rule(db, SensorOffline(intervals=3))
    evaluate(db, settings, t0 + 640)  # a second rule's episode, queued to both hooks
    for _ in range(10):
        db.execute("UPDATE webhook_deliveries SET next_attempt_at = now() WHERE delivered_at IS NULL")
        evaluate(db, settings, t0 + 640)
    failed = db.execute("SELECT attempts, last_error FROM webhook_deliveries WHERE failed_at IS NOT NULL").fetchone()
    assert failed is not None and failed[0] == 8 and failed[1]
    assert hook_id in {r[0] for r in db.execute("SELECT webhook_id FROM webhook_deliveries WHERE delivered_at "
                                                 "IS NOT NULL").fetchall()}
