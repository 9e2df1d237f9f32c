"""Each bridge's MQTT credential: issued at registration, rotated, revoked.

The username is the bridge's serial, and the broker binds it to the client id of the same
name, so a bridge can neither publish under another's topics nor take over another's
session. The password is shown once, when issued. It is derived, not stored:
HMAC-SHA256 of the serial and a per-issue random nonce under a key derived from the
deployment's secret key. The broker sync (`ingest/broker_security.py`) derives it again to
apply it, and to apply it anew when a broker has lost its state; the database alone
reveals no password. Changing `WATTLINE_SECRET_KEY` therefore changes every bridge's
password: rotate them all afterwards.

Writes here only record what the broker should hold; the sync applies it within seconds
and records what it applied (`applied_*`), so a broker that is down delays a revocation
and never loses it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from wattline import audit
from wattline.db import fetch_one
from wattline.errors import NotFound
from wattline.principal import Principal
from wattline.senml import SENML_TOPIC, STATUS_TOPIC

Conn = psycopg.Connection[Any]

PASSWORD_CHARS = 32  # of base64url: 192 bits


def credential_key(secret_key: str) -> bytes:
    """The key bridge passwords are derived under (from the deployment's secret key)."""
    return hmac.new(secret_key.encode(), b"wattline bridge mqtt passwords", hashlib.sha256).digest()


def derive_password(key: bytes, username: str, nonce: bytes) -> str:
    """The password of one issue of a bridge's credential."""
    digest = hmac.new(key, username.encode() + b"\0" + nonce, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()[:PASSWORD_CHARS]


@dataclass(frozen=True)
class Credential:
    """What a bridge is configured with; `password` is shown to the user once."""

    username: str
    password: str
    generation: int

    @property
    def client_id(self) -> str:
        """The broker accepts the credential under this client id only."""
        return self.username

    @property
    def senml_topic(self) -> str:
        """Where the bridge publishes its packs."""
        return SENML_TOPIC.format(bridge=self.username)

    @property
    def status_topic(self) -> str:
        """Where the bridge publishes online/offline (its last will)."""
        return STATUS_TOPIC.format(bridge=self.username)


@dataclass(frozen=True)
class CredentialState:
    """A bridge's credential without its password: for listings."""

    username: str
    generation: int
    issued_at: datetime
    revoked_at: datetime | None
    applied: bool  # the broker holds what the row says
    last_error: str | None
    paused_until: datetime | None = None  # refused until then: it reconnected in a tight loop
    pauses: int = 0


@dataclass(frozen=True)
class BrokerChange:
    """One change the broker sync must apply: a (new) password, or removal (`password` None)."""

    username: str
    generation: int
    password: str | None


def issue(conn: Conn, actor: Principal | None, bridge_id: int, *, key: bytes) -> Credential:
    """Issue the bridge's credential, or rotate it: a fresh password replaces the old one,
    which stops working (and its live session is closed) once the broker sync applies it."""
    nonce = secrets.token_bytes(16)
    with conn.transaction():
        bridge = fetch_one(conn, "SELECT serial FROM bridges WHERE id = %s FOR UPDATE", (bridge_id,))
        if bridge is None:
            raise NotFound("bridge")
        row = fetch_one(conn, """
            INSERT INTO bridge_credentials (username, bridge_id, nonce) VALUES (%s, %s, %s)
            ON CONFLICT (username) DO UPDATE
               SET bridge_id = EXCLUDED.bridge_id, nonce = EXCLUDED.nonce, revoked_at = NULL, issued_at = now(),
                   generation = bridge_credentials.generation + 1, attempts = 0, last_error = NULL,
                   pause_released = true  -- the client is made anew, enabled
            RETURNING generation""", (bridge["serial"], bridge_id, nonce))
        assert row is not None
        audit.record(conn, actor, "issue_credential", "bridge", bridge_id, generation=row["generation"])
    return Credential(bridge["serial"], derive_password(key, bridge["serial"], nonce), row["generation"])


def revoke(conn: Conn, actor: Principal | None, bridge_id: int) -> None:
    """Revoke the bridge's credential: the broker sync removes it and closes its session."""
    with conn.transaction():
        row = fetch_one(conn, """UPDATE bridge_credentials SET revoked_at = now(), attempts = 0, last_error = NULL
                                 WHERE bridge_id = %s AND revoked_at IS NULL RETURNING generation""", (bridge_id,))
        if row is None:
            raise NotFound("credential of that bridge")
        audit.record(conn, actor, "revoke_credential", "bridge", bridge_id, generation=row["generation"])


def state(conn: Conn, bridge_id: int) -> CredentialState | None:
    """The bridge's credential, without its password; None if none was ever issued."""
    row = fetch_one(conn, """SELECT username, generation, issued_at, revoked_at, last_error,
                                    applied_generation = generation AND applied_revoked = (revoked_at IS NOT NULL)
                                    AS applied,
                                    CASE WHEN NOT pause_released AND paused_until > now() THEN paused_until END
                                    AS paused_until, pauses
                             FROM bridge_credentials WHERE bridge_id = %s""", (bridge_id,))
    return None if row is None else CredentialState(**row)


def pending(conn: Conn, key: bytes, *, limit: int = 500) -> list[BrokerChange]:
    """Changes the broker has not been told yet, the least-tried first."""
    # The WHERE is the partial index's predicate, word for word, so the index serves it.
    rows = conn.execute("""SELECT username, generation, nonce, revoked_at IS NOT NULL OR bridge_id IS NULL
                           FROM bridge_credentials
                           WHERE applied_generation <> generation
                              OR applied_revoked <> (revoked_at IS NOT NULL OR bridge_id IS NULL)
                           ORDER BY attempts, username LIMIT %s""", (limit,)).fetchall()
    return [_change(key, *row) for row in rows]


def active(conn: Conn, key: bytes) -> list[BrokerChange]:
    """Every credential the broker should hold (a full reconciliation's target)."""
    rows = conn.execute("""SELECT username, generation, nonce, false FROM bridge_credentials
                           WHERE revoked_at IS NULL AND bridge_id IS NOT NULL""").fetchall()
    return [_change(key, *row) for row in rows]


def _change(key: bytes, username: str, generation: int, nonce: bytes, removed: bool) -> BrokerChange:
    return BrokerChange(username, generation, None if removed else derive_password(key, username, bytes(nonce)))


def mark_applied(conn: Conn, change: BrokerChange) -> None:
    """The broker holds `change`. A removal of a deleted bridge's credential also drops its row.
    A row rotated again meanwhile stays pending (its generation moved on)."""
    if change.password is None:
        conn.execute("DELETE FROM bridge_credentials WHERE username = %s AND bridge_id IS NULL", (change.username,))
    conn.execute("""UPDATE bridge_credentials SET applied_generation = %s, applied_revoked = %s, applied_at = now(),
                           last_error = NULL
                    WHERE username = %s AND generation = %s""",
                 (change.generation, change.password is None, change.username, change.generation))


def mark_failed(conn: Conn, change: BrokerChange, error: str) -> None:
    """The broker refused `change`: recorded against it, retried after the others."""
    conn.execute("UPDATE bridge_credentials SET attempts = attempts + 1, last_error = %s WHERE username = %s",
                 (error[:500], change.username))


def pause(conn: Conn, username: str, *, first_s: float, longest_s: float = 3600.0) -> datetime | None:
    """Pause the sign-in of a bridge that reconnects in a tight loop: the broker sync
    disables its client until the returned time. A pause within an hour of the last one
    lasts twice as long (up to `longest_s`). None: `username` holds no live bridge
    credential (a service client, a revoked or deleted bridge), so nothing is paused."""
    with conn.transaction():
        # SET expressions all read the row as it was, so the level is worked out twice alike.
        row = fetch_one(conn, """
            UPDATE bridge_credentials SET
                pause_level = CASE WHEN paused_until > now() - interval '1 hour' THEN pause_level + 1 ELSE 0 END,
                paused_until = now() + make_interval(secs => least(%(longest)s, %(first)s * power(2, least(30,
                    CASE WHEN paused_until > now() - interval '1 hour' THEN pause_level + 1 ELSE 0 END)))),
                pause_released = false, pauses = pauses + 1
            WHERE username = %(username)s AND revoked_at IS NULL AND bridge_id IS NOT NULL
            RETURNING bridge_id, paused_until, extract(epoch FROM paused_until - now())::float8 AS seconds""",
                        {"username": username, "first": first_s, "longest": longest_s})
        if row is None:
            return None
        audit.record(conn, None, "pause_sign_in", "bridge", row["bridge_id"], seconds=row["seconds"],
                     reason="reconnecting in a tight loop")
    return row["paused_until"]  # type: ignore[no-any-return]


def paused(conn: Conn) -> list[str]:
    """Usernames whose pause the broker still enforces (a reconciliation disables them again)."""
    rows = conn.execute("""SELECT username FROM bridge_credentials
                           WHERE NOT pause_released AND revoked_at IS NULL AND bridge_id IS NOT NULL""").fetchall()
    return [r[0] for r in rows]


def pauses_due(conn: Conn) -> list[str]:
    """Usernames whose pause has run out: the broker sync enables them again."""
    rows = conn.execute("""SELECT username FROM bridge_credentials WHERE NOT pause_released AND paused_until <= now()
                           ORDER BY paused_until""").fetchall()
    return [r[0] for r in rows]


def mark_released(conn: Conn, username: str) -> None:
    """The broker has enabled the client again."""
    conn.execute("UPDATE bridge_credentials SET pause_released = true WHERE username = %s", (username,))
