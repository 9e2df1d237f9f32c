"""Meters that report signed power (#22): a SenML `power` in W, positive into the node's
loads, negative back out. Stored in both tiers; a meter's minute nets by its sign; above
generation it reads the subtree's net, and what its children's net does not explain is its
remainder. Checked against a pandas reference computed from the readings themselves."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import orjson
import pandas as pd
import psycopg
import pytest
from fastapi.testclient import TestClient

from analytics.worker import RollupEngine
from ingest.packs import RawPack
from ingest.writer import BatchWriter
from tests.factories import GAP, Tenant, auth, drain, move_to_tier, one_circuit_site, write_metered
from wattline import assignments, catalogue, generation
from wattline.errors import Invalid
from wattline.senml import NAME_PREFIX, SENML_TOPIC, Limits, Reason, decode_pack

STEP = 10.0
N = 360  # an hour at 10 s


def per_minute(ts: np.ndarray, power: np.ndarray) -> pd.Series:
    """Trapezoid energy (Wh) per minute of one sensor's 10-s readings, none crossing a minute."""
    df = pd.DataFrame({"t": ts, "p": power.astype(np.float32).astype(np.float64)})
    df["e"] = (df.p + df.p.shift(-1)) / 2 * STEP / 3600
    df = df.iloc[:-1]
    return df.groupby((df.t // 60 * 60).astype(np.int64)).e.sum()


@pytest.fixture
def metered_site(db: psycopg.Connection[Any], database_url: str) -> dict[str, Any]:
    """Panel P (230 V, PF 1) with its incomer meter M-1 (signed) above: the loads circuit C
    (clamp CT-1), a rooftop PV circuit (clamp, generation) and a battery circuit (meter BAT-1,
    charging and discharging); 500 W under P is measured by nothing. An hour of readings."""
    built = one_circuit_site(db, "UTC")
    site_id, panel, loads = built.site_id, built.nodes["P"], built.nodes["C"]
    bridge = built.bridges["BR-1"]
    pv = catalogue.create_node(db, None, site_id, panel, "circuit", "Rooftop PV", flow="generation")
    battery = catalogue.create_node(db, None, site_id, panel, "circuit", "Battery")
    for serial in ("CT-PV", "BAT-1", "M-1"):
        assignments.register_sensor(db, serial, bridge)
    assignments.assign(db, None, "CT-PV", pv, 1, 200.0)
    # A clamp on the incomer would read |C − G|: refused; declared a meter, it may go there.
    with pytest.raises(Invalid, match="has a clamp above the generation circuit Rooftop PV"):
        assignments.assign(db, None, "M-1", panel, 1, 400.0)
    for meter in ("M-1", "BAT-1"):
        assignments.set_reports_power(db, None, meter, True)
    assignments.assign(db, None, "M-1", panel, 1, 400.0)
    assignments.assign(db, None, "BAT-1", battery, 1, 100.0)
    assert generation.problem(db, site_id) is None

    rng = np.random.default_rng(11)
    t0 = (time.time() // 3600) * 3600 - 3 * 3600
    ts = t0 + np.arange(N) * STEP
    loads_a = np.round(rng.uniform(0.0, 40.0, N), 3).astype(np.float32)
    pv_a = np.round(np.linspace(0.0, 120.0, N), 3).astype(np.float32)
    battery_w = np.round(3000.0 * np.sin(np.arange(N) / 25.0), 1).astype(np.float32)  # crosses zero often
    meter_w = np.round(230.0 * loads_a.astype(np.float64) - 230.0 * pv_a + battery_w + 500.0, 1).astype(np.float32)
    readings: list[tuple[str, float, float, float | None]] = []
    for k, t in enumerate(ts.tolist()):
        readings += [("CT-1", t, float(loads_a[k]), None), ("CT-PV", t, float(pv_a[k]), None),
                     ("BAT-1", t, round(abs(float(battery_w[k])) / 230.0, 3), float(battery_w[k])),
                     ("M-1", t, round(abs(float(meter_w[k])) / 230.0, 3), float(meter_w[k]))]
    write_metered(database_url, readings)  # refuses nothing, or fails
    drain(db)
    return {"site": site_id, "panel": panel, "loads": loads, "pv": pv, "battery": battery, "ts": ts,
            "loads_w": 230.0 * loads_a.astype(np.float64), "pv_w": 230.0 * pv_a.astype(np.float64),
            "battery_w": battery_w, "meter_w": meter_w}


def minute_rows(db: psycopg.Connection[Any], node: int) -> pd.DataFrame:
    rows = db.execute("""SELECT extract(epoch FROM bucket)::bigint, energy_wh, generation_wh, export_wh, unmonitored_wh
                         FROM rollups_1m WHERE node_id = %s ORDER BY bucket""", (node,)).fetchall()
    return pd.DataFrame(rows, columns=["t", "c", "g", "export", "remainder"]).set_index("t").astype(float)


def reference(s: dict[str, Any]) -> pd.DataFrame:
    ts = s["ts"]
    net = per_minute(ts, s["meter_w"])
    battery = per_minute(ts, s["battery_w"])
    ref = pd.DataFrame({"net": net, "loads": per_minute(ts, s["loads_w"]), "pv": per_minute(ts, s["pv_w"]),
                        "battery": battery})
    ref["battery_c"], ref["battery_g"] = battery.clip(lower=0), (-battery).clip(lower=0)
    children_c = ref.loads + ref.battery_c
    children_g = ref.pv + ref.battery_g
    ref["u"] = ref.net - (children_c - children_g)
    ref["c"] = children_c + ref.u.clip(lower=0)
    ref["g"] = children_g + (-ref.u).clip(lower=0)
    ref["export"] = (-ref.net).clip(lower=0)
    return ref


def check_against_reference(db: psycopg.Connection[Any], s: dict[str, Any]) -> None:
    ref = reference(s)
    battery = minute_rows(db, s["battery"])
    assert np.allclose(battery.c, ref.battery_c, rtol=1e-6, atol=1e-6)
    assert np.allclose(battery.g, ref.battery_g, rtol=1e-6, atol=1e-6)
    assert (ref.battery_c > 0).sum() > 10 and (ref.battery_g > 0).sum() > 10  # it charged and discharged
    for node in (s["panel"], catalogue.site_root(db, s["site"])):
        rows = minute_rows(db, node)
        assert list(rows.index) == list(ref.index)
        assert np.allclose(rows.c, ref.c, rtol=1e-6, atol=1e-6), node
        assert np.allclose(rows.g, ref.g, rtol=1e-6, atol=1e-6), node
        assert np.allclose(rows.export, ref.export, rtol=1e-6, atol=1e-6), node
        # Net import, as every reader takes it, is the meter's own per minute.
        assert np.allclose(rows.c - rows.g + rows.export, ref.net.clip(lower=0), rtol=1e-6, atol=1e-6)
    panel = minute_rows(db, s["panel"])
    assert np.allclose(panel.remainder, ref.u, rtol=1e-6, atol=1e-4)
    # The 500 W nobody clamps: 8.33 Wh a minute (what float32 storage leaves of it); the last
    # minute has 50 s of readings.
    assert np.allclose(panel.remainder.iloc[:-1], 500.0 / 60.0, atol=0.05)
    assert panel.remainder.iloc[-1] == pytest.approx(500.0 * 50 / 3600, abs=0.05)
    assert (ref.export > 0).sum() > 5 and (ref.net > 0).sum() > 5  # the site imported and exported
    day = db.execute("SELECT sum(energy_wh), sum(generation_wh), sum(export_wh) FROM rollups_1d WHERE node_id = %s",
                     (s["panel"],)).fetchone()
    assert day is not None
    assert day == pytest.approx((ref.c.sum(), ref.g.sum(), ref.export.sum()), rel=1e-6)


def test_a_meter_above_generation_nets_by_its_sign(db: psycopg.Connection[Any],
                                                    metered_site: dict[str, Any]) -> None:
    stored = db.execute("""SELECT count(*), count(power_w), min(power_w) FROM readings r
                           JOIN sensors s ON s.id = r.sensor_id WHERE s.serial IN ('M-1', 'BAT-1')""").fetchone()
    assert stored is not None and stored[0] == stored[1] == 2 * N and stored[2] < 0
    check_against_reference(db, metered_site)


def test_the_packed_tier_keeps_the_sign(db: psycopg.Connection[Any], database_url: str,
                                        metered_site: dict[str, Any]) -> None:
    move_to_tier(database_url, "packed")
    assert db.execute("SELECT count(*) FROM readings_packed WHERE substring(data FROM 1 FOR 3) = 'WP2'"
                      ).fetchone() == (2,)
    db.execute("DELETE FROM rollups_1m")
    ts = metered_site["ts"]
    from datetime import UTC, datetime
    RollupEngine(GAP).recompute_range(db, datetime.fromtimestamp(ts[0] - 3600, UTC),
                                      datetime.fromtimestamp(ts[-1] + 3600, UTC))
    check_against_reference(db, metered_site)


def test_a_meter_above_generation_cannot_become_a_clamp(db: psycopg.Connection[Any],
                                                        metered_site: dict[str, Any]) -> None:
    with pytest.raises(Invalid, match="has a clamp above the generation circuit Rooftop PV"):
        assignments.set_reports_power(db, None, "M-1", False)
    assert db.execute("SELECT reports_power FROM sensors WHERE serial = 'M-1'").fetchone() == (True,)
    # Nor may a clamp replace it there.
    assignments.register_sensor(db, "CT-NEW", db.execute("SELECT id FROM bridges").fetchone()[0])
    with pytest.raises(Invalid, match="has a clamp above the generation"):
        assignments.replace(db, None, "M-1", "CT-NEW", at=None)


def test_a_battery_declared_a_clamp_again_re_sums_its_history(db: psycopg.Connection[Any],
                                                               metered_site: dict[str, Any]) -> None:
    """BAT-1 was a meter; declared a clamp, its power is V × I × PF again (the power it sent
    stays stored, unread) and all of it consumption: the history is re-summed and the change
    audited."""
    battery = metered_site["battery"]
    assert minute_rows(db, battery).g.sum() > 0
    sensor = assignments.set_reports_power(db, None, "BAT-1", False)
    drain(db)
    after = minute_rows(db, battery)
    assert after.g.isna().all()
    amps = np.round(np.abs(metered_site["battery_w"].astype(np.float64)) / 230.0, 3).astype(np.float32)
    clamp = per_minute(metered_site["ts"], amps.astype(np.float64) * 230.0)
    assert np.allclose(after.c, clamp, rtol=1e-6, atol=1e-6)
    assert db.execute("SELECT array_agg(detail->>'reports_power' ORDER BY id) FROM audit_log "
                      "WHERE action = 'set_reports_power' AND subject_id = %s", (str(sensor),)).fetchone() == (
        ["true", "false"],)


def test_power_on_the_wire_is_checked_like_any_measurement() -> None:
    now = time.time()
    limits = Limits(now, 300.0, 86400.0)

    def decode(records: list[dict[str, Any]]) -> Any:
        return decode_pack(orjson.dumps(records), limits)

    base = {"bn": f"{NAME_PREFIX}M-9:", "bt": now, "n": "current", "u": "A", "v": 5.0}
    good = decode([base, {"n": "power", "u": "W", "v": -1150.5}])
    assert good.power == [-1150.5] and not good.rejections
    assert decode([base]).power[0] != decode([base]).power[0]  # NaN: a clamp's reading has none
    cases: list[tuple[dict[str, Any], str]] = [({"n": "power", "u": "kW", "v": 1.0}, Reason.UNIT),
             ({"n": "power", "u": "W", "v": 2e9}, Reason.OUT_OF_RANGE),
             ({"n": "power", "u": "W", "vs": "-5"}, Reason.NO_VALUE),
             ({"n": "power", "u": "W", "v": 1.0, "t": 1.0}, Reason.MISSING_CURRENT)]  # power, but no current then
    for record, reason in cases:
        d = decode([base, record])
        assert [r.reason for r in d.rejections] == [reason], record
        assert d.serials == ["M-9"] and d.current == [5.0]  # the good reading stays


def test_a_bad_power_record_is_kept_with_its_reason(db: psycopg.Connection[Any], database_url: str) -> None:
    built = one_circuit_site(db, "UTC")
    assert built.site_id
    now = time.time()
    records = [{"bn": f"{NAME_PREFIX}CT-1:", "bt": now - 30, "n": "current", "u": "A", "v": 5.0},
               {"n": "power", "u": "kW", "v": 1.15}]
    writer = BatchWriter(database_url)
    result = writer.write([RawPack(SENML_TOPIC.format(bridge="BR-1"), orjson.dumps(records), now)])
    writer.close()
    assert result.stored == 1 and result.rejected == {Reason.UNIT: 1}
    row = db.execute("SELECT reason, detail, payload FROM rejected_readings").fetchone()
    assert row is not None and row[0] == Reason.UNIT and "power in 'kW'" in row[1] and b"kW" in bytes(row[2])


def test_the_api_declares_a_meter(client: TestClient, tenants: tuple[Tenant, Tenant],
                                  db: psycopg.Connection[Any]) -> None:
    a, b = tenants
    url = f"/v1/sensors/{a.sensor_serial}/meter"
    res = client.put(url, headers=auth(a.tokens["installer"]), json={"reports_power": True})
    assert res.status_code == 200, res.text
    listed = client.get(f"/v1/sites/{a.site_id}/sensors", headers=auth(a.tokens["viewer"])).json()
    assert [s["reports_power"] for s in listed if s["serial"] == a.sensor_serial] == [True]
    assert db.execute("SELECT reports_power FROM sensors WHERE serial = %s", (a.sensor_serial,)).fetchone() == (True,)
    # Another tenant's sensor and a missing one answer alike; a viewer may not; a bad body is 422.
    assert client.put(url, headers=auth(b.tokens["installer"]), json={"reports_power": False}).status_code == 404
    assert client.put("/v1/sensors/NOPE/meter", headers=auth(b.tokens["installer"]),
                      json={"reports_power": False}).status_code == 404
    assert client.put(url, headers=auth(a.tokens["viewer"]), json={"reports_power": False}).status_code == 403
    assert client.put(url, headers=auth(a.tokens["installer"]), json={"reports_power": "sometimes"}).status_code == 422
    assert db.execute("SELECT reports_power FROM sensors WHERE serial = %s", (a.sensor_serial,)).fetchone() == (True,)


def test_the_live_check_shows_a_meters_own_power_and_flags_one_that_sends_none(
        db: psycopg.Connection[Any], metered_site: dict[str, Any]) -> None:
    from datetime import UTC, datetime

    from wattline.commissioning import live_check
    from wattline.principal import acting_for

    customer = db.execute("SELECT customer_id FROM sites WHERE id = %s", (metered_site["site"],)).fetchone()[0]
    now = datetime.fromtimestamp(float(metered_site["ts"][-1]) + 20, UTC)
    assignments.set_reports_power(db, None, "CT-1", True)  # a meter, says the installer; it sends current only

    def check() -> dict[str, Any]:
        return {c.serial: c for c in live_check(db, acting_for(customer), metered_site["site"], interval_s=10.0,
                                                now=now)}

    checks = check()
    assert checks["M-1"].power_w == pytest.approx(float(metered_site["meter_w"][-1]))
    assert checks["BAT-1"].power_w == pytest.approx(float(metered_site["battery_w"][-1]))
    assert checks["CT-1"].power_w is None
    assert any("declared a meter, but its last reading has no power" in f for f in checks["CT-1"].flags)
    assert checks["CT-PV"].power_w == pytest.approx(230.0 * float(np.float32(120.0)))  # a clamp: V × I × PF
    assert not any("no power" in f for f in checks["M-1"].flags)
