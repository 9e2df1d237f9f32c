"""Alert mail, read back from a real SMTP server: each episode that opens and clears reaches
the rule's recipients as each chose. Immediate mail says what, where (site › panel ›
circuit), since when and how much, and links to the chart; quiet hours hold it in the
outbox; a digest comes once a day at the person's hour; "off" sends nothing; a plain address
gets each event; the 51st alert mail to one address within an hour starts a summary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
from fastapi.testclient import TestClient

from alerts import episodes, notify
from alerts.scheduler import run_pass
from tests.factories import Tenant, auth, count, drain, write_surges
from tests.fixtures.receivers import SmtpServer
from wattline import mail, notifications
from wattline.accounts import create_user
from wattline.domain import Role
from wattline.settings import Settings

LONDON = ZoneInfo("Europe/London")


def person(db: psycopg.Connection[Any], t: Tenant, name: str, **prefs: Any) -> int:
    uid = create_user(db, email=f"{name}@example.com", password=None, role=Role.FACILITY_MANAGER,
                      customer_id=t.customer_id, full_name=name.title())
    if prefs:
        notifications.set_preferences(db, None, uid, **prefs)
    return uid


def test_alert_mail_by_preference(client: TestClient, tenants: tuple[Tenant, Tenant], db: psycopg.Connection[Any],
                                  database_url: str, smtp_server: SmtpServer) -> None:
    a, _ = tenants
    now = datetime.now(UTC)
    local_now = now.astimezone(LONDON)
    # The digest is due at the next local hour, which must still be today: from 23:00 in
    # London it would be 00:00, already past, and the digest due at once (CI ran at 23:0x
    # once). Then the digest's reader lives in New York, where it is evening.
    digest_zone = "Europe/London" if local_now.hour < 23 else "America/New_York"
    quiet = ((local_now - timedelta(hours=1)).time().replace(second=0, microsecond=0),
             (local_now + timedelta(hours=2)).time().replace(second=0, microsecond=0))
    eager = person(db, a, "eager", alert_email="immediate")
    sleepy = person(db, a, "sleepy", alert_email="immediate", quiet_start=quiet[0], quiet_end=quiet[1],
                    timezone="Europe/London")
    digest = person(db, a, "digest", alert_email="digest",
                    digest_hour=(now.astimezone(ZoneInfo(digest_zone)).hour + 1) % 24, timezone=digest_zone)
    silent = person(db, a, "silent", alert_email="off")
    start = (local_now.replace(minute=0, second=0, microsecond=0) - timedelta(days=2)).replace(hour=10)
    write_surges(database_url, a.sensor_serial, a.bridge_serial, [start])
    drain(db)
    db.execute("UPDATE alert_rules SET enabled = false")  # the tenants' own rules are not this test's
    res = client.post(f"/v1/sites/{a.site_id}/alert-rules", headers=auth(a.tokens["facility_manager"]), json={
        "name": "Chiller surge", "node_id": a.circuit_id, "severity": "critical",
        "params": {"kind": "threshold", "above_w": 5000, "hold_minutes": 15},
        "recipients": {"user_ids": [eager, sleepy, digest, silent], "emails": ["oncall@elsewhere.example"]}})
    assert res.status_code == 201, res.text
    settings = Settings(database_url=database_url, public_url="https://wattline.example", alerts_settle_s=60.0,
                        alerts_first_lookback_h=24 * 7, **smtp_server.settings())
    with httpx.Client() as http:
        report = run_pass(db, settings, http, now=now)
    assert report.errors == 0 and report.raised == 1 and report.cleared == 1
    assert report.alert_mail.events == 2 and report.alert_mail.failed == 0
    received = smtp_server.messages()
    # Immediate: eager and the plain address, raised and cleared each. Sleepy's wait; digest's are held.
    assert sorted((str(m["To"]), str(m["Subject"]).strip().split("]")[0]) for m in received) == [
        ("eager@example.com", "[cleared"), ("eager@example.com", "[critical"),
        ("oncall@elsewhere.example", "[cleared"), ("oncall@elsewhere.example", "[critical")]
    raised = next(m for m in received if m["To"] == "eager@example.com" and "[critical]" in str(m["Subject"]))
    text = raised.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Chiller surge (critical)" in text and "above 5000 W" in text
    assert "Where:    Site A › MSB › Chiller A" in text
    assert f"Since:    {start:%Y-%m-%d %H:%M} Europe/London" in text
    assert "How much: peak 11,500 W" in text
    assert f"See the chart: https://wattline.example/site/{a.site_id}" in text
    assert "/unsubscribe/alerts/" in str(raised["List-Unsubscribe"])
    # Quiet hours: in the outbox until they end.
    waiting = db.execute("""SELECT count(*), min(next_attempt_at) FROM mail_outbox
                            WHERE user_id = %s AND sent_at IS NULL""", (sleepy,)).fetchone()
    assert waiting is not None and waiting[0] == 2
    assert abs((waiting[1] - datetime.combine((local_now + timedelta(hours=2)).date(), quiet[1], LONDON)
                ).total_seconds()) < 1
    assert count(db, "SELECT count(*) FROM mail_outbox WHERE user_id = %s", silent) == 0
    # The digest: nothing before its hour, one message at it, listing both events; once a day.
    held = notify.NotifyReport()
    notify.send_held(db, settings.dashboard_url, now, held)
    assert held.digests == 0
    at_hour = (local_now + timedelta(hours=1)).replace(minute=5)
    notify.send_held(db, settings.dashboard_url, at_hour.astimezone(UTC), held)
    assert held.digests == 1
    mail.send_due(db, settings)
    [digest_mail] = [m for m in smtp_server.messages() if m["To"] == "digest@example.com"]
    body = digest_mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "2 event(s)" in str(digest_mail["Subject"]) and body.count("Chiller surge") == 2
    notify.send_held(db, settings.dashboard_url, (at_hour + timedelta(minutes=30)).astimezone(UTC), held)
    assert held.digests == 1
    # Each event was processed once: another pass sends nothing new.
    with httpx.Client() as http:
        again = run_pass(db, settings, http, now=now + timedelta(minutes=1))
    assert again.alert_mail.events == 0 and again.mail.sent == 0


def test_a_storm_becomes_one_summary(tenants: tuple[Tenant, Tenant], db: psycopg.Connection[Any],
                                     database_url: str, smtp_server: SmtpServer) -> None:
    a, _ = tenants
    db.execute("UPDATE alert_rules SET recipient_emails = '{storm@example.com}' WHERE id = %s", (a.rule_id,))
    now = datetime.now(UTC)
    for k in range(60):
        row = db.execute("""INSERT INTO alert_episodes (rule_id, subject, message, started_at)
                            VALUES (%s, %s, %s, %s) RETURNING id""",
                         (a.rule_id, f"s{k}", f"surge {k}", now - timedelta(minutes=59) + timedelta(seconds=k))
                         ).fetchone()
        assert row is not None
        episodes.enqueue(db, row[0], "raised")
    settings = Settings(database_url=database_url, **smtp_server.settings())
    report = notify.process(db, settings, now)
    assert (report.events, report.queued, report.held) >= (60, 50, 10)
    assert count(db, "SELECT count(*) FROM mail_outbox WHERE to_address = 'storm@example.com'") == 50
    # An hour after the first held one, the rest go as one summary.
    later = notify.NotifyReport()
    notify.send_held(db, settings.dashboard_url, now + timedelta(minutes=61), later)
    assert later.summaries == 1
    summary = db.execute("""SELECT subject, body_text FROM mail_outbox WHERE kind = 'alert_summary'""").fetchone()
    assert summary is not None and summary[0].startswith("10 more alerts within an hour")
    assert summary[1].count("surge ") == 10
