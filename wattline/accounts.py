"""Users, passwords and API keys.

Passwords are argon2id hashes (never stored as given). API keys look like
`wl_AbCd1234.<secret>`: the prefix is stored in the clear so a key can be found and
shown, the secret only as a SHA-256 digest; it is high-entropy random, so a slow hash
would add latency to every request without adding safety.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from wattline.db import fetch_all, fetch_one
from wattline.domain import Role

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
_ALPHABET = string.ascii_letters + string.digits
SCOPES = ("read", "write", "commission", "admin")
#: What each role may do at most; a key's scopes are cut to its user's role.
ROLE_SCOPES: dict[Role, frozenset[str]] = {
    Role.RESELLER_ADMIN: frozenset(SCOPES),
    Role.CUSTOMER_ADMIN: frozenset(SCOPES),
    Role.FACILITY_MANAGER: frozenset({"read", "write"}),
    Role.INSTALLER: frozenset({"read", "commission"}),
    Role.VIEWER: frozenset({"read"}),
}
DEMO_EMAIL = "demo@wattline.example"
DEMO_PASSWORD = "wattline-demo"  # noqa: S105 - the documented demo login of `wattline up`


def hash_password(password: str) -> str:
    """An argon2id hash of the password (never reversible)."""
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether the password matches the stored hash (False for no hash)."""
    if not stored_hash:
        _hasher.hash(password)  # same time whether or not the account exists
        return False
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class Principal:
    """Who is calling, and what they may see: exactly one of reseller_id / customer_id."""

    user_id: int
    role: Role
    reseller_id: int | None
    customer_id: int | None
    scopes: frozenset[str] = field(default_factory=frozenset)
    key_id: int | None = None

    def can(self, scope: str) -> bool:
        """Whether the credentials carry this scope (admin carries every scope)."""
        return scope in self.scopes or "admin" in self.scopes


def _principal(row: dict[str, Any], scopes: frozenset[str], key_id: int | None) -> Principal:
    role = Role(row["role"])
    return Principal(row["id"], role, row["reseller_id"], row["customer_id"], scopes & ROLE_SCOPES[role], key_id)


def create_user(conn: psycopg.Connection[Any], *, email: str, password: str | None, role: Role,
                reseller_id: int | None = None, customer_id: int | None = None, full_name: str = "") -> int:
    """A user of a reseller or a customer; `password` None leaves the login unusable."""
    row = fetch_one(
        conn, """INSERT INTO users (email, password_hash, role, reseller_id, customer_id, full_name)
                 VALUES (%s, %s, %s, %s, %s, %s) RETURNING id""",
        (email, hash_password(password) if password else None, role.value, reseller_id, customer_id, full_name))
    assert row is not None
    return int(row["id"])


def authenticate_password(conn: psycopg.Connection[Any], email: str, password: str) -> Principal | None:
    """The user's principal if the email and password match an enabled account."""
    row = fetch_one(conn, """SELECT id, role, reseller_id, customer_id, password_hash FROM users
                        WHERE lower(email) = lower(%s) AND disabled_at IS NULL""", (email,))
    if not verify_password(row["password_hash"] if row else None, password) or row is None:
        return None
    if _hasher.check_needs_rehash(row["password_hash"]):
        conn.execute("UPDATE users SET password_hash = %s WHERE id = %s", (hash_password(password), row["id"]))
    return _principal(row, ROLE_SCOPES[Role(row["role"])], None)


@dataclass(frozen=True)
class IssuedKey:
    """A key as issued: the token is shown to the user once and never stored."""
    id: int
    prefix: str
    token: str  # shown once; only its digest is kept
    scopes: tuple[str, ...]
    expires_at: datetime | None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_key(conn: psycopg.Connection[Any], user_id: int, scopes: list[str], *, name: str = "",
              ttl: timedelta | None = None) -> IssuedKey:
    """A new API key (or login session with `ttl`) for the user, with these scopes."""
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"scopes must be a non-empty subset of {SCOPES}")
    prefix = "wl_" + "".join(secrets.choice(_ALPHABET) for _ in range(8))
    secret = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + ttl if ttl else None
    row = fetch_one(
        conn, """INSERT INTO api_keys (user_id, prefix, secret_hash, name, scopes, expires_at)
                 VALUES (%s, %s, %s, %s, %s, %s) RETURNING id""",
        (user_id, prefix, _digest(secret), name, sorted(set(scopes)), expires))
    assert row is not None
    return IssuedKey(int(row["id"]), prefix, f"{prefix}.{secret}",
                     tuple(sorted(set(scopes))), expires)


def authenticate_key(conn: psycopg.Connection[Any], token: str) -> Principal | None:
    """The principal of a valid, unexpired, unrevoked token, or None."""
    prefix, _, secret = token.partition(".")
    if not prefix.startswith("wl_") or not secret:
        return None
    row = fetch_one(conn, """SELECT k.id AS key_id, k.secret_hash, k.scopes, u.id, u.role, u.reseller_id, u.customer_id
                        FROM api_keys k JOIN users u ON u.id = k.user_id
                        WHERE k.prefix = %s AND k.revoked_at IS NULL AND u.disabled_at IS NULL
                          AND (k.expires_at IS NULL OR k.expires_at > now())""", (prefix,))
    if row is None or not hmac.compare_digest(row["secret_hash"], _digest(secret)):
        return None
    conn.execute("UPDATE api_keys SET last_used_at = now() WHERE id = %s AND "
                 "(last_used_at IS NULL OR last_used_at < now() - interval '1 minute')", (row["key_id"],))
    return _principal(row, frozenset(row["scopes"]), row["key_id"])


def api_keys(conn: psycopg.Connection[Any], user_id: int) -> list[dict[str, Any]]:
    """A user's API keys and login sessions (never their secrets)."""
    return fetch_all(conn, """SELECT id, prefix, name, scopes, expires_at, revoked_at, last_used_at, created_at
                              FROM api_keys WHERE user_id = %s ORDER BY id""", (user_id,))


def revoke_key(conn: psycopg.Connection[Any], user_id: int, key_id: int) -> bool:
    """Revoke one of the user's keys at once; False if the user has no such key."""
    row = fetch_one(conn, "UPDATE api_keys SET revoked_at = now() WHERE id = %s AND user_id = %s RETURNING id",
                    (key_id, user_id))
    return row is not None


def ensure_demo_users(conn: psycopg.Connection[Any]) -> None:
    """The demo logins of `wattline up`: a facility manager and an installer of the demo customer."""
    customer = fetch_one(conn, "SELECT id FROM customers ORDER BY id LIMIT 1")
    reseller = fetch_one(conn, "SELECT id FROM resellers ORDER BY id LIMIT 1")
    if customer is None or reseller is None:
        return
    cid, rid = customer["id"], reseller["id"]
    for email, role, scope in ((DEMO_EMAIL, Role.CUSTOMER_ADMIN, {"customer_id": cid}),
                               ("installer@wattline.example", Role.INSTALLER, {"customer_id": cid}),
                               ("reseller@wattline.example", Role.RESELLER_ADMIN, {"reseller_id": rid})):
        exists = conn.execute("SELECT 1 FROM users WHERE lower(email) = %s", (email,)).fetchone()
        if not exists:
            create_user(conn, email=email, password=DEMO_PASSWORD, role=role, **scope)
