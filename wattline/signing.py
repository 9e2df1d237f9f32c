"""The signature on everything Wattline POSTs to a tenant's receiver (webhooks, HTTPS exports).

Receivers verify `Wattline-Signature: t=<unix>,v1=<hex>` where
hex = HMAC-SHA256(secret, f"{t}.{raw body}"), and reject a stale `t` to stop replays.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time


def new_secret() -> str:
    """A signing secret for a new receiver (shown to its owner once)."""
    return "whsec_" + secrets.token_urlsafe(24)


def sign(secret: str, body: bytes, at: int | None = None) -> str:
    """The `Wattline-Signature` header for `body`, at `at` (default: now)."""
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
