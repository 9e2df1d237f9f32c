"""Retention per data category, enforced by `wattline retention`.

Time-series tables lose whole chunks with TimescaleDB's `drop_chunks` (cheap: a file
unlink), then the rows older than the cut-off in the chunk that straddles it, so that the
promise holds to the second and not only to the chunk. The Apache edition has no
background retention policy, so this job is ours; it is idempotent and safe to run often.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from wattline import audit
from wattline.packed_tier import packed_readings_older_than, trim_before
from wattline.service import LoopService
from wattline.settings import Settings


@dataclass(frozen=True)
class Category:
    """A kind of data with its own retention setting and time column."""
    name: str
    table: str
    time_column: str
    setting: str
    hypertable: bool = True
    extra_where: str = ""
    #: Rows hold many readings (the packed tier): counted and trimmed by reading, not by row.
    packed: bool = False


CATEGORIES = (
    Category("raw readings", "readings", "ts", "retention_raw_days"),
    Category("packed raw readings", "readings_packed", "day", "retention_raw_days", packed=True),
    Category("1-minute rollups", "rollups_1m", "bucket", "retention_1m_days"),
    Category("15-minute rollups", "rollups_15m", "bucket", "retention_15m_days"),
    Category("hourly rollups", "rollups_1h", "bucket", "retention_1h_days"),
    Category("daily rollups", "rollups_1d", "bucket", "retention_1d_days"),
    # Marks before rows: a reader never finds a marked day whose priced rows are gone.
    Category("priced-day marks", "band_days", "day", "retention_1d_days", hypertable=False),
    Category("daily cost by tariff band", "rollups_band_1d", "bucket", "retention_1d_days"),
    Category("rejected payloads", "rejected_readings", "received_at", "retention_rejected_days"),
    Category("audit log", "audit_log", "at", "retention_audit_days", hypertable=False),
    Category("support records", "support_requests", "closed_at", "retention_support_days", hypertable=False,
             extra_where=" AND closed_at IS NOT NULL"),
    Category("expired login sessions", "api_keys", "expires_at", "retention_sessions_days", hypertable=False,
             extra_where=" AND session"),
    Category("failed sign-in records", "login_throttle", "last_failed_at", "retention_sessions_days",
             hypertable=False, extra_where=" AND (locked_until IS NULL OR locked_until < now())"),
    Category("invite and reset links", "account_tokens", "expires_at", "retention_sessions_days",
             hypertable=False),
    Category("sent mail", "mail_outbox", "created_at", "retention_mail_days", hypertable=False,
             extra_where=" AND (sent_at IS NOT NULL OR given_up_at IS NOT NULL)"),
    Category("export run history", "export_runs", "created_at", "retention_export_runs_days", hypertable=False,
             extra_where=" AND status <> 'pending'"),
    Category("webhook deliveries", "webhook_deliveries", "created_at", "retention_webhook_days", hypertable=False,
             extra_where=" AND (delivered_at IS NOT NULL OR failed_at IS NOT NULL)"),
)


@dataclass
class Removed:
    """What retention removed (or, dry run, would remove) of one category."""
    category: str
    table: str
    keep_days: int | None
    cutoff: str | None
    rows: int
    chunks: int


def run_retention(conn: psycopg.Connection[Any], settings: Settings, *, now: datetime | None = None,
                  dry_run: bool = False) -> list[Removed]:
    """Apply every category's policy; returns what was (or, dry run, would be) removed."""
    now = now or datetime.now(UTC)
    report: list[Removed] = []
    for cat in CATEGORIES:
        days: int | None = getattr(settings, cat.setting)
        if days is None:
            report.append(Removed(cat.name, cat.table, None, None, 0, 0))
            continue
        cutoff = now - timedelta(days=days)
        table = sql.Identifier(cat.table)
        where = sql.SQL("{} < %(cutoff)s{}").format(sql.Identifier(cat.time_column), sql.SQL(cat.extra_where))
        if cat.packed:
            report.append(_packed_retention(conn, cat, days, cutoff, dry_run))
            continue
        with conn.transaction():
            row = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(table, where),
                               {"cutoff": cutoff}).fetchone()
            rows = int(row[0]) if row else 0
            chunks = 0
            if not dry_run and rows:
                if cat.table == "audit_log":
                    # The append-only trigger lets this job, and only it, delete.
                    conn.execute("SET LOCAL wattline.retention_job = 'on'")
                if cat.hypertable:
                    chunks = len(conn.execute("SELECT drop_chunks(%s, older_than => %s)",
                                              (cat.table, cutoff)).fetchall())
                conn.execute(sql.SQL("DELETE FROM {} WHERE {}").format(table, where), {"cutoff": cutoff})
        report.append(Removed(cat.name, cat.table, days, cutoff.isoformat(), rows, chunks))
    if not dry_run:
        with conn.transaction():
            audit.record(conn, None, "retention", "system", "retention",
                         removed={r.table: r.rows for r in report if r.rows})
    return report


def _packed_retention(conn: psycopg.Connection[Any], cat: Category, days: int, cutoff: datetime,
                      dry_run: bool) -> Removed:
    """The packed tier: whole chunks dropped, then the day that straddles the cut-off re-packed
    without its older readings. Counted in readings, like the raw tier."""
    if dry_run:
        return Removed(cat.name, cat.table, days, cutoff.isoformat(), packed_readings_older_than(conn, cutoff), 0)
    with conn.transaction():
        # The readings of the chunks about to go, from the rows' counts: the day that
        # straddles the cut-off is unpacked once, by `trim_before`, which counts its own.
        doomed = [r[0] for r in conn.execute("SELECT show_chunks(%s, older_than => %s)::text",
                                             (cat.table, cutoff)).fetchall()]
        readings = 0
        for chunk in doomed:
            row = conn.execute(sql.SQL("SELECT COALESCE(sum(n), 0) FROM {}").format(
                sql.Identifier(*chunk.split(".")))).fetchone()
            readings += int(row[0]) if row else 0
        chunks = len(conn.execute("SELECT drop_chunks(%s, older_than => %s)", (cat.table, cutoff)).fetchall())
        readings += trim_before(conn, cutoff)
    return Removed(cat.name, cat.table, days, cutoff.isoformat(), readings, chunks)


def as_rows(report: list[Removed]) -> list[dict[str, Any]]:
    """The report as plain dicts (for JSON)."""
    return [asdict(r) for r in report]


def retention_service(settings: Settings, every_hours: float, *, dry_run: bool = False,
                      on_report: Callable[[list[Removed]], None] | None = None) -> LoopService:
    """`wattline retention --every-hours N` as a long-running service."""
    def one_pass(conn: psycopg.Connection[Any]) -> bool:
        report = run_retention(conn, settings, dry_run=dry_run)
        if on_report is not None:
            on_report(report)
        return False

    return LoopService("retention", settings.require_database_url(), one_pass, every_hours * 3600.0)
