"""An admin schedules an export in headless Chromium, at 390 px and desktop size: an http://
URL is refused beside the URL, an HTTPS one is taken and its signing secret shown once; the
export service delivers the period to a real HTTPS receiver; the job's history shows the
run with the rows read back from the database. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import psycopg
import pytest

from exports import runner
from tests.fixtures.browser import DESKTOP, PHONE, login, screenshot
from wattline.accounts import create_user
from wattline.domain import Role
from wattline.settings import Settings
from wattline.site_builder import SiteSpec, build_site, build_tenant

pytestmark = pytest.mark.browser
PASSWORD = "admin-password-for-tests"


shot = partial(screenshot, prefix="exports")


@pytest.mark.parametrize("size", ["390", "desktop"])
def test_schedule_an_export_and_read_its_history(browser_page: Any, serve_dashboard: Callable[..., str],
                                                 db: psycopg.Connection[Any], database_url: str,
                                                 https_receiver: Any, size: str) -> None:
    _, customer = build_tenant(db, "R", "C")
    build_site(db, customer, SiteSpec("Depot", timezone="Europe/London"))
    create_user(db, email="admin@example.com", password=PASSWORD, role=Role.CUSTOMER_ADMIN, customer_id=customer)
    receiver, ca = https_receiver()
    page = browser_page
    page.set_viewport_size(PHONE if size == "390" else DESKTOP)
    base = serve_dashboard(allow_private_destinations=True)
    page.goto(base + "/")
    login(page, "admin@example.com", PASSWORD)
    page.wait_for_selector("nav a[href='/exports']")
    page.goto(base + "/exports")
    page.wait_for_selector("#exports-create")
    page.fill("#exports-name", "Nightly to BI")
    page.fill("#exports-url", receiver.url.replace("https://", "http://"))
    page.click("#exports-create")
    page.wait_for_selector("#exports-error-url:has-text('over HTTPS only')")
    page.fill("#exports-url", receiver.url)
    page.check("#exports-catalog input[type=checkbox]")
    page.click("#exports-create")
    page.wait_for_selector("#exports-secret")
    assert page.inner_text("#exports-secret").startswith("whsec_")
    page.wait_for_selector("#exports-table td:has-text('Nightly to BI')")
    shot(page, "created", size)
    job = db.execute("SELECT id, destination, include_catalog, url FROM export_jobs").fetchone()
    assert job is not None and job[1:] == ("https", True, receiver.url)
    # The service's pass delivers the last complete day and the catalog.
    report = runner.run_pass(db, Settings(database_url=database_url, allow_private_destinations=True,
                                          outbound_ca_file=ca))
    assert report.delivered == 2 and len(receiver.received) == 2
    page.click("#exports-pick")
    page.get_by_role("option", name="Nightly to BI").click()
    page.wait_for_selector("#exports-runs-table")
    rows = dict(db.execute("SELECT kind, rows FROM export_runs").fetchall())
    text = page.inner_text("#exports-runs-table")
    assert text.count("delivered") == 2 and f"\t{rows['catalog']}\t" in text
    shot(page, "history", size)
    assert page.console_errors == []
