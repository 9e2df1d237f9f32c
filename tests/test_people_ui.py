"""Facility managers run their people without curl, in headless Chromium at phone size
(390×844) and at desktop size: an admin requires two-factor and invites someone for one
site; the invite is read back from a real SMTP server; its link sets a password (a weak one
refused next to the field), the newcomer sets up two-factor and signs in; the link does not
work twice; a wrong code is refused; the account page shows sessions and recovery codes;
the admin disables them and their next click signs them out. What the pages say is checked
against the database; screenshots of each step go to artifacts/screenshots/."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any

import psycopg
import pyotp
import pytest

from tests.fixtures.browser import DESKTOP, PHONE, choose, login, screenshot
from tests.fixtures.receivers import SmtpServer
from wattline import mail
from wattline.accounts import create_user
from wattline.domain import Role
from wattline.settings import Settings
from wattline.site_builder import SiteSpec, build_site, build_tenant

pytestmark = pytest.mark.browser
ADMIN_PASSWORD = "admin-password-for-tests"
NEW_PASSWORD = "granite lantern tulip 7"
LINK = re.compile(r"(https?://\S+/invite/[A-Za-z0-9_-]+)")


@pytest.fixture
def organisation(db: psycopg.Connection[Any]) -> dict[str, Any]:
    _, customer = build_tenant(db, "R", "Acme")
    north = build_site(db, customer, SiteSpec("North plant", timezone="Europe/London"))
    build_site(db, customer, SiteSpec("South office", timezone="Europe/London"))
    admin = create_user(db, email="admin@acme.example", password=ADMIN_PASSWORD, role=Role.CUSTOMER_ADMIN,
                        customer_id=customer, full_name="Ada Admin")
    return {"customer": customer, "north": north.site_id, "admin": admin}


shot = partial(screenshot, prefix="people")


def page_errors(page: Any) -> list[str]:
    """Console errors but the browser's note on each refused form post (a 4xx page is the answer there)."""
    return [e for e in page.console_errors if not re.search(
        r"/(login|login/code|login/enrol|invite/\S+|reset/\S+): Failed to load resource: .* status of 4\d\d", e)]


def answer(page: Any, where: str, expect: str) -> None:
    """Wait for this action's own success message."""
    try:
        page.wait_for_selector(f"#{where} .saved:has-text('{expect}')", timeout=15_000)
    except Exception as exc:
        raise AssertionError(page.inner_text("body")) from exc


@pytest.mark.parametrize("size", ["390", "desktop"])
def test_invite_link_password_two_factor_sign_in_and_disable(
        browser_page: Any, serve_dashboard: Callable[..., str], db: psycopg.Connection[Any], database_url: str,
        smtp_server: SmtpServer, organisation: dict[str, Any], size: str) -> None:
    page = browser_page
    page.set_viewport_size(PHONE if size == "390" else DESKTOP)
    base = serve_dashboard()
    page.goto(base + "/")
    login(page, "admin@acme.example", ADMIN_PASSWORD)
    page.wait_for_selector("nav a[href='/people']")

    # The admin requires two-factor for everyone and invites Sam, for North plant only.
    page.goto(base + "/people")
    page.wait_for_selector("#people-list")
    page.check("#people-require-totp input[type=checkbox]")
    page.fill("#people-domains", "acme.example")
    page.click("#people-policy-save")
    answer(page, "people-policy-message", "Policy saved")
    page.fill("#people-email", "someone@gmail.example")
    page.click("#people-invite")
    page.wait_for_selector("#people-invite-error-email:has-text('allows addresses at acme.example only')")
    page.fill("#people-email", "not-an-address")
    page.click("#people-invite")
    page.wait_for_selector("#people-invite-error-email:has-text('not an email address')")
    page.fill("#people-email", "sam@acme.example")
    page.fill("#people-name", "Sam Field")
    page.check("#people-invite-role input[value=facility_manager]")
    choose(page, "people-invite-sites", "North plant")
    page.click("#people-invite")
    answer(page, "people-invite-message", "Invite sent to sam@acme.example")
    page.wait_for_selector("#people-list td:has-text('sam@acme.example')")
    shot(page, "invited", size)
    sam = db.execute("""SELECT u.id, u.role, u.password_hash, array_agg(g.site_id) FROM users u
                        JOIN user_site_grants g ON g.user_id = u.id WHERE u.email = 'sam@acme.example'
                        GROUP BY u.id""").fetchone()
    assert sam is not None and sam[1] == "facility_manager" and sam[2] is None and sam[3] == [organisation["north"]]
    assert "North plant" in page.inner_text(f"#person-{sam[0]}") and "invited" in page.inner_text(f"#person-{sam[0]}")
    assert db.execute("SELECT require_totp, allowed_email_domains FROM customers WHERE id = %s",
                      (organisation["customer"],)).fetchone() == (True, ["acme.example"])

    # The invite arrives through the SMTP server, with a link to this dashboard.
    report = mail.send_due(db, Settings(database_url=database_url, **smtp_server.settings()))
    assert report.sent == 1
    [message] = smtp_server.messages()
    assert message["To"] == "sam@acme.example" and "Acme" in message["Subject"]
    text = message.get_body(("plain",))
    assert text is not None
    [link] = LINK.findall(text.get_content())
    assert link.startswith(base + "/invite/")

    # Sam opens it, in a browser of their own (no admin cookie).
    admin_cookies = page.context.cookies()
    page.context.clear_cookies()
    page.goto(link)
    page.wait_for_selector("text=Welcome, Sam Field")
    page.fill("input[name=password]", "password1234")
    page.fill("input[name=confirm]", "password1234")
    page.click("#set-password")
    page.wait_for_selector(".error[data-field=password]:has-text('most common passwords')")
    shot(page, "weak-password", size)
    page.fill("input[name=password]", NEW_PASSWORD)
    page.fill("input[name=confirm]", NEW_PASSWORD)
    page.click("#set-password")
    page.wait_for_selector(".notice:has-text('Your password is set')")
    login(page, "sam@acme.example", NEW_PASSWORD)

    # The organisation requires two-factor: set-up comes before the first sign-in.
    page.wait_for_selector("#totp-secret")
    shot(page, "enrol", size)
    totp = pyotp.TOTP(page.inner_text("#totp-secret"))
    page.fill("input[name=code]", "000000" if totp.now() != "000000" else "111111")
    page.click("#verify")
    page.wait_for_selector(".error[data-field=code]")
    secret = page.inner_text("#totp-secret")  # a wrong code starts over with a new key
    totp = pyotp.TOTP(secret)
    page.fill("input[name=code]", totp.now())
    page.click("#verify")
    page.wait_for_selector("#recovery-codes")
    codes = page.locator("#recovery-codes li").all_inner_texts()
    assert len(codes) == 10
    shot(page, "recovery-codes", size)
    page.click("#continue")
    page.wait_for_selector(".site-card")
    # Sam sees North plant only.
    cards = page.locator(".site-card").all_inner_texts()
    assert len(cards) == 1 and "North plant" in cards[0]
    row = db.execute("""SELECT password_hash LIKE '$argon2id$%%', totp_enabled_at IS NOT NULL,
                               (SELECT count(*) FROM totp_recovery_codes r WHERE r.user_id = u.id)
                        FROM users u WHERE id = %s""", (sam[0],)).fetchone()
    assert row == (True, True, 10)

    # The invite link does not work twice.
    page.goto(link)
    page.wait_for_selector(".error[data-field=link]:has-text('already been used')")

    # Signing in again asks for a code; a wrong one is refused and counted, a recovery code works.
    page.goto(base + "/logout")
    login(page, "sam@acme.example", NEW_PASSWORD)
    page.wait_for_selector("#verify")
    page.fill("input[name=code]", "12345")
    page.click("#verify")
    page.wait_for_selector(".error:has-text('Wrong two-factor code')")
    assert db.execute("SELECT failures FROM login_throttle").fetchone() == (1,)
    page.fill("input[name=code]", codes[0])
    page.click("#verify")
    page.wait_for_selector(".site-card")

    # The account page: sessions, two-factor state, consent, the data download.
    page.goto(base + "/account")
    page.wait_for_selector("#acct-session-list")
    assert "this one · dashboard, Chrome on Linux, from 127.0.0.1" in page.inner_text("#acct-session-list")
    assert "9 recovery code(s) left" in page.inner_text("#acct-2fa-state")
    page.check("#acct-consents input[value=email]")
    page.click("#acct-consent-save")
    answer(page, "acct-consent-message", "Consent saved")
    consent = db.execute("""SELECT granted, source FROM marketing_consents WHERE user_id = %s
                            ORDER BY id DESC LIMIT 1""", (sam[0],)).fetchone()
    assert consent == (True, "dashboard")
    with page.expect_download() as download:
        page.click("#acct-export")
    exported = download.value.path().read_text()
    assert '"email": "sam@acme.example"' in exported and '"two_factor_enabled_at"' in exported
    shot(page, "account", size)

    # The admin disables Sam; Sam's next click ends in the sign-in page.
    sam_cookies = page.context.cookies()
    page.context.clear_cookies()
    page.context.add_cookies(admin_cookies)
    page.goto(base + "/people")
    page.wait_for_selector("#people-list")
    choose(page, "people-person", "sam@acme.example")
    page.click("#people-disable")
    answer(page, "people-edit-message", "Disabled")
    page.wait_for_selector(f"#person-{sam[0]} .status-disabled")
    shot(page, "disabled", size)
    assert db.execute("SELECT disabled_at IS NOT NULL FROM users WHERE id = %s", (sam[0],)).fetchone() == (True,)
    page.context.clear_cookies()
    page.context.add_cookies(sam_cookies)
    page.goto(base + "/account")
    page.wait_for_selector(".notice:has-text('Your session has ended')")
    assert page_errors(page) == []


def test_forgotten_password_by_mail(browser_page: Any, serve_dashboard: Callable[..., str],
                                    db: psycopg.Connection[Any], database_url: str, smtp_server: SmtpServer,
                                    organisation: dict[str, Any]) -> None:
    page = browser_page
    page.set_viewport_size(PHONE)
    base = serve_dashboard()
    page.goto(base + "/login")
    page.click("text=Forgot your password?")
    page.fill("input[name=email]", "admin@acme.example")
    page.click("#send-link")
    page.wait_for_selector("#sent")
    mail.send_due(db, Settings(database_url=database_url, **smtp_server.settings()))
    [message] = smtp_server.messages()
    text = message.get_body(("plain",))
    assert text is not None and message["Subject"] == "Reset your Wattline password"
    [link] = re.findall(r"(https?://\S+/reset/[A-Za-z0-9_-]+)", text.get_content())
    page.goto(link)
    page.fill("input[name=password]", NEW_PASSWORD)
    page.fill("input[name=confirm]", NEW_PASSWORD + "x")
    page.click("#set-password")
    page.wait_for_selector(".error[data-field=confirm]:has-text('differ')")
    page.fill("input[name=password]", NEW_PASSWORD)
    page.fill("input[name=confirm]", NEW_PASSWORD)
    page.click("#set-password")
    page.wait_for_selector(".notice:has-text('Your password is changed')")
    shot(page, "reset-done", "390")
    login(page, "admin@acme.example", NEW_PASSWORD)
    page.wait_for_selector("nav a[href='/people']")
    page.goto(link)
    page.wait_for_selector(".error[data-field=link]:has-text('already been used')")
    assert page_errors(page) == []


def test_notification_preferences_and_an_unsubscribe_link(
        browser_page: Any, serve_dashboard: Callable[..., str], db: psycopg.Connection[Any], database_url: str,
        smtp_server: SmtpServer, organisation: dict[str, Any]) -> None:
    page = browser_page
    page.set_viewport_size(PHONE)
    base = serve_dashboard()
    page.goto(base + "/login")
    login(page, "admin@acme.example", ADMIN_PASSWORD)
    page.wait_for_selector("nav a[href='/account']")
    page.goto(base + "/account")
    page.wait_for_selector("#acct-alert-email")
    page.check("#acct-alert-email input[value=digest]")
    page.fill("#acct-quiet", "22-7")
    page.click("#acct-notifications-save")
    page.wait_for_selector("#acct-error-notifications:has-text('22:00-07:00')")
    page.fill("#acct-quiet", "22:00-07:00")
    page.click("#acct-notifications-save")
    answer(page, "acct-notifications-message", "Notifications saved")
    prefs = db.execute("""SELECT alert_email, to_char(quiet_start, 'HH24:MI'), to_char(quiet_end, 'HH24:MI')
                          FROM notification_preferences WHERE user_id = %s""", (organisation["admin"],)).fetchone()
    assert prefs == ("digest", "22:00", "07:00")
    shot(page, "notifications", "390")
    # An alert mail's unsubscribe link, opened in the browser: one button, then done.
    mail.queue(db, kind="alert", to="admin@acme.example", user_id=organisation["admin"], subject="Freezer tripped",
               text="0 A since 02:00", category="alerts")
    mail.send_due(db, Settings(database_url=database_url, public_url=base, **smtp_server.settings()))
    [message] = smtp_server.messages()
    [link] = re.findall(r"<(https?://[^>]+)>", str(message["List-Unsubscribe"]))
    page.goto(link)
    page.click("#unsubscribe")
    page.wait_for_selector("#unsubscribed:has-text('no more alert mail')")
    shot(page, "unsubscribed", "390")
    assert db.execute("SELECT alert_email FROM notification_preferences WHERE user_id = %s",
                      (organisation["admin"],)).fetchone() == ("off",)
    assert page_errors(page) == []
