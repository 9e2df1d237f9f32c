"""Site: hierarchy tree, energy sunburst with the unmonitored remainder, node time series,
solar and grid (where the site generates), cost by band and node, and the month's demand peak."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dash
import plotly.graph_objects as go
from dash import Dash, Input, Output, State, dcc, html

from analytics import comparison
from analytics.costing import site_cost
from dashboard.auth import current_principal
from dashboard.data import conn, no_such_site, site_from_path
from wattline import generation, queries
from wattline.domain import Resolution
from wattline.generation import BALANCE, balance_totals
from wattline.principal import Principal
from wattline.tariffs import TariffError


def register(app: Dash) -> None:
    dash.register_page("site", path_template="/site/<site_id>", title="Site · Wattline", layout=layout)
    app.callback(Output("site-tree", "children"), Output("site-sunburst", "figure"),
                 Output("site-cost", "children"), Output("site-node-cost", "children"),
                 Output("site-demand", "children"),
                 Input("site-range", "start_date"), Input("site-range", "end_date"), State("site-id", "data"))(overview)
    app.callback(Output("site-compare", "children"), Output("site-profile", "figure"),
                 Input("site-range", "start_date"), Input("site-range", "end_date"), State("site-id", "data"))(compared)
    app.callback(Output("site-series", "figure"), Input("site-node", "value"), Input("site-range", "start_date"),
                 Input("site-range", "end_date"), State("site-id", "data"))(series)
    # Only a site with generation has the card: a callback whose outputs are not on the page does not run.
    app.callback(Output("site-balance", "children"), Output("site-balance-chart", "figure"),
                 Input("site-range", "start_date"), Input("site-range", "end_date"), State("site-id", "data"))(balance)


def resolution_for(span: timedelta) -> Resolution:
    """About 100 to 2,000 points whatever the range."""
    if span <= timedelta(hours=12):
        return Resolution.MIN1
    if span <= timedelta(days=7):
        return Resolution.MIN15
    if span <= timedelta(days=60):
        return Resolution.HOUR1
    return Resolution.DAY1


def layout(site_id: str = "0", **_: Any) -> html.Div:
    p = current_principal()
    with conn() as c:
        site = site_from_path(c, site_id)
        if site is None:
            return no_such_site()
        nodes = queries.tree(c, p, site["id"])
        solar = generation.may_generate(c, site["id"])
    zone = ZoneInfo(site["timezone"])
    today = datetime.now(UTC).astimezone(zone).date()
    root = next(n for n in nodes if n["kind"] == "site")
    return html.Div([
        dcc.Store(id="site-id", data=site["id"]),
        html.H2(site["name"]),
        html.Div(f"Times in the site's local time: {site['timezone']}", className="muted", id="site-zone"),
        html.Div([
            dcc.Link("Tariffs", href=f"/tariffs/{site['id']}"), " · ",
            dcc.Link("Alert rules", href=f"/alert-rules/{site['id']}"), " · ",
            dcc.Link("Virtual meters", href=f"/virtual-meters/{site['id']}"), " · ",
            dcc.Link("Weather and savings", href=f"/weather/{site['id']}"), " · ",
            dcc.Link("Emissions", href=f"/emissions/{site['id']}"), " · ",
            dcc.Link("Reports", href=f"/reports/{site['id']}"), " · ",
            dcc.Link("Commissioning", href=f"/commissioning/{site['id']}"),
        ]),
        html.Div([
            dcc.DatePickerRange(id="site-range", start_date=(today - timedelta(days=1)).isoformat(),
                                end_date=today.isoformat(),
                                display_format="YYYY-MM-DD"),
            dcc.Dropdown(id="site-node", value=root["id"], clearable=False, style={"minWidth": "320px"},
                         options=[{"label": "\u2003" * n["depth"] + n["name"], "value": n["id"]} for n in nodes]),
        ], className="row", style={"alignItems": "center", "margin": "1rem 0"}),
        html.Div([
            html.Div([html.H4("Electrical hierarchy"), html.Div(id="site-tree", className="tree card")]),
            html.Div([html.H4("Energy by node"), _loading(dcc.Graph(id="site-sunburst", style={"height": "420px"}))],
                     className="card"),
        ], className="row"),
        html.Div([html.H4("Power"), _loading(dcc.Graph(id="site-series", style={"height": "360px"}))],
                 className="card"),
        *([html.Div([html.H4("Solar and grid"), dcc.Loading(html.Div(id="site-balance")),
                     _loading(dcc.Graph(id="site-balance-chart", style={"height": "320px"}))],
                    className="card", id="site-balance-card", style={"marginTop": "1rem"})]
          if solar else []),
        html.Div([
            html.Div([html.H4("Cost by tariff band"), dcc.Loading(html.Div(id="site-cost"))], className="card"),
            html.Div([html.H4("Cost by node"), dcc.Loading(html.Div(id="site-node-cost"))], className="card"),
            html.Div([html.H4("Demand peak"), html.Div(id="site-demand")], className="card"),
        ], className="row", style={"marginTop": "1rem"}),
        html.Div([
            html.Div([html.H4("Compared"), dcc.Loading(html.Div(id="site-compare", className="table-scroll"))],
                     className="card"),
            html.Div([html.H4("This week against the typical weekday"),
                      _loading(dcc.Graph(id="site-profile", style={"height": "320px"}))], className="card"),
        ], className="row", style={"marginTop": "1rem"}),
    ], className="page")


def _loading(child: Any) -> dcc.Loading:
    """A spinner over the chart rather than in place of it, so the old chart stays in view,
    dimmed, while a new range loads."""
    return dcc.Loading(child, overlay_style={"visibility": "visible", "opacity": 0.5})


def _range(site: dict[str, Any], start: str, end: str) -> tuple[datetime, datetime]:
    zone = ZoneInfo(site["timezone"])
    t_from = datetime.combine(date.fromisoformat(start[:10]), datetime.min.time(), zone)
    t_to = datetime.combine(date.fromisoformat(end[:10]) + timedelta(days=1), datetime.min.time(), zone)
    return t_from, t_to


def _tree(nodes: list[dict[str, Any]], usage: dict[int, dict[str, Any]]) -> list[Any]:
    children: dict[int | None, list[dict[str, Any]]] = {}
    for n in nodes:
        children.setdefault(n["parent_id"], []).append(n)

    def render(n: dict[str, Any]) -> Any:
        kwh = usage.get(n["id"], {}).get("energy_wh", 0) / 1000
        energy = "generation (see Solar and grid)" if n.get("flow") == "generation" else f"{kwh:,.1f} kWh"
        label = f"{n['name']} · {energy}" + (" (sensor)" if n["sensors"] else "")
        kids = children.get(n["id"], [])
        if not kids:
            return html.Div(label, className="leaf")
        return html.Details([html.Summary(label), *[render(k) for k in kids]], open=n["depth"] < 2)

    return [render(n) for n in children.get(None, [])]


def _visible_range(c: Any, p: Principal, site_id: int, start: str, end: str) -> tuple[dict[str, Any], datetime,
                                                                                    datetime]:
    """The callback's site (no update if it is not visible) and its picked local days."""
    site = queries.site(c, p, site_id)
    if site is None:
        raise dash.exceptions.PreventUpdate
    return site, *_range(site, start, end)


def overview(start: str, end: str, site_id: int) -> tuple[Any, ...]:
    p = current_principal()
    with conn() as c:
        site, t_from, t_to = _visible_range(c, p, site_id, start, end)
        nodes = queries.tree(c, p, site_id)
        try:
            cost = site_cost(c, p, site_id, t_from, t_to) if p.sees_costs else None
        except TariffError:
            cost = None
        # With a tariff, the costing scan already carries each node's energy and remainder.
        usage = ({n.node_id: {"energy_wh": n.energy_wh, "unmonitored_wh": n.unmonitored_wh} for n in cost.nodes}
                 if cost is not None else
                 {u["node_id"]: u for u in queries.usage_by_node(c, p, site_id, t_from, t_to)})
    names = {n["id"]: n["name"] for n in nodes}
    ids, labels, parents, values = [], [], [], []
    for n in nodes:
        energy = usage.get(n["id"], {}).get("energy_wh") or 0.0
        if energy <= 0:
            continue
        ids.append(str(n["id"]))
        labels.append(n["name"])
        parents.append(str(n["parent_id"]) if n["parent_id"] else "")
        values.append(energy / 1000)
        remainder = usage[n["id"]].get("unmonitored_wh")
        if remainder:
            ids.append(f"{n['id']}-rest")
            labels.append("Unmonitored")
            parents.append(str(n["id"]))
            values.append(remainder / 1000)
    fig = go.Figure(go.Sunburst(ids=ids, labels=labels, parents=parents, values=values, branchvalues="total",
                                hovertemplate="%{label}: %{value:,.1f} kWh<extra></extra>"))
    fig.update_layout(margin={"t": 10, "l": 10, "r": 10, "b": 10}, height=420)
    if cost is None:
        none = html.Div("This site has no tariff yet." if p.sees_costs else "Costs are not shown to installers.",
                        className="empty")
        return _tree(nodes, usage), fig, none, none, "–"
    inv = cost.invoice
    lines = html.Table([html.Tr([html.Th("Line"), html.Th("Quantity"), html.Th(f"Amount ({inv.currency})")])] + [
        html.Tr([html.Td(line.label), html.Td(str(line.quantity)), html.Td(f"{line.minor / 100:,.2f}")])
        for line in inv.lines] + [html.Tr([html.Th("Total"), html.Td(""), html.Th(f"{inv.total:,.2f}",
                                                                                 id="site-cost-total")])],
        className="grid")
    top = sorted(cost.nodes, key=lambda n: n.energy_cost_minor, reverse=True)[:12]
    node_table = html.Table([html.Tr([html.Th("Node"), html.Th("kWh"), html.Th(f"Energy cost ({inv.currency})")])] + [
        html.Tr([html.Td(names.get(n.node_id, str(n.node_id))), html.Td(f"{n.energy_wh / 1000:,.1f}"),
                 html.Td(f"{n.energy_cost_minor / 100:,.2f}")]) for n in top], className="grid")
    zone = ZoneInfo(site["timezone"])
    # The README's rule: a range shorter than its month pays its share of the demand charge.
    demand = [html.Div(f"{d['month']}: {d['peak_kw']:,.1f} kW at "
                       f"{d['at'].astimezone(zone):%Y-%m-%d %H:%M} {site['timezone']}"
                       + (f" · charged pro rata, {d['month_share'] * 100:.2f} % of the month"
                          if d.get("month_share", 1) < 1 else "")) for d in inv.demand_peaks]
    return _tree(nodes, usage), fig, lines, node_table, demand or "–"


def balance(start: str, end: str, site_id: int) -> tuple[Any, go.Figure]:
    """The range's consumption, generation, import, export and self-consumption, and the
    import and export per bucket beside the two flows (wattline.generation)."""
    p = current_principal()
    with conn() as c:
        _, t_from, t_to = _visible_range(c, p, site_id, start, end)
        span = t_to - t_from
        resolution = Resolution.MIN15 if span <= timedelta(days=2) else \
            Resolution.HOUR1 if span <= timedelta(days=60) else Resolution.DAY1
        rows = queries.energy_balance(c, p, site_id, t_from, t_to, resolution)
    totals = {k: wh / 1000 for k, wh in balance_totals(rows).items()}
    used = totals["self_consumption_wh"] / totals["generation_wh"] * 100 if totals["generation_wh"] else None
    summary = html.Table([html.Tr([html.Th(label), html.Td(f"{totals[k]:,.1f} kWh", id=f"site-balance-{k[:-3]}")])
                          for k, label in BALANCE]
                         + [html.Tr([html.Th("Share of generation used on site"),
                                     html.Td("–" if used is None else f"{used:.0f} %")])], className="grid")
    x = [r["bucket"] for r in rows]
    fig = go.Figure([
        go.Bar(x=x, y=[r["import_wh"] / 1000 for r in rows], name="From the grid", marker_color="#c0392b"),
        go.Bar(x=x, y=[-r["export_wh"] / 1000 for r in rows], name="To the grid", marker_color="#27ae60"),
        go.Scatter(x=x, y=[r["consumption_wh"] / 1000 for r in rows], name="Consumed", line={"color": "#34495e"}),
        go.Scatter(x=x, y=[r["generation_wh"] / 1000 for r in rows], name="Generated", line={"color": "#f39c12"}),
    ])
    fig.update_layout(barmode="relative", margin={"t": 10, "l": 40, "r": 10, "b": 30}, height=320,
                      yaxis_title=f"kWh per {resolution.minutes} min" if resolution.minutes < 1440 else "kWh per day",
                      legend={"orientation": "h"})
    return summary, fig


def compared(start: str, end: str, site_id: int) -> tuple[Any, go.Figure]:
    """The range beside the period before and a year earlier; this week's days over the typical weekday."""
    p = current_principal()
    with conn() as c:
        _, t_from, t_to = _visible_range(c, p, site_id, start, end)
        periods = comparison.compare(c, p, site_id, t_from, t_to)
        profile = comparison.daily_profile(c, p, site_id)
    base = periods[0].kwh if periods else 0.0
    money = p.sees_costs and any(x.cost is not None for x in periods)
    head = ["", "Dates", "kWh", "Change"] + (["Cost"] if money else [])
    rows = []
    for x in periods:
        change = "" if x is periods[0] else ("—" if not x.kwh else f"{(base - x.kwh) / x.kwh * 100:+.0f} %")
        last_day = x.end - timedelta(days=1)
        rows.append(html.Tr([html.Td(x.label), html.Td(f"{x.start:%Y-%m-%d} – {last_day:%Y-%m-%d}"),
                             html.Td(f"{x.kwh:,.1f}"), html.Td(change)]
                            + ([html.Td("—" if x.cost is None else f"{x.cost:,.2f}")] if money else [])))
    table = html.Table([html.Tr([html.Th(h) for h in head]), *rows], className="grid", id="site-compare-table")
    fig = go.Figure()
    hours = list(range(24))
    fig.add_trace(go.Scatter(x=hours, y=profile.typical_weekday, name="typical weekday", mode="lines",
                             line={"width": 6, "color": "rgba(19,49,92,0.25)"}))
    for day, values in profile.days.items():
        fig.add_trace(go.Scatter(x=hours, y=values, name=day, mode="lines"))
    fig.update_layout(height=320, margin={"t": 10, "l": 50, "r": 10, "b": 40}, xaxis_title="hour of day (local)",
                      yaxis={"title": {"text": "kW"}, "rangemode": "tozero"}, legend={"orientation": "h"})
    if not profile.days and all(v is None for v in profile.typical_weekday):
        fig.add_annotation(text="No data in the last five weeks", showarrow=False, x=0.5, y=0.5, xref="paper",
                           yref="paper")
    return table, fig


def series(node_id: int, start: str, end: str, site_id: int) -> go.Figure:
    p = current_principal()
    with conn() as c:
        site, t_from, t_to = _visible_range(c, p, site_id, start, end)
        resolution = resolution_for(t_to - t_from)
        rows = queries.node_series(c, p, [node_id], resolution, t_from, t_to)
    return power_figure(rows, site["timezone"], resolution)


def power_figure(rows: list[dict[str, Any]], timezone: str, resolution: Resolution) -> go.Figure:
    """Mean power per bucket in the site's local time, in kW from zero.

    Watts are the sensors' real precision, so values are rounded to them: averaging a
    steady load leaves ULP noise (7.648736366224163 vs ...166), and Plotly autoranges such
    a flat line to a 3e-15 wide axis, hides every tick label and draws the axis title at
    x=Infinity. From zero is also how a facility manager reads a load."""
    zone = ZoneInfo(timezone)
    fig = go.Figure(go.Scatter(x=[r["bucket"].astimezone(zone).replace(tzinfo=None) for r in rows],
                               y=[round(r["mean_power_w"]) / 1000 for r in rows], mode="lines", name="kW",
                               line={"shape": "hv"}))
    fig.update_layout(height=360, margin={"t": 20, "l": 50, "r": 20, "b": 40},
                      xaxis_title=f"local time ({timezone}), {resolution.value} buckets",
                      yaxis={"title": {"text": "kW"}, "rangemode": "tozero"},
                      xaxis={"rangeslider": {"visible": True}, "rangeselector": {"buttons": [
                          {"count": 6, "label": "6h", "step": "hour", "stepmode": "backward"},
                          {"count": 1, "label": "1d", "step": "day", "stepmode": "backward"},
                          {"step": "all"}]}})
    if not rows:
        fig.add_annotation(text="No data in this range", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig
