"""Alerts: the notification centre (triggers arrive with the alerts feature)."""

from __future__ import annotations

from typing import Any

import dash
from dash import Dash, html


def register(app: Dash) -> None:
    dash.register_page("alerts", path="/alerts", title="Alerts · Wattline", layout=layout)


def layout(**_: Any) -> html.Div:
    return html.Div([
        html.H2("Alerts"),
        html.Div("No alerts. Alert triggers (thresholds, offline, anomalies, budget caps) are not built yet.",
                 className="empty"),
    ], className="page")
