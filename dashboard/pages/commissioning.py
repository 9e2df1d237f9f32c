"""Commissioning: per bridge, the discovered, mapped, live, silent and implausible sensors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dash
from dash import Dash, Input, Output, State, dcc, html

from dashboard.auth import current_principal
from dashboard.data import conn, reporting_interval_s
from wattline import queries
from wattline.domain import sensor_state


def register(app: Dash) -> None:
    dash.register_page("commissioning", path_template="/commissioning/<site_id>",
                       title="Commissioning · Wattline", layout=layout)
    app.callback(Output("comm-body", "children"), Input("comm-tick", "n_intervals"),
                 State("comm-site", "data"))(refresh)


def layout(site_id: str = "0", **_: Any) -> html.Div:
    return html.Div([
        dcc.Store(id="comm-site", data=int(site_id) if site_id.isdigit() else 0),
        dcc.Interval(id="comm-tick", interval=10_000),
        html.H2("Commissioning"),
        html.Div(id="comm-body"),
    ], className="page")


def refresh(_: int | None, site_id: int) -> Any:
    p = current_principal()
    now = datetime.now(UTC)
    with conn() as c:
        site = queries.site(c, p, site_id)
        if site is None:
            return html.Div("No such site.", className="empty")
        bridges = queries.bridges(c, p, site_id)
        sensors = queries.sensors(c, p, site_id)
    if not bridges:
        return html.Div("No bridges registered at this site yet.", className="empty")
    interval = reporting_interval_s()
    blocks = []
    for b in bridges:
        mine = [s for s in sensors if s["bridge_id"] == b["id"]]
        rows = []
        for s in mine:
            check, detail = sensor_state(s["last_seen_at"], s["last_current_a"], s["ct_rating_a"], interval, now)
            state = "discovered" if s["node_id"] is None else check
            rows.append(html.Tr([html.Td(s["serial"]), html.Td(state, className=f"state-{state}"),
                                 html.Td(s["node_name"] or "—"), html.Td(s["phase"] or "—"),
                                 html.Td(f"{s['last_current_a']:.2f} A" if s["last_current_a"] is not None else "—"),
                                 html.Td(f"{s['last_rssi_dbw']:.0f} dBW" if s["last_rssi_dbw"] is not None else "—"),
                                 html.Td(detail)]))
        online = {True: html.Span("online", className="flag ok"), False: html.Span("offline", className="flag bad"),
                  None: html.Span("no status", className="flag")}[b["online"]]
        blocks.append(html.Div([
            html.H4([f"Bridge {b['serial']} ", online]),
            html.Table([html.Tr([html.Th(h) for h in ("Sensor", "State", "Circuit", "Phase", "Last current",
                                                       "RSSI", "Detail")]), *rows], className="grid")
            if rows else html.Div("No sensors heard yet.", className="muted"),
        ], className="card", style={"marginBottom": "1rem"}))
    return blocks
