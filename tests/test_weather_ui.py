"""A facility manager works the weather page in headless Chromium, at phone size (390×844),
then at desktop size: a bad temperature file is refused line by line and stores nothing, a
good one draws the baseline, a savings project shows what it saved, and changing a base
changes the fit. Every number shown is read back against the database. Screenshots go to
artifacts/screenshots/."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
import pytest

from tests.factories import drain, write
from tests.fixtures.browser import screenshot, signed_in, upload_csv
from wattline.accounts import create_user
from wattline.domain import Connection, Role
from wattline.site_builder import CircuitSpec, PanelSpec, SensorSpec, SiteSpec, build_site, build_tenant

pytestmark = pytest.mark.browser
PASSWORD = "facility-password-for-tests"
LONDON = ZoneInfo("Europe/London")
DAYS, START = 17, 15  # days of readings; the project starts on day 15 and cuts 10 %


def temps() -> list[float]:
    return [round(12.0 - 8.0 * np.cos(d * 0.6), 1) for d in range(DAYS)]  # 4 to 20 °C: heating only


@pytest.fixture
def depot(db: psycopg.Connection[Any], database_url: str) -> dict[str, Any]:
    _, customer = build_tenant(db, "R", "C")
    built = build_site(db, customer, SiteSpec("Depot", timezone="Europe/London", bridges=("BR-1",), panels=(
        PanelSpec("P", "P", 230.0, 1.0, Connection.SINGLE_PHASE,
                  circuits=(CircuitSpec("C", "Heating", (SensorSpec("CT-1", "BR-1"),)),)),)))
    day0 = datetime.now(LONDON).date() - timedelta(days=DAYS + 3)
    readings: list[tuple[str, float, float]] = []
    for d, t in enumerate(temps()):
        start = datetime.combine(day0 + timedelta(days=d), datetime.min.time(), LONDON).timestamp()
        end = datetime.combine(day0 + timedelta(days=d + 1), datetime.min.time(), LONDON).timestamp()
        kwh = (30 + 4 * max(15.5 - t, 0)) * (0.9 if d >= START else 1.0)
        amps = kwh * 1000 / 230 / ((end - start) / 3600)
        readings += [("CT-1", s, amps) for s in np.arange(start, end, 30.0).tolist()]
    write(database_url, readings, bridge="BR-1")
    drain(db)
    create_user(db, email="fm@example.com", password=PASSWORD, role=Role.FACILITY_MANAGER, customer_id=customer)
    return {"site": built.site_id, "day0": day0}


shot = partial(screenshot, prefix="weather")


upload = partial(upload_csv, upload_id="wx-upload")


def fitted(db: psycopg.Connection[Any], site: int, base: float) -> np.ndarray[Any, np.dtype[np.float64]]:
    """kWh/day = a + b·HDD over the whole days before the project, from the database."""
    rows = db.execute("""SELECT r.energy_wh / 1000, t.mean_c FROM rollups_1d r JOIN nodes n ON n.id = r.node_id
                         JOIN site_temperatures t ON t.site_id = n.site_id
                          AND t.day = (r.bucket AT TIME ZONE 'Europe/London')::date
                         WHERE n.kind = 'site' AND n.site_id = %s AND r.coverage >= 0.9""", (site,)).fetchall()
    kwh, mean_c = np.array(rows).T
    x = np.column_stack([np.ones(len(kwh)), np.maximum(base - mean_c, 0)])
    coef: np.ndarray[Any, np.dtype[np.float64]] = np.linalg.lstsq(x, kwh, rcond=None)[0]
    return coef


def test_temperatures_baseline_and_savings_on_a_phone_and_a_desktop(
        browser_page: Any, serve_dashboard: Callable[..., str], db: psycopg.Connection[Any],
        depot: dict[str, Any]) -> None:
    page, site, day0 = browser_page, depot["site"], depot["day0"]
    base = serve_dashboard()
    signed_in(page, base, "390", "fm@example.com", PASSWORD)
    page.goto(f"{base}/site/{site}")
    page.click("text=Weather and savings")
    page.wait_for_selector("#wx-baseline-text:has-text('No baseline yet')")
    assert "there are 0" in page.inner_text("#wx-baseline-text")

    # A file with bad rows: every bad line named, nothing stored.
    upload(page, "bad.csv", f"day,mean_c\n{day0},4.5\n{day0 + timedelta(days=1)},warm\n{day0},5\n")
    page.wait_for_selector("#wx-error:has-text('line 3')")
    assert "line 4" in page.inner_text("#wx-error") and "twice" in page.inner_text("#wx-error")
    assert db.execute("SELECT count(*) FROM site_temperatures").fetchone() == (0,)
    shot(page, "refused", "390")

    csv = "day,mean_c\n" + "".join(f"{day0 + timedelta(days=d)},{t}\n" for d, t in enumerate(temps()))
    upload(page, "temps.csv", csv)
    page.wait_for_selector(f"#wx-message:has-text('{DAYS} day(s) of temperatures stored')")
    page.wait_for_selector("#wx-baseline-text:has-text('Baseline')")
    page.wait_for_selector("#wx-chart .main-svg")
    a, b = fitted(db, site, 15.5)
    text = page.inner_text("#wx-baseline-text")
    # The fit over every day with readings includes the project's (lower) days here.
    assert f"{a:,.1f} kWh a day" in text and f"{b:,.2f} kWh per heating degree day" in text, text

    page.fill("#wx-name", "Heat pump")
    page.fill("#wx-start", str(day0 + timedelta(days=START)))
    page.fill("#wx-baseline-days", str(START))
    page.click("#wx-create")
    page.wait_for_selector("#wx-message:has-text('Measuring “Heat pump”')")
    project = db.execute("SELECT id, starts_on, baseline_days FROM savings_projects").fetchone()
    assert project is not None and project[1:] == (day0 + timedelta(days=START), START)
    row = page.inner_text(f"#wx-project-{project[0]}")
    before = np.array(db.execute("""SELECT r.energy_wh / 1000, t.mean_c FROM rollups_1d r
        JOIN nodes n ON n.id = r.node_id AND n.kind = 'site' JOIN site_temperatures t ON t.site_id = n.site_id
         AND t.day = (r.bucket AT TIME ZONE 'Europe/London')::date
        WHERE n.site_id = %s AND r.coverage >= 0.9 AND t.day < %s ORDER BY t.day""",
                                 (site, project[1])).fetchall())
    after = np.array(db.execute("""SELECT r.energy_wh / 1000, t.mean_c FROM rollups_1d r
        JOIN nodes n ON n.id = r.node_id AND n.kind = 'site' JOIN site_temperatures t ON t.site_id = n.site_id
         AND t.day = (r.bucket AT TIME ZONE 'Europe/London')::date
        WHERE n.site_id = %s AND r.coverage >= 0.9 AND t.day >= %s""", (site, project[1])).fetchall())
    coef = np.linalg.lstsq(np.column_stack([np.ones(len(before)), np.maximum(15.5 - before[:, 1], 0)]),
                           before[:, 0], rcond=None)[0]
    expected = float((coef[0] + coef[1] * np.maximum(15.5 - after[:, 1], 0)).sum())
    saved = expected - float(after[:, 0].sum())
    assert f"{saved:,.0f} kWh ({100 * saved / expected:.1f} %)" in row, row
    assert 9.5 < 100 * saved / expected < 10.5
    page.locator("#wx-pick").click()
    page.get_by_role("option", name="Heat pump (from").click()
    page.wait_for_selector("#wx-savings-chart .main-svg")
    shot(page, "savings", "390")

    # At desktop size: a new heating base changes the fit shown.
    page.set_viewport_size({"width": 1366, "height": 900})
    page.reload()
    page.wait_for_selector("#wx-baseline-text:has-text('Baseline')")
    page.fill("#wx-hdd-base", "18")
    page.click("#wx-bases-save")
    page.wait_for_selector("#wx-baseline-text:has-text('base 18 °C')")
    assert db.execute("SELECT hdd_base_c FROM sites WHERE id = %s", (site,)).fetchone() == (18.0,)
    a, b = fitted(db, site, 18.0)
    assert f"{a:,.1f} kWh a day + {b:,.2f} kWh per heating degree day" in page.inner_text("#wx-baseline-text")
    page.wait_for_selector(f"#wx-project-{project[0]}")
    shot(page, "baseline", "desktop")
