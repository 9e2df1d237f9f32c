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
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from wattline import audit, mail, two_factor
from wattline.db import fetch_all, fetch_one
from wattline.domain import Role
from wattline.errors import DomainError
from wattline.principal import Principal

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


#: argon2id takes 64 MiB a hash: a login flood must queue, not multiply memory.
HASH_SLOTS = 2
HASH_WAIT_S = 10.0
_hash_slots = threading.BoundedSemaphore(HASH_SLOTS)


class Overloaded(DomainError):
    """Too much work at once (hashing slots all busy); try again shortly."""

    title = "Service unavailable"
    retry_after_s = 5


class LoginRefused(DomainError):
    """Wrong email or password: the same answer whether or not the account exists."""

    title = "Unauthorized"

    def __init__(self, detail: str = "wrong email or password") -> None:
        """One message for every wrong login (and one for every wrong second factor)."""
        super().__init__(detail)


class LoginThrottled(DomainError):
    """Too many failed logins for this account or from this address; `retry_after_s` says when."""

    title = "Too many requests"

    def __init__(self, detail: str, retry_after_s: float) -> None:
        """`retry_after_s`: seconds until an attempt is considered again."""
        super().__init__(detail)
        self.retry_after_s = max(1, int(retry_after_s + 0.999))


def _hashing() -> threading.BoundedSemaphore:
    if not _hash_slots.acquire(timeout=HASH_WAIT_S):
        raise Overloaded("too many sign-ins at once; retry in a few seconds")
    return _hash_slots


def hash_password(password: str) -> str:
    """An argon2id hash of the password (never reversible)."""
    slot = _hashing()
    try:
        return _hasher.hash(password)
    finally:
        slot.release()


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether the password matches the stored hash (False for no hash)."""
    slot = _hashing()
    try:
        if not stored_hash:
            _hasher.hash(password)  # same time whether or not the account exists
            return False
        try:
            return _hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return False
    finally:
        slot.release()


#: The user's site grants, as a column of the queries that load a principal.
_SITE_GRANTS = "(SELECT array_agg(g.site_id) FROM user_site_grants g WHERE g.user_id = u.id) AS site_ids"


def _principal(row: dict[str, Any], scopes: frozenset[str], key_id: int | None) -> Principal:
    role = Role(row["role"])
    sites = frozenset(row["site_ids"]) if row.get("site_ids") else None
    return Principal(row["id"], role, row["reseller_id"], row["customer_id"], scopes & ROLE_SCOPES[role], key_id,
                     sites)


def grant_sites(conn: psycopg.Connection[Any], actor: Principal | None, user_id: int, site_ids: list[int]) -> None:
    """Limit a user to these sites of their organisation (empty: all of them again). The
    caller has checked that the user and the sites are its own."""
    with conn.transaction():
        conn.execute("DELETE FROM user_site_grants WHERE user_id = %s", (user_id,))
        if site_ids:
            conn.execute("""INSERT INTO user_site_grants (user_id, site_id, granted_by)
                            SELECT %s, unnest(%s::bigint[]), %s""",
                         (user_id, sorted(set(site_ids)), actor.user_id if actor else None))
        audit.record(conn, actor, "grant_sites", "user", user_id, site_ids=sorted(set(site_ids)))


def create_user(conn: psycopg.Connection[Any], *, email: str, password: str | None, role: Role,
                reseller_id: int | None = None, customer_id: int | None = None, full_name: str = "") -> int:
    """A user of a reseller or a customer; `password` None leaves the login unusable."""
    row = fetch_one(
        conn, """INSERT INTO users (email, password_hash, role, reseller_id, customer_id, full_name)
                 VALUES (%s, %s, %s, %s, %s, %s) RETURNING id""",
        (email, hash_password(password) if password else None, role.value, reseller_id, customer_id, full_name))
    assert row is not None
    return int(row["id"])


#: Per account: from this many failures on, each attempt waits 1, 2, 4 … s after the last
#: failure; at LOCK_AFTER the account is locked for LOCK_FOR and its owner told (audit).
DELAY_AFTER = 3
LOCK_AFTER = 10
LOCK_FOR = timedelta(minutes=15)
MAX_DELAY_S = 300.0
#: Per client address, in this process: failures allowed in a burst, and refilled per second.
ADDRESS_BURST = 20
ADDRESS_RATE_PER_S = 20 / 300


class FailureBudget:
    """A token bucket of failures per key (client address), with bounded memory."""

    def __init__(self, burst: int, rate_per_s: float, max_keys: int = 100_000) -> None:
        self.burst, self.rate, self.max_keys = burst, rate_per_s, max_keys
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def wait_s(self, key: str, *, take: bool = False) -> float:
        """Seconds until `key` has a failure left (0: it has); `take` spends one."""
        now = time.monotonic()
        with self._lock:
            tokens, at = self._state.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            if take and not wait:
                tokens -= 1
            self._state[key] = (tokens, now)
            while len(self._state) > self.max_keys:
                self._state.popitem(last=False)
            return wait

    def reset(self) -> None:
        """Forget every key's failures (a fresh process's budget)."""
        with self._lock:
            self._state.clear()


ADDRESS_FAILURES = FailureBudget(ADDRESS_BURST, ADDRESS_RATE_PER_S)


def email_digest(email: str) -> str:
    """The key of an address's failed sign-ins (whether or not an account has it)."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


class SecondFactorRequired(DomainError):
    """The password was right; the account signs in with a two-factor code too."""

    title = "Unauthorized"

    def __init__(self, user_id: int) -> None:
        """`user_id`: whose code the next step checks (the dashboard keeps it for that step)."""
        super().__init__("enter the 6-digit code from your authenticator app (or a recovery code)", field="code")
        self.user_id = user_id


class SecondFactorSetupRequired(DomainError):
    """The password was right, but the organisation requires two-factor and it is not set up."""

    title = "Forbidden"

    def __init__(self, user_id: int) -> None:
        """`user_id`: who must enrol (the dashboard walks them through it)."""
        super().__init__("your organisation requires two-factor sign-in: set it up in the dashboard first")
        self.user_id = user_id


def _throttled(conn: psycopg.Connection[Any], email: str, client: str) -> dict[str, Any] | None:
    """Raise `LoginThrottled` if the address or account must wait; returns the account's record."""
    wait = ADDRESS_FAILURES.wait_s(client)
    if wait:
        raise LoginThrottled("too many failed sign-ins from this address", wait)
    row = fetch_one(conn, """SELECT failures, extract(epoch FROM now() - last_failed_at)::float8 AS since_s,
                                    extract(epoch FROM locked_until - now())::float8 AS locked_s
                             FROM login_throttle WHERE email_digest = %s""", (email_digest(email),))
    if row is not None:
        if row["locked_s"] is not None and row["locked_s"] > 0:
            raise LoginThrottled("this account is locked after repeated failed sign-ins", row["locked_s"])
        if row["failures"] >= DELAY_AFTER:
            delay = min(MAX_DELAY_S, 2.0 ** (row["failures"] - DELAY_AFTER))
            if row["since_s"] < delay:
                raise LoginThrottled("too many failed sign-ins for this account", delay - row["since_s"])
    return row


def _failed(conn: psycopg.Connection[Any], email: str, client: str) -> None:
    """Count a failed sign-in (a wrong password or a wrong code) against the account and address."""
    ADDRESS_FAILURES.wait_s(client, take=True)
    failed = fetch_one(conn, """
        INSERT INTO login_throttle (email_digest, failures, last_failed_at) VALUES (%(d)s, 1, now())
        ON CONFLICT (email_digest) DO UPDATE SET
            failures = CASE WHEN login_throttle.locked_until < now() THEN 1 ELSE login_throttle.failures + 1 END,
            last_failed_at = now(),
            locked_until = CASE WHEN login_throttle.locked_until < now() THEN NULL
                                WHEN login_throttle.failures + 1 >= %(lock_after)s THEN now() + %(lock_for)s
                                ELSE login_throttle.locked_until END
        RETURNING failures, locked_until IS NOT NULL AS locked""",
                       {"d": email_digest(email), "lock_after": LOCK_AFTER, "lock_for": LOCK_FOR})
    if failed is not None and failed["locked"] and failed["failures"] == LOCK_AFTER:
        _notify_locked(conn, email)


def _signed_in(conn: psycopg.Connection[Any], email: str, had_failures: bool, principal: Principal) -> Principal:
    if had_failures:
        conn.execute("DELETE FROM login_throttle WHERE email_digest = %s", (email_digest(email),))
    conn.execute("UPDATE users SET last_sign_in_at = now() WHERE id = %s", (principal.user_id,))
    return principal


def login(conn: psycopg.Connection[Any], email: str, password: str, *, client: str,
          code: str | None = None) -> Principal:
    """Check an email and password (and a two-factor code where the account has one) under
    throttling, per account and per client address.

    Raises `LoginThrottled` before checking anything when the account or the address is
    waiting out its delay or locked, `LoginRefused` for a wrong login, `Overloaded` when
    every hashing slot stays busy. Throttling is keyed by the email whether or not an
    account has it, so its answers reveal nothing. After a right password:
    `SecondFactorRequired` when a code is needed and not given (a wrong code counts as a
    failed sign-in), `SecondFactorSetupRequired` when the organisation requires two-factor
    and the account has none yet.
    """
    record = _throttled(conn, email, client)
    principal = authenticate_password(conn, email, password)
    if principal is None:
        _failed(conn, email, client)
        raise LoginRefused()
    factor = fetch_one(conn, """SELECT u.totp_enabled_at IS NOT NULL AS enrolled,
                                       COALESCE(c.require_totp, r.require_totp, false) AS required
                                FROM users u LEFT JOIN customers c ON c.id = u.customer_id
                                LEFT JOIN resellers r ON r.id = u.reseller_id WHERE u.id = %s""",
                       (principal.user_id,))
    if factor is not None and factor["enrolled"]:
        if code is None:
            raise SecondFactorRequired(principal.user_id)
        return second_factor(conn, principal, email, code, client=client)
    if factor is not None and factor["required"]:
        raise SecondFactorSetupRequired(principal.user_id)
    return _signed_in(conn, email, record is not None, principal)


def second_factor(conn: psycopg.Connection[Any], principal: Principal, email: str, code: str, *,
                  client: str) -> Principal:
    """The second step of a sign-in whose password was right: the code, throttled and
    counted like a password."""
    record = _throttled(conn, email, client)
    if not two_factor.verify(conn, principal.user_id, code):
        _failed(conn, email, client)
        raise LoginRefused("wrong two-factor code")
    return _signed_in(conn, email, record is not None, principal)


def principal_of(conn: psycopg.Connection[Any], user_id: int) -> Principal | None:
    """An enabled user's principal with every scope of their role (for a sign-in's later steps)."""
    row = fetch_one(conn, f"""SELECT u.id, u.role, u.reseller_id, u.customer_id, {_SITE_GRANTS}
                              FROM users u WHERE u.id = %s AND u.disabled_at IS NULL""", (user_id,))  # noqa: S608
    return _principal(row, ROLE_SCOPES[Role(row["role"])], None) if row else None


def _notify_locked(conn: psycopg.Connection[Any], email: str) -> None:
    """The notice of a lock: on the account's audit trail, and by mail to its owner."""
    user = fetch_one(conn, """SELECT id, email, full_name, locked_until FROM users
                              JOIN login_throttle ON email_digest = %s
                              WHERE lower(email) = lower(%s) AND disabled_at IS NULL""", (email_digest(email), email))
    if user is None:
        return
    minutes = int(LOCK_FOR.total_seconds() // 60)
    audit.record(conn, None, "lock", "user", user["id"], reason="repeated failed sign-ins", minutes=minutes)
    until = user["locked_until"].astimezone(UTC).strftime("%H:%M UTC on %d %B %Y")
    mail.queue(conn, kind="account_locked", to=user["email"], user_id=user["id"],
               subject=f"Your Wattline sign-in is locked for {minutes} minutes",
               text=f"""Hello {user["full_name"] or user["email"]},

Someone tried to sign in to your Wattline account ({user["email"]}) and gave a wrong \
password {LOCK_AFTER} times in a row. To protect the account, signing in is locked until {until} \
({minutes} minutes).

If it was you, wait until then and try again.

If it was not you, nobody got in: a wrong password is never accepted. Someone may be guessing \
it, so tell your administrator.

Wattline
""")


def authenticate_password(conn: psycopg.Connection[Any], email: str, password: str) -> Principal | None:
    """The user's principal if the email and password match an enabled account."""
    row = fetch_one(conn, f"""SELECT u.id, u.role, u.reseller_id, u.customer_id, u.password_hash, {_SITE_GRANTS}
                              FROM users u WHERE lower(u.email) = lower(%s) AND u.disabled_at IS NULL""",  # noqa: S608
                    (email,))
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
              ttl: timedelta | None = None, session: bool = False, client: str | None = None) -> IssuedKey:
    """A new API key (or login session with `ttl`) for the user, with these scopes."""
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"scopes must be a non-empty subset of {SCOPES}")
    prefix = "wl_" + "".join(secrets.choice(_ALPHABET) for _ in range(8))
    secret = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + ttl if ttl else None
    row = fetch_one(
        conn, """INSERT INTO api_keys (user_id, prefix, secret_hash, name, scopes, expires_at, session, client)
                 VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        (user_id, prefix, _digest(secret), name, sorted(set(scopes)), expires, session, client))
    assert row is not None
    return IssuedKey(int(row["id"]), prefix, f"{prefix}.{secret}",
                     tuple(sorted(set(scopes))), expires)


def start_session(conn: psycopg.Connection[Any], principal: Principal, ttl: timedelta, *,
                  client: str | None = None) -> IssuedKey:
    """A login session for the principal's user, with every scope its role has; the user's
    expired sessions are pruned on the way (the retention job prunes the rest). `client`
    (address and browser) helps the person recognise it in their list of sessions."""
    conn.execute("DELETE FROM api_keys WHERE user_id = %s AND session AND expires_at < now()", (principal.user_id,))
    return issue_key(conn, principal.user_id, sorted(ROLE_SCOPES[principal.role]), name="login session", ttl=ttl,
                     session=True, client=client[:200] if client else None)


def session_principal(conn: psycopg.Connection[Any], session_id: int, user_id: int) -> Principal | None:
    """The principal of a live dashboard session, or None once it is revoked, expired or its
    user disabled. Read on every request, so a role or a revocation takes effect at once."""
    row = fetch_one(conn, f"""SELECT k.id AS key_id, k.scopes, u.id, u.role, u.reseller_id, u.customer_id,
                                     {_SITE_GRANTS}
                        FROM api_keys k JOIN users u ON u.id = k.user_id
                        WHERE k.id = %s AND k.user_id = %s AND k.session AND k.revoked_at IS NULL
                          AND k.expires_at > now() AND u.disabled_at IS NULL""", (session_id, user_id))  # noqa: S608
    if row is None:
        return None
    conn.execute("UPDATE api_keys SET last_used_at = now() WHERE id = %s AND "
                 "(last_used_at IS NULL OR last_used_at < now() - interval '1 minute')", (session_id,))
    # The role's scopes today, not those of sign-in time: a changed role applies at once.
    return _principal(row, ROLE_SCOPES[Role(row["role"])], row["key_id"])


def authenticate_key(conn: psycopg.Connection[Any], token: str) -> Principal | None:
    """The principal of a valid, unexpired, unrevoked token, or None."""
    prefix, _, secret = token.partition(".")
    if not prefix.startswith("wl_") or not secret:
        return None
    row = fetch_one(conn, f"""SELECT k.id AS key_id, k.secret_hash, k.scopes, u.id, u.role, u.reseller_id,
                                     u.customer_id, {_SITE_GRANTS}
                        FROM api_keys k JOIN users u ON u.id = k.user_id
                        WHERE k.prefix = %s AND k.revoked_at IS NULL AND u.disabled_at IS NULL
                          AND (k.expires_at IS NULL OR k.expires_at > now())""", (prefix,))  # noqa: S608
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
