"""The privacy notice's promises, as code: access (a machine-readable export of everything
held about a person), rectification, erasure by anonymisation, marketing consent per
channel, and anonymised aggregates that never describe fewer than k organisations.

Every read or change of a person's data is written to the audit log (`wattline.audit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import orjson
import psycopg
from psycopg import sql

from wattline import audit, people, queries
from wattline.db import fetch_all, fetch_one
from wattline.domain import Role
from wattline.opening_hours import opening_hours_between
from wattline.principal import Principal

Conn = psycopg.Connection[Any]
Channel = Literal["email", "sms", "phone", "post"]
CHANNELS: tuple[Channel, ...] = ("email", "sms", "phone", "post")
RECTIFIABLE = ("email", "full_name", "phone")
ERASED_DOMAIN = "erased.invalid"  # RFC 2606: can never be a real address


class PrivacyError(ValueError):
    """A request that cannot be carried out as asked (say, erasing an erased person)."""


def visible_user(conn: Conn, p: Principal, user_id: int) -> dict[str, Any] | None:
    """The user, if `p` is that user or an admin of their organisation (a reseller admin
    sees the reseller's own users and those of its customers)."""
    row = fetch_one(conn, """SELECT u.id, u.reseller_id, u.customer_id, c.reseller_id AS customer_reseller
                             FROM users u LEFT JOIN customers c ON c.id = u.customer_id WHERE u.id = %s""",
                    (user_id,))
    if row is None:
        return None
    if row["id"] == p.user_id:
        return row
    if not p.can("admin"):
        return None
    if p.reseller_id is not None and p.reseller_id in (row["reseller_id"], row["customer_reseller"]):
        return row
    if p.customer_id is not None and row["customer_id"] == p.customer_id and p.role is not Role.VIEWER:
        return row
    return None


def open_support_request(conn: Conn, p: Principal, subject: str, body: str) -> int:
    """A support request from the caller (personal data: kept per the support retention)."""
    row = fetch_one(conn, """INSERT INTO support_requests (customer_id, user_id, subject, body)
                             VALUES (%s, %s, %s, %s) RETURNING id""", (p.customer_id, p.user_id, subject, body))
    assert row is not None
    return int(row["id"])


def find_user(conn: Conn, user: str) -> int | None:
    """A user id from an id or an email address (for the CLI)."""
    if user.isdigit():
        row = fetch_one(conn, "SELECT id FROM users WHERE id = %s", (int(user),))
    else:
        row = fetch_one(conn, "SELECT id FROM users WHERE lower(email) = lower(%s)", (user,))
    return int(row["id"]) if row else None


# -- access -----------------------------------------------------------------------------------
def export_person(conn: Conn, user_id: int, actor: Principal | None, channel: str = "api") -> dict[str, Any]:
    """Everything held about a person, as JSON-ready data. The export is itself audited
    (before it is assembled, so that it lists its own entry)."""
    audit.record(conn, actor, "export", "user", user_id, via=channel)
    account = fetch_one(conn, """SELECT id, email, full_name, phone, role, reseller_id, customer_id, created_at,
                                        updated_at, disabled_at, erased_at, password_hash IS NOT NULL AS has_password,
                                        invited_at, password_changed_at, last_sign_in_at,
                                        totp_enabled_at AS two_factor_enabled_at
                                 FROM users WHERE id = %s""", (user_id,))
    if account is None:
        raise PrivacyError("no such user")
    has_password = account.pop("has_password")
    account["password"] = ("held only as an Argon2id hash, which is not exported and cannot be reversed"
                           if has_password else "none set")
    organisation: dict[str, Any] | None = None
    if account["customer_id"] is not None:
        organisation = fetch_one(conn, """SELECT 'customer' AS kind, id, name, billing_email, payment_reference,
                                                 card_last4 FROM customers WHERE id = %s""", (account["customer_id"],))
    elif account["reseller_id"] is not None:
        organisation = fetch_one(conn, "SELECT 'reseller' AS kind, id, name FROM resellers WHERE id = %s",
                                 (account["reseller_id"],))
    export = {
        "format": "wattline.personal-data-export/1",
        "generated_at": datetime.now(UTC),
        "account": account,
        "organisation": organisation,
        "api_keys": fetch_all(conn, """SELECT prefix, name, scopes, client, created_at, expires_at, revoked_at,
                                              last_used_at FROM api_keys WHERE user_id = %s ORDER BY id""", (user_id,)),
        "marketing_consents": {"current": consents(conn, user_id), "history": fetch_all(conn, """
            SELECT channel, granted, source, at FROM marketing_consents WHERE user_id = %s ORDER BY at, id""",
                                                                                    (user_id,))},
        "support_requests": fetch_all(conn, """SELECT id, subject, body, created_at, closed_at FROM support_requests
                                               WHERE user_id = %s ORDER BY id""", (user_id,)),
        "alert_actions": fetch_all(conn, """
            SELECT id AS alert_id, acknowledged_at, resolved_at FROM alert_episodes
            WHERE acknowledged_by = %(u)s OR resolved_by = %(u)s ORDER BY id""", {"u": user_id}),
        "notification_preferences": fetch_one(conn, """SELECT alert_email, digest_hour, quiet_start, quiet_end,
                                                              timezone, report_email, updated_at
                                                       FROM notification_preferences WHERE user_id = %s""",
                                              (user_id,)),
        "mail": fetch_all(conn, """SELECT kind, to_address, subject, created_at, sent_at FROM mail_outbox
                                   WHERE user_id = %s ORDER BY id""", (user_id,)),
        "audit_entries": fetch_all(conn, """
            SELECT at, actor_user_id, action, subject_type, subject_id, detail FROM audit_log
            WHERE actor_user_id = %(u)s OR (subject_type = 'user' AND subject_id = %(s)s) ORDER BY at, id""",
                                   {"u": user_id, "s": str(user_id)}),
    }
    # Through orjson once, so that what the API returns and what the CLI prints are the same.
    data: dict[str, Any] = orjson.loads(orjson.dumps(export, default=str))
    return data


# -- rectification ------------------------------------------------------------------------------
def rectify(conn: Conn, user_id: int, actor: Principal | None, changes: dict[str, str | None]) -> list[str]:
    """Correct contact details; returns the fields changed. The audit entry names the
    fields, not the old or new values."""
    fields = [f for f in RECTIFIABLE if f in changes]
    if not fields:
        return []
    if any(changes[f] is None for f in fields if f != "phone"):
        raise PrivacyError("email and name can be corrected, not removed (erasure removes them)")
    row = fetch_one(conn, "SELECT erased_at, reseller_id, customer_id FROM users WHERE id = %s", (user_id,))
    if row is None:
        raise PrivacyError("no such user")
    if row["erased_at"] is not None:
        raise PrivacyError("this account has been erased")
    if "email" in fields:
        # An address the organisation allows, like an invite's (raises Invalid on the email field).
        changes["email"] = people.check_email(conn, people.Org(row["reseller_id"], row["customer_id"]),
                                              changes["email"] or "")
    sets = sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(f), sql.Placeholder(f)) for f in fields)
    conn.execute(sql.SQL("UPDATE users SET {}, updated_at = now() WHERE id = %(id)s").format(sets),
                 {**{f: changes[f] for f in fields}, "id": user_id})
    audit.record(conn, actor, "rectify", "user", user_id, fields=fields)
    return fields


# -- erasure ----------------------------------------------------------------------------------
@dataclass
class Erasure:
    """What an erasure did, for the operator's record (counts only)."""
    user_id: int
    api_keys_revoked: int
    consents_removed: int
    support_requests_anonymised: int


def erase(conn: Conn, user_id: int, actor: Principal | None) -> Erasure:
    """Anonymise a person: contact fields replaced, password removed, account disabled, keys
    revoked, consents, support texts and mail to them removed. Usage data belongs to the organisation and
    stays; it was never tied to the person except through this account, which is now
    anonymous. The erasure is audited without the erased data."""
    with conn.transaction():
        row = fetch_one(conn, "SELECT erased_at FROM users WHERE id = %s FOR UPDATE", (user_id,))
        if row is None:
            raise PrivacyError("no such user")
        if row["erased_at"] is not None:
            raise PrivacyError("this account is already erased")
        conn.execute("""UPDATE users SET email = %s, full_name = '', phone = NULL, password_hash = NULL,
                               disabled_at = COALESCE(disabled_at, now()), erased_at = now(), updated_at = now()
                        WHERE id = %s""", (f"erased-user-{user_id}@{ERASED_DOMAIN}", user_id))
        keys = conn.execute("UPDATE api_keys SET revoked_at = now(), name = '' WHERE user_id = %s "
                            "AND revoked_at IS NULL", (user_id,)).rowcount
        conn.execute("UPDATE api_keys SET name = '' WHERE user_id = %s", (user_id,))
        consents_removed = conn.execute("DELETE FROM marketing_consents WHERE user_id = %s", (user_id,)).rowcount
        conn.execute("DELETE FROM mail_outbox WHERE user_id = %s", (user_id,))  # sent or not: their words
        conn.execute("""UPDATE users SET totp_secret = NULL, totp_enabled_at = NULL, totp_last_step = NULL
                        WHERE id = %s""", (user_id,))
        conn.execute("DELETE FROM totp_recovery_codes WHERE user_id = %s", (user_id,))
        conn.execute("DELETE FROM account_tokens WHERE user_id = %s", (user_id,))
        conn.execute("DELETE FROM notification_preferences WHERE user_id = %s", (user_id,))
        # Jobs they set up belong to the organisation and go on; failure notices go to nobody.
        conn.execute("UPDATE export_jobs SET created_by = NULL WHERE created_by = %s", (user_id,))
        support = conn.execute("""UPDATE support_requests SET subject = '[erased]', body = '', user_id = NULL
                                  WHERE user_id = %s""", (user_id,)).rowcount
        # Billing contact on the organisation, if it was this person's address.
        conn.execute("""UPDATE customers c SET billing_email = NULL FROM users u
                        WHERE u.id = %s AND c.id = u.customer_id AND c.billing_email IS NOT NULL
                          AND NOT EXISTS (SELECT 1 FROM users o WHERE o.customer_id = c.id AND o.id <> u.id
                                          AND lower(o.email) = lower(c.billing_email))
                          AND c.billing_email NOT LIKE '%%@' || %s""", (user_id, ERASED_DOMAIN))
        audit.record(conn, actor, "erase", "user", user_id,
                     fields=["email", "full_name", "phone", "password"], api_keys_revoked=keys,
                     consents_removed=consents_removed, support_requests_anonymised=support)
    return Erasure(user_id, keys, consents_removed, support)


# -- consent ----------------------------------------------------------------------------------
def consents(conn: Conn, user_id: int) -> dict[str, dict[str, Any]]:
    """The current state per channel: the latest decision, or not granted if none."""
    rows = fetch_all(conn, """SELECT DISTINCT ON (channel) channel, granted, source, at FROM marketing_consents
                              WHERE user_id = %s ORDER BY channel, at DESC, id DESC""", (user_id,))
    latest = {r["channel"]: r for r in rows}
    return {ch: {"granted": bool(latest[ch]["granted"]), "source": latest[ch]["source"], "at": latest[ch]["at"]}
            if ch in latest else {"granted": False, "source": None, "at": None} for ch in CHANNELS}


def set_consent(conn: Conn, user_id: int, actor: Principal | None, channel: Channel, granted: bool,
                source: str) -> None:
    """Append a decision; the latest one counts, from this moment (the audience query reads it)."""
    conn.execute("INSERT INTO marketing_consents (user_id, channel, granted, source) VALUES (%s, %s, %s, %s)",
                 (user_id, channel, granted, source))
    audit.record(conn, actor, "consent", "user", user_id, channel=channel, granted=granted, source=source)


def marketing_audience(conn: Conn, channel: Channel) -> list[int]:
    """Who may be sent marketing on a channel right now: latest decision granted, account live."""
    rows = fetch_all(conn, """
        SELECT u.id FROM users u JOIN LATERAL (
            SELECT granted FROM marketing_consents m WHERE m.user_id = u.id AND m.channel = %s
            ORDER BY at DESC, id DESC LIMIT 1) last ON true
        WHERE last.granted AND u.disabled_at IS NULL AND u.erased_at IS NULL ORDER BY u.id""", (channel,))
    return [r["id"] for r in rows]


# -- anonymised aggregates -------------------------------------------------------------------
AREA_BANDS = ((0.0, 500.0, "<500 m²"), (500.0, 2000.0, "500–2,000 m²"), (2000.0, 10000.0, "2,000–10,000 m²"),
              (10000.0, float("inf"), "≥10,000 m²"))


def _area_band(area: float) -> str:
    return next(label for lo, hi, label in AREA_BANDS if lo <= area < hi)


def anonymised_benchmark(conn: Conn, p: Principal | None, t_from: datetime, t_to: datetime,
                         k: int = 5) -> dict[str, Any]:
    """Energy intensity by country and floor-area band, across organisations. A group is
    published only when it holds at least k sites of at least k different customers
    (k-anonymity over organisations); otherwise only that it was suppressed. No names or
    ids leave. `p` None: every site on the platform (operator export)."""
    if k < 2:
        raise PrivacyError("k must be at least 2")
    if p is None:
        sites = fetch_all(conn, """SELECT id, customer_id, country, floor_area_m2, timezone, opening_hours
                                   FROM sites WHERE floor_area_m2 IS NOT NULL""")
    else:
        sites = [s for s in queries.sites(conn, p, limit=100_000) if s["floor_area_m2"]]
    energy = {r["site_id"]: r["wh"] for r in fetch_all(conn, """
        SELECT n.site_id, sum(r.energy_wh) AS wh FROM nodes n
        JOIN rollups_1h r ON r.node_id = n.id AND r.bucket >= %s AND r.bucket < %s
        WHERE n.kind = 'site' AND n.site_id = ANY(%s) GROUP BY n.site_id""",
        (t_from, t_to, [s["id"] for s in sites]))}
    groups: dict[tuple[str, str], list[tuple[int, float, float | None]]] = {}
    for s in sites:
        if s["id"] not in energy:
            continue
        kwh = energy[s["id"]] / 1000.0
        open_h = opening_hours_between(s["opening_hours"] or {}, s["timezone"], t_from, t_to)
        groups.setdefault((s["country"], _area_band(s["floor_area_m2"])), []).append(
            (s["customer_id"], kwh / s["floor_area_m2"], kwh / open_h if open_h else None))
    published, suppressed = [], 0
    for (country, band), members in sorted(groups.items()):
        customers = {m[0] for m in members}
        if len(members) < k or len(customers) < k:
            suppressed += 1
            continue
        per_m2 = np.array([m[1] for m in members])
        per_hour = [m[2] for m in members if m[2] is not None]
        published.append({
            "country": country, "floor_area_band": band, "sites": len(members), "organisations": len(customers),
            "kwh_per_m2_p25": float(np.percentile(per_m2, 25)), "kwh_per_m2_median": float(np.median(per_m2)),
            "kwh_per_m2_p75": float(np.percentile(per_m2, 75)),
            "kwh_per_opening_hour_median": float(np.median(per_hour)) if len(per_hour) >= k else None})
    return {"from": t_from.isoformat(), "to": t_to.isoformat(), "k": k, "groups": published,
            "suppressed_groups": suppressed}
