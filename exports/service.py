"""`wattline exports` as a long-running service: a pass every `exports_period_s`."""

from __future__ import annotations

from typing import Any

import psycopg
import structlog
from prometheus_client import Counter

from exports.runner import run_pass
from wattline.service import LoopService
from wattline.settings import Settings

log = structlog.get_logger("wattline.exports")
RUNS = Counter("wattline_export_runs_total", "Export runs by outcome", ["outcome"])


def export_service(settings: Settings) -> LoopService:
    """Plan and deliver export runs; a run that fails is retried, the others go on."""

    def one_pass(conn: psycopg.Connection[Any]) -> bool:
        report = run_pass(conn, settings)
        for outcome in ("delivered", "retried", "failed"):
            RUNS.labels(outcome).inc(getattr(report, outcome))
        if report.planned or report.delivered or report.retried or report.failed:
            log.info("export_pass", planned=report.planned, delivered=report.delivered, retried=report.retried,
                     failed=report.failed, notified=report.notified)
        return False

    return LoopService("exports", settings.require_database_url(), one_pass, settings.exports_period_s)
