"""Emissions of a site: the factor its energy is counted at (its country's, its own, or an
uploaded hourly series), and the CO2e of each node for a month, with the site's days
charted. Every change calls `wattline.emissions`, the functions the API calls."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import dash
import plotly.graph_objects as go
from dash import Dash, Input, Output, State, ctx, dcc, html

from analytics.emissions import co2e_by_node
from dashboard.auth import current_principal
from dashboard.data import conn, no_such_site, refusal, site_from_path
from wattline import emissions
from wattline.errors import DomainError

HIDDEN = {"display": "none"}
CHART_STYLE = {"height": "300px"}


def register(app: Dash) -> None:
    dash.register_page("emissions", path_template="/emissions/<site_id>", title="Emissions · Wattline",
                       layout=layout)
    app.callback(Output("co2-factor", "children"), Output("co2-table", "children"), Output("co2-chart", "figure"),
                 Output("co2-chart", "style"), Input("co2-done", "data"), Input("co2-month", "value"),
                 State("co2-site", "data"))(refresh)
    app.callback(Output("co2-message", "children"), Output("co2-done", "data"),
                 Input("co2-save", "n_clicks"), Input("co2-country", "n_clicks"), Input("co2-upload", "contents"),
                 Input("co2-clear", "n_clicks"), State("co2-site", "data"), State("co2-g", "value"),
                 State("co2-source", "value"), State("co2-month", "value"), State("co2-done", "data"),
                 prevent_initial_call=True)(act)


def _months(site: dict[str, Any], n: int = 13) -> list[date]:
    """The first days of this local month and the n - 1 before, newest first."""
    today = datetime.now(ZoneInfo(site["timezone"])).date()
    y, m = today.year, today.month
    out = []
    for _ in range(n):
        out.append(date(y, m, 1))
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    return out


def _month_range(site: dict[str, Any], first: date) -> tuple[datetime, datetime]:
    """The local month as UTC hours (CO2e is counted by the hour)."""
    tz = ZoneInfo(site["timezone"])
    after = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    lo, hi = (datetime.combine(d, datetime.min.time(), tz).astimezone(UTC) for d in (first, after))
    return lo.replace(minute=0), hi.replace(minute=0)


def layout(site_id: str = "0", **_: Any) -> html.Div:
    with conn() as c:
        site = site_from_path(c, site_id)
    if site is None:
        return no_such_site()
    can = current_principal().can("write")
    months = _months(site)
    forms = html.Div([
        html.Div([
            html.H3("The site's own factor"),
            html.P("From your supplier's fuel-mix disclosure, for instance. Without one, the site is counted at its "
                   "country's grid factor.", className="muted"),
            html.Label(["g CO2e per kWh", dcc.Input(id="co2-g", type="number", min=0, max=2000, step=0.1,
                                                    value=site.get("co2e_g_per_kwh"))]),
            html.Label(["Source", dcc.Input(id="co2-source", type="text", maxLength=200,
                                            value=site.get("co2e_source") or "",
                                            placeholder="Supplier fuel mix disclosure 2025")]),
            html.Div([html.Button("Save factor", id="co2-save", className="primary"),
                      html.Button("Use the country's", id="co2-country", className="small")], className="buttons"),
        ], className="card form"),
        html.Div([
            html.H3("Hourly grid factors"),
            html.P(["A CSV with the header ", html.Code("hour,g_co2e_per_kwh"), ": the hour's start with its offset "
                    "(2026-01-31T13:00:00Z). Where it has an hour, it wins over the annual factor. A file with a bad "
                    "row stores nothing."], className="muted"),
            dcc.Upload(html.Div(["Drop a CSV here, or ", html.A("choose one")]), id="co2-upload", className="upload",
                       accept=".csv,text/csv"),
            html.Button("Remove the chosen month's hourly factors", id="co2-clear", className="small danger"),
        ], className="card form"),
    ]) if can else html.Div([
        html.Div("You can look, not change: emission factors are set by facility managers.", className="muted"),
        *(dcc.Input(id=i, type="hidden") for i in ("co2-g", "co2-source")),
        dcc.Upload(id="co2-upload", style=HIDDEN),
        *(html.Button(id=i, style=HIDDEN) for i in ("co2-save", "co2-country", "co2-clear"))])
    return html.Div([
        dcc.Store(id="co2-site", data=site["id"]), dcc.Store(id="co2-done", data=0),
        html.H2(["Emissions · ", site["name"]]),
        html.Div([dcc.Link("Site", href=f"/site/{site['id']}")], className="toolbar"),
        html.Div(id="co2-message", role="status"),
        html.Div(id="co2-factor", className="card"),
        html.Div([
            html.Label(["Month", dcc.Dropdown(id="co2-month", clearable=False, value=months[0].isoformat(),
                                              options=[{"label": m.strftime("%B %Y"), "value": m.isoformat()}
                                                       for m in months])]),
            html.Div(id="co2-table", className="table-scroll"),
        ], className="card"),
        dcc.Graph(id="co2-chart", config={"displayModeBar": False}, responsive=True, style=HIDDEN),
        forms,
    ], className="page emissions")


def _kg(x: float | None) -> str:
    return "unknown" if x is None else f"{x:,.1f}"


def refresh(_done: int, month: str, site_id: int) -> tuple[Any, Any, Any, Any]:
    p = current_principal()
    with conn() as c:
        site = site_from_path(c, str(site_id))
        if site is None:
            return "No such site.", None, go.Figure(), HIDDEN
        first = date.fromisoformat(month)
        lo, hi = _month_range(site, first)
        factor, nodes = co2e_by_node(c, p, site, lo, hi)
        _, days = co2e_by_node(c, p, site, lo, hi, "day")
        hourly = emissions.hourly(c, site_id, lo, hi)
    if factor.g_per_kwh is None:
        said: list[Any] = [html.Strong("No factor: "), f"the bundled table has no grid factor for {site['country']}; "
                           "give the site its own below (or upload hourly factors)."]
    else:
        where = {"site": f"the site's own ({factor.source})",
                 "country": f"{factor.source}"}[factor.origin]
        said = [html.Strong(f"{factor.g_per_kwh:,.1f} g CO2e/kWh"), " · ", where]
    said += [html.Br(), f"{len(hourly)} hour(s) of {first:%B %Y} at uploaded hourly factors."]
    rows = [html.Tr([html.Td(n.name), html.Td(n.kind), html.Td(f"{n.energy_kwh:,.1f}", className="num"),
                     html.Td(_kg(n.kg_co2e), className="num", id=f"co2-node-{n.node_id}")]) for n in nodes]
    table = html.Table([html.Tr([html.Th("Node"), html.Th("Kind"), html.Th("kWh"), html.Th("kg CO2e")]), *rows],
                       className="grid", id="co2-node-table")
    root = [d for d in days if d.kind == "site"]
    if not root:
        return html.Div(said, id="co2-factor-text"), table, go.Figure(), HIDDEN
    fig = go.Figure(go.Bar(x=[f"{d.period.day} {d.period:%b}" for d in root if d.period],
                           y=[d.kg_co2e for d in root], hovertemplate="%{x}: %{y:,.1f} kg CO2e<extra></extra>"))
    # Category labels: a date axis puts its ticks at noon and midnight, between the bars.
    fig.update_layout(title="The site's kg CO2e a day", margin={"t": 40, "l": 55, "r": 10},
                      xaxis={"type": "category"}, yaxis={"title": "kg CO2e"})
    return html.Div(said, id="co2-factor-text"), table, fig, CHART_STYLE


def _write(c: Any, site: dict[str, Any], trigger: str, g: float | None, source: str | None, upload: str | None,
           month: str) -> str:
    """Parse, authorise and call the core; returns what was done."""
    p, site_id = current_principal(), site["id"]
    if trigger == "co2-clear":
        first = date.fromisoformat(month)
        n = emissions.delete_hourly(c, p, site_id, *_month_range(site, first))
        return f"{n} hour(s) of {first:%B %Y} removed: those hours count at the annual factor again."
    if trigger == "co2-save":
        if g is None:
            raise DomainError("give the factor in g CO2e per kWh", field="g_co2e_per_kwh")
        emissions.set_site_factor(c, p, site_id, float(g), source)
        return "Factor saved."
    if trigger == "co2-country":
        emissions.set_site_factor(c, p, site_id, None)
        return "The site is counted at its country's factor again."
    if not upload:
        raise DomainError("choose a CSV file", field="file")
    n = emissions.save_hourly(c, p, site_id, emissions.parse_csv(base64.b64decode(upload.partition(",")[2])),
                              source="upload")
    return f"{n} hour(s) of grid factors stored."


def act(_save: int | None, _country: int | None, upload: str | None, _clear: int | None, site_id: int,
        g: float | None, source: str | None, month: str, done: int) -> tuple[Any, Any]:
    if not current_principal().can("write"):
        return html.Div("You cannot change this site's emission factors.", className="error"), dash.no_update
    try:
        with conn() as c:
            site = site_from_path(c, str(site_id))
            if site is None:
                return html.Div("No such site.", className="error"), dash.no_update
            said = _write(c, site, str(ctx.triggered_id), g, source, upload, month)
    except DomainError as exc:  # RowErrors among them: each refused row is listed
        return refusal(exc, "co2-error"), dash.no_update
    return html.Div(said, className="ok", id="co2-ok"), done + 1
