"""The monthly site report: made on the 1st (local time) for the month before, archived as
HTML and PDF, mailed with the PDF to the people who want report mail (not installers, not
those who opted out). The PDF is turned into text (`pdftotext`) and a page image
(`pdftoppm`, left in artifacts/) and its figures are checked against the database."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fastapi.testclient import TestClient

from analytics.costing import site_cost
from exports import reports
from tests.factories import Tenant, count, drain, write
from tests.fixtures.browser import ARTIFACTS, DESKTOP, PHONE, fits, login
from tests.fixtures.receivers import SmtpServer
from wattline import mail, notifications, virtual_meters, weather
from wattline.accounts import create_user
from wattline.domain import Role
from wattline.principal import acting_for
from wattline.settings import Settings
from wattline.site_builder import SiteSpec, build_site, build_tenant


def pdf_text(pdf: bytes, tmp_path: Path) -> str:
    source = tmp_path / "report.pdf"
    source.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-png", "-r", "60", str(source),
                    str(ARTIFACTS / "report-page")], check=True)
    return subprocess.run(["pdftotext", "-layout", str(source), "-"], check=True, capture_output=True,
                          text=True).stdout


def test_the_monthly_report_is_made_archived_and_mailed(
        client: TestClient, tenants: tuple[Tenant, Tenant], db: psycopg.Connection[Any], database_url: str,
        smtp_server: SmtpServer, tmp_path: Path) -> None:
    a, _ = tenants
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    this_month = reports.month_of(datetime.now(UTC), "Europe/London")
    month = reports.month_of(this_month.start, "Europe/London", 1)
    before = reports.month_of(this_month.start, "Europe/London", 2)
    for start, amps in ((month.start + timedelta(days=4, hours=9), 20.0), (before.start + timedelta(days=3), 8.0)):
        write(database_url, [(a.sensor_serial, start.timestamp() + i * 10, amps) for i in range(3 * 360)],
              bridge=a.bridge_serial)
    drain(db)
    db.execute("""INSERT INTO alert_episodes (rule_id, subject, message, started_at, severity)
                  VALUES (%s, 'x', 'Chiller A above 10 kW', %s, 'critical')""",
               (a.rule_id, month.start + timedelta(days=4, hours=10)))
    notifications.set_preferences(db, None, a.user_ids["viewer"], alert_email="immediate", report_email=False)
    first_day = month.start.astimezone(ZoneInfo("Europe/London")).date()
    days = (month.end - month.start).days
    weather.save_temperatures(db, None, a.site_id, [weather.DayTemperature(first_day + timedelta(days=d), 10.0)
                                                    for d in range(days)], source="api")
    weather.create_project(db, None, a.site_id, "Boiler swap", first_day + timedelta(days=10))
    virtual_meters.save_meter(db, None, a.customer_id, "Chiller line", [virtual_meters.Term(1, node_id=a.circuit_id)])
    now = this_month.start + timedelta(hours=2)  # 02:00 on the 1st, local
    assert reports.send_due(db, "https://wattline.example", now) == 2  # both tenants' sites
    assert reports.send_due(db, "https://wattline.example", now) == 0  # once a month
    row = db.execute("SELECT id, html, pdf FROM site_reports WHERE site_id = %s AND month_start = %s",
                     (a.site_id, month.start)).fetchone()
    assert row is not None
    report_id, page, pdf = row[0], row[1], bytes(row[2])
    text = pdf_text(pdf, tmp_path)
    # The figures, against the database.
    kwh = db.execute("""SELECT sum(r.energy_wh) / 1000 FROM rollups_1h r JOIN nodes n ON n.id = r.node_id
                        WHERE n.site_id = %s AND n.kind = 'site' AND r.bucket >= %s AND r.bucket < %s""",
                     (a.site_id, month.start, month.end)).fetchone()[0]
    cost = site_cost(db, acting_for(a.customer_id), a.site_id, month.start, month.end)
    assert cost is not None
    assert f"{kwh:,.1f} kWh · GBP {cost.invoice.total:,.2f}" in text
    assert f"Monthly report · {month.name}" in text
    flat = next(line for line in cost.invoice.lines if line.label == "flat")
    assert f"GBP {flat.minor / 100:,.2f}" in text and "standing charge" in text and "VAT" in text
    peak = cost.invoice.demand_peaks[0]["peak_kw"]
    assert f"{peak:,.1f} kW at" in text
    assert "Chiller A" in text.split("Top consumers")[1]
    assert "Alerts raised: 1" in text and "Chiller A above 10 kW" in text
    before_kwh = db.execute("""SELECT sum(r.energy_wh) / 1000 FROM rollups_1h r JOIN nodes n ON n.id = r.node_id
                               WHERE n.site_id = %s AND n.kind = 'site' AND r.bucket >= %s AND r.bucket < %s""",
                            (a.site_id, before.start, before.end)).fetchone()[0]
    assert f"{before.name}" in text and f"{before_kwh:,.1f}" in text
    assert "Normalised benchmark" in text
    assert f"Weather: {5.5 * days:,.0f} heating and 0 cooling degree days" in text  # 10 °C a day, base 15.5
    words = " ".join(text.split())  # the PDF's table cells wrap
    # CO2e at the country's factor (the tenant's site is in GB), with the table's source.
    assert f"{kwh * 268.329 / 1000:,.1f} kg CO2e at 268.3 g/kWh" in words and "Our World in Data" in words
    circuit_kwh = db.execute("""SELECT sum(energy_wh) / 1000 FROM rollups_1h WHERE node_id = %s
                                AND bucket >= %s AND bucket < %s""",
                             (a.circuit_id, month.start, month.end)).fetchone()[0]
    meters = words.split("Virtual meters")[1].split("Savings projects")[0]
    assert "Chiller line" in meters and f"{circuit_kwh:,.1f}" in meters and "GBP" in meters
    projects = words.split("Savings projects")[1]
    assert "Boiler" in projects and "swap" in projects and "2026" in projects
    assert "a baseline needs 14 whole days" in projects  # no history before it: said, not guessed
    assert (ARTIFACTS / "report-page-1.png").exists()
    assert "Energy and cost by band" in page and page.startswith("<!doctype html>")
    # Mailed with the PDF to who wants it: not installers, not the viewer who opted out.
    mail.send_due(db, Settings(database_url=database_url, **smtp_server.settings()))
    received = {str(m["To"]).split("-")[0]: m for m in smtp_server.messages() if "-A-" in str(m["To"])}
    assert set(received) == {"customer_admin", "facility_manager"}
    message = received["customer_admin"]
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == pdf
    # The report's days are registered: a tariff correction would list it as superseded.
    assert count(db, "SELECT count(*) FROM cost_deliveries WHERE kind = 'monthly report' AND site_id = %s",
                 a.site_id) == 1
    assert reports.report_file(db, a.site_id, report_id, "pdf") == pdf
    assert reports.report_file(db, a.site_id + 999, report_id, "pdf") is None
    assert Decimal(str(kwh)) > 0


@pytest.mark.browser
@pytest.mark.parametrize("size", ["390", "desktop"])
def test_past_reports_are_listed_and_downloaded(browser_page: Any, serve_dashboard: Callable[..., str],
                                                db: psycopg.Connection[Any], size: str) -> None:
    _, customer = build_tenant(db, "R", "C")
    built = build_site(db, customer, SiteSpec("Depot", timezone="Europe/London"))
    create_user(db, email="fm@example.com", password="fm-password-for-tests", role=Role.FACILITY_MANAGER,
                customer_id=customer)
    month = reports.month_of(datetime.now(UTC), "Europe/London", 1)
    report_id = reports.make_report(db, built.site_id, month)
    page = browser_page
    page.set_viewport_size(PHONE if size == "390" else DESKTOP)
    base = serve_dashboard()
    page.goto(base + "/")
    login(page, "fm@example.com", "fm-password-for-tests")
    page.wait_for_selector(".site-card")
    page.goto(f"{base}/reports/{built.site_id}")
    page.wait_for_selector("#reports-table")
    assert month.name in page.inner_text("#reports-table")
    page.screenshot(path=str(ARTIFACTS / f"reports-{size}.png"), full_page=True)
    assert fits(page)
    with page.expect_download() as download:
        page.click(f"#report-pdf-{report_id}")
    stored = db.execute("SELECT pdf FROM site_reports WHERE id = %s", (report_id,)).fetchone()
    assert stored is not None and download.value.path().read_bytes() == bytes(stored[0])
    assert page.console_errors == []
