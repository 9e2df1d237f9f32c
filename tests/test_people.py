"""People and access through the API, with mail read back from a real SMTP server: invites
and resets by single-use links, the password policy, two-factor sign-in with recovery
codes, roles per organisation or site, disabling, sessions, allowed email domains. Each
refusal says which field is wrong and why."""

from __future__ import annotations

import re
import time
from email.message import EmailMessage
from typing import Any

import psycopg
import pyotp
import pytest
from fastapi.testclient import TestClient

from tests.factories import Tenant, auth, count
from tests.fixtures.receivers import SmtpServer
from wattline import mail
from wattline.settings import Settings

GOOD_PASSWORD = "violet kettle orbit 42"
LINK = re.compile(r"https?://[^/\s]+/(invite|reset)/([A-Za-z0-9_-]{20,})")


@pytest.fixture(autouse=True)
def fresh_address_budget() -> None:
    """Every test here signs in from the test client's one address: each starts with a full budget."""
    from wattline.accounts import ADDRESS_FAILURES

    ADDRESS_FAILURES.reset()


def deliver(db: psycopg.Connection[Any], database_url: str, smtp_server: SmtpServer) -> list[EmailMessage]:
    """Send the outbox through the real server (as the alert service does) and read what arrived."""
    report = mail.send_due(db, Settings(database_url=database_url, **smtp_server.settings()))
    assert report.unreachable is None and report.given_up == 0
    return smtp_server.messages()


def link_in(message: EmailMessage, kind: str) -> str:
    """The token of the message's link, which must be the same in its text and HTML parts."""
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None
    [(found_kind, token)] = LINK.findall(text.get_content())
    assert found_kind == kind and f"/{kind}/{token}" in html.get_content()
    return str(token)


def sign_in(client: TestClient, email: str, password: str, **extra: Any) -> Any:
    return client.post("/v1/auth/login", json={"email": email, "password": password, **extra})


def problem_field(res: Any) -> tuple[int, str | None, str]:
    body = res.json()
    return res.status_code, body.get("field"), body["detail"]


def invite(client: TestClient, token: str, email: str, role: str = "facility_manager", **extra: Any) -> Any:
    return client.post("/v1/people/invites", headers=auth(token),
                       json={"email": email, "role": role, "full_name": "Robin Vale", **extra})


def test_an_invite_is_mailed_and_its_link_sets_a_password_once(
        client: TestClient, tenants: tuple[Tenant, Tenant], db: psycopg.Connection[Any], database_url: str,
        smtp_server: SmtpServer) -> None:
    a, _ = tenants
    res = invite(client, a.tokens["customer_admin"], "robin@example.com", site_ids=[a.site_id])
    assert res.status_code == 201, res.text
    user_id = res.json()["id"]
    [message] = deliver(db, database_url, smtp_server)
    assert message["To"] == "robin@example.com" and message["Subject"] == "You are invited to Customer A on Wattline"
    token = link_in(message, "invite")
    assert "72 hours" in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    # Listed as waiting, with the one site granted; no login works yet.
    [person] = [p for p in client.get("/v1/people", headers=auth(a.tokens["customer_admin"])).json()
                if p["id"] == user_id]
    assert (person["status"], person["site_ids"], person["role"]) == ("invited", [a.site_id], "facility_manager")
    assert sign_in(client, "robin@example.com", GOOD_PASSWORD).status_code == 401
    # The password policy, each reason on the password field.
    for weak, why in (("short1", "at least 12"), ("password1234", "most common"),
                      ("robinrobin12345", "own name or email"), ("aaaaaaaaaaaaaaaa", "")):
        res = client.post("/v1/auth/invites/accept", json={"token": token, "password": weak})
        status, field, detail = problem_field(res)
        assert (status, field) == (422, "password") and why in detail, (weak, detail)
    assert client.post("/v1/auth/invites/accept", json={"token": token, "password": GOOD_PASSWORD}).status_code == 200
    # The link works once.
    status, field, detail = problem_field(client.post("/v1/auth/invites/accept",
                                                      json={"token": token, "password": GOOD_PASSWORD + "x"}))
    assert (status, field) == (422, "link") and "already been used" in detail
    # Signed in as a facility manager of that site only.
    login = sign_in(client, "robin@example.com", GOOD_PASSWORD)
    assert login.status_code == 200
    sites = client.get("/v1/sites", headers=auth(login.json()["token"])).json()
    assert [s["id"] for s in sites] == [a.site_id]


def test_an_expired_or_unknown_invite_link_says_so(client: TestClient, tenants: tuple[Tenant, Tenant],
                                                    db: psycopg.Connection[Any]) -> None:
    a, _ = tenants
    invite(client, a.tokens["customer_admin"], "late@example.com")
    token = mail_token(db, "late@example.com")
    db.execute("UPDATE account_tokens SET expires_at = now() - interval '1 second'")
    status, field, detail = problem_field(client.post("/v1/auth/invites/accept",
                                                      json={"token": token, "password": GOOD_PASSWORD}))
    assert (status, field) == (422, "link") and "expired" in detail
    status, _, detail = problem_field(client.post("/v1/auth/invites/accept",
                                                  json={"token": "x" * 43, "password": GOOD_PASSWORD}))
    assert status == 422 and "not valid" in detail
    # A fresh invite works, and the old link stays dead.
    user = db.execute("SELECT id FROM users WHERE email = 'late@example.com'").fetchone()
    assert user is not None
    assert client.post(f"/v1/people/{user[0]}/invite", headers=auth(a.tokens["customer_admin"])).status_code == 200
    fresh = mail_token(db, "late@example.com")
    assert fresh != token
    assert client.post("/v1/auth/invites/accept", json={"token": fresh, "password": GOOD_PASSWORD}).status_code == 200


def mail_token(db: psycopg.Connection[Any], to: str) -> str:
    """The link of the newest message queued to `to` (for tests that need no SMTP round trip)."""
    row = db.execute("SELECT body_text FROM mail_outbox WHERE to_address = %s ORDER BY id DESC LIMIT 1",
                     (to,)).fetchone()
    assert row is not None
    [(_, token)] = LINK.findall(row[0])
    return str(token)


def test_roles_are_checked_and_an_organisation_keeps_an_admin(client: TestClient,
                                                              tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    admin = auth(a.tokens["customer_admin"])
    status, field, _ = problem_field(invite(client, a.tokens["customer_admin"], "x@example.com", role="reseller_admin"))
    assert (status, field) == (422, "role")
    status, field, _ = problem_field(invite(client, a.tokens["customer_admin"], "x@example.com", site_ids=[b.site_id]))
    assert (status, field) == (404, "site_ids")  # another tenant's site does not exist for A
    status, field, _ = problem_field(invite(client, a.tokens["customer_admin"], "not-an-address"))
    assert (status, field) == (422, "email")
    status, field, _ = problem_field(invite(client, a.tokens["customer_admin"], "x@example.com", role="customer_admin",
                                            site_ids=[a.site_id]))
    assert (status, field) == (422, "site_ids")
    # Only admins manage people.
    assert invite(client, a.tokens["facility_manager"], "y@example.com").status_code == 403
    assert client.get("/v1/people", headers=auth(a.tokens["viewer"])).status_code == 403
    # The only admin cannot demote themselves or be disabled.
    me = a.user_ids["customer_admin"]
    res = client.put(f"/v1/people/{me}/access", headers=admin, json={"role": "viewer", "site_ids": []})
    assert problem_field(res)[:2] == (409, "role")
    # Roles change at once for what the person's key may do.
    viewer = a.user_ids["viewer"]
    assert client.post(f"/v1/sites/{a.site_id}/nodes", headers=auth(a.tokens["viewer"]),
                       json={"parent_id": a.panel_id, "kind": "circuit", "name": "x"}).status_code == 403
    assert client.put(f"/v1/people/{viewer}/access", headers=admin,
                      json={"role": "facility_manager", "site_ids": []}).status_code == 200
    assert client.post(f"/v1/sites/{a.site_id}/nodes", headers=auth(a.tokens["viewer"]),
                       json={"parent_id": a.panel_id, "kind": "circuit", "name": "x"}).status_code == 201


def test_a_reseller_creates_a_customer_and_its_first_admin(client: TestClient, tenants: tuple[Tenant, Tenant],
                                                          db: psycopg.Connection[Any]) -> None:
    a, b = tenants
    reseller = auth(a.tokens["reseller_admin"])
    res = client.post("/v1/customers", headers=reseller, json={"name": "Newco"})
    assert res.status_code == 201, res.text
    newco = res.json()["id"]
    res = invite(client, a.tokens["reseller_admin"], "boss@newco.example", role="customer_admin", customer_id=newco)
    assert res.status_code == 201, res.text
    token = mail_token(db, "boss@newco.example")
    assert client.post("/v1/auth/invites/accept", json={"token": token, "password": GOOD_PASSWORD}).status_code == 200
    login = sign_in(client, "boss@newco.example", GOOD_PASSWORD)
    assert login.json()["scopes"] == ["admin", "commission", "read", "write"]
    me = client.get("/v1/me", headers=auth(login.json()["token"])).json()
    assert me["customer_id"] == newco and me["role"] == "customer_admin"
    # Another reseller cannot invite into it.
    assert invite(client, b.tokens["reseller_admin"], "x@newco.example", role="customer_admin",
                  customer_id=newco).status_code == 404


def test_allowed_email_domains(client: TestClient, tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    admin = auth(a.tokens["customer_admin"])
    res = client.put("/v1/organisation/policy", headers=admin, json={"allowed_email_domains": ["acme.example"]})
    assert problem_field(res)[:2] == (422, "allowed_email_domains")  # the admin's own would be outside
    res = client.put("/v1/organisation/policy", headers=admin,
                     json={"allowed_email_domains": ["example.com", "acme.example"]})
    assert res.status_code == 200 and res.json()["allowed_email_domains"] == ["acme.example", "example.com"]
    status, field, detail = problem_field(invite(client, a.tokens["customer_admin"], "someone@gmail.example"))
    assert (status, field) == (422, "email") and "acme.example" in detail
    assert invite(client, a.tokens["customer_admin"], "ok@ops.acme.example").status_code == 201
    # Correcting one's email is held to the same rule.
    res = client.patch("/v1/me", headers=auth(a.tokens["viewer"]), json={"email": "me@elsewhere.example"})
    assert problem_field(res)[:2] == (422, "email")


def test_a_reset_link_is_mailed_works_once_for_30_minutes_and_ends_sessions(
        client: TestClient, tenants: tuple[Tenant, Tenant], db: psycopg.Connection[Any], database_url: str,
        smtp_server: SmtpServer) -> None:
    a, _ = tenants
    email = db.execute("SELECT email FROM users WHERE id = %s", (a.user_ids["viewer"],)).fetchone()[0]
    old_session = sign_in(client, email, "pw-A").json()["token"]
    # An unknown address gets the same answer and no mail.
    for address in ("nobody@example.com", email):
        res = client.post("/v1/auth/password-reset", json={"email": address})
        assert res.status_code == 202 and res.json()["detail"].startswith("if an account has this address")
    [message] = deliver(db, database_url, smtp_server)
    assert message["To"] == email and message["Subject"] == "Reset your Wattline password"
    token = link_in(message, "reset")
    assert "30 minutes" in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    res = client.post("/v1/auth/password-reset/complete", json={"token": token, "password": "qwertyuiop123"})
    assert problem_field(res)[:2] == (422, "password")
    assert client.post("/v1/auth/password-reset/complete",
                       json={"token": token, "password": GOOD_PASSWORD}).status_code == 200
    assert client.get("/v1/me", headers=auth(old_session)).status_code == 401  # every session ended
    assert sign_in(client, email, GOOD_PASSWORD).status_code == 200
    res = client.post("/v1/auth/password-reset/complete", json={"token": token, "password": GOOD_PASSWORD + "!"})
    assert "already been used" in problem_field(res)[2]
    # A link older than 30 minutes is refused.
    client.post("/v1/auth/password-reset", json={"email": email})
    late = mail_token(db, email)
    db.execute("UPDATE account_tokens SET expires_at = created_at + interval '30 minutes', "
               "created_at = now() - interval '31 minutes' WHERE used_at IS NULL")
    db.execute("UPDATE account_tokens SET expires_at = created_at + interval '30 minutes' WHERE used_at IS NULL")
    assert "expired" in problem_field(client.post("/v1/auth/password-reset/complete",
                                                  json={"token": late, "password": GOOD_PASSWORD + "!"}))[2]


def test_resets_asked_again_and_again_send_at_most_three_mails(client: TestClient, tenants: tuple[Tenant, Tenant],
                                                               db: psycopg.Connection[Any]) -> None:
    a, _ = tenants
    email = db.execute("SELECT email FROM users WHERE id = %s", (a.user_ids["viewer"],)).fetchone()[0]
    for _ in range(6):
        assert client.post("/v1/auth/password-reset", json={"email": email}).status_code == 202
    assert count(db, "SELECT count(*) FROM mail_outbox WHERE kind = 'password_reset'") == 3


def enable_two_factor(client: TestClient, token: str) -> tuple[pyotp.TOTP, list[str]]:
    enrolment = client.post("/v1/me/two-factor", headers=auth(token)).json()
    assert enrolment["uri"].startswith("otpauth://totp/Wattline:")
    assert enrolment["qr_data_uri"].startswith("data:image/svg+xml")
    totp = pyotp.TOTP(enrolment["secret"])
    res = client.post("/v1/me/two-factor/confirm", headers=auth(token), json={"code": "000000"})
    assert problem_field(res)[:2] == (422, "code")
    res = client.post("/v1/me/two-factor/confirm", headers=auth(token), json={"code": totp.now()})
    assert res.status_code == 200, res.text
    return totp, res.json()["recovery_codes"]


def next_code(totp: pyotp.TOTP) -> str:
    """A code of a later 30-s step than any used (each step's code is accepted once)."""
    return totp.at(time.time() + 30)


def test_two_factor_sign_in_with_codes_counted_towards_lockout(client: TestClient, tenants: tuple[Tenant, Tenant],
                                                               db: psycopg.Connection[Any]) -> None:
    a, _ = tenants
    email = db.execute("SELECT email FROM users WHERE id = %s", (a.user_ids["viewer"],)).fetchone()[0]
    token = sign_in(client, email, "pw-A").json()["token"]
    totp, recovery = enable_two_factor(client, token)
    assert len(recovery) == 10 and len(set(recovery)) == 10
    assert client.get("/v1/me/two-factor", headers=auth(token)).json()["recovery_codes_left"] == 10
    # The password alone no longer signs in; the answer names the code field.
    res = sign_in(client, email, "pw-A")
    assert problem_field(res)[:2] == (401, "code")
    # A wrong code counts as a failed sign-in.
    res = sign_in(client, email, "pw-A", code="123456" if totp.now() != "123456" else "654321")
    assert res.status_code == 401 and "two-factor" in res.json()["detail"]
    assert count(db, "SELECT failures FROM login_throttle") == 1
    code = next_code(totp)
    assert sign_in(client, email, "pw-A", code=code).status_code == 200
    assert count(db, "SELECT count(*) FROM login_throttle") == 0  # a success clears the record
    # The same code again is refused (replay), and counted.
    assert sign_in(client, email, "pw-A", code=code).status_code == 401
    # A recovery code works once.
    assert sign_in(client, email, "pw-A", code=recovery[0]).status_code == 200
    assert sign_in(client, email, "pw-A", code=recovery[0]).status_code == 401
    assert client.get("/v1/me/two-factor", headers=auth(token)).json()["recovery_codes_left"] == 9
    # Ten failures lock the account even with the right password.
    for _ in range(10):
        db.execute("UPDATE login_throttle SET last_failed_at = now() - interval '1 hour'")
        sign_in(client, email, "pw-A", code="000000")
    assert sign_in(client, email, "pw-A", code=totp.now()).status_code == 429


def test_an_organisation_that_requires_two_factor(client: TestClient, tenants: tuple[Tenant, Tenant],
                                                  db: psycopg.Connection[Any]) -> None:
    a, _ = tenants
    email = db.execute("SELECT email FROM users WHERE id = %s", (a.user_ids["viewer"],)).fetchone()[0]
    assert client.put("/v1/organisation/policy", headers=auth(a.tokens["customer_admin"]),
                      json={"require_totp": True}).status_code == 200
    res = sign_in(client, email, "pw-A")
    assert res.status_code == 403 and "requires two-factor" in res.json()["detail"]
    # The policy is visible, and turning one's own off is refused while it stands.
    token = a.tokens["viewer"]
    totp, _ = enable_two_factor(client, token)
    res = client.post("/v1/me/two-factor/off", headers=auth(token), json={"code": next_code(totp)})
    assert res.status_code == 409  # refused before the code is checked: it is still unused
    assert sign_in(client, email, "pw-A", code=next_code(totp)).status_code == 200


def test_disable_ends_everything_at_once_and_sessions_can_be_listed_and_ended(
        client: TestClient, tenants: tuple[Tenant, Tenant], db: psycopg.Connection[Any]) -> None:
    a, _ = tenants
    admin = auth(a.tokens["customer_admin"])
    viewer = a.user_ids["viewer"]
    email = db.execute("SELECT email FROM users WHERE id = %s", (viewer,)).fetchone()[0]
    phone, laptop = (sign_in(client, email, "pw-A").json()["token"] for _ in range(2))
    sessions = client.get(f"/v1/people/{viewer}/sessions", headers=admin).json()
    assert len(sessions) == 2 and all(s["client"].startswith("API from") for s in sessions)
    mine = client.get("/v1/me/sessions", headers=auth(phone)).json()
    assert [s["id"] for s in mine] == [s["id"] for s in sessions]
    laptop_id = next(s["id"] for s in mine if laptop.startswith(s["prefix"]))
    assert client.delete(f"/v1/me/sessions/{laptop_id}", headers=auth(phone)).status_code == 200
    assert client.get("/v1/me", headers=auth(laptop)).status_code == 401
    assert client.get("/v1/me", headers=auth(phone)).status_code == 200
    # Disabled: the session and the API key stop at once; sign-in is refused.
    assert client.post(f"/v1/people/{viewer}/disable", headers=admin).status_code == 200
    for token in (phone, a.tokens["viewer"]):
        assert client.get("/v1/me", headers=auth(token)).status_code == 401
    assert sign_in(client, email, "pw-A").status_code == 401
    people = {p["id"]: p for p in client.get("/v1/people", headers=admin).json()}
    assert people[viewer]["status"] == "disabled" and people[viewer]["sessions"] == 0
    assert client.post(f"/v1/people/{viewer}/enable", headers=admin).status_code == 200
    assert client.get("/v1/me", headers=auth(a.tokens["viewer"])).status_code == 200
    # Nobody disables themselves; another tenant's person does not exist.
    assert client.post(f"/v1/people/{a.user_ids['customer_admin']}/disable", headers=admin).status_code == 409
    assert client.get(f"/v1/people/{viewer}/sessions",
                      headers=auth(tenants[1].tokens["customer_admin"])).status_code == 404


def test_changing_a_password_checks_the_current_one_and_ends_other_sessions(
        client: TestClient, tenants: tuple[Tenant, Tenant], db: psycopg.Connection[Any]) -> None:
    a, _ = tenants
    email = db.execute("SELECT email FROM users WHERE id = %s", (a.user_ids["viewer"],)).fetchone()[0]
    here, there = (sign_in(client, email, "pw-A").json()["token"] for _ in range(2))
    res = client.put("/v1/me/password", headers=auth(here), json={"current_password": "wrong",
                                                                  "new_password": GOOD_PASSWORD})
    assert problem_field(res)[:2] == (422, "current_password")
    res = client.put("/v1/me/password", headers=auth(here), json={"current_password": "pw-A",
                                                                  "new_password": "letmein12345"})
    assert problem_field(res)[:2] == (422, "password")
    assert client.put("/v1/me/password", headers=auth(here),
                      json={"current_password": "pw-A", "new_password": GOOD_PASSWORD}).status_code == 200
    assert client.get("/v1/me", headers=auth(here)).status_code == 200
    assert client.get("/v1/me", headers=auth(there)).status_code == 401
    assert sign_in(client, email, GOOD_PASSWORD).status_code == 200


@pytest.mark.parametrize("path", ["/v1/auth/invites/accept", "/v1/auth/password-reset/complete"])
def test_link_endpoints_are_throttled_per_address(client: TestClient, path: str) -> None:
    from wattline.accounts import ADDRESS_FAILURES

    answers = [client.post(path, json={"token": "y" * 43, "password": GOOD_PASSWORD}).status_code for _ in range(25)]
    ADDRESS_FAILURES.reset()
    assert answers[:20] == [422] * 20 and answers[-1] == 429
