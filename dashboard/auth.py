"""Sign-in for the dashboard, and the pages reached from mail: the API's users and
argon2id passwords, two-factor codes, invite and reset links.

A signed-in browser holds a login session (a row of `api_keys`, like an API login) whose
id is in the Flask session cookie. Every request reads it back, so a revoked session, a
disabled person or a changed role takes effect at the next click. Between a right password
and a right code, the cookie holds only a pending sign-in that expires in 5 minutes.
"""

from __future__ import annotations

import html
import time
from datetime import timedelta
from typing import Any

import flask
from psycopg_pool import ConnectionPool

from wattline import accounts, mail, notifications, people, two_factor
from wattline.accounts import (
    LoginRefused,
    LoginThrottled,
    Overloaded,
    SecondFactorRequired,
    SecondFactorSetupRequired,
)
from wattline.errors import DomainError
from wattline.principal import Principal
from wattline.settings import Settings

SESSION_TTL = timedelta(hours=12)
PENDING_S = 300
#: Reached without signing in (the pages of sign-in itself, mailed links, health, assets).
OPEN_PATHS = ("/login", "/login/code", "/login/enrol", "/forgot", "/health", "/favicon.ico")
OPEN_PREFIXES = ("/assets/", "/_dash-component-suites/", "/_favicon", "/invite/", "/reset/", "/unsubscribe/")

PAGE = """<!doctype html><html lang="en"><head><title>Wattline · {title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/assets/style.css"></head><body class="login">
<form method="post" class="card">
<h1>Wattline</h1>{body}</form></body></html>"""


def _page(title: str, body: str, status: int = 200) -> tuple[str, int]:
    return PAGE.format(title=html.escape(title), body=body), status


def _error(message: str, field: str = "") -> str:
    return f'<p class="error" data-field="{html.escape(field)}">{html.escape(message)}</p>'


def _client() -> str:
    return flask.request.remote_addr or "unknown"


#: Enough of a User-Agent for a person to tell their sessions apart ("Firefox on Android").
_BROWSERS = (("Edg/", "Edge"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome"), ("Safari/", "Safari"))
_SYSTEMS = (("Android", "Android"), ("iPhone", "iPhone"), ("iPad", "iPad"), ("Windows", "Windows"),
            ("Mac OS X", "macOS"), ("Linux", "Linux"))


def browser_name(agent: str) -> str:
    """"Chrome on Linux" from a User-Agent header, or "a browser" when it names none we know."""
    browser = next((name for token, name in _BROWSERS if token in agent), "a browser")
    system = next((name for token, name in _SYSTEMS if token in agent), "")
    return f"{browser} on {system}" if system else browser


def _begin(conn: Any, p: Principal) -> Any:
    """A signed-in browser: a login session, its id in the cookie."""
    agent = browser_name(flask.request.headers.get("User-Agent", ""))
    key = accounts.start_session(conn, p, SESSION_TTL, client=f"dashboard, {agent}, from {_client()}")
    flask.session.clear()
    flask.session.update(user_id=p.user_id, session_id=key.id)
    return flask.redirect("/")


def _pending() -> dict[str, Any] | None:
    pending = flask.session.get("pending")
    if not pending or time.time() - pending["at"] > PENDING_S:
        return None
    return dict(pending)


def _refusal(exc: DomainError) -> tuple[str, int]:
    status = 429 if isinstance(exc, LoginThrottled) else 503 if isinstance(exc, Overloaded) else 401
    wait = f" Try again in {exc.retry_after_s} s." if isinstance(exc, LoginThrottled | Overloaded) else ""
    return f'<p class="error">{html.escape(exc.detail.capitalize())}.{wait}</p>', status


LOGIN_BODY = """<p class="muted">Sign in to your energy portfolio</p>
{notice}{error}<label>Email <input name="email" type="email" autocomplete="username" value="{email}" required></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit" id="sign-in">Sign in</button>
<a href="/forgot" class="muted">Forgot your password?</a>"""

NOTICES = {"invite": "Your password is set. Sign in.", "reset": "Your password is changed. Sign in.",
           "expired": "Your sign-in took too long; start again.", "ended": "Your session has ended; sign in again."}


def install(server: flask.Flask, pool: ConnectionPool, settings: Settings) -> None:
    @server.before_request
    def require_login() -> Any:
        path = flask.request.path
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return None
        principal = None
        if "session_id" in flask.session:
            with pool.connection() as conn:
                principal = accounts.session_principal(conn, flask.session["session_id"], flask.session["user_id"])
        if principal is None:
            ended = "session_id" in flask.session
            if ended:  # a pending sign-in (between password and code) stays
                flask.session.clear()
            if path.startswith("/_dash"):
                return flask.Response("login required", status=401)
            return flask.redirect("/login?notice=ended" if ended else "/login")
        flask.g.principal = principal
        return None

    @server.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        error, status = "", 200
        notice = NOTICES.get(flask.request.args.get("notice", ""), "")
        if flask.request.method == "POST":
            email = flask.request.form.get("email", "")
            try:
                with pool.connection() as conn:
                    p = accounts.login(conn, email, flask.request.form.get("password", ""), client=_client())
                    return _begin(conn, p)
            except SecondFactorRequired as exc:
                flask.session.clear()
                flask.session["pending"] = {"user_id": exc.user_id, "email": email, "at": time.time()}
                return flask.redirect("/login/code")
            except SecondFactorSetupRequired as exc:
                flask.session.clear()
                flask.session["pending"] = {"user_id": exc.user_id, "email": email, "at": time.time(), "enrol": True}
                return flask.redirect("/login/enrol")
            except (LoginRefused, LoginThrottled, Overloaded) as exc:
                error, status = _refusal(exc)
        # A refused sign-in keeps the email typed (never the password): retyping it on a phone is a chore.
        notice_html = f'<p class="notice">{html.escape(notice)}</p>' if notice else ""
        return _page("sign in", LOGIN_BODY.format(notice=notice_html, error=error,
                                                  email=html.escape(flask.request.form.get("email", ""))), status)

    @server.route("/login/code", methods=["GET", "POST"])
    def login_code() -> Any:
        pending = _pending()
        if pending is None or pending.get("enrol"):
            return flask.redirect("/login?notice=expired")
        error, status = "", 200
        if flask.request.method == "POST":
            try:
                with pool.connection() as conn:
                    p = accounts.principal_of(conn, pending["user_id"])
                    if p is None:
                        raise LoginRefused()
                    p = accounts.second_factor(conn, p, pending["email"], flask.request.form.get("code", ""),
                                               client=_client())
                    return _begin(conn, p)
            except (LoginRefused, LoginThrottled, Overloaded) as exc:
                error, status = _refusal(exc)
        return _page("two-factor code", f"""<p class="muted">Enter the 6-digit code from your authenticator app,
or one of your recovery codes.</p>{error}
<label>Code <input name="code" inputmode="numeric" autocomplete="one-time-code" autofocus required></label>
<button type="submit" id="verify">Verify</button>""", status)

    @server.route("/login/enrol", methods=["GET", "POST"])
    def login_enrol() -> Any:
        """Two-factor set-up before a first sign-in, where the organisation requires it."""
        pending = _pending()
        if pending is None or not pending.get("enrol"):
            return flask.redirect("/login?notice=expired")
        error, status = "", 200
        with pool.connection() as conn:
            if flask.request.method == "POST":
                try:
                    codes = two_factor.confirm(conn, None, pending["user_id"], flask.request.form.get("code", ""))
                except DomainError as exc:
                    error, status = _error(exc.detail, "code"), 422
                else:
                    p = accounts.principal_of(conn, pending["user_id"])
                    if p is None:
                        return flask.redirect("/login?notice=expired")
                    _begin(conn, p)
                    return _page("recovery codes", recovery_codes_html(codes) +
                                 '<a class="button" href="/" id="continue">Continue</a>')
            enrolment = two_factor.begin(conn, pending["user_id"])
        return _page("set up two-factor", f"""<p>Your organisation asks for two-factor sign-in. Scan this code
with an authenticator app (or type the key), then enter the 6 digits it shows.</p>
<img class="qr" alt="QR code to scan" src="{enrolment.qr_data_uri}">
<p class="muted">Key: <code id="totp-secret">{enrolment.secret}</code></p>
{error}<label>Code <input name="code" inputmode="numeric" autocomplete="one-time-code" required></label>
<button type="submit" id="verify">Turn on and sign in</button>""", status)

    @server.route("/forgot", methods=["GET", "POST"])
    def forgot() -> Any:
        if flask.request.method == "POST":
            try:
                with pool.connection() as conn:
                    people.request_reset(conn, flask.request.form.get("email", ""), settings.dashboard_url)
            except DomainError:
                pass  # the same answer whatever happened: it must reveal nothing
            return _page("reset password", """<p id="sent">If an account has this address, a link to choose a
new password is on its way. It works once, for 30 minutes.</p><a href="/login">Back to sign-in</a>""")
        return _page("reset password", """<p class="muted">Enter your email; we will send a link to choose a new
password.</p><label>Email <input name="email" type="email" autocomplete="username" required></label>
<button type="submit" id="send-link">Send the link</button><a href="/login" class="muted">Back to sign-in</a>""")

    def _link_page(kind: str, token: str) -> Any:
        title = "set your password" if kind == "invite" else "choose a new password"
        error, status = "", 200
        try:
            with pool.connection() as conn:
                link = people.open_link(conn, token, kind)
                if flask.request.method == "POST":
                    password = flask.request.form.get("password", "")
                    if password != flask.request.form.get("confirm", ""):
                        error, status = _error("the two passwords differ", "confirm"), 422
                    else:
                        people.use_link(conn, token, kind, password)
                        return flask.redirect(f"/login?notice={kind}")
        except people.LinkInvalid as exc:
            return _page(title, f'{_error(exc.detail.capitalize() + ".", "link")}<a href="/login">Sign in</a>', 410)
        except DomainError as exc:
            error, status = _error(exc.detail.capitalize() + ".", exc.field or ""), 422
        greeting = "Welcome" if kind == "invite" else "Hello"
        return _page(title, f"""<p>{greeting}, {html.escape(link["full_name"] or link["email"])}.
Choose a password of at least 12 characters; a few unrelated words make a good one.</p>{error}
<input type="hidden" name="email" value="{html.escape(link["email"])}" autocomplete="username">
<label>Password <input name="password" type="password" autocomplete="new-password" required></label>
<label>Again <input name="confirm" type="password" autocomplete="new-password" required></label>
<button type="submit" id="set-password">Set password</button>""", status)

    @server.route("/unsubscribe/<category>/<encoded>/<signature>", methods=["GET", "POST"])
    def unsubscribe(category: str, encoded: str, signature: str) -> Any:
        """RFC 8058: a mail client POSTs "List-Unsubscribe=One-Click" and it is done; a person
        who opens the link in a browser confirms with one button (so a link scanner that
        merely fetches it unsubscribes nobody)."""
        address = mail.verify_unsubscribe(settings, category, encoded, signature)
        if address is None:
            return _page("unsubscribe", _error("This unsubscribe link is not valid.", "link"), 404)
        what = mail.CATEGORY_NAMES[category]
        if flask.request.method == "POST":
            with pool.connection() as conn:
                notifications.unsubscribe(conn, address, category)
            return _page("unsubscribed", f"""<p id="unsubscribed">Done: no more {what} to
{html.escape(address)}. You can choose again under Account › Notifications.</p>""")
        return _page("unsubscribe", f"""<p>Stop {what} from Wattline to <b>{html.escape(address)}</b>?</p>
<button type="submit" id="unsubscribe">Unsubscribe</button>""")

    @server.route("/invite/<token>", methods=["GET", "POST"])
    def invite_link(token: str) -> Any:
        return _link_page("invite", token)

    @server.route("/reset/<token>", methods=["GET", "POST"])
    def reset_link(token: str) -> Any:
        return _link_page("reset", token)

    @server.route("/logout")
    def logout() -> Any:
        principal = flask.g.get("principal")
        if principal is not None and principal.key_id is not None:
            with pool.connection() as conn:
                people.revoke_session(conn, principal, principal.user_id, principal.key_id)
        flask.session.clear()
        return flask.redirect("/login")

    @server.route("/health")
    def health() -> Any:
        """200 when the dashboard and its database answer; 503 otherwise (as the API's)."""
        try:
            with pool.connection(timeout=2) as c:
                c.execute("SELECT 1")
        except Exception:
            return {"status": "degraded", "database": "unreachable"}, 503
        return {"status": "ok", "database": "ok"}


def recovery_codes_html(codes: list[str]) -> str:
    """Recovery codes as shown once, with what they are for."""
    items = "".join(f"<li><code>{html.escape(c)}</code></li>" for c in codes)
    return (f'<p>Two-factor sign-in is on. Keep these recovery codes somewhere safe: each signs you in once '
            f'if you lose your phone. They are shown only now.</p><ol class="codes" id="recovery-codes">{items}</ol>')


def current_principal() -> Principal:
    """Who is signed in (read from their live session by `require_login`)."""
    principal: Principal = flask.g.principal
    return principal
