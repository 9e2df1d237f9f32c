"""Scheduled export jobs against real destinations: an HTTPS receiver with its own certificate
and OpenSSH's sshd with key authentication, both started here on free ports. A job delivers
each local period once, with the catalog beside it; the files hold what the database holds;
a receiver answering 500, an unreachable or full SFTP server and a refused key are each
recorded on the run with their reason and retried, never holding up another customer's job;
a job failing for a day tells its owner once."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fastapi.testclient import TestClient

from exports import runner
from tests.factories import Tenant, auth, count, drain, write
from tests.fixtures.receivers import SftpServer
from wattline.settings import Settings
from wattline.signing import verify

LONDON = ZoneInfo("Europe/London")


@pytest.fixture(autouse=True)
def receivers_here(client: TestClient) -> None:
    """The receivers of these tests run on this machine (private addresses, refused in production)."""
    settings = client.app.state.settings  # type: ignore[attr-defined]
    client.app.state.settings = settings.model_copy(update={"allow_private_destinations": True})  # type: ignore[attr-defined]


def yesterday() -> tuple[datetime, datetime]:
    today = datetime.now(LONDON).replace(hour=0, minute=0, second=0, microsecond=0)
    start = (today - timedelta(days=1)).replace(tzinfo=None).replace(tzinfo=LONDON)
    return start, today


def readings_yesterday(database_url: str, t: Tenant, db: psycopg.Connection[Any]) -> None:
    start, _ = yesterday()
    t0 = start.replace(hour=9).timestamp()
    write(database_url, [(t.sensor_serial, t0 + i * 10, 12.0) for i in range(2 * 360)], bridge=t.bridge_serial)
    drain(db)


def settings_for(database_url: str, ca: Path | None = None) -> Settings:
    return Settings(database_url=database_url, allow_private_destinations=True, outbound_ca_file=ca)


def make_job(client: TestClient, t: Tenant, **body: Any) -> dict[str, Any]:
    res = client.post(f"/v1/customers/{t.customer_id}/export-jobs", headers=auth(t.tokens["customer_admin"]),
                      json={"name": "Nightly to BI", "resolution": "15m", "format": "csv", "schedule": "daily",
                            **body})
    assert res.status_code == 201, res.text
    return dict(res.json())


def test_an_https_job_delivers_each_period_once_with_the_catalog(
        client: TestClient, tenants: tuple[Tenant, Tenant], db: psycopg.Connection[Any], database_url: str,
        https_receiver: Any) -> None:
    a, _ = tenants
    readings_yesterday(database_url, a, db)
    receiver, ca = https_receiver()
    made = make_job(client, a, destination="https", url=receiver.url, include_catalog=True)
    assert made["secret"].startswith("whsec_") and made["public_key"] is None
    report = runner.run_pass(db, settings_for(database_url, ca))
    assert (report.planned, report.delivered, report.failed) == (2, 2, 0)
    by_name = {dict(h)["Content-Disposition"].split('"')[1]: (dict(h), body) for h, body in receiver.received}
    start, end = yesterday()
    data_name = f"nightly-to-bi_site-{a.site_id}_{start:%Y-%m-%d}_15m.csv"
    assert set(by_name) == {data_name, f"nightly-to-bi_catalog_{start:%Y-%m-%d}.csv"}
    headers, body = by_name[data_name]
    assert verify(made["secret"], body, headers["Wattline-Signature"])
    assert headers["Wattline-Period"] == f"{start.isoformat()}/{end.isoformat()}"
    # The file holds what the database holds: every node's 15-minute energy of that local day.
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    stored = db.execute("""SELECT r.node_id, sum(r.energy_wh) FROM rollups_15m r JOIN nodes n ON n.id = r.node_id
                           WHERE n.site_id = %s AND r.bucket >= %s AND r.bucket < %s GROUP BY r.node_id""",
                        (a.site_id, start, end)).fetchall()
    exported: dict[int, float] = {}
    for r in rows:
        exported[int(r["device_id"])] = exported.get(int(r["device_id"]), 0.0) + float(r["energy_wh"] or 0)
    assert stored and {n: round(e, 3) for n, e in exported.items() if e} == {n: round(e, 3) for n, e in stored}
    catalog = list(csv.DictReader(io.StringIO(by_name[f"nightly-to-bi_catalog_{start:%Y-%m-%d}.csv"][1].decode())))
    assert {int(r["device_id"]) for r in catalog} >= {a.circuit_id, a.panel_id}
    assert next(r for r in catalog if int(r["device_id"]) == a.circuit_id)["path"].endswith("› Chiller A")
    # The history: rows, bytes, status; another pass delivers nothing again.
    runs = client.get(f"/v1/export-jobs/{made['id']}/runs", headers=auth(a.tokens["customer_admin"])).json()
    data_run = next(r for r in runs if r["kind"] == "measurements")
    assert (data_run["status"], data_run["rows"], data_run["bytes"]) == ("delivered", len(rows), len(body))
    assert runner.run_pass(db, settings_for(database_url, ca)).delivered == 0
    assert len(receiver.received) == 2
    job = client.get(f"/v1/export-jobs/{made['id']}", headers=auth(a.tokens["customer_admin"])).json()
    assert job["progress"]["done"] == job["progress"]["total"] == 2 and job["progress"]["finished"]
    # What left Wattline for that day is registered, for a tariff correction to supersede.
    assert count(db, "SELECT count(*) FROM cost_deliveries WHERE kind = 'export' AND site_id = %s", a.site_id) == 1
    # Another tenant cannot see the job.
    assert client.get(f"/v1/export-jobs/{made['id']}", headers=auth(tenants[1].tokens["customer_admin"])
                      ).status_code == 404


def test_a_receiver_answering_500_is_retried_and_the_period_delivered_once(
        client: TestClient, tenants: tuple[Tenant, Tenant], db: psycopg.Connection[Any], database_url: str,
        https_receiver: Any) -> None:
    a, _ = tenants
    receiver, ca = https_receiver(fail=2, status=500)
    made = make_job(client, a, destination="https", url=receiver.url)
    settings = settings_for(database_url, ca)
    for _ in range(3):
        runner.run_pass(db, settings)
        db.execute("UPDATE export_runs SET next_attempt_at = now()")
    run = db.execute("SELECT status, attempts, error FROM export_runs WHERE job_id = %s", (made["id"],)).fetchone()
    assert run == ("delivered", 3, None)
    ids = {dict(h)["Wattline-Delivery"] for h, _ in receiver.received}
    assert len(receiver.received) == 3 and len(ids) == 1  # the same delivery id on every attempt
    job = db.execute("SELECT last_error, failing_since FROM export_jobs WHERE id = %s", (made["id"],)).fetchone()
    assert job == (None, None)


def test_sftp_delivery_refused_key_unreachable_and_full_disk(
        client: TestClient, tenants: tuple[Tenant, Tenant], db: psycopg.Connection[Any], database_url: str,
        sftp_server: SftpServer, https_receiver: Any) -> None:
    a, b = tenants
    readings_yesterday(database_url, a, db)
    made = make_job(client, a, destination="sftp", sftp_host="127.0.0.1", sftp_port=sftp_server.port,
                    sftp_username="root", sftp_path=str(sftp_server.folder), format="json")
    assert made["public_key"].startswith("ssh-ed25519 ")
    settings = settings_for(database_url)
    # Not yet in authorized_keys: refused, with what to do.
    report = runner.run_pass(db, settings)
    assert report.retried == 1
    error = db.execute("SELECT error FROM export_runs WHERE job_id = %s", (made["id"],)).fetchone()
    assert error is not None and "refused our key" in error[0]
    sftp_server.authorize(made["public_key"])
    db.execute("UPDATE export_runs SET next_attempt_at = now()")
    assert runner.run_pass(db, settings).delivered == 1
    start, _ = yesterday()
    [name] = sftp_server.files()
    assert name == f"nightly-to-bi_site-{a.site_id}_{start:%Y-%m-%d}_15m.json"
    assert sftp_server.files()[name].startswith(b"[{")
    pinned = db.execute("SELECT sftp_host_key FROM export_jobs WHERE id = %s", (made["id"],)).fetchone()
    assert pinned == (sftp_server.host_fingerprint,)
    # Unreachable: recorded and retried, and another customer's job still goes in the same pass.
    receiver, ca = https_receiver()
    make_job(client, b, destination="https", url=receiver.url)
    sftp_server.stop()
    db.execute("DELETE FROM export_runs WHERE job_id = %s", (made["id"],))
    report = runner.run_pass(db, settings_for(database_url, ca))
    assert report.retried == 1 and report.delivered == 1 and len(receiver.received) == 1
    error = db.execute("SELECT error FROM export_runs WHERE job_id = %s", (made["id"],)).fetchone()
    assert error is not None and "cannot be reached" in error[0]
    # A full remote disk: the write is refused, the run waits with the reason.
    sftp_server.start()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(sftp_server.folder)], check=True)
    try:
        filled = subprocess.run(["dd", "if=/dev/zero", f"of={sftp_server.folder / 'filler'}", "bs=4k"],
                                capture_output=True, text=True)  # until the disk is full
        assert "No space left" in filled.stderr
        db.execute("UPDATE export_runs SET next_attempt_at = now()")
        assert runner.run_pass(db, settings).retried == 1
        run = db.execute("SELECT status, error FROM export_runs WHERE job_id = %s", (made["id"],)).fetchone()
        assert run is not None and run[0] == "pending" and "disk full" in run[1], run
    finally:
        subprocess.run(["umount", str(sftp_server.folder)], check=True)
    db.execute("UPDATE export_runs SET next_attempt_at = now()")
    assert runner.run_pass(db, settings).delivered == 1
    # A server presenting another host key is refused for good.
    db.execute("UPDATE export_jobs SET sftp_host_key = 'SHA256:somethingelse' WHERE id = %s", (made["id"],))
    db.execute("UPDATE export_runs SET status = 'pending', next_attempt_at = now() WHERE job_id = %s", (made["id"],))
    runner.run_pass(db, settings)
    run = db.execute("SELECT status, error FROM export_runs WHERE job_id = %s", (made["id"],)).fetchone()
    assert run is not None and run[0] == "failed" and "host key changed" in run[1]


def test_a_job_failing_for_a_day_tells_its_owner_once(
        client: TestClient, tenants: tuple[Tenant, Tenant], db: psycopg.Connection[Any], database_url: str) -> None:
    a, _ = tenants
    made = make_job(client, a, destination="https", url="https://127.0.0.1:9/nothing-listens-here")
    settings = settings_for(database_url)
    runner.run_pass(db, settings)
    db.execute("UPDATE export_jobs SET failing_since = now() - interval '25 hours' WHERE id = %s", (made["id"],))
    assert runner.run_pass(db, settings).notified == 1
    assert runner.run_pass(db, settings).notified == 0
    message = db.execute("SELECT to_address, subject, body_text FROM mail_outbox WHERE kind = 'export_failing'"
                         ).fetchone()
    assert message is not None and message[0].startswith("customer_admin-A")
    assert "has failed for a day" in message[1] and "The last error:" in message[2]


@pytest.mark.parametrize("body,field", [
    ({"destination": "https", "url": "http://plain.example/x"}, "url"),
    ({"destination": "https"}, "url"),
    ({"destination": "sftp", "sftp_host": "h"}, "sftp_host"),
    ({"destination": "https", "url": "https://a.example/x", "site_ids": [999999]}, "site_ids"),
])
def test_bad_jobs_are_refused_with_the_field(client: TestClient, tenants: tuple[Tenant, Tenant],
                                             body: dict[str, Any], field: str) -> None:
    a, _ = tenants
    res = client.post(f"/v1/customers/{a.customer_id}/export-jobs", headers=auth(a.tokens["customer_admin"]),
                      json={"name": "x", **body})
    assert res.status_code in (404, 422) and res.json()["field"] == field, res.text


def test_a_job_delivers_the_customers_virtual_meters(
        client: TestClient, tenants: tuple[Tenant, Tenant], db: psycopg.Connection[Any], database_url: str,
        https_receiver: Any) -> None:
    """A customer with a virtual meter gets its series beside each period's measurements, in
    the job's format; the file holds what the node's rollups hold."""
    a, _ = tenants
    readings_yesterday(database_url, a, db)
    meter = client.post("/v1/virtual-meters", headers=auth(a.tokens["customer_admin"]), json={
        "name": "Chiller line", "terms": [{"sign": "+", "node_id": a.circuit_id}]})
    assert meter.status_code == 201, meter.text
    receiver, ca = https_receiver()
    make_job(client, a, destination="https", url=receiver.url, format="json")
    report = runner.run_pass(db, settings_for(database_url, ca))
    assert (report.planned, report.delivered, report.failed) == (2, 2, 0)
    start, end = yesterday()
    by_name = {dict(h)["Content-Disposition"].split('"')[1]: body for h, body in receiver.received}
    rows = json.loads(by_name[f"nightly-to-bi_virtual-meters_{start:%Y-%m-%d}_15m.json"])
    stored = dict(db.execute("""SELECT bucket, energy_wh FROM rollups_15m
                                WHERE node_id = %s AND bucket >= %s AND bucket < %s""",
                             (a.circuit_id, start, end)).fetchall())
    assert stored and len(rows) == len(stored) and sum(stored.values()) > 0
    assert {r["meter_name"] for r in rows} == {"Chiller line"} and {r["resolution_minutes"] for r in rows} == {15}
    got = {datetime.fromisoformat(r["time_utc"]): r["energy_wh"] for r in rows}
    assert got == pytest.approx({b: e for b, e in stored.items()}, abs=1e-9)


def test_a_site_with_temperatures_gets_its_degree_days_beside_its_measurements(
        client: TestClient, tenants: tuple[Tenant, Tenant], db: psycopg.Connection[Any], database_url: str,
        https_receiver: Any) -> None:
    """The day's mean temperature, its degree days at the site's bases, and its energy only
    when readings cover the day (two hours do not)."""
    a, _ = tenants
    readings_yesterday(database_url, a, db)
    start, _ = yesterday()
    res = client.put(f"/v1/sites/{a.site_id}/temperatures", headers=auth(a.tokens["facility_manager"]),
                     json={"days": [{"day": str(start.date()), "mean_c": 7.25}]})
    assert res.status_code == 200, res.text
    client.patch(f"/v1/sites/{a.site_id}", headers=auth(a.tokens["facility_manager"]), json={"hdd_base_c": 16.0})
    receiver, ca = https_receiver()
    make_job(client, a, destination="https", url=receiver.url)
    report = runner.run_pass(db, settings_for(database_url, ca))
    assert (report.planned, report.delivered, report.failed) == (2, 2, 0)
    by_name = {dict(h)["Content-Disposition"].split('"')[1]: body for h, body in receiver.received}
    body = by_name[f"nightly-to-bi_site-{a.site_id}_degree-days_{start:%Y-%m-%d}.csv"].decode()
    rows = list(csv.DictReader(io.StringIO(body)))
    assert rows == [{"site_id": str(a.site_id), "site_name": "Site A", "day": str(start.date()), "mean_c": "7.25",
                     "hdd_base_c": "16.0", "hdd": "8.75", "cdd_base_c": "22.0", "cdd": "0.0", "energy_kwh": ""}]
    coverage = db.execute("""SELECT r.coverage FROM rollups_1d r JOIN nodes n ON n.id = r.node_id
                             WHERE n.site_id = %s AND n.kind = 'site' AND r.bucket = %s""",
                          (a.site_id, start)).fetchone()
    assert coverage is not None and coverage[0] < 0.9  # why energy_kwh is empty
    # Tenant B's site has no temperatures and is not A's: no degree-days run for it.
    assert count(db, "SELECT count(*) FROM export_runs WHERE kind = 'degree_days'") == 1


def test_a_job_that_asks_for_co2e_gets_each_sites_per_node_and_day(
        client: TestClient, tenants: tuple[Tenant, Tenant], db: psycopg.Connection[Any], database_url: str,
        https_receiver: Any) -> None:
    """Yesterday's energy of every node at the site's factor (its own, here), checked against
    the hourly rollups; a job that does not ask gets no CO2e file."""
    a, _ = tenants
    readings_yesterday(database_url, a, db)
    start, end = yesterday()
    res = client.put(f"/v1/sites/{a.site_id}/emission-factor", headers=auth(a.tokens["facility_manager"]),
                     json={"g_co2e_per_kwh": 210.5, "source": "Supplier 2025"})
    assert res.status_code == 200, res.text
    receiver, ca = https_receiver()
    make_job(client, a, destination="https", url=receiver.url, include_emissions=True, format="json")
    report = runner.run_pass(db, settings_for(database_url, ca))
    assert (report.planned, report.delivered, report.failed) == (2, 2, 0)
    by_name = {dict(h)["Content-Disposition"].split('"')[1]: body for h, body in receiver.received}
    rows = json.loads(by_name[f"nightly-to-bi_site-{a.site_id}_co2e_{start:%Y-%m-%d}.json"])
    stored = dict(db.execute("""SELECT n.id, sum(r.energy_wh) FROM rollups_1h r JOIN nodes n ON n.id = r.node_id
                                WHERE n.site_id = %s AND r.bucket >= %s AND r.bucket < %s GROUP BY n.id""",
                             (a.site_id, start, end)).fetchall())
    assert stored and {r["node_id"] for r in rows} == set(stored)
    for r in rows:
        assert r["day"] == str(start.date()) and r["factor_origin"] == "site" and r["factor_source"] == "Supplier 2025"
        assert r["energy_kwh"] == pytest.approx(stored[r["node_id"]] / 1000, rel=1e-9)
        assert r["kg_co2e"] == pytest.approx(stored[r["node_id"]] * 210.5 / 1e6, rel=1e-9)
    assert count(db, "SELECT count(*) FROM export_runs WHERE kind = 'emissions'") == 1
