"""The export service's pass: plan the runs that are due, deliver them, tell owners of jobs
that keep failing, and make the monthly site reports that are due (`exports.reports`).

Each run is delivered in a transaction of its own: what one run raises is recorded on it
(and on its job) and retried with back-off, 30 s doubling to an hour; the other runs, jobs
and customers go on. A run delivered is never delivered again. A job that has failed for a
day mails its owner once, and again only after it has worked in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import structlog

from exports import destinations, files, reports
from exports.schedule import complete_periods
from wattline import mail
from wattline.db import fetch_all, fetch_one
from wattline.settings import Settings

log = structlog.get_logger("wattline.exports")
FIRST_RETRY_S = 30.0
MAX_RETRY_S = 3600.0
MAX_ATTEMPTS = 48
NOTIFY_AFTER = timedelta(days=1)
BATCH = 50


@dataclass
class ExportReport:
    """What one pass did."""

    planned: int = 0
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    notified: int = 0
    reports: int = 0


def _sites(conn: psycopg.Connection[Any], job: dict[str, Any]) -> list[dict[str, Any]]:
    sites = fetch_all(conn, """SELECT id, timezone, EXISTS (SELECT 1 FROM site_temperatures t WHERE t.site_id = s.id)
                                      AS has_temperatures
                               FROM sites s WHERE customer_id = %s ORDER BY id""", (job["customer_id"],))
    if job["node_ids"]:
        with_nodes = {r["site_id"] for r in fetch_all(conn, "SELECT DISTINCT site_id FROM nodes WHERE id = ANY(%s)",
                                                        (job["node_ids"],))}
        sites = [s for s in sites if s["id"] in with_nodes]
    if job["site_ids"]:
        sites = [s for s in sites if s["id"] in job["site_ids"]]
    return sites


def plan(conn: psycopg.Connection[Any], now: datetime) -> int:
    """Add a pending run for every complete period of every enabled job, from the period last
    complete when the job was made; a run that exists is left alone. Returns how many were added.
    Each pass starts from the newest period planned, so a year-old daily job adds its one new
    day, not 365 conflicting inserts a minute."""
    added = 0
    for job in fetch_all(conn, """SELECT j.*, c.name AS customer_name FROM export_jobs j
                                  JOIN customers c ON c.id = j.customer_id WHERE j.enabled ORDER BY j.id"""):
        planned = {(r["kind"], r["site_id"]): r["latest"] for r in fetch_all(
            conn, """SELECT kind, site_id, max(period_end) AS latest FROM export_runs WHERE job_id = %s
                     GROUP BY kind, site_id""", (job["id"],))}

        with conn.transaction():
            for site in _sites(conn, job):
                # A site with outdoor temperatures gets its degree days beside its measurements;
                # a job that asks for CO2e gets the site's per node and day.
                kinds = ("measurements", *(("degree_days",) if site["has_temperatures"] else ()),
                         *(("emissions",) if job["include_emissions"] else ()))
                for kind in kinds:
                    for start, end in complete_periods(job["schedule"], site["timezone"],
                                                       planned.get((kind, site["id"]), job["created_at"]), now):
                        added += conn.execute("""INSERT INTO export_runs (job_id, kind, site_id, period_start,
                                                                          period_end)
                                                 VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
                                              (job["id"], kind, site["id"], start, end)).rowcount
            # The catalog and the virtual meters follow the customer's first site's calendar
            # (or UTC with none). A job for chosen nodes or sites gets those, not the meters.
            zone = fetch_one(conn, "SELECT timezone FROM sites WHERE customer_id = %s ORDER BY id LIMIT 1",
                             (job["customer_id"],))
            meters = not job["node_ids"] and not job["site_ids"] and fetch_one(
                conn, "SELECT 1 AS one FROM virtual_meters WHERE customer_id = %s LIMIT 1", (job["customer_id"],))
            for kind, wanted in (("catalog", job["include_catalog"]), ("virtual_meters", meters)):
                if not wanted:
                    continue
                for start, end in complete_periods(job["schedule"], zone["timezone"] if zone else "UTC",
                                                   planned.get((kind, None), job["created_at"]), now):
                    added += conn.execute("""INSERT INTO export_runs (job_id, kind, site_id, period_start, period_end)
                                             VALUES (%s, %s, NULL, %s, %s) ON CONFLICT DO NOTHING""",
                                          (job["id"], kind, start, end)).rowcount
    return added


def _build(conn: psycopg.Connection[Any], job: dict[str, Any], run: dict[str, Any]) -> files.ExportFile:
    if run["kind"] == "catalog":
        return files.catalog_file(conn, job, run["period_start"])
    if run["kind"] == "virtual_meters":
        return files.virtual_meters_file(conn, job, run["period_start"], run["period_end"])
    if run["kind"] == "emissions":
        return files.emissions_file(conn, job, run["site_id"], run["period_start"], run["period_end"])
    if run["kind"] == "degree_days":
        return files.degree_days_file(conn, job, run["site_id"], run["period_start"], run["period_end"])
    return files.measurements_file(conn, job, run["site_id"], run["period_start"], run["period_end"])


def _deliver_one(conn: psycopg.Connection[Any], settings: Settings, report: ExportReport,
                 failed_jobs: set[int]) -> bool:
    """The next due run, in its own transaction; False when none is due. A job whose
    destination failed in this pass is not tried again in it, so that an unreachable server
    (each attempt waits out a connect timeout) cannot hold up other jobs."""
    with conn.transaction():
        run = fetch_one(conn, """SELECT r.* FROM export_runs r JOIN export_jobs j ON j.id = r.job_id
                                 WHERE r.status = 'pending' AND r.next_attempt_at <= now() AND j.enabled
                                   AND j.id <> ALL(%s)
                                 ORDER BY r.next_attempt_at, r.id LIMIT 1 FOR UPDATE OF r SKIP LOCKED""",
                        (sorted(failed_jobs),))
        if run is None:
            return False
        job = fetch_one(conn, "SELECT * FROM export_jobs WHERE id = %s", (run["job_id"],))
        assert job is not None
        try:
            file = _build(conn, job, run)
            if job["destination"] == "https":
                destinations.deliver_https(job, run, file, settings)
            else:
                pinned = destinations.deliver_sftp(job, file, settings)
                if pinned:
                    conn.execute("UPDATE export_jobs SET sftp_host_key = %s WHERE id = %s", (pinned, job["id"]))
        except Exception as exc:  # this run's fault, or its destination's, whatever it raised: it alone waits
            if conn.broken or conn.closed:
                raise
            reason = str(exc) if isinstance(exc, destinations.DeliveryFailed) else f"{type(exc).__name__}: {exc}"
            attempts = run["attempts"] + 1
            given_up = attempts >= MAX_ATTEMPTS or isinstance(exc, destinations.HostKeyChanged)
            delay = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** (attempts - 1))
            conn.execute("""UPDATE export_runs SET attempts = %s, error = %s,
                                   status = CASE WHEN %s THEN 'failed' ELSE 'pending' END,
                                   next_attempt_at = now() + make_interval(secs => %s) WHERE id = %s""",
                         (attempts, reason[:500], given_up, delay, run["id"]))
            conn.execute("""UPDATE export_jobs SET last_error = %s, failing_since = COALESCE(failing_since, now())
                            WHERE id = %s""", (reason[:500], job["id"]))
            report.failed += given_up
            report.retried += not given_up
            failed_jobs.add(job["id"])
            log.warning("export_run_failed", job=job["id"], run=run["id"], error=reason[:200])
            return True
        conn.execute("""UPDATE export_runs SET status = 'delivered', attempts = attempts + 1, delivered_at = now(),
                               file_name = %s, rows = %s, bytes = %s, error = NULL WHERE id = %s""",
                     (file.name, file.rows, len(file.body), run["id"]))
        conn.execute("""UPDATE export_jobs SET last_error = NULL, failing_since = NULL, owner_notified_at = NULL
                        WHERE id = %s""", (job["id"],))
        if run["kind"] == "measurements":
            conn.execute("""INSERT INTO cost_deliveries (site_id, kind, reference, period_start, period_end)
                            VALUES (%s, 'export', %s, %s, %s)""",
                         (run["site_id"], f"{job['name']}: {file.name}", run["period_start"], run["period_end"]))
        report.delivered += 1
        return True


def notify_failing(conn: psycopg.Connection[Any], settings: Settings, now: datetime) -> int:
    """Mail the owner of each job failing for a day (once, until it works again)."""
    told = 0
    for job in fetch_all(conn, """SELECT j.id, j.name, j.last_error, j.failing_since, u.id AS user_id, u.email
                                  FROM export_jobs j JOIN users u ON u.id = j.created_by
                                  WHERE j.failing_since <= %s AND j.owner_notified_at IS NULL
                                    AND u.disabled_at IS NULL""", (now - NOTIFY_AFTER,)):
        with conn.transaction():
            mail.queue(conn, kind="export_failing", to=job["email"], user_id=job["user_id"], category="account",
                       subject=f"Export \u201c{job['name']}\u201d has failed for a day",
                       text=f"""The export job \u201c{job['name']}\u201d has not delivered since \
{job['failing_since']:%Y-%m-%d %H:%M} UTC. Wattline keeps retrying and will deliver every period it missed \
once the destination takes files again.

The last error: {job['last_error']}

The job's history: {settings.dashboard_url}/exports

Wattline
""")
            conn.execute("UPDATE export_jobs SET owner_notified_at = now() WHERE id = %s", (job["id"],))
            told += 1
    return told


def run_pass(conn: psycopg.Connection[Any], settings: Settings, now: datetime | None = None) -> ExportReport:
    """Plan, deliver up to BATCH runs, and tell the owners of failing jobs."""
    now = now or datetime.now(UTC)
    report = ExportReport(planned=plan(conn, now))
    failed_jobs: set[int] = set()
    for _ in range(BATCH):
        if not _deliver_one(conn, settings, report, failed_jobs):
            break
    report.notified = notify_failing(conn, settings, now)
    report.reports = reports.send_due(conn, settings.dashboard_url, now)
    return report
