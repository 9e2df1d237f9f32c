"""Outgoing webhooks: signed with HMAC-SHA256, delivered from the outbox, retried with
exponential back-off across restarts (the schedule lives in the table, not in memory).

Receivers verify `Wattline-Signature: t=<unix>,v1=<hex>` where
hex = HMAC-SHA256(secret, f"{t}.{raw body}"), and reject stale `t` to stop replays."""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import orjson
import psycopg
import structlog

from wattline.db import fetch_all

log = structlog.get_logger("wattline.webhooks")

MAX_ATTEMPTS = 8
BASE_DELAY_S = 5.0
MAX_DELAY_S = 3600.0


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(24)


def sign(secret: str, body: bytes, at: int | None = None) -> str:
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, body: bytes, header: str, tolerance_s: int = 300, now: float | None = None) -> bool:
    """What a receiver does; our tests use it as the receiver would."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now or time.time()) - t) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, t), header)


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


def deliver_due(conn: psycopg.Connection[Any], client: httpx.Client, limit: int = 100) -> DeliveryReport:
    """Send the deliveries that are due. Each is locked (SKIP LOCKED) in its own short
    transaction, so several schedulers can share the outbox."""
    report = DeliveryReport()
    for _ in range(limit):
        with conn.transaction():
            rows = fetch_all(conn, """
                SELECT d.id, d.event, d.payload, d.attempts, w.url, w.secret
                FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
                WHERE d.delivered_at IS NULL AND d.failed_at IS NULL AND d.next_attempt_at <= now() AND w.enabled
                ORDER BY d.next_attempt_at LIMIT 1 FOR UPDATE OF d SKIP LOCKED""")
            if not rows:
                break
            d = rows[0]
            body = orjson.dumps(d["payload"])
            error = _post(client, d["url"], d["secret"], body, d["id"], d["event"])
            attempts = d["attempts"] + 1
            if error is None:
                conn.execute("UPDATE webhook_deliveries SET delivered_at = now(), attempts = %s, last_error = NULL "
                             "WHERE id = %s", (attempts, d["id"]))
                report.delivered += 1
            elif attempts >= MAX_ATTEMPTS:
                conn.execute("UPDATE webhook_deliveries SET failed_at = now(), attempts = %s, last_error = %s "
                             "WHERE id = %s", (attempts, error, d["id"]))
                report.failed += 1
                log.warning("webhook_gave_up", delivery=d["id"], attempts=attempts, error=error)
            else:
                delay = timedelta(seconds=backoff(attempts))
                conn.execute("UPDATE webhook_deliveries SET attempts = %s, last_error = %s, "
                             "next_attempt_at = now() + %s WHERE id = %s", (attempts, error, delay, d["id"]))
                report.retried += 1
    return report


def _post(client: httpx.Client, url: str, secret: str, body: bytes, delivery_id: int, event: str) -> str | None:
    headers = {"Content-Type": "application/json", "User-Agent": "Wattline-Webhooks/1",
               "Wattline-Event": f"alert.{event}", "Wattline-Delivery": str(delivery_id),
               "Wattline-Signature": sign(secret, body)}
    try:
        res = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= res.status_code < 300:
        return None
    return f"HTTP {res.status_code}"
