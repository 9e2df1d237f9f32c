"""The site page's comparisons: a range beside the period before and the same dates a year
earlier, and this week's days hour by hour over the typical weekday; figures against an
independent sum over the rollups, and on the page at 390 px and desktop size."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from analytics import comparison
from tests.factories import drain, one_circuit_site, write
from tests.fixtures.browser import ARTIFACTS, DESKTOP, PHONE, fits, login
from wattline.accounts import create_user
from wattline.domain import Role
from wattline.principal import acting_for
from wattline.tariffs import Band, add_tariff

LONDON = ZoneInfo("Europe/London")


def hour_of(database_url: str, start: datetime, amps: float) -> None:
    write(database_url, [("CT-1", start.timestamp() + i * 10, amps) for i in range(361)])


def kwh(db: psycopg.Connection[Any], site_id: int, start: datetime, end: datetime) -> float:
    row = db.execute("""SELECT COALESCE(sum(r.energy_wh), 0) / 1000 FROM rollups_1h r JOIN nodes n ON n.id = r.node_id
                        WHERE n.site_id = %s AND n.kind = 'site' AND r.bucket >= %s AND r.bucket < %s""",
                     (site_id, start, end)).fetchone()
    assert row is not None
    return float(row[0])


@pytest.fixture
def site_with_history(db: psycopg.Connection[Any], database_url: str) -> dict[str, Any]:
    built = one_circuit_site(db, "Europe/London")
    add_tariff(db, built.site_id, "Flat", "GBP", datetime(2020, 1, 1, tzinfo=UTC),
               (Band("flat", Decimal("25"), ("weekday", "weekend", "holiday"),
                     datetime.min.time(), datetime.min.time()),))
    today = datetime.now(LONDON).replace(hour=0, minute=0, second=0, microsecond=0)
    monday = today - timedelta(days=today.weekday())
    # A weekend five weeks back: no other reading of this fixture falls in it or in the two
    # days before it, whatever today is (it was the two days up to today, which on a
    # Tuesday or Wednesday held this Monday's 20 A hour too).
    saturday = (monday - timedelta(weeks=5, days=2)).replace(tzinfo=None).replace(tzinfo=LONDON)
    chosen = (saturday, (saturday + timedelta(days=2)).replace(tzinfo=None).replace(tzinfo=LONDON))
    hour_of(database_url, chosen[0].replace(hour=9), 20.0)
    hour_of(database_url, (chosen[0] - timedelta(days=1)).replace(hour=9), 10.0)  # the period before
    a_year_ago = chosen[0].replace(year=chosen[0].year - 1, tzinfo=None).replace(tzinfo=LONDON)
    hour_of(database_url, a_year_ago.replace(hour=9), 5.0)
    # Weekdays of the four weeks before this one at 10:00 (10 A), and this Monday at 10:00 (20 A).
    for week in range(1, 5):
        for day in range(5):
            d = (monday - timedelta(weeks=week) + timedelta(days=day)).replace(tzinfo=None).replace(tzinfo=LONDON)
            hour_of(database_url, d.replace(hour=10), 10.0)
    this_monday = monday.replace(tzinfo=None).replace(tzinfo=LONDON).replace(hour=10)
    if this_monday < datetime.now(LONDON) - timedelta(hours=1):
        hour_of(database_url, this_monday, 20.0)
    drain(db)
    _, customer = db.execute("SELECT id, customer_id FROM sites WHERE id = %s", (built.site_id,)).fetchone()  # type: ignore[misc]
    return {"site": built.site_id, "customer": customer, "chosen": chosen, "today": today, "monday": monday,
            "this_monday": this_monday}


def test_a_range_beside_the_one_before_and_a_year_earlier(db: psycopg.Connection[Any],
                                                          site_with_history: dict[str, Any]) -> None:
    s = site_with_history
    start, end = s["chosen"]
    periods = comparison.compare(db, acting_for(s["customer"]), s["site"], start, end)
    assert [p.label for p in periods] == ["chosen range", "the period before", "a year earlier"]
    before = (start - timedelta(days=2), start)
    year = (start.replace(year=start.year - 1, tzinfo=None).replace(tzinfo=LONDON),
            end.replace(year=end.year - 1, tzinfo=None).replace(tzinfo=LONDON))
    for period, (a, b) in zip(periods, (s["chosen"], before, year), strict=True):
        assert (period.start, period.end) == (a, b)
        assert period.kwh == pytest.approx(kwh(db, s["site"], a, b), abs=1e-9)
        assert period.kwh > 0 and period.cost is not None
    assert periods[0].kwh == pytest.approx(2 * periods[1].kwh, rel=0.01)  # 20 A against 10 A


def test_this_week_over_the_typical_weekday(db: psycopg.Connection[Any], site_with_history: dict[str, Any]) -> None:
    s = site_with_history
    profile = comparison.daily_profile(db, acting_for(s["customer"]), s["site"])
    assert profile.typical_weekday[10] == pytest.approx(10 * 230 / 1000, rel=0.01)
    assert profile.typical_weekday[3] is None  # no data at 03:00 on any weekday
    if s["this_monday"] < datetime.now(LONDON) - timedelta(hours=1):
        monday = f"{s['monday']:%a %d}"
        assert profile.days[monday][10] == pytest.approx(20 * 230 / 1000, rel=0.01)


@pytest.mark.browser
@pytest.mark.parametrize("size", ["390", "desktop"])
def test_the_site_page_shows_the_comparison(browser_page: Any, serve_dashboard: Callable[..., str],
                                            db: psycopg.Connection[Any], site_with_history: dict[str, Any],
                                            size: str) -> None:
    s = site_with_history
    create_user(db, email="fm@example.com", password="fm-password-for-tests", role=Role.FACILITY_MANAGER,
                customer_id=s["customer"])
    page = browser_page
    page.set_viewport_size(PHONE if size == "390" else DESKTOP)
    base = serve_dashboard()
    page.goto(base + "/")
    login(page, "fm@example.com", "fm-password-for-tests")
    page.wait_for_selector(".site-card")
    page.goto(f"{base}/site/{s['site']}")
    page.wait_for_selector("#site-compare-table")
    text = page.inner_text("#site-compare-table")
    end = s["today"]
    # The default range is yesterday and today: read its kWh back from the database.
    default = (end - timedelta(days=1), end + timedelta(days=1))
    assert f"{kwh(db, s['site'], *default):,.1f}" in text.split("\n")[1]
    assert "a year earlier" in text
    page.wait_for_selector("#site-profile .main-svg")
    page.screenshot(path=str(ARTIFACTS / f"site-compare-{size}.png"), full_page=True)
    assert fits(page)
    assert page.console_errors == []
