"""People and access: invites, password set/change/reset by emailed link, roles granted for
a whole organisation or chosen sites, disabling, sessions, and the organisation's policies
(allowed email domains, two-factor required).

An organisation is a reseller or a customer. Admins manage their own organisation; a
reseller admin also manages its customers' people (and so creates a customer's first
admin). Links are single-use and short-lived (an invite 72 h, a reset 30 minutes); only
their SHA-256 is stored. Every change is audited and mailed through the outbox.
"""

from __future__ import annotations

import hashlib
import html
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from wattline import accounts, audit, mail, passwords
from wattline.db import fetch_all, fetch_one
from wattline.domain import Role
from wattline.errors import Conflict, Forbidden, Invalid, NotFound
from wattline.principal import Principal

Conn = psycopg.Connection[Any]
INVITE_TTL = timedelta(hours=72)
RESET_TTL = timedelta(minutes=30)
#: A reset requested again and again must not turn into a mail flood to the person.
MAX_OPEN_RESETS = 3
CUSTOMER_ROLES = (Role.CUSTOMER_ADMIN, Role.FACILITY_MANAGER, Role.VIEWER, Role.INSTALLER)
ROLE_NAMES = {Role.RESELLER_ADMIN: "reseller admin", Role.CUSTOMER_ADMIN: "admin",
              Role.FACILITY_MANAGER: "facility manager", Role.VIEWER: "viewer", Role.INSTALLER: "installer"}
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,253}$")


@dataclass(frozen=True)
class Org:
    """A reseller or a customer: exactly one of the two ids."""

    reseller_id: int | None = None
    customer_id: int | None = None

    @property
    def table(self) -> str:
        """The organisation's table."""
        return "resellers" if self.reseller_id is not None else "customers"

    @property
    def id(self) -> int:
        """The organisation's id in its table."""
        found = self.reseller_id if self.reseller_id is not None else self.customer_id
        assert found is not None
        return found


class LinkInvalid(Invalid):
    """An invite or reset link that is unknown, expired or used."""

    def __init__(self, detail: str) -> None:
        """`detail` says which, and what to do."""
        super().__init__("Link not valid", detail, field="link")


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# -- organisations ----------------------------------------------------------------------------
def org_of(p: Principal) -> Org:
    """The principal's own organisation."""
    return Org(reseller_id=p.reseller_id) if p.reseller_id is not None else Org(customer_id=p.customer_id)


def managed_org(conn: Conn, actor: Principal, customer_id: int | None) -> Org:
    """The organisation `actor` acts on: its own, or (a reseller admin) one of its customers."""
    if not actor.can("admin"):
        raise Forbidden("only admins manage people")
    if customer_id is None or customer_id == actor.customer_id:
        return org_of(actor)
    if actor.reseller_id is None:
        raise NotFound("customer")
    row = fetch_one(conn, "SELECT id FROM customers WHERE id = %s AND reseller_id = %s",
                    (customer_id, actor.reseller_id))
    if row is None:
        raise NotFound("customer")
    return Org(customer_id=customer_id)


def policy(conn: Conn, org: Org) -> dict[str, Any]:
    """The organisation's name, allowed email domains (empty: any) and whether two-factor is required."""
    row = fetch_one(conn, sql.SQL("SELECT name, allowed_email_domains, require_totp FROM {} WHERE id = %s").format(
        sql.Identifier(org.table)), (org.id,))
    if row is None:
        raise NotFound("organisation")
    return {"name": row["name"], "allowed_email_domains": list(row["allowed_email_domains"]),
            "require_totp": bool(row["require_totp"])}


def set_policy(conn: Conn, actor: Principal, org: Org, *, allowed_email_domains: list[str],
               require_totp: bool) -> dict[str, Any]:
    """Set the organisation's policies. Existing people outside the domains keep their accounts
    (the admin sees them flagged); two-factor, once required, is asked at their next sign-in."""
    domains = sorted({d.strip().lower().lstrip("@") for d in allowed_email_domains if d.strip()})
    bad = [d for d in domains if not _DOMAIN.match(d)]
    if bad:
        raise Invalid("Invalid domain", f"not a domain name: {', '.join(bad)}", field="allowed_email_domains")
    if domains and not _domain_allowed(_own_email(conn, actor), domains):
        raise Invalid("Invalid domain", "your own email's domain must be among them, or you would lock yourself "
                      "out of inviting", field="allowed_email_domains")
    with conn.transaction():
        conn.execute(sql.SQL("UPDATE {} SET allowed_email_domains = %s, require_totp = %s WHERE id = %s").format(
            sql.Identifier(org.table)), (domains, require_totp, org.id))
        audit.record(conn, actor, "set_policy", org.table.rstrip("s"), org.id, allowed_email_domains=domains,
                     require_totp=require_totp)
    return policy(conn, org)


def _own_email(conn: Conn, p: Principal) -> str:
    row = fetch_one(conn, "SELECT email FROM users WHERE id = %s", (p.user_id,))
    return str(row["email"]) if row else ""


def _domain_allowed(email: str, domains: list[str]) -> bool:
    domain = email.rpartition("@")[2].lower()
    return not domains or any(domain == d or domain.endswith("." + d) for d in domains)


def check_email(conn: Conn, org: Org, email: str) -> str:
    """The email, normalised, if it is an address the organisation allows; else `Invalid`."""
    email = email.strip()
    if not _EMAIL.match(email) or "." not in email.rpartition("@")[2]:
        raise Invalid("Invalid email", "that is not an email address", field="email")
    domains = policy(conn, org)["allowed_email_domains"]
    if not _domain_allowed(email, domains):
        raise Invalid("Email domain not allowed",
                      f"your organisation allows addresses at {', '.join(domains)} only", field="email")
    return email


def profile(conn: Conn, user_id: int) -> dict[str, Any]:
    """A person's own contact details and organisation, for their account page."""
    row = fetch_one(conn, """SELECT u.email, u.full_name, u.phone, u.role, COALESCE(c.name, r.name) AS org
                             FROM users u LEFT JOIN customers c ON c.id = u.customer_id
                             LEFT JOIN resellers r ON r.id = u.reseller_id WHERE u.id = %s""", (user_id,))
    if row is None:
        raise NotFound("user")
    return row


# -- who may manage whom ----------------------------------------------------------------------
def managed_user(conn: Conn, actor: Principal, user_id: int) -> dict[str, Any]:
    """The user, if `actor` is an admin of their organisation (or of its reseller); else NotFound."""
    row = fetch_one(conn, """SELECT u.id, u.email, u.full_name, u.role, u.reseller_id, u.customer_id,
                                    u.disabled_at, u.erased_at, c.reseller_id AS customer_reseller
                             FROM users u LEFT JOIN customers c ON c.id = u.customer_id WHERE u.id = %s""",
                    (user_id,))
    if row is None or not actor.can("admin"):
        raise NotFound("user")
    if actor.reseller_id is not None and actor.reseller_id in (row["reseller_id"], row["customer_reseller"]):
        return row
    if actor.customer_id is not None and row["customer_id"] == actor.customer_id:
        return row
    raise NotFound("user")


def _grantable(actor: Principal, org: Org, role: Role, site_ids: list[int]) -> None:
    if org.customer_id is not None and role not in CUSTOMER_ROLES:
        raise Invalid("Invalid role", f"a customer's people are {', '.join(r.value for r in CUSTOMER_ROLES)}",
                      field="role")
    if org.reseller_id is not None and role is not Role.RESELLER_ADMIN:
        raise Invalid("Invalid role", "a reseller's own people are reseller admins", field="role")
    if org.reseller_id is not None and site_ids:
        raise Invalid("Invalid sites", "a reseller admin sees every customer's sites", field="site_ids")
    if role is Role.CUSTOMER_ADMIN and site_ids:
        raise Invalid("Invalid sites", "an admin manages the whole organisation; grant sites to other roles",
                      field="site_ids")


def _check_sites(conn: Conn, org: Org, site_ids: list[int]) -> list[int]:
    wanted = sorted(set(site_ids))
    if not wanted:
        return []
    found = fetch_all(conn, "SELECT id FROM sites WHERE id = ANY(%s) AND customer_id = %s",
                      (wanted, org.customer_id))
    if len(found) != len(wanted):
        raise NotFound("site", field="site_ids")
    return wanted


# -- the people of an organisation --------------------------------------------------------------
def people(conn: Conn, org: Org) -> list[dict[str, Any]]:
    """The organisation's people with their role, sites, state and sign-in facts (no secrets)."""
    column = "reseller_id" if org.reseller_id is not None else "customer_id"
    return fetch_all(conn, sql.SQL("""
        SELECT u.id, u.email, u.full_name, u.role, u.created_at, u.last_sign_in_at,
               u.totp_enabled_at IS NOT NULL AS two_factor,
               CASE WHEN u.erased_at IS NOT NULL THEN 'erased' WHEN u.disabled_at IS NOT NULL THEN 'disabled'
                    WHEN u.password_hash IS NULL AND u.invited_at IS NOT NULL THEN 'invited' ELSE 'active' END
                   AS status,
               COALESCE((SELECT array_agg(g.site_id ORDER BY g.site_id) FROM user_site_grants g
                         WHERE g.user_id = u.id), '{{}}') AS site_ids,
               (SELECT count(*) FROM api_keys k WHERE k.user_id = u.id AND k.session AND k.revoked_at IS NULL
                  AND k.expires_at > now()) AS sessions
        FROM users u WHERE u.{} = %s ORDER BY lower(u.email)""").format(sql.Identifier(column)), (org.id,))


def org_sites(conn: Conn, org: Org) -> list[dict[str, Any]]:
    """The sites a person of the organisation can be granted (a reseller's own people: none)."""
    if org.customer_id is None:
        return []
    return fetch_all(conn, "SELECT id, name FROM sites WHERE customer_id = %s ORDER BY name, id", (org.customer_id,))


def site_grants(conn: Conn, user_id: int) -> list[int]:
    """The sites a person is limited to (empty: the whole organisation)."""
    return [r["site_id"] for r in fetch_all(conn, "SELECT site_id FROM user_site_grants WHERE user_id = %s "
                                                  "ORDER BY site_id", (user_id,))]


def invite(conn: Conn, actor: Principal, org: Org, *, email: str, role: Role, link_base: str,
           full_name: str = "", site_ids: list[int] | None = None) -> int:
    """Create a person's account, waiting for them, and mail them a single-use link (72 h) to
    set their password. Returns the new user's id."""
    if not actor.can("admin"):
        raise Forbidden("only admins invite people")
    site_ids = site_ids or []
    _grantable(actor, org, role, site_ids)
    email = check_email(conn, org, email)
    with conn.transaction():
        sites = _check_sites(conn, org, site_ids)
        try:
            with conn.transaction():
                user_id = accounts.create_user(conn, email=email, password=None, role=role, full_name=full_name.strip(),
                                               reseller_id=org.reseller_id, customer_id=org.customer_id)
        except pg_errors.UniqueViolation as exc:
            raise Conflict("someone already has an account with this email", field="email") from exc
        conn.execute("UPDATE users SET invited_at = now(), invited_by = %s WHERE id = %s", (actor.user_id, user_id))
        if sites:
            accounts.grant_sites(conn, actor, user_id, sites)
        audit.record(conn, actor, "invite", "user", user_id, role=role.value, site_ids=sites)
        _send_invite(conn, actor, user_id, link_base)
    return user_id


def resend_invite(conn: Conn, actor: Principal, user_id: int, link_base: str) -> None:
    """A fresh invite link for someone who has not accepted yet; earlier links stop working."""
    row = managed_user(conn, actor, user_id)
    state = fetch_one(conn, "SELECT password_hash IS NULL AND invited_at IS NOT NULL AS waiting FROM users "
                            "WHERE id = %s", (user_id,))
    if state is None or not state["waiting"] or row["disabled_at"] is not None:
        raise Conflict("this person has already accepted; they can reset their password from the sign-in page")
    with conn.transaction():
        _send_invite(conn, actor, user_id, link_base)
        audit.record(conn, actor, "resend_invite", "user", user_id)


def _new_link(conn: Conn, user_id: int, kind: str, ttl: timedelta, created_by: int | None) -> str:
    conn.execute("UPDATE account_tokens SET used_at = now() WHERE user_id = %s AND kind = %s AND used_at IS NULL",
                 (user_id, kind))
    token = secrets.token_urlsafe(32)
    conn.execute("""INSERT INTO account_tokens (user_id, kind, token_hash, created_by, expires_at)
                    VALUES (%s, %s, %s, %s, now() + %s)""", (user_id, kind, _token_digest(token), created_by, ttl))
    return token


def _send_invite(conn: Conn, actor: Principal, user_id: int, link_base: str) -> None:
    token = _new_link(conn, user_id, "invite", INVITE_TTL, actor.user_id)
    person = fetch_one(conn, """SELECT u.email, u.full_name, u.role, COALESCE(c.name, r.name) AS org,
                                       COALESCE(NULLIF(a.full_name, ''), a.email) AS inviter
                                FROM users u LEFT JOIN customers c ON c.id = u.customer_id
                                LEFT JOIN resellers r ON r.id = u.reseller_id
                                LEFT JOIN users a ON a.id = %s WHERE u.id = %s""", (actor.user_id, user_id))
    assert person is not None
    link = f"{link_base.rstrip('/')}/invite/{token}"
    role = ROLE_NAMES[Role(person["role"])]
    hours = int(INVITE_TTL.total_seconds() // 3600)
    text = f"""Hello {person["full_name"] or person["email"]},

{person["inviter"]} has invited you to {person["org"]} on Wattline, as {role}.

Set your password here to start (the link works once, for {hours} hours):

{link}

If you were not expecting this, ignore it: nothing happens until the link is used.

Wattline
"""
    body = (f"<p>Hello {html.escape(person['full_name'] or person['email'])},</p>"
            f"<p>{html.escape(person['inviter'])} has invited you to <b>{html.escape(person['org'])}</b> on "
            f"Wattline, as {role}.</p><p><a href=\"{html.escape(link)}\">Set your password</a> "
            f"(the link works once, for {hours} hours).</p>"
            "<p>If you were not expecting this, ignore it: nothing happens until the link is used.</p>")
    mail.queue(conn, kind="invite", to=person["email"], user_id=user_id, text=text, html=body, category="invites",
               subject=f"You are invited to {person['org']} on Wattline")


def request_reset(conn: Conn, email: str, link_base: str) -> None:
    """Mail a single-use link (30 minutes) to set a new password, if the address has an
    account. The caller answers the same either way, so that it reveals nothing."""
    with conn.transaction():
        row = fetch_one(conn, """SELECT id, email, full_name FROM users WHERE lower(email) = lower(%s)
                                 AND disabled_at IS NULL AND erased_at IS NULL FOR UPDATE""", (email.strip(),))
        if row is None:
            return
        open_links = fetch_one(conn, """SELECT count(*) AS n FROM account_tokens WHERE user_id = %s
                                        AND kind = 'reset' AND created_at > now() - %s""", (row["id"], RESET_TTL))
        if open_links is not None and open_links["n"] >= MAX_OPEN_RESETS:
            return
        token = _new_link(conn, row["id"], "reset", RESET_TTL, None)
        link = f"{link_base.rstrip('/')}/reset/{token}"
        minutes = int(RESET_TTL.total_seconds() // 60)
        audit.record(conn, None, "request_reset", "user", row["id"])
        mail.queue(conn, kind="password_reset", to=row["email"], user_id=row["id"], category="security",
                   subject="Reset your Wattline password", text=f"""Hello {row["full_name"] or row["email"]},

Someone asked to reset the password of your Wattline account. To choose a new one, open
this link (it works once, for {minutes} minutes):

{link}

If it was not you, ignore this message: your password stays as it is.

Wattline
""", html=(f"<p>Hello {html.escape(row['full_name'] or row['email'])},</p><p>Someone asked to reset the "
           f"password of your Wattline account. <a href=\"{html.escape(link)}\">Choose a new password</a> "
           f"(the link works once, for {minutes} minutes).</p><p>If it was not you, ignore this message: "
           "your password stays as it is.</p>"))


def open_link(conn: Conn, token: str, kind: str) -> dict[str, Any]:
    """Who a link is for (email, name, whether two-factor is needed), or `LinkInvalid` saying why."""
    row = fetch_one(conn, """SELECT t.id, t.used_at, t.expires_at < now() AS expired, u.id AS user_id, u.email,
                                    u.full_name, u.disabled_at, u.totp_enabled_at IS NOT NULL AS two_factor,
                                    COALESCE(c.require_totp, r.require_totp, false) AS require_totp
                             FROM account_tokens t JOIN users u ON u.id = t.user_id
                             LEFT JOIN customers c ON c.id = u.customer_id LEFT JOIN resellers r ON r.id = u.reseller_id
                             WHERE t.token_hash = %s AND t.kind = %s""", (_token_digest(token), kind))
    again = "ask your administrator for a new invite" if kind == "invite" else "ask for a new one"
    if row is None or row["disabled_at"] is not None:
        raise LinkInvalid(f"this link is not valid; {again}")
    if row["used_at"] is not None:
        raise LinkInvalid(f"this link has already been used; {again}")
    if row["expired"]:
        raise LinkInvalid(f"this link has expired; {again}")
    return row


def use_link(conn: Conn, token: str, kind: str, password: str) -> int:
    """Set the password through an invite or reset link, once. A reset also ends every session
    and lifts a sign-in lock (the person has proved they hold the mailbox). Returns the user id."""
    with conn.transaction():
        link = open_link(conn, token, kind)
        locked = fetch_one(conn, "SELECT id FROM account_tokens WHERE id = %s AND used_at IS NULL FOR UPDATE",
                           (link["id"],))
        if locked is None:  # a concurrent use won
            raise LinkInvalid("this link has already been used")
        passwords.check_password(password, email=link["email"], full_name=link["full_name"])
        conn.execute("UPDATE account_tokens SET used_at = now() WHERE id = %s", (link["id"],))
        _set_password(conn, link["user_id"], password)
        if kind == "reset":
            revoke_sessions(conn, None, link["user_id"])
            conn.execute("DELETE FROM login_throttle WHERE email_digest = %s", (accounts.email_digest(link["email"]),))
        audit.record(conn, None, "accept_invite" if kind == "invite" else "reset_password", "user", link["user_id"])
    return int(link["user_id"])


def _set_password(conn: Conn, user_id: int, password: str) -> None:
    conn.execute("UPDATE users SET password_hash = %s, password_changed_at = now(), updated_at = now() WHERE id = %s",
                 (accounts.hash_password(password), user_id))


def change_password(conn: Conn, actor: Principal, current: str, new: str) -> None:
    """The signed-in person changes their password; their other sessions end."""
    row = fetch_one(conn, "SELECT email, full_name, password_hash FROM users WHERE id = %s", (actor.user_id,))
    if row is None or not accounts.verify_password(row["password_hash"], current):
        raise Invalid("Wrong password", "your current password is not right", field="current_password")
    if new == current:
        raise passwords.WeakPassword("the new password must differ from the current one")
    passwords.check_password(new, email=row["email"], full_name=row["full_name"])
    with conn.transaction():
        _set_password(conn, actor.user_id, new)
        revoke_sessions(conn, actor, actor.user_id, keep=actor.key_id)
        audit.record(conn, actor, "change_password", "user", actor.user_id)


# -- roles, sites, disabling ------------------------------------------------------------------
def set_access(conn: Conn, actor: Principal, user_id: int, role: Role, site_ids: list[int]) -> None:
    """A person's role, for the whole organisation (no sites) or the chosen sites."""
    row = managed_user(conn, actor, user_id)
    org = Org(reseller_id=row["reseller_id"], customer_id=row["customer_id"])
    _grantable(actor, org, role, site_ids)
    with conn.transaction():
        sites = _check_sites(conn, org, site_ids)
        if Role(row["role"]) in (Role.CUSTOMER_ADMIN, Role.RESELLER_ADMIN) and role != row["role"]:
            _keep_an_admin(conn, org, user_id)
        conn.execute("UPDATE users SET role = %s, updated_at = now() WHERE id = %s", (role.value, user_id))
        accounts.grant_sites(conn, actor, user_id, sites)
        audit.record(conn, actor, "set_role", "user", user_id, role=role.value)


def _keep_an_admin(conn: Conn, org: Org, losing: int) -> None:
    column = "reseller_id" if org.reseller_id is not None else "customer_id"
    others = fetch_one(conn, sql.SQL("""SELECT count(*) AS n FROM users WHERE {} = %s AND id <> %s
                                        AND role IN ('customer_admin', 'reseller_admin') AND disabled_at IS NULL
                                        AND password_hash IS NOT NULL""").format(sql.Identifier(column)),
                       (org.id, losing))
    if others is None or others["n"] == 0:
        raise Conflict("the organisation must keep at least one active admin", field="role")


def set_disabled(conn: Conn, actor: Principal, user_id: int, disabled: bool) -> None:
    """Disable a person (sign-in and every key refused at once, sessions ended) or enable them again."""
    row = managed_user(conn, actor, user_id)
    if user_id == actor.user_id:
        raise Conflict("you cannot disable yourself")
    if row["erased_at"] is not None:
        raise Conflict("this account has been erased")
    with conn.transaction():
        if disabled:
            if Role(row["role"]) in (Role.CUSTOMER_ADMIN, Role.RESELLER_ADMIN):
                _keep_an_admin(conn, Org(row["reseller_id"], row["customer_id"]), user_id)
            conn.execute("UPDATE users SET disabled_at = COALESCE(disabled_at, now()) WHERE id = %s", (user_id,))
            revoke_sessions(conn, actor, user_id)
        else:
            conn.execute("UPDATE users SET disabled_at = NULL WHERE id = %s", (user_id,))
        audit.record(conn, actor, "disable" if disabled else "enable", "user", user_id)


# -- sessions ---------------------------------------------------------------------------------
def sessions(conn: Conn, user_id: int) -> list[dict[str, Any]]:
    """A person's live sign-in sessions (dashboard and API logins), newest first."""
    return fetch_all(conn, """SELECT id, prefix, client, created_at, last_used_at, expires_at FROM api_keys
                              WHERE user_id = %s AND session AND revoked_at IS NULL AND expires_at > now()
                              ORDER BY created_at DESC, id DESC""", (user_id,))


def revoke_session(conn: Conn, actor: Principal, user_id: int, session_id: int) -> None:
    """End one session of a person (the person themselves, or their admin)."""
    if user_id != actor.user_id:
        managed_user(conn, actor, user_id)
    done = conn.execute("""UPDATE api_keys SET revoked_at = now() WHERE id = %s AND user_id = %s AND session
                           AND revoked_at IS NULL""", (session_id, user_id)).rowcount
    if not done:
        raise NotFound("session")
    audit.record(conn, actor, "revoke_session", "user", user_id, session_id=session_id)


def revoke_sessions(conn: Conn, actor: Principal | None, user_id: int, *, keep: int | None = None) -> int:
    """End every session of a person but `keep`; returns how many."""
    n = conn.execute("""UPDATE api_keys SET revoked_at = now() WHERE user_id = %s AND session
                        AND revoked_at IS NULL AND id IS DISTINCT FROM %s""", (user_id, keep)).rowcount
    if n:
        audit.record(conn, actor, "revoke_sessions", "user", user_id, sessions=n)
    return n
