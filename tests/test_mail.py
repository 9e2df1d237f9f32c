"""Mail, a real part: the outbox is sent through a real SMTP server (`wattline mailbox`,
with STARTTLS and a login), read back from its Maildir. A message belongs to the
transaction that queued it; one bad message fails alone; a server that is down or refuses
us charges no message and everything goes once it is back; erasure and retention reach
the outbox."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.factories import count
from tests.fixtures.receivers import SmtpServer
from wattline import mail, privacy
from wattline.accounts import create_user
from wattline.domain import Role
from wattline.retention import run_retention
from wattline.settings import Settings


@pytest.fixture
def sending(database_url: str, smtp_server: SmtpServer) -> Settings:
    return Settings(database_url=database_url, **smtp_server.settings())


def queue(db: psycopg.Connection[Any], to: str = "fm@example.com", **kw: Any) -> int:
    queued = mail.queue(db, kind="test", to=to, subject=kw.pop("subject", "Freezer tripped"),
                      text=kw.pop("text", "The freezer circuit drew 0 A since 02:00."), **kw)
    assert queued is not None
    return queued


def test_a_message_is_sent_with_its_text_and_html_parts(db: psycopg.Connection[Any], sending: Settings,
                                                        smtp_server: SmtpServer) -> None:
    queue(db, html="<p>The freezer circuit drew <b>0 A</b> since 02:00.</p>")
    report = mail.send_due(db, sending)
    assert (report.sent, report.retried, report.given_up, report.unreachable) == (1, 0, 0, None)
    [message] = smtp_server.messages()
    assert message["To"] == "fm@example.com" and message["Subject"] == "Freezer tripped"
    assert message["From"] == sending.mail_from and message["Message-ID"].endswith("@wattline.example>")
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and "0 A since 02:00" in text.get_content()
    assert html is not None and "<b>0 A</b>" in html.get_content()
    assert count(db, "SELECT count(*) FROM mail_outbox WHERE sent_at IS NOT NULL AND attempts = 1") == 1
    assert mail.send_due(db, sending).sent == 0  # sent once, never again


def test_a_rolled_back_change_sends_nothing(db: psycopg.Connection[Any], sending: Settings,
                                            smtp_server: SmtpServer) -> None:
    with pytest.raises(RuntimeError), db.transaction():
        queue(db)
        raise RuntimeError("the change failed after queueing its mail")
    assert mail.send_due(db, sending).sent == 0 and smtp_server.messages() == []


def test_one_bad_message_fails_alone(db: psycopg.Connection[Any], sending: Settings,
                                     smtp_server: SmtpServer) -> None:
    queue(db, to="a@example.com")
    bad = queue(db, to="nobody@no-such-domain.invalid")  # refused for good (550)
    queue(db, to="b@example.com")
    report = mail.send_due(db, sending)
    assert report.sent == 2 and report.given_up == 1
    assert sorted(m["To"] for m in smtp_server.messages()) == ["a@example.com", "b@example.com"]
    row = db.execute("SELECT given_up_at IS NOT NULL, last_error FROM mail_outbox WHERE id = %s", (bad,)).fetchone()
    assert row is not None and row[0] and "SMTPRecipientsRefused" in row[1]


def test_a_message_refused_for_now_is_retried_later(db: psycopg.Connection[Any], sending: Settings,
                                                    smtp_server: SmtpServer) -> None:
    smtp_server.stop()
    smtp_server.start(greylist=True)
    queue(db)
    first = mail.send_due(db, sending)
    assert (first.sent, first.retried) == (0, 1)
    row = db.execute("SELECT attempts, next_attempt_at - now() FROM mail_outbox").fetchone()
    assert row is not None and row[0] == 1 and timedelta(seconds=20) < row[1] <= timedelta(seconds=30)
    assert mail.send_due(db, sending).sent == 0  # not before its time
    db.execute("UPDATE mail_outbox SET next_attempt_at = now()")
    assert mail.send_due(db, sending).sent == 1 and len(smtp_server.messages()) == 1


def test_a_server_that_is_down_charges_no_message_and_everything_goes_when_it_is_back(
        db: psycopg.Connection[Any], sending: Settings, smtp_server: SmtpServer) -> None:
    smtp_server.stop()
    ids = [queue(db, to=f"p{i}@example.com") for i in range(3)]
    report = mail.send_due(db, sending)
    assert report.sent == 0 and report.unreachable is not None and "ConnectionRefusedError" in report.unreachable
    rows = db.execute("SELECT attempts, last_error FROM mail_outbox ORDER BY id").fetchall()
    assert [r[0] for r in rows] == [0, 0, 0]
    assert "ConnectionRefusedError" in rows[0][1]  # the reason is kept where an operator looks
    smtp_server.start()
    assert mail.send_due(db, sending).sent == 3
    assert sorted(m["To"] for m in smtp_server.messages()) == [f"p{i}@example.com" for i in range(3)]
    assert count(db, "SELECT count(*) FROM mail_outbox WHERE sent_at IS NULL") == 0 and len(ids) == 3


def test_a_wrong_smtp_password_is_the_server_s_problem_not_the_message_s(
        db: psycopg.Connection[Any], sending: Settings, smtp_server: SmtpServer) -> None:
    queue(db)
    report = mail.send_due(db, sending.model_copy(update={"smtp_password": "wrong"}))
    assert report.sent == 0 and report.unreachable is not None and "SMTPAuthenticationError" in report.unreachable
    assert count(db, "SELECT count(*) FROM mail_outbox WHERE attempts = 0 AND given_up_at IS NULL") == 1
    assert mail.send_due(db, sending).sent == 1


def test_plain_text_is_refused_when_starttls_is_required(db: psycopg.Connection[Any], sending: Settings,
                                                         smtp_server: SmtpServer) -> None:
    """The server requires STARTTLS; a sender configured without it is refused, and nothing is charged."""
    queue(db)
    report = mail.send_due(db, sending.model_copy(update={"smtp_starttls": False}))
    assert report.sent == 0 and report.unreachable is not None
    assert smtp_server.messages() == []


def test_mail_without_a_server_waits_then_gives_up_after_three_days(db: psycopg.Connection[Any],
                                                                    database_url: str) -> None:
    message = queue(db)
    unconfigured = Settings(database_url=database_url)
    assert mail.send_due(db, unconfigured).sent == 0
    assert count(db, "SELECT count(*) FROM mail_outbox WHERE given_up_at IS NULL") == 1  # waits
    db.execute("UPDATE mail_outbox SET created_at = now() - interval '4 days' WHERE id = %s", (message,))
    refused = unconfigured.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": 9})
    mail.send_due(db, refused)
    row = db.execute("SELECT given_up_at IS NOT NULL, last_error FROM mail_outbox").fetchone()
    assert row is not None and row[0] and "not sent within 3 days" in row[1]


def test_erasure_and_retention_reach_the_outbox(db: psycopg.Connection[Any], sending: Settings,
                                                tenants: Any) -> None:
    a, _ = tenants
    email = f"p-{uuid.uuid4().hex[:6]}@example.com"
    person = create_user(db, email=email, password=None, role=Role.VIEWER, customer_id=a.customer_id)
    queue(db, to=email, user_id=person)
    queue(db, to="someone-else@example.com")
    assert [m["to_address"] for m in privacy.export_person(db, person, None)["mail"]] == [email]
    privacy.erase(db, person, None)
    assert count(db, "SELECT count(*) FROM mail_outbox WHERE to_address = %s", email) == 0
    assert mail.send_due(db, sending).sent == 1
    removed = {r.category: r.rows for r in run_retention(db, sending, now=datetime.now(UTC) + timedelta(days=31))}
    assert removed["sent mail"] == 1 and count(db, "SELECT count(*) FROM mail_outbox") == 0
