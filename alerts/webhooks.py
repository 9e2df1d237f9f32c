"""Outgoing webhooks: signed with HMAC-SHA256, delivered from the outbox, retried with
exponential back-off across restarts (the schedule lives in the table, not in memory).

Signed as `wattline.signing` says (the same signature as HTTPS exports)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import orjson
import psycopg
import structlog

from wattline.db import fetch_all, fetch_tuples
from wattline.outbound import UnsafeDestination, pin
from wattline.signing import sign

log = structlog.get_logger("wattline.webhooks")

MAX_ATTEMPTS = 8
BASE_DELAY_S = 5.0
MAX_DELAY_S = 3600.0


def backoff(attempts: int) -> float:
    """Seconds before attempt `attempts + 1`: 5 s doubling to an hour, with ±20 % jitter so
    that a receiver coming back is not hit by every retry at once."""
    delay = min(MAX_DELAY_S, BASE_DELAY_S * 2 ** max(0, attempts - 1))
    return float(delay * random.uniform(0.8, 1.2))


@dataclass
class DeliveryReport:
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    suspended: int = 0  # webhooks suspended in this pass


#: A webhook is suspended once this many of its deliveries in a row were given up (each after
#: MAX_ATTEMPTS attempts over about an hour): a dead receiver costs bounded work, and its
#: owner sees why. A delivery that gets through resets the count.
SUSPEND_AFTER = 3


def deliver_due(conn: psycopg.Connection[Any], client: httpx.Client, limit: int = 100, *,
                allow_private: bool = False) -> DeliveryReport:
    """Send the deliveries that are due. Each is locked (SKIP LOCKED) in its own short
    transaction, so several schedulers can share the outbox. Whatever one delivery raises
    is recorded against it and its webhook; the others go on."""
    report = DeliveryReport()
    for _ in range(limit):
        picked: list[int] = []
        try:
            if not _deliver_one(conn, client, allow_private, report, picked):
                break
        except Exception as exc:
            if conn.broken or conn.closed or not picked:
                raise  # the connection itself: the service reconnects
            report.failed += 1
            log.error("webhook_delivery_error", delivery=picked[0], error=type(exc).__name__)
            conn.execute("UPDATE webhook_deliveries SET failed_at = now(), last_error = %s WHERE id = %s",
                         (f"internal error: {type(exc).__name__}", picked[0]))
    return report


def _deliver_one(conn: psycopg.Connection[Any], client: httpx.Client, allow_private: bool, report: DeliveryReport,
                 picked: list[int]) -> bool:
    with conn.transaction():
        rows = fetch_all(conn, """
            SELECT d.id, d.webhook_id, d.event, d.payload, d.attempts, w.url, w.secret
            FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
            WHERE d.delivered_at IS NULL AND d.failed_at IS NULL AND d.next_attempt_at <= now() AND w.enabled
              AND w.suspended_at IS NULL
            ORDER BY d.next_attempt_at LIMIT 1 FOR UPDATE OF d SKIP LOCKED""")
        if not rows:
            return False
        d = rows[0]
        picked.append(d["id"])
        error = _attempt(client, d, allow_private)
        attempts = d["attempts"] + 1
        if error is None:
            conn.execute("UPDATE webhook_deliveries SET delivered_at = now(), attempts = %s, last_error = NULL "
                         "WHERE id = %s", (attempts, d["id"]))
            conn.execute("UPDATE webhooks SET last_error = NULL, failing_since = NULL, deliveries_given_up = 0 "
                         "WHERE id = %s", (d["webhook_id"],))
            report.delivered += 1
            return True
        if attempts >= MAX_ATTEMPTS:
            conn.execute("UPDATE webhook_deliveries SET failed_at = now(), attempts = %s, last_error = %s "
                         "WHERE id = %s", (attempts, error, d["id"]))
            report.failed += 1
            log.warning("webhook_gave_up", delivery=d["id"], attempts=attempts, error=error)
        else:
            delay = timedelta(seconds=backoff(attempts))
            conn.execute("UPDATE webhook_deliveries SET attempts = %s, last_error = %s, "
                         "next_attempt_at = now() + %s WHERE id = %s", (attempts, error, delay, d["id"]))
            report.retried += 1
        if _webhook_failed(conn, d["webhook_id"], error, given_up=attempts >= MAX_ATTEMPTS):
            report.suspended += 1
            log.warning("webhook_suspended", webhook=d["webhook_id"], error=error)
        return True


def _webhook_failed(conn: psycopg.Connection[Any], webhook_id: int, error: str, *, given_up: bool) -> bool:
    """Record a failed attempt on the webhook (and a give-up); True if that suspends it."""
    rows = fetch_tuples(conn, """
        UPDATE webhooks SET last_error = %(error)s::text, failing_since = COALESCE(failing_since, now()),
               deliveries_given_up = deliveries_given_up + %(given_up)s::int,
               suspended_at = CASE WHEN deliveries_given_up + %(given_up)s::int >= %(limit)s::int THEN now() END,
               suspended_reason = CASE WHEN deliveries_given_up + %(given_up)s::int >= %(limit)s::int
                   THEN format('%%s deliveries in a row failed every attempt, since %%s; last error: %%s',
                               deliveries_given_up + %(given_up)s::int,
                               to_char(COALESCE(failing_since, now()) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI "UTC"'),
                               %(error)s::text) END
        WHERE id = %(id)s RETURNING suspended_at""",
        {"error": error, "given_up": int(given_up), "limit": SUSPEND_AFTER, "id": webhook_id})
    return bool(rows) and rows[0][0] is not None


def _attempt(client: httpx.Client, d: dict[str, Any], allow_private: bool) -> str | None:
    """One delivery attempt: None when the receiver took it, else why not. Never raises."""
    try:
        target = pin(d["url"], allow_private=allow_private)  # checked again, after DNS
        body = orjson.dumps(d["payload"])
        headers = {**target.headers, "Content-Type": "application/json", "User-Agent": "Wattline-Webhooks/1",
                   "Wattline-Event": f"alert.{d['event']}", "Wattline-Delivery": str(d["id"]),
                   "Wattline-Signature": sign(d["secret"], body)}
        res = client.post(target.url, content=body, headers=headers, extensions=target.extensions)
    except UnsafeDestination as exc:
        return _clean(f"refused: {exc.detail}")
    except Exception as exc:  # InvalidURL, TLS, UnicodeError, …: a tenant's URL fails its own delivery only
        return _clean(f"{type(exc).__name__}: {exc}")
    if 200 <= res.status_code < 300:
        return None
    return f"HTTP {res.status_code}"


def _clean(error: str) -> str:
    """An error fit to store: PostgreSQL text holds no NUL, and a line is enough."""
    return error.replace("\x00", "")[:500]
