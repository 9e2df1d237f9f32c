"""A local SMTP server that keeps every message it receives in a Maildir.

What `wattline up` sends its mail to when no SMTP server is configured (read it in
`.wattline/mail/new/`, one file per message, or with any Maildir reader such as
`mutt -f .wattline/mail`), and what the tests read mail back from. It is aiosmtpd, a
real SMTP server: optionally with STARTTLS and a login, so that the sender's TLS and
authentication are exercised for real.
"""

from __future__ import annotations

import hmac
import ssl
import threading
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword


def _authenticator(login: str, password: str) -> Any:
    def check(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword)
              and hmac.compare_digest(auth_data.login, login.encode())
              and hmac.compare_digest(auth_data.password, password.encode()))
        return AuthResult(success=ok, handled=False)
    return check


class _Maildir(Mailbox):
    """aiosmtpd's Maildir handler, refusing what a real server refuses: recipients in the
    reserved `.invalid` domain for good (550, RFC 2606), and with `greylist` each recipient's
    first attempt for now (451, as greylisting servers do), so a sender's retries get exercised."""

    def __init__(self, mail_dir: Path, greylist: bool) -> None:
        super().__init__(mail_dir)
        self.greylist = greylist
        self.seen: set[str] = set()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address.lower().endswith(".invalid"):
            return "550 5.1.2 Bad destination system address"
        if self.greylist and address.lower() not in self.seen:
            self.seen.add(address.lower())
            return "451 4.7.1 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


class LocalMailbox:
    """An SMTP server on `host`:`port` that stores what it receives in `mail_dir`."""

    def __init__(self, mail_dir: Path, port: int, *, host: str = "127.0.0.1", tls_cert: Path | None = None,
                 tls_key: Path | None = None, login: str | None = None, password: str | None = None,
                 greylist: bool = False) -> None:
        for sub in ("tmp", "new", "cur"):  # a Maildir; Python's only makes these for a folder it creates
            (mail_dir / sub).mkdir(parents=True, exist_ok=True)
        self.mail_dir, self.port = mail_dir, port
        options: dict[str, Any] = {}
        if tls_cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls_cert, tls_key)
            options.update(tls_context=context, require_starttls=True)
        if login is not None:
            options.update(authenticator=_authenticator(login, password or ""), auth_required=True,
                           auth_require_tls=tls_cert is not None)
        self.controller = Controller(_Maildir(mail_dir, greylist), hostname=host, port=port, **options)

    def serve_forever(self, stop: threading.Event) -> None:
        """Serve until `stop` is set (the CLI sets it on SIGTERM or Ctrl-C)."""
        self.controller.start()
        try:
            stop.wait()
        finally:
            self.controller.stop()
