"""`wattline alerts`: evaluate every enabled rule on what arrived since its last run, then
deliver due webhooks and send the mail outbox (`wattline.mail`). Restart-safe: each rule's
cursor and episodes move in one transaction, and both outboxes keep their own schedule.
Several schedulers may run; a rule is evaluated by whichever holds its advisory lock, a
message or delivery is sent by whichever claims it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import structlog
from prometheus_client import Counter, Gauge

from alerts import episodes, notify
from alerts.evaluate import Clock, evaluate, load_rule
from alerts.webhooks import DeliveryReport, deliver_due
from wattline import mail
from wattline.db import fetch_all, fetch_tuples
from wattline.service import LoopService
from wattline.settings import Settings

log = structlog.get_logger("wattline.alerts")

RAISED = Counter("wattline_alerts_raised_total", "Alert episodes opened")
CLEARED = Counter("wattline_alerts_cleared_total", "Alert episodes cleared")
RULE_ERRORS = Counter("wattline_alerts_rule_errors_total", "Rule evaluations that failed")
WEBHOOKS = Counter("wattline_alerts_webhook_deliveries_total", "Webhook delivery attempts", ["outcome"])
MAIL = Counter("wattline_mail_total", "Outbox messages handled", ["outcome"])
MAIL_UNREACHABLE = Counter("wattline_mail_server_unreachable_total", "Passes that could not reach the SMTP server")
LAST_PASS = Gauge("wattline_alerts_last_pass_timestamp_seconds", "When the last evaluation pass finished")

#: advisory lock namespace for rule evaluation (the first key of the two-key form)
LOCK_SPACE = 0x5741


@dataclass
class PassReport:
    rules: int = 0
    raised: int = 0
    cleared: int = 0
    errors: int = 0
    webhooks: DeliveryReport = field(default_factory=DeliveryReport)
    mail: mail.MailReport = field(default_factory=mail.MailReport)
    alert_mail: notify.NotifyReport = field(default_factory=notify.NotifyReport)


def clock_for(settings: Settings, now: datetime | None = None) -> Clock:
    return Clock(now or datetime.now(UTC), timedelta(hours=settings.alerts_first_lookback_h),
                 timedelta(seconds=settings.alerts_settle_s), settings.reporting_interval_s)


def evaluate_rule(conn: psycopg.Connection[Any], rule_id: int, clock: Clock) -> episodes.Changes | None:
    """One rule, in one transaction; None when another scheduler holds it or it is gone."""
    with conn.transaction():
        got = fetch_tuples(conn, "SELECT pg_try_advisory_xact_lock(%s, %s)", (LOCK_SPACE, rule_id))
        if not got or not got[0][0]:
            return None
        rule = load_rule(conn, rule_id)
        if rule is None:
            return None
        current = {s: started for s, (_, started) in episodes.ongoing(conn, rule_id).items()}
        changes = episodes.apply(conn, rule, evaluate(conn, rule, clock, current))
        conn.execute("UPDATE alert_rules SET last_error = NULL, failing_since = NULL "
                     "WHERE id = %s AND last_error IS NOT NULL", (rule_id,))
        return changes


def record_rule_error(conn: psycopg.Connection[Any], rule_id: int, exc: BaseException) -> None:
    """Keep a failed evaluation's reason on the rule, where its owner sees it (the API)."""
    error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".replace("\x00", "")[:500]
    conn.execute("""UPDATE alert_rules SET last_error = %s, failing_since = COALESCE(failing_since, now())
                    WHERE id = %s""", (error, rule_id))


def run_pass(conn: psycopg.Connection[Any], settings: Settings, http: httpx.Client,
             now: datetime | None = None) -> PassReport:
    """Every enabled rule once, then the webhook outbox. A rule that fails is logged and
    skipped; it is tried again next pass from the same cursor."""
    report = PassReport()
    clock = clock_for(settings, now)
    for row in fetch_all(conn, "SELECT id FROM alert_rules WHERE enabled ORDER BY id"):
        try:
            changes = evaluate_rule(conn, row["id"], clock)
        except Exception as exc:  # one bad rule must not stop the others, whatever it raised
            if conn.broken or conn.closed:
                raise  # the connection, not the rule: the service reconnects
            report.errors += 1
            log.error("alert_rule_failed", rule=row["id"], error=type(exc).__name__)
            record_rule_error(conn, row["id"], exc)
            continue
        if changes is not None:
            report.rules += 1
            report.raised += len(changes.raised)
            report.cleared += len(changes.cleared)
    report.webhooks = deliver_due(conn, http, allow_private=settings.allow_private_destinations)
    report.alert_mail = notify.process(conn, settings, now)
    report.mail = mail.send_due(conn, settings)
    RAISED.inc(report.raised)
    CLEARED.inc(report.cleared)
    RULE_ERRORS.inc(report.errors)
    for outcome in ("delivered", "retried", "failed", "suspended"):
        WEBHOOKS.labels(outcome).inc(getattr(report.webhooks, outcome))
    for outcome in ("sent", "retried", "given_up"):
        MAIL.labels(outcome).inc(getattr(report.mail, outcome))
    if report.mail.unreachable:
        MAIL_UNREACHABLE.inc()
        log.warning("mail_server_unreachable", error=report.mail.unreachable)
    LAST_PASS.set_to_current_time()
    return report


class AlertPass:
    """One pass of the alert service, on an HTTP client that lives as long as the service."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.http: httpx.Client | None = None
        self.last_report = PassReport()

    def open(self) -> None:
        self.http = httpx.Client(timeout=10.0)

    def close(self) -> None:
        if self.http is not None:
            self.http.close()

    def __call__(self, conn: psycopg.Connection[Any]) -> bool:
        assert self.http is not None, "open() first"
        r = self.last_report = run_pass(conn, self.settings, self.http)
        if r.raised or r.cleared or r.errors or r.webhooks.delivered or r.webhooks.failed or r.mail.sent:
            log.info("alert_pass", rules=r.rules, raised=r.raised, cleared=r.cleared, errors=r.errors,
                     delivered=r.webhooks.delivered, retried=r.webhooks.retried, failed=r.webhooks.failed,
                     mail_sent=r.mail.sent, mail_retried=r.mail.retried, mail_given_up=r.mail.given_up)
        return False


def alert_service(settings: Settings) -> LoopService:
    """`wattline alerts` as a long-running service: a pass every `alerts_period_s`."""
    one_pass = AlertPass(settings)
    return LoopService("alerts", settings.require_database_url(), one_pass, settings.alerts_period_s,
                       setup=one_pass.open, teardown=one_pass.close)
