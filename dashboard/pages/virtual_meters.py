"""Virtual meters of a site's customer: the list with each meter's last seven days, and a
builder of + and − terms over the customer's nodes (any of its sites) and other meters.
Saving and deleting call `wattline.virtual_meters`, the functions the API calls; a cycle or
double counting comes back as the reason, beside the terms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dash
import plotly.graph_objects as go
from dash import ALL, Dash, Input, Output, State, ctx, dcc, html

from analytics.virtual_meters import meter_co2e, meter_series
from dashboard.auth import current_principal
from dashboard.data import conn, no_such_site, site_from_path
from wattline import queries, virtual_meters
from wattline.domain import Resolution
from wattline.errors import DomainError
from wattline.virtual_meters import Term

SIGNS = [{"label": "+ add", "value": 1}, {"label": "− subtract", "value": -1}]
TERM_STATES = (State({"type": "vm-sign", "index": ALL}, "value"), State({"type": "vm-part", "index": ALL}, "value"))
CHART_STYLE = {"height": "300px"}


def register(app: Dash) -> None:
    dash.register_page("virtual_meters", path_template="/virtual-meters/<site_id>",
                       title="Virtual meters · Wattline", layout=layout)
    app.callback(Output("vm-list", "children"), Output("vm-pick", "options"), Input("vm-done", "data"),
                 State("vm-customer", "data"))(refresh)
    app.callback(Output("vm-name", "value"), Output("vm-terms", "children", allow_duplicate=True),
                 Output("vm-chart", "figure"), Output("vm-chart", "style"),
                 Input("vm-pick", "value"), State("vm-customer", "data"), State("vm-zone", "data"),
                 prevent_initial_call=True)(load)
    app.callback(Output("vm-terms", "children", allow_duplicate=True), Input("vm-add", "n_clicks"),
                 Input({"type": "vm-remove", "index": ALL}, "n_clicks"), *TERM_STATES, State("vm-customer", "data"),
                 State("vm-pick", "value"), prevent_initial_call=True)(change_terms)
    # The picker's options come with its new value: a value its options lack yet is dropped.
    app.callback(Output("vm-message", "children"), Output("vm-done", "data"),
                 Output("vm-pick", "options", allow_duplicate=True), Output("vm-pick", "value"),
                 Input("vm-save", "n_clicks"), Input("vm-delete", "n_clicks"), State("vm-customer", "data"),
                 State("vm-pick", "value"), State("vm-name", "value"), *TERM_STATES, State("vm-done", "data"),
                 prevent_initial_call=True)(act)


def _parts(customer_id: int, exclude: int | None = None) -> list[dict[str, Any]]:
    """What a term may name: every node of the customer's sites the user sees, then its meters."""
    p = current_principal()
    options: list[dict[str, Any]] = []
    with conn() as c:
        for site in queries.sites(c, p, limit=1000):
            if site["customer_id"] != customer_id:
                continue
            for n in queries.tree(c, p, site["id"]):
                label = "whole site" if n["kind"] == "site" else f"{'· ' * n['depth']}{n['name']} ({n['kind']})"
                options.append({"label": f"{site['name']}: {label}", "value": f"node:{n['id']}"})
        options += [{"label": f"Meter: {m['name']}", "value": f"meter:{m['id']}"}
                    for m in virtual_meters.meters(c, p, customer_id) if m["id"] != exclude]
    return options


def term_row(k: int, sign: int, part: str | None, options: list[dict[str, Any]]) -> html.Div:
    return html.Div([
        dcc.RadioItems(id={"type": "vm-sign", "index": k}, options=SIGNS, value=sign, inline=True, className="vm-sign"),
        html.Div(dcc.Dropdown(id={"type": "vm-part", "index": k}, options=options, value=part,
                              placeholder="a node of any site, or another meter"), className="vm-part"),
        html.Button("Remove", id={"type": "vm-remove", "index": k}, className="small", title="Remove this term"),
    ], className="vm-term")


def layout(site_id: str = "0", **_: Any) -> html.Div:
    with conn() as c:
        site = site_from_path(c, site_id)
    if site is None:
        return no_such_site()
    p = current_principal()
    customer_id = site["customer_id"]
    can = p.can("write") and p.site_ids is None
    builder = html.Div([
        html.H3("Define a meter"),
        html.Label(["Meter", dcc.Dropdown(id="vm-pick", placeholder="A new meter (or pick one to change it)")]),
        html.Label(["Name", dcc.Input(id="vm-name", type="text", placeholder="Offices without the data hall")]),
        html.Div([term_row(0, 1, None, _parts(customer_id))], id="vm-terms", className="vm-terms"),
        html.Div([html.Button("Add a term", id="vm-add", className="small"),
                  html.Button("Save meter", id="vm-save", className="primary"),
                  html.Button("Delete", id="vm-delete", className="small danger")], className="toolbar wrap"),
        html.Div(id="vm-message", role="status"),
    ], className="card form") if can else html.Div([
        html.Div("You can look, not change: meters are defined by facility managers and admins of the whole "
                 "organisation.", className="muted"),
        dcc.Dropdown(id="vm-pick", placeholder="Pick a meter to chart it"),
        *(html.Div(id=i, style={"display": "none"}) for i in ("vm-terms", "vm-message")),
        dcc.Input(id="vm-name", type="hidden"),
        *(html.Button(id=i, style={"display": "none"}) for i in ("vm-add", "vm-save", "vm-delete"))])
    return html.Div([
        dcc.Store(id="vm-customer", data=customer_id), dcc.Store(id="vm-done", data=0),
        dcc.Store(id="vm-zone", data=site["timezone"]),
        html.H2(["Virtual meters · ", site["name"]]),
        html.P("A meter adds and subtracts parts of the tree, across the organisation's sites: a cost centre, a "
               "production line, a tenant.", className="muted"),
        html.Div([dcc.Link("Site", href=f"/site/{site['id']}")], className="toolbar"),
        html.Div(id="vm-list", className="card table-scroll"),
        builder,
        # responsive: drawn while hidden, a graph would keep plotly's 700 px default on a phone
        dcc.Graph(id="vm-chart", config={"displayModeBar": False}, responsive=True, style={"display": "none"}),
    ], className="page virtual-meters")


def _week() -> tuple[datetime, datetime]:
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return end - timedelta(days=7), end


def refresh(_done: int, customer_id: int) -> tuple[Any, Any]:
    p = current_principal()
    t_from, t_to = _week()
    with conn() as c:
        meters = virtual_meters.meters(c, p, customer_id)
        names = {n["value"]: n["label"] for n in _parts(customer_id)}
        totals, co2e = {}, {}
        for m in meters:
            series = meter_series(c, p, m["id"], Resolution.HOUR1, t_from, t_to)
            totals[m["id"]] = float(series.energy_wh.sum()) / 1000 if series is not None else 0.0
            found = meter_co2e(c, p, m["id"], t_from, t_to)
            co2e[m["id"]] = found.kg_co2e if found is not None else None
    if not meters:
        return html.Div("No virtual meters yet.", className="muted"), []

    def terms(m: dict[str, Any]) -> str:
        return " ".join(f"{'+' if t['sign'] > 0 else '−'} {names.get(_part_value(t), '?')}" for t in m["terms"])

    def kg(x: float | None) -> str:
        return "unknown" if x is None else f"{x:,.1f}"

    table = html.Table([html.Tr([html.Th("Meter"), html.Th("Terms"), html.Th("Last 7 days (kWh)"),
                                 html.Th("kg CO2e")])] + [
        html.Tr([html.Td(m["name"]), html.Td(terms(m)), html.Td(f"{totals[m['id']]:,.1f}", className="num"),
                 html.Td(kg(co2e[m["id"]]), className="num")], id=f"vm-row-{m['id']}") for m in meters],
        className="grid", id="vm-table")
    return table, [{"label": m["name"], "value": m["id"]} for m in meters]


def load(meter_id: int | None, customer_id: int, zone: str) -> tuple[Any, Any, Any, Any]:
    if meter_id is None:
        return "", [term_row(0, 1, None, _parts(customer_id))], go.Figure(), {"display": "none"}
    p = current_principal()
    t_from, t_to = _week()
    with conn() as c:
        meter = virtual_meters.meter(c, p, meter_id)
        series = meter_series(c, p, meter_id, Resolution.HOUR1, t_from, t_to)
    if meter is None or series is None:
        return dash.no_update, dash.no_update, go.Figure(), {"display": "none"}
    options = _parts(customer_id, exclude=meter_id)
    rows = [term_row(k, t["sign"], _part_value(t), options) for k, t in enumerate(meter["terms"])]
    local = ZoneInfo(zone)  # the page's site's clock, as every chart of the site
    fig = go.Figure(go.Bar(x=[datetime.fromtimestamp(b, UTC).astimezone(local).replace(tzinfo=None)
                              for b in series.bucket_s.tolist()],
                           y=(series.energy_wh / 1000).tolist(), name="kWh", offset=0, width=3_400_000,  # ms: the hour
                           hovertemplate="%{x|%a %d %b %H:%M}: %{y:.2f} kWh<extra></extra>"))
    fig.update_layout(title="kWh per hour, last 7 days", margin={"t": 40, "l": 50, "r": 10}, yaxis={"title": "kWh"})
    return meter["name"], rows, fig, CHART_STYLE


def change_terms(_add: int | None, removes: list[int | None], signs: list[int], parts: list[str | None],
                 customer_id: int, meter_id: int | None) -> Any:
    """Add an empty term, or remove the one whose button was pressed; what was chosen stays."""
    rows = list(zip(signs, parts, strict=True))
    trigger = ctx.triggered_id
    if trigger == "vm-add":
        rows.append((1, None))
    elif isinstance(trigger, dict) and any(removes):  # not a button that has only just been drawn
        rows.pop(int(trigger["index"]))
    else:
        return dash.no_update
    options = _parts(customer_id, exclude=meter_id)
    return [term_row(k, sign, part, options) for k, (sign, part) in enumerate(rows)]


def _part_value(term: dict[str, Any]) -> str:
    """A stored term as the value of the part picker."""
    return f"node:{term['node_id']}" if term["node_id"] else f"meter:{term['meter_id']}"


def _terms(signs: list[int], parts: list[str | None]) -> list[Term]:
    out = []
    for sign, part in zip(signs, parts, strict=True):
        if not part:
            continue
        kind, _, raw = part.partition(":")
        ident = int(raw)
        out.append(Term(sign=1 if sign > 0 else -1, node_id=ident if kind == "node" else None,
                        meter_id=ident if kind == "meter" else None))
    return out


def act(_save: int | None, _delete: int | None, customer_id: int, meter_id: int | None, name: str | None,
        signs: list[int], parts: list[str | None], done: int) -> tuple[Any, Any, Any, Any]:
    p = current_principal()
    unchanged = (dash.no_update,) * 3
    if not p.can("write") or p.site_ids is not None:
        return html.Div("You cannot change virtual meters.", className="error"), *unchanged
    try:
        with conn() as c:
            if ctx.triggered_id == "vm-delete":
                if meter_id is None or virtual_meters.meter(c, p, meter_id) is None:
                    return html.Div("Pick a meter to delete.", className="error"), *unchanged
                virtual_meters.delete_meter(c, p, meter_id)
                saved, said = None, "Deleted."
            else:
                if meter_id is not None and virtual_meters.meter(c, p, meter_id) is None:
                    return html.Div("No such meter.", className="error"), *unchanged
                saved = virtual_meters.save_meter(c, p, customer_id, name or "", _terms(signs, parts),
                                                  meter_id=meter_id)
                said = f"Saved “{(name or '').strip()}”."
            options = [{"label": m["name"], "value": m["id"]} for m in virtual_meters.meters(c, p, customer_id)]
    except DomainError as exc:
        return html.Div(f"{exc.title}: {exc}", className="error", id="vm-error"), *unchanged
    return html.Div(said, className="ok"), done + 1, options, saved
