"""People, for admins: invite by email, set a person's role for the whole organisation or
chosen sites, disable and enable, end their sessions, send a fresh invite, turn off a lost
two-factor; and the organisation's policy (allowed email domains, two-factor required).
A reseller admin picks one of its customers to do the same there. Every action is one
function of `wattline.people`, the same the API calls."""

from __future__ import annotations

from typing import Any

import dash
from dash import Dash, Input, Output, State, ctx, dcc, html

from dashboard.auth import current_principal
from dashboard.data import conn, settings
from wattline import people, queries, two_factor
from wattline.domain import Role
from wattline.errors import DomainError

FIELDS = ("email", "role", "site_ids")
EDIT_FIELDS = ("person", "role", "site_ids")
ROLE_OPTIONS = [{"label": f" {people.ROLE_NAMES[r]} ", "value": r.value} for r in people.CUSTOMER_ROLES]


def register(app: Dash) -> None:
    dash.register_page("people", path="/people", title="People · Wattline", layout=layout)
    app.callback(Output("people-table", "children"), Output("people-person", "options"),
                 Output("people-invite-sites", "options"), Output("people-edit-sites", "options"),
                 Output("people-domains", "value"), Output("people-require-totp", "value"),
                 Output("people-invite-role", "options"), Output("people-edit-role", "options"),
                 Input("people-done", "data"), Input("people-org", "value"))(refresh)
    app.callback(Output("people-invite-message", "children"), Output("people-done", "data", allow_duplicate=True),
                 *(Output(f"people-invite-error-{f}", "children") for f in FIELDS),
                 Input("people-invite", "n_clicks"), State("people-org", "value"), State("people-email", "value"),
                 State("people-name", "value"), State("people-invite-role", "value"),
                 State("people-invite-sites", "value"), State("people-done", "data"),
                 prevent_initial_call=True)(invite)
    app.callback(Output("people-edit-role", "value"), Output("people-edit-sites", "value"),
                 Input("people-person", "value"), State("people-org", "value"), prevent_initial_call=True)(load_person)
    app.callback(Output("people-edit-message", "children"), Output("people-done", "data", allow_duplicate=True),
                 *(Output(f"people-edit-error-{f}", "children") for f in EDIT_FIELDS),
                 Input("people-save", "n_clicks"), Input("people-disable", "n_clicks"),
                 Input("people-enable", "n_clicks"), Input("people-end-sessions", "n_clicks"),
                 Input("people-resend", "n_clicks"), Input("people-reset-totp", "n_clicks"),
                 State("people-person", "value"), State("people-edit-role", "value"),
                 State("people-edit-sites", "value"), State("people-done", "data"),
                 prevent_initial_call=True)(act)
    app.callback(Output("people-policy-message", "children"), Output("people-policy-error", "children"),
                 Output("people-done", "data", allow_duplicate=True),
                 Input("people-policy-save", "n_clicks"), State("people-org", "value"),
                 State("people-domains", "value"), State("people-require-totp", "value"),
                 State("people-done", "data"), prevent_initial_call=True)(save_policy)


def _error(prefix: str, field: str) -> html.Div:
    return html.Div(id=f"{prefix}-error-{field}", className="error field-error")


def _link_base() -> str:
    return settings().dashboard_url


def layout(**_: Any) -> html.Div:
    p = current_principal()
    if not p.can("admin"):
        return html.Div([html.H2("People"), html.Div("Only admins manage people.", className="empty")],
                        className="page")
    orgs: list[dict[str, Any]] = []
    if p.reseller_id is not None:
        with conn() as c:
            orgs = [{"label": "Your reseller's own admins", "value": 0}] + [
                {"label": row["name"], "value": row["id"]} for row in queries.customers(c, p, limit=1000)]
    picker = html.Label(["Organisation", dcc.Dropdown(id="people-org", options=orgs, value=0, clearable=False)],
                        className="card") if orgs else dcc.Dropdown(id="people-org", value=0,
                                                                    style={"display": "none"})
    return html.Div([
        dcc.Store(id="people-done", data=0),
        html.H2("People"),
        picker,
        html.Div(id="people-table", className="card table-scroll"),
        html.Div([
            html.Div([
                html.H3("Invite someone"),
                html.P("They get an email with a link to set their password; it works once, for 72 hours.",
                       className="muted"),
                html.Label(["Email", dcc.Input(id="people-email", type="email")]), _error("people-invite", "email"),
                html.Label(["Name", dcc.Input(id="people-name", type="text")]),
                html.Label(["Role", dcc.RadioItems(id="people-invite-role", value=Role.FACILITY_MANAGER.value,
                                                   options=ROLE_OPTIONS, inline=True)]),
                _error("people-invite", "role"),
                html.Label(["Only these sites (none: all of them)",
                            dcc.Dropdown(id="people-invite-sites", multi=True, placeholder="All sites")]),
                _error("people-invite", "site_ids"),
                html.Button("Send invite", id="people-invite", className="primary"),
                html.Div(id="people-invite-message", role="status"),
            ], className="card form"),
            html.Div([
                html.H3("Change someone's access"),
                html.Label(["Person", dcc.Dropdown(id="people-person", placeholder="Pick a person")]),
                _error("people-edit", "person"),
                html.Label(["Role", dcc.RadioItems(id="people-edit-role", options=ROLE_OPTIONS, inline=True)]),
                _error("people-edit", "role"),
                html.Label(["Only these sites (none: all of them)",
                            dcc.Dropdown(id="people-edit-sites", multi=True, placeholder="All sites")]),
                _error("people-edit", "site_ids"),
                html.Div([html.Button("Save access", id="people-save", className="primary"),
                          html.Button("Disable", id="people-disable", className="small danger"),
                          html.Button("Enable", id="people-enable", className="small"),
                          html.Button("End sessions", id="people-end-sessions", className="small"),
                          html.Button("Send a new invite", id="people-resend", className="small"),
                          html.Button("Turn off two-factor", id="people-reset-totp", className="small")],
                         className="toolbar wrap"),
                html.Div(id="people-edit-message", role="status"),
            ], className="card form"),
            html.Div([
                html.H3("Organisation policy"),
                html.Label(["Allowed email domains (comma-separated; empty: any)",
                            dcc.Input(id="people-domains", type="text", placeholder="acme.example")]),
                dcc.Checklist(id="people-require-totp", inline=True, options=[
                    {"label": " Everyone signs in with a two-factor code", "value": "on"}], value=[]),
                html.Div(id="people-policy-error", className="error field-error"),
                html.Button("Save policy", id="people-policy-save", className="primary"),
                html.Div(id="people-policy-message", role="status"),
            ], className="card form"),
        ], className="cards"),
    ], className="page people")


def _org(c: Any, org_value: int | None) -> people.Org:
    return people.managed_org(c, current_principal(), org_value or None)


def refresh(_done: int, org_value: int | None) -> tuple[Any, ...]:
    with conn() as c:
        org = _org(c, org_value)
        rows = people.people(c, org)
        rules = people.policy(c, org)
        sites = [{"label": s["name"], "value": s["id"]} for s in people.org_sites(c, org)]
    names = {s["value"]: s["label"] for s in sites}
    head = html.Tr([html.Th(h) for h in ("Email", "Name", "Role", "Sites", "Status", "Two-factor", "Sessions",
                                         "Last sign-in")])
    body = [html.Tr([html.Td(r["email"]), html.Td(r["full_name"]), html.Td(people.ROLE_NAMES[Role(r["role"])]),
                     html.Td(", ".join(names.get(s, str(s)) for s in r["site_ids"]) or "all"),
                     html.Td(r["status"], className=f"status-{r['status']}"),
                     html.Td("on" if r["two_factor"] else "off"), html.Td(str(r["sessions"])),
                     html.Td(f"{r['last_sign_in_at']:%Y-%m-%d %H:%M}" if r["last_sign_in_at"] else "never")],
                    id=f"person-{r['id']}") for r in rows]
    table = html.Table([head, *body], className="grid", id="people-list")
    options = [{"label": f"{r['email']} ({r['status']})", "value": r["id"]} for r in rows]
    roles = ([{"label": " reseller admin ", "value": Role.RESELLER_ADMIN.value}] if org.reseller_id is not None
             else ROLE_OPTIONS)
    return (table, options, sites, sites, ", ".join(rules["allowed_email_domains"]),
            ["on"] if rules["require_totp"] else [], roles, roles)


def _placed(exc: DomainError, fields: tuple[str, ...], default: str) -> list[str]:
    field = exc.field if exc.field in fields else default
    return [exc.detail.capitalize() + "." if f == field else "" for f in fields]


def invite(_n: int, org_value: int | None, email: str | None, name: str | None, role: str | None,
           site_ids: list[int] | None, done: int) -> tuple[Any, ...]:
    p = current_principal()
    try:
        with conn() as c:
            people.invite(c, p, _org(c, org_value), email=email or "", role=Role(role or Role.VIEWER.value),
                          full_name=name or "", site_ids=site_ids or [], link_base=_link_base())
    except DomainError as exc:
        return ("", dash.no_update, *_placed(exc, FIELDS, "email"))
    return (html.Span(f"Invite sent to {email}.", className="saved"), done + 1, "", "", "")


def load_person(user_id: int | None, _org_value: int | None) -> tuple[Any, Any]:
    if user_id is None:
        return dash.no_update, dash.no_update
    with conn() as c:
        row = people.managed_user(c, current_principal(), user_id)
        return row["role"], people.site_grants(c, user_id)


def act(*args: Any) -> tuple[Any, ...]:
    user_id, role, site_ids, done = args[6:]
    p = current_principal()
    action = ctx.triggered_id
    if user_id is None:
        return ("", dash.no_update, "Pick a person first.", "", "")
    try:
        with conn() as c:
            if action == "people-save":
                people.set_access(c, p, user_id, Role(role or Role.VIEWER.value), site_ids or [])
                said = "Access saved."
            elif action in ("people-disable", "people-enable"):
                people.set_disabled(c, p, user_id, action == "people-disable")
                said = "Disabled: sign-in refused, sessions ended." if action == "people-disable" else "Enabled."
            elif action == "people-end-sessions":
                people.managed_user(c, p, user_id)
                said = f"{people.revoke_sessions(c, p, user_id)} session(s) ended."
            elif action == "people-resend":
                people.resend_invite(c, p, user_id, _link_base())
                said = "A new invite is on its way; the old link no longer works."
            else:
                people.managed_user(c, p, user_id)
                two_factor.turn_off(c, p, user_id)
                said = "Two-factor is off; they can set it up again after signing in."
    except DomainError as exc:
        return ("", dash.no_update, *_placed(exc, EDIT_FIELDS, "person"))
    return (html.Span(said, className="saved"), done + 1, "", "", "")


def save_policy(_n: int, org_value: int | None, domains: str | None, require: list[str] | None,
                done: int) -> tuple[Any, ...]:
    try:
        with conn() as c:
            people.set_policy(c, current_principal(), _org(c, org_value),
                              allowed_email_domains=(domains or "").replace(";", ",").split(","),
                              require_totp="on" in (require or []))
    except DomainError as exc:
        return "", exc.detail.capitalize() + ".", dash.no_update
    return html.Span("Policy saved.", className="saved"), "", done + 1
