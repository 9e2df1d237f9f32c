"""A facility manager builds an alert rule in headless Chromium, at phone size (390×844) and
desktop size: picks the kind and sees its parameters with defaults and units, gets a bad
parameter refused beside the parameters, backtests four weeks (the episodes match the surges
written into the data), narrows the schedule and sees one fewer, saves with recipients, and
reads the rule back from the database. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from tests.factories import drain, write_surges
from tests.fixtures.browser import choose, screenshot, signed_in
from wattline.accounts import create_user
from wattline.domain import Connection, Role
from wattline.site_builder import CircuitSpec, PanelSpec, SensorSpec, SiteSpec, build_site, build_tenant

pytestmark = pytest.mark.browser
PASSWORD = "facility-password-for-tests"
LONDON = ZoneInfo("Europe/London")


@pytest.fixture
def surging_site(db: psycopg.Connection[Any], database_url: str) -> dict[str, Any]:
    _, customer = build_tenant(db, "R", "C")
    built = build_site(db, customer, SiteSpec("Cold store", timezone="Europe/London", bridges=("BR-1",), panels=(
        PanelSpec("P", "Main", 230.0, 1.0, Connection.SINGLE_PHASE, circuits=(
            CircuitSpec("F", "Freezer", (SensorSpec("CT-1", "BR-1"),)),)),)))
    today = datetime.now(LONDON).replace(hour=0, minute=0, second=0, microsecond=0)
    starts = [(today - timedelta(days=4)).replace(hour=11), (today - timedelta(days=2)).replace(hour=3)]
    write_surges(database_url, "CT-1", "BR-1", starts, amps=40.0)  # 9.2 kW for an hour
    drain(db)
    create_user(db, email="fm@example.com", password=PASSWORD, role=Role.FACILITY_MANAGER, customer_id=customer,
                full_name="Fay Manager")
    return {"site": built.site_id, "freezer": built.nodes["F"], "starts": starts}


shot = partial(screenshot, prefix="alert-rules")


def said(page: Any, expect: str) -> None:
    try:
        page.wait_for_selector(f"#rules-message .saved:has-text('{expect}')", timeout=20_000)
    except Exception as exc:
        raise AssertionError(page.inner_text("#rules-builder")) from exc


@pytest.mark.parametrize("size", ["390", "desktop"])
def test_build_backtest_and_save_a_rule(browser_page: Any, serve_dashboard: Callable[..., str],
                                        db: psycopg.Connection[Any], surging_site: dict[str, Any], size: str) -> None:
    page = browser_page
    base = serve_dashboard()
    signed_in(page, base, size, "fm@example.com", PASSWORD)
    site = surging_site["site"]
    page.goto(f"{base}/alert-rules/{site}")
    page.wait_for_selector("#rules-builder")
    # The threshold kind's parameters, with their defaults and units.
    page.wait_for_selector("input[id*='hold_minutes']")
    assert "hold (min)" in page.inner_text("#rules-params")
    assert page.input_value("input[id*='hold_minutes']") == "15"
    assert "raise while mean power is above this · W" in page.inner_text("#rules-params")
    page.fill("#rules-name", "Freezer surge")
    choose(page, "rules-node", "Freezer")
    # Neither limit given: refused beside the parameters.
    page.click("#rules-try")
    page.wait_for_selector("#rules-error-params:has-text('give exactly one of above_w and below_w')")
    page.fill("input[id*='above_w']", "5000")
    page.click("#rules-try")
    said(page, "2 episode(s) in the last 4 weeks")
    rows = page.locator("#rules-backtest-table tr").all_inner_texts()[1:]
    starts = [s.strftime("%Y-%m-%d %H:%M") for s in surging_site["starts"]]
    assert [r.split("\t")[0] for r in rows] == starts
    shot(page, "backtest", size)
    # Armed in working hours only: the night surge goes.
    page.fill("#rules-hours", "08:00-18:00")
    page.click("#rules-try")
    said(page, "1 episode(s) in the last 4 weeks")
    page.fill("#rules-hours", "18:00-08:00")
    page.click("#rules-try")
    page.wait_for_selector("#rules-error-schedule:has-text('start before end')")
    page.fill("#rules-hours", "08:00-18:00")
    page.check("#rules-severity input[value=critical]")
    page.fill("#rules-emails", "oncall@example.com, bad address")
    page.click("#rules-save")
    page.wait_for_selector("#rules-error-recipients:has-text('not email addresses')")
    page.fill("#rules-emails", "oncall@example.com")
    page.click("#rules-save")
    said(page, "Rule created")
    page.wait_for_selector("#rules-table td:has-text('Freezer surge')")
    shot(page, "saved", size)
    rule = db.execute("""SELECT node_id, kind, params->>'above_w', severity, schedule->'hours', recipient_emails,
                                enabled FROM alert_rules WHERE name = 'Freezer surge'""").fetchone()
    assert rule == (surging_site["freezer"], "threshold", "5000.0", "critical", ["08:00", "18:00"],
                    ["oncall@example.com"], True)
    assert page.console_errors == []
