"""The alert-rule builder through the API: severity, schedule and recipients are kept and
checked (another tenant's person or webhook does not exist); a backtest over four weeks
shows what the rule would have raised, matching the surges written into the data, and
stores nothing; the schedule holds in the scheduler's own evaluation; a rule's webhooks
are the only ones told; a rule's history lists its episodes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
from fastapi.testclient import TestClient

from alerts.scheduler import run_pass
from tests.factories import Tenant, auth, count, drain, write_surges
from wattline.settings import Settings

LONDON = ZoneInfo("Europe/London")
SURGE_A = 50.0  # 11.5 kW at 230 V, PF 1


def surges(database_url: str, t: Tenant) -> list[datetime]:
    """An hour of 50 A at 10:00 local three days ago and at 02:00 local two days ago, 2 A between."""
    today = datetime.now(LONDON).replace(hour=0, minute=0, second=0, microsecond=0)
    starts = [(today - timedelta(days=3)).replace(hour=10), (today - timedelta(days=2)).replace(hour=2)]
    write_surges(database_url, t.sensor_serial, t.bridge_serial, starts, SURGE_A)
    return starts


THRESHOLD = {"kind": "threshold", "above_w": 5000, "hold_minutes": 15}


def test_a_backtest_shows_what_the_rule_would_have_raised_and_stores_nothing(
        client: TestClient, tenants: tuple[Tenant, Tenant], db: psycopg.Connection[Any], database_url: str) -> None:
    a, b = tenants
    starts = surges(database_url, a)
    drain(db)
    url = f"/v1/sites/{a.site_id}/alert-rules/backtest"
    before = count(db, "SELECT count(*) FROM alert_episodes")
    res = client.post(url, headers=auth(a.tokens["viewer"]), json={"node_id": a.circuit_id, "params": THRESHOLD})
    assert res.status_code == 200, res.text
    found = res.json()
    assert not found["present_only"]
    assert datetime.fromisoformat(found["from"]) <= datetime.now(UTC) - timedelta(days=27)
    assert [datetime.fromisoformat(e["start"]) for e in found["episodes"]] == [s.astimezone(UTC) for s in starts]
    assert all(datetime.fromisoformat(e["end"]) == s.astimezone(UTC) + timedelta(hours=1)
               for e, s in zip(found["episodes"], starts, strict=True))
    assert "above 5000 W" in found["episodes"][0]["message"]
    # Armed in working hours only: the night surge would not have been raised.
    res = client.post(url, headers=auth(a.tokens["viewer"]), json={
        "node_id": a.circuit_id, "params": THRESHOLD, "schedule": {"hours": ["08:00", "18:00"]}})
    assert [datetime.fromisoformat(e["start"]) for e in res.json()["episodes"]] == [starts[0].astimezone(UTC)]
    assert count(db, "SELECT count(*) FROM alert_episodes") == before  # nothing stored
    # Bad input names its field; another tenant's node or site is not there.
    res = client.post(url, headers=auth(a.tokens["viewer"]), json={"params": {"kind": "threshold"}})
    assert res.status_code == 422
    res = client.post(url, headers=auth(a.tokens["viewer"]), json={"node_id": b.circuit_id, "params": THRESHOLD})
    assert (res.status_code, res.json()["field"]) == (404, "node_id")
    res = client.post(url, headers=auth(a.tokens["installer"]), json={"params": {"kind": "budget", "cap": "10"}})
    assert res.status_code == 403


def test_severity_schedule_and_recipients_are_kept_and_hold_in_the_scheduler(
        client: TestClient, tenants: tuple[Tenant, Tenant], db: psycopg.Connection[Any], database_url: str) -> None:
    a, b = tenants
    fm = auth(a.tokens["facility_manager"])
    starts = surges(database_url, a)
    drain(db)
    second_hook = client.post(f"/v1/customers/{a.customer_id}/webhooks", headers=auth(a.tokens["customer_admin"]),
                              json={"url": "https://example.com/hooks/second"}).json()["id"]
    rule = {"name": "Surge in working hours", "node_id": a.circuit_id, "params": THRESHOLD, "severity": "critical",
            "schedule": {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "hours": ["08:00", "18:00"]},
            "recipients": {"user_ids": [a.user_ids["facility_manager"]], "emails": ["ops@acme.example"],
                           "webhook_ids": [second_hook]}}
    # Another tenant's person or webhook, or a bad address, is refused on the recipients.
    for wrong in ({"user_ids": [b.user_ids["viewer"]]}, {"webhook_ids": [b.webhook_id]}):
        res = client.post(f"/v1/sites/{a.site_id}/alert-rules", headers=fm, json={**rule, "recipients": wrong})
        assert (res.status_code, res.json()["field"]) == (404, "recipients")
    res = client.post(f"/v1/sites/{a.site_id}/alert-rules", headers=fm,
                      json={**rule, "recipients": {"emails": ["not an address"]}})
    assert res.status_code == 422
    res = client.post(f"/v1/sites/{a.site_id}/alert-rules", headers=fm, json=rule)
    assert res.status_code == 201, res.text
    rule_id = res.json()["id"]
    kept = client.get(f"/v1/alert-rules/{rule_id}", headers=fm).json()
    assert (kept["severity"], kept["schedule"]["hours"], kept["recipients"]) == (
        "critical", ["08:00", "18:00"], {"user_ids": [a.user_ids["facility_manager"]], "emails": ["ops@acme.example"],
                                         "webhook_ids": [second_hook]})
    # The scheduler raises only the surge inside the schedule, as critical, and tells only the rule's webhook.
    settings = Settings(database_url=database_url, alerts_first_lookback_h=24 * 28, alerts_settle_s=60.0)
    with httpx.Client() as http:
        assert run_pass(db, settings, http).errors == 0
    history = client.get(f"/v1/alert-rules/{rule_id}/episodes", headers=fm).json()
    assert [(datetime.fromisoformat(e["started_at"]), e["severity"]) for e in history] == [
        (starts[0].astimezone(UTC), "critical")]
    hooks = db.execute("""SELECT DISTINCT d.webhook_id FROM webhook_deliveries d JOIN alert_episodes e
                          ON e.id = d.episode_id WHERE e.rule_id = %s""", (rule_id,)).fetchall()
    assert hooks == [(second_hook,)]
    # Always armed from now on (schedule: null); absent fields stay as they are.
    assert client.patch(f"/v1/alert-rules/{rule_id}", headers=fm, json={"schedule": None}).status_code == 200
    kept = client.get(f"/v1/alert-rules/{rule_id}", headers=fm).json()
    assert kept["schedule"] is None and kept["severity"] == "critical" and kept["recipients"]["emails"]
    # A bridge-offline rule is critical unless its author says otherwise.
    res = client.post(f"/v1/sites/{a.site_id}/alert-rules", headers=fm,
                      json={"name": "Bridge", "params": {"kind": "bridge_offline"}})
    assert client.get(f"/v1/alert-rules/{res.json()['id']}", headers=fm).json()["severity"] == "critical"
