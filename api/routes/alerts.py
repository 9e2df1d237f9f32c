"""Alert rules, the notification centre, webhooks and normalised benchmarking."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from alerts import store
from alerts.backtest import backtest
from analytics.benchmark import site_benchmarks
from api.deps import Admin, Conn, Reader, Writer, visible_site
from api.problems import Problem, not_found
from api.routes.data import checked_range
from api.schemas import (
    Alert,
    AlertRule,
    AlertRuleIn,
    AlertRulePatch,
    BacktestIn,
    BacktestOut,
    Created,
    Delivery,
    SiteBenchmark,
    Webhook,
    WebhookCreated,
    WebhookIn,
)
from wattline import queries

router = APIRouter(prefix="/v1", tags=["alerts"])


@router.post("/sites/{site_id}/alert-rules", response_model=Created, status_code=201,
             summary="Create an alert rule for a site or one of its nodes")
def create_rule(site_id: int, body: AlertRuleIn, p: Writer, conn: Conn) -> Created:
    visible_site(conn, p, site_id)
    return Created(id=store.create_rule(conn, site_id, body.node_id, body.name, body.params, body.enabled,
                                        severity=body.severity, schedule=body.schedule, recipients=body.recipients,
                                        actor=p, virtual_meter_id=body.virtual_meter_id))


@router.post("/sites/{site_id}/alert-rules/backtest", response_model=BacktestOut,
             summary="What a rule would have raised over the last 4 weeks, before it is saved (nothing is stored)")
def backtest_rule(site_id: int, body: BacktestIn, request: Request, p: Reader, conn: Conn) -> dict[str, Any]:
    settings = request.app.state.settings
    found = backtest(conn, p, site_id, body.node_id, body.params, schedule=body.schedule, severity=body.severity,
                     settle_s=settings.alerts_settle_s, reporting_interval_s=settings.reporting_interval_s,
                     virtual_meter_id=body.virtual_meter_id)
    return {"from": found.start, "to": found.end, "present_only": found.present_only,
            "episodes": [f.__dict__ for f in found.findings]}


@router.get("/alert-rules/{rule_id}/episodes", response_model=list[Alert], summary="A rule's history of episodes")
def rule_history(rule_id: int, p: Reader, conn: Conn,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[dict[str, Any]]:
    if store.rule(conn, p, rule_id) is None:
        raise not_found("alert rule")
    return store.episodes_of(conn, p, rule_id, limit=limit)


@router.get("/sites/{site_id}/alert-rules", response_model=list[AlertRule], summary="A site's alert rules")
def list_rules(site_id: int, p: Reader, conn: Conn) -> list[dict[str, Any]]:
    visible_site(conn, p, site_id)
    return store.rules(conn, p, site_id)


@router.get("/alert-rules/{rule_id}", response_model=AlertRule, summary="One alert rule")
def get_rule(rule_id: int, p: Reader, conn: Conn) -> dict[str, Any]:
    rule = store.rule(conn, p, rule_id)
    if rule is None:
        raise not_found("alert rule")
    return rule


@router.patch("/alert-rules/{rule_id}", response_model=Created, summary="Rename, re-tune, enable or disable a rule")
def patch_rule(rule_id: int, body: AlertRulePatch, p: Writer, conn: Conn) -> Created:
    if store.rule(conn, p, rule_id) is None:
        raise not_found("alert rule")
    store.update_rule(conn, rule_id, name=body.name, params=body.params, enabled=body.enabled, severity=body.severity,
                      schedule=body.schedule if "schedule" in body.model_fields_set else store.KEEP,
                      recipients=body.recipients, actor=p)
    return Created(id=rule_id)


@router.delete("/alert-rules/{rule_id}", response_model=Created, summary="Delete a rule and its alert history")
def delete_rule(rule_id: int, p: Writer, conn: Conn) -> Created:
    if store.rule(conn, p, rule_id) is None:
        raise not_found("alert rule")
    store.delete_rule(conn, rule_id, actor=p)
    return Created(id=rule_id)


@router.get("/alerts", response_model=list[Alert],
            summary="The notification centre: alerts by state (active = open or acknowledged), newest first")
def list_alerts(p: Reader, conn: Conn, state: store.State = "active", site_id: int | None = None,
                since: datetime | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> list[dict[str, Any]]:
    return store.alerts(conn, p, state=state, site_id=site_id, since=since, limit=limit, offset=offset)


@router.get("/alerts/{alert_id}", response_model=Alert, summary="One alert")
def get_alert(alert_id: int, p: Reader, conn: Conn) -> dict[str, Any]:
    row = store.alert(conn, p, alert_id)
    if row is None:
        raise not_found("alert")
    return row


@router.post("/alerts/{alert_id}/acknowledge", response_model=Alert, summary="Acknowledge: someone is on it")
def acknowledge(alert_id: int, p: Writer, conn: Conn) -> dict[str, Any]:
    if store.alert(conn, p, alert_id) is None:
        raise not_found("alert")
    store.acknowledge(conn, alert_id, p.user_id)
    row = store.alert(conn, p, alert_id)
    assert row is not None
    return row


@router.post("/alerts/{alert_id}/resolve", response_model=Alert, summary="Resolve: it is dealt with")
def resolve(alert_id: int, p: Writer, conn: Conn) -> dict[str, Any]:
    if store.alert(conn, p, alert_id) is None:
        raise not_found("alert")
    store.resolve(conn, alert_id, p.user_id)
    row = store.alert(conn, p, alert_id)
    assert row is not None
    return row


@router.post("/customers/{customer_id}/webhooks", response_model=WebhookCreated, status_code=201,
             summary="Register a webhook for the customer's alerts; the signing secret is shown once")
def create_webhook(customer_id: int, body: WebhookIn, request: Request, p: Admin, conn: Conn) -> dict[str, Any]:
    if queries.customer(conn, p, customer_id) is None:
        raise not_found("customer")
    webhook_id, secret = store.create_webhook(
        conn, customer_id, body.url, actor=p,
        allow_private=request.app.state.settings.allow_private_destinations)
    row = store.webhook(conn, p, webhook_id)
    assert row is not None
    return {**row, "secret": secret}


@router.get("/customers/{customer_id}/webhooks", response_model=list[Webhook], summary="A customer's webhooks")
def list_webhooks(customer_id: int, p: Admin, conn: Conn) -> list[dict[str, Any]]:
    if queries.customer(conn, p, customer_id) is None:
        raise not_found("customer")
    return store.webhooks(conn, p, customer_id)


@router.get("/webhooks/{webhook_id}/deliveries", response_model=list[Delivery],
            summary="Recent deliveries of a webhook, with attempts and errors")
def list_deliveries(webhook_id: int, p: Admin, conn: Conn) -> list[dict[str, Any]]:
    if store.webhook(conn, p, webhook_id) is None:
        raise not_found("webhook")
    return store.deliveries(conn, webhook_id)


@router.post("/webhooks/{webhook_id}/resume", response_model=Webhook,
             summary="Resume a suspended webhook: deliveries are attempted again")
def resume_webhook(webhook_id: int, p: Admin, conn: Conn) -> dict[str, Any]:
    if store.webhook(conn, p, webhook_id) is None:
        raise not_found("webhook")
    store.resume_webhook(conn, webhook_id, actor=p)
    row = store.webhook(conn, p, webhook_id)
    assert row is not None
    return row


@router.delete("/webhooks/{webhook_id}", response_model=Created, summary="Delete a webhook")
def delete_webhook(webhook_id: int, p: Admin, conn: Conn) -> Created:
    if store.webhook(conn, p, webhook_id) is None:
        raise not_found("webhook")
    store.delete_webhook(conn, webhook_id, actor=p)
    return Created(id=webhook_id)


@router.get("/customers/{customer_id}/benchmark", response_model=list[SiteBenchmark],
            summary="Energy per m² and per opening hour of each of the customer's sites over a range")
def benchmark(customer_id: int, p: Reader, conn: Conn, t_from: Annotated[datetime, Query(alias="from")],
              t_to: Annotated[datetime, Query(alias="to")]) -> list[dict[str, Any]]:
    t_from, t_to = checked_range(t_from, t_to)
    if queries.customer(conn, p, customer_id) is None:
        raise not_found("customer")
    if (t_to - t_from).days > 400:
        raise Problem(422, "Range too long", "benchmark at most 400 days at a time")
    return site_benchmarks(conn, p, customer_id, t_from, t_to)
