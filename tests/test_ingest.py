"""The gateway against real Mosquitto and TimescaleDB: every reading kept, once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from ingest.packs import RawPack
from ingest.writer import BatchWriter
from sensor_sim.faults import Faults
from sensor_sim.fleet import build_fleet
from sensor_sim.publisher import connect
from sensor_sim.seed import seed_catalogue
from tests.factories import count, expected_set, one_reading, run_sim, stored, stored_set, wait_for
from tests.fixtures.gateway import RunningGateway
from wattline.senml import MAX_PACK_BYTES, SENML_TOPIC, Reason, encode_pack


def test_clean_stream_is_stored_exactly(db: psycopg.Connection[Any], mqtt_url: str,
                                        start_gateway: Callable[..., RunningGateway]) -> None:
    start_gateway()
    report = run_sim(mqtt_url, seed_db=db)
    assert report.readings_generated == 2 * 6 * 30
    wait_for(lambda: stored(db) >= len(report.expected))
    time.sleep(0.3)
    assert stored_set(db) == expected_set(report)
    assert count(db, "SELECT count(*) FROM rejected_readings") == 0


@pytest.mark.parametrize("faults", [
    Faults(duplicate_rate=0.3),
    Faults(delay_rate=0.3, max_delay_packs=4),
    Faults(drop_rate=0.2),
    Faults(offline_bridge="BR-S000-01", offline_after_ticks=5, offline_for_ticks=10),
], ids=["duplicates", "delayed-out-of-order", "dropped", "bridge-offline-then-flush"])
def test_faults_store_every_deliverable_reading_once(db: psycopg.Connection[Any], mqtt_url: str,
                                                     start_gateway: Callable[..., RunningGateway],
                                                     faults: Faults) -> None:
    start_gateway()
    report = run_sim(mqtt_url, faults, seed_db=db)
    wait_for(lambda: stored(db) >= len(report.expected))
    time.sleep(0.5)
    assert stored_set(db) == expected_set(report)
    if faults.duplicate_rate:
        assert report.packs_duplicated > 0
    if faults.offline_bridge:
        status = db.execute("""SELECT online FROM bridge_status bs JOIN bridges b ON b.id = bs.bridge_id
                               WHERE b.serial = %s""", (faults.offline_bridge,)).fetchone()
        assert status is not None and status[0] is True  # back online after the flush


def test_malformed_packs_and_bad_values_are_rejected_with_reasons(
        db: psycopg.Connection[Any], mqtt_url: str, start_gateway: Callable[..., RunningGateway]) -> None:
    start_gateway()
    report = run_sim(mqtt_url, Faults(malformed_rate=0.2, bad_value_rate=0.1), seed_db=db)
    assert report.packs_malformed > 0 and report.readings_bad > 0
    wait_for(lambda: stored(db) >= len(report.expected))
    wait_for(lambda: count(db, "SELECT count(*) FROM rejected_readings WHERE reason = 'invalid_json'")
             >= report.packs_malformed)
    time.sleep(0.3)
    assert stored_set(db) == expected_set(report)
    reasons = dict(db.execute("SELECT reason, count(*) FROM rejected_readings GROUP BY reason").fetchall())
    assert reasons["invalid_json"] == report.packs_malformed
    assert reasons.get("negative_value", 0) + reasons.get("no_numeric_value", 0) == report.readings_bad
    payload = db.execute("SELECT payload FROM rejected_readings WHERE reason = 'invalid_json' LIMIT 1").fetchone()
    assert payload is not None and bytes(payload[0]).startswith(b"[{")


def test_unknown_sensor_is_discovered_and_kept(db: psycopg.Connection[Any], mqtt_url: str,
                                               start_gateway: Callable[..., RunningGateway]) -> None:
    start_gateway()
    report = run_sim(mqtt_url, seed_db=db, unassigned_every=2)
    wait_for(lambda: stored(db) >= len(report.expected))
    discovered = count(db, "SELECT count(*) FROM discovered_sensors")
    assert discovered > 0
    assert stored_set(db) == expected_set(report)


def test_unknown_bridge_topic_and_spoofed_sensor_are_rejected(
        db: psycopg.Connection[Any], mqtt_url: str, start_gateway: Callable[..., RunningGateway]) -> None:
    start_gateway()
    run_sim(mqtt_url, seed_db=db, sites=2, bridges=1, sensors=2, minutes=0.5)
    wait_for(lambda: stored(db) >= 2 * 2 * 3)
    client = connect(mqtt_url, "spoofer")
    now = time.time()
    # Sensor CT0000000000 belongs to site 0; bridge BR-S001-00 is at site 1.
    spoof = f'[{{"bn":"urn:dev:wl:CT0000000000:","bt":{now},"n":"current","v":5}}]'.encode()
    infos = [
        client.publish(SENML_TOPIC.format(bridge="BR-S001-00"), spoof, qos=1),
        client.publish(SENML_TOPIC.format(bridge="NO-SUCH-BRIDGE"), spoof, qos=1),
    ]
    for info in infos:
        info.wait_for_publish(5)
    client.loop_stop()
    client.disconnect()
    wait_for(lambda: count(db, "SELECT count(*) FROM rejected_readings WHERE reason IN "
                               "('sensor_of_other_site', 'unknown_bridge')") == 2)
    assert count(db, "SELECT count(*) FROM readings WHERE ts > to_timestamp(%s)", now - 1) == 0


def test_status_topic_mirrors_bridge_online_state(db: psycopg.Connection[Any], mqtt_url: str,
                                                  start_gateway: Callable[..., RunningGateway]) -> None:
    start_gateway()
    run_sim(mqtt_url, seed_db=db, minutes=0.5)
    client = connect(mqtt_url, "status-writer")
    client.publish("wattline/v1/bridges/BR-S000-00/status", b"offline", qos=1, retain=True).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()
    wait_for(lambda: db.execute("""SELECT NOT online FROM bridge_status bs JOIN bridges b ON b.id = bs.bridge_id
                                   WHERE b.serial = 'BR-S000-00'""").fetchone() == (True,))




def test_sensor_moved_by_an_installer_follows_its_new_site(db: psycopg.Connection[Any], database_url: str) -> None:
    """The writer maps serials from a per-site cache before it touches the database. A
    sensor moved to a bridge at another site must be stored from there, and from then on
    be refused from its old site, whatever the cache held."""
    fleet = build_fleet(2, 1, 2)
    seed_catalogue(db, fleet)
    old_bridge, new_bridge = "BR-S000-00", "BR-S001-00"
    serial = "CT0000000000"
    writer = BatchWriter(database_url)
    now = time.time() // 10 * 10

    def pack(bridge: str, t: float) -> list[RawPack]:
        return one_reading(bridge, serial, t)

    def send(bridge: str, t: float) -> Any:
        return writer.write(pack(bridge, t))

    try:
        assert send(old_bridge, now - 30).stored == 1  # cached at site 0 from here on
        prepared = writer.prepare(pack(old_bridge, now - 20))
        assert prepared.mapped and not prepared.unmapped  # mapped from the cache, no database
        assert writer.commit(prepared).stored == 1
        db.execute("UPDATE sensors SET bridge_id = (SELECT id FROM bridges WHERE serial = %s) WHERE serial = %s",
                   (new_bridge, serial))
        moved = send(new_bridge, now - 10)
        assert moved.stored == 1 and not moved.rejected
        stale = send(old_bridge, now)
        assert stale.stored == 0 and stale.rejected[Reason.SPOOFED_SENSOR] == 1
        prepared = writer.prepare(pack(new_bridge, now - 5))
        assert prepared.mapped and not prepared.unmapped  # the new site's cache has it now
        assert writer.commit(prepared).stored == 1
    finally:
        writer.close()
    assert count(db, "SELECT count(*) FROM readings r JOIN sensors s ON s.id = r.sensor_id WHERE s.serial = %s",
                 serial) == 4


def test_a_failed_commit_does_not_leave_discovered_ids_behind(db: psycopg.Connection[Any], database_url: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit that discovers a sensor caches its new id; if the commit then fails, the
    rollback takes the id away. Neither the retry nor a batch already prepared from that
    cache may file readings under it (readings have no foreign key to catch it)."""
    fleet = build_fleet(1, 1, 2)
    seed_catalogue(db, fleet)
    bridge = "BR-S000-00"
    now = time.time() // 10 * 10
    writer = BatchWriter(database_url)

    def pack(t: float) -> list[RawPack]:
        return one_reading(bridge, "CT-NEW-1", t)

    real_store = BatchWriter._store
    meanwhile = []

    def database_dies(self: BatchWriter, conn: Any, rows: Any) -> int:
        # The gateway prepares the next batch while this one commits: here, with CT-NEW-1's
        # new id already cached.
        meanwhile.append(self.prepare(pack(now - 10)))
        raise psycopg.OperationalError("the database went away mid-commit")

    try:
        monkeypatch.setattr(BatchWriter, "_store", database_dies)
        with pytest.raises(psycopg.OperationalError):
            writer.write(pack(now - 20))  # discovers CT-NEW-1, then fails: rolled back
        [prepared_meanwhile] = meanwhile
        assert prepared_meanwhile.mapped  # from the doomed cache
        monkeypatch.setattr(BatchWriter, "_store", real_store)
        assert writer.write(pack(now - 20)).stored == 1  # the retry
        assert writer.commit(prepared_meanwhile).stored == 1
    finally:
        writer.close()
    orphans = count(db, "SELECT count(*) FROM readings r WHERE NOT EXISTS (SELECT 1 FROM sensors s "
                        "WHERE s.id = r.sensor_id)")
    assert orphans == 0
    assert count(db, """SELECT count(*) FROM readings r JOIN sensors s ON s.id = r.sensor_id
                        WHERE s.serial = 'CT-NEW-1'""") == 2


@pytest.mark.parametrize("size", [1, 5000])
def test_packs_of_one_and_of_five_thousand_readings(size: int, db: psycopg.Connection[Any], mqtt_url: str,
                                                    start_gateway: Callable[..., RunningGateway]) -> None:
    """The smallest pack a bridge can send, and one far past any bridge (a big site's
    back-fill): both stored exactly, the big one's unknown sensors discovered on its bridge."""
    seed_catalogue(db, build_fleet(1, 1, 1))
    bridge = db.execute("SELECT serial FROM bridges").fetchone()[0]
    start_gateway()
    t = time.time() // 10 * 10 - 60
    readings = [(f"CT-BIG-{k:05d}", t, round(0.5 + k / 1000, 3)) for k in range(size)]
    payload = encode_pack(readings)
    assert len(payload) < MAX_PACK_BYTES
    client = connect(mqtt_url, f"pack-{size}")
    client.publish(SENML_TOPIC.format(bridge=bridge), payload, qos=1).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()
    wait_for(lambda: stored(db) >= size, 30)
    time.sleep(0.3)
    rows = db.execute("SELECT s.serial, extract(epoch FROM r.ts)::float8, r.current_a FROM readings r "
                      "JOIN sensors s ON s.id = r.sensor_id ORDER BY s.serial").fetchall()
    assert [(s, ts, round(a, 3)) for s, ts, a in rows] == readings
    assert count(db, "SELECT count(*) FROM rejected_readings") == 0


@pytest.mark.parametrize("spread_minutes", [2, 600])  # a real-time batch; a replay over hours
def test_rollup_work_groups_a_batch_by_minute_and_shard(spread_minutes: int) -> None:
    """The queue rows a batch makes name exactly its (sensor, minute) pairs, each row one
    minute and one shard of sites (site id modulo the shard count), against a plain
    Python grouping."""
    import numpy as np

    from ingest.writer import rollup_work

    rng = np.random.default_rng(3)
    n = 5_000
    sensors = rng.integers(1, 10**9, n)
    minutes = 29_000_000 + rng.integers(0, spread_minutes, n)
    bridges = rng.integers(1, 50, n)
    bridge_site = {b: 1_000 + b * 7 for b in range(1, 50)}
    work = rollup_work(sensors, minutes, bridges, bridge_site, 16)
    expected: dict[tuple[float, int], list[int]] = {}
    for s, m, b in zip(sensors.tolist(), minutes.tolist(), bridges.tolist(), strict=True):
        expected.setdefault((m * 60.0, bridge_site[b] % 16), []).append(s)
    ids = np.frombuffer(work.ids.data[20:], dtype=[("length", ">i4"), ("value", ">i8")])["value"]
    got = {(m, shard): sorted(ids[lo - 1:hi].tolist())
           for m, shard, lo, hi in zip(work.minutes, work.shards, work.lo, work.hi, strict=True)}
    assert got == {k: sorted(v) for k, v in expected.items()}
    # Each reading's row (`row_of`, which the gateway's left-pad marks go by) is its group's.
    rows = list(zip(work.minutes, work.shards, strict=True))
    assert [rows[r] for r in work.row_of.tolist()] == [
        (m * 60.0, bridge_site[b] % 16) for m, b in zip(minutes.tolist(), bridges.tolist(), strict=True)]
