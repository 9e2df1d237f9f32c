"""Every door that changes the tree or an assignment re-queues exactly the rollups it
affects: the API's node patch, the CSV import, assign and unassign. After each, every tier
holds each reading exactly once, where the catalogue now puts it, and equals a re-computation
from scratch."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from analytics.worker import RollupEngine
from tests.factories import GAP, ROLLUP_TABLES, auth, count, drain, snapshot, write
from wattline.accounts import create_user, issue_key
from wattline.domain import Connection, Role
from wattline.electrical import electrical
from wattline.site_builder import BuiltSite, CircuitSpec, PanelSpec, SensorSpec, SiteSpec, build_site, build_tenant

T0 = datetime(2026, 5, 4, 10, tzinfo=UTC)
AMPS = 10.0
WH_230 = AMPS * 230.0  # an hour at 10 A on a 230 V single-phase board, PF 1
WH_400 = AMPS * 400.0 / math.sqrt(3) * 0.9  # the same on one phase of a 400 V three-phase board, PF 0.9


@pytest.fixture
def site(db: psycopg.Connection[Any], database_url: str) -> tuple[BuiltSite, str]:
    """Board P1 (230 V) with circuits A (metered by CT-1) and B; board P2 (400 V, PF 0.9) with
    circuit C; an hour of 10 A on CT-1, rolled up; and a customer admin's token."""
    _, customer = build_tenant(db, "R", "C")
    built = build_site(db, customer, SiteSpec("S", bridges=("BR-1",), panels=(
        PanelSpec("P1", "Board 1", 230.0, 1.0, Connection.SINGLE_PHASE, circuits=(
            CircuitSpec("A", "A", (SensorSpec("CT-1", "BR-1"),)), CircuitSpec("B", "B"))),
        PanelSpec("P2", "Board 2", 400.0, 0.9, Connection.THREE_PHASE_WYE, circuits=(CircuitSpec("C", "C"),)))))
    write(database_url, [("CT-1", T0.timestamp() + i * 10, AMPS) for i in range(361)])
    drain(db)
    uid = create_user(db, email="fm@example.com", password=None, role=Role.CUSTOMER_ADMIN, customer_id=customer)
    return built, issue_key(db, uid, ["read", "write", "commission"]).token


def hour_wh(db: psycopg.Connection[Any], node: int) -> dict[str, float]:
    """The node's energy in T0's hour at every tier (a tier with no row: absent)."""
    out = {}
    for table in ROLLUP_TABLES:
        row = db.execute(psycopg.sql.SQL("SELECT sum(energy_wh) FROM {} WHERE node_id = %s AND bucket >= %s "
                                         "AND bucket < %s").format(psycopg.sql.Identifier(table)),
                         (node, T0 - timedelta(days=1), T0 + timedelta(days=1))).fetchone()
        if row is not None and row[0] is not None:
            out[table] = row[0]
    return out


def everywhere(wh: float) -> dict[str, Any]:
    return dict.fromkeys(ROLLUP_TABLES, pytest.approx(wh, rel=1e-6))


def equals_a_fresh_recompute(db: psycopg.Connection[Any]) -> None:
    """Every tier equals what a re-computation from raw readings with today's catalogue gives."""
    incremental = {t: snapshot(db, t) for t in ROLLUP_TABLES}
    RollupEngine(GAP).recompute_range(db, T0 - timedelta(days=1), T0 + timedelta(days=1))
    for table in ROLLUP_TABLES:
        assert snapshot(db, table) == incremental[table], table


def test_before_any_change_the_hour_is_on_a_p1_and_the_site(db: psycopg.Connection[Any],
                                                             site: tuple[BuiltSite, str]) -> None:
    built, _ = site
    for node in (built.nodes["A"], built.nodes["P1"], built.root):
        assert hour_wh(db, node) == everywhere(WH_230)
    assert hour_wh(db, built.nodes["C"]) == {} and hour_wh(db, built.nodes["P2"]) == {}


def test_correcting_an_assignment_moves_its_whole_history(client: TestClient, db: psycopg.Connection[Any],
                                                          site: tuple[BuiltSite, str]) -> None:
    built, token = site
    where = {"node_id": built.nodes["C"], "phase": 1, "ct_rating_a": 50}
    again = client.put("/v1/sensors/CT-1/assignment", headers=auth(token), json=where)
    assert again.status_code == 409 and "correct" in again.json()["detail"]  # say which it is
    res = client.post("/v1/sensors/CT-1/assignment/correction", headers=auth(token), json=where)
    assert res.status_code == 200, res.text
    drain(db)
    # "It was always on C": the history moves with the sensor.
    assert hour_wh(db, built.nodes["A"]) == {} and hour_wh(db, built.nodes["P1"]) == {}
    for node in (built.nodes["C"], built.nodes["P2"], built.root):
        assert hour_wh(db, node) == everywhere(WH_400)  # P2's voltage and power factor now apply
    equals_a_fresh_recompute(db)
    # The seed's assignment was the system's; the move is the key's.
    assert count(db, "SELECT count(*) FROM audit_log WHERE action = 'correct' AND subject_type = 'sensor' "
                     "AND actor_key_id IS NOT NULL") == 1


def test_unassigning_from_before_takes_the_history_off_and_unassigning_now_keeps_it(
        client: TestClient, db: psycopg.Connection[Any], site: tuple[BuiltSite, str]) -> None:
    built, token = site
    before = (T0 - timedelta(hours=1)).isoformat()  # before its first reading: it never counted anywhere
    assert client.delete("/v1/sensors/CT-1/assignment", params={"at": before}, headers=auth(token)).status_code == 200
    drain(db)
    for node in (built.nodes["A"], built.nodes["P1"], built.root):
        assert hour_wh(db, node) == {}, node
    equals_a_fresh_recompute(db)
    # Assigned again, it counts from where its last assignment ended: the hour is back.
    assert client.put("/v1/sensors/CT-1/assignment", headers=auth(token), json={
        "node_id": built.nodes["A"], "phase": 1, "ct_rating_a": 50}).status_code == 200
    drain(db)
    assert hour_wh(db, built.nodes["A"]) == everywhere(WH_230)
    # Unassigned now: what it measured there, it measured.
    assert client.delete("/v1/sensors/CT-1/assignment", headers=auth(token)).status_code == 200
    drain(db)
    for node in (built.nodes["A"], built.nodes["P1"], built.root):
        assert hour_wh(db, node) == everywhere(WH_230), node
    assert count(db, "SELECT count(*) FROM readings") == 361  # the readings stay, as a discovered sensor's
    equals_a_fresh_recompute(db)


def test_moving_a_circuit_re_sums_its_old_and_new_parents(client: TestClient, db: psycopg.Connection[Any],
                                                          site: tuple[BuiltSite, str]) -> None:
    built, token = site
    res = client.patch(f"/v1/nodes/{built.nodes['A']}", headers=auth(token), json={"parent_id": built.nodes["P2"]})
    assert res.status_code == 200, res.text
    drain(db)
    assert hour_wh(db, built.nodes["P1"]) == {}
    for node in (built.nodes["A"], built.nodes["P2"], built.root):
        assert hour_wh(db, node) == everywhere(WH_400)
    equals_a_fresh_recompute(db)


def test_a_rename_queues_nothing(client: TestClient, db: psycopg.Connection[Any],
                                 site: tuple[BuiltSite, str]) -> None:
    built, token = site
    before = {t: snapshot(db, t) for t in ROLLUP_TABLES}
    res = client.patch(f"/v1/nodes/{built.nodes['A']}", headers=auth(token), json={"name": "Chiller A"})
    assert res.status_code == 200, res.text
    assert count(db, "SELECT count(*) FROM rollup_dirty") == 0
    assert {t: snapshot(db, t) for t in ROLLUP_TABLES} == before
    assert count(db, "SELECT count(*) FROM audit_log WHERE action = 'update' AND subject_type = 'node'") == 1


def test_re_rating_a_board_re_prices_the_circuits_under_it(client: TestClient, db: psycopg.Connection[Any],
                                                           site: tuple[BuiltSite, str]) -> None:
    built, token = site
    res = client.patch(f"/v1/nodes/{built.nodes['P1']}", headers=auth(token), json={"nominal_voltage_v": 240})
    assert res.status_code == 200, res.text
    drain(db)
    for node in (built.nodes["A"], built.nodes["P1"], built.root):
        assert hour_wh(db, node) == everywhere(AMPS * 240.0)
    equals_a_fresh_recompute(db)


def test_the_csv_import_re_queues_what_it_moves_or_re_rates(client: TestClient, db: psycopg.Connection[Any],
                                                            site: tuple[BuiltSite, str]) -> None:
    built, token = site
    sheet = ("external_ref,parent_ref,kind,name,nominal_voltage_v,power_factor,connection\n"
             "P1,,panel,Board 1,230,1,single_phase\n"
             "P2,,panel,Board 2,400,0.9,three_phase_wye\n"
             "A,P2,circuit,A,,,\n")  # A moves to board 2
    res = client.post(f"/v1/sites/{built.site_id}/hierarchy.csv", headers=auth(token),
                      files={"file": ("h.csv", sheet.encode())})
    assert res.status_code == 200, res.text
    drain(db)
    assert hour_wh(db, built.nodes["P1"]) == {}
    for node in (built.nodes["A"], built.nodes["P2"], built.root):
        assert hour_wh(db, node) == everywhere(WH_400)
    equals_a_fresh_recompute(db)
    assert count(db, "SELECT count(*) FROM audit_log WHERE action = 'import'") == 1


def test_an_unchanged_csv_queues_nothing(client: TestClient, db: psycopg.Connection[Any],
                                         site: tuple[BuiltSite, str]) -> None:
    built, token = site
    sheet = client.get(f"/v1/sites/{built.site_id}/hierarchy.csv", headers=auth(token)).content
    res = client.post(f"/v1/sites/{built.site_id}/hierarchy.csv", headers=auth(token), files={"file": ("h.csv", sheet)})
    assert res.status_code == 200, res.text
    assert count(db, "SELECT count(*) FROM rollup_dirty") == 0


def test_a_csv_that_is_not_utf8_names_its_line(client: TestClient, site: tuple[BuiltSite, str]) -> None:
    built, token = site
    sheet = b"external_ref,parent_ref,kind,name\nP9,,panel,Caf\xe9 board\n"
    res = client.post(f"/v1/sites/{built.site_id}/hierarchy.csv", headers=auth(token), files={"file": ("h.csv", sheet)})
    assert res.status_code == 422
    assert res.json()["detail"].startswith("line 2: not UTF-8")


def test_one_rule_for_electrical_parameters(db: psycopg.Connection[Any], site: tuple[BuiltSite, str]) -> None:
    """Own value, else the nearest node above that sets it; the site root sets nothing."""
    built, _ = site
    from wattline import catalogue

    device = catalogue.create_node(db, None, built.site_id, built.nodes["C"], "device", "Compressor", "D1")
    sub = catalogue.create_node(db, None, built.site_id, built.nodes["B"], "panel", "Sub", "SUB",
                                nominal_voltage_v=110.0, power_factor=0.8, connection=Connection.SPLIT_PHASE)
    own_pf = catalogue.create_node(db, None, built.site_id, sub, "circuit", "Own PF", "E", power_factor=0.5)
    got = electrical(db, [device, own_pf, built.root])
    assert (got[device].nominal_voltage_v, got[device].connection) == (400.0, Connection.THREE_PHASE_WYE)
    assert got[device].power_factor == pytest.approx(0.9)
    assert got[own_pf].conductor_voltage_v == pytest.approx(55.0)  # split-phase: half of 110 V
    assert got[own_pf].power_factor == pytest.approx(0.5)
    root = got[built.root]
    assert root.configured_conductor_voltage_v is None and root.conductor_voltage_v == 230.0
