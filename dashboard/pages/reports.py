"""A site's monthly reports: every month archived, to open as a page or download as PDF."""

from __future__ import annotations

from typing import Any

import dash
from dash import Dash, dcc, html

from dashboard.auth import current_principal
from dashboard.data import conn, no_such_site, site_from_path
from exports import reports


def register(app: Dash) -> None:
    dash.register_page("reports", path_template="/reports/<site_id>", title="Reports · Wattline", layout=layout)


def layout(site_id: str = "0", **_: Any) -> html.Div:
    with conn() as c:
        site = site_from_path(c, site_id)
        if site is None:
            return no_such_site()
        if not current_principal().sees_costs:
            return html.Div([html.H2(f"Reports · {site['name']}"),
                             html.Div("Reports show costs, which installers do not see.", className="empty")],
                            className="page")
        found = reports.reports(c, site["id"])
    rows = [html.Tr([html.Td(f"{r['month_start']:%B %Y}"), html.Td(f"{r['created_at']:%Y-%m-%d %H:%M} UTC"),
                     html.Td("superseded" if r["superseded_at"] else "current"),
                     html.Td([html.A("Open", href=f"/reports/{site['id']}/{r['id']}.html", target="_blank"), " · ",
                              html.A("PDF", href=f"/reports/{site['id']}/{r['id']}.pdf",
                                     id=f"report-pdf-{r['id']}")])]) for r in found]
    body = html.Table([html.Tr([html.Th(h) for h in ("Month", "Made", "", "")]), *rows], className="grid",
                      id="reports-table") if rows else html.Div(
        "No report yet: each month's is made on the 1st, in the site's time zone.", className="empty")
    return html.Div([html.H2(f"Reports · {site['name']}"),
                     html.Div([dcc.Link("Site", href=f"/site/{site['id']}")], className="toolbar"),
                     html.Div(body, className="card table-scroll")], className="page")
