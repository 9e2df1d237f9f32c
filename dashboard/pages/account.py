"""A person's own account: contact details, password, two-factor sign-in with recovery codes,
their sessions, marketing consent per channel, and a download of everything held about
them (the privacy notice's rights of access, rectification and consent, without curl).
Every change is one function of `wattline.people`, `wattline.two_factor` or
`wattline.privacy`, the same the API calls."""

from __future__ import annotations

from datetime import time
from typing import Any
from zoneinfo import available_timezones

import dash
from dash import Dash, Input, Output, State, ctx, dcc, html

from dashboard.auth import current_principal
from dashboard.data import conn
from wattline import notifications, people, privacy, two_factor
from wattline.errors import DomainError, Invalid

ZONES = [{"label": z, "value": z} for z in sorted(available_timezones()) if "/" in z or z == "UTC"]
CHANNEL_NAMES = {"email": "Email", "sms": "Text message", "phone": "Phone calls", "post": "Post"}


def register(app: Dash) -> None:
    dash.register_page("account", path="/account", title="Your account · Wattline", layout=layout)
    app.callback(Output("acct-details-message", "children"), Output("acct-error-email", "children"),
                 Output("acct-error-full_name", "children"),
                 Input("acct-details-save", "n_clicks"), State("acct-name", "value"), State("acct-email", "value"),
                 State("acct-phone", "value"), prevent_initial_call=True)(save_details)
    app.callback(Output("acct-password-message", "children"), Output("acct-error-current_password", "children"),
                 Output("acct-error-password", "children"), Output("acct-done", "data", allow_duplicate=True),
                 Input("acct-password-save", "n_clicks"), State("acct-current", "value"),
                 State("acct-new", "value"), State("acct-again", "value"), State("acct-done", "data"),
                 prevent_initial_call=True)(change_password)
    app.callback(Output("acct-2fa", "children"), Output("acct-sessions", "children"),
                 Output("acct-session-pick", "options"), Output("acct-2fa-when-off", "style"),
                 Output("acct-2fa-when-on", "style"), Input("acct-done", "data"))(refresh)
    app.callback(Output("acct-2fa-step", "children"), Output("acct-2fa-error", "children"),
                 Output("acct-done", "data", allow_duplicate=True),
                 Input("acct-2fa-start", "n_clicks"), Input("acct-2fa-confirm", "n_clicks"),
                 Input("acct-2fa-codes", "n_clicks"), Input("acct-2fa-off", "n_clicks"),
                 State("acct-2fa-code", "value"), State("acct-done", "data"),
                 prevent_initial_call=True)(two_factor_step)
    app.callback(Output("acct-session-message", "children"), Output("acct-done", "data", allow_duplicate=True),
                 Input("acct-session-end", "n_clicks"), Input("acct-session-end-others", "n_clicks"),
                 State("acct-session-pick", "value"), State("acct-done", "data"),
                 prevent_initial_call=True)(end_sessions)
    app.callback(Output("acct-notifications-message", "children"), Output("acct-error-notifications", "children"),
                 Input("acct-notifications-save", "n_clicks"), State("acct-alert-email", "value"),
                 State("acct-digest-hour", "value"), State("acct-quiet", "value"), State("acct-timezone", "value"),
                 State("acct-report-email", "value"), prevent_initial_call=True)(save_notifications)
    app.callback(Output("acct-consent-message", "children"), Input("acct-consent-save", "n_clicks"),
                 State("acct-consents", "value"), prevent_initial_call=True)(save_consents)


def _field_error(field: str) -> html.Div:
    return html.Div(id=f"acct-error-{field}", className="error field-error")


def layout(**_: Any) -> html.Div:
    p = current_principal()
    with conn() as c:
        me = people.profile(c, p.user_id)
        consents = privacy.consents(c, p.user_id)
        prefs = notifications.preferences(c, p.user_id)
    return html.Div([
        dcc.Store(id="acct-done", data=0),
        html.H2("Your account"),
        html.P(f"{me['email']} · {people.ROLE_NAMES[p.role]} at {me['org']}", className="muted"),
        html.Div([
            html.Div([
                html.H3("Contact details"),
                html.Label(["Name", dcc.Input(id="acct-name", type="text", value=me["full_name"])]),
                _field_error("full_name"),
                html.Label(["Email", dcc.Input(id="acct-email", type="email", value=me["email"])]),
                _field_error("email"),
                html.Label(["Phone", dcc.Input(id="acct-phone", type="tel", value=me["phone"] or "")]),
                html.Button("Save details", id="acct-details-save", className="primary"),
                html.Div(id="acct-details-message", role="status"),
            ], className="card form"),
            html.Div([
                html.H3("Password"),
                html.Label(["Current password", dcc.Input(id="acct-current", type="password")]),
                _field_error("current_password"),
                html.Label(["New password (12 characters at least)", dcc.Input(id="acct-new", type="password")]),
                html.Label(["New password again", dcc.Input(id="acct-again", type="password")]),
                _field_error("password"),
                html.Button("Change password", id="acct-password-save", className="primary"),
                html.Div(id="acct-password-message", role="status"),
            ], className="card form"),
            html.Div([
                html.H3("Two-factor sign-in"),
                html.Div(id="acct-2fa"),
                html.Div(id="acct-2fa-step"),
                html.Label(["Code from your app", dcc.Input(id="acct-2fa-code", type="text", inputMode="numeric",
                                                            autoComplete="one-time-code")]),
                html.Div(id="acct-2fa-error", className="error field-error"),
                # Only the buttons that make sense in the current state show (refresh sets which).
                html.Div([html.Button("Set up", id="acct-2fa-start", className="small"),
                          html.Button("Turn on", id="acct-2fa-confirm", className="primary")],
                         className="toolbar wrap", id="acct-2fa-when-off"),
                html.Div([html.Button("New recovery codes", id="acct-2fa-codes", className="small"),
                          html.Button("Turn off", id="acct-2fa-off", className="small danger")],
                         className="toolbar wrap", id="acct-2fa-when-on"),
            ], className="card form"),
            html.Div([
                html.H3("Where you are signed in"),
                html.Div(id="acct-sessions", className="table-scroll"),
                html.Label(["Session", dcc.Dropdown(id="acct-session-pick", placeholder="Pick a session")]),
                html.Div([html.Button("End it", id="acct-session-end", className="small danger"),
                          html.Button("End all others", id="acct-session-end-others", className="small")],
                         className="toolbar wrap"),
                html.Div(id="acct-session-message", role="status"),
            ], className="card form"),
            html.Div([
                html.H3("Notifications"),
                html.P("The Alerts page always shows everything; this is what reaches your inbox.",
                       className="muted"),
                html.Label(["Alert mail", dcc.RadioItems(id="acct-alert-email", value=prefs["alert_email"],
                                                         inline=True, options=[
                    {"label": " as it happens ", "value": "immediate"},
                    {"label": " one daily digest ", "value": "digest"}, {"label": " none ", "value": "off"}])]),
                html.Label(["Digest at (hour, 0–23)", dcc.Input(id="acct-digest-hour", type="number", min=0, max=23,
                                                                value=prefs["digest_hour"])]),
                html.Label(["Quiet hours (alert mail waits), e.g. 22:00-07:00",
                            dcc.Input(id="acct-quiet", type="text", value=_quiet(prefs))]),
                html.Label(["Your time zone", dcc.Dropdown(id="acct-timezone", value=prefs["timezone"],
                                                           options=ZONES, clearable=False)]),
                dcc.Checklist(id="acct-report-email", inline=True, value=["on"] if prefs["report_email"] else [],
                              options=[{"label": " Monthly site reports by mail", "value": "on"}]),
                html.Div(id="acct-error-notifications", className="error field-error"),
                html.Button("Save notifications", id="acct-notifications-save", className="primary"),
                html.Div(id="acct-notifications-message", role="status"),
            ], className="card form"),
            html.Div([
                html.H3("Your data and consent"),
                html.P(["Everything Wattline holds about you, as one JSON file: ",
                        html.A("Download my data", href="/account/export.json", id="acct-export")]),
                html.P("News and offers from us reach you only where you say so; alerts and reports you set up "
                       "are not marketing and are not affected.", className="muted"),
                dcc.Checklist(id="acct-consents", inline=True, options=[{"label": f" {name}", "value": ch}
                                                           for ch, name in CHANNEL_NAMES.items()],
                              value=[ch for ch, state in consents.items() if state["granted"]]),
                html.Button("Save consent", id="acct-consent-save", className="primary"),
                html.Div(id="acct-consent-message", role="status"),
            ], className="card form"),
        ], className="cards"),
    ], className="page account")


def save_details(_n: int, name: str | None, email: str | None, phone: str | None) -> tuple[Any, ...]:
    p = current_principal()
    try:
        with conn() as c:
            changed = privacy.rectify(c, p.user_id, p, {"full_name": (name or "").strip(), "email": email or "",
                                                        "phone": (phone or "").strip() or None})
    except DomainError as exc:
        field = exc.field or "email"
        return "", exc.detail.capitalize() + "." if field == "email" else "", "" if field == "email" else exc.detail
    except privacy.PrivacyError as exc:
        return "", "", str(exc).capitalize() + "."
    return html.Span(f"Saved ({', '.join(changed)}).", className="saved"), "", ""


def change_password(_n: int, current: str | None, new: str | None, again: str | None, done: int) -> tuple[Any, ...]:
    if (new or "") != (again or ""):
        return "", "", "The two new passwords differ.", dash.no_update
    try:
        with conn() as c:
            people.change_password(c, current_principal(), current or "", new or "")
    except DomainError as exc:
        if exc.field == "current_password":
            return "", exc.detail.capitalize() + ".", "", dash.no_update
        return "", "", exc.detail.capitalize() + ".", dash.no_update
    return html.Span("Password changed; your other sessions have ended.", className="saved"), "", "", done + 1


def refresh(_done: int) -> tuple[Any, ...]:
    p = current_principal()
    with conn() as c:
        state = two_factor.status(c, p.user_id)
        live = people.sessions(c, p.user_id)
    said = (f"On since {state['enabled_at']:%Y-%m-%d}; {state['recovery_codes_left']} recovery code(s) left."
            if state["enabled"] else "Off. Set it up to sign in with a code from your phone as well.")
    rows = [html.Tr([html.Td(("this one · " if s["id"] == p.key_id else "") + (s["client"] or s["prefix"])),
                     html.Td(f"{s['created_at']:%Y-%m-%d %H:%M}"),
                     html.Td(f"{s['last_used_at']:%Y-%m-%d %H:%M}" if s["last_used_at"] else "—")]) for s in live]
    table = html.Table([html.Tr([html.Th("Session"), html.Th("Started"), html.Th("Last used")]), *rows],
                       className="grid", id="acct-session-list")
    options = [{"label": f"{s['prefix']} · {(s['client'] or '')[:40]}", "value": s["id"]} for s in live]
    hidden: dict[str, str] = {"display": "none"}
    shown: dict[str, str] = {}
    return (html.P(said, id="acct-2fa-state"), table, options, hidden if state["enabled"] else shown,
            shown if state["enabled"] else hidden)


def two_factor_step(*args: Any) -> tuple[Any, ...]:
    code, done = args[4:]
    p = current_principal()
    action = ctx.triggered_id
    try:
        with conn() as c:
            if action == "acct-2fa-start":
                enrolment = two_factor.begin(c, p.user_id)
                return html.Div([
                    html.P("Scan this with an authenticator app (or type the key), then enter the code it shows "
                           "and press Turn on."),
                    html.Img(src=enrolment.qr_data_uri, className="qr", alt="QR code to scan"),
                    html.P(["Key: ", html.Code(enrolment.secret, id="acct-totp-secret")], className="muted"),
                ]), "", dash.no_update
            if action == "acct-2fa-confirm":
                return _codes(two_factor.confirm(c, p, p.user_id, code or "")), "", done + 1
            if not two_factor.verify(c, p.user_id, code or ""):
                raise two_factor.WrongCode()
            if action == "acct-2fa-codes":
                return _codes(two_factor.new_recovery_codes(c, p, p.user_id)), "", done + 1
            if people.policy(c, people.org_of(p))["require_totp"]:
                return "", "Your organisation requires two-factor sign-in.", dash.no_update
            two_factor.turn_off(c, p, p.user_id)
            return html.Span("Two-factor sign-in is off.", className="saved"), "", done + 1
    except DomainError as exc:
        return dash.no_update, exc.detail.capitalize() + ".", dash.no_update


def _codes(codes: list[str]) -> html.Div:
    return html.Div([html.P("Two-factor sign-in is on. Keep these recovery codes somewhere safe: each signs you in "
                            "once if you lose your phone. They are shown only now."),
                     html.Ol([html.Li(html.Code(code)) for code in codes], id="acct-recovery-codes",
                             className="codes")])


def end_sessions(_one: int, _others: int, session_id: int | None, done: int) -> tuple[Any, ...]:
    p = current_principal()
    try:
        with conn() as c:
            if ctx.triggered_id == "acct-session-end-others":
                n = people.revoke_sessions(c, p, p.user_id, keep=p.key_id)
                return html.Span(f"{n} other session(s) ended.", className="saved"), done + 1
            if session_id is None:
                return "Pick a session first.", dash.no_update
            people.revoke_session(c, p, p.user_id, session_id)
    except DomainError as exc:
        return exc.detail.capitalize() + ".", dash.no_update
    return html.Span("Session ended.", className="saved"), done + 1


def save_consents(_n: int, granted: list[str] | None) -> Any:
    p = current_principal()
    wanted = set(granted or [])
    with conn() as c:
        now = privacy.consents(c, p.user_id)
        for channel in privacy.CHANNELS:
            if now[channel]["granted"] != (channel in wanted):
                privacy.set_consent(c, p.user_id, p, channel, channel in wanted, "dashboard")
    return html.Span("Consent saved.", className="saved")


def _quiet(prefs: dict[str, Any]) -> str:
    if prefs["quiet_start"] is None:
        return ""
    return f"{prefs['quiet_start']:%H:%M}-{prefs['quiet_end']:%H:%M}"


def save_notifications(_n: int, alert_email: str, digest_hour: Any, quiet: str | None, timezone: str,
                       report: list[str] | None) -> tuple[Any, str]:
    p = current_principal()
    try:
        start = end = None
        if (quiet or "").strip():
            parts = [x.strip() for x in quiet.replace("–", "-").split("-")]  # type: ignore[union-attr]
            if len(parts) != 2:
                raise Invalid("Invalid preference", "write quiet hours as 22:00-07:00", field="quiet_hours")
            try:
                start, end = time.fromisoformat(parts[0]), time.fromisoformat(parts[1])
            except ValueError as exc:
                raise Invalid("Invalid preference", "write quiet hours as 22:00-07:00", field="quiet_hours") from exc
        with conn() as c:
            notifications.set_preferences(c, p, p.user_id, alert_email=alert_email,  # type: ignore[arg-type]
                                          digest_hour=int(digest_hour if digest_hour is not None else 7),
                                          quiet_start=start, quiet_end=end, timezone=timezone,
                                          report_email="on" in (report or []))
    except DomainError as exc:
        return "", exc.detail[:1].upper() + exc.detail[1:] + "."
    return html.Span("Notifications saved.", className="saved"), ""
