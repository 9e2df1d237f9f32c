"""The dashboard in headless Chromium against seeded data: log in, open every page, check
that what is shown matches the database, and that the browser logs no errors."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from alerts import store
from alerts.rules import Threshold
from alerts.scheduler import run_pass
from analytics.costing import site_cost
from analytics.worker import RollupEngine
from dashboard.pages.site import power_figure
from ingest.packs import RawPack
from ingest.writer import BatchWriter
from sensor_sim.fleet import build_fleet
from sensor_sim.seed import seed_catalogue
from tests.factories import wait_for
from tests.fixtures.browser import ARTIFACTS, login
from wattline.accounts import DEMO_EMAIL, ensure_demo_users
from wattline.domain import Resolution, Role
from wattline.principal import Principal
from wattline.senml import SENML_TOPIC, encode_pack
from wattline.settings import Settings

pytestmark = pytest.mark.browser


@pytest.fixture
def seeded(db: psycopg.Connection[Any], database_url: str) -> dict[str, Any]:
    fleet = build_fleet(2, 1, 8)
    seed_catalogue(db, fleet, unassigned_every=4)
    ensure_demo_users(db)
    writer = BatchWriter(database_url)
    now = (time.time() // 10) * 10
    for bridge, idx in fleet.sensors_by_bridge().items():
        readings = [(fleet.serials[i], now - 3 * 3600 + k * 10, 5.0 + (i % 3)) for k in range(3 * 360 + 1)
                    for i in idx]
        for start in range(0, len(readings), 5000):
            writer.write([RawPack(SENML_TOPIC.format(bridge=bridge), encode_pack(readings[start:start + 5000]), now)])
    writer.close()
    while RollupEngine(30.0).process_dirty(db):
        pass
    return {"fleet": fleet}


@pytest.fixture
def dashboard_url(serve_dashboard: Callable[[], str], seeded: dict[str, Any]) -> str:
    url: str = serve_dashboard()
    return url


@pytest.fixture
def page(browser_page: Any, dashboard_url: str) -> Any:
    browser_page.goto(dashboard_url + "/")
    return browser_page


def test_a_flat_power_line_draws_cleanly(browser_page: Any) -> None:
    """A steady load averages to values a few ULPs apart. Plotly autoranged that to a
    3e-15 wide axis, hid every tick label and put the axis title at x=Infinity (a console
    error on the site page whenever a node's load was flat)."""
    import plotly.offline

    start = datetime(2026, 11, 23, tzinfo=UTC)
    rows = [{"bucket": start + timedelta(minutes=15 * k), "mean_power_w": 7648.736366224163 + (k % 2) * 3e-12}
            for k in range(13)]
    figure = power_figure(rows, "Europe/London", Resolution.MIN15)
    browser_page.set_content('<div id="chart" style="width:1200px"></div>')
    browser_page.add_script_tag(content=plotly.offline.get_plotlyjs())
    browser_page.evaluate("f => Plotly.newPlot('chart', f.data, f.layout)", figure.to_plotly_json())
    assert browser_page.console_errors == []
    labels = browser_page.eval_on_selector_all(".ytick text", "ts => ts.filter(t => t.style.display !== 'none')"
                                                             ".map(t => t.textContent)")
    assert "0" in labels and len(labels) >= 3, labels


def test_login_is_required_and_wrong_password_refused(page: Any, dashboard_url: str) -> None:
    assert page.url.endswith("/login")
    login(page, password="wrong")
    assert page.locator(".error").inner_text() == "Wrong email or password."
    assert page.input_value("input[name=email]") == DEMO_EMAIL and page.input_value("input[name=password]") == ""
    page.screenshot(path=str(ARTIFACTS / "login-refused.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})  # an installer's phone
    page.screenshot(path=str(ARTIFACTS / "login-refused-390.png"), full_page=True)
    page.goto(dashboard_url + "/site/1")
    assert page.url.endswith("/login")


def test_every_page_shows_the_database_numbers(page: Any, dashboard_url: str, db: psycopg.Connection[Any],
                                               tmp_path: Path) -> None:
    # One real alert: the first site's total above 1 W for 15 minutes, evaluated by the scheduler.
    first = db.execute("SELECT id FROM sites ORDER BY id LIMIT 1").fetchone()[0]
    store.create_rule(db, first, None, "Anything on", Threshold(above_w=1.0, hold_minutes=15))
    with httpx.Client() as http:
        assert run_pass(db, Settings(spool_dir=tmp_path), http).raised == 1
    login(page)
    page.wait_for_selector(".site-card", timeout=60_000)
    assert page.locator(".site-card").count() == 2
    assert page.locator(".open-alerts").inner_text() == "1 open alert(s)"
    page.wait_for_selector(".benchmark-row")
    assert page.locator(".benchmark-row").count() == 2
    page.screenshot(path=str(ARTIFACTS / "portfolio.png"), full_page=True)
    # Power now on the card is the site root's latest minute in the database.
    first_site = db.execute("SELECT id, name FROM sites ORDER BY id LIMIT 1").fetchone()
    assert first_site is not None
    site_id, name = first_site
    latest = db.execute("""SELECT r.mean_power_w FROM rollups_1m r JOIN nodes n ON n.id = r.node_id
                           WHERE n.site_id = %s AND n.kind = 'site' ORDER BY r.bucket DESC LIMIT 1""",
                        (site_id,)).fetchone()[0]
    card = page.locator(".site-card", has_text=name)
    assert card.locator(".site-power").inner_text() == f"{latest / 1000:.1f} kW"

    page.goto(f"{dashboard_url}/site/{site_id}")
    page.wait_for_selector("#site-cost-total", timeout=60_000)
    page.wait_for_selector("#site-series .main-svg", timeout=60_000)
    assert "Europe/London" in page.locator("#site-zone").inner_text()
    page.screenshot(path=str(ARTIFACTS / "site.png"), full_page=True)
    shown_total = float(page.locator("#site-cost-total").inner_text().replace(",", ""))
    tz = db.execute("SELECT timezone FROM sites WHERE id = %s", (site_id,)).fetchone()[0]
    from zoneinfo import ZoneInfo

    today = datetime.now(UTC).astimezone(ZoneInfo(tz)).date()
    t_from = datetime.combine(today - timedelta(days=1), datetime.min.time(), ZoneInfo(tz))
    t_to = datetime.combine(today + timedelta(days=1), datetime.min.time(), ZoneInfo(tz))
    principal = Principal(0, Role.CUSTOMER_ADMIN, None, db.execute("SELECT id FROM customers").fetchone()[0],
                          frozenset({"read"}))
    cost = site_cost(db, principal, site_id, t_from, t_to)
    assert cost is not None and shown_total == pytest.approx(float(cost.invoice.total), abs=0.005)
    tree_text = page.locator("#site-tree").inner_text()
    site_kwh = db.execute("""SELECT sum(energy_wh) / 1000 FROM rollups_15m r JOIN nodes n ON n.id = r.node_id
                             WHERE n.site_id = %s AND n.kind = 'site' AND r.bucket >= %s AND r.bucket < %s""",
                          (site_id, t_from, t_to)).fetchone()[0]
    assert re.search(rf"{re.escape(name)} · {site_kwh:,.1f} kWh", tree_text), tree_text[:200]
    # The power chart: the site root's 15-minute means over the two picked days, in kW.
    page.wait_for_function("document.querySelector('#site-series .js-plotly-plot')?.data?.[0]?.y?.length > 0")
    plotted = page.evaluate("document.querySelector('#site-series .js-plotly-plot').data[0].y")
    stored = db.execute("""SELECT round(r.mean_power_w) / 1000 FROM rollups_15m r JOIN nodes n ON n.id = r.node_id
                           WHERE n.site_id = %s AND n.kind = 'site' AND r.bucket >= %s AND r.bucket < %s
                           ORDER BY r.bucket""", (site_id, t_from, t_to)).fetchall()
    assert plotted == [float(v) for (v,) in stored] and len(plotted) > 10

    page.goto(f"{dashboard_url}/tariffs/{site_id}")
    page.wait_for_selector(".tariff-map .main-svg", timeout=60_000)
    assert "Business day/night" in page.inner_text("body")
    page.screenshot(path=str(ARTIFACTS / "tariffs.png"), full_page=True)

    page.goto(f"{dashboard_url}/commissioning/{site_id}")
    page.wait_for_selector(".sensor-card", timeout=60_000)
    first_bridge = db.execute("SELECT id FROM bridges WHERE site_id = %s ORDER BY serial LIMIT 1",
                              (site_id,)).fetchone()[0]  # the bridge the page picks
    discovered = db.execute("SELECT count(*) FROM discovered_sensors WHERE bridge_id = %s",
                            (first_bridge,)).fetchone()[0]
    assert discovered > 0 and page.locator(".sensor-card .flag:text-is('discovered')").count() == discovered
    page.screenshot(path=str(ARTIFACTS / "commissioning.png"), full_page=True)

    page.goto(f"{dashboard_url}/alerts")
    page.wait_for_selector(".alert-row", timeout=60_000)
    assert "power above 1 W" in page.inner_text(".alerts-table")
    page.screenshot(path=str(ARTIFACTS / "alerts.png"), full_page=True)
    page.click("button:has-text('Acknowledge')")
    wait_for(lambda: db.execute("SELECT acknowledged_at IS NOT NULL FROM alert_episodes").fetchone()[0])
    page.wait_for_selector(".alert-state.acknowledged")
    page.click("button:has-text('Resolve')")
    page.wait_for_selector(".empty")
    assert db.execute("SELECT resolved_at IS NOT NULL FROM alert_episodes").fetchone()[0]
    page.click("label:has-text('History')")
    page.wait_for_selector(".alert-state.resolved")
    page.goto(f"{dashboard_url}/site/999999")
    page.wait_for_selector(".empty")
    assert "No such site" in page.inner_text("body")
    assert page.console_errors == []
