"""Scheduled exports, for admins: the customer's jobs with how they are doing, a form for a
new one (its signing secret or SFTP public key shown once), and a job's history of runs.
Writes are `exports.jobs` functions, the same the API calls."""

from __future__ import annotations

from typing import Any

import dash
from dash import Dash, Input, Output, State, ctx, dcc, html

from dashboard.auth import current_principal
from dashboard.data import conn, settings
from exports import jobs
from wattline import progress, queries
from wattline.errors import DomainError

FIELDS = ("name", "site_ids", "url", "sftp_host")


def register(app: Dash) -> None:
    dash.register_page("exports", path="/exports", title="Exports · Wattline", layout=layout)
    app.callback(Output("exports-list", "children"), Output("exports-pick", "options"),
                 Input("exports-done", "data"), State("exports-customer", "data"))(refresh)
    app.callback(Output("exports-https", "style"), Output("exports-sftp", "style"),
                 Input("exports-destination", "value"))(destination_fields)
    app.callback(Output("exports-message", "children"), Output("exports-done", "data", allow_duplicate=True),
                 *(Output(f"exports-error-{f}", "children") for f in FIELDS),
                 Input("exports-create", "n_clicks"), State("exports-customer", "data"),
                 State("exports-name", "value"), State("exports-sites", "value"),
                 State("exports-resolution", "value"), State("exports-format", "value"),
                 State("exports-schedule", "value"), State("exports-catalog", "value"),
                 State("exports-destination", "value"), State("exports-url", "value"),
                 State("exports-sftp-host", "value"), State("exports-sftp-port", "value"),
                 State("exports-sftp-user", "value"), State("exports-sftp-path", "value"),
                 State("exports-done", "data"), prevent_initial_call=True)(create)
    app.callback(Output("exports-runs", "children"), Output("exports-done", "data", allow_duplicate=True),
                 Input("exports-pick", "value"), Input("exports-pause", "n_clicks"),
                 Input("exports-resume", "n_clicks"), Input("exports-delete", "n_clicks"),
                 State("exports-done", "data"), prevent_initial_call=True)(job_actions)


def _error(field: str) -> html.Div:
    return html.Div(id=f"exports-error-{field}", className="error field-error")


def layout(**_: Any) -> html.Div:
    p = current_principal()
    if not p.can("admin") or p.customer_id is None:
        return html.Div([html.H2("Exports"), html.Div(
            "Export jobs are set up by a customer's admins (resellers: through the API).", className="empty")],
            className="page")
    with conn() as c:
        sites = queries.sites(c, p, limit=1000)
    return html.Div([
        dcc.Store(id="exports-customer", data=p.customer_id), dcc.Store(id="exports-done", data=0),
        html.H2("Scheduled exports"),
        html.Div(id="exports-list", className="card table-scroll"),
        html.Div([
            html.Div([
                html.H3("A new export"),
                html.Label(["Name", dcc.Input(id="exports-name", type="text", placeholder="Nightly to BI")]),
                _error("name"),
                html.Label(["Sites (none: all)", dcc.Dropdown(id="exports-sites", multi=True, options=[
                    {"label": s["name"], "value": s["id"]} for s in sites])]),
                _error("site_ids"),
                html.Label(["Resolution", dcc.RadioItems(id="exports-resolution", value="15m", inline=True, options=[
                    {"label": " 15 min ", "value": "15m"}, {"label": " hour ", "value": "1h"},
                    {"label": " day ", "value": "1d"}])]),
                html.Label(["Format", dcc.RadioItems(id="exports-format", value="csv", inline=True, options=[
                    {"label": " CSV (PowerRadar columns) ", "value": "csv"}, {"label": " JSON ", "value": "json"}])]),
                html.Label(["Every", dcc.RadioItems(id="exports-schedule", value="daily", inline=True, options=[
                    {"label": " day ", "value": "daily"}, {"label": " week ", "value": "weekly"},
                    {"label": " month ", "value": "monthly"}])]),
                dcc.Checklist(id="exports-catalog", value=[], inline=True, options=[
                    {"label": " Also the catalog (every node with its id)", "value": "on"},
                    {"label": " Also CO2e per node and day", "value": "emissions"}]),
                html.Label(["To", dcc.RadioItems(id="exports-destination", value="https", inline=True, options=[
                    {"label": " HTTPS ", "value": "https"}, {"label": " SFTP ", "value": "sftp"}])]),
                html.Div([html.Label(["URL", dcc.Input(id="exports-url", type="text",
                                                       placeholder="https://bi.example.com/wattline")]),
                          _error("url")], id="exports-https"),
                html.Div([
                    html.Label(["Host", dcc.Input(id="exports-sftp-host", type="text")]), _error("sftp_host"),
                    html.Label(["Port", dcc.Input(id="exports-sftp-port", type="number", value=22)]),
                    html.Label(["User", dcc.Input(id="exports-sftp-user", type="text")]),
                    html.Label(["Folder", dcc.Input(id="exports-sftp-path", type="text", value=".")]),
                ], id="exports-sftp"),
                html.Button("Create export", id="exports-create", className="primary"),
                html.Div(id="exports-message", role="status"),
            ], className="card form"),
            html.Div([
                html.H3("History"),
                html.Label(["Job", dcc.Dropdown(id="exports-pick", placeholder="Pick a job")]),
                html.Div([html.Button("Pause", id="exports-pause", className="small"),
                          html.Button("Resume", id="exports-resume", className="small"),
                          html.Button("Delete", id="exports-delete", className="small danger")],
                         className="toolbar wrap"),
                html.Div(id="exports-runs", className="table-scroll"),
            ], className="card form"),
        ], className="cards"),
    ], className="page exports")


def destination_fields(destination: str) -> tuple[dict[str, str], dict[str, str]]:
    hidden = {"display": "none"}
    return ({}, hidden) if destination == "https" else (hidden, {})


def refresh(_done: int, customer_id: int) -> tuple[Any, Any]:
    p = current_principal()
    with conn() as c:
        found = jobs.jobs(c, p, customer_id)
        done = {j["id"]: progress.export_job(c, j["id"]) for j in found}
    if not found:
        return html.Div("No exports yet.", className="muted"), []
    table = html.Table([html.Tr([html.Th(h) for h in ("Job", "Every", "To", "State", "Runs", "Problem")])] + [
        html.Tr([html.Td(j["name"]), html.Td(f"{j['schedule']}, {j['resolution']} {j['format'].upper()}"),
                 html.Td(j["url"] or f"sftp://{j['sftp_username']}@{j['sftp_host']}:{j['sftp_port']}/{j['sftp_path']}"),
                 html.Td("on" if j["enabled"] else "paused"), html.Td(progress.eta_text(done[j["id"]])),
                 html.Td((f"failing since {j['failing_since']:%Y-%m-%d %H:%M} UTC: " if j["failing_since"] else "")
                         + (j["last_error"] or ""), className="error")], id=f"export-{j['id']}") for j in found],
        className="grid", id="exports-table")
    return table, [{"label": j["name"], "value": j["id"]} for j in found]


def create(*args: Any) -> tuple[Any, ...]:
    (customer_id, name, site_ids, resolution, fmt, schedule, catalog, destination, url, host, port, user, path,
     done) = args[1:]
    p = current_principal()
    errors = dict.fromkeys(FIELDS, "")
    spec = jobs.JobSpec(name or "", resolution, fmt, schedule, destination, tuple(site_ids or []), (),
                        "on" in (catalog or []), url or None, host or None, int(port or 22), user or None, path or ".",
                        include_emissions="emissions" in (catalog or []))
    try:
        with conn() as c:
            if queries.customer(c, p, customer_id) is None:
                raise DomainError("not allowed")
            made = jobs.create_job(c, p, customer_id, spec, allow_private=settings().allow_private_destinations)
    except DomainError as exc:
        errors[exc.field if exc.field in errors else "name"] = exc.detail[:1].upper() + exc.detail[1:] + "."
        return ("", dash.no_update, *errors.values())
    shown = (html.Div(["Its signing secret, shown once: ", html.Code(made.secret, id="exports-secret")])
             if made.secret else html.Div(["Add this key to the server's authorized_keys: ",
                                           html.Code(made.public_key, id="exports-public-key")]))
    return (html.Div([html.Span("Export created.", className="saved"), shown]), done + 1, *errors.values())


def job_actions(job_id: int | None, *_: Any) -> tuple[Any, Any]:
    done = _[-1]
    if job_id is None:
        return "", dash.no_update
    p = current_principal()
    with conn() as c:
        if jobs.job(c, p, job_id) is None:
            return "", dash.no_update
        action = ctx.triggered_id
        if action in ("exports-pause", "exports-resume"):
            jobs.set_enabled(c, p, job_id, action == "exports-resume")
        elif action == "exports-delete":
            jobs.delete_job(c, p, job_id)
            return html.Span("Deleted.", className="saved"), done + 1
        runs = jobs.runs(c, job_id, limit=100)
    changed = done + 1 if action != "exports-pick" else dash.no_update
    if not runs:
        return html.P("No runs yet: the first goes out within a minute of the job's first complete period.",
                      className="muted"), changed
    return html.Table([html.Tr([html.Th(h) for h in ("Period", "What", "Status", "Rows", "Bytes", "Tries", "Error")])]
                      + [html.Tr([html.Td(f"{r['period_start']:%Y-%m-%d}"), html.Td(r["file_name"] or r["kind"]),
                                  html.Td(r["status"]), html.Td("" if r["rows"] is None else str(r["rows"])),
                                  html.Td("" if r["bytes"] is None else str(r["bytes"])),
                                  html.Td(str(r["attempts"])), html.Td(r["error"] or "", className="error")])
                         for r in runs], className="grid", id="exports-runs-table"), changed
