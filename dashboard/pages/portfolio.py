"""Portfolio: every site with power now, energy and cost today and this month vs last month."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dash
from dash import Dash, Input, Output, dcc, html

from alerts import store as alert_store
from analytics.benchmark import site_benchmarks
from analytics.costing import site_cost
from dashboard.auth import current_principal
from dashboard.data import conn, reporting_interval_s
from wattline import queries
from wattline.domain import sensor_state
from wattline.tariffs import TariffError


def register(app: Dash) -> None:
    dash.register_page("portfolio", path="/", title="Portfolio · Wattline", layout=layout)
    app.callback(Output("portfolio-cards", "children"), Output("portfolio-benchmark", "children"),
                 Input("portfolio-tick", "n_intervals"))(refresh)


def layout(**_: Any) -> html.Div:
    return html.Div([
        html.H2("Portfolio"),
        dcc.Interval(id="portfolio-tick", interval=30_000),
        html.Div(id="portfolio-cards", className="cards"),
        html.H3("Benchmark, this month"),
        html.Div(id="portfolio-benchmark"),
    ], className="page")


def _money(minor: float, currency: str) -> str:
    symbol = {"GBP": "£", "EUR": "€", "USD": "$"}.get(currency, currency + " ")
    return f"{symbol}{minor / 100:,.2f}"


def site_summary(c: Any, p: Any, site: dict[str, Any], now: datetime) -> dict[str, Any]:
    zone = ZoneInfo(site["timezone"])
    local = now.astimezone(zone)
    today = local.replace(hour=0, minute=0, second=0, microsecond=0)
    month = today.replace(day=1)
    last_month = (month - timedelta(days=1)).replace(day=1)
    out: dict[str, Any] = {"site": site, "zone": site["timezone"]}
    power = queries.site_power_now(c, p, site["id"])
    out["power_kw"] = power["mean_power_w"] / 1000 if power else None
    for key, start, end in (("today", today, now), ("month", month, now), ("last_month", last_month, month)):
        try:
            cost = site_cost(c, p, site["id"], start, end) if p.sees_costs else None
        except TariffError:
            cost = None
        usage = queries.energy_15m(c, p, site["id"], start, end)
        out[f"{key}_kwh"] = sum(r["energy_wh"] for r in usage) / 1000
        out[f"{key}_cost"] = (float(cost.invoice.total_minor), cost.invoice.currency) if cost else None
    bridges = queries.bridges(c, p, site["id"])
    out["offline_bridges"] = [b["serial"] for b in bridges if b["online"] is False]
    sensors = queries.sensors(c, p, site["id"])
    interval = reporting_interval_s()
    out["silent_sensors"] = sum(
        1 for s in sensors if s["node_id"] and sensor_state(s["last_seen_at"], s["last_current_a"], s["ct_rating_a"],
                                                           interval, now)[0] in ("silent", "never_seen"))
    out["discovered"] = sum(1 for s in sensors if s["node_id"] is None)
    return out


def card(s: dict[str, Any]) -> html.Div:
    site = s["site"]
    flags: list[Any] = []
    if s["offline_bridges"]:
        flags.append(html.Span(f"{len(s['offline_bridges'])} bridge(s) offline", className="flag bad"))
    if s["silent_sensors"]:
        flags.append(html.Span(f"{s['silent_sensors']} silent sensor(s)", className="flag bad"))
    if s.get("open_alerts"):
        flags.append(dcc.Link(f"{s['open_alerts']} open alert(s)", href="/alerts", className="flag bad open-alerts"))
    if s["discovered"]:
        flags.append(html.Span(f"{s['discovered']} to commission", className="flag"))
    if not flags:
        flags.append(html.Span("all reporting", className="flag ok"))

    def cost(key: str) -> str:
        value = s[f"{key}_cost"]
        return _money(*value) if value else "no tariff" if current_principal().sees_costs else ""

    return html.Div([
        html.H3(dcc.Link(site["name"], href=f"/site/{site['id']}")),
        html.Div(f"{site['timezone']}", className="muted"),
        html.Div([html.Span("Power now "), html.Span(
            f"{s['power_kw']:.1f} kW" if s["power_kw"] is not None else "–", className="kpi site-power")]),
        html.Div(f"Today: {s['today_kwh']:,.1f} kWh · {cost('today')}"),
        html.Div(f"This month: {s['month_kwh']:,.0f} kWh · {cost('month')}"),
        html.Div(f"Last month: {s['last_month_kwh']:,.0f} kWh · {cost('last_month')}", className="muted"),
        html.Div(flags, style={"marginTop": ".5rem"}),
        html.Div([dcc.Link("Commissioning", href=f"/commissioning/{site['id']}", className="small-link"), " · ",
                  dcc.Link("Hierarchy", href=f"/hierarchy/{site['id']}", className="small-link")],
                 style={"marginTop": ".4rem"}),
    ], className="card site-card", id={"type": "site-card", "site": site["id"]})


def benchmark_table(rows: list[dict[str, Any]]) -> Any:
    if not rows:
        return html.Div("No sites to compare.", className="empty")

    def num(v: float | None, fmt: str) -> str:
        return format(v, fmt) if v is not None else "–"
    table = html.Table([
        html.Thead(html.Tr([html.Th(h) for h in ("Site", "kWh", "m²", "kWh/m²", "hours open", "kWh per open hour",
                                                 "HDD / CDD", "kWh/m² at the same weather", "kg CO2e",
                                                 "rank")])),
        html.Tbody([html.Tr([html.Td(r["site_name"]), html.Td(num(r["energy_kwh"], ",.0f")),
                             html.Td(num(r["floor_area_m2"], ",.0f")), html.Td(num(r["kwh_per_m2"], ",.2f")),
                             html.Td(num(r["opening_hours"], ",.0f")), html.Td(num(r["kwh_per_opening_hour"], ",.1f")),
                             html.Td(f"{r['hdd']:,.0f} / {r['cdd']:,.0f}"),
                             html.Td(num(r["kwh_per_m2_weather_normalised"], ",.2f"),
                                     title="by each site's weather baseline, at the day-by-day mean temperature "
                                           "of the sites compared"),
                             html.Td(num(r["kg_co2e"], ",.0f"), title="at each site's emission factor"),
                             html.Td(num(r["rank_per_m2"], "d"))], className="benchmark-row")
                    for r in sorted(rows, key=lambda r: (r["rank_per_m2"] is None, r["rank_per_m2"] or 0))]),
    ], className="grid benchmark-table")
    return html.Div(table, className="table-scroll")  # ten columns: a phone scrolls them


def refresh(_: int | None) -> tuple[list[Any], Any]:
    p = current_principal()
    now = datetime.now(UTC)
    with conn() as c:
        sites = queries.sites(c, p)
        if not sites:
            return [html.Div("No sites yet. Add one through the API (POST /v1/sites).", className="empty")], None
        open_alerts = alert_store.open_counts(c, p)
        cards = [card({**site_summary(c, p, site, now), "open_alerts": open_alerts.get(site["id"], 0)})
                 for site in sites]
        # This month in UTC across sites: one range for all, so the figures compare.
        month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        bench: list[dict[str, Any]] = []
        for customer_id in sorted({s["customer_id"] for s in sites}):
            bench += site_benchmarks(c, p, customer_id, month, now)
        return cards, benchmark_table(bench)
