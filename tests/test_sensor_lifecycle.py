"""The sensor lifecycle, effective-dated: assign, correct, move from a time, replace a failed
sensor, unassign at a time. Every tier is checked against an independent reference (a
plain-Python trapezoid over the raw readings, attributed by the spans the test itself
declares) and against a re-computation from scratch. Real database, real API."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from analytics.worker import RollupEngine
from tests import factories
from tests.factories import ROLLUP_TABLES, auth, count, drain, write
from wattline.accounts import create_user, issue_key
from wattline.domain import Connection, Role
from wattline.site_builder import BuiltSite, CircuitSpec, PanelSpec, SensorSpec, SiteSpec, build_site, build_tenant

T0 = datetime(2026, 5, 4, 10, tzinfo=UTC)
MINUTES = 120
VOLTS = 230.0


def amps(serial: str, i: int) -> float:
    """A current that changes every reading, differently per sensor."""
    return {"CT-1": 10.0, "CT-2": 4.0, "CT-9": 7.0}[serial] + (i % 7) * 0.5


@pytest.fixture
def site(db: psycopg.Connection[Any], database_url: str) -> tuple[BuiltSite, str]:
    """Panel P (230 V, PF 1) with circuits A (CT-1 on phase 1), B (CT-2 on phase 1) and C;
    CT-9 reports through the same bridge, unassigned (a spare). Two hours of readings every
    10 s from T0 for all three, rolled up; and a customer admin's token."""
    _, customer = build_tenant(db, "R", "C")
    built = build_site(db, customer, SiteSpec("S", timezone="UTC", bridges=("BR-1",), panels=(
        PanelSpec("P", "P", VOLTS, 1.0, Connection.SINGLE_PHASE, circuits=(
            CircuitSpec("A", "A", (SensorSpec("CT-1", "BR-1"),)), CircuitSpec("B", "B", (SensorSpec("CT-2", "BR-1"),)),
            CircuitSpec("C", "C"))),)))
    write(database_url, [(s, T0.timestamp() + i * 10, amps(s, i)) for s in ("CT-1", "CT-2", "CT-9")
                         for i in range(MINUTES * 6 + 1)])
    drain(db)
    uid = create_user(db, email="fm@example.com", password=None, role=Role.CUSTOMER_ADMIN, customer_id=customer)
    return built, issue_key(db, uid, ["read", "write", "commission", "admin"]).token


def minute_wh(serial: str) -> dict[int, float]:
    """The reference: each 10-s interval's trapezoid energy, by the minute it lies in."""
    out: dict[int, float] = defaultdict(float)
    for i in range(MINUTES * 6):
        out[i // 6] += 0.5 * (amps(serial, i) + amps(serial, i + 1)) * VOLTS * 10 / 3600
    return out


def expected(spans: dict[str, list[tuple[str, int, int]]]) -> dict[str, float]:
    """Energy per node over the two hours for `spans`: serial → [(node, from minute, to minute)]."""
    out: dict[str, float] = defaultdict(float)
    for serial, its in spans.items():
        per_minute = minute_wh(serial)
        for node, lo, hi in its:
            out[node] += sum(per_minute[m] for m in range(max(lo, 0), min(hi, MINUTES)))
    out["P"] = out["root"] = sum(out[n] for n in ("A", "B", "C"))
    return out


def energy(db: psycopg.Connection[Any], built: BuiltSite, table: str) -> dict[str, float]:
    nodes = {**built.nodes, "root": built.root}
    got = {}
    for name, node in nodes.items():
        row = db.execute(psycopg.sql.SQL("SELECT COALESCE(sum(energy_wh), 0) FROM {} WHERE node_id = %s").format(
            psycopg.sql.Identifier(table)), (node,)).fetchone()
        got[name] = float(row[0]) if row else 0.0
    return got


def holds(db: psycopg.Connection[Any], built: BuiltSite, want: dict[str, float]) -> None:
    """Every tier has each node's reference energy: each reading counted once, where it was."""
    for table in ROLLUP_TABLES:
        got = energy(db, built, table)
        for node in ("A", "B", "C", "P", "root"):
            assert got[node] == pytest.approx(want.get(node, 0.0), rel=1e-9, abs=1e-9), (table, node)


def equals_a_recompute_from_scratch(db: psycopg.Connection[Any]) -> None:
    factories.equals_a_recompute_from_scratch(db, T0 - timedelta(days=1), T0 + timedelta(days=1))


def at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def move(client: TestClient, token: str, serial: str, node: int, phase: int, minutes: int) -> None:
    res = client.post(f"/v1/sensors/{serial}/assignment/move", headers=auth(token),
                      json={"node_id": node, "phase": phase, "ct_rating_a": 100, "at": at(minutes)})
    assert res.status_code == 200, res.text


BEFORE = {"CT-1": [("A", 0, MINUTES)], "CT-2": [("B", 0, MINUTES)]}


def test_a_move_keeps_the_old_circuits_intervals_and_the_site_total(
        client: TestClient, db: psycopg.Connection[Any], site: tuple[BuiltSite, str]) -> None:
    built, token = site
    holds(db, built, expected(BEFORE))
    move(client, token, "CT-1", built.nodes["C"], 1, 30)
    drain(db)
    want = expected({"CT-1": [("A", 0, 30), ("C", 30, MINUTES)], "CT-2": [("B", 0, MINUTES)]})
    holds(db, built, want)  # A keeps exactly its own 30 minutes; C has the rest
    assert want["root"] == pytest.approx(expected(BEFORE)["root"])  # the site total did not change
    spans = client.get("/v1/sensors/CT-1/assignments", headers=auth(token)).json()
    assert [(s["node_id"], s["valid_from"], s["valid_to"], s["reason"]) for s in spans] == [
        (built.nodes["A"], None, at(30).replace("+00:00", "Z"), "assign"),
        (built.nodes["C"], at(30).replace("+00:00", "Z"), None, "move")]
    equals_a_recompute_from_scratch(db)


def test_three_moves_and_a_swap_equal_the_reference_and_a_recompute(
        client: TestClient, db: psycopg.Connection[Any], site: tuple[BuiltSite, str]) -> None:
    built, token = site
    move(client, token, "CT-1", built.nodes["C"], 1, 20)
    move(client, token, "CT-1", built.nodes["A"], 1, 50)
    move(client, token, "CT-1", built.nodes["B"], 2, 80)
    drain(db)
    moved = {"CT-1": [("A", 0, 20), ("C", 20, 50), ("A", 50, 80), ("B", 80, MINUTES)], "CT-2": [("B", 0, MINUTES)]}
    holds(db, built, expected(moved))
    assert expected(moved)["root"] == pytest.approx(expected(BEFORE)["root"])  # moves within the site
    res = client.post("/v1/sensors/CT-1/replacement", headers=auth(token), json={"new_serial": "CT-9", "at": at(100)})
    assert res.status_code == 200, res.text
    drain(db)
    swapped = {"CT-1": [("A", 0, 20), ("C", 20, 50), ("A", 50, 80), ("B", 80, 100)], "CT-2": [("B", 0, MINUTES)],
               "CT-9": [("B", 100, MINUTES)]}
    holds(db, built, expected(swapped))  # B runs on across the swap, on CT-9 from minute 100
    sensor = db.execute("SELECT node_id, phase FROM sensors WHERE serial = 'CT-9'").fetchone()
    assert sensor == (built.nodes["B"], 2)
    assert db.execute("SELECT node_id FROM sensors WHERE serial = 'CT-1'").fetchone() == (None,)
    assert count(db, "SELECT count(*) FROM audit_log WHERE subject_type = 'sensor' AND action IN ('move', 'replace')") \
        == 4
    equals_a_recompute_from_scratch(db)


def test_no_minute_of_a_sensor_is_counted_on_two_circuits(
        client: TestClient, db: psycopg.Connection[Any], site: tuple[BuiltSite, str]) -> None:
    built, token = site
    move(client, token, "CT-1", built.nodes["C"], 1, 45)
    drain(db)
    per_minute = db.execute("""SELECT bucket, sum(energy_wh) FROM rollups_1m WHERE node_id = ANY(%s)
                               GROUP BY bucket ORDER BY bucket""",
                            ([built.nodes[n] for n in ("A", "B", "C")],)).fetchall()
    site_minutes = dict(db.execute("SELECT bucket, energy_wh FROM rollups_1m WHERE node_id = %s",
                                   (built.root,)).fetchall())
    assert len(per_minute) == MINUTES + 1  # the last reading, at minute 120, opens a row of its own
    for bucket, wh in per_minute:
        assert site_minutes[bucket] == pytest.approx(wh, rel=1e-12)  # circuits add up to the site, minute by minute
    both = count(db, """SELECT count(*) FROM rollups_1m a JOIN rollups_1m c USING (bucket)
                        WHERE a.node_id = %s AND c.node_id = %s""", built.nodes["A"], built.nodes["C"])
    assert both == 0  # A and C (one sensor between them) never share a minute


def test_a_correction_moves_the_whole_span(client: TestClient, db: psycopg.Connection[Any],
                                           site: tuple[BuiltSite, str]) -> None:
    built, token = site
    move(client, token, "CT-1", built.nodes["C"], 1, 60)
    res = client.post("/v1/sensors/CT-1/assignment/correction", headers=auth(token),
                      json={"node_id": built.nodes["B"], "phase": 3, "ct_rating_a": 100})
    assert res.status_code == 200, res.text
    drain(db)
    # Only the current span (from minute 60) was wrong: it was on B all along.
    holds(db, built, expected({"CT-1": [("A", 0, 60), ("B", 60, MINUTES)], "CT-2": [("B", 0, MINUTES)]}))
    equals_a_recompute_from_scratch(db)


def test_assigning_a_spare_from_a_time_counts_it_from_then(client: TestClient, db: psycopg.Connection[Any],
                                                           site: tuple[BuiltSite, str]) -> None:
    built, token = site
    res = client.put("/v1/sensors/CT-9/assignment", headers=auth(token),
                     json={"node_id": built.nodes["C"], "phase": 1, "ct_rating_a": 50, "since": at(90)})
    assert res.status_code == 200, res.text
    drain(db)
    holds(db, built, expected({**BEFORE, "CT-9": [("C", 90, MINUTES)]}))


# -- bad input: a clear message next to the field --------------------------------------------
def problem(res: Any) -> tuple[int, str | None, str]:
    body = res.json()
    return res.status_code, body.get("field"), body["detail"]


def test_bad_input_gets_a_specific_answer_next_to_its_field(
        client: TestClient, db: psycopg.Connection[Any], site: tuple[BuiltSite, str]) -> None:
    built, token = site
    h = auth(token)
    c = built.nodes["C"]
    unknown = client.put("/v1/sensors/CT-UNKNOWN/assignment", headers=h, json={"node_id": c, "phase": 1,
                                                                              "ct_rating_a": 50})
    assert problem(unknown)[0] == 404 and problem(unknown)[2] == "no such sensor"
    taken = client.post("/v1/sensors/CT-1/assignment/move", headers=h,
                        json={"node_id": built.nodes["B"], "phase": 1, "ct_rating_a": 50, "at": at(30)})
    assert taken.status_code == 409 and "already measured by another sensor" in taken.json()["detail"]
    absurd = client.put("/v1/sensors/CT-9/assignment", headers=h, json={"node_id": c, "phase": 1,
                                                                       "ct_rating_a": 60000})
    assert absurd.status_code == 422 and "ct_rating_a" in absurd.text
    future = client.post("/v1/sensors/CT-1/assignment/move", headers=h,
                         json={"node_id": c, "phase": 1, "ct_rating_a": 50,
                               "at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()})
    assert problem(future) == (422, "at", "a time in the future: say what happened, when it has happened")
    early = client.post("/v1/sensors/CT-9/replacement", headers=h, json={"new_serial": "CT-1", "at": at(10)})
    assert early.status_code == 409  # CT-9 is not assigned: nothing to take over
    # A circuit of another of the customer's sites: the sensor cannot be there.
    other = build_site(db, db.execute("SELECT customer_id FROM sites WHERE id = %s", (built.site_id,)).fetchone()[0],
                       SiteSpec("S2", bridges=("BR-2",), panels=(PanelSpec("P2", "P2", 230.0, 1.0,
                                                                           Connection.SINGLE_PHASE, circuits=(
                           CircuitSpec("X", "X"),)),)))
    elsewhere = client.put("/v1/sensors/CT-9/assignment", headers=h,
                           json={"node_id": other.nodes["X"], "phase": 1, "ct_rating_a": 50})
    assert problem(elsewhere) == (422, "node_id", "that circuit is at another site than the sensor's bridge")
    nothing = count(db, "SELECT count(*) FROM sensor_assignments WHERE sensor_id = "
                        "(SELECT id FROM sensors WHERE serial = 'CT-9')")
    assert nothing == 0  # none of it left a trace


def test_another_tenants_sensor_answers_as_an_unknown_one(
        client: TestClient, db: psycopg.Connection[Any], database_url: str, site: tuple[BuiltSite, str]) -> None:
    built, token = site
    _, customer = build_tenant(db, "R2", "C2")
    build_site(db, customer, SiteSpec("T", bridges=("BR-T",), panels=(PanelSpec(
        "PT", "PT", 230.0, 1.0, Connection.SINGLE_PHASE, circuits=(CircuitSpec("T1", "T1"),)),)))
    write(database_url, [("CT-THEIRS", T0.timestamp(), 1.0)], bridge="BR-T")
    h = auth(token)
    for path, body in (("/v1/sensors/{}/assignment/move", {"node_id": built.nodes["C"], "phase": 1,
                                                            "ct_rating_a": 50}),
                       ("/v1/sensors/{}/replacement", {"new_serial": "CT-9"})):
        theirs = client.post(path.format("CT-THEIRS"), headers=h, json=body)
        unknown = client.post(path.format("CT-NOBODY"), headers=h, json=body)
        assert theirs.status_code == unknown.status_code == 404
        assert theirs.json()["detail"] == unknown.json()["detail"]
    swap_in_theirs = client.post("/v1/sensors/CT-1/replacement", headers=h, json={"new_serial": "CT-THEIRS"})
    swap_in_nobody = client.post("/v1/sensors/CT-1/replacement", headers=h, json={"new_serial": "CT-NOBODY"})
    assert swap_in_theirs.status_code == swap_in_nobody.status_code == 404
    assert swap_in_theirs.json()["detail"] == swap_in_nobody.json()["detail"]


# -- who may do it ----------------------------------------------------------------------------
def test_an_installer_works_on_the_sites_granted_and_sees_no_costs(
        client: TestClient, db: psycopg.Connection[Any], site: tuple[BuiltSite, str]) -> None:
    built, admin = site
    customer = db.execute("SELECT customer_id FROM sites WHERE id = %s", (built.site_id,)).fetchone()[0]
    other = build_site(db, customer, SiteSpec("Elsewhere", bridges=("BR-E",), panels=(PanelSpec(
        "PE", "PE", 230.0, 1.0, Connection.SINGLE_PHASE, circuits=(CircuitSpec("E", "E"),)),)))
    installer = create_user(db, email="ins@example.com", password=None, role=Role.INSTALLER, customer_id=customer)
    viewer = create_user(db, email="view@example.com", password=None, role=Role.VIEWER, customer_id=customer)
    granted = client.put(f"/v1/users/{installer}/sites", headers=auth(admin), json={"site_ids": [built.site_id]})
    assert granted.status_code == 200, granted.text
    ins = auth(issue_key(db, installer, ["read", "commission"]).token)
    assert [s["id"] for s in client.get("/v1/sites", headers=ins).json()] == [built.site_id]
    assert client.get(f"/v1/sites/{other.site_id}/tree", headers=ins).status_code == 404  # as if it did not exist
    span = {"node_id": built.nodes["C"], "phase": 1, "ct_rating_a": 50, "since": at(90)}
    assert client.put("/v1/sensors/CT-9/assignment", headers=ins, json=span).status_code == 200
    for path in (f"/v1/sites/{built.site_id}/tariffs", f"/v1/sites/{built.site_id}/cost?from={at(0)}&to={at(60)}"):
        refused = client.get(path.replace("+", "%2B"), headers=ins)
        assert refused.status_code == 403 and "installers" in refused.json()["detail"], path
    # A viewer is refused the action, whatever it sends.
    view = auth(issue_key(db, viewer, ["read", "write", "commission", "admin"]).token)  # cut to "read" by role
    assert client.post("/v1/sensors/CT-9/assignment/move", headers=view,
                       json={**span, "at": at(100)}).status_code == 403
    assert count(db, "SELECT count(*) FROM audit_log WHERE action = 'assign' AND actor_user_id = %s", installer) == 1
    assert count(db, "SELECT count(*) FROM audit_log WHERE action = 'grant_sites'") == 1


def test_a_device_with_its_own_sensor_leaves_its_circuit_the_remainder(
        client: TestClient, db: psycopg.Connection[Any], site: tuple[BuiltSite, str]) -> None:
    """A device under a metered circuit, metered itself: the circuit shows its own total and,
    as a panel does, the part its device does not explain."""
    built, token = site
    made = client.post(f"/v1/sites/{built.site_id}/nodes", headers=auth(token),
                       json={"parent_id": built.nodes["A"], "kind": "device", "name": "Fridge"})
    assert made.status_code == 201, made.text
    fridge = made.json()["id"]
    assigned = client.put("/v1/sensors/CT-9/assignment", headers=auth(token),
                          json={"node_id": fridge, "phase": 1, "ct_rating_a": 20})
    assert assigned.status_code == 200, assigned.text
    drain(db)
    want = {serial: sum(minute_wh(serial).values()) for serial in ("CT-1", "CT-9")}
    row = db.execute("SELECT sum(energy_wh), sum(unmonitored_wh) FROM rollups_1h WHERE node_id = %s",
                     (built.nodes["A"],)).fetchone()
    assert row[0] == pytest.approx(want["CT-1"], rel=1e-9)  # the circuit's own meter, not meter + device
    assert row[1] == pytest.approx(want["CT-1"] - want["CT-9"], rel=1e-9)
    device = db.execute("SELECT sum(energy_wh) FROM rollups_1h WHERE node_id = %s", (fridge,)).fetchone()[0]
    assert device == pytest.approx(want["CT-9"], rel=1e-9)
    equals_a_recompute_from_scratch(db)


def test_resellers_get_the_live_check_the_handover_and_the_mark_through_the_api(
        client: TestClient, db: psycopg.Connection[Any], site: tuple[BuiltSite, str]) -> None:
    built, token = site
    move(client, token, "CT-1", built.nodes["C"], 1, 60)
    checks = {c["serial"]: c for c in client.get(f"/v1/sites/{built.site_id}/live-check", headers=auth(token)).json()}
    last = amps("CT-1", MINUTES * 6)
    assert checks["CT-1"]["current_a"] == pytest.approx(last) and checks["CT-1"]["node_name"] == "C"
    assert checks["CT-1"]["power_w"] == pytest.approx(last * VOLTS)  # 230 V single phase, PF 1
    assert checks["CT-1"]["state"] == "silent" and checks["CT-9"]["state"] == "discovered"  # readings from May
    res = client.get(f"/v1/sites/{built.site_id}/handover.csv", headers=auth(token))
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/csv")
    rows = list(__import__("csv").DictReader(__import__("io").StringIO(res.text)))
    assert [(r["circuit"], r["sensor"], r["to"] != "") for r in rows] == [("A", "CT-1", True), ("B", "CT-2", False),
                                                                         ("C", "CT-1", False)]
    assert rows[0]["first_reading"].startswith("2026-05-04T10:00") and rows[0]["last_reading"].startswith(
        "2026-05-04T10:59:50")  # CT-1's readings on A: up to the move at 11:00
    mark = client.put(f"/v1/sites/{built.site_id}/commissioned", headers=auth(token), json={"commissioned": True})
    assert mark.status_code == 200 and mark.json()["commissioned_by"] == "fm@example.com"
    assert count(db, "SELECT count(*) FROM audit_log WHERE action = 'commission' AND subject_type = 'site'") == 1


def test_the_live_check_flags_imbalance_and_weak_signal(client: TestClient, db: psycopg.Connection[Any],
                                                        database_url: str, site: tuple[BuiltSite, str]) -> None:
    """Three phases of one circuit, one far from its siblings, one sensor heard faintly."""
    from tests.factories import write as write_packs
    from wattline.senml import encode_pack

    built, token = site
    for serial, phase in (("CT-9", 1), ("CT-X2", 2), ("CT-X3", 3)):
        write_packs(database_url, [(serial, time_now() - 5, 1.0)])
        res = client.put(f"/v1/sensors/{serial}/assignment", headers=auth(token),
                         json={"node_id": built.nodes["C"], "phase": phase, "ct_rating_a": 100})
        assert res.status_code == 200, res.text
    now = time_now()
    pack = encode_pack([("CT-9", now, 20.0), ("CT-X2", now, 21.0), ("CT-X3", now, 4.0)],
                       extra={"CT-X3": {"rssi": -97.0}})
    from ingest.packs import RawPack
    from ingest.writer import BatchWriter
    from wattline.senml import SENML_TOPIC

    writer = BatchWriter(database_url)
    writer.write([RawPack(SENML_TOPIC.format(bridge="BR-1"), pack, now)])
    writer.close()
    checks = {c["serial"]: c for c in client.get(f"/v1/sites/{built.site_id}/live-check", headers=auth(token)).json()}
    assert checks["CT-9"]["flags"] == [] and checks["CT-X2"]["flags"] == []
    flags = " | ".join(checks["CT-X3"]["flags"])
    assert "phase 3 reads 4.0 A against 20.0 A" in flags and "weak signal (-97 dBW)" in flags


def time_now() -> float:
    import time

    return time.time()


def test_a_backfill_shows_its_progress(client: Any, tenants: Any, db: psycopg.Connection[Any],
                                       database_url: str) -> None:
    """Assigning a discovered sensor with days of history: the API says how much of it the
    rollup worker has re-computed, with an estimate of the time left."""
    a, _ = tenants
    now = time.time()
    write(database_url, [(a.discovered_serial, now - 3 * 86400 + k * 600, 5.0) for k in range(3 * 144)],
          bridge=a.bridge_serial)
    drain(db)
    headers = {"Authorization": f"Bearer {a.tokens['installer']}"}
    assert client.get(f"/v1/sensors/{a.discovered_serial}/backfill", headers=headers).status_code == 404
    res = client.put(f"/v1/sensors/{a.discovered_serial}/assignment", headers=headers,
                     json={"node_id": a.circuit_id, "phase": 2, "ct_rating_a": 50})  # L1 is CT-A-1's
    assert res.status_code == 200, res.text
    first = client.get(f"/v1/sensors/{a.discovered_serial}/backfill", headers=headers).json()
    assert first["total"] >= 4 and first["done"] == 0 and first["eta_s"] is None and not first["finished"]
    RollupEngine(30.0).process_dirty(db, limit=1)
    middle = client.get(f"/v1/sensors/{a.discovered_serial}/backfill", headers=headers).json()
    assert 0 < middle["done"] < middle["total"] and middle["eta_s"] is not None and middle["eta_s"] >= 0
    drain(db)
    last = client.get(f"/v1/sensors/{a.discovered_serial}/backfill", headers=headers).json()
    assert last["finished"] and last["done"] == last["total"] and last["eta_s"] == 0
