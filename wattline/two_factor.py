"""Two-factor sign-in: TOTP (RFC 6238, pyotp) with one-time recovery codes.

Enrolment stores a secret, and only a first correct code turns it on, so a mistyped scan
cannot lock anyone out. A code is accepted once: the last accepted 30-s step is kept, and
an older or equal step is refused (a code seen over a shoulder cannot be replayed). Recovery
codes are 80-bit random, kept as SHA-256 digests (like API keys: a slow hash adds nothing
to that entropy) and each used once.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import psycopg
import pyotp

from wattline import audit
from wattline.db import fetch_all, fetch_one
from wattline.errors import Conflict, Invalid, NotFound
from wattline.principal import Principal

ISSUER = "Wattline"
RECOVERY_CODES = 10
#: One step either side: a phone clock 30 s off still signs in.
VALID_WINDOW = 1
STEP_S = 30


class WrongCode(Invalid):
    """A two-factor code that is not right now (or was used already)."""

    def __init__(self) -> None:
        """One message for a wrong, stale or replayed code."""
        super().__init__("Wrong code", "that code is not right; enter the 6 digits your app shows now", field="code")


@dataclass(frozen=True)
class Enrolment:
    """What the person scans: the secret as text, as an otpauth:// URI and as a QR code (an SVG data: URI)."""

    secret: str
    uri: str
    qr_data_uri: str


def _digest(code: str) -> str:
    return hashlib.sha256(code.replace("-", "").replace(" ", "").lower().encode()).hexdigest()


def status(conn: psycopg.Connection[Any], user_id: int) -> dict[str, Any]:
    """Whether two-factor sign-in is on, since when, and how many recovery codes are left."""
    row = fetch_one(conn, """SELECT totp_enabled_at, (SELECT count(*) FROM totp_recovery_codes r
                                                     WHERE r.user_id = u.id AND r.used_at IS NULL) AS codes_left
                             FROM users u WHERE id = %s""", (user_id,))
    if row is None:
        return {"enabled": False, "enabled_at": None, "recovery_codes_left": 0}
    return {"enabled": row["totp_enabled_at"] is not None, "enabled_at": row["totp_enabled_at"],
            "recovery_codes_left": int(row["codes_left"]) if row["totp_enabled_at"] else 0}


def begin(conn: psycopg.Connection[Any], user_id: int) -> Enrolment:
    """A new secret for the user to scan; two-factor stays off until `confirm`."""
    row = fetch_one(conn, "SELECT email, totp_enabled_at FROM users WHERE id = %s", (user_id,))
    if row is None:
        raise NotFound("user")
    if row["totp_enabled_at"] is not None:
        raise Conflict("two-factor sign-in is already on; turn it off first to enrol a new phone")
    secret = pyotp.random_base32()
    conn.execute("UPDATE users SET totp_secret = %s, totp_last_step = NULL WHERE id = %s", (secret, user_id))
    uri = pyotp.TOTP(secret).provisioning_uri(name=row["email"], issuer_name=ISSUER)
    import segno  # only at enrolment: ~8 MB that a serving process need not carry
    return Enrolment(secret, uri, segno.make(uri, error="m").svg_data_uri(scale=4, dark="#10202a"))


def _check_totp(conn: psycopg.Connection[Any], user_id: int, secret: str, last_step: int | None, code: str) -> bool:
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return False
    totp, now = pyotp.TOTP(secret), time.time()
    for offset in range(-VALID_WINDOW, VALID_WINDOW + 1):
        at = now + offset * STEP_S
        step = int(at // STEP_S)
        if (last_step is None or step > last_step) and secrets.compare_digest(totp.at(at), code):
            # Compare-and-set: of two requests with the same code, only one moves the step on.
            moved = conn.execute("""UPDATE users SET totp_last_step = %s WHERE id = %s
                                    AND (totp_last_step IS NULL OR totp_last_step < %s)""",
                                 (step, user_id, step)).rowcount
            return moved == 1
    return False


def confirm(conn: psycopg.Connection[Any], actor: Principal | None, user_id: int, code: str) -> list[str]:
    """Turn two-factor on with a first correct code; returns the recovery codes, shown once."""
    row = fetch_one(conn, "SELECT totp_secret, totp_enabled_at, totp_last_step FROM users WHERE id = %s",
                    (user_id,))
    if row is None or row["totp_secret"] is None:
        raise Invalid("Not enrolled", "start two-factor set-up first", field="code")
    if row["totp_enabled_at"] is not None:
        raise Conflict("two-factor sign-in is already on")
    with conn.transaction():
        if not _check_totp(conn, user_id, row["totp_secret"], row["totp_last_step"], code):
            raise WrongCode()
        conn.execute("UPDATE users SET totp_enabled_at = now() WHERE id = %s", (user_id,))
        codes = _new_recovery_codes(conn, user_id)
        audit.record(conn, actor, "enable_totp", "user", user_id)
    return codes


def _new_recovery_codes(conn: psycopg.Connection[Any], user_id: int) -> list[str]:
    conn.execute("DELETE FROM totp_recovery_codes WHERE user_id = %s", (user_id,))
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = secrets.token_hex(10)  # 80 bits
        codes.append("-".join(raw[i:i + 5] for i in range(0, 20, 5)))
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO totp_recovery_codes (user_id, code_hash) VALUES (%s, %s)",
                        [(user_id, _digest(c)) for c in codes])
    return codes


def new_recovery_codes(conn: psycopg.Connection[Any], actor: Principal | None, user_id: int) -> list[str]:
    """Replace the user's recovery codes (the old ones stop working); shown once."""
    if not status(conn, user_id)["enabled"]:
        raise Conflict("two-factor sign-in is off")
    with conn.transaction():
        codes = _new_recovery_codes(conn, user_id)
        audit.record(conn, actor, "new_recovery_codes", "user", user_id)
    return codes


def verify(conn: psycopg.Connection[Any], user_id: int, code: str) -> bool:
    """Whether `code` is the user's current TOTP code or an unused recovery code (then spent)."""
    row = fetch_one(conn, "SELECT totp_secret, totp_last_step FROM users WHERE id = %s AND totp_enabled_at IS NOT NULL",
                    (user_id,))
    if row is None:
        return False
    if _check_totp(conn, user_id, row["totp_secret"], row["totp_last_step"], code):
        return True
    spent = fetch_one(conn, """UPDATE totp_recovery_codes SET used_at = now()
                               WHERE user_id = %s AND code_hash = %s AND used_at IS NULL RETURNING id""",
                      (user_id, _digest(code)))
    if spent is not None:
        audit.record(conn, None, "use_recovery_code", "user", user_id)
    return spent is not None


def turn_off(conn: psycopg.Connection[Any], actor: Principal | None, user_id: int) -> None:
    """Two-factor off for the user (themselves with a code checked by the caller, or an admin
    for someone who lost phone and codes); codes and secret are deleted."""
    with conn.transaction():
        conn.execute("""UPDATE users SET totp_secret = NULL, totp_enabled_at = NULL, totp_last_step = NULL
                        WHERE id = %s""", (user_id,))
        conn.execute("DELETE FROM totp_recovery_codes WHERE user_id = %s", (user_id,))
        audit.record(conn, actor, "disable_totp", "user", user_id)


def recovery_codes_used(conn: psycopg.Connection[Any], user_id: int) -> list[dict[str, Any]]:
    """When each spent recovery code was used (for the person's own export)."""
    return fetch_all(conn, "SELECT used_at FROM totp_recovery_codes WHERE user_id = %s AND used_at IS NOT NULL",
                     (user_id,))
