"""A facility manager defines a virtual meter in headless Chromium, at phone size (390×844)
and desktop size: board A without circuit A3, across two terms; the list shows its last
seven days, read back against the database; making it count A3 twice is refused with the
reason, and the stored terms stay. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import psycopg
import pytest

from tests.factories import drain, write
from tests.fixtures.browser import choose, screenshot, signed_in
from wattline import emissions
from wattline.accounts import create_user
from wattline.domain import Connection, Role
from wattline.site_builder import CircuitSpec, PanelSpec, SensorSpec, SiteSpec, build_site, build_tenant

pytestmark = pytest.mark.browser
PASSWORD = "facility-password-for-tests"


@pytest.fixture
def boards(db: psycopg.Connection[Any], database_url: str) -> dict[str, Any]:
    _, customer = build_tenant(db, "R", "C")
    circuits = tuple(CircuitSpec(c, f"Circuit {c}", (SensorSpec(f"CT-{c}", "BR-1"),)) for c in ("A1", "A2", "A3"))
    built = build_site(db, customer, SiteSpec("Works", timezone="Europe/London", bridges=("BR-1",), panels=(
        PanelSpec("MSB", "MSB", 230.0, 1.0, Connection.SINGLE_PHASE, sub_panels=(
            PanelSpec("A", "Board A", 230.0, 1.0, Connection.SINGLE_PHASE, circuits=circuits,
                      feeder=CircuitSpec("FA", "Feeder A")),)),)))
    t0 = (time.time() // 3600) * 3600 - 2 * 3600
    amps = {"A1": 5.0, "A2": 7.0, "A3": 11.0}
    write(database_url, [(f"CT-{c}", t0 + k * 10, a) for k in range(360 + 1) for c, a in amps.items()], bridge="BR-1")
    drain(db)
    create_user(db, email="fm@example.com", password=PASSWORD, role=Role.FACILITY_MANAGER, customer_id=customer)
    return {"site": built.site_id, "nodes": built.nodes}


shot = partial(screenshot, prefix="virtual-meters")


def pick(page: Any, term: int, text: str) -> None:
    page.locator(".vm-part").nth(term).click()
    page.get_by_role("option", name=re.compile(re.escape(text))).first.click()
    page.keyboard.press("Escape")


@pytest.mark.parametrize("size", ["390", "desktop"])
def test_define_a_meter_and_see_it(browser_page: Any, serve_dashboard: Callable[..., str],
                                   db: psycopg.Connection[Any], boards: dict[str, Any], size: str) -> None:
    page = browser_page
    base = serve_dashboard()
    signed_in(page, base, size, "fm@example.com", PASSWORD)
    page.goto(f"{base}/virtual-meters/{boards['site']}")
    page.wait_for_selector("#vm-list:has-text('No virtual meters yet.')")
    page.fill("#vm-name", "Board A without A3")
    pick(page, 0, "Board A (panel)")
    page.click("#vm-add")
    page.wait_for_selector(".vm-term >> nth=1")
    page.locator(".vm-term").nth(1).get_by_text("− subtract").click()
    pick(page, 1, "Circuit A3")
    assert "Board A" in page.locator(".vm-term").nth(0).inner_text()  # adding a term kept the first
    page.click("#vm-save")
    page.wait_for_selector("#vm-message:has-text('Saved')")
    page.wait_for_selector("#vm-table")
    page.wait_for_selector("#vm-chart .main-svg")
    nodes = boards["nodes"]
    stored = db.execute("SELECT node_id, sign FROM virtual_meter_terms ORDER BY position").fetchall()
    assert stored == [(nodes["A"], 1), (nodes["A3"], -1)]
    energy = dict(db.execute("SELECT node_id, sum(energy_wh) FROM rollups_1h WHERE node_id = ANY(%s) GROUP BY 1",
                             ([nodes["A"], nodes["A3"], nodes["A1"], nodes["A2"]],)).fetchall())
    kwh = (energy[nodes["A"]] - energy[nodes["A3"]]) / 1000
    assert np.isclose(kwh, (energy[nodes["A1"]] + energy[nodes["A2"]]) / 1000)
    meter = db.execute("SELECT id FROM virtual_meters").fetchone()
    assert meter is not None
    row = page.inner_text(f"#vm-row-{meter[0]}")
    assert f"{kwh:,.1f}" in row, row
    factor = emissions.site_factor(db, boards["site"]).g_per_kwh  # the site's country's
    assert factor is not None and f"{kwh * factor / 1000:,.1f}" in row.split(f"{kwh:,.1f}")[1], row  # kg CO2e
    assert re.search(r"\+ Works: [· ]*Board A \(panel\) − Works: [· ]*Circuit A3", row), row
    shot(page, "saved", size)

    # Count A3 twice: refused beside the terms, with the reason; the stored terms stay
    page.locator(".vm-term").nth(1).get_by_text("+ add").click()
    page.click("#vm-save")
    page.wait_for_selector("#vm-error:has-text('Double counting')")
    assert "added twice" in page.inner_text("#vm-error")
    assert db.execute("SELECT node_id, sign FROM virtual_meter_terms ORDER BY position").fetchall() == stored
    shot(page, "refused", size)

    # An alert rule can watch the meter: backtested on its composed power, then saved
    page.goto(f"{base}/alert-rules/{boards['site']}")
    page.wait_for_selector("input[id*='above_w']")
    page.fill("#rules-name", "Board A busy")
    choose(page, "rules-node", "Virtual meter: Board A without A3")
    page.fill("input[id*='above_w']", "1000")  # A1 + A2: 12 A at 230 V, 2.8 kW
    page.click("#rules-try")
    page.wait_for_selector("#rules-message .saved:has-text('1 episode(s) in the last 4 weeks')")
    page.click("#rules-save")
    page.wait_for_selector("#rules-message .saved:has-text('Rule created.')")
    assert db.execute("SELECT virtual_meter_id, node_id FROM alert_rules WHERE name = 'Board A busy'"
                      ).fetchone() == (meter[0], None)
    page.wait_for_selector("#rules-table:has-text('meter: Board A without A3')")  # the list says what it watches
    shot(page, "alert-rule", size)
