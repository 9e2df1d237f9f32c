"""A facility manager with rooftop PV, in headless Chromium at phone size (390×844) and at
desktop size: the site page's Solar and grid card shows what the site consumed, generated,
drew from and gave to the grid, and used of its own generation, each read back against the
rollups in the database; the hierarchy editor marks a circuit as generation and refuses,
with the reason, a consuming device under it. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
import pytest

from tests.factories import drain, write, write_metered
from tests.fixtures.browser import choose, screenshot, signed_in
from wattline import assignments
from wattline.accounts import create_user
from wattline.domain import Connection, Role
from wattline.site_builder import CircuitSpec, PanelSpec, SensorSpec, SiteSpec, build_site, build_tenant

pytestmark = pytest.mark.browser
PASSWORD = "facility-password-for-tests"
LONDON = ZoneInfo("Europe/London")
shot = partial(screenshot, prefix="generation")


@pytest.fixture
def solar_site(db: psycopg.Connection[Any], database_url: str) -> dict[str, Any]:
    """Yesterday (London) at 30 s: a chiller drawing 20 A, and PV rising to 45 A at noon
    and back, so the site draws from the grid at the ends of the day and gives to it at noon."""
    _, customer = build_tenant(db, "R", "C")
    built = build_site(db, customer, SiteSpec("Solar depot", timezone="Europe/London", bridges=("BR-1",), panels=(
        PanelSpec("P", "Board", 230.0, 1.0, Connection.SINGLE_PHASE, circuits=(
            CircuitSpec("C", "Chiller", (SensorSpec("CT-1", "BR-1"),)),
            CircuitSpec("PV", "Rooftop PV", (SensorSpec("CT-2", "BR-1"),), flow="generation"))),)))
    yesterday = datetime.now(LONDON).date() - timedelta(days=1)
    start = datetime.combine(yesterday, datetime.min.time(), LONDON).timestamp()
    stamps = np.arange(start, start + 86400, 30.0)
    sun = np.clip(np.sin((stamps - start - 6 * 3600) / (12 * 3600) * np.pi), 0.0, None)
    write(database_url, [("CT-1", float(t), 20.0) for t in stamps] +
          [("CT-2", float(t), round(float(45.0 * s), 3)) for t, s in zip(stamps, sun, strict=True)], bridge="BR-1")
    drain(db)
    create_user(db, email="fm@example.com", password=PASSWORD, role=Role.FACILITY_MANAGER, customer_id=customer)
    return {"site": built.site_id, "start": start}


def expected(db: psycopg.Connection[Any], site: int, start: float) -> dict[str, str]:
    """The range's five figures from the site root's 15-minute rollups, as the card shows them."""
    row = db.execute("""SELECT sum(energy_wh), sum(generation_wh), sum(energy_wh - generation_wh + export_wh),
                               sum(export_wh), sum(generation_wh - export_wh)
                        FROM rollups_15m r JOIN nodes n ON n.id = r.node_id AND n.kind = 'site'
                        WHERE n.site_id = %s AND r.bucket >= to_timestamp(%s)""", (site, start)).fetchone()
    assert row is not None and all(v is not None for v in row)
    keys = ("consumption", "generation", "import", "export", "self_consumption")
    return {k: f"{v / 1000:,.1f} kWh" for k, v in zip(keys, row, strict=True)}


@pytest.mark.parametrize("size", ["390", "desktop"])
def test_solar_and_grid_on_a_phone_and_a_desktop(browser_page: Any, serve_dashboard: Callable[..., str],
                                                 db: psycopg.Connection[Any], solar_site: dict[str, Any],
                                                 size: str) -> None:
    page, site = browser_page, solar_site["site"]
    want = expected(db, site, solar_site["start"])
    assert want["export"] != "0.0 kWh" and want["import"] != "0.0 kWh"  # the day did both
    base = serve_dashboard()
    signed_in(page, base, size, "fm@example.com", PASSWORD)
    page.goto(f"{base}/site/{site}")
    for key, text in want.items():
        page.wait_for_selector(f"#site-balance-{key}:has-text('{text}')", timeout=20_000)
    page.wait_for_selector("#site-balance-chart .bars")
    page.locator("#site-balance-card").scroll_into_view_if_needed()
    shot(page, "site", size)

    # The hierarchy editor: the PV circuit reads as generation; a kettle under it is refused.
    page.goto(f"{base}/hierarchy/{site}")
    page.wait_for_selector("#hier-tree:has-text('Rooftop PV (circuit) · generation')")
    choose(page, "hier-node", "Rooftop PV")
    page.wait_for_selector("#hier-flow input[value=generation]:checked")
    page.goto(f"{base}/hierarchy/{site}")  # a new node
    page.wait_for_selector("#hier-tree:has-text('Rooftop PV')")
    page.click("#hier-kind input[value=device]")
    page.fill("#hier-name", "Kettle")
    choose(page, "hier-parent", "Rooftop PV")
    page.click("#hier-save")
    page.wait_for_selector("#hier-error-flow:has-text('everything under generation generates')")
    assert db.execute("SELECT count(*) FROM nodes WHERE name = 'Kettle'").fetchone() == (0,)
    page.click("#hier-flow input[value=generation]")
    page.fill("#hier-name", f"Inverter {size}")
    page.click("#hier-save")
    page.wait_for_selector(f"#hier-message:has-text('Inverter {size} added')")
    assert db.execute("SELECT flow FROM nodes WHERE name = %s", (f"Inverter {size}",)).fetchone() == ("generation",)
    shot(page, "hierarchy", size)
    assert not page.console_errors, page.console_errors


@pytest.mark.parametrize("size", ["390", "desktop"])
def test_a_meter_on_the_incomer_shows_solar_and_grid_with_nothing_marked(
        browser_page: Any, serve_dashboard: Callable[..., str], db: psycopg.Connection[Any], database_url: str,
        size: str) -> None:
    """No circuit is marked as generation, but the board's incomer is a meter that reports
    its power's sign: at noon the site gives to the grid (PV nobody clamped), and the card
    shows it, each figure read back from the rollups."""
    _, customer = build_tenant(db, "R", "C")
    built = build_site(db, customer, SiteSpec("Metered depot", timezone="Europe/London", bridges=("BR-1",), panels=(
        PanelSpec("P", "Board", 230.0, 1.0, Connection.SINGLE_PHASE, circuits=(
            CircuitSpec("C", "Chiller", (SensorSpec("CT-1", "BR-1"),)),)),)))
    assignments.register_sensor(db, "M-1", built.bridges["BR-1"])
    assignments.set_reports_power(db, None, "M-1", True)
    assignments.assign(db, None, "M-1", built.nodes["P"], 1, 400.0)
    yesterday = datetime.now(LONDON).date() - timedelta(days=1)
    start = datetime.combine(yesterday, datetime.min.time(), LONDON).timestamp()
    stamps = np.arange(start, start + 86400, 20.0)
    sun = np.clip(np.sin((stamps - start - 6 * 3600) / (12 * 3600) * np.pi), 0.0, None)
    net = np.round(4600.0 + 500.0 - 9000.0 * sun, 1)  # the chiller, 500 W nobody clamped, PV nobody clamped
    write_metered(database_url, [("CT-1", float(t), 20.0, None) for t in stamps] +
                  [("M-1", float(t), round(abs(float(w)) / 230.0, 3), float(w)) for t, w in zip(stamps, net,
                                                                                                strict=True)])
    drain(db)
    create_user(db, email="fm@example.com", password=PASSWORD, role=Role.FACILITY_MANAGER, customer_id=customer)
    want = expected(db, built.site_id, start)
    assert "0.0 kWh" not in (want["export"], want["self_consumption"], want["import"])  # noon gives, the rest draws
    page = browser_page
    base = serve_dashboard()
    signed_in(page, base, size, "fm@example.com", PASSWORD)
    page.goto(f"{base}/site/{built.site_id}")
    for key, text in want.items():
        page.wait_for_selector(f"#site-balance-{key}:has-text('{text}')", timeout=20_000)
    page.locator("#site-balance-card").scroll_into_view_if_needed()
    shot(page, "metered-site", size)
    assert not page.console_errors, page.console_errors
