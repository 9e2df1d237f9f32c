"""Weather and savings of a site: its degree-day bases, a CSV of daily mean temperatures,
the baseline (the year's daily energy against the day's temperature, with the fitted
curve), and savings projects measured against it. Every change calls `wattline.weather`
or `wattline.catalogue`, the functions the API calls."""

from __future__ import annotations

import base64
import math
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dash
import numpy as np
import plotly.graph_objects as go
from dash import Dash, Input, Output, State, ctx, dcc, html

from analytics.degree_days import NotEnoughData, SiteDays, project_savings, site_days
from dashboard.auth import current_principal
from dashboard.data import conn, no_such_site, refusal, site_from_path
from wattline import catalogue, weather
from wattline.errors import DomainError

CHART_STYLE = {"height": "320px"}
HIDDEN = {"display": "none"}


def register(app: Dash) -> None:
    dash.register_page("weather", path_template="/weather/<site_id>", title="Weather and savings · Wattline",
                       layout=layout)
    app.callback(Output("wx-baseline", "children"), Output("wx-chart", "figure"), Output("wx-chart", "style"),
                 Output("wx-projects", "children"), Output("wx-pick", "options"),
                 Input("wx-done", "data"), State("wx-site", "data"))(refresh)
    app.callback(Output("wx-savings-chart", "figure"), Output("wx-savings-chart", "style"),
                 Input("wx-pick", "value"), Input("wx-done", "data"), State("wx-site", "data"))(show_project)
    app.callback(Output("wx-message", "children"), Output("wx-done", "data"),
                 Input("wx-bases-save", "n_clicks"), Input("wx-upload", "contents"),
                 Input("wx-create", "n_clicks"), Input("wx-delete", "n_clicks"),
                 State("wx-site", "data"), State("wx-hdd-base", "value"), State("wx-cdd-base", "value"),
                 State("wx-name", "value"), State("wx-start", "value"), State("wx-baseline-days", "value"),
                 State("wx-pick", "value"), State("wx-done", "data"), prevent_initial_call=True)(act)


def _today(site: dict[str, Any]) -> date:
    return datetime.now(ZoneInfo(site["timezone"])).date()


def layout(site_id: str = "0", **_: Any) -> html.Div:
    with conn() as c:
        site = site_from_path(c, site_id)
    if site is None:
        return no_such_site()
    can = current_principal().can("write")
    forms = html.Div([
        html.Div([
            html.H3("Degree-day bases"),
            html.Label(["Heating base, °C", dcc.Input(id="wx-hdd-base", type="number", step=0.5,
                                                      value=site["hdd_base_c"], min=-20, max=40)]),
            html.Label(["Cooling base, °C", dcc.Input(id="wx-cdd-base", type="number", step=0.5,
                                                      value=site["cdd_base_c"], min=-20, max=40)]),
            html.Button("Save bases", id="wx-bases-save", className="primary"),
        ], className="card form"),
        html.Div([
            html.H3("Daily mean temperatures"),
            html.P(["A CSV with the header ", html.Code("day,mean_c"), ": one row a local day, in °C. A day "
                    "given again replaces the one stored; a file with a bad row stores nothing."], className="muted"),
            dcc.Upload(html.Div(["Drop a CSV here, or ", html.A("choose one")]), id="wx-upload", className="upload",
                       accept=".csv,text/csv"),
        ], className="card form"),
        html.Div([
            html.H3("New savings project"),
            html.Label(["Name", dcc.Input(id="wx-name", type="text", placeholder="LED retrofit")]),
            html.Label(["First day of the project", dcc.Input(id="wx-start", type="text", placeholder="YYYY-MM-DD",
                                                              value=_today(site).isoformat())]),
            html.Label(["Baseline: days before it", dcc.Input(id="wx-baseline-days", type="number", value=365,
                                                             min=14, max=1096, step=1)]),
            html.Button("Start measuring", id="wx-create", className="primary"),
        ], className="card form"),
    ]) if can else html.Div([
        html.Div("You can look, not change: bases, temperatures and projects are set by facility managers.",
                 className="muted"),
        *(dcc.Input(id=i, type="hidden") for i in ("wx-hdd-base", "wx-cdd-base", "wx-name", "wx-start",
                                                   "wx-baseline-days")),
        dcc.Upload(id="wx-upload", style=HIDDEN),
        *(html.Button(id=i, style=HIDDEN) for i in ("wx-bases-save", "wx-create"))])
    return html.Div([
        dcc.Store(id="wx-site", data=site["id"]), dcc.Store(id="wx-done", data=0),
        html.H2(["Weather and savings · ", site["name"]]),
        html.P("Energy against the outdoor temperature: what the weather explains, and what a project saved "
               "beyond it.", className="muted"),
        html.Div([dcc.Link("Site", href=f"/site/{site['id']}")], className="toolbar"),
        html.Div(id="wx-message", role="status"),
        html.Div(id="wx-baseline", className="card"),
        # responsive: drawn while hidden, a graph would keep plotly's 700 px default on a phone
        dcc.Graph(id="wx-chart", config={"displayModeBar": False}, responsive=True, style=HIDDEN),
        forms,
        html.Div([
            html.H3("Savings projects"),
            html.Div(id="wx-projects", className="table-scroll"),
            dcc.Dropdown(id="wx-pick", placeholder="Pick a project to chart it"),
            html.Button("Delete project", id="wx-delete", className="small danger",
                        style=None if can else HIDDEN),
        ], className="card"),
        dcc.Graph(id="wx-savings-chart", config={"displayModeBar": False}, responsive=True, style=HIDDEN),
    ], className="page weather")


def _site(c: Any, site_id: int) -> dict[str, Any] | None:
    return site_from_path(c, str(site_id))


def _fmt(x: float, spec: str) -> str:
    return format(x, spec) if math.isfinite(x) else "–"


def _baseline_card(days: SiteDays) -> tuple[Any, Any, Any]:
    """The baseline's sentence, and the scatter of daily kWh against °C with its curve."""
    try:
        b = days.baseline()
    except NotEnoughData as exc:
        known = int(np.isfinite(days.mean_c).sum())
        return (html.Div([html.Strong("No baseline yet. "), str(exc), f". Temperatures stored for {known} of the "
                          f"last {len(days.day)} days."], id="wx-baseline-text"), go.Figure(), HIDDEN)
    formula = f"{b.intercept_kwh:,.1f} kWh a day"
    for term, slope, kind, base in (("hdd", b.hdd_slope_kwh, "heating", days.hdd_base_c),
                                    ("cdd", b.cdd_slope_kwh, "cooling", days.cdd_base_c)):
        if term in b.terms:
            formula += f" {'+' if slope >= 0 else '−'} {abs(slope):,.2f} kWh per {kind} degree day (base {base:g} °C)"
    text = html.Div([html.Strong("Baseline: "), formula, html.Br(),
                     f"R² {b.r2:.2f} · CV(RMSE) {_fmt(100 * b.cv_rmse, '.1f')} % · {b.days} whole days, "
                     f"{b.first_day} to {b.last_day}"], id="wx-baseline-text")
    w = days.whole
    fig = go.Figure(go.Scatter(x=days.mean_c[w].tolist(), y=days.energy_kwh[w].tolist(), mode="markers",
                               name="a day", text=[d.isoformat() for d, k in zip(days.day, w, strict=True) if k],
                               hovertemplate="%{text}: %{x:.1f} °C, %{y:,.1f} kWh<extra></extra>"))
    t = np.linspace(float(days.mean_c[w].min()), float(days.mean_c[w].max()), 60)
    hdd, cdd = np.maximum(days.hdd_base_c - t, 0), np.maximum(t - days.cdd_base_c, 0)
    fig.add_trace(go.Scatter(x=t.tolist(), y=b.predict(hdd, cdd).tolist(), mode="lines", name="baseline",
                             hoverinfo="skip"))
    fig.update_layout(title="kWh a day against the day's mean temperature, last year",
                      margin={"t": 40, "l": 55, "r": 10}, xaxis={"title": "°C"}, yaxis={"title": "kWh"},
                      legend={"orientation": "h", "y": -0.25})
    return text, fig, CHART_STYLE


def refresh(_done: int, site_id: int) -> tuple[Any, Any, Any, Any, Any]:
    with conn() as c:
        site = _site(c, site_id)
        if site is None:
            return "No such site.", go.Figure(), HIDDEN, None, []
        today = _today(site)
        days = site_days(c, [site], today - timedelta(days=365), today)[site_id]
        rows, options = [], []
        for proj in weather.projects(c, site_id):
            options.append({"label": f"{proj['name']} (from {proj['starts_on']})", "value": proj["id"]})
            try:
                s = project_savings(c, site, proj, today)
                saved = (f"{s.savings_kwh:,.0f} kWh ({100 * s.savings_kwh / s.expected_kwh:.1f} %)"
                         if s.expected_kwh > 0 else f"{s.savings_kwh:,.0f} kWh")
                counted = f"{s.counted_days} (missing {s.missing_days})"
            except NotEnoughData as exc:
                saved, counted = f"no baseline: {exc}", "–"
            rows.append(html.Tr([html.Td(proj["name"]), html.Td(str(proj["starts_on"])), html.Td(counted),
                                 html.Td(saved, className="num")], id=f"wx-project-{proj['id']}"))
    text, fig, style = _baseline_card(days)
    table = html.Table([html.Tr([html.Th("Project"), html.Th("From"), html.Th("Days counted"),
                                 html.Th("Saved so far")]), *rows], className="grid", id="wx-project-table") \
        if rows else html.Div("No projects yet.", className="muted")
    return text, fig, style, table, options


def show_project(project_id: int | None, _done: int, site_id: int) -> tuple[Any, Any]:
    if project_id is None:
        return go.Figure(), HIDDEN
    with conn() as c:
        site = _site(c, site_id)
        proj = weather.project(c, project_id)
        if site is None or proj is None or proj["site_id"] != site_id:
            return go.Figure(), HIDDEN
        try:
            s = project_savings(c, site, proj, _today(site))
        except NotEnoughData:
            return go.Figure(), HIDDEN
    x = [d.isoformat() for d in s.days.day]
    fig = go.Figure([go.Bar(x=x, y=s.days.energy_kwh.tolist(), name="metered kWh",
                            hovertemplate="%{x}: %{y:,.1f} kWh metered<extra></extra>"),
                     go.Scatter(x=x, y=s.predicted_kwh.tolist(), mode="lines+markers", name="baseline for the weather",
                                hovertemplate="%{x}: %{y:,.1f} kWh expected<extra></extra>")])
    fig.update_layout(title=f"{proj['name']}: metered against the baseline", margin={"t": 40, "l": 55, "r": 10},
                      yaxis={"title": "kWh"}, legend={"orientation": "h", "y": -0.25})
    return fig, CHART_STYLE


def _write(c: Any, site_id: int, trigger: str, hdd_base: float | None, cdd_base: float | None, upload: str | None,
           name: str | None, start: str | None, baseline_days: int | None, project_id: int | None) -> str:
    """Parse, authorise and call the core; returns what was done."""
    p = current_principal()
    if trigger == "wx-bases-save":
        if hdd_base is None or cdd_base is None:
            raise DomainError("give both bases, in °C", field="bases")
        if not (-20 <= hdd_base <= 40 and -20 <= cdd_base <= 40):
            raise DomainError("a base is between −20 and 40 °C", field="bases")
        catalogue.update_site(c, p, site_id, {"hdd_base_c": float(hdd_base), "cdd_base_c": float(cdd_base)})
        return "Bases saved."
    if trigger == "wx-upload":
        if not upload:
            raise DomainError("choose a CSV file", field="file")
        n = weather.save_temperatures(c, p, site_id, weather.parse_csv(base64.b64decode(upload.partition(",")[2])),
                                      source="upload")
        return f"{n} day(s) of temperatures stored."
    if trigger == "wx-create":
        try:
            starts_on = date.fromisoformat(start or "")
        except ValueError:
            raise DomainError("give the project's first day as YYYY-MM-DD", field="start") from None
        weather.create_project(c, p, site_id, name or "", starts_on, baseline_days=int(baseline_days or 0))
        return f"Measuring “{(name or '').strip()}” from {starts_on}."
    proj = weather.project(c, project_id) if project_id is not None else None
    if proj is None or proj["site_id"] != site_id:
        raise DomainError("pick the project to delete", field="project")
    weather.delete_project(c, p, proj["id"])
    return "Deleted."


def act(_bases: int | None, upload: str | None, _create: int | None, _delete: int | None, site_id: int,
        hdd_base: float | None, cdd_base: float | None, name: str | None, start: str | None,
        baseline_days: int | None, project_id: int | None, done: int) -> tuple[Any, Any]:
    if not current_principal().can("write"):
        return html.Div("You cannot change this site's weather settings.", className="error"), dash.no_update
    try:
        with conn() as c:
            if _site(c, site_id) is None:
                return html.Div("No such site.", className="error"), dash.no_update
            said = _write(c, site_id, str(ctx.triggered_id), hdd_base, cdd_base, upload, name, start,
                          baseline_days, project_id)
    except DomainError as exc:  # RowErrors among them: each refused row is listed
        return refusal(exc, "wx-error"), dash.no_update
    return html.Div(said, className="ok", id="wx-ok"), done + 1
