"""Files and printable pages, as plain Flask routes beside the Dash app, behind the same
sign-in: the handover report (page and CSV, from `wattline.commissioning.handover`) and the
hierarchy's CSV (`wattline.catalogue.export_hierarchy`, what the hierarchy page uploads)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import flask
import orjson
from markupsafe import escape

from dashboard.auth import current_principal
from dashboard.data import conn, reporting_interval_s
from exports import reports
from wattline import catalogue, commissioning, privacy, queries

PAGE = """<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Handover · {site}</title><link rel="stylesheet" href="/assets/style.css"></head>
<body class="report"><main>
<p class="no-print"><a href="/commissioning/{site_id}">← Commissioning</a> ·
<a href="/handover/{site_id}.csv">CSV</a> · <button onclick="window.print()">Print</button></p>
<h1>Commissioning handover: {site}</h1>
<p class="muted">{address}Times in {zone}. {commissioned} Generated {generated}.</p>
<div class="scroll"><table class="grid handover"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>
</main></body></html>"""
HEAD = ("Panel", "Circuit", "Device", "Sensor", "Phase", "CT", "From", "To", "First reading", "Last reading",
        "State", "Assigned by", "Assigned at")


def install(server: flask.Flask) -> None:
    @server.route("/reports/<int:site_id>/<int:report_id>.<kind>")
    def site_report(site_id: int, report_id: int, kind: str) -> Any:
        """An archived monthly report, as PDF or as its HTML page (not for installers: it has costs)."""
        p = current_principal()
        if kind not in ("pdf", "html") or not p.sees_costs:
            flask.abort(404)
        with conn() as c:
            if queries.site(c, p, site_id) is None:
                flask.abort(404)
            body = reports.report_file(c, site_id, report_id, kind)
        if body is None:
            flask.abort(404)
        if kind == "pdf":
            return flask.Response(body, mimetype="application/pdf", headers={
                "Content-Disposition": f'attachment; filename="report-site-{site_id}-{report_id}.pdf"'})
        return flask.Response(body, mimetype="text/html")

    @server.route("/account/export.json")
    def my_data() -> Any:
        """The signed-in person's access request, as a file (the same export as the API's)."""
        p = current_principal()
        with conn() as c:
            export = privacy.export_person(c, p.user_id, p, channel="dashboard")
        return flask.Response(orjson.dumps(export, option=orjson.OPT_INDENT_2), mimetype="application/json",
                              headers={"Content-Disposition": 'attachment; filename="wattline-my-data.json"'})

    @server.route("/handover/<int:site_id>.csv")
    def handover_csv(site_id: int) -> Any:
        p = current_principal()
        with conn() as c:
            if queries.site(c, p, site_id) is None:
                flask.abort(404)
            rows = commissioning.handover(c, p, site_id, interval_s=reporting_interval_s())
        return flask.Response(commissioning.handover_csv(rows), mimetype="text/csv", headers={
            "Content-Disposition": f'attachment; filename="handover-site-{site_id}.csv"'})

    @server.route("/hierarchy/<int:site_id>.csv")
    def hierarchy_csv(site_id: int) -> Any:
        with conn() as c:
            if queries.site(c, current_principal(), site_id) is None:
                flask.abort(404)
            sheet = catalogue.export_hierarchy(c, site_id)
        return flask.Response(sheet, mimetype="text/csv", headers={
            "Content-Disposition": f'attachment; filename="hierarchy-site-{site_id}.csv"'})

    @server.route("/handover/<int:site_id>")
    def handover_page(site_id: int) -> Any:
        p = current_principal()
        with conn() as c:
            site = queries.site(c, p, site_id)
            if site is None:
                flask.abort(404)
            rows = commissioning.handover(c, p, site_id, interval_s=reporting_interval_s())
            mark = commissioning.commissioned(c, site_id)
        zone = ZoneInfo(site["timezone"])

        def cell(v: Any) -> str:
            if isinstance(v, datetime):
                return f"{v.astimezone(zone):%Y-%m-%d %H:%M}"
            return "" if v is None else str(escape(v if not isinstance(v, float) else f"{v:g}"))

        body = "".join("<tr>" + "".join(f"<td>{cell(r[k])}</td>" for k in commissioning.HANDOVER_COLUMNS) + "</tr>"
                       for r in rows) or f'<tr><td colspan="{len(HEAD)}">No sensors assigned yet.</td></tr>'
        done = (f"Commissioned {mark['at'].astimezone(zone):%Y-%m-%d %H:%M} by {escape(mark['who'] or 'the system')}."
                if mark else "Not yet marked commissioned.")
        return PAGE.format(site=escape(site["name"]), site_id=site_id, zone=escape(site["timezone"]),
                           address=f"{escape(site['address'])}. " if site.get("address") else "",
                           commissioned=done, generated=f"{datetime.now(zone):%Y-%m-%d %H:%M}",
                           head="".join(f"<th>{h}</th>" for h in HEAD), rows=body)
