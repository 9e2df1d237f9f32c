"""An installer commissions a site in headless Chromium, at phone size (390×844) and at
desktop size: pick the bridge, watch sensors update live, assign a discovered sensor to a
circuit created on the spot, see the live check's flags, move a clamp from a time, get the
error next to its field, mark the site commissioned, and read the handover report (page and
CSV). Every number is read back from the database; screenshots of each step go to
artifacts/screenshots/."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import psycopg
import pytest

from dashboard.pages import commissioning as page_module
from ingest.packs import RawPack
from ingest.writer import BatchWriter
from tests.factories import count, wait_for
from tests.fixtures.browser import DESKTOP, PHONE, fits, login, screenshot
from wattline import accounts, assignments, catalogue
from wattline.accounts import create_user
from wattline.domain import Connection, Role
from wattline.senml import SENML_TOPIC, encode_pack
from wattline.site_builder import BuiltSite, CircuitSpec, PanelSpec, SensorSpec, SiteSpec, build_site, build_tenant

pytestmark = pytest.mark.browser
PASSWORD = "installer-password-1"


def send(database_url: str, readings: list[tuple[str, float, float]]) -> None:
    writer = BatchWriter(database_url)
    writer.write([RawPack(SENML_TOPIC.format(bridge="BR-1"), encode_pack(readings), time.time())])
    writer.close()


@pytest.fixture
def on_site(db: psycopg.Connection[Any], database_url: str) -> dict[str, Any]:
    """A 400 V three-phase panel with circuit Motor (CT-1 on L1); CT-9, CT-10 and CT-11 heard
    through the same bridge and not assigned; CT-10 has read 0 A for the last minute. An
    installer granted this site only, and a viewer."""
    _, customer = build_tenant(db, "R", "C")
    built = build_site(db, customer, SiteSpec("Plant", timezone="Europe/London", bridges=("BR-1",), panels=(
        PanelSpec("P", "Main panel", 400.0, 0.9, Connection.THREE_PHASE_WYE, circuits=(
            CircuitSpec("M", "Motor", (SensorSpec("CT-1", "BR-1", ct_rating_a=50),)),)),)))
    now = time.time()
    send(database_url, [(s, now - 60 + k * 10, a) for k in range(7)
                        for s, a in (("CT-1", 12.0), ("CT-9", 6.5), ("CT-10", 0.0), ("CT-11", 30.0))])
    installer = create_user(db, email="ins@example.com", password=PASSWORD, role=Role.INSTALLER, customer_id=customer)
    accounts.grant_sites(db, None, installer, [built.site_id])
    create_user(db, email="view@example.com", password=PASSWORD, role=Role.VIEWER, customer_id=customer)
    return {"built": built, "installer": installer}


def signed_in(page: Any, serve_dashboard: Callable[[], str], size: str, email: str) -> str:
    """A served dashboard, signed in as `email` at this size; returns its base URL."""
    page.set_viewport_size(PHONE if size == "390" else DESKTOP)
    base = serve_dashboard()
    page.goto(base + "/")
    login(page, email, PASSWORD)
    page.wait_for_selector(".site-card", timeout=60_000)
    return base


shot = partial(screenshot, prefix="commissioning", check_fits=False)


def choose(page: Any, dropdown: str, text: str) -> None:
    """Open a Dash dropdown and click the option whose label contains `text`."""
    page.click(f"#{dropdown}")
    page.get_by_role("option", name=re.compile(re.escape(text))).first.click()


def saved(page: Any, expect: str) -> None:
    """Wait for this save's own answer (the last one may still be showing), a success."""
    try:
        page.wait_for_selector(f"#comm-message .saved:has-text('{expect}')", timeout=15_000)
    except Exception as exc:
        raise AssertionError(page.inner_text("#comm-form")) from exc


def card_text(page: Any, serial: str) -> str:
    return str(page.locator(f"#sensor-{serial}").inner_text())


@pytest.mark.parametrize("size", ["390", "desktop"])
def test_an_installer_commissions_a_site(size: str, db: psycopg.Connection[Any], database_url: str,
                                         on_site: dict[str, Any], serve_dashboard: Callable[[], str],
                                         browser_page: Any) -> None:
    built: BuiltSite = on_site["built"]
    page = browser_page
    base = signed_in(page, serve_dashboard, size, "ins@example.com")
    page.goto(f"{base}/commissioning/{built.site_id}")

    # 1-2. The bridge, and its sensors with their current, as stored.
    page.wait_for_selector("#sensor-CT-9", timeout=60_000)
    assert "online" in page.inner_text(".bridge-picker") or "no status" in page.inner_text(".bridge-picker")
    last = db.execute("""SELECT current_a FROM readings r JOIN sensors s ON s.id = r.sensor_id
                         WHERE s.serial = 'CT-9' ORDER BY ts DESC LIMIT 1""").fetchone()[0]
    assert f"{last:.2f} A" in card_text(page, "CT-9")
    assert "no current for a minute" in card_text(page, "CT-10")
    assert fits(page), "the page runs off the right edge"
    shot(page, "1-sensors", size)

    # Live: a new reading shows without a reload.
    send(database_url, [("CT-9", time.time(), 8.25)])
    page.wait_for_function("document.querySelector('#sensor-CT-9').innerText.includes('8.25 A')", timeout=15_000)

    # 3. Assign CT-9 to a circuit created on the spot, on L2 with an 80 A CT.
    choose(page, "comm-serial", "CT-9")
    choose(page, "comm-node", "New circuit")
    page.fill("#comm-new-name", "Pump 2")
    page.check("#comm-phase input[value='2']")
    page.fill("#comm-ct", "80")
    page.click("#comm-submit")
    saved(page, "CT-9: assign saved.")
    # (A full-page screenshot between filling and clicking swallows the click: shots come after.)
    shot(page, "2-assign-form", size)
    row = db.execute("""SELECT n.name, a.phase, a.ct_rating_a, a.assigned_by FROM sensor_assignments a
                        JOIN nodes n ON n.id = a.node_id JOIN sensors s ON s.id = a.sensor_id
                        WHERE s.serial = 'CT-9'""").fetchone()
    assert row == ("Pump 2", 2, 80.0, on_site["installer"])
    page.wait_for_function("document.querySelector('#sensor-CT-9').innerText.includes('Pump 2 · L2')",
                           timeout=15_000)
    # 4. The live check: power now is the current × the panel's phase voltage × its power factor.
    power_kw = 8.25 * 400.0 / 3 ** 0.5 * 0.9 / 1000
    assert f"{power_kw:.2f} kW" in card_text(page, "CT-9")
    # Its history waits for the rollup worker (not running here): the card says how far it is.
    queued = count(db, "SELECT total FROM work_progress ORDER BY id DESC LIMIT 1")
    assert queued >= 1 and f"history being re-computed: 0 of {queued} (0 %), starting" in card_text(page, "CT-9")
    shot(page, "3-assigned", size)

    # A taken phase: the answer is next to the phase field, and nothing is saved.
    choose(page, "comm-serial", "CT-11")
    choose(page, "comm-node", "Motor")
    page.check("#comm-phase input[value='1']")
    page.fill("#comm-ct", "25")
    page.click("#comm-submit")
    page.wait_for_selector("#comm-error-phase:has-text('already measured')", timeout=15_000)
    assert count(db, "SELECT count(*) FROM sensor_assignments a JOIN sensors s ON s.id = a.sensor_id "
                     "WHERE s.serial = 'CT-11'") == 0
    shot(page, "4-phase-taken", size)
    # On L3 with a 25 A CT, its 30 A is flagged as above the rating.
    page.check("#comm-phase input[value='3']")
    page.click("#comm-submit")
    page.wait_for_function("document.querySelector('#sensor-CT-11').innerText.includes('above the 25 A rating')",
                           timeout=15_000)

    # Move CT-1 to Pump 2 from ten minutes ago (site time): earlier readings stay on Motor.
    moved_at = (datetime.now(UTC) - timedelta(minutes=10)).astimezone(
        __import__("zoneinfo").ZoneInfo("Europe/London")).strftime("%Y-%m-%d %H:%M")
    page.check("#comm-action input[value='move']")
    page.wait_for_selector("#comm-explain:has-text('readings before it stay with the old circuit')")
    choose(page, "comm-serial", "CT-1")
    choose(page, "comm-node", "Pump 2")
    page.check("#comm-phase input[value='1']")
    page.fill("#comm-ct", "50")
    page.fill("#comm-at", (datetime.now(UTC) + timedelta(hours=3)).strftime("%Y-%m-%d %H:%M"))
    page.click("#comm-submit")
    page.wait_for_selector("#comm-error-at:has-text('in the future')", timeout=15_000)
    page.fill("#comm-at", moved_at)
    page.click("#comm-submit")
    saved(page, "CT-1: move saved.")
    spans = db.execute("""SELECT n.name, a.reason, a.valid_to = 'infinity' FROM sensor_assignments a
                          JOIN nodes n ON n.id = a.node_id JOIN sensors s ON s.id = a.sensor_id
                          WHERE s.serial = 'CT-1' ORDER BY a.valid_from""").fetchall()
    assert spans == [("Motor", "assign", False), ("Pump 2", "move", True)]
    shot(page, "5-moved", size)

    # Replace CT-9 (on Pump 2, L2) with the spare CT-10 from five minutes ago; correct CT-11 to L2.
    page.check("#comm-action input[value='replace']")
    page.wait_for_selector("#comm-explain:has-text('history runs on')")
    choose(page, "comm-serial", "CT-9")
    choose(page, "comm-new-serial", "CT-10")
    page.fill("#comm-at", (datetime.now(UTC) - timedelta(minutes=5)).astimezone(
        __import__("zoneinfo").ZoneInfo("Europe/London")).strftime("%Y-%m-%d %H:%M"))
    page.click("#comm-submit")
    saved(page, "CT-10 replaces CT-9.")
    assert db.execute("""SELECT n.name, a.phase, a.ct_rating_a, a.reason FROM sensor_assignments a
                         JOIN nodes n ON n.id = a.node_id JOIN sensors s ON s.id = a.sensor_id
                         WHERE s.serial = 'CT-10'""").fetchone() == ("Pump 2", 2, 80.0, "replace")
    page.check("#comm-action input[value='correct']")
    choose(page, "comm-serial", "CT-11")
    choose(page, "comm-node", "Motor")
    page.check("#comm-phase input[value='2']")
    page.fill("#comm-ct", "40")
    page.click("#comm-submit")
    saved(page, "CT-11: correct saved.")
    assert db.execute("""SELECT a.phase, a.ct_rating_a, a.reason, a.valid_from = '-infinity' FROM sensor_assignments a
                         JOIN sensors s ON s.id = a.sensor_id WHERE s.serial = 'CT-11'""").fetchone() == (
        2, 40.0, "correct", True)  # the whole span, re-pointed
    shot(page, "5b-replaced-corrected", size)

    # 5. Mark the site commissioned.
    page.click("#comm-commission")
    page.wait_for_selector("#comm-mark:has-text('commissioned 2')", timeout=15_000)
    assert db.execute("SELECT commissioned_by FROM sites WHERE id = %s", (built.site_id,)).fetchone() == (
        on_site["installer"],)
    assert fits(page)
    shot(page, "6-commissioned", size)

    # The handover report, printable and as CSV, from the same rows.
    page.goto(f"{base}/handover/{built.site_id}")
    text = page.inner_text("table.handover")
    assert "Pump 2" in text and "CT-9" in text and "ins@example.com" in text
    shot(page, "7-handover", size)
    got = page.request.get(f"{base}/handover/{built.site_id}.csv")
    assert got.status == 200 and got.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(got.text())))
    assert {(r["circuit"], r["sensor"], r["phase"]) for r in rows} >= {
        ("Pump 2", "CT-9", "2"), ("Pump 2", "CT-10", "2"), ("Motor", "CT-1", "1"), ("Pump 2", "CT-1", "1"),
        ("Motor", "CT-11", "2")}
    assert count(db, "SELECT count(*) FROM sensor_assignments") == len(rows)
    # Tariffs and costs are not an installer's.
    page.goto(f"{base}/tariffs/{built.site_id}")
    page.wait_for_selector(".empty:has-text('not shown to installers')", timeout=30_000)
    assert page.console_errors == []


@pytest.mark.parametrize("size", ["390", "desktop"])
def test_an_installer_declares_a_meter_that_reports_signed_power(
        size: str, db: psycopg.Connection[Any], on_site: dict[str, Any], serve_dashboard: Callable[[], str],
        browser_page: Any) -> None:
    """CT-9 is a meter that sends its power with its sign: declared so, it may sit on the
    panel above a rooftop PV circuit; declared a clamp again there, it is refused with why."""
    built: BuiltSite = on_site["built"]
    page = browser_page
    base = signed_in(page, serve_dashboard, size, "ins@example.com")
    page.goto(f"{base}/commissioning/{built.site_id}")
    page.wait_for_selector("#sensor-CT-9", timeout=60_000)
    page.check("#comm-action input[value='meter']")
    page.wait_for_selector("#comm-explain:has-text('sends its real power with its sign')")
    choose(page, "comm-serial", "CT-9")
    page.check("#comm-reports-power input[value='meter']")
    page.click("#comm-submit")
    saved(page, "CT-9 is a meter")
    assert db.execute("SELECT reports_power FROM sensors WHERE serial = 'CT-9'").fetchone() == (True,)
    assert db.execute("SELECT actor_user_id FROM audit_log WHERE action = 'set_reports_power'").fetchone() == (
        on_site["installer"],)
    assert fits(page)
    shot(page, "8-meter-declared", size)

    # On the panel, above solar: a meter may be there, a clamp may not.
    catalogue.create_node(db, None, built.site_id, built.nodes["P"], "circuit", "Rooftop PV", flow="generation")
    assignments.assign(db, None, "CT-9", built.nodes["P"], 1, 400.0)
    page.check("#comm-reports-power input[value='clamp']")
    page.click("#comm-submit")
    page.wait_for_selector("#comm-message .error:has-text('has a clamp above the generation circuit Rooftop PV')",
                           timeout=15_000)
    assert db.execute("SELECT reports_power FROM sensors WHERE serial = 'CT-9'").fetchone() == (True,)
    shot(page, "9-meter-refused", size)
    assert page.console_errors == []


def test_a_viewer_sees_no_controls_and_the_server_refuses_the_action(
        db: psycopg.Connection[Any], on_site: dict[str, Any], serve_dashboard: Callable[[], str],
        browser_page: Any) -> None:
    built: BuiltSite = on_site["built"]
    page = browser_page
    base = signed_in(page, serve_dashboard, "390", "view@example.com")
    page.goto(f"{base}/commissioning/{built.site_id}")
    page.wait_for_selector("#comm-readonly", timeout=60_000)
    assert page.locator("#comm-form").count() == 0 and page.locator("#comm-commission").count() == 0
    page.wait_for_selector("#sensor-CT-9", timeout=30_000)  # a viewer still sees the sensors, live
    assert "6.50 A" in card_text(page, "CT-9")
    page.goto(f"{base}/hierarchy/{built.site_id}")
    page.wait_for_selector("#hier-readonly", timeout=60_000)
    page.wait_for_selector(".node-row:has-text('Motor (circuit)')", timeout=30_000)  # the tree, read-only
    assert page.locator("#hier-form").count() == 0
    shot(page, "viewer", "390")
    # Whatever the browser sends: the callback itself refuses a viewer.
    from dashboard.app import create_dash
    from wattline.settings import Settings

    app = create_dash(Settings(database_url=db.info.dsn))
    with app.server.test_request_context():
        import flask

        viewer = db.execute("SELECT id FROM users WHERE email = 'view@example.com'").fetchone()
        flask.g.principal = accounts.principal_of(db, viewer[0])  # what require_login sets from the session
        message, *_ = page_module.submit(1, built.site_id, "assign", "CT-9", built.nodes["M"], None, None, 2, 50,
                                         None, None, None, 0)
    assert "Not allowed" in str(message)
    assert count(db, "SELECT count(*) FROM sensor_assignments a JOIN sensors s ON s.id = a.sensor_id "
                     "WHERE s.serial = 'CT-9'") == 0
    wait_for(lambda: True)


def save(page: Any, expect: str, button: str = "#hier-save") -> None:
    """Click, and wait for this save's own answer (the last one may still be showing)."""
    page.click(button)
    try:
        page.wait_for_selector(f"#hier-message .saved:has-text('{expect}')", timeout=15_000)
    except Exception as exc:
        raise AssertionError(page.inner_text("#hier-form")) from exc


def node_named(db: psycopg.Connection[Any], name: str) -> Any:
    return db.execute("""SELECT n.kind, p.name, n.nominal_voltage_v, n.power_factor, n.connection FROM nodes n
                         LEFT JOIN nodes p ON p.id = n.parent_id WHERE n.name = %s""", (name,)).fetchone()


@pytest.mark.parametrize("size", ["390", "desktop"])
def test_an_installer_builds_the_hierarchy(size: str, db: psycopg.Connection[Any], on_site: dict[str, Any],
                                           serve_dashboard: Callable[[], str], browser_page: Any) -> None:
    built: BuiltSite = on_site["built"]
    page = browser_page
    base = signed_in(page, serve_dashboard, size, "ins@example.com")
    page.goto(f"{base}/hierarchy/{built.site_id}")
    page.wait_for_selector(".node-row", timeout=60_000)
    assert "Main panel (panel) · 400 V, PF 0.9, three phase wye" in page.inner_text("#hier-tree")

    # A sub-board under the site, at 230 V single phase.
    page.check("#hier-kind input[value='panel']")
    page.fill("#hier-name", "Sub board")
    choose(page, "hier-parent", "Plant (site)")
    page.fill("#hier-voltage", "230")
    page.fill("#hier-pf", "0.95")
    save(page, "Sub board added.")
    assert node_named(db, "Sub board") == ("panel", "Plant", 230.0, 0.95, "single_phase")
    # A circuit on it; renamed, then moved to the main panel, then deleted.
    page.check("#hier-kind input[value='circuit']")
    page.fill("#hier-name", "Lights")
    choose(page, "hier-parent", "Sub board")
    save(page, "Lights added.")
    assert node_named(db, "Lights")[:2] == ("circuit", "Sub board")
    shot(page, "hierarchy-1-added", size)
    # The form still says "Lights" from the add: clear it, so that seeing the name again
    # proves the node was loaded (else its late answer landed over the rename, a CI failure).
    page.fill("#hier-name", "")
    choose(page, "hier-node", "Lights (circuit)")
    page.wait_for_function("document.querySelector('#hier-name').value === 'Lights'")
    page.fill("#hier-name", "Lighting")
    choose(page, "hier-parent", "Main panel")
    save(page, "Lighting saved.")
    assert node_named(db, "Lighting")[:2] == ("circuit", "Main panel") and node_named(db, "Lights") is None
    save(page, "Deleted.", "#hier-delete")
    assert node_named(db, "Lighting") is None
    assert count(db, "SELECT count(*) FROM audit_log WHERE subject_type = 'node' AND actor_user_id = %s",
                 on_site["installer"]) == 4  # two creates, one update (renamed and moved), one delete

    # A spreadsheet with bad rows: each is named, and nothing goes in.
    sheet = ("external_ref,parent_ref,kind,name,nominal_voltage_v,power_factor,connection\n"
             "SB2,,panel,Board 2,230,1,single_phase\n"
             "C1,NOPE,circuit,Kitchen,,,\n"
             "C2,SB2,circuit,,,,\n")
    page.set_input_files("#hier-upload input[type=file]", files=[{"name": "h.csv", "mimeType": "text/csv",
                                                                   "buffer": sheet.encode()}])
    page.wait_for_selector(".csv-errors", timeout=15_000)
    errors = page.inner_text(".csv-errors")
    assert "Line 3: unknown parent_ref 'NOPE'" in errors and "Line 4: external_ref and name are required" in errors
    assert node_named(db, "Board 2") is None
    assert fits(page)
    shot(page, "hierarchy-2-csv-errors", size)
    good = sheet.replace("NOPE", "SB2").replace("C2,SB2,circuit,,", "C2,SB2,circuit,Oven,")
    page.set_input_files("#hier-upload input[type=file]", files=[{"name": "h.csv", "mimeType": "text/csv",
                                                                   "buffer": good.encode()}])
    page.wait_for_selector("#hier-message .saved", timeout=15_000)
    assert node_named(db, "Oven")[:2] == ("circuit", "Board 2")
    page.wait_for_selector("#hier-tree :text('Oven (circuit)')")
    shot(page, "hierarchy-3-imported", size)
    assert page.console_errors == []


@pytest.mark.parametrize("size", ["390", "desktop"])
def test_an_installer_adds_a_bridge_and_manages_its_sign_in(
        size: str, db: psycopg.Connection[Any], on_site: dict[str, Any], serve_dashboard: Callable[[], str],
        browser_page: Any) -> None:
    """On a phone as at a desk: add a bridge by the serial and claim code on its label, copy
    its MQTT sign-in (shown once, as the database derives it), then give it a new password
    and revoke it. A wrong claim code is refused."""
    from wattline import bridge_credentials
    from wattline.catalogue import bridge_claim_code
    from wattline.settings import Settings

    built: BuiltSite = on_site["built"]
    settings = Settings()
    page = browser_page
    base = signed_in(page, serve_dashboard, size, "ins@example.com")
    page.goto(f"{base}/commissioning/{built.site_id}")
    page.wait_for_selector("#sensor-CT-9", timeout=60_000)
    page.click("#comm-bridge-tools summary")

    def credential_row() -> tuple[Any, ...]:
        row = db.execute("""SELECT c.username, c.nonce, c.generation, c.revoked_at, b.site_id, b.name
                            FROM bridge_credentials c JOIN bridges b ON b.id = c.bridge_id
                            WHERE c.username = 'BR-NEW'""").fetchone()
        assert row is not None
        return tuple(row)

    def shown_password() -> str:
        page.wait_for_selector("#comm-credential-shown", timeout=15_000)
        text = page.inner_text("#comm-credential-shown")
        return re.search(r"Password\s+(\S+)", text).group(1)  # type: ignore[union-attr]

    page.fill("#comm-new-bridge", "BR-NEW")
    page.fill("#comm-claim-code", "AAAA-AAAA-AAAA")
    page.click("#comm-add-bridge")
    page.wait_for_selector("#comm-credential .error", timeout=15_000)
    assert "no such bridge with that serial and claim code" in page.inner_text("#comm-credential")
    assert count(db, "SELECT count(*) FROM bridges WHERE serial = 'BR-NEW'") == 0

    page.fill("#comm-claim-code", bridge_claim_code("BR-NEW", settings.claim_key))
    page.fill("#comm-bridge-name", "Boiler room")
    page.click("#comm-add-bridge")
    first = shown_password()
    username, nonce, generation, revoked, site, name = credential_row()
    assert (username, generation, revoked, site, name) == ("BR-NEW", 1, None, built.site_id, "Boiler room")
    assert first == bridge_credentials.derive_password(settings.bridge_credential_key, "BR-NEW", bytes(nonce))
    assert "wattline/v1/bridges/BR-NEW/senml" in page.inner_text("#comm-credential-shown")
    assert fits(page), "the sign-in runs off the right edge"
    shot(page, "5-bridge-added", size)

    # The new bridge is in the picker; pick it, give it a new password, then revoke it.
    page.wait_for_selector(".bridge-picker :text('BR-NEW')", timeout=15_000)
    page.click(".bridge-picker :text('BR-NEW')")
    page.wait_for_selector("#comm-sign-in:has-text('sign-in #1')", timeout=15_000)
    page.click("#comm-rotate")
    page.wait_for_function("document.querySelector('#comm-credential-shown') && "
                           f"!document.querySelector('#comm-credential-shown').innerText.includes('{first}')",
                           timeout=15_000)
    second = shown_password()
    _, nonce, generation, revoked, *_ = credential_row()
    assert generation == 2 and revoked is None and second != first
    assert second == bridge_credentials.derive_password(settings.bridge_credential_key, "BR-NEW", bytes(nonce))
    # The broker sync pauses it for reconnecting in a tight loop: the installer sees it, and for how long.
    assert bridge_credentials.pause(db, "BR-NEW", first_s=600.0) is not None
    page.wait_for_selector("#comm-paused", timeout=30_000)
    shown_minutes = int(re.search(r"paused for (\d+) min", page.inner_text("#comm-paused")).group(1))  # type: ignore[union-attr]
    left = db.execute("SELECT extract(epoch FROM paused_until - now())::float8 / 60 FROM bridge_credentials "
                      "WHERE username = 'BR-NEW'").fetchone()
    assert left is not None and abs(shown_minutes - left[0]) <= 1.0, (shown_minutes, left)
    assert fits(page), "the pause runs off the right edge"
    shot(page, "5b-bridge-paused", size)
    page.click("#comm-revoke")
    page.wait_for_selector("#comm-credential :text('Sign-in revoked')", timeout=15_000)
    assert credential_row()[3] is not None
    page.wait_for_selector("#comm-sign-in:has-text('revoked')", timeout=15_000)
    shot(page, "6-bridge-revoked", size)
    actions = [r[0] for r in db.execute("SELECT action FROM audit_log WHERE subject_type = 'bridge' "
                                        "AND actor_user_id = %s ORDER BY id", (on_site["installer"],))]
    assert actions == ["create", "issue_credential", "issue_credential", "revoke_credential"]
    assert not page.console_errors
