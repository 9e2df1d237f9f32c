"""The REST API in-process against the real database: tenancy, roles, flows, protection."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.factories import TIERS, Tenant, auth, drain, move_to_tier
from wattline import catalogue
from wattline.accounts import create_user
from wattline.domain import Role
from wattline.settings import Settings


def params_for(t: Tenant) -> dict[str, Any]:
    return {"site_id": t.site_id, "node_id": t.circuit_id, "customer_id": t.customer_id, "bridge_id": t.bridge_id,
            "serial": t.sensor_serial, "key_id": t.key_ids["viewer"], "rule_id": t.rule_id, "alert_id": t.alert_id,
            "webhook_id": t.webhook_id, "user_id": t.user_ids["viewer"], "session_id": t.key_ids["viewer"],
            "draft_id": 1, "job_id": t.webhook_id}


TARIFF = {"name": "t", "currency": "GBP", "valid_from": "2030-01-01T00:00:00Z",
          "bands": [{"name": "a", "rate_minor_per_kwh": "1", "day_types": ["weekday", "weekend", "holiday"],
                     "start": "00:00", "end": "00:00"}]}
BODIES: dict[tuple[str, str], Any] = {
    ("post", "/v1/sites/{site_id}/nodes"): {"json": {"parent_id": 0, "kind": "circuit", "name": "x"}},
    ("patch", "/v1/nodes/{node_id}"): {"json": {"name": "renamed"}},
    ("patch", "/v1/sites/{site_id}"): {"json": {"name": "renamed"}},
    ("patch", "/v1/customers/{customer_id}"): {"json": {"name": "renamed"}},
    ("patch", "/v1/bridges/{bridge_id}"): {"json": {"name": "renamed"}},
    ("post", "/v1/sites/{site_id}/bridges"): {"json": {"serial": "BR-NEW", "name": "", "claim_code": "x"}},
    ("put", "/v1/sensors/{serial}/assignment"): {"json": {"node_id": 0, "phase": 1, "ct_rating_a": 50}},
    ("post", "/v1/sensors/{serial}/assignment/correction"): {"json": {"node_id": 0, "phase": 1, "ct_rating_a": 50}},
    ("post", "/v1/sensors/{serial}/assignment/move"): {"json": {"node_id": 0, "phase": 1, "ct_rating_a": 50}},
    ("post", "/v1/sensors/{serial}/replacement"): {"json": {"new_serial": "CT-NEVER-HEARD"}},
    ("put", "/v1/sites/{site_id}/commissioned"): {"json": {"commissioned": True}},
    ("put", "/v1/users/{user_id}/sites"): {"json": {"site_ids": []}},
    ("put", "/v1/people/{user_id}/access"): {"json": {"role": "viewer", "site_ids": []}},
    ("post", "/v1/sites/{site_id}/tariffs"): {"json": TARIFF},
    ("post", "/v1/sites/{site_id}/tariff-drafts"): {"json": TARIFF},
    ("put", "/v1/sites/{site_id}/tariff-drafts/{draft_id}"): {"json": TARIFF},
    ("post", "/v1/sites/{site_id}/tariff-drafts/{draft_id}/correction"): {"json": {"reason": "a mistake was keyed"}},
    ("post", "/v1/customers/{customer_id}/export-jobs"): {"json": {
        "name": "x", "destination": "https", "url": "https://example.com/in"}},
    ("post", "/v1/sites/{site_id}/alert-rules/backtest"): {"json": {"params": {"kind": "sensor_offline"}}},
    ("post", "/v1/sites/{site_id}/alert-rules"): {"json": {"name": "r", "params": {"kind": "sensor_offline"}}},
    ("patch", "/v1/alert-rules/{rule_id}"): {"json": {"enabled": False}},
    ("patch", "/v1/users/{user_id}"): {"json": {"full_name": "renamed"}},
    ("post", "/v1/customers/{customer_id}/webhooks"): {"json": {"url": "https://example.com/x"}},
    ("put", "/v1/virtual-meters/{meter_id}"): {"json": {"name": "x", "terms": [{"sign": "+", "node_id": 1}]}},
    ("put", "/v1/sites/{site_id}/temperatures"): {"json": {"days": [{"day": "2026-01-01", "mean_c": 4.0}]}},
    ("post", "/v1/sites/{site_id}/temperatures.csv"): {"files": {"file": ("t.csv", b"day,mean_c\n2026-01-01,4\n")}},
    ("post", "/v1/sites/{site_id}/savings-projects"): {"json": {"name": "x", "starts_on": "2026-01-01"}},
    ("put", "/v1/sites/{site_id}/emission-factor"): {"json": {"g_co2e_per_kwh": 100.0}},
    ("put", "/v1/sites/{site_id}/co2e-hourly"): {"json": {"hours": [{"hour": "2026-01-01T00:00:00Z",
                                                                     "g_co2e_per_kwh": 100.0}]}},
    ("post", "/v1/sites/{site_id}/co2e-hourly.csv"): {
        "files": {"file": ("g.csv", b"hour,g_co2e_per_kwh\n2026-01-01T00:00:00Z,100\n")}},
    ("put", "/v1/sensors/{serial}/meter"): {"json": {"reports_power": True}},
    ("post", "/v1/sites/{site_id}/hierarchy.csv"): {
        "files": {"file": ("h.csv", b"external_ref,parent_ref,kind,name\n")}},
}
def query(path: str = "") -> dict[str, str]:
    """The last day up to a minute from now (computed per call: tests run for a while); in
    days for the routes that take local days."""
    now = datetime.now(UTC)
    if any(word in path for word in ("temperatures", "degree-days", "baseline")):
        return {"from": str((now - timedelta(days=30)).date()), "to": str(now.date())}
    return {"from": (now - timedelta(days=1)).isoformat(), "to": (now + timedelta(minutes=1)).isoformat()}


def test_every_route_hides_other_tenants_objects(client: TestClient, tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    meter = client.post("/v1/virtual-meters", headers=auth(a.tokens["customer_admin"]), json={
        "name": f"Meter {a.name}", "terms": [{"sign": "+", "node_id": a.circuit_id}]})
    assert meter.status_code == 201, meter.text
    project = client.post(f"/v1/sites/{a.site_id}/savings-projects", headers=auth(a.tokens["customer_admin"]),
                          json={"name": f"Project {a.name}", "starts_on": "2026-01-01"})
    assert project.status_code == 201, project.text
    spec = client.get("/openapi.json").json()
    walked = 0
    for path, methods in spec["paths"].items():
        for method in methods:
            if "{" not in path:
                continue
            body = dict(BODIES.get((method, path), {}))
            if "json" in body and "parent_id" in body["json"]:
                body["json"] = {**body["json"], "parent_id": b.panel_id}  # B's own parent, A's site
            if "json" in body and "node_id" in body["json"]:
                body["json"] = {**body["json"], "node_id": b.circuit_id}
            url = path.format(**params_for(a), meter_id=meter.json()["id"], project_id=project.json()["id"])
            for role in ("reseller_admin", "customer_admin"):
                res = client.request(method, url, params=query(path), headers=auth(b.tokens[role]), **body)
                assert res.status_code == 404, (method, url, role, res.status_code, res.text[:200])
                assert not any(secret in res.text for secret in (f"Site {a.name}", f"Chiller {a.name}",
                                                                  f"Customer {a.name}", f"{a.name}-C1"))
            walked += 1
    assert walked >= 20
    # Lists show only the caller's own objects.
    for path in ("/v1/sites", "/v1/customers"):
        res = client.get(path, headers=auth(b.tokens["reseller_admin"]))
        assert res.status_code == 200 and "Site A" not in res.text and "Customer A" not in res.text
        assert res.json(), path


def test_not_found_looks_the_same_for_missing_and_foreign(client: TestClient, tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    foreign = client.get(f"/v1/sites/{a.site_id}", headers=auth(b.tokens["customer_admin"]))
    missing = client.get("/v1/sites/999999", headers=auth(b.tokens["customer_admin"]))
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["detail"] == missing.json()["detail"]
    assert foreign.headers["content-type"] == "application/problem+json"


def test_roles_limit_what_keys_can_do(client: TestClient, tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    site = {"name": "New", "timezone": "UTC"}
    assert client.post("/v1/sites", json=site, headers=auth(a.tokens["viewer"])).status_code == 403
    assert client.post("/v1/sites", json=site, headers=auth(a.tokens["installer"])).status_code == 403
    assert client.post("/v1/sites", json=site, headers=auth(a.tokens["facility_manager"])).status_code == 201
    assign = {"node_id": a.circuit_id, "phase": 2, "ct_rating_a": 50}
    res = client.put(f"/v1/sensors/{a.discovered_serial}/assignment", json=assign,
                     headers=auth(a.tokens["facility_manager"]))
    assert res.status_code == 403 and "commission" in res.json()["detail"]
    assert client.post("/v1/customers", json={"name": "X"}, headers=auth(a.tokens["customer_admin"])).status_code == 403
    assert client.post("/v1/customers", json={"name": "X"}, headers=auth(a.tokens["reseller_admin"])).status_code == 201
    # A viewer cannot mint itself a stronger key.
    res = client.post("/v1/api-keys", json={"scopes": ["write"]}, headers=auth(a.tokens["viewer"]))
    assert res.status_code == 403


def test_login_key_lifecycle(client: TestClient, db: psycopg.Connection[Any], tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    create_user(db, email="fm@example.com", password="correct horse", role=Role.FACILITY_MANAGER,
                customer_id=a.customer_id)
    assert client.post("/v1/auth/login", json={"email": "fm@example.com", "password": "nope"}).status_code == 401
    login = client.post("/v1/auth/login", json={"email": "FM@example.com", "password": "correct horse"})
    assert login.status_code == 200
    token = login.json()["token"]
    assert sorted(login.json()["scopes"]) == ["read", "write"]
    assert client.get("/v1/me", headers=auth(token)).json()["role"] == "facility_manager"
    key = client.post("/v1/api-keys", json={"name": "bms", "scopes": ["read"]}, headers=auth(token)).json()
    stored = db.execute("SELECT secret_hash FROM api_keys WHERE prefix = %s", (key["prefix"],)).fetchone()
    assert stored is not None and key["token"].split(".", 1)[1] not in stored[0]
    listed = client.get("/v1/api-keys", headers=auth(token)).json()
    assert all("token" not in k and "secret_hash" not in k for k in listed)
    key_id = next(k["id"] for k in listed if k["prefix"] == key["prefix"])
    assert client.get("/v1/sites", headers=auth(key["token"])).status_code == 200
    assert client.delete(f"/v1/api-keys/{key_id}", headers=auth(token)).status_code == 200
    assert client.get("/v1/sites", headers=auth(key["token"])).status_code == 401
    pw = db.execute("SELECT password_hash FROM users WHERE email = 'fm@example.com'").fetchone()
    assert pw is not None and pw[0].startswith("$argon2id$") and "correct horse" not in pw[0]


def test_installer_assigns_discovered_sensor_and_its_energy_appears(
        client: TestClient, db: psycopg.Connection[Any], tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    token = a.tokens["installer"]
    found = client.get(f"/v1/sites/{a.site_id}/sensors", params={"discovered_only": True}, headers=auth(token)).json()
    assert [s["serial"] for s in found] == [a.discovered_serial]
    assert found[0]["last_current_a"] == pytest.approx(12.0) and found[0]["last_seen_at"]
    created = client.post(f"/v1/sites/{a.site_id}/nodes", headers=auth(a.tokens["customer_admin"]),
                          json={"parent_id": a.panel_id, "kind": "circuit", "name": "Freezer", "external_ref": "FZ"})
    assert created.status_code == 201
    node = created.json()["id"]
    res = client.put(f"/v1/sensors/{a.discovered_serial}/assignment", headers=auth(token),
                     json={"node_id": node, "phase": 1, "ct_rating_a": 32})
    assert res.status_code == 200, res.text
    drain(db)
    rows = client.get(f"/v1/nodes/{node}/measurements", headers=auth(token),
                      params={**query(), "resolution": "1m"}).json()
    energy = sum(r["energy_wh"] for r in rows)
    assert energy == pytest.approx(12.0 * 230.0 * 540 / 3600, rel=1e-6)  # 54 intervals of 10 s
    report = client.get(f"/v1/sites/{a.site_id}/commissioning-report", headers=auth(token)).json()
    assert report["discovered"] == 0 and report["mapped"] == 2 and report["live"] == 2
    assert client.get(f"/v1/sensors/{a.discovered_serial}/check", headers=auth(token)).json()["state"] == "live"


def test_measurements_csv_has_powerradar_columns(client: TestClient, tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    res = client.get(f"/v1/nodes/{a.circuit_id}/measurements", headers=auth(a.tokens["viewer"]),
                     params={**query(), "resolution": "1m", "format": "csv"})
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/csv")
    lines = res.text.strip().splitlines()
    assert lines[0] == ("device_id,device_name,time_utc,resolution_minutes,site_id,site_name,current_a,voltage_v,"
                        "power_w,power_factor,energy_wh,coverage,samples,generation_wh,export_wh")
    first = lines[1].split(",")
    assert first[2].endswith("Z") and first[3] == "1" and float(first[6]) == pytest.approx(12.0)
    assert float(first[7]) == pytest.approx(230.0) and float(first[8]) == pytest.approx(2760.0, rel=1e-3)


def test_cost_route_adds_up(client: TestClient, tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    res = client.get(f"/v1/sites/{a.site_id}/cost", headers=auth(a.tokens["viewer"]), params=query())
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["currency"] == "GBP"
    assert sum(line["amount_minor"] for line in body["lines"]) == body["total_minor"]
    assert {line["kind"] for line in body["lines"]} >= {"energy", "standing", "vat"}


def test_hierarchy_csv_round_trip_and_bad_csv(client: TestClient, tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    h = auth(a.tokens["customer_admin"])
    exported = client.get(f"/v1/sites/{a.site_id}/hierarchy.csv", headers=h)
    assert exported.status_code == 200 and f"{a.name}-C1" in exported.text
    new = exported.text + f"NEW-1,{a.name}-MSB,circuit,Oven,,,,\n"
    res = client.post(f"/v1/sites/{a.site_id}/hierarchy.csv", headers=h, files={"file": ("h.csv", new.encode())})
    assert res.status_code == 200, res.text
    assert "Oven" in client.get(f"/v1/sites/{a.site_id}/tree", headers=h).text
    bad = ("external_ref,parent_ref,kind,name,nominal_voltage_v,power_factor,connection\n"
           "X,NOPE,circuit,Y,,,\n"          # an unknown parent
           "P9,,panel,Board 9,230,1,single_phase\n"  # fine
           "C9,P9,circuit,,,,\n"            # no name
           "D9,P9,gadget,Z,,,\n"            # no such kind
           "P10,,panel,Board 10,lots,1,single_phase\n"  # not a number
           "P11,,panel,Board 11,230,1,\n")  # a panel needs its connection (the database says so)
    res = client.post(f"/v1/sites/{a.site_id}/hierarchy.csv", headers=h, files={"file": ("h.csv", bad.encode())})
    assert res.status_code == 422 and res.json()["field"] == "file"
    assert [r["line"] for r in res.json()["rows"]] == [2, 4, 5, 6, 7]  # every bad row, the good one not
    assert "unknown parent_ref" in res.json()["rows"][0]["detail"] and "number" in res.json()["rows"][3]["detail"]
    assert "Board 9" not in client.get(f"/v1/sites/{a.site_id}/tree", headers=h).text  # all rows or none


def test_bad_requests_get_problem_details(client: TestClient, tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    h = auth(a.tokens["customer_admin"])
    assert client.get("/v1/sites").status_code == 401
    assert client.get("/v1/sites", headers=auth("wl_AAAAAAAA.wrong")).status_code == 401
    res = client.post("/v1/sites", json={"name": ""}, headers=h)
    assert res.status_code == 422 and res.headers["content-type"] == "application/problem+json"
    assert res.json()["errors"][0]["loc"][-1] == "name"
    res = client.post("/v1/sites", json={"name": "x", "timezone": "Mars/Base"}, headers=h)
    assert res.status_code == 422 and "time zone" in res.json()["detail"]
    res = client.get(f"/v1/nodes/{a.circuit_id}/measurements", headers=h,
                     params={"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"})
    assert res.status_code == 422 and "after" in res.json()["detail"]
    assert client.get("/v1/nope", headers=h).json()["status"] == 404
    big = b"x" * 3_000_000
    res = client.post(f"/v1/sites/{a.site_id}/hierarchy.csv", headers={**h, "content-length": str(len(big))},
                      content=big)
    assert res.status_code == 413
    res = client.patch(f"/v1/nodes/{a.panel_id}", json={"parent_id": a.circuit_id}, headers=h)
    assert res.status_code == 422  # a panel under its own circuit: a cycle


def test_rate_limit_answers_429_with_retry_after(database_url: str, tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    app = create_app(Settings(database_url=database_url), rate_per_s=1, burst=3)
    with TestClient(app) as c:
        codes = [c.get("/v1/me", headers=auth(a.tokens["viewer"])).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[-1] == 429
        res = c.get("/v1/me", headers=auth(a.tokens["viewer"]))
        assert int(res.headers["retry-after"]) >= 1
        assert c.get("/v1/me", headers=auth(a.tokens["customer_admin"])).status_code == 200  # per key


def test_dead_database_answers_503(services: Any) -> None:
    from launcher.localstack import free_port

    app = create_app(Settings(database_url=f"postgresql://wattline@127.0.0.1:{free_port()}/x?connect_timeout=1"))
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/health").status_code == 503
        res = c.get("/v1/sites", headers=auth("wl_AAAAAAAA.x"))
        assert res.status_code == 503 and res.headers["content-type"] == "application/problem+json"
        assert "Traceback" not in res.text




def test_update_and_delete_catalogue_objects(client: TestClient, tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    h = auth(a.tokens["customer_admin"])
    res = client.patch(f"/v1/sites/{a.site_id}", json={"name": "Renamed", "floor_area_m2": 900}, headers=h)
    assert res.status_code == 200
    assert client.get(f"/v1/sites/{a.site_id}", headers=h).json()["name"] == "Renamed"
    assert client.patch(f"/v1/sites/{a.site_id}", json={"timezone": "Nowhere/Else"}, headers=h).status_code == 422
    # A node with a sensor, a bridge with sensors, a site with bridges: refused with 409, nothing lost.
    assert client.delete(f"/v1/nodes/{a.circuit_id}", headers=h).status_code == 409
    assert client.get(f"/v1/nodes/{a.circuit_id}/measurements", headers=h, params=query()).json()
    assert client.delete(f"/v1/bridges/{a.bridge_id}", headers=h).status_code == 409
    assert client.delete(f"/v1/sites/{a.site_id}", headers=h).status_code == 409
    spare = client.post(f"/v1/sites/{a.site_id}/nodes", headers=h,
                        json={"parent_id": a.panel_id, "kind": "circuit", "name": "Spare", "external_ref": "SP"}).json()
    assert client.delete(f"/v1/nodes/{spare['id']}", headers=h).status_code == 200
    assert client.get(f"/v1/nodes/{spare['id']}", headers=h).status_code == 404
    assert client.patch(f"/v1/bridges/{a.bridge_id}", json={"name": "Plant room"}, headers=h).status_code == 200
    assert client.patch(f"/v1/customers/{a.customer_id}", json={"name": "Acme"}, headers=h).status_code == 200
    # A customer admin cannot delete its own customer (only its reseller can).
    assert client.delete(f"/v1/customers/{a.customer_id}", headers=h).status_code == 404


def test_tariff_versions_never_rewrite_history(client: TestClient, tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    h = auth(a.tokens["customer_admin"])
    band = {"name": "flat", "rate_minor_per_kwh": "30", "day_types": ["weekday", "weekend", "holiday"],
            "start": "00:00", "end": "00:00"}
    past = {"name": "Cheaper, backdated", "currency": "GBP", "valid_from": "2025-01-01T00:00:00Z", "bands": [band]}
    res = client.post(f"/v1/sites/{a.site_id}/tariffs", json=past, headers=h)
    assert res.status_code == 422 and "future" in res.json()["detail"]
    future = {**past, "name": "Next year", "valid_from": (datetime.now(UTC) + timedelta(days=30)).isoformat()}
    assert client.post(f"/v1/sites/{a.site_id}/tariffs", json=future, headers=h).status_code == 201
    gap = {**future, "bands": [{**band, "start": "07:00"}]}
    res = client.post(f"/v1/sites/{a.site_id}/tariffs", json=gap, headers=h)
    assert res.status_code == 422 and "no band covers" in res.json()["detail"]
    versions = client.get(f"/v1/sites/{a.site_id}/tariffs", headers=h).json()
    assert [v["name"] for v in versions] == ["Next year", "Flat"]


@pytest.mark.parametrize("tier", TIERS)
def test_sensor_and_site_measurements(client: TestClient, tenants: tuple[Tenant, Tenant], database_url: str,
                                      tier: str) -> None:
    a, b = tenants
    move_to_tier(database_url, tier)  # a sensor's measurements come from its raw readings, in either tier
    h = auth(a.tokens["viewer"])
    sensor = client.get(f"/v1/sensors/{a.sensor_serial}/measurements", headers=h,
                        params={**query(), "resolution": "15m"})
    assert sensor.status_code == 200, sensor.text
    circuit = client.get(f"/v1/nodes/{a.circuit_id}/measurements", headers=h, params={**query(), "resolution": "15m"})
    # The sensor is the circuit's only conductor: the same energy, computed from raw readings.
    assert sum(r["energy_wh"] for r in sensor.json()) == pytest.approx(sum(r["energy_wh"] for r in circuit.json()))
    assert sum(r["samples"] for r in sensor.json()) == 55
    site = client.get(f"/v1/sites/{a.site_id}/measurements", headers=h, params={**query(), "resolution": "1h"})
    assert site.status_code == 200 and sum(r["energy_wh"] for r in site.json()) == pytest.approx(
        sum(r["energy_wh"] for r in circuit.json()))
    days = client.get(f"/v1/sensors/{a.sensor_serial}/measurements", headers=h, params={**query(), "resolution": "1d"})
    assert sum(r["energy_wh"] for r in days.json()) == pytest.approx(sum(r["energy_wh"] for r in sensor.json()))
    assert client.get(f"/v1/sensors/{a.sensor_serial}/measurements", headers=auth(b.tokens["viewer"]),
                      params=query()).status_code == 404


def test_lists_are_paginated(client: TestClient, tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    h = auth(a.tokens["viewer"])
    everything = client.get(f"/v1/sites/{a.site_id}/sensors", headers=h).json()
    first = client.get(f"/v1/sites/{a.site_id}/sensors", headers=h, params={"limit": 1}).json()
    second = client.get(f"/v1/sites/{a.site_id}/sensors", headers=h, params={"limit": 1, "offset": 1}).json()
    assert len(everything) == 2 and first + second == everything
    assert client.get(f"/v1/sites/{a.site_id}/sensors", headers=h, params={"limit": 0}).status_code == 422
    assert len(client.get(f"/v1/sites/{a.site_id}/bridges", headers=h, params={"limit": 1}).json()) == 1


def test_alert_rules_notification_centre_and_webhooks(client: TestClient, db: psycopg.Connection[Any],
                                                     tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    fm = auth(a.tokens["facility_manager"])
    body = {"name": "Night load", "node_id": a.circuit_id,
            "params": {"kind": "threshold", "above_w": 2000, "hold_minutes": 30, "hours": ["20:00", "24:00"],
                       "days": ["mon", "fri"]}}
    res = client.post(f"/v1/sites/{a.site_id}/alert-rules", json=body, headers=fm)
    assert res.status_code == 201, res.text
    rule_id = res.json()["id"]
    got = client.get(f"/v1/alert-rules/{rule_id}", headers=fm).json()
    assert got["kind"] == "threshold" and got["params"]["hours"] == ["20:00", "24:00"] and got["enabled"]
    # Wrong rules get a clear 422 and change nothing.
    for params in ({"kind": "threshold", "above_w": 1, "below_w": 2}, {"kind": "threshold"},
                   {"kind": "threshold", "above_w": 1, "hours": ["18:00", "07:00"]}, {"kind": "weather"},
                   {"kind": "budget", "cap": "-5"}, {"kind": "sensor_offline", "intervals": 1},
                   {"kind": "anomaly", "sensitivity": 0}, {"kind": "cycling", "colour": "red"}):
        res = client.post(f"/v1/sites/{a.site_id}/alert-rules", json={"name": "bad", "params": params}, headers=fm)
        assert res.status_code == 422, (params, res.text)
        assert res.headers["content-type"] == "application/problem+json"
    res = client.post(f"/v1/sites/{a.site_id}/alert-rules", json={**body, "node_id": b.circuit_id}, headers=fm)
    assert res.status_code == 404  # another site's node
    assert len(client.get(f"/v1/sites/{a.site_id}/alert-rules", headers=fm).json()) == 2
    # A viewer reads but cannot change.
    viewer = auth(a.tokens["viewer"])
    assert client.patch(f"/v1/alert-rules/{rule_id}", json={"enabled": False}, headers=viewer).status_code == 403
    assert client.patch(f"/v1/alert-rules/{rule_id}", json={"enabled": False}, headers=fm).status_code == 200
    assert client.get(f"/v1/alert-rules/{rule_id}", headers=fm).json()["enabled"] is False

    # The notification centre: open → acknowledged → resolved, each visible by state.
    [alert] = client.get("/v1/alerts", headers=fm).json()
    assert alert["id"] == a.alert_id and alert["state"] == "open" and alert["site_name"] == "Site A"
    assert client.post(f"/v1/alerts/{a.alert_id}/acknowledge", headers=viewer).status_code == 403
    acked = client.post(f"/v1/alerts/{a.alert_id}/acknowledge", headers=fm).json()
    assert acked["state"] == "acknowledged" and acked["acknowledged_at"]
    assert client.get("/v1/alerts", params={"state": "open"}, headers=fm).json() == []
    resolved = client.post(f"/v1/alerts/{a.alert_id}/resolve", headers=fm).json()
    assert resolved["state"] == "resolved"
    assert client.get("/v1/alerts", headers=fm).json() == []  # active only, by default
    assert [x["id"] for x in client.get("/v1/alerts", params={"state": "all"}, headers=fm).json()] == [a.alert_id]
    assert client.get("/v1/alerts", params={"state": "sideways"}, headers=fm).status_code == 422

    # Webhooks: the secret is shown once, never listed; only admins manage them.
    admin = auth(a.tokens["customer_admin"])
    assert client.post(f"/v1/customers/{a.customer_id}/webhooks", json={"url": "https://x.example/h"},
                       headers=fm).status_code == 403
    assert client.post(f"/v1/customers/{a.customer_id}/webhooks", json={"url": "ftp://x.example/h"},
                       headers=admin).status_code == 422
    created = client.post(f"/v1/customers/{a.customer_id}/webhooks", json={"url": "https://x.example/h"},
                          headers=admin)
    assert created.status_code == 201 and created.json()["secret"].startswith("whsec_")
    listed = client.get(f"/v1/customers/{a.customer_id}/webhooks", headers=admin)
    assert len(listed.json()) == 2 and created.json()["secret"] not in listed.text
    assert client.get(f"/v1/webhooks/{created.json()['id']}/deliveries", headers=admin).json() == []


def test_benchmark_normalises_energy_per_m2_and_opening_hour(client: TestClient, db: psycopg.Connection[Any],
                                                              tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    admin = auth(a.tokens["customer_admin"])
    hours = {d: ["00:00", "24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    assert client.patch(f"/v1/sites/{a.site_id}", json={"floor_area_m2": 250.0, "opening_hours": hours},
                        headers=admin).status_code == 200
    second = catalogue.upsert_site(db, a.customer_id, "Site A2", timezone="Europe/London")  # no area, no hours
    now = datetime.now(UTC)
    t_from, t_to = now - timedelta(hours=6), now + timedelta(minutes=1)
    res = client.get(f"/v1/customers/{a.customer_id}/benchmark", headers=admin,
                     params={"from": t_from.isoformat(), "to": t_to.isoformat()})
    assert res.status_code == 200, res.text
    rows = {r["site_id"]: r for r in res.json()}
    wh = db.execute("""SELECT sum(energy_wh) FROM rollups_1h r JOIN nodes n ON n.id = r.node_id
                       WHERE n.site_id = %s AND n.kind = 'site' AND r.bucket >= %s AND r.bucket < %s""",
                    (a.site_id, t_from, t_to)).fetchone()[0]
    site = rows[a.site_id]
    assert wh > 0 and site["energy_kwh"] == pytest.approx(wh / 1000)
    assert site["kwh_per_m2"] == pytest.approx(wh / 1000 / 250.0)
    assert site["opening_hours"] == pytest.approx(6 + 1 / 60)
    assert site["kwh_per_opening_hour"] == pytest.approx(wh / 1000 / (6 + 1 / 60))
    assert site["rank_per_m2"] == 1
    assert rows[second]["kwh_per_m2"] is None and rows[second]["opening_hours"] == 0
    # CO2e at the country's factor (GB), over the same hourly buckets.
    assert site["kg_co2e"] == pytest.approx(wh * 268.329 / 1e6, rel=1e-9)
    assert site["kg_co2e_per_m2"] == pytest.approx(site["kg_co2e"] / 250.0)
    assert rows[second]["kg_co2e"] == 0 and rows[second]["kg_co2e_per_m2"] is None


def test_site_export_streams_every_node_of_the_site(client: TestClient, db: psycopg.Connection[Any],
                                                    tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    h = auth(a.tokens["viewer"])
    params = {**query(), "resolution": "1m"}
    res = client.get(f"/v1/sites/{a.site_id}/export", headers=h, params={**params, "format": "csv"})
    assert res.status_code == 200, res.text
    rows = list(csv.DictReader(io.StringIO(res.text)))
    expected = db.execute("""SELECT r.node_id, count(*) FROM rollups_1m r JOIN nodes n ON n.id = r.node_id
                             WHERE n.site_id = %s AND r.bucket >= %s AND r.bucket < %s GROUP BY 1 ORDER BY 1""",
                          (a.site_id, params["from"], params["to"])).fetchall()
    got: dict[int, int] = {}
    for r in rows:
        got[int(r["device_id"])] = got.get(int(r["device_id"]), 0) + 1
    assert sorted(got.items()) == [tuple(e) for e in expected] and len(expected) >= 2  # circuit, panel, root…
    energy = db.execute("""SELECT sum(energy_wh) FROM rollups_1m WHERE node_id = %s AND bucket >= %s
                           AND bucket < %s""", (a.circuit_id, params["from"], params["to"])).fetchone()[0]
    assert sum(float(r["energy_wh"]) for r in rows if int(r["device_id"]) == a.circuit_id) == pytest.approx(energy)
    body = client.get(f"/v1/sites/{a.site_id}/export", headers=h, params=params).json()
    assert len(body) == len(rows) and body[0].keys() == rows[0].keys()
    # Another tenant's site is not found; a request too large is refused before any byte.
    assert client.get(f"/v1/sites/{a.site_id}/export", headers=auth(b.tokens["viewer"]),
                      params=params).status_code == 404
    huge = {"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z", "resolution": "1m"}
    res = client.get(f"/v1/sites/{a.site_id}/export", headers=h, params=huge)
    assert res.status_code == 422 and "2000000" in res.json()["detail"]
