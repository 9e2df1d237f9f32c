"""The Dash app: multi-page, behind the same login and tenancy as the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dash
import flask
from dash import Dash, dcc, html

from dashboard import auth, data, downloads
from wattline.db import make_pool
from wattline.settings import Settings

# The page container's own content; typed Any because Dash declares the argument as a
# TypedDict without keys.
PAGE_BUILD: Any = {"_pages_content": "children"}


def create_dash(settings: Settings) -> Dash:
    """The dashboard over the database of `settings`."""
    pool = make_pool(settings.require_database_url(), max_size=8, name="dashboard", wait=False)
    data.configure(pool, settings)
    app = Dash(__name__, use_pages=True, pages_folder="", title="Wattline", suppress_callback_exceptions=True,
               assets_folder=str(Path(__file__).parent / "assets"))
    app.server.secret_key = settings.secret_key
    app.server.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    auth.install(app.server, pool, settings)
    downloads.install(app.server)
    from dashboard.pages import (
        account,
        alert_rules,
        alerts,
        commissioning,
        emissions,
        exports,
        hierarchy,
        people,
        portfolio,
        reports,
        site,
        tariffs,
        virtual_meters,
        weather,
    )

    # Each page has its own prefix: Dash matches templates with fnmatch, where "/site/<id>"
    # would also match "/site/1/tariffs", and it orders its registry itself.
    for module in (portfolio, site, tariffs, commissioning, hierarchy, alerts, alert_rules, virtual_meters, weather,
                   emissions, exports, reports, people, account):
        module.register(app)
    app.layout = lambda: html.Div([
        html.Header([html.A("Wattline", href="/", className="brand"), html.Nav(_nav())], className="topbar"),
        # Only a page being built shows this spinner. By default dcc.Loading watches every
        # callback inside it, so one slow chart would blank the whole page after 300 ms;
        # charts and tables have their own spinners.
        dcc.Loading(dash.page_container, type="dot", delay_show=300,
                    target_components=PAGE_BUILD),
    ])
    return app


def _nav() -> list[Any]:
    """The top bar's links: People for admins only."""
    links = [html.A("Portfolio", href="/"), html.A("Alerts", href="/alerts")]
    principal = flask.g.get("principal")
    if principal is not None and principal.can("admin"):
        links += [html.A("Exports", href="/exports"), html.A("People", href="/people")]
    return [*links, html.A("Account", href="/account"), html.A("Sign out", href="/logout")]
