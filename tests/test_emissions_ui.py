"""A facility manager works the emissions page in headless Chromium, at phone size (390×844),
then at desktop size: the site is counted at its country's factor with the table's source;
a bad hourly file is refused line by line and stores nothing; a good one changes the CO2e of
the hours it covers; the site's own factor replaces the country's, and "Use the country's"
brings it back. Every kg shown is read back against the hourly rollups in the database.
Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
import pytest

from tests.factories import drain, write
from tests.fixtures.browser import choose, screenshot, signed_in, upload_csv
from wattline.accounts import create_user
from wattline.domain import Connection, Role
from wattline.site_builder import CircuitSpec, PanelSpec, SensorSpec, SiteSpec, build_site, build_tenant

pytestmark = pytest.mark.browser
PASSWORD = "facility-password-for-tests"
LONDON = ZoneInfo("Europe/London")
GB = 268.329


def last_month() -> date:
    today = datetime.now(LONDON).date().replace(day=1)
    return (today - timedelta(days=1)).replace(day=1)


@pytest.fixture
def depot(db: psycopg.Connection[Any], database_url: str) -> dict[str, Any]:
    """Two days of 30-second readings at the start of last month, rolled up."""
    _, customer = build_tenant(db, "R", "C")
    built = build_site(db, customer, SiteSpec("Depot", timezone="Europe/London", bridges=("BR-1",), panels=(
        PanelSpec("P", "P", 230.0, 1.0, Connection.SINGLE_PHASE,
                  circuits=(CircuitSpec("C", "Chiller", (SensorSpec("CT-1", "BR-1"),)),)),)))
    start = datetime.combine(last_month(), datetime.min.time(), LONDON).timestamp()
    write(database_url, [("CT-1", s, 20.0 + 10 * np.sin(s / 7200)) for s in
                         np.arange(start, start + 2 * 86400, 30.0).tolist()], bridge="BR-1")
    drain(db)
    create_user(db, email="fm@example.com", password=PASSWORD, role=Role.FACILITY_MANAGER, customer_id=customer)
    circuit = db.execute("SELECT id FROM nodes WHERE site_id = %s AND kind = 'circuit'", (built.site_id,)).fetchone()
    assert circuit is not None
    return {"site": built.site_id, "circuit": circuit[0], "start": datetime.fromtimestamp(start, UTC)}


def expected_kg(db: psycopg.Connection[Any], node: int, annual: float) -> str:
    """The node's kg CO2e of last month from the hourly rollups and the stored hourly factors."""
    first = last_month()
    lo = datetime.combine(first, datetime.min.time(), LONDON)
    hi = datetime.combine((first + timedelta(days=32)).replace(day=1), datetime.min.time(), LONDON)
    row = db.execute("""SELECT sum(r.energy_wh * COALESCE(h.g_per_kwh, %s)) / 1e6 FROM rollups_1h r
                        JOIN nodes n ON n.id = r.node_id
                        LEFT JOIN site_co2e_hourly h ON h.site_id = n.site_id AND h.hour = r.bucket
                        WHERE r.node_id = %s AND r.bucket >= %s AND r.bucket < %s""", (annual, node, lo, hi)).fetchone()
    assert row is not None and row[0] > 0
    return f"{row[0]:,.1f}"


shot = partial(screenshot, prefix="emissions")


upload = partial(upload_csv, upload_id="co2-upload")


def test_factors_and_co2e_on_a_phone_and_a_desktop(browser_page: Any, serve_dashboard: Callable[..., str],
                                                   db: psycopg.Connection[Any], depot: dict[str, Any]) -> None:
    page, site, circuit, start = browser_page, depot["site"], depot["circuit"], depot["start"]
    base = serve_dashboard()
    signed_in(page, base, "390", "fm@example.com", PASSWORD)
    page.goto(f"{base}/site/{site}")
    page.click("text=Emissions")
    page.wait_for_selector("#co2-factor-text:has-text('268.3 g CO2e/kWh')")
    assert "Our World in Data" in page.inner_text("#co2-factor-text")
    choose(page, "co2-month", last_month().strftime("%B %Y"))
    page.wait_for_selector(f"#co2-node-{circuit}:has-text('{expected_kg(db, circuit, GB)}')")
    page.wait_for_selector("#co2-chart .main-svg")

    # A file with bad rows: every bad line named, nothing stored.
    upload(page, "bad.csv", f"hour,g_co2e_per_kwh\n{start.isoformat()},100\n{start.isoformat()},90\n"
                            f"{(start + timedelta(minutes=30)).isoformat()},80\n")
    page.wait_for_selector("#co2-error:has-text('line 3')")
    assert "line 4" in page.inner_text("#co2-error") and "twice" in page.inner_text("#co2-error")
    assert db.execute("SELECT count(*) FROM site_co2e_hourly").fetchone() == (0,)
    shot(page, "refused", "390")

    # The first day at a cleaner hourly intensity: only its hours change.
    csv = "hour,g_co2e_per_kwh\n" + "".join(f"{(start + timedelta(hours=h)).isoformat()},{100 + h}\n"
                                             for h in range(24))
    upload(page, "grid.csv", csv)
    page.wait_for_selector("#co2-message:has-text('24 hour(s) of grid factors stored')")
    page.wait_for_selector(f"#co2-node-{circuit}:has-text('{expected_kg(db, circuit, GB)}')")
    assert "24 hour(s)" in page.inner_text("#co2-factor-text")
    shot(page, "hourly", "390")

    # At desktop size: the site's own factor, then back to the country's.
    page.set_viewport_size({"width": 1366, "height": 900})
    page.fill("#co2-g", "150")
    page.fill("#co2-source", "Supplier fuel mix 2025")
    page.click("#co2-save")
    page.wait_for_selector("#co2-factor-text:has-text('150.0 g CO2e/kWh')")
    assert "Supplier fuel mix 2025" in page.inner_text("#co2-factor-text")
    assert db.execute("SELECT co2e_g_per_kwh, co2e_source FROM sites WHERE id = %s", (site,)).fetchone() == (
        150.0, "Supplier fuel mix 2025")
    page.wait_for_selector(f"#co2-node-{circuit}:has-text('{expected_kg(db, circuit, 150.0)}')")
    shot(page, "own-factor", "desktop")
    page.click("#co2-country")
    page.wait_for_selector("#co2-factor-text:has-text('268.3 g CO2e/kWh')")
    assert db.execute("SELECT co2e_g_per_kwh FROM sites WHERE id = %s", (site,)).fetchone() == (None,)
    # The month's hourly factors removed: every hour at the country's factor again.
    page.click("#co2-clear")
    page.wait_for_selector("#co2-message:has-text('24 hour(s) of')")
    assert db.execute("SELECT count(*) FROM site_co2e_hourly").fetchone() == (0,)
    page.wait_for_selector(f"#co2-node-{circuit}:has-text('{expected_kg(db, circuit, GB)}')")
    assert "0 hour(s)" in page.inner_text("#co2-factor-text")
