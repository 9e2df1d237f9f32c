"""Each promise of the privacy notice, end to end through the API and the CLI: access,
rectification, erasure, consent, retention, the audit log and k-anonymous aggregates."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from tests.factories import TIERS, Tenant, all_readings, auth, count, move_to_tier, stored
from tests.factories import run_cli as run
from wattline import privacy
from wattline.accounts import create_user, issue_key
from wattline.domain import Role
from wattline.site_builder import SiteSpec, build_site, build_tenant


def person(db: psycopg.Connection[Any], t: Tenant, email: str = "ada@example.com") -> tuple[int, str]:
    uid = create_user(db, email=email, password="correct horse battery", role=Role.FACILITY_MANAGER,
                      customer_id=t.customer_id, full_name="Ada Lovelace")
    db.execute("UPDATE users SET phone = '+44 20 7946 0001' WHERE id = %s", (uid,))
    return uid, issue_key(db, uid, ["read", "write"]).token


def test_access_request_holds_everything_and_is_audited(client: TestClient, db: psycopg.Connection[Any],
                                                        tenants: tuple[Tenant, Tenant], database_url: str) -> None:
    a, b = tenants
    uid, token = person(db, a)
    me = auth(token)
    assert client.put("/v1/me/consents", json={"channel": "email", "granted": True, "source": "signup form"},
                      headers=me).status_code == 200
    assert client.post("/v1/support-requests", json={"subject": "Bridge offline", "body": "Since Monday."},
                       headers=me).status_code == 201
    res = client.get("/v1/me/export", headers=me)
    assert res.status_code == 200
    data = res.json()
    assert data["account"]["email"] == "ada@example.com" and data["account"]["full_name"] == "Ada Lovelace"
    assert data["account"]["phone"] == "+44 20 7946 0001"
    assert "argon2" not in res.text.lower().replace("argon2id hash", "")  # the hash itself never leaves
    assert data["organisation"]["name"] == "Customer A"
    assert data["marketing_consents"]["current"]["email"]["granted"] is True
    assert data["marketing_consents"]["history"][0]["source"] == "signup form"
    assert data["support_requests"][0]["body"] == "Since Monday."
    assert [k["prefix"] for k in data["api_keys"]] == [token.split(".")[0]]
    assert token.split(".")[1] not in res.text
    assert {"export", "consent"} <= {e["action"] for e in data["audit_entries"]}
    # An admin of the same organisation may export; another tenant's admin gets 404.
    assert client.get(f"/v1/users/{uid}/export", headers=auth(a.tokens["customer_admin"])).status_code == 200
    assert client.get(f"/v1/users/{uid}/export", headers=auth(b.tokens["customer_admin"])).status_code == 404
    assert client.get(f"/v1/users/{uid}/export", headers=auth(a.tokens["viewer"])).status_code == 403
    # The CLI gives the same document.
    out = run("privacy", "export", "--user", "ada@example.com", env={"WATTLINE_DATABASE_URL": database_url})
    assert out.exit_code == 0, out.output
    cli = json.loads(out.output)
    assert cli["account"] == data["account"] and cli["format"] == data["format"]
    assert count(db, "SELECT count(*) FROM audit_log WHERE action = 'export' AND subject_id = %s", str(uid)) == 3
    assert run("privacy", "export", "--user", "nobody@example.com",
               env={"WATTLINE_DATABASE_URL": database_url}).exit_code == 1


def test_rectification_is_audited_without_the_values(client: TestClient, db: psycopg.Connection[Any],
                                                     tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    uid, token = person(db, a)
    res = client.patch("/v1/me", json={"full_name": "Ada King", "phone": None}, headers=auth(token))
    assert res.status_code == 200, res.text
    row = db.execute("SELECT full_name, phone, email FROM users WHERE id = %s", (uid,)).fetchone()
    assert row == ("Ada King", None, "ada@example.com")
    entry = db.execute("SELECT actor_user_id, detail::text FROM audit_log WHERE action = 'rectify'").fetchone()
    assert entry is not None and entry[0] == uid and "full_name" in entry[1] and "Ada King" not in entry[1]
    # An admin corrects the email; other tenants cannot.
    assert client.patch(f"/v1/users/{uid}", json={"email": "ada.king@example.com"},
                        headers=auth(a.tokens["customer_admin"])).status_code == 200
    assert client.patch(f"/v1/users/{uid}", json={"email": "x@example.com"},
                        headers=auth(b.tokens["customer_admin"])).status_code == 404
    # Bad corrections: a clear 422, and nothing changes.
    for body in ({"email": "not-an-email"}, {"full_name": None}, {"role": "reseller_admin"}, {"phone": "call me"}):
        res = client.patch("/v1/me", json=body, headers=auth(token))
        assert res.status_code == 422, (body, res.text)
    assert db.execute("SELECT email, role FROM users WHERE id = %s", (uid,)).fetchone() == (
        "ada.king@example.com", "facility_manager")


@pytest.mark.parametrize("tier", TIERS)
def test_erasure_anonymises_the_person_and_keeps_the_organisations_data(
        client: TestClient, db: psycopg.Connection[Any], tenants: tuple[Tenant, Tenant], database_url: str,
        tier: str) -> None:
    a, b = tenants
    move_to_tier(database_url, tier)
    uid, token = person(db, a)
    me = auth(token)
    client.put("/v1/me/consents", json={"channel": "sms", "granted": True}, headers=me)
    client.post("/v1/support-requests", json={"subject": "Ada's question", "body": "Call Ada on 07700 900000"},
                headers=me)
    readings, rollups = stored(db), count(db, "SELECT count(*) FROM rollups_1m")
    assert readings > 0
    assert client.post(f"/v1/users/{uid}/erase", headers=auth(b.tokens["customer_admin"])).status_code == 404
    res = client.post(f"/v1/users/{uid}/erase", headers=auth(a.tokens["customer_admin"]))
    assert res.status_code == 200, res.text
    assert res.json() == {"user_id": uid, "api_keys_revoked": 1, "consents_removed": 1,
                          "support_requests_anonymised": 1}
    # The person can no longer sign in or use a key.
    assert client.get("/v1/me", headers=me).status_code == 401
    assert client.post("/v1/auth/login", json={"email": "ada@example.com",
                                                "password": "correct horse battery"}).status_code == 401
    # Nothing personal is left anywhere, the erasure record included.
    for table in ("users", "audit_log", "support_requests", "marketing_consents", "customers", "api_keys"):
        dump = db.execute(sql.SQL("SELECT coalesce(string_agg(t::text, ' '), '') FROM {} t").format(
            sql.Identifier(table))).fetchone()[0]
        for secret in ("ada@example.com", "Ada Lovelace", "7946 0001", "07700 900000", "Ada's question"):
            assert secret not in dump, (table, secret)
    assert count(db, "SELECT count(*) FROM audit_log WHERE action = 'erase' AND subject_id = %s", str(uid)) == 1
    # Usage data belongs to the organisation and stays.
    assert (stored(db), count(db, "SELECT count(*) FROM rollups_1m")) == (readings, rollups)
    assert client.post(f"/v1/users/{uid}/erase", headers=auth(a.tokens["customer_admin"])).status_code == 409
    # The CLI erases too, and asks for confirmation first.
    other, _ = person(db, a, "grace@example.com")
    env = {"WATTLINE_DATABASE_URL": database_url}
    assert run("privacy", "erase", "--user", str(other), env=env).exit_code == 2
    out = run("privacy", "erase", "--user", "grace@example.com", "--yes", env=env)
    assert out.exit_code == 0, out.output
    assert db.execute("SELECT erased_at IS NOT NULL FROM users WHERE id = %s", (other,)).fetchone()[0]


def test_consent_per_channel_and_withdrawal_takes_effect_at_once(
        client: TestClient, db: psycopg.Connection[Any], tenants: tuple[Tenant, Tenant], database_url: str) -> None:
    a, _ = tenants
    uid, token = person(db, a)
    me = auth(token)
    assert client.get("/v1/me/consents", headers=me).json()["email"]["granted"] is False  # never asked: no
    client.put("/v1/me/consents", json={"channel": "email", "granted": True, "source": "newsletter box"}, headers=me)
    client.put("/v1/me/consents", json={"channel": "post", "granted": True}, headers=me)
    assert privacy.marketing_audience(db, "email") == [uid]
    state = client.put("/v1/me/consents", json={"channel": "email", "granted": False}, headers=me).json()
    assert state["email"]["granted"] is False and state["post"]["granted"] is True
    assert privacy.marketing_audience(db, "email") == []  # at once, no batch job in between
    assert privacy.marketing_audience(db, "post") == [uid]
    history = db.execute("SELECT granted, source, at FROM marketing_consents WHERE user_id = %s AND channel = 'email' "
                         "ORDER BY id", (uid,)).fetchall()
    assert [(g, s) for g, s, _ in history] == [(True, "newsletter box"), (False, "api")]
    assert all(at is not None for *_, at in history)
    assert client.put("/v1/me/consents", json={"channel": "pigeon", "granted": True}, headers=me).status_code == 422
    env = {"WATTLINE_DATABASE_URL": database_url}
    assert run("privacy", "consent", "--user", str(uid), "--channel", "post", "--withdraw", env=env).exit_code == 0
    assert privacy.marketing_audience(db, "post") == []


@pytest.mark.parametrize("tier", TIERS)
def test_retention_drops_old_data_per_category_and_reports_it(
        db: psycopg.Connection[Any], tenants: tuple[Tenant, Tenant], database_url: str, tier: str) -> None:
    a, _ = tenants

    def readings_older(days: float) -> int:
        return int((all_readings(db).ts_s < time.time() - days * 86400).sum())

    def readings_newer(days: float) -> int:
        return int((all_readings(db).ts_s > time.time() - days * 86400).sum())

    sensor = db.execute("SELECT id FROM sensors WHERE serial = %s", (a.sensor_serial,)).fetchone()[0]
    now = datetime.now(UTC)
    old = [now - timedelta(days=d) for d in (400, 200, 120, 95)]
    for ts in old:
        db.execute("INSERT INTO readings (sensor_id, ts, current_a, bridge_id) VALUES (%s, %s, 1.0, %s)",
                   (sensor, ts, a.bridge_id))
        db.execute("""INSERT INTO rollups_1m (node_id, bucket, energy_wh, mean_power_w, max_power_w, mean_current_a,
                      samples, coverage) VALUES (%s, %s, 1, 1, 1, 1, 1, 1)""", (a.circuit_id, ts))
        db.execute("""INSERT INTO rollups_1h (node_id, bucket, energy_wh, mean_power_w, max_power_w, mean_current_a,
                      samples, coverage) VALUES (%s, %s, 1, 1, 1, 1, 1, 1)""", (a.circuit_id, ts))
        db.execute("INSERT INTO rejected_readings (received_at, topic, reason, payload) VALUES (%s, 't', 'x', '')",
                   (ts,))
    db.execute("INSERT INTO audit_log (at, action, subject_type, subject_id) VALUES (now() - interval '7 years', "
               "'read', 'user', '1')")
    db.execute("""INSERT INTO support_requests (customer_id, subject, body, created_at, closed_at)
                  VALUES (%s, 'old', 'x', now() - interval '3 years', now() - interval '3 years'),
                         (%s, 'open', 'x', now() - interval '3 years', NULL)""", (a.customer_id, a.customer_id))
    move_to_tier(database_url, tier)
    raw = "raw readings" if tier == "hot" else "packed raw readings"
    recent = readings_newer(1)
    assert recent > 0
    env = {"WATTLINE_DATABASE_URL": database_url}
    dry = run("retention", "--dry-run", env=env)
    assert dry.exit_code == 0 and "would remove 4 row(s)" in dry.output
    assert readings_older(93) == 4
    out = run("retention", env=env)
    assert out.exit_code == 0, out.output
    lines = {line.split("  ")[0]: line for line in out.output.splitlines()}
    assert "removed 4 row(s)" in lines[raw] and "removed 4 row(s)" in lines["1-minute rollups"]
    assert "kept for good" in lines["hourly rollups"]
    assert "removed 1 row(s)" in lines["audit log"] and "removed 1 row(s)" in lines["support records"]
    assert readings_older(93) == 0
    assert readings_newer(1) == recent
    assert count(db, "SELECT count(*) FROM rollups_1m WHERE bucket < now() - interval '93 days'") == 0
    assert count(db, "SELECT count(*) FROM rollups_1h WHERE bucket < now() - interval '93 days'") == 4
    assert count(db, "SELECT count(*) FROM rejected_readings WHERE received_at < now() - interval '30 days'") == 0
    assert count(db, "SELECT count(*) FROM support_requests") == 1  # the open one stays
    assert count(db, "SELECT count(*) FROM audit_log WHERE action = 'retention'") == 1
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("DELETE FROM audit_log")  # only the retention job may
    again = run("retention", env=env)
    assert "removed 0 row(s)" in again.output


def test_reading_customer_payment_data_is_audited(client: TestClient, db: psycopg.Connection[Any],
                                                  tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    db.execute("UPDATE customers SET billing_email = 'ap@example.com', card_last4 = '4242' WHERE id = %s",
               (a.customer_id,))
    res = client.get(f"/v1/customers/{a.customer_id}", headers=auth(a.tokens["customer_admin"]))
    assert res.json()["card_last4"] == "4242"
    entry = db.execute("SELECT actor_key_id, action, subject_type FROM audit_log WHERE action = 'read'").fetchone()
    assert entry == (a.key_ids["customer_admin"], "read", "customer")
    # A full card number can never be stored as the payment reference.
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("UPDATE customers SET payment_reference = '4242424242424242' WHERE id = %s", (a.customer_id,))


def test_anonymised_aggregates_suppress_groups_under_k(client: TestClient, db: psycopg.Connection[Any],
                                                       database_url: str) -> None:
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    for i in range(8):  # six organisations in GB, two in DE
        reseller, customer = build_tenant(db, "Aggregator", f"Org {i}")
        root = build_site(db, customer, SiteSpec(f"Store {i}", timezone="Europe/London",
                                                 country="GB" if i < 6 else "DE", floor_area_m2=1000.0)).root
        db.execute("""INSERT INTO rollups_1h (node_id, bucket, energy_wh, mean_power_w, max_power_w, mean_current_a,
                      samples, coverage) VALUES (%s, %s, %s, 1, 1, 1, 1, 1)""", (root, hour, 10_000.0 * (i + 1)))
    uid = create_user(db, email=f"agg-{time.time_ns()}@example.com", password=None, role=Role.RESELLER_ADMIN,
                      reseller_id=reseller)
    token = issue_key(db, uid, ["admin"]).token
    params = {"from": (hour - timedelta(hours=1)).isoformat(), "to": (hour + timedelta(hours=2)).isoformat()}
    res = client.get("/v1/benchmarks/anonymised", params=params, headers=auth(token))
    assert res.status_code == 200, res.text
    data = res.json()
    assert data["k"] == 5 and data["suppressed_groups"] == 1
    [group] = data["groups"]
    assert (group["country"], group["sites"], group["organisations"]) == ("GB", 6, 6)
    assert group["kwh_per_m2_median"] == pytest.approx(0.035)  # 10..60 kWh over 1,000 m²
    assert "Org" not in res.text and "Store" not in res.text
    assert client.get("/v1/benchmarks/anonymised", params={**params, "k": 2}, headers=auth(token)).status_code == 422
    raised = client.get("/v1/benchmarks/anonymised", params={**params, "k": 7}, headers=auth(token)).json()
    assert raised["groups"] == [] and raised["suppressed_groups"] == 2
    out = run("privacy", "aggregates", "--from", params["from"][:19], "--to", params["to"][:19],
              env={"WATTLINE_DATABASE_URL": database_url})
    assert out.exit_code == 0, out.output
    assert orjson.loads(out.output)["groups"][0]["sites"] == 6
