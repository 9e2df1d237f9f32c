"""Alerts: the notification centre. Active alerts (open or acknowledged) with acknowledge
and resolve buttons, and the history of every episode."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import dash
from dash import ALL, Dash, Input, Output, ctx, dcc, html

from alerts import store
from dashboard.auth import current_principal
from dashboard.data import conn

SEVERITY_CLASS = {"critical": "flag bad", "warning": "flag warn", "info": "flag"}


def register(app: Dash) -> None:
    dash.register_page("alerts", path="/alerts", title="Alerts · Wattline", layout=layout)
    app.callback(Output("alerts-list", "children"),
                 Input("alerts-state", "value"), Input("alerts-tick", "n_intervals"),
                 Input({"type": "alert-ack", "id": ALL}, "n_clicks"),
                 Input({"type": "alert-resolve", "id": ALL}, "n_clicks"))(refresh)


def layout(**_: Any) -> html.Div:
    return html.Div([
        html.H2("Alerts"),
        dcc.Interval(id="alerts-tick", interval=30_000),
        dcc.RadioItems(id="alerts-state", value="active", inline=True, className="state-picker",
                       options=[{"label": " Active ", "value": "active"}, {"label": " Open ", "value": "open"},
                                {"label": " Acknowledged ", "value": "acknowledged"},
                                {"label": " Resolved ", "value": "resolved"}, {"label": " History ", "value": "all"}]),
        dcc.Loading(html.Div(id="alerts-list")),
    ], className="page")


def _when(t: datetime | None, zone: str) -> str:
    """In the site's own clock, with the zone named."""
    return t.astimezone(ZoneInfo(zone)).strftime(f"%Y-%m-%d %H:%M {zone}") if t else "–"


def row(a: dict[str, Any], can_write: bool) -> html.Tr:
    actions = []
    if can_write and a["state"] == "open":
        actions.append(html.Button("Acknowledge", id={"type": "alert-ack", "id": a["id"]}, className="small"))
    if can_write and a["state"] != "resolved":
        actions.append(html.Button("Resolve", id={"type": "alert-resolve", "id": a["id"]}, className="small"))
    ongoing = "ongoing" if a["cleared_at"] is None else f"cleared {_when(a['cleared_at'], a['timezone'])}"
    return html.Tr([
        html.Td(html.Span(a["severity"], className=SEVERITY_CLASS.get(a["severity"], "flag"))),
        html.Td([dcc.Link(a["site_name"], href=f"/site/{a['site_id']}"), html.Div(a["rule_name"], className="muted")]),
        html.Td(a["message"]),
        html.Td([html.Div(f"since {_when(a['started_at'], a['timezone'])}"), html.Div(ongoing, className="muted")]),
        html.Td(a["state"], className=f"alert-state {a['state']}"),
        html.Td(actions),
    ], className="alert-row", id=f"alert-{a['id']}")


def refresh(state: str | None, _tick: int | None, _acks: list[int | None], _resolves: list[int | None]) -> Any:
    p = current_principal()
    with conn() as c:
        trigger = ctx.triggered_id
        # The button ids come from the rendered list; re-check the tenant before acting.
        # A button that has just been rendered also triggers (with no clicks): act only on a click.
        clicked = bool(ctx.triggered and ctx.triggered[0]["value"])
        if isinstance(trigger, dict) and clicked and p.can("write") and store.alert(c, p, int(trigger["id"])):
            act = store.acknowledge if trigger["type"] == "alert-ack" else store.resolve
            act(c, int(trigger["id"]), p.user_id)
        rows = store.alerts(c, p, state=state or "active", limit=500)  # type: ignore[arg-type]
    if not rows:
        return html.Div("No alerts here. Rules are set per site, on each site's Alert rules page.",
                        className="empty")
    return html.Table([
        html.Thead(html.Tr([html.Th(h) for h in ("", "Site · rule", "What", "When", "State", "")])),
        html.Tbody([row(a, p.can("write")) for a in rows]),
    ], className="grid alerts-table")
