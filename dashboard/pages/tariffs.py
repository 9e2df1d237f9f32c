"""Tariffs: versions and bands, and the price as a 24-hour × day-type map."""

from __future__ import annotations

from typing import Any

import dash
import plotly.graph_objects as go
from dash import Dash, dcc, html

from analytics.tariffs import load_tariffs, rate_table
from dashboard.auth import current_principal
from dashboard.data import conn, no_such_site, site_from_path
from wattline.tariffs import DAY_TYPES, SLOT_MIN

WEEK_ROWS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "Public holiday"]


def register(app: Dash) -> None:
    dash.register_page("tariffs", path_template="/tariffs/<site_id>", title="Tariffs · Wattline", layout=layout)


def layout(site_id: str = "0", **_: Any) -> html.Div:
    with conn() as c:
        site = site_from_path(c, site_id)
        if site is None:
            return no_such_site()
        if not current_principal().sees_costs:
            return html.Div([html.H2(f"Tariffs · {site['name']}"),
                             html.Div("Tariffs and costs are not shown to installers.", className="empty")],
                            className="page")
        versions = load_tariffs(c, site["id"])
    if not versions:
        return html.Div([html.H2(f"Tariffs · {site['name']}"),
                         html.Div("No tariff yet: add one with POST /v1/sites/{id}/tariffs.", className="empty")],
                        className="page")
    table = rate_table(versions)
    blocks = []
    for v, version in enumerate(reversed(versions)):
        k = len(versions) - 1 - v
        hours = [f"{(s * SLOT_MIN) // 60:02d}:{(s * SLOT_MIN) % 60:02d}" for s in range(table.rates.shape[2])]
        # One row per weekday (Mon-Fri use the weekday bands, Sat-Sun the weekend ones) and
        # one for public holidays, as a facility manager reads a week.
        rows = [table.rates[k, DAY_TYPES.index("weekday" if d < 5 else "weekend")] for d in range(7)]
        rows.append(table.rates[k, DAY_TYPES.index("holiday")])
        fig = go.Figure(go.Heatmap(z=rows, x=hours, y=WEEK_ROWS, colorscale="YlOrRd",
                                   colorbar={"title": f"{version.currency} minor/kWh"},
                                   hovertemplate="%{y} %{x}: %{z:.2f}<extra></extra>"))
        fig.update_layout(height=320, margin={"t": 10, "l": 110, "r": 10, "b": 40},
                          yaxis={"autorange": "reversed"})
        bands = html.Table([html.Tr([html.Th(h) for h in ("Band", "Rate (minor/kWh)", "Days", "From", "To")])] + [
            html.Tr([html.Td(b.name), html.Td(f"{b.rate_minor_per_kwh}"), html.Td(", ".join(b.day_types)),
                     html.Td(b.start.strftime("%H:%M")), html.Td(b.end.strftime("%H:%M"))]) for b in version.bands],
            className="grid")
        blocks.append(html.Div([
            html.H4(f"{version.name} — from {version.valid_from:%Y-%m-%d %H:%M %Z}"),
            html.Div(f"Standing charge {version.standing_minor_per_day}/day · demand "
                     f"{version.demand_minor_per_kw}/kW on the {version.demand_interval_min}-minute peak · "
                     f"VAT {float(version.vat_rate) * 100:g} %", className="muted"),
            dcc.Graph(figure=fig, className="tariff-map"), bands], className="card"))
    return html.Div([html.H2(f"Tariffs · {site['name']}"), *blocks], className="page")
