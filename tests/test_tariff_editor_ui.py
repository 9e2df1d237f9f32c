"""A facility manager writes a tariff in headless Chromium, at phone size (390×844) and at
desktop size: edits the bands in the grid, sees an overlap named slot by slot and a band
without a name refused next to the bands, previews last month under the draft (figures
checked against the energy in the database), is refused a date in the closed past next to
the date, and publishes from a future date. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import psycopg
import pytest

from analytics.costing import last_complete_month
from tests.factories import FLAT_BANDS, drain, write
from tests.fixtures.browser import screenshot, signed_in
from wattline.accounts import create_user
from wattline.domain import Connection, Role
from wattline.site_builder import CircuitSpec, PanelSpec, SensorSpec, SiteSpec, TariffSpec, build_site, build_tenant

pytestmark = pytest.mark.browser
PASSWORD = "facility-password-for-tests"


@pytest.fixture
def costed_site(db: psycopg.Connection[Any], database_url: str) -> dict[str, Any]:
    _, customer = build_tenant(db, "R", "C")
    built = build_site(db, customer, SiteSpec(
        "Depot", timezone="Europe/London", bridges=("BR-1",), panels=(PanelSpec("P", "P", 230.0, 1.0,
        Connection.SINGLE_PHASE, circuits=(CircuitSpec("C", "C", (SensorSpec("CT-1", "BR-1"),)),)),),
        tariff=TariffSpec("Flat", "GBP", datetime(2024, 1, 1, tzinfo=UTC), FLAT_BANDS)))
    start, _ = last_complete_month("Europe/London")
    t0 = (start + timedelta(days=4)).replace(hour=12).timestamp()  # 12:00-14:00 local: day rate
    write(database_url, [("CT-1", t0 + i * 10, 10.0) for i in range(2 * 360)])
    drain(db)
    create_user(db, email="fm@example.com", password=PASSWORD, role=Role.FACILITY_MANAGER, customer_id=customer)
    return {"site": built.site_id, "root": built.nodes.get("site") or built.site_id}


shot = partial(screenshot, prefix="tariff-editor")


def edit_band(page: Any, row: int, field: str, value: str) -> None:
    """Type over one field of one band (fields: name, rate, start, end)."""
    page.locator("#tariff-bands .band").nth(row).locator(f"input[id*='band-{field}']").fill(value)


def message(page: Any, expect: str) -> None:
    try:
        page.wait_for_selector(f"#tariff-message .saved:has-text('{expect}')", timeout=15_000)
    except Exception as exc:
        raise AssertionError(page.inner_text("#tariff-editor")) from exc


@pytest.mark.parametrize("size", ["390", "desktop"])
def test_a_facility_manager_writes_previews_and_publishes_a_tariff(
        browser_page: Any, serve_dashboard: Callable[..., str], db: psycopg.Connection[Any],
        costed_site: dict[str, Any], size: str) -> None:
    page = browser_page
    base = serve_dashboard()
    signed_in(page, base, size, "fm@example.com", PASSWORD)
    site = costed_site["site"]
    page.goto(f"{base}/tariffs/{site}")
    page.wait_for_selector("#tariff-editor")
    page.fill("#tariff-name", "Day and night 2027")
    page.fill("#tariff-valid-from", "2025-01-01")
    # An overlap: night from 22:00 while day runs to 23:00.
    edit_band(page, 1, "start", "22:00")
    edit_band(page, 0, "rate", "31.5")
    page.click("#tariff-save")
    message(page, "Draft saved")
    page.wait_for_selector("#tariff-problems li:has-text('bands overlap on weekday at 22:00–23:00 (day, night)')")
    # The picker names the draft the form holds (it once showed its placeholder here).
    page.wait_for_selector("#tariff-draft:has-text('Day and night 2027 from 2025-01-01 (unfinished)')")
    shot(page, "overlap", size)
    edit_band(page, 1, "start", "23:00")
    # A band without a name is refused next to the bands.
    page.click("#tariff-add-band")
    page.wait_for_selector("#tariff-bands .band:nth-child(3)")
    # What was typed before the band was added stays.
    assert page.locator("#tariff-bands .band").nth(1).locator("input[id*='band-start']").input_value() == "23:00"
    page.click("#tariff-save")
    page.wait_for_selector("#tariff-error-bands:has-text('needs a name')")
    shot(page, "band-without-name", size)
    page.locator("#tariff-bands .band").nth(2).locator(".band-remove").click()
    page.wait_for_function("document.querySelectorAll('#tariff-bands .band').length === 2")
    page.click("#tariff-save")
    message(page, "Ready to publish")
    # The picker's labels follow in a second callback (on `tariff-done`), after the message:
    # wait for the label to lose its mark, not for the name, which the old label holds too.
    page.wait_for_function("""() => {
        const t = document.querySelector('#tariff-draft').innerText;
        return t.includes('Day and night 2027 from 2025-01-01') && !t.includes('unfinished'); }""")
    assert db.execute("SELECT count(*) FROM tariff_drafts").fetchone() == (1,)  # saved twice, one draft
    # The preview: last month under the draft beside what it cost.
    page.click("#tariff-preview-button")
    page.wait_for_selector("#tariff-preview-table")
    start, end = last_complete_month("Europe/London")
    row = db.execute("""SELECT sum(r.energy_wh) FROM rollups_15m r JOIN nodes n ON n.id = r.node_id
                        WHERE n.site_id = %s AND n.kind = 'site' AND r.bucket >= %s AND r.bucket < %s""",
                     (site, start, end)).fetchone()
    assert row is not None and row[0] > 0
    kwh = Decimal(str(row[0])) / 1000
    cells = {r[0]: r[1:] for r in (line.split("\t") for line in
                                   page.inner_text("#tariff-preview-table").splitlines()[1:])}
    assert cells["day"][1] == f"{(kwh * Decimal('31.5')).quantize(Decimal(1)) / 100:,.2f}"
    assert cells["flat"][0] == f"{(kwh * 25).quantize(Decimal(1)) / 100:,.2f}"
    shot(page, "preview", size)
    # The past is closed: refused next to the date.
    page.click("#tariff-publish")
    page.wait_for_selector("#tariff-error-valid_from:has-text('already costed')")
    ahead = (datetime.now(UTC) + timedelta(days=40)).date().isoformat()
    page.fill("#tariff-valid-from", ahead)
    page.fill("#tariff-export", "12.5")  # paid for what rooftop PV gives to the grid
    page.click("#tariff-publish")
    message(page, "Published")
    shot(page, "published", size)
    version = db.execute("""SELECT t.name, to_char(t.valid_from AT TIME ZONE 'Europe/London', 'YYYY-MM-DD HH24:MI'),
                                   array_agg(b.name || ' ' || b.rate_minor_per_kwh::text || ' ' ||
                                             b.start_time::text ORDER BY b.id)
                            FROM tariffs t JOIN tariff_bands b ON b.tariff_id = t.id
                            WHERE t.site_id = %s AND t.valid_from > now() GROUP BY t.id""", (site,)).fetchone()
    assert version == ("Day and night 2027", f"{ahead} 00:00",
                       ["day 31.5000 07:00:00", "night 14.0000 23:00:00", "night 14.0000 00:00:00"])
    assert db.execute("SELECT export_rate_minor_per_kwh FROM tariffs WHERE site_id = %s AND valid_from > now()",
                      (site,)).fetchone() == (Decimal("12.5"),)
    # The next change starts from what was published: its bands, as stored, fill the editor.
    page.fill("#tariff-name", "")
    page.click("#tariff-copy")
    page.wait_for_function("document.querySelector('#tariff-name').value === 'Day and night 2027'")
    assert Decimal(page.input_value("#tariff-export")) == Decimal("12.5")
    bands = page.locator("#tariff-bands .band")
    assert bands.count() == 3
    assert [(bands.nth(k).locator("input[id*='band-name']").input_value(),
             Decimal(bands.nth(k).locator("input[id*='band-rate']").input_value()),
             bands.nth(k).locator("input[id*='band-start']").input_value()) for k in range(3)] == [
        ("day", Decimal("31.5"), "07:00"), ("night", Decimal(14), "23:00"), ("night", Decimal(14), "00:00")]
    assert page.console_errors == []
