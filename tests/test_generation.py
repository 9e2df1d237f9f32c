"""Generation and net metering (#22): a circuit marked as generation is summed apart from
consumption, and each minute a site imports max(C − G, 0) and exports max(G − C, 0); the
coarser tiers sum the minutes. Checked against pandas over the circuits' own rows. And the
rule that keeps it honest: no clamp above generation, nothing consuming under it."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from analytics.costing import site_cost
from analytics.tariffs import money
from exports import reports
from sensor_sim import seed
from sensor_sim.fleet import build_fleet
from sensor_sim.seed import seed_catalogue
from tests.factories import Tenant, auth, drain, write
from wattline import assignments, catalogue, generation, tariffs
from wattline.accounts import create_user, issue_key
from wattline.domain import Role
from wattline.errors import Invalid, RowErrors
from wattline.principal import acting_for


def frame(db: psycopg.Connection[Any], table: str) -> pd.DataFrame:
    return pd.DataFrame(db.execute(sql.SQL("""SELECT r.node_id, n.kind, n.flow, n.external_ref, r.bucket, r.energy_wh,
                                                     r.generation_wh, r.export_wh
                                              FROM {} r JOIN nodes n ON n.id = r.node_id""").format(
        sql.Identifier(table))).fetchall(),
                        columns=["node", "kind", "flow", "ref", "bucket", "energy", "generation", "export"])


@pytest.fixture
def pv_site(db: psycopg.Connection[Any], database_url: str) -> dict[str, Any]:
    """One site, four consumption sensors and a three-phase PV inverter, an hour of readings
    an hour and more ago: consumption at random, PV ramping from nothing to well above it,
    so that the site imports, then exports."""
    fleet = build_fleet(1, 1, 4, pv_every=1)
    seed_catalogue(db, fleet)
    rng = np.random.default_rng(5)
    t0 = (time.time() // 3600) * 3600 - 3 * 3600
    stamps = t0 + np.arange(360) * 10.0
    readings = []
    for serial, profile in zip(fleet.serials, fleet.profile.tolist(), strict=True):
        amps = np.linspace(0.0, 120.0, len(stamps)) if profile == 5 else rng.uniform(0.0, 40.0, len(stamps))
        readings += [(serial, float(t), round(float(a), 3)) for t, a in zip(stamps, amps, strict=True)]
    write(database_url, readings, bridge=fleet.sites[0].bridge_serials[0])
    drain(db)
    return {"fleet": fleet, "t0": t0}


def test_consumption_generation_import_and_export_match_pandas(db: psycopg.Connection[Any],
                                                               pv_site: dict[str, Any]) -> None:
    minute = frame(db, "rollups_1m")
    leaves = minute[(minute.kind == "circuit") & ~minute.ref.str.endswith("-FEED")]  # the clamped circuits
    pv = leaves[leaves.flow == "generation"]
    assert len(pv) and (pv.energy == 0).all() and (pv.generation > 0).any()
    assert (pv.generation == pv.export).all()  # a generating circuit gives out all it makes
    consumption = leaves[leaves.flow == "consumption"].groupby("bucket").energy.sum()
    generated = pv.groupby("bucket").generation.sum()
    site = minute[minute.kind == "site"].set_index("bucket").sort_index()
    reference = pd.DataFrame({"c": consumption, "g": generated}).fillna(0.0).sort_index()
    reference["export"] = (reference.g - reference.c).clip(lower=0.0)
    reference["import"] = (reference.c - reference.g).clip(lower=0.0)
    assert np.allclose(site.energy, reference.c, rtol=1e-9)
    assert np.allclose(site.generation, reference.g, rtol=1e-9)
    assert np.allclose(site.export, reference["export"], rtol=1e-9, atol=1e-9)
    assert (reference["export"] > 0).sum() > 10 and (reference["import"] > 0).sum() > 10  # both happened
    # Net import and self-consumption follow from the stored columns.
    net_import = site.energy - site.generation + site.export
    assert np.allclose(net_import, reference["import"], atol=1e-9)
    assert np.allclose(site.generation - site.export, np.minimum(reference.c, reference.g), atol=1e-9)
    # Hours and days are sums of the minutes: export is netted per minute, not per hour.
    for table in ("rollups_15m", "rollups_1h", "rollups_1d"):
        coarse = frame(db, table)
        root = coarse[coarse.kind == "site"]
        assert root.energy.sum() == pytest.approx(reference.c.sum(), rel=1e-9), table
        assert root.generation.sum() == pytest.approx(reference.g.sum(), rel=1e-9), table
        assert root.export.sum() == pytest.approx(reference["export"].sum(), rel=1e-9), table
    hourly = frame(db, "rollups_1h")
    root_hours = hourly[hourly.kind == "site"]
    assert (root_hours.export > (root_hours.generation - root_hours.energy).clip(lower=0) + 1e-6).any()


def test_a_flow_change_re_sums_the_history(db: psycopg.Connection[Any], pv_site: dict[str, Any]) -> None:
    pv = db.execute("SELECT id FROM nodes WHERE flow = 'generation'").fetchone()
    assert pv is not None
    catalogue.update_node(db, None, pv[0], {"flow": "consumption"})  # it was mislabelled, say
    drain(db)
    site = frame(db, "rollups_1m")
    assert site[site.kind == "site"].generation.isna().all()
    assert db.execute("SELECT detail->'fields' FROM audit_log WHERE subject_type = 'node' AND subject_id = %s",
                      (str(pv[0]),)).fetchone() == (["flow"],)


def test_the_rule_refuses_what_cannot_be_measured(db: psycopg.Connection[Any], pv_site: dict[str, Any]) -> None:
    pv = db.execute("SELECT id, parent_id, site_id FROM nodes WHERE flow = 'generation'").fetchone()
    assert pv is not None
    pv_id, board, site_id = pv
    # A board cannot generate: its circuits do.
    with pytest.raises(Invalid, match="a panel cannot be generation"):
        catalogue.update_node(db, None, board, {"flow": "generation"})
    # A consuming device under the PV circuit.
    with pytest.raises(Invalid, match="everything under generation generates"):
        catalogue.create_node(db, None, site_id, pv_id, "device", "Kettle")
    catalogue.create_node(db, None, site_id, pv_id, "device", "Inverter 2", flow="generation")
    # A clamp on the feeder above the PV board would read |C − G|: refused, and nothing changes.
    feeder = db.execute("SELECT parent_id FROM nodes WHERE id = %s", (board,)).fetchone()
    assert feeder is not None
    spare = db.execute("SELECT serial FROM sensors WHERE node_id IS NULL LIMIT 1").fetchone()
    serial = spare[0] if spare else None
    if serial is None:
        bridge = db.execute("SELECT id FROM bridges LIMIT 1").fetchone()
        assert bridge is not None
        assignments.register_sensor(db, "CT-SPARE", bridge[0])
        serial = "CT-SPARE"
    with pytest.raises(Invalid, match="has a clamp above the generation circuit Rooftop PV"):
        assignments.assign(db, None, serial, feeder[0], 1, 100.0)
    assert db.execute("SELECT count(*) FROM sensor_assignments a JOIN sensors s ON s.id = a.sensor_id "
                      "WHERE s.serial = %s", (serial,)).fetchone() == (0,)
    assert generation.problem(db, site_id) is None


def test_the_api_marks_generation_and_reads_the_energy_balance(
        client: TestClient, tenants: tuple[Tenant, Tenant], db: psycopg.Connection[Any]) -> None:
    a, b = tenants
    h = auth(a.tokens["installer"])
    res = client.post(f"/v1/sites/{a.site_id}/nodes", headers=h,
                      json={"parent_id": a.panel_id, "kind": "circuit", "name": "Rooftop PV", "flow": "generation"})
    assert res.status_code == 201, res.text
    pv = res.json()["id"]
    assert client.get(f"/v1/nodes/{pv}", headers=h).json()["flow"] == "generation"
    # Bad calls: an unknown flow, a panel that generates, a clamp above generation, another tenant.
    res = client.post(f"/v1/sites/{a.site_id}/nodes", headers=h,
                      json={"parent_id": a.panel_id, "kind": "circuit", "name": "X", "flow": "sideways"})
    assert res.status_code == 422 and res.headers["content-type"].startswith("application/problem+json")
    res = client.patch(f"/v1/nodes/{a.panel_id}", headers=h, json={"flow": "generation"})
    assert res.status_code == 422 and "a panel cannot be generation" in res.json()["detail"]
    res = client.patch(f"/v1/nodes/{pv}", headers=auth(b.tokens["installer"]), json={"flow": "consumption"})
    assert res.status_code == 404
    res = client.get(f"/v1/sites/{a.site_id}/energy-balance", headers=auth(b.tokens["customer_admin"]),
                     params={"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"})
    assert res.status_code == 404
    # The sensor that reported unassigned measures the PV from its first reading: 12 A, as the
    # chiller draws, so the site uses all it makes and trades nothing with the grid.
    res = client.put(f"/v1/sensors/{a.discovered_serial}/assignment", headers=h,
                     json={"node_id": pv, "phase": 1, "ct_rating_a": 50})
    assert res.status_code == 200, res.text
    drain(db)
    now = datetime.now(UTC)
    res = client.get(f"/v1/sites/{a.site_id}/energy-balance", headers=auth(a.tokens["customer_admin"]),
                     params={"from": (now - timedelta(hours=1)).isoformat(), "to": now.isoformat(),
                             "resolution": "15m"})
    assert res.status_code == 200, res.text
    body = res.json()
    row = db.execute("""SELECT sum(energy_wh), sum(generation_wh), sum(export_wh) FROM rollups_15m r
                        JOIN nodes n ON n.id = r.node_id AND n.kind = 'site' WHERE n.site_id = %s""",
                     (a.site_id,)).fetchone()
    assert row is not None and row[1] > 0
    totals = body["totals"]
    assert totals["consumption_wh"] == pytest.approx(row[0]) and totals["generation_wh"] == pytest.approx(row[1])
    assert totals["export_wh"] == pytest.approx(row[2]) and totals["export_wh"] == pytest.approx(0, abs=1e-6)
    assert totals["self_consumption_wh"] == pytest.approx(row[1])
    assert totals["import_wh"] == pytest.approx(row[0] - row[1], abs=1e-6)
    assert sum(x["generation_wh"] for x in body["buckets"]) == pytest.approx(row[1])
    # The chiller's clamp said to have been on the board above the PV all along: refused
    # with the reason, and the assignment stays as it was.
    res = client.post(f"/v1/sensors/{a.sensor_serial}/assignment/correction", headers=h,
                      json={"node_id": a.panel_id, "phase": 1, "ct_rating_a": 100})
    assert res.status_code == 422, res.text
    assert "has a clamp above the generation circuit Rooftop PV" in res.json()["detail"]
    assert db.execute("SELECT node_id FROM sensors WHERE serial = %s", (a.sensor_serial,)).fetchone() == (
        a.circuit_id,)


def test_the_invoice_bills_import_and_credits_export(db: psycopg.Connection[Any], pv_site: dict[str, Any]) -> None:
    """With PV, the meter bills what the site drew from the grid, not what it consumed, and
    the export rate of the version in force credits what it gave."""
    site_id, customer = db.execute("SELECT s.id, s.customer_id FROM sites s").fetchone() or (0, 0)
    t0 = datetime.fromtimestamp(pv_site["t0"], UTC)
    tariffs.add_tariff(db, site_id, "With export", "GBP", t0 - timedelta(days=1), seed.UK_STYLE_BANDS,
                       export_rate_minor_per_kwh=Decimal("15"))
    cost = site_cost(db, acting_for(customer), site_id, t0, t0 + timedelta(hours=1))
    assert cost is not None
    row = db.execute("""SELECT sum(energy_wh - generation_wh + export_wh), sum(export_wh) FROM rollups_15m r
                        JOIN nodes n ON n.id = r.node_id AND n.kind = 'site' WHERE n.site_id = %s""",
                     (site_id,)).fetchone()
    assert row is not None and row[1] > 0
    billed = sum(float(line.quantity) for line in cost.invoice.lines if line.kind == "energy")
    assert billed == pytest.approx(row[0] / 1000, abs=0.002)
    export = next(line for line in cost.invoice.lines if line.kind == "export")
    assert float(export.quantity) == pytest.approx(row[1] / 1000, abs=0.001)
    assert export.minor == -money(row[1] / 1000 * 15)


def test_the_monthly_report_and_the_export_carry_generation(db: psycopg.Connection[Any], pv_site: dict[str, Any],
                                                            client: TestClient) -> None:
    site_id, customer = db.execute("SELECT s.id, s.customer_id FROM sites s").fetchone() or (0, 0)
    t0 = datetime.fromtimestamp(pv_site["t0"], UTC)
    data = reports.report_data(db, site_id, reports.month_of(t0, "Europe/London"))
    row = db.execute("""SELECT sum(generation_wh), sum(export_wh) FROM rollups_1h r
                        JOIN nodes n ON n.id = r.node_id AND n.kind = 'site' WHERE n.site_id = %s""",
                     (site_id,)).fetchone()
    assert row is not None and data["solar"] is not None
    assert data["solar"]["generation_wh"] == pytest.approx(row[0] / 1000)
    assert data["solar"]["export_wh"] == pytest.approx(row[1] / 1000)
    page = reports.render_html(data)
    assert "Solar and grid" in page and f"{row[0] / 1000:,.1f}" in page
    # The measurement export: the site root's rows carry what it generated and gave out.
    uid = create_user(db, email="gen-export@example.com", password=None, role=Role.CUSTOMER_ADMIN,
                      customer_id=customer)
    key = issue_key(db, uid, ["read"])
    res = client.get(f"/v1/sites/{site_id}/measurements", headers=auth(key.token),
                     params={"from": t0.isoformat(), "to": (t0 + timedelta(hours=1)).isoformat(), "resolution": "15m",
                             "format": "csv"})
    assert res.status_code == 200, res.text
    frame_ = pd.read_csv(io.StringIO(res.text))
    assert list(frame_.columns[-2:]) == ["generation_wh", "export_wh"]
    assert frame_.generation_wh.sum() == pytest.approx(row[0], rel=1e-6)
    assert frame_.export_wh.sum() == pytest.approx(row[1], rel=1e-6)


def test_the_hierarchy_sheet_carries_the_flow(db: psycopg.Connection[Any], pv_site: dict[str, Any]) -> None:
    """The installers' CSV exports each node's flow; a sheet without the column keeps it; a
    bad flow, or one that breaks the rule, is refused and nothing changes."""
    site_id = db.execute("SELECT id FROM sites").fetchone()[0]
    sheet = catalogue.export_hierarchy(db, site_id)
    assert ",pv,generation" in sheet
    old_sheet = "\n".join(",".join(line.split(",")[:8]) for line in sheet.splitlines()) + "\n"  # no flow column
    catalogue.import_hierarchy(db, None, site_id, old_sheet.encode())
    assert db.execute("SELECT count(*) FROM nodes WHERE flow = 'generation'").fetchone() == (1,)
    bad = sheet.replace(",pv,generation", ",pv,sideways")
    with pytest.raises(RowErrors) as refused:
        catalogue.import_hierarchy(db, None, site_id, bad.encode())
    assert "flow must be consumption or generation" in refused.value.rows[0][1]
    board = sheet.replace("Board S000-PV,400.0,0.92,three_phase_wye,,consumption",
                          "Board S000-PV,400.0,0.92,three_phase_wye,,generation")
    assert board != sheet
    with pytest.raises(RowErrors) as refused:
        catalogue.import_hierarchy(db, None, site_id, board.encode())
    assert "a panel cannot be generation" in refused.value.rows[0][1]
    assert catalogue.export_hierarchy(db, site_id) == sheet
