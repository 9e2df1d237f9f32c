"""Sparkplug B through the real gateway, broker and database (#22): the same readings,
kept once, as SenML's; what cannot be read refused with a reason and the message kept;
a host that lost track asks for a rebirth over the broker, and the edge node's births
resume it; a restarted gateway resumes every session from the database, without one."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from ingest.packs import RawPack, SparkplugNote
from ingest.sparkplug_host import rebirth_request
from ingest.sparkplug_session import Refusal, SessionState
from ingest.spool import Spool
from sensor_sim.faults import Faults
from sensor_sim.fleet import build_fleet
from sensor_sim.publisher import Report, Simulator, connect
from sensor_sim.seed import seed_catalogue
from sensor_sim.sparkplug import EdgeNode
from tests.factories import count, expected_set, run_sim, stored, stored_set, wait_for
from tests.fixtures.gateway import RunningGateway
from wattline.sparkplug import DataType, Metric, Payload, encode_payload


def rejections(db: psycopg.Connection[Any]) -> dict[str, int]:
    return dict(db.execute("SELECT reason, count(*) FROM rejected_readings GROUP BY reason").fetchall())


@pytest.mark.parametrize("wire", ["sparkplug", "sparkplug-node"])
def test_a_sparkplug_fleet_is_stored_exactly_as_senml_would_be(
        db: psycopg.Connection[Any], mqtt_url: str, start_gateway: Callable[..., RunningGateway], wire: str) -> None:
    """Each sensor a device (a DDATA a reading), or each sweep in one NDATA of the node's."""
    gw = start_gateway()
    report = run_sim(mqtt_url, seed_db=db, wire=wire)
    assert report.readings_generated == 2 * 6 * 30
    assert report.packs_published == (2 * 6 * 30 if wire == "sparkplug" else 2 * 30)
    wait_for(lambda: stored(db) >= len(report.expected))
    time.sleep(0.3)
    assert stored_set(db) == expected_set(report)
    assert count(db, "SELECT count(*) FROM rejected_readings") == 0
    # The births said each bridge was online, the clean close that it is not now.
    wait_for(lambda: count(db, "SELECT count(*) FROM bridge_status WHERE NOT online") == 2)
    assert count(db, "SELECT count(*) FROM sparkplug_sessions") == 0  # both sessions ended with their NDEATH
    assert gw.gateway is not None and gw.gateway.sparkplug is not None
    assert gw.gateway.sparkplug.rebirths_asked == 0


def test_duplicates_and_bad_values_over_sparkplug(db: psycopg.Connection[Any], mqtt_url: str,
                                                 start_gateway: Callable[..., RunningGateway]) -> None:
    """A message sent twice (a QoS 1 redelivery) is read twice and stored once, with no
    rebirth; a negative or NaN current is refused alone with its reason."""
    gw = start_gateway()
    report = run_sim(mqtt_url, Faults(duplicate_rate=0.3, bad_value_rate=0.1), seed_db=db, wire="sparkplug")
    assert report.packs_duplicated > 0 and report.readings_bad > 0
    wait_for(lambda: stored(db) >= len(report.expected))
    wait_for(lambda: sum(rejections(db).values()) >= report.readings_bad)
    time.sleep(0.3)
    assert stored_set(db) == expected_set(report)
    refused = rejections(db)
    # Each bad value is refused as often as its message came: a duplicate is read again.
    assert set(refused) <= {"negative_value", "not_finite"} and sum(refused.values()) >= report.readings_bad
    assert count(db, "SELECT count(DISTINCT (sensor_serial, detail, payload)) FROM rejected_readings") == \
        report.readings_bad
    assert gw.gateway is not None and gw.gateway.sparkplug is not None
    assert gw.gateway.sparkplug.rebirths_asked == 0


def test_what_cannot_be_read_is_refused_and_kept_and_a_rebirth_resumes_the_node(
        db: psycopg.Connection[Any], mqtt_url: str, gateway_mqtt_url: str,
        start_gateway: Callable[..., RunningGateway]) -> None:
    fleet = build_fleet(1, 1, 3)
    seed_catalogue(db, fleet)
    gw = start_gateway()
    (bridge,), sensors = fleet.sensors_by_bridge().keys(), fleet.serials
    raw = connect(mqtt_url, f"raw-{uuid.uuid4().hex[:6]}")
    try:
        # Garbage, and a topic of the namespace that is not Sparkplug's: refused, kept byte for byte.
        raw.publish(f"spBv1.0/plant/DDATA/{bridge}/{sensors[0]}", b"\xff\xfenot protobuf", qos=1).wait_for_publish(5)
        raw.publish(f"spBv1.0/plant/NBIRTH/{bridge}", encode_payload(Payload(1, 0, ())), qos=1).wait_for_publish(5)
        wait_for(lambda: rejections(db).get("sparkplug_invalid", 0) == 2, 20)
        kept = db.execute("SELECT bridge_serial, payload FROM rejected_readings WHERE topic LIKE '%DDATA%'").fetchone()
        assert kept is not None and kept[0] == bridge and bytes(kept[1]) == b"\xff\xfenot protobuf"

        # Data from an edge node the host never saw born: refused, and a rebirth asked, which
        # the simulator answers with its births; then its data is read.
        node = EdgeNode(bridge, "plant")
        node.birth([(s, None) for s in sensors], int(time.time() * 1000))  # births the host never got
        now_ms = (int(time.time()) - 120) * 1000
        for topic, payload in node.data([(sensors[0], now_ms, 7.25)]):
            raw.publish(topic, payload, qos=1).wait_for_publish(5)
        wait_for(lambda: rejections(db).get("sparkplug_out_of_session", 0) == 1, 20)
        assert gw.gateway is not None and gw.gateway.sparkplug is not None
        wait_for(lambda: gw.gateway is not None and gw.gateway.sparkplug is not None
                 and gw.gateway.sparkplug.rebirths_asked == 1, 10)
    finally:
        raw.loop_stop()
        raw.disconnect()
    sim = Simulator(fleet, mqtt_url, client_id=f"sim-{uuid.uuid4().hex[:6]}", wire="sparkplug",
                    sparkplug_group="plant")
    try:
        # The simulator's node had no session at the host either: its births (on connect) make one.
        report = Report(keep_expected=True)
        sim.tick(time.time() // 10 * 10 - 60, report)
        sim.flush()
        wait_for(lambda: stored(db) >= 3, 20)
        assert stored_set(db) == expected_set(report)
        # A rebirth request over the broker is answered with births, and data goes on.
        ask = connect(gateway_mqtt_url, f"host-{uuid.uuid4().hex[:6]}")  # as a host: bridges may not ask
        ask.publish(*rebirth_request(("plant", bridge)), qos=1).wait_for_publish(5)
        ask.loop_stop()
        ask.disconnect()
        wait_for(lambda: sim.rebirths == 1, 10)
        sim.tick(time.time() // 10 * 10 - 50, report)
        sim.flush()
        wait_for(lambda: stored(db) >= 6, 20)
        assert stored_set(db) == expected_set(report)
    finally:
        sim.close()
    assert count(db, "SELECT count(*) FROM readings WHERE current_a = 7.25") == 0  # refused, not guessed


def test_a_restarted_gateway_resumes_each_session_without_a_rebirth(
        db: psycopg.Connection[Any], mqtt_url: str, start_gateway: Callable[..., RunningGateway]) -> None:
    fleet = build_fleet(1, 2, 4)
    seed_catalogue(db, fleet)
    first = start_gateway()
    report = Report(keep_expected=True)
    sim = Simulator(fleet, mqtt_url, client_id=f"sim-{uuid.uuid4().hex[:6]}", wire="sparkplug")
    try:
        t0 = time.time() // 10 * 10 - 600
        for k in range(5):
            sim.tick(t0 + 10 * k, report)
        sim.flush()
        wait_for(lambda: stored(db) >= len(report.expected))
        sessions = db.execute("SELECT edge_node, seq, aliases FROM sparkplug_sessions ORDER BY 1").fetchall()
        assert [(e, seq) for e, seq, _ in sessions] == [(b, 24) for b in sorted(fleet.sensors_by_bridge())]
        assert sessions[0][2] == {s: {"1": "current"} for s in fleet.serials[:4]}
        first.stop()
        for k in range(5, 10):  # sent while no gateway runs: queued in its session by the broker
            sim.tick(t0 + 10 * k, report)
        sim.flush()
        second = start_gateway(first.gateway.settings)  # type: ignore[union-attr]
        wait_for(lambda: stored(db) >= len(report.expected))
        time.sleep(0.3)
        assert stored_set(db) == expected_set(report)
        assert second.gateway is not None and second.gateway.sparkplug is not None
        assert second.gateway.sparkplug.rebirths_asked == 0 and sim.rebirths == 0
        assert count(db, "SELECT count(*) FROM rejected_readings") == 0
    finally:
        sim.close()


def test_the_spool_keeps_a_sparkplug_pack_s_session_and_refusals(tmp_path: Path) -> None:
    note = SparkplugNote(("plant", "BR-1"), SessionState(3, 17, {"CT-1": {1: "current"}}), False,
                         (Refusal("negative_value", "CT-1: current -1.0 A is negative", "CT-1"),),
                         "spBv1.0/plant/DDATA/BR-1/CT-1", encode_payload(Payload(1, 17, (
                             Metric(None, 1, 1, DataType.FLOAT, -1.0), Metric(None, 1, 2, DataType.FLOAT, 2.5)))),
                         (("CT-1", 0.002, 2.5),))
    packs = [RawPack("wattline/v1/bridges/BR-1/senml", b"", 1.5, sparkplug=note),
             RawPack("spBv1.0/plant/NDEATH/BR-1", b"", 2.5, sparkplug=SparkplugNote(("plant", "BR-1"), None, True)),
             RawPack("wattline/v1/bridges/BR-2/senml", b"[]", 3.5, limited=True)]
    spool = Spool(tmp_path, 1 << 20)
    assert Spool.read(spool.append(packs)) == [RawPack(p.topic, p.payload, p.received_at, limited=p.limited,
                                                       sparkplug=p.sparkplug) for p in packs]


def test_the_host_says_its_state_for_edge_nodes_that_wait_for_it(
        gateway_mqtt_url: str, start_gateway: Callable[..., RunningGateway]) -> None:
    """Sparkplug 3.0's STATE: retained, online while the gateway reads, offline once it stops
    (and, by its will, if it vanishes)."""
    gw = start_gateway()
    assert gw.gateway is not None
    topic = f"spBv1.0/STATE/{gw.gateway.settings.mqtt_client_id}"

    def retained() -> dict[str, Any]:
        seen: list[bytes] = []
        client = connect(gateway_mqtt_url, f"state-{uuid.uuid4().hex[:6]}")
        client.on_message = lambda _c, _u, m: seen.append(bytes(m.payload))
        wait_for(client.is_connected, 10)
        client.subscribe(topic, qos=1)
        wait_for(lambda: bool(seen), 10)
        client.loop_stop()
        client.disconnect()
        return dict(orjson.loads(seen[-1]))

    state = retained()
    assert state["online"] is True and state["timestamp"] > (time.time() - 60) * 1000
    gw.stop()
    assert retained()["online"] is False
