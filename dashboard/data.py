"""The dashboard's data access: the shared query layer, with the signed-in principal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from dash import html
from psycopg_pool import ConnectionPool

from wattline.errors import DomainError, RowErrors
from wattline.settings import Settings

_pool: ConnectionPool | None = None
_settings: Settings | None = None


def configure(pool: ConnectionPool, settings: Settings) -> None:
    global _pool, _settings
    _pool, _settings = pool, settings


def settings() -> Settings:
    assert _settings is not None, "dashboard not configured"
    return _settings


def reporting_interval_s() -> float:
    assert _settings is not None, "dashboard not configured"
    return _settings.reporting_interval_s


@contextmanager
def conn() -> Iterator[psycopg.Connection[Any]]:
    assert _pool is not None, "dashboard pool not initialised"
    with _pool.connection() as c:
        yield c


def site_from_path(c: psycopg.Connection[Any], site_id: str) -> dict[str, Any] | None:
    """The site a page's URL names, if the signed-in user may see it."""
    from dashboard.auth import current_principal
    from wattline import queries

    return queries.site(c, current_principal(), int(site_id)) if site_id.isdigit() else None


def no_such_site() -> html.Div:
    return html.Div(html.Div("No such site.", className="empty"), className="page")


def refusal(exc: DomainError, element_id: str) -> html.Div:
    """A write's refusal as the page shows it: the reason, and each refused row of an upload."""
    if isinstance(exc, RowErrors):  # the list says each row's reason; the heading only counts them
        more = " The first 20 are listed." if len(exc.rows) > 20 else ""
        return html.Div([html.Div(f"{exc.title}: {len(exc.rows)} row(s) refused, nothing imported.{more}"),
                         html.Ul([html.Li(f"line {line}: {why}") for line, why in exc.rows[:20]])],
                        className="error", id=element_id)
    return html.Div(f"{exc.title}: {exc}", className="error", id=element_id)
