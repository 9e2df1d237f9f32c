"""Login for the dashboard: the API's users and argon2id passwords, in a Flask session."""

from __future__ import annotations

import html
from typing import Any

import flask
from psycopg_pool import ConnectionPool

from wattline.accounts import LoginRefused, LoginThrottled, Overloaded
from wattline.accounts import login as login_with_password
from wattline.domain import Role
from wattline.principal import Principal

LOGIN_FORM = """<!doctype html><html><head><title>Wattline · sign in</title>
<link rel="stylesheet" href="/assets/style.css"></head><body class="login">
<form method="post" action="/login" class="card">
<h1>Wattline</h1><p class="muted">Sign in to your energy portfolio</p>
{error}<label>Email <input name="email" type="email" autocomplete="username" value="{email}" required></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit" id="sign-in">Sign in</button></form></body></html>"""


def install(server: flask.Flask, pool: ConnectionPool) -> None:
    @server.before_request
    def require_login() -> Any:
        path = flask.request.path
        if path in ("/login", "/health") or path.startswith(("/assets/", "/_dash-component-suites/", "/_favicon")):
            return None
        if "user_id" not in flask.session:
            if path.startswith("/_dash"):
                return flask.Response("login required", status=401)
            return flask.redirect("/login")
        return None

    @server.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        error = ""
        status = 200
        if flask.request.method == "POST":
            try:
                with pool.connection() as conn:
                    p = login_with_password(conn, flask.request.form.get("email", ""),
                                            flask.request.form.get("password", ""),
                                            client=flask.request.remote_addr or "unknown")
            except (LoginRefused, LoginThrottled, Overloaded) as exc:
                status = 429 if isinstance(exc, LoginThrottled) else 503 if isinstance(exc, Overloaded) else 401
                wait = f" Try again in {exc.retry_after_s} s." if isinstance(exc, LoginThrottled) else ""
                error = f'<p class="error">{html.escape(exc.detail.capitalize())}.{wait}</p>'
            else:
                flask.session.clear()
                flask.session.update(user_id=p.user_id, role=p.role.value, reseller_id=p.reseller_id,
                                     customer_id=p.customer_id, scopes=sorted(p.scopes),
                                     site_ids=sorted(p.site_ids) if p.site_ids is not None else None)
                return flask.redirect("/")
        # A refused sign-in keeps the email typed (never the password): retyping it on a phone is a chore.
        return LOGIN_FORM.format(error=error, email=html.escape(flask.request.form.get("email", ""))), status

    @server.route("/logout")
    def logout() -> Any:
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


def current_principal() -> Principal:
    s = flask.session
    sites = s.get("site_ids")
    return Principal(s["user_id"], Role(s["role"]), s.get("reseller_id"), s.get("customer_id"),
                     frozenset(s.get("scopes", [])), site_ids=frozenset(sites) if sites is not None else None)
