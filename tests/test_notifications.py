"""Notification preferences and one-click unsubscribe: every message read back from a real
SMTP server carries a signed RFC 8058 link; a mail client's one-click POST to a real
dashboard server stops that category for the address (and only that one), turns the
person's preference off and withdraws their marketing consent; a forged link does nothing;
security mail the person asked for still goes; choosing a category again lifts it."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.factories import Tenant, auth, count
from tests.fixtures.receivers import SmtpServer
from wattline import mail, privacy
from wattline.settings import Settings


@pytest.fixture(autouse=True)
def fresh_address_budget() -> None:
    from wattline.accounts import ADDRESS_FAILURES

    ADDRESS_FAILURES.reset()


def test_every_message_carries_a_signed_one_click_unsubscribe(
        db: psycopg.Connection[Any], database_url: str, smtp_server: SmtpServer,
        serve_dashboard: Callable[..., str], tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    base = serve_dashboard()
    viewer = a.user_ids["viewer"]
    email = db.execute("SELECT email FROM users WHERE id = %s", (viewer,)).fetchone()[0]
    privacy.set_consent(db, viewer, None, "email", True, "signup form")
    mail.queue(db, kind="alert", to=email, user_id=viewer, subject="Freezer tripped", text="0 A since 02:00",
               html="<p>0 A since 02:00</p>", category="alerts")
    mail.queue(db, kind="report", to=email, user_id=viewer, subject="November report", text="Attached",
               category="reports")
    settings = Settings(database_url=database_url, public_url=base, **smtp_server.settings())
    assert mail.send_due(db, settings).sent == 2
    by_subject = {str(m["Subject"]): m for m in smtp_server.messages()}
    alert, report = by_subject["Freezer tripped"], by_subject["November report"]
    assert alert["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    [link] = re.findall(r"<(https?://[^>]+)>", str(alert["List-Unsubscribe"]))
    assert link.startswith(base + "/unsubscribe/alerts/")
    text, html = alert.get_body(("plain",)), alert.get_body(("html",))
    assert text is not None and f"To stop alert mail from Wattline: {link}" in text.get_content()
    assert html is not None and "unsubscribe</a>" in html.get_content()
    # A forged or altered link does nothing.
    assert httpx.post(link[:-4] + "AAAA", data={"List-Unsubscribe": "One-Click"}).status_code == 404
    assert httpx.post(link.replace("/alerts/", "/reports/"), data={"List-Unsubscribe": "One-Click"}).status_code == 404
    # Opening it shows a button (a link scanner's GET unsubscribes nobody); the client's POST does it.
    page = httpx.get(link)
    assert page.status_code == 200 and 'id="unsubscribe"' in page.text
    assert count(db, "SELECT count(*) FROM mail_suppressions") == 0
    done = httpx.post(link, data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200 and "no more alert mail" in done.text
    assert count(db, "SELECT count(*) FROM mail_suppressions WHERE category = 'alerts'") == 1
    # Alert mail to the address stops; report mail and security mail go on.
    assert mail.queue(db, kind="alert", to=email.upper(), subject="x", text="y", category="alerts") is None
    assert mail.queue(db, kind="report", to=email, subject="x", text="y", category="reports") is not None
    assert mail.queue(db, kind="password_reset", to=email, subject="x", text="y", category="security") is not None
    # The person's preference says so, and their marketing consent by email is withdrawn.
    prefs = db.execute("SELECT alert_email, report_email FROM notification_preferences WHERE user_id = %s",
                       (viewer,)).fetchone()
    assert prefs == ("off", True)
    assert privacy.consents(db, viewer)["email"]["granted"] is False
    assert report["List-Unsubscribe"] is not None and "/unsubscribe/reports/" in str(report["List-Unsubscribe"])


def test_preferences_through_the_api(client: TestClient, tenants: tuple[Tenant, Tenant],
                                     db: psycopg.Connection[Any]) -> None:
    a, _ = tenants
    me = auth(a.tokens["viewer"])
    assert client.get("/v1/me/notifications", headers=me).json() == {
        "alert_email": "immediate", "digest_hour": 7, "quiet_start": None, "quiet_end": None, "timezone": "UTC",
        "report_email": True, "unsubscribed": []}
    for bad, field in (({"timezone": "Mars/Olympus"}, "timezone"), ({"quiet_start": "22:00"}, "quiet_hours"),
                       ({"quiet_start": "22:00", "quiet_end": "22:00"}, "quiet_hours")):
        res = client.put("/v1/me/notifications", headers=me, json=bad)
        assert (res.status_code, res.json().get("field")) == (422, field), bad
    assert client.put("/v1/me/notifications", headers=me, json={"alert_email": "digest", "digest_hour": 8}
                      ).status_code == 200
    # Unsubscribed by link, then chosen again: the unsubscribe is lifted.
    email = db.execute("SELECT email FROM users WHERE id = %s", (a.user_ids["viewer"],)).fetchone()[0]
    from wattline import notifications

    notifications.unsubscribe(db, email, "alerts")
    got = client.get("/v1/me/notifications", headers=me).json()
    assert (got["alert_email"], got["unsubscribed"]) == ("off", ["alerts"])
    res = client.put("/v1/me/notifications", headers=me, json={
        "alert_email": "immediate", "quiet_start": "22:00", "quiet_end": "07:00", "timezone": "Europe/London"})
    assert res.json()["unsubscribed"] == [] and res.json()["quiet_start"] == "22:00:00"
    assert mail.queue(db, kind="alert", to=email, subject="x", text="y", category="alerts") is not None
    # In the person's own data export.
    export = client.get("/v1/me/export", headers=me).json()
    assert export["notification_preferences"]["quiet_end"] == "07:00:00"
