"""How each person wants to hear from Wattline, and what an unsubscribe link does.

Preferences: alert mail as it happens, as one daily digest, or not at all; quiet hours
(local to the person) that hold immediate alert mail back; monthly report mail on or off.
The in-app notification centre always shows everything.

Every message carries a signed one-click unsubscribe link (RFC 8058) for its category
(`wattline.mail`). Following it suppresses that category for the address, whether or not it
has an account, turns the matching preference off for a person who has one, and withdraws
their marketing consent by email: someone who asked for less mail has not asked for offers.
"""

from __future__ import annotations

from datetime import time
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg

from wattline import audit, mail, privacy
from wattline.db import fetch_all, fetch_one
from wattline.errors import Invalid
from wattline.principal import Principal

AlertEmail = Literal["immediate", "digest", "off"]
DEFAULTS: dict[str, Any] = {"alert_email": "immediate", "digest_hour": 7, "quiet_start": None, "quiet_end": None,
                            "timezone": "UTC", "report_email": True}


def preferences(conn: psycopg.Connection[Any], user_id: int) -> dict[str, Any]:
    """A person's preferences (the defaults until they choose), and what they unsubscribed from."""
    row = fetch_one(conn, """SELECT alert_email, digest_hour, quiet_start, quiet_end, timezone, report_email
                             FROM notification_preferences WHERE user_id = %s""", (user_id,))
    out = dict(row) if row else dict(DEFAULTS)
    email = fetch_one(conn, "SELECT email FROM users WHERE id = %s", (user_id,))
    out["unsubscribed"] = [r["category"] for r in fetch_all(
        conn, "SELECT category FROM mail_suppressions WHERE address_digest = %s ORDER BY category",
        (mail.address_digest(email["email"]) if email else "",))]
    return out


def set_preferences(conn: psycopg.Connection[Any], actor: Principal | None, user_id: int, *,
                    alert_email: AlertEmail, digest_hour: int = 7, quiet_start: time | None = None,
                    quiet_end: time | None = None, timezone: str = "UTC", report_email: bool = True) -> dict[str, Any]:
    """Set a person's preferences. Choosing to receive a category again lifts an unsubscribe from it."""
    if alert_email not in ("immediate", "digest", "off"):
        raise Invalid("Invalid preference", "alert mail is immediate, digest or off", field="alert_email")
    if not 0 <= digest_hour <= 23:
        raise Invalid("Invalid preference", "the digest goes out at an hour from 0 to 23", field="digest_hour")
    if (quiet_start is None) != (quiet_end is None) or (quiet_start is not None and quiet_start == quiet_end):
        raise Invalid("Invalid preference", "quiet hours need a start and a different end", field="quiet_hours")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise Invalid("Invalid preference", f"unknown time zone {timezone!r}", field="timezone") from exc
    with conn.transaction():
        conn.execute("""INSERT INTO notification_preferences (user_id, alert_email, digest_hour, quiet_start,
                                                               quiet_end, timezone, report_email)
                        VALUES (%s, %s, %s, %s, %s, %s, %s)
                        ON CONFLICT (user_id) DO UPDATE SET alert_email = EXCLUDED.alert_email,
                            digest_hour = EXCLUDED.digest_hour, quiet_start = EXCLUDED.quiet_start,
                            quiet_end = EXCLUDED.quiet_end, timezone = EXCLUDED.timezone,
                            report_email = EXCLUDED.report_email, updated_at = now()""",
                     (user_id, alert_email, digest_hour, quiet_start, quiet_end, timezone, report_email))
        email = fetch_one(conn, "SELECT email FROM users WHERE id = %s", (user_id,))
        assert email is not None
        lifted = [c for c, on in (("alerts", alert_email != "off"), ("reports", report_email)) if on]
        conn.execute("DELETE FROM mail_suppressions WHERE address_digest = %s AND category = ANY(%s)",
                     (mail.address_digest(email["email"]), lifted))
        audit.record(conn, actor, "set_notifications", "user", user_id, alert_email=alert_email,
                     report_email=report_email)
    return preferences(conn, user_id)


def unsubscribe(conn: psycopg.Connection[Any], address: str, category: str) -> None:
    """What a signed unsubscribe link does (the caller has checked its signature)."""
    with conn.transaction():
        conn.execute("""INSERT INTO mail_suppressions (address_digest, category) VALUES (%s, %s)
                        ON CONFLICT DO NOTHING""", (mail.address_digest(address), category))
        person = fetch_one(conn, "SELECT id FROM users WHERE lower(email) = lower(%s)", (address,))
        if person is None:
            return
        if category in ("alerts", "reports"):
            conn.execute("INSERT INTO notification_preferences (user_id) VALUES (%s) ON CONFLICT DO NOTHING",
                         (person["id"],))
            conn.execute("""UPDATE notification_preferences SET updated_at = now(),
                                alert_email = CASE WHEN %(c)s = 'alerts' THEN 'off' ELSE alert_email END,
                                report_email = CASE WHEN %(c)s = 'reports' THEN false ELSE report_email END
                            WHERE user_id = %(u)s""", {"c": category, "u": person["id"]})
        if privacy.consents(conn, person["id"])["email"]["granted"]:
            privacy.set_consent(conn, person["id"], None, "email", False, "unsubscribe link")
        audit.record(conn, None, "unsubscribe", "user", person["id"], category=category)
