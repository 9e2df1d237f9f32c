"""Mail through any SMTP server, from a transactional outbox.

`queue` adds a message in the caller's transaction: the mail about a change goes out if
and only if the change commits, and a crash between the two loses nothing. `send_due`
(run by the alert service every pass) sends what is due, one message at a time:

- a message the server refuses for good (a 5xx answer) is given up, with the reason kept;
- any other failure of that message is retried with growing delays, up to MAX_ATTEMPTS;
- a server that cannot be reached or will not let us in ends the pass early, charging no
  message for it (they are not to blame); a message still unsent after MAX_AGE is given up.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from html import escape as html_escape
from typing import Any, Literal

import psycopg

from wattline.db import fetch_one
from wattline.settings import Settings

MAX_ATTEMPTS = 8
FIRST_RETRY_S = 30.0
MAX_RETRY_S = 3600.0
MAX_AGE = timedelta(days=3)
BATCH = 100


@dataclass
class MailReport:
    """What one pass of the outbox did."""

    sent: int = 0
    retried: int = 0
    given_up: int = 0
    #: the server could not be reached or refused us; the rest of the outbox waits
    unreachable: str | None = None


#: What a person can unsubscribe from. "security" mail (a reset link the person asked for) is
#: sent whatever they chose: it answers their own request. It still carries the link.
CATEGORIES = ("alerts", "reports", "invites", "account")
Category = Literal["alerts", "reports", "invites", "account", "security"]
CATEGORY_NAMES = {"alerts": "alert mail", "reports": "report mail", "invites": "invitations",
                  "account": "account notices", "security": "account notices"}


def address_digest(address: str) -> str:
    """The key of an address's unsubscribes (SHA-256 of it lower-cased)."""
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()


def _signature(secret: str, address: str, category: str) -> str:
    mac = hmac.new(secret.encode(), f"unsubscribe:{category}:{address.strip().lower()}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:18]).decode()


def unsubscribe_url(settings: Settings, address: str, category: str) -> str:
    """The signed one-click link that stops this category of mail to this address."""
    unsubscribable = "account" if category == "security" else category
    encoded = base64.urlsafe_b64encode(address.strip().lower().encode()).decode().rstrip("=")
    return (f"{settings.dashboard_url}/unsubscribe/{unsubscribable}/{encoded}/"
            f"{_signature(settings.secret_key, address, unsubscribable)}")


def verify_unsubscribe(settings: Settings, category: str, encoded: str, signature: str) -> str | None:
    """The address a link is for, if the link is one we signed; else None."""
    if category not in CATEGORIES:
        return None
    try:
        address = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return address if hmac.compare_digest(_signature(settings.secret_key, address, category), signature) else None


def suppressed(conn: psycopg.Connection[Any], address: str, category: Category) -> bool:
    """Whether the address has unsubscribed from this category (never for security mail)."""
    if category == "security":
        return False
    return fetch_one(conn, "SELECT 1 AS yes FROM mail_suppressions WHERE address_digest = %s AND category = %s",
                     (address_digest(address), category)) is not None


def queue(conn: psycopg.Connection[Any], *, kind: str, to: str, subject: str, text: str,
          html: str | None = None, user_id: int | None = None, category: Category = "account",
          not_before: datetime | None = None, attachment: tuple[str, str, bytes] | None = None) -> int | None:
    """Queue a message in the caller's transaction; returns its outbox id, or None when the
    address has unsubscribed from its category. `user_id`: the person it is addressed to, so
    that erasing them deletes it. `not_before`: hold it until then (a person's quiet hours).
    `attachment`: (file name, media type, bytes), a report's PDF."""
    if suppressed(conn, to, category):
        return None
    name, media, data = attachment or (None, None, None)
    row = fetch_one(conn, """INSERT INTO mail_outbox (kind, user_id, to_address, subject, body_text, body_html,
                                                      category, next_attempt_at, attachment_name, attachment_type,
                                                      attachment)
                             VALUES (%s, %s, %s, %s, %s, %s, %s, COALESCE(%s, now()), %s, %s, %s) RETURNING id""",
                    (kind, user_id, to, subject, text, html, category, not_before, name, media, data))
    assert row is not None
    return int(row["id"])


def build_message(row: dict[str, Any], sender: str, unsubscribe: str | None = None) -> EmailMessage:
    """The outbox row as a MIME message: a text part, and an HTML alternative when given; with
    `unsubscribe`, RFC 8058 one-click headers and a line at the foot of each part."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = row["to_address"]
    message["Subject"] = row["subject"]
    message["Date"] = formatdate(usegmt=True)
    domain = parseaddr(sender)[1].rpartition("@")[2] or "wattline.invalid"
    message["Message-ID"] = make_msgid(f"outbox.{row['id']}", domain=domain)
    text, body_html = row["body_text"], row["body_html"]
    if unsubscribe:
        what = CATEGORY_NAMES.get(row.get("category") or "account", "this mail")
        message["List-Unsubscribe"] = f"<{unsubscribe}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        text = f"{text.rstrip()}\n\n--\nTo stop {what} from Wattline: {unsubscribe}\n"
        if body_html:
            body_html += (f'<hr><p style="font-size:12px;color:#66707d">To stop {what} from Wattline, '
                          f'<a href="{html_escape(unsubscribe)}">unsubscribe</a>.</p>')
    message.set_content(text)
    if body_html:
        message.add_alternative(body_html, subtype="html")
    if row.get("attachment") is not None:
        maintype, _, subtype = (row["attachment_type"] or "application/octet-stream").partition("/")
        message.add_attachment(bytes(row["attachment"]), maintype=maintype, subtype=subtype,
                               filename=row["attachment_name"])
    return message


class Unreachable(Exception):
    """The SMTP server could not be reached, or would not let us in: no message's fault."""


class SmtpConnection:
    """One SMTP session for a pass, opened on first use (STARTTLS and login as configured)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None

    def _open(self) -> smtplib.SMTP:
        s = self.settings
        assert s.smtp_host is not None
        try:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s)
            try:
                smtp.ehlo()
                if s.smtp_starttls:
                    context = ssl.create_default_context(cafile=str(s.smtp_ca_file) if s.smtp_ca_file else None)
                    smtp.starttls(context=context)  # raises SMTPNotSupportedError: never fall back to plain
                    smtp.ehlo()
                if s.smtp_username:
                    smtp.login(s.smtp_username, s.smtp_password)
            except BaseException:
                smtp.close()
                raise
        except (OSError, smtplib.SMTPException) as exc:
            raise Unreachable(_reason(exc)) from exc
        return smtp

    def send(self, message: EmailMessage) -> None:
        """Send one message; raises `Unreachable` for the server, anything else for the message."""
        if self._smtp is None:
            self._smtp = self._open()
        try:
            self._smtp.send_message(message)
        except (smtplib.SMTPServerDisconnected, ConnectionError, TimeoutError) as exc:
            self.close()
            raise Unreachable(_reason(exc)) from exc

    def close(self) -> None:
        """Say goodbye if we can; a dead session is just dropped."""
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (OSError, smtplib.SMTPException):
                self._smtp.close()
            self._smtp = None


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:500].replace("\x00", "")


def _permanent(exc: BaseException) -> bool:
    """A 5xx from the server for this message (bad recipient, refused content): no retry helps."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    return isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code >= 500


def send_due(conn: psycopg.Connection[Any], settings: Settings, *, limit: int = BATCH) -> MailReport:
    """Send up to `limit` due messages, each in its own transaction (see the module's rules)."""
    report = MailReport()
    if settings.smtp_host is None:
        return report  # no server configured: mail waits in the outbox
    conn.execute("""UPDATE mail_outbox SET given_up_at = now(),
                           last_error = COALESCE(last_error || '; ', '') || 'not sent within ' || %s
                    WHERE sent_at IS NULL AND given_up_at IS NULL AND created_at < now() - %s""",
                 (f"{MAX_AGE.days} days", MAX_AGE))
    smtp = SmtpConnection(settings)
    try:
        for _ in range(limit):
            with conn.transaction():
                row = fetch_one(conn, """
                    SELECT id, to_address, subject, body_text, body_html, attempts, category, attachment_name,
                           attachment_type, attachment FROM mail_outbox
                    WHERE sent_at IS NULL AND given_up_at IS NULL AND next_attempt_at <= now()
                    ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED""")
                if row is None:
                    break
                try:
                    smtp.send(build_message(row, settings.mail_from,
                                            unsubscribe_url(settings, row["to_address"], row["category"])))
                except Unreachable as exc:
                    report.unreachable = str(exc)
                    conn.execute("UPDATE mail_outbox SET last_error = %s WHERE id = %s", (str(exc), row["id"]))
                    break
                except Exception as exc:  # this message's fault, whatever it raised: it alone waits
                    attempts = row["attempts"] + 1
                    if _permanent(exc) or attempts >= MAX_ATTEMPTS:
                        report.given_up += 1
                        conn.execute("""UPDATE mail_outbox SET attempts = %s, given_up_at = now(), last_error = %s
                                        WHERE id = %s""", (attempts, _reason(exc), row["id"]))
                    else:
                        report.retried += 1
                        delay = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** (attempts - 1))
                        conn.execute("""UPDATE mail_outbox SET attempts = %s, last_error = %s,
                                               next_attempt_at = now() + make_interval(secs => %s)
                                        WHERE id = %s""", (attempts, _reason(exc), delay, row["id"]))
                    continue
                report.sent += 1
                conn.execute("UPDATE mail_outbox SET attempts = attempts + 1, sent_at = now(), last_error = NULL "
                             "WHERE id = %s", (row["id"],))
    finally:
        smtp.close()
    return report
