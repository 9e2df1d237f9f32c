"""No tenant can hurt another: a bad webhook, rule or site is refused at the door, and what
slips through (rows from before the checks, a name that resolves badly) fails on its own,
recorded and counted, while the service and every other tenant go on."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from alerts import store
from alerts.rules import SensorOffline
from alerts.webhooks import MAX_ATTEMPTS, SUSPEND_AFTER, deliver_due
from launcher.localstack import free_port
from tests.factories import Tenant, auth, count, wait_for
from tests.fixtures.receivers import Receiver

BAD_URL = "http://ȾÅZhS😍ÜGÍGh"


def queue_event(db: psycopg.Connection[Any], t: Tenant, webhook_id: int) -> None:
    """An alert event waiting for `webhook_id` (as the alert pass queues them)."""
    db.execute("""INSERT INTO webhook_deliveries (webhook_id, episode_id, event, payload)
                  VALUES (%s, %s, 'raised', '{"event": "raised"}')""", (webhook_id, t.alert_id))


def raw_webhook(db: psycopg.Connection[Any], customer_id: int, url: str) -> int:
    """A webhook row as one saved before URLs were checked."""
    row = db.execute("INSERT INTO webhooks (customer_id, url, secret) VALUES (%s, %s, 'whsec_0123456789abcdef') "
                     "RETURNING id", (customer_id, url)).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("url", [BAD_URL, "http://127.0.0.1:9/", "http://[::1]/x", "http://169.254.169.254/latest",
                                 "http://10.1.2.3/", "ftp://example.com/x", "http://user:pw@example.com/"])
def test_unsafe_or_invalid_webhook_urls_are_refused_at_the_door(client: TestClient, tenants: tuple[Tenant, Tenant],
                                                                url: str) -> None:
    a, _ = tenants
    res = client.post(f"/v1/customers/{a.customer_id}/webhooks", json={"url": url},
                      headers=auth(a.tokens["customer_admin"]))
    assert res.status_code == 422, res.text
    assert res.headers["content-type"] == "application/problem+json"


def test_a_bad_webhook_fails_alone_and_is_suspended(db: psycopg.Connection[Any], tenants: tuple[Tenant, Tenant],
                                                     receiver: Callable[[int], Receiver]) -> None:
    a, b = tenants
    good = receiver(0)
    bad_id = raw_webhook(db, a.customer_id, BAD_URL)
    private_id = raw_webhook(db, a.customer_id, "http://localhost:9/")  # a name that resolves to loopback
    good_id, _ = store.create_webhook(db, b.customer_id, good.url, allow_private=True)
    for hook in (bad_id, private_id, good_id):
        queue_event(db, a if hook != good_id else b, hook)
    with httpx.Client(timeout=5) as http:
        report = deliver_due(db, http, allow_private=False)
        assert report.delivered == 0  # the receiver is on loopback too: refused without the operator's setting
        db.execute("UPDATE webhook_deliveries SET next_attempt_at = now()")
        report = deliver_due(db, http, allow_private=True)
    assert report.delivered == 1 and len(good.received) == 1  # the other tenant's event arrives
    errors = dict(db.execute("SELECT id, last_error FROM webhooks WHERE id = ANY(%s)", ([bad_id, private_id],)))
    assert errors[bad_id].startswith("refused: not a valid URL")
    assert "ConnectError" in errors[private_id] or "refused" in errors[private_id]
    # It keeps failing: each delivery is given up after MAX_ATTEMPTS, and after SUSPEND_AFTER
    # deliveries in a row the webhook is suspended, with the reason: bounded work.
    with httpx.Client(timeout=5) as http:
        for n in range(SUSPEND_AFTER * MAX_ATTEMPTS + 5):
            if n % MAX_ATTEMPTS == 0:  # the next event for it
                db.execute("UPDATE webhook_deliveries SET failed_at = NULL, attempts = 0 WHERE webhook_id = %s",
                           (bad_id,))
            db.execute("UPDATE webhook_deliveries SET next_attempt_at = now() WHERE webhook_id = %s", (bad_id,))
            deliver_due(db, http)
    row = db.execute("SELECT suspended_at, suspended_reason, deliveries_given_up FROM webhooks WHERE id = %s",
                     (bad_id,)).fetchone()
    assert row is not None and row[0] is not None and row[2] == SUSPEND_AFTER
    assert f"{SUSPEND_AFTER} deliveries in a row failed every attempt" in row[1]
    before = db.execute("SELECT attempts FROM webhook_deliveries WHERE webhook_id = %s", (bad_id,)).fetchall()
    db.execute("UPDATE webhook_deliveries SET failed_at = NULL, next_attempt_at = now() WHERE webhook_id = %s",
               (bad_id,))
    with httpx.Client(timeout=5) as http:
        deliver_due(db, http)
    after = db.execute("SELECT attempts FROM webhook_deliveries WHERE webhook_id = %s", (bad_id,)).fetchall()
    assert after == before  # nothing is attempted while suspended


def test_the_api_shows_a_failing_webhook_and_resumes_it(client: TestClient, db: psycopg.Connection[Any],
                                                        tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    hook = raw_webhook(db, a.customer_id, BAD_URL)
    db.execute("""UPDATE webhooks SET last_error = 'refused: not a valid URL', failing_since = now(),
                  suspended_at = now(), suspended_reason = '24 failed attempts' WHERE id = %s""", (hook,))
    admin = auth(a.tokens["customer_admin"])
    listed = {w["id"]: w for w in client.get(f"/v1/customers/{a.customer_id}/webhooks", headers=admin).json()}
    assert listed[hook]["last_error"] == "refused: not a valid URL" and listed[hook]["suspended_at"]
    resumed = client.post(f"/v1/webhooks/{hook}/resume", headers=admin)
    assert resumed.status_code == 200 and resumed.json()["suspended_at"] is None


def test_the_alert_service_survives_a_bad_webhook_and_a_broken_rule(
        db: psycopg.Connection[Any], database_url: str, tenants: tuple[Tenant, Tenant], tmp_path: Path,
        receiver: Callable[[int], Receiver]) -> None:
    """The real `wattline alerts` process: what once killed it, and every later pass, now
    fails on its own. The other tenant's webhook is delivered and its rules evaluated."""
    a, b = tenants
    good = receiver(0)
    bad_id = raw_webhook(db, a.customer_id, BAD_URL)
    good_id, _ = store.create_webhook(db, b.customer_id, good.url, allow_private=True)
    queue_event(db, a, bad_id)
    queue_event(db, b, good_id)
    broken = store.create_rule(db, a.site_id, None, "Broken", SensorOffline())
    db.execute("UPDATE alert_rules SET params = '{\"kind\": \"sensor_offline\", \"intervals\": \"many\"}' "
               "WHERE id = %s", (broken,))  # as a row from an older release might hold
    fine = store.create_rule(db, b.site_id, None, "Fine", SensorOffline())
    port = free_port()
    env = {**os.environ, "WATTLINE_DATABASE_URL": database_url, "WATTLINE_ALERTS_HEALTH_PORT": str(port),
           "WATTLINE_ALERTS_PERIOD_S": "0.5", "WATTLINE_ALLOW_PRIVATE_DESTINATIONS": "true"}
    log = tmp_path / "alerts.log"
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "alerts"], env=env,
                            stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    try:
        wait_for(lambda: len(good.received) >= 1 or proc.poll() is not None, 60)
        assert good.received, log.read_text()  # (the other tenant's episodes may add their own events)
        wait_for(lambda: count(db, "SELECT count(*) FROM alert_rules WHERE id = %s AND evaluated_to IS NOT NULL",
                               fine) == 1, 60)
        wait_for(lambda: count(db, "SELECT count(*) FROM alert_rules WHERE id = %s AND last_error IS NOT NULL",
                               broken) == 1, 60)
        passes = wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()["passes"] >= 3, 60)
        assert passes and proc.poll() is None  # still serving, pass after pass
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        assert "wattline_alerts_rule_errors_total" in metrics
    finally:
        proc.terminate()
        proc.wait(30)
    bad = db.execute("SELECT last_error FROM webhooks WHERE id = %s", (bad_id,)).fetchone()
    assert bad is not None and bad[0].startswith("refused")


def test_the_api_shows_why_a_rule_fails(client: TestClient, db: psycopg.Connection[Any],
                                        tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    db.execute("UPDATE alert_rules SET last_error = 'ValidationError: intervals', failing_since = now() "
               "WHERE id = %s", (a.rule_id,))
    rule = client.get(f"/v1/alert-rules/{a.rule_id}", headers=auth(a.tokens["viewer"])).json()
    assert rule["last_error"] == "ValidationError: intervals" and rule["failing_since"]


@pytest.mark.parametrize("hours", [{"mon": ["abc", "def"]}, {"mon": ["19:00", "07:00"]}, {"mon": ["07:00", "24:30"]},
                                   {"funday": ["07:00", "19:00"]}, {"mon": ["07:00"]}])
def test_opening_hours_are_typed(client: TestClient, tenants: tuple[Tenant, Tenant], hours: dict[str, Any]) -> None:
    a, _ = tenants
    admin = auth(a.tokens["customer_admin"])
    res = client.post("/v1/sites", json={"name": "New", "opening_hours": hours}, headers=admin)
    assert res.status_code == 422, res.text
    res = client.patch(f"/v1/sites/{a.site_id}", json={"opening_hours": hours}, headers=admin)
    assert res.status_code == 422, res.text


def test_a_bad_stored_opening_hours_row_does_not_break_the_benchmark(client: TestClient, db: psycopg.Connection[Any],
                                                                      tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    db.execute("""UPDATE sites SET opening_hours = '{"mon": ["abc", "def"], "tue": ["07:00", "19:00"]}'
                  WHERE id = %s""", (a.site_id,))
    res = client.get(f"/v1/customers/{a.customer_id}/benchmark", headers=auth(a.tokens["viewer"]),
                     params={"from": "2026-11-02T00:00:00Z", "to": "2026-11-04T00:00:00Z"})
    assert res.status_code == 200, res.text
    assert res.json()[0]["opening_hours"] == pytest.approx(12.0)  # Tuesday counts, the bad Monday is closed


def test_registration_tells_nobody_which_bridges_other_tenants_own(client: TestClient,
                                                                   tenants: tuple[Tenant, Tenant]) -> None:
    from wattline.catalogue import bridge_claim_code

    a, b = tenants
    key = client.app.state.settings.claim_key  # type: ignore[attr-defined]
    admin = auth(a.tokens["customer_admin"])
    url = f"/v1/sites/{a.site_id}/bridges"
    foreign = client.post(url, json={"serial": b.bridge_serial, "claim_code": "AAAA-AAAA-AAAA"}, headers=admin)
    unknown = client.post(url, json={"serial": "BR-NEVER-SEEN", "claim_code": "AAAA-AAAA-AAAA"}, headers=admin)
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json()["detail"] == unknown.json()["detail"]
    # The holder of a label may register it; the label of a bridge registered elsewhere says so.
    fresh = client.post(url, json={"serial": "BR-NEVER-SEEN", "claim_code": bridge_claim_code("BR-NEVER-SEEN", key)},
                        headers=admin)
    assert fresh.status_code == 201
    held = client.post(url, json={"serial": b.bridge_serial, "claim_code": bridge_claim_code(b.bridge_serial, key)},
                       headers=admin)
    assert held.status_code == 409
    # Whatever is typed into the code field, the answer is a clear one (the fuzzer once found a 500).
    assert client.post(url, json={"serial": "BR-X", "claim_code": "ÅÅÅ"}, headers=admin).status_code == 422
    from wattline import catalogue
    from wattline.errors import NotFound

    with client.app.state.pool.connection() as conn, pytest.raises(NotFound):  # type: ignore[attr-defined]
        catalogue.register_bridge(conn, None, a.site_id, "BR-X", claim_code="ñ-\x00", claim_key=key,
                                  credential_key=b"k")


def test_assignment_tells_nobody_which_sensors_other_tenants_have(client: TestClient,
                                                                  tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    installer = auth(a.tokens["installer"])
    body = {"node_id": a.circuit_id, "phase": 2, "ct_rating_a": 50, "bridge_id": a.bridge_id}
    foreign = client.put(f"/v1/sensors/{b.discovered_serial}/assignment", json=body, headers=installer)
    never_heard = client.put("/v1/sensors/CT-NEVER-HEARD/assignment", json=body, headers=installer)
    assert foreign.status_code == never_heard.status_code == 404
    assert foreign.json()["detail"] == never_heard.json()["detail"] == "no such sensor"
    # Heard through one of the caller's bridges: assignable.
    ours = client.put(f"/v1/sensors/{a.discovered_serial}/assignment", json=body, headers=installer)
    assert ours.status_code == 200, ours.text


def test_an_empty_range_has_an_empty_answer(client: TestClient, tenants: tuple[Tenant, Tenant]) -> None:
    """The schema allows from == to; the answer is empty, not a 422 (or a 500)."""
    a, _ = tenants
    h = auth(a.tokens["customer_admin"])
    at = {"from": "2026-11-02T00:00:00Z", "to": "2026-11-02T00:00:00Z"}
    for url in (f"/v1/nodes/{a.circuit_id}/measurements", f"/v1/sites/{a.site_id}/measurements",
                f"/v1/sensors/{a.sensor_serial}/measurements"):
        res = client.get(url, params=at, headers=h)
        assert res.status_code == 200 and res.json() == [], (url, res.text)
    usage = client.get(f"/v1/sites/{a.site_id}/usage", params=at, headers=h)
    assert usage.status_code == 200 and all(n["energy_wh"] == 0 for n in usage.json())
    cost = client.get(f"/v1/sites/{a.site_id}/cost", params=at, headers=h)
    assert cost.status_code == 200, cost.text
    bench = client.get(f"/v1/customers/{a.customer_id}/benchmark", params=at, headers=h)
    assert bench.status_code == 200, bench.text
    backwards = client.get(f"/v1/sites/{a.site_id}/usage", params={"from": at["to"], "to": "2026-11-01T00:00:00Z"},
                           headers=h)
    assert backwards.status_code == 422
