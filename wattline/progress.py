"""Progress of long work a person waits for: done, total and an estimate of the time left.

- A sensor's back-fill (its history re-computed after it is assigned, corrected, moved or
  replaced): the rollup queue rows it added, and how many are left.
- A re-pricing after a tariff correction: the local days the cost tier dropped, and how
  many it has priced again since.
- An export job's catch-up: its runs, and how many are delivered.

The estimate is the time so far divided by the work done, times the work left; none
before anything is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from wattline.db import fetch_all, fetch_one


@dataclass(frozen=True)
class Progress:
    """How far some work is: `done` of `total`, since `started_at`."""

    done: int
    total: int
    started_at: datetime | None
    now: datetime

    @property
    def finished(self) -> bool:
        """All done (or nothing to do)."""
        return self.done >= self.total

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace so far; None before the first piece is done."""
        if self.finished:
            return 0.0
        if not self.done or self.started_at is None:
            return None
        elapsed = (self.now - self.started_at).total_seconds()
        return elapsed / self.done * (self.total - self.done)

    def as_dict(self) -> dict[str, Any]:
        """For the API and the dashboard."""
        return {"done": self.done, "total": self.total, "finished": self.finished, "eta_s": self.eta_s,
                "started_at": self.started_at}


def _now(conn: psycopg.Connection[Any]) -> datetime:
    row = fetch_one(conn, "SELECT now() AS now")
    assert row is not None
    return row["now"]  # type: ignore[no-any-return]


def backfill(conn: psycopg.Connection[Any], sensor_id: int) -> Progress | None:
    """The latest back-fill of a sensor, or None if it never had one."""
    row = fetch_one(conn, """SELECT p.total, p.started_at,
                                    (SELECT count(*) FROM rollup_dirty d WHERE d.progress_id = p.id) AS left_
                             FROM work_progress p WHERE p.kind = 'backfill' AND p.subject_type = 'sensor'
                               AND p.subject_id = %s ORDER BY p.id DESC LIMIT 1""", (sensor_id,))
    if row is None:
        return None
    return Progress(max(0, row["total"] - row["left_"]), row["total"], row["started_at"], _now(conn))


def backfills(conn: psycopg.Connection[Any], serials: list[str]) -> dict[str, Progress]:
    """The unfinished back-fills among these sensors, by serial (one query, for a page of
    sensor cards; the caller has scoped the serials to the tenant)."""
    if not serials:
        return {}
    rows = fetch_all(conn, """SELECT DISTINCT ON (p.subject_id) s.serial, p.total, p.started_at,
                                     (SELECT count(*) FROM rollup_dirty d WHERE d.progress_id = p.id) AS left_
                              FROM work_progress p JOIN sensors s ON s.id = p.subject_id
                              WHERE p.kind = 'backfill' AND p.subject_type = 'sensor' AND s.serial = ANY(%s)
                              ORDER BY p.subject_id, p.id DESC""", (serials,))
    now = _now(conn)
    out = {r["serial"]: Progress(max(0, r["total"] - r["left_"]), r["total"], r["started_at"], now) for r in rows}
    return {k: v for k, v in out.items() if not v.finished}


def eta_text(p: Progress) -> str:
    """"3 of 12 (25 %), about 2 min left" for a person."""
    share = f"{p.done} of {p.total} ({p.done / p.total * 100:.0f} %)" if p.total else "nothing to do"
    if p.finished:
        return f"{share}, done"
    if p.eta_s is None:
        return f"{share}, starting"
    minutes = p.eta_s / 60
    left = f"about {minutes:.0f} min left" if minutes >= 1 else "less than a minute left"
    return f"{share}, {left}"


def repricing(conn: psycopg.Connection[Any], correction_id: int) -> Progress | None:
    """How many of the days a tariff correction dropped the cost tier has priced again."""
    row = fetch_one(conn, """SELECT c.days_repriced AS total, c.corrected_at,
                                    (SELECT count(*) FROM band_days b WHERE b.site_id = c.site_id
                                       AND b.day >= c.repriced_from::date - 1 AND b.computed_at >= c.corrected_at
                                    ) AS done
                             FROM tariff_corrections c WHERE c.id = %s""", (correction_id,))
    if row is None:
        return None
    return Progress(min(row["done"], row["total"]), row["total"], row["corrected_at"], _now(conn))


def export_job(conn: psycopg.Connection[Any], job_id: int) -> Progress:
    """How many of a job's runs are delivered (or given up): a resumed job catching up shows here."""
    row = fetch_one(conn, """SELECT count(*) AS total, count(*) FILTER (WHERE status <> 'pending') AS done,
                                    min(created_at) FILTER (WHERE status = 'pending') AS pending_since
                             FROM export_runs WHERE job_id = %s""", (job_id,))
    assert row is not None
    started = row["pending_since"]
    if started is not None:  # measure the pace from the oldest run still waiting
        done_since = fetch_one(conn, """SELECT count(*) AS n FROM export_runs WHERE job_id = %s
                                        AND status <> 'pending' AND delivered_at >= %s""", (job_id, started))
        done = int(done_since["n"]) if done_since else 0
        pending = int(row["total"]) - int(row["done"])
        return Progress(done, done + pending, started, _now(conn))
    return Progress(int(row["done"]), int(row["total"]), None, _now(conn))
