"""Hostile input through the real broker and gateway: every kind is rejected with its
reason, and the gateway keeps storing good packs. Plus coverage-guided fuzzing (atheris)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sensor_sim.fleet import build_fleet
from sensor_sim.publisher import connect
from sensor_sim.seed import seed_catalogue
from tests.factories import count, wait_for
from tests.fixtures.gateway import RunningGateway
from wattline.senml import MAX_PACK_BYTES, SENML_TOPIC, Reason, encode_pack

GOOD_BRIDGE, OTHER_SITE_BRIDGE = "BR-S000-00", "BR-S001-00"
SENSOR = "CT0000000000"  # on BR-S000-00, site 0


def hostile(now: float) -> list[tuple[str, bytes, str]]:
    topic = SENML_TOPIC.format(bridge=GOOD_BRIDGE)

    def rec(v: Any, t: Any = now, n: str = "current", u: str = "A", bn: str = f"urn:dev:wl:{SENSOR}:") -> bytes:
        return f'[{{"bn":"{bn}","bt":{t},"n":"{n}","u":"{u}","v":{v}}}]'.encode()
    return [
        (topic, b"\x00\xff\xfe garbage", Reason.JSON),
        (topic, b'{"not": "a pack"}', Reason.NOT_A_PACK),
        (topic, b"[" * 50_000 + b"]" * 50_000, Reason.JSON),
        (topic, b"[" + b" " * (MAX_PACK_BYTES - 100) + b"]", Reason.NOT_A_PACK),  # just under the limit
        (topic, rec('"twelve"'), Reason.FIELD_TYPE),
        (topic, rec("1e999"), Reason.JSON),  # JSON has no infinity: the parser refuses it
        (topic, rec(-3.0), Reason.NEGATIVE),
        (topic, rec(5.0, t=now + 86400), Reason.FUTURE),
        (topic, rec(5.0, t=now - 20 * 365 * 86400), Reason.ANCIENT),
        (topic, rec(5.0, u="kW"), Reason.UNIT),
        (topic, rec(5.0, n="temperature", u="Cel"), Reason.UNKNOWN_MEASUREMENT),
        (topic, rec(5.0, bn="urn:dev:wl:CT'; DROP TABLE readings;--:"), Reason.NAME),
        (topic, f'[{{"bn":"urn:dev:wl:{SENSOR}:","bt":{now},"n":"current","u":"A","v":5,"x_":1}}]'.encode(),
         Reason.MUST_UNDERSTAND),
        # Topic injection: the serial in the topic is the bridge's identity, so it is checked.
        ("wattline/v1/bridges/BR S000 00/senml", rec(5.0), Reason.TOPIC),
        ("wattline/v1/bridges/'; DROP TABLE bridges;--/senml", rec(5.0), Reason.TOPIC),
        (f"wattline/v1/bridges/{'B' * 500}/senml", rec(5.0), Reason.TOPIC),
        (SENML_TOPIC.format(bridge="BR-NOBODY"), rec(5.0), Reason.UNKNOWN_BRIDGE),
        # Spoofing: a sensor of site 0 claimed by a bridge of site 1.
        (SENML_TOPIC.format(bridge=OTHER_SITE_BRIDGE), rec(5.0), Reason.SPOOFED_SENSOR),
    ]


def test_hostile_packs_are_rejected_with_reasons_and_the_gateway_carries_on(
        db: psycopg.Connection[Any], mqtt_url: str, start_gateway: Callable[..., RunningGateway]) -> None:
    seed_catalogue(db, build_fleet(2, 1, 2))
    gw = start_gateway()
    now = time.time() // 1 * 1.0
    cases = hostile(now)
    client = connect(mqtt_url, "hostile")
    for topic, payload, _ in cases:
        client.publish(topic, payload, qos=1).wait_for_publish(10)
    # Over the limit, the broker itself refuses the packet and drops that client.
    big = connect(mqtt_url, "hostile-big")
    big.publish(SENML_TOPIC.format(bridge=GOOD_BRIDGE), b"[" + b" " * MAX_PACK_BYTES + b"]", qos=1)
    time.sleep(0.5)
    big.loop_stop()
    good = encode_pack([(SENSOR, now - 5, 7.5)])
    client.publish(SENML_TOPIC.format(bridge=GOOD_BRIDGE), good, qos=1).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()
    wait_for(lambda: count(db, "SELECT count(*) FROM readings") == 1, 30)
    wait_for(lambda: count(db, "SELECT count(*) FROM rejected_readings") >= len(cases), 30)
    rows = db.execute("SELECT topic, reason, length(payload) FROM rejected_readings ORDER BY id").fetchall()
    by_topic: dict[str, list[str]] = {}
    for topic, reason, _ in rows:
        by_topic.setdefault(topic, []).append(reason)
    got = Counter(reason for _, reason, _ in rows)
    want = Counter(reason for _, _, reason in cases)
    assert got == want, (got - want, want - got)
    assert all(size > 0 for *_, size in rows)  # the raw bytes are kept for inspection
    assert gw.gateway is not None and gw.gateway.health() is not None  # still subscribed and serving
    assert count(db, "SELECT count(*) FROM bridges") == 2 and count(db, "SELECT count(*) FROM readings") == 1


@pytest.mark.slow
def test_atheris_finds_no_crash_in_the_decoder(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "seed").write_bytes(encode_pack([("CT1", 1_799_999_990.0, 1.5), ("CT2", 1_799_999_990.0, 2.0)]))
    res = subprocess.run([sys.executable, str(Path(__file__).with_name("fuzz_senml.py")), "-runs=100000",
                          "-max_len=4096", f"-artifact_prefix={tmp_path}/", str(corpus)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Done 100000 runs" in res.stderr


def test_a_flooding_bridge_is_limited_and_the_others_go_on(
        db: psycopg.Connection[Any], mqtt_url: str, start_gateway: Callable[..., RunningGateway]) -> None:
    """One bridge sends ten times its neighbours' rate: beyond its share its packs are
    rejected as rate_limited (kept whole, counted), and every other bridge's reading is stored."""
    from prometheus_client import REGISTRY

    fleet = build_fleet(3, 1, 10)
    seed_catalogue(db, fleet)
    bridges = sorted(fleet.sensors_by_bridge())
    flooder, calm = bridges[0], bridges[1:]
    serials = {b: [fleet.serials[i] for i in idx] for b, idx in fleet.sensors_by_bridge().items()}
    limited_before = REGISTRY.get_sample_value("wattline_gateway_rejected_total", {"reason": "rate_limited"}) or 0.0
    gw = start_gateway(bridge_max_bytes_per_s=5_000.0, bridge_burst_bytes=5_000.0)
    client = connect(mqtt_url, "flood-test")
    t0 = time.time() // 10 * 10 - 3000
    sent: dict[str, list[bytes]] = {b: [] for b in bridges}
    infos = []
    for step in range(10):  # 5 s: the calm ones at ~1.6 kB/s, the flooder at ten times that
        for k in range(10):
            for b in bridges:
                if b == flooder or k == 0:
                    pack = encode_pack([(s, t0 + step * 10 + k, 1.0 + k) for s in serials[b]])
                    sent[b].append(pack)
                    infos.append(client.publish(SENML_TOPIC.format(bridge=b), pack, qos=1))
            time.sleep(0.05)
    for info in infos:
        info.wait_for_publish(10)
    client.loop_stop()
    client.disconnect()
    calm_expected = sum(len(serials[b]) * len(sent[b]) for b in calm)
    total = sum(len(serials[b]) * len(sent[b]) for b in bridges)

    def settled() -> bool:
        limited = count(db, "SELECT count(*) FROM rejected_readings WHERE reason = 'rate_limited'")
        return stored_readings(db) + limited * len(serials[flooder]) == total

    wait_for(settled, 30)
    kept = db.execute("SELECT bridge_serial, payload FROM rejected_readings WHERE reason = 'rate_limited'").fetchall()
    assert kept and {b for b, _ in kept} == {flooder}
    assert {bytes(p) for _, p in kept} <= set(sent[flooder])  # byte for byte: replayable
    calm_ids = [r[0] for r in db.execute("SELECT id FROM bridges WHERE serial = ANY(%s)", (calm,))]
    assert count(db, "SELECT count(*) FROM readings WHERE bridge_id = ANY(%s)", calm_ids) == calm_expected
    limited_after = REGISTRY.get_sample_value("wattline_gateway_rejected_total", {"reason": "rate_limited"})
    assert limited_after == limited_before + len(kept)
    assert 0 < len(kept) < len(sent[flooder])  # limited, not cut off: its share still goes through
    assert gw.gateway is not None and gw.gateway.health() is not None


def stored_readings(db: psycopg.Connection[Any]) -> int:
    return count(db, "SELECT count(*) FROM readings")
