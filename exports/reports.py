"""The monthly site report: one page, as HTML and as PDF (WeasyPrint lays out the same HTML).

For a site and a local month: energy and cost by tariff band, the demand peak, the top
consumers, the unmonitored remainder, the month beside the one before and the same month a
year earlier, the alerts raised, and the normalised benchmark. It is made on the 1st in the
site's time zone (from 01:00, once the rollups of the last evening are in), archived in
`site_reports`, registered as a delivery of those days' costs, and mailed with the PDF to
the people of the customer who want report mail and may see the site's costs.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, datetime, time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import structlog
import weasyprint

from analytics.benchmark import site_benchmarks
from analytics.costing import site_cost
from analytics.degree_days import NotEnoughData, project_savings
from analytics.emissions import site_totals
from analytics.virtual_meters import meter_cost
from wattline import mail, notifications, queries, virtual_meters, weather
from wattline.db import fetch_all, fetch_one
from wattline.domain import Resolution
from wattline.emissions import factor_of
from wattline.errors import DomainError
from wattline.generation import BALANCE, balance_totals
from wattline.principal import Principal, acting_for
from wattline.tariffs import TariffError

log = structlog.get_logger("wattline.reports")
#: The report of a month is made from this local hour of the 1st (late data, the rollup worker).
READY_AT = time(1, 0)
TOP = 10


@dataclass(frozen=True)
class Month:
    """A local month of a site: [start, end) at local midnights, and its name."""

    start: datetime
    end: datetime

    @property
    def name(self) -> str:
        """"November 2026"."""
        return f"{self.start:%B %Y}"


def month_of(day: datetime, tz: str, back: int = 0) -> Month:
    """The local month containing `day`, or `back` months before it."""
    zone = ZoneInfo(tz)
    local = day.astimezone(zone)
    index = local.year * 12 + local.month - 1 - back
    start = datetime(index // 12, index % 12 + 1, 1, tzinfo=zone)
    end = datetime((index + 1) // 12, (index + 1) % 12 + 1, 1, tzinfo=zone)
    return Month(start, end)


def _energy_kwh(conn: psycopg.Connection[Any], site_id: int, month: Month) -> float:
    row = fetch_one(conn, """SELECT COALESCE(sum(r.energy_wh), 0) AS wh FROM rollups_1h r JOIN nodes n
                             ON n.id = r.node_id WHERE n.site_id = %s AND n.kind = 'site'
                             AND r.bucket >= %s AND r.bucket < %s""", (site_id, month.start, month.end))
    return float(row["wh"]) / 1000.0 if row else 0.0


def _cost(conn: psycopg.Connection[Any], customer_id: int, site_id: int, month: Month) -> Any:
    try:
        return site_cost(conn, acting_for(customer_id), site_id, month.start, month.end)
    except TariffError:
        return None


def _meters(conn: psycopg.Connection[Any], p: Principal, site_id: int, month: Month) -> list[dict[str, Any]]:
    """The customer's virtual meters that count a part of this site: the month's energy and
    energy cost (each node on its own site's tariffs), or why it has no cost."""
    out = []
    for m in virtual_meters.meters(conn, p, p.customer_id):
        if site_id not in virtual_meters.node_sites(conn, virtual_meters.expand(conn, m["id"])).values():
            continue
        try:
            found = meter_cost(conn, p, m["id"], month.start, month.end)
        except (TariffError, DomainError) as exc:
            out.append({"name": m["name"], "kwh": None, "cost": None, "currency": None, "why": str(exc)})
            continue
        if found is not None:
            out.append({"name": m["name"], "kwh": found.energy_wh / 1000, "cost": found.energy_cost_minor / 100,
                        "currency": found.currency, "why": None})
    return out


def report_data(conn: psycopg.Connection[Any], site_id: int, month: Month) -> dict[str, Any]:
    """Every figure of the report, read from the rollups, the cost tier and the alerts."""
    site = fetch_one(conn, """SELECT id, name, customer_id, timezone, country, hdd_base_c, cdd_base_c, co2e_g_per_kwh,
                                     co2e_source FROM sites WHERE id = %s""", (site_id,))
    assert site is not None
    p = acting_for(site["customer_id"])
    cost = _cost(conn, site["customer_id"], site_id, month)
    nodes = {n["id"]: n for n in queries.tree(conn, p, site_id)}
    root = next((n for n in nodes.values() if n["kind"] == "site"), None)
    by_node = {c.node_id: c for c in cost.nodes} if cost else {}
    energy: dict[int, float] = {}
    for r in fetch_all(conn, """SELECT r.node_id, sum(r.energy_wh) AS wh, sum(r.unmonitored_wh) AS rest
                                FROM rollups_1h r JOIN nodes n ON n.id = r.node_id WHERE n.site_id = %s
                                AND r.bucket >= %s AND r.bucket < %s GROUP BY r.node_id""",
                       (site_id, month.start, month.end)):
        energy[r["node_id"]] = float(r["wh"] or 0.0) / 1000.0
    unmonitored = fetch_all(conn, """SELECT n.id, n.name, n.kind, sum(r.unmonitored_wh) / 1000.0 AS kwh
                                     FROM rollups_1h r JOIN nodes n ON n.id = r.node_id WHERE n.site_id = %s
                                     AND r.bucket >= %s AND r.bucket < %s AND r.unmonitored_wh IS NOT NULL
                                     GROUP BY n.id, n.name, n.kind HAVING sum(r.unmonitored_wh) > 0
                                     ORDER BY n.id""", (site_id, month.start, month.end))
    top = sorted(((n, energy.get(i, 0.0)) for i, n in nodes.items() if n["kind"] in ("circuit", "device")),
                 key=lambda x: -x[1])[:TOP]
    previous, last_year = month_of(month.start, site["timezone"], 1), month_of(month.start, site["timezone"], 12)
    comparisons = []
    for label, other in (("this month", month), ("the month before", previous), ("a year earlier", last_year)):
        other_cost = cost if other is month else _cost(conn, site["customer_id"], site_id, other)
        comparisons.append({"label": label, "month": other.name, "kwh": _energy_kwh(conn, site_id, other),
                            "total": other_cost.invoice.total if other_cost else None})
    alerts = fetch_all(conn, """SELECT e.started_at, e.cleared_at, e.severity, e.message, r.name AS rule
                                FROM alert_episodes e JOIN alert_rules r ON r.id = e.rule_id
                                WHERE r.site_id = %s AND e.started_at >= %s AND e.started_at < %s
                                ORDER BY e.started_at""", (site_id, month.start, month.end))
    bench = next((b for b in site_benchmarks(conn, p, site["customer_id"], month.start, month.end)
                  if b["site_id"] == site_id), None)
    month_end = month.end.astimezone(ZoneInfo(site["timezone"])).date()
    projects = []
    for proj in weather.projects(conn, site_id):
        if proj["starts_on"] >= month_end:
            continue
        try:  # savings from the project's start to the month's end
            saved = project_savings(conn, site, proj, month_end)
            projects.append({"name": proj["name"], "starts_on": proj["starts_on"], "savings_kwh": saved.savings_kwh,
                             "expected_kwh": saved.expected_kwh, "days": saved.counted_days, "why": None})
        except NotEnoughData as exc:
            projects.append({"name": proj["name"], "starts_on": proj["starts_on"], "savings_kwh": None,
                             "expected_kwh": None, "days": 0, "why": str(exc)})
    # CO2e is counted by the hour: a month that starts on a half hour (UTC+05:30) starts at its
    # hour. The report shows the site's only, so the root's hours are all it reads.
    hours = [t.replace(minute=0, second=0, microsecond=0) for t in (month.start, month.end)]
    balance = queries.energy_balance(conn, p, site_id, month.start, month.end, Resolution.HOUR1)
    solar = {k: wh / 1000 for k, wh in balance_totals(balance).items()}
    return {"site": site, "month": month, "invoice": cost.invoice if cost else None, "projects": projects,
            "solar": solar if solar["generation_wh"] > 0 else None,
            "factor": factor_of(site), "root_kg_co2e": site_totals(conn, [site], hours[0], hours[1])[site_id],
            "meters": _meters(conn, p, site_id, month),
            "root_kwh": energy.get(root["id"], 0.0) if root else 0.0,
            "top": [{"name": n["name"], "kind": n["kind"], "kwh": kwh,
                     "cost": by_node[n["id"]].energy_cost_minor / 100 if n["id"] in by_node else None}
                    for n, kwh in top],
            "unmonitored": unmonitored, "comparisons": comparisons, "alerts": alerts, "benchmark": bench}


def _money(value: Decimal | None, currency: str) -> str:
    return "—" if value is None else f"{currency} {value:,.2f}"


def render_html(data: dict[str, Any]) -> str:
    """The report as one self-contained HTML page (the PDF is this page, printed)."""
    e = html.escape
    site, month, inv = data["site"], data["month"], data["invoice"]
    zone = ZoneInfo(site["timezone"])
    currency = inv.currency if inv else ""
    parts = [f"<h1>{e(site['name'])}</h1><p class=sub>Monthly report · {e(month.name)} · {e(site['timezone'])}</p>",
             f"<p class=kpi>{data['root_kwh']:,.1f} kWh"
             + (f" · {_money(inv.total, currency)}" if inv else " · no tariff") + "</p>"]
    if inv:
        rows = "".join(f"<tr><td>{e(line.label)}</td><td class=n>{line.quantity:,}</td>"
                       f"<td class=n>{_money(line.minor / 100, currency)}</td></tr>" for line in inv.lines)
        parts.append(f"<h2>Energy and cost by band</h2><table><tr><th>Line</th><th class=n>Quantity</th>"
                     f"<th class=n>Amount</th></tr>{rows}<tr><th>Total</th><th></th>"
                     f"<th class=n>{_money(inv.total, currency)}</th></tr></table>")
        peaks = "".join(f"<li>{p['peak_kw']:,.1f} kW at {p['at'].astimezone(zone):%d %B %H:%M}</li>"
                        for p in inv.demand_peaks)
        parts.append(f"<h2>Demand peak</h2><ul>{peaks or '<li>no data</li>'}</ul>")
    factor, kg = data["factor"], data["root_kg_co2e"]
    if kg is None:
        said = "Unknown: no emission factor for this site's country, and none set for the site"
    elif factor.g_per_kwh is None:
        said = f"{kg:,.1f} kg CO2e at the uploaded hourly factors"
    else:
        said = f"{kg:,.1f} kg CO2e at {factor.g_per_kwh:,.1f} g/kWh ({e(factor.source or '')})"
    parts.append(f"<h2>Emissions</h2><p>{said}</p>")
    if solar := data.get("solar"):
        rows = "".join(f"<tr><td>{label}</td><td class=n>{solar[key]:,.1f}</td></tr>" for key, label in BALANCE)
        parts.append("<h2>Solar and grid</h2><p class=sub>Netted minute by minute, as an export meter counts"
                     f"</p><table><tr><th></th><th class=n>kWh</th></tr>{rows}</table>")
    top = "".join(f"<tr><td>{e(t['name'])}</td><td>{e(t['kind'])}</td><td class=n>{t['kwh']:,.1f}</td>"
                  f"<td class=n>{_money(t['cost'], currency) if inv else '—'}</td></tr>" for t in data["top"])
    parts.append(f"<h2>Top consumers</h2><table><tr><th>Circuit or device</th><th>Kind</th><th class=n>kWh</th>"
                 f"<th class=n>Energy cost</th></tr>{top}</table>")
    rest = "".join(f"<tr><td>{e(u['name'])}</td><td>{e(u['kind'])}</td><td class=n>{float(u['kwh']):,.1f}</td></tr>"
                   for u in data["unmonitored"])
    parts.append("<h2>Unmonitored remainder</h2><p class=sub>Measured at a node, not by the meters below it.</p>"
                 + (f"<table><tr><th>Node</th><th>Kind</th><th class=n>kWh</th></tr>{rest}</table>"
                    if rest else "<p>None: everything measured above is measured below.</p>"))
    comparison = "".join(f"<tr><td>{e(c['label'])}</td><td>{e(c['month'])}</td><td class=n>{c['kwh']:,.1f}</td>"
                         f"<td class=n>{_money(c['total'], currency) if inv else '—'}</td></tr>"
                         for c in data["comparisons"])
    parts.append(f"<h2>Compared</h2><table><tr><th></th><th>Month</th><th class=n>kWh</th><th class=n>Cost</th>"
                 f"</tr>{comparison}</table>")
    alerts = "".join(f"<tr><td>{a['started_at'].astimezone(zone):%d %b %H:%M}</td><td>{e(a['severity'])}</td>"
                     f"<td>{e(a['rule'])}: {e(a['message'])}</td></tr>" for a in data["alerts"][:30])
    parts.append(f"<h2>Alerts raised: {len(data['alerts'])}</h2>"
                 + (f"<table><tr><th>When</th><th>Severity</th><th>What</th></tr>{alerts}</table>" if alerts else ""))
    b = data["benchmark"]
    if b:
        per_m2 = f"{b['kwh_per_m2']:,.2f} kWh/m²" if b["kwh_per_m2"] is not None else "no floor area set"
        per_hour = (f"{b['kwh_per_opening_hour']:,.1f} kWh per opening hour"
                    if b["kwh_per_opening_hour"] is not None else "no opening hours set")
        rank = f" (rank {b['rank_per_m2']} of the customer's sites)" if b["rank_per_m2"] else ""
        site = data["site"]
        normalised = (f" · at the portfolio's weather {b['kwh_per_m2_weather_normalised']:,.2f} kWh/m²"
                      if b["kwh_per_m2_weather_normalised"] is not None else "")
        parts.append(f"<h2>Normalised benchmark</h2><p>{per_m2}{rank} · {per_hour}</p>"
                     f"<p>Weather: {b['hdd']:,.0f} heating and {b['cdd']:,.0f} cooling degree days (bases "
                     f"{site['hdd_base_c']:g} / {site['cdd_base_c']:g} °C){normalised}</p>")
    if data["meters"]:
        rows = "".join(
            f"<tr><td>{e(m['name'])}</td>"
            + (f"<td class=n>{m['kwh']:,.1f}</td><td class=n>{_money(m['cost'], m['currency'])}</td></tr>"
               if m["why"] is None else f"<td colspan=2>{e(m['why'])}</td></tr>")
            for m in data["meters"])
        parts.append("<h2>Virtual meters</h2><p class=sub>Groups that count part of this site (energy cost, each "
                     "node on its own site's tariffs)</p><table><tr><th>Meter</th><th class=n>kWh</th>"
                     f"<th class=n>Energy cost</th></tr>{rows}</table>")
    if data["projects"]:
        rows = "".join(
            f"<tr><td>{e(p['name'])}</td><td>{p['starts_on']}</td>"
            + (f"<td class=n>{p['savings_kwh']:,.0f} kWh</td><td class=n>{p['days']}</td></tr>"
               if p["savings_kwh"] is not None else f"<td colspan=2>{e(p['why'])}</td></tr>")
            for p in data["projects"])
        parts.append("<h2>Savings projects</h2><p class=sub>Against each project's weather baseline, to the month's "
                     "end</p><table><tr><th>Project</th><th>From</th><th class=n>Saved</th><th class=n>Days</th>"
                     f"</tr>{rows}</table>")
    style = ("body{font-family:'DejaVu Sans',sans-serif;font-size:10pt;color:#1c2430;margin:0}"
             "h1{margin:0;font-size:18pt}h2{font-size:12pt;margin:14pt 0 4pt;color:#13315c}"
             ".sub{color:#66707d;margin:2pt 0}.kpi{font-size:16pt;font-weight:bold;margin:8pt 0}"
             "table{border-collapse:collapse;width:100%}td,th{padding:2pt 6pt;border-bottom:1px solid #e5e7eb;"
             "text-align:left}.n{text-align:right}tr{break-inside:avoid}h2{break-after:avoid}"
             "@page{size:A4;margin:16mm}")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(site['name'])} · {e(month.name)}"
            f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>")


def render_pdf(page: str) -> bytes:
    """The page printed to PDF (A4)."""
    pdf: bytes = weasyprint.HTML(string=page).write_pdf()
    return pdf


def make_report(conn: psycopg.Connection[Any], site_id: int, month: Month) -> int:
    """Build and archive the site's report for the month (again, if it exists: the new one
    stands and the old is marked superseded). Returns its id."""
    page = render_html(report_data(conn, site_id, month))
    pdf = render_pdf(page)
    with conn.transaction():
        conn.execute("UPDATE site_reports SET superseded_at = now() WHERE site_id = %s AND month_start = %s "
                     "AND superseded_at IS NULL", (site_id, month.start))
        row = fetch_one(conn, """INSERT INTO site_reports (site_id, month_start, month_end, html, pdf)
                                 VALUES (%s, %s, %s, %s, %s) RETURNING id""",
                        (site_id, month.start, month.end, page, pdf))
        assert row is not None
    return int(row["id"])


def subscribers(conn: psycopg.Connection[Any], site_id: int) -> list[dict[str, Any]]:
    """The people of the site's customer who want report mail and may see its costs."""
    people = fetch_all(conn, """SELECT u.id, u.email FROM users u JOIN sites s ON s.customer_id = u.customer_id
                                WHERE s.id = %s AND u.disabled_at IS NULL AND u.erased_at IS NULL
                                  AND u.password_hash IS NOT NULL AND u.role <> 'installer'
                                  AND (NOT EXISTS (SELECT 1 FROM user_site_grants g WHERE g.user_id = u.id)
                                       OR EXISTS (SELECT 1 FROM user_site_grants g WHERE g.user_id = u.id
                                                  AND g.site_id = s.id))
                                ORDER BY u.id""", (site_id,))
    return [p for p in people if notifications.preferences(conn, p["id"])["report_email"]]


def send_due(conn: psycopg.Connection[Any], link_base: str, now: datetime | None = None) -> int:
    """Make, archive and mail last month's report of every site whose 1st has come (local
    time, from READY_AT) and that has none yet. A site that fails is logged and tried again
    next pass; the others go on. Returns how many reports were made."""
    now = now or datetime.now(UTC)
    made = 0
    for site in fetch_all(conn, "SELECT id, name, timezone FROM sites ORDER BY id"):
        month = month_of(now, site["timezone"], 1)
        ready = datetime.combine(month.end.date(), READY_AT, ZoneInfo(site["timezone"]))
        if now < ready or fetch_one(conn, """SELECT 1 AS yes FROM site_reports WHERE site_id = %s
                                             AND month_start = %s AND superseded_at IS NULL""",
                                    (site["id"], month.start)) is not None:
            continue
        try:
            report_id = make_report(conn, site["id"], month)
            with conn.transaction():
                pdf = fetch_one(conn, "SELECT pdf FROM site_reports WHERE id = %s", (report_id,))
                assert pdf is not None
                name = f"wattline-{site['name'].lower().replace(' ', '-')}-{month.start:%Y-%m}.pdf"
                for person in subscribers(conn, site["id"]):
                    mail.queue(conn, kind="monthly_report", to=person["email"], user_id=person["id"],
                               category="reports", attachment=(name, "application/pdf", bytes(pdf["pdf"])),
                               subject=f"{site['name']}: your {month.name} report",
                               text=f"""The {month.name} report of {site['name']} is attached (PDF).

All reports of the site: {link_base}/reports/{site['id']}

Wattline
""")
                conn.execute("""INSERT INTO cost_deliveries (site_id, kind, reference, period_start, period_end)
                                VALUES (%s, 'monthly report', %s, %s, %s)""",
                             (site["id"], f"report {report_id} ({month.name})", month.start, month.end))
            made += 1
        except Exception as exc:  # one site's report fails alone, whatever it raised
            if conn.broken or conn.closed:
                raise
            log.error("report_failed", site=site["id"], error=f"{type(exc).__name__}: {exc}"[:300])
    return made


def reports(conn: psycopg.Connection[Any], site_id: int) -> list[dict[str, Any]]:
    """A site's archived reports, newest first (without their bodies)."""
    return fetch_all(conn, """SELECT id, month_start, month_end, created_at, superseded_at, length(pdf) AS pdf_bytes
                              FROM site_reports WHERE site_id = %s ORDER BY month_start DESC, id DESC""",
                     (site_id,))


def report_file(conn: psycopg.Connection[Any], site_id: int, report_id: int, kind: str) -> bytes | str | None:
    """One report's PDF (bytes) or HTML (str), if it is the site's."""
    row = fetch_one(conn, "SELECT html, pdf FROM site_reports WHERE id = %s AND site_id = %s", (report_id, site_id))
    if row is None:
        return None
    return bytes(row["pdf"]) if kind == "pdf" else str(row["html"])
