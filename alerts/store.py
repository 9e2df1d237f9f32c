"""Rules, the notification centre and webhooks, tenant-scoped like `wattline.queries`:
what another tenant owns is not found."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from alerts.episodes import EPISODE_COLUMNS
from alerts.rules import DEFAULT_SEVERITY, RULE_PARAMS, Recipients, RuleParams, Schedule, Severity
from wattline import audit
from wattline.db import fetch_all, fetch_one
from wattline.errors import Invalid, NotFound
from wattline.outbound import parse_destination
from wattline.principal import Principal
from wattline.queries import scope
from wattline.signing import new_secret

Conn = psycopg.Connection[Any]
Row = dict[str, Any]
State = Literal["open", "acknowledged", "resolved", "active", "all"]

RULE_COLUMNS = ("r.id, r.site_id, r.node_id, r.virtual_meter_id, r.kind, r.name, r.params, r.enabled, "
                "r.evaluated_to, r.created_at, r.last_error, r.failing_since, r.severity, r.schedule, "
                "jsonb_build_object('user_ids', r.recipient_user_ids, 'emails', r.recipient_emails, "
                "'webhook_ids', r.webhook_ids) AS recipients")
_RULE_FROM = "alert_rules r JOIN sites s ON s.id = r.site_id JOIN customers c ON c.id = s.customer_id"
_EPISODE_FROM = f"alert_episodes e JOIN {_RULE_FROM} ON r.id = e.rule_id"


def _dump(params: RuleParams) -> Jsonb:
    return Jsonb(RULE_PARAMS.dump_python(params, mode="json"))


def _check_recipients(conn: Conn, site_id: int, recipients: Recipients) -> None:
    """People and webhooks must be the site's customer's own (else: not found, as another tenant's)."""
    customer = fetch_one(conn, "SELECT customer_id FROM sites WHERE id = %s", (site_id,))
    assert customer is not None
    if recipients.user_ids:
        found = fetch_all(conn, "SELECT id FROM users WHERE id = ANY(%s) AND customer_id = %s AND disabled_at IS NULL",
                          (recipients.user_ids, customer["customer_id"]))
        if len(found) != len(set(recipients.user_ids)):
            raise NotFound("person", field="recipients")
    if recipients.webhook_ids:
        found = fetch_all(conn, "SELECT id FROM webhooks WHERE id = ANY(%s) AND customer_id = %s",
                          (recipients.webhook_ids, customer["customer_id"]))
        if len(found) != len(set(recipients.webhook_ids)):
            raise NotFound("webhook", field="recipients")


def _schedule(schedule: Schedule | None) -> Jsonb | None:
    return Jsonb(schedule.model_dump(mode="json")) if schedule is not None else None


def create_rule(conn: Conn, site_id: int, node_id: int | None, name: str, params: RuleParams,
                enabled: bool = True, *, severity: Severity | None = None, schedule: Schedule | None = None,
                recipients: Recipients | None = None, actor: Principal | None = None,
                virtual_meter_id: int | None = None) -> int:
    """A rule for a site, for one of its nodes (which must belong to the site), or for a
    virtual meter of the site's customer (its schedule on the site's clock)."""
    recipients = recipients or Recipients()
    severity = severity or DEFAULT_SEVERITY.get(params.kind, "warning")
    with conn.transaction():
        if node_id is not None and fetch_one(conn, "SELECT 1 FROM nodes WHERE id = %s AND site_id = %s",
                                             (node_id, site_id)) is None:
            raise NotFound("node", field="node_id")
        if virtual_meter_id is not None:
            check_meter_scope(conn, site_id, node_id, virtual_meter_id, params.kind)
        _check_recipients(conn, site_id, recipients)
        row = fetch_one(conn, """INSERT INTO alert_rules (site_id, node_id, virtual_meter_id, kind, name, params,
                                                          enabled, severity, schedule, recipient_user_ids,
                                                          recipient_emails, webhook_ids)
                                 VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
                        (site_id, node_id, virtual_meter_id, params.kind, name, _dump(params), enabled, severity,
                         _schedule(schedule), sorted(set(recipients.user_ids)), recipients.emails,
                         recipients.webhook_ids))
        assert row is not None
        audit.record(conn, actor, "create", "alert_rule", row["id"], kind=params.kind)
    return int(row["id"])


#: What a rule on a virtual meter can watch: its power and energy. Sensors, bridges and the
#: budget belong to sites and nodes.
METER_KINDS = ("threshold", "after_hours", "anomaly", "cycling", "base_load")


def check_meter_scope(conn: Conn, site_id: int, node_id: int | None, meter_id: int, kind: str) -> None:
    """A rule may watch a virtual meter of the site's customer, for a kind that reads power or energy."""
    if node_id is not None:
        raise Invalid("Invalid scope", "a rule watches a node or a virtual meter, not both", field="node_id")
    if fetch_one(conn, """SELECT 1 FROM virtual_meters m JOIN sites s ON s.customer_id = m.customer_id
                           WHERE m.id = %s AND s.id = %s""", (meter_id, site_id)) is None:
        raise NotFound("virtual meter", field="virtual_meter_id")
    if kind not in METER_KINDS:
        raise Invalid("Invalid scope", f"a rule on a virtual meter watches its power or energy "
                      f"({', '.join(METER_KINDS)}), not {kind}", field="virtual_meter_id")


def rules(conn: Conn, p: Principal, site_id: int) -> list[Row]:
    where, params = scope(p)
    return fetch_all(conn, sql.SQL("SELECT {rule_columns} FROM {rule_from} WHERE r.site_id = %(site)s AND {where} "
                                   "ORDER BY r.id").format(
        rule_columns=sql.SQL(RULE_COLUMNS), rule_from=sql.SQL(_RULE_FROM), where=where), {**params, "site": site_id})


def rule(conn: Conn, p: Principal, rule_id: int) -> Row | None:
    where, params = scope(p)
    return fetch_one(conn, sql.SQL("SELECT {rule_columns} FROM {rule_from} WHERE r.id = %(id)s AND {where}").format(
        rule_columns=sql.SQL(RULE_COLUMNS), rule_from=sql.SQL(_RULE_FROM), where=where),
                     {**params, "id": rule_id})


#: Leave a setting as it is (None means "always" for a schedule, so it cannot mean "unchanged").
KEEP: Any = object()


def update_rule(conn: Conn, rule_id: int, *, name: str | None = None, params: RuleParams | None = None,
                enabled: bool | None = None, severity: Severity | None = None, schedule: Schedule | None = KEEP,
                recipients: Recipients | None = None, actor: Principal | None = None) -> None:
    """A changed condition is judged afresh from now on; its ongoing episodes clear or carry
    on at the next evaluation."""
    values = {"name": name, "params": params, "enabled": enabled, "severity": severity, "recipients": recipients}
    changed = [f for f, v in values.items() if v is not None] + (["schedule"] if schedule is not KEEP else [])
    with conn.transaction():
        row = fetch_one(conn, "SELECT site_id, virtual_meter_id FROM alert_rules WHERE id = %s", (rule_id,))
        if row is None:
            raise NotFound("alert rule")
        if params is not None and row["virtual_meter_id"] is not None:
            check_meter_scope(conn, row["site_id"], None, row["virtual_meter_id"], params.kind)
        if recipients is not None:
            _check_recipients(conn, row["site_id"], recipients)
        conn.execute("""UPDATE alert_rules SET name = COALESCE(%(name)s, name), params = COALESCE(%(params)s, params),
                        kind = COALESCE(%(kind)s, kind), enabled = COALESCE(%(enabled)s, enabled),
                        severity = COALESCE(%(severity)s, severity),
                        schedule = CASE WHEN %(set_schedule)s THEN %(schedule)s ELSE schedule END,
                        recipient_user_ids = COALESCE(%(users)s, recipient_user_ids),
                        recipient_emails = COALESCE(%(emails)s, recipient_emails),
                        webhook_ids = CASE WHEN %(set_recipients)s THEN %(webhooks)s ELSE webhook_ids END,
                        updated_at = now() WHERE id = %(id)s""",
                     {"name": name, "params": _dump(params) if params else None,
                      "kind": params.kind if params else None, "enabled": enabled, "severity": severity,
                      "set_schedule": schedule is not KEEP,
                      "schedule": None if schedule is KEEP else _schedule(schedule),
                      "users": sorted(set(recipients.user_ids)) if recipients else None,
                      "emails": recipients.emails if recipients else None, "set_recipients": recipients is not None,
                      "webhooks": recipients.webhook_ids if recipients else None, "id": rule_id})
        audit.record(conn, actor, "update", "alert_rule", rule_id, fields=changed)


def episodes_of(conn: Conn, p: Principal, rule_id: int, *, limit: int = 200) -> list[Row]:
    """A rule's history: its episodes, newest first."""
    where, params = scope(p)
    return fetch_all(conn, sql.SQL("""SELECT {episode_columns}, s.name AS site_name, s.timezone FROM {episode_from}
                               WHERE r.id = %(rule)s AND {where}
                               ORDER BY e.started_at DESC, e.id DESC LIMIT %(limit)s""").format(
                                   episode_columns=sql.SQL(EPISODE_COLUMNS), episode_from=sql.SQL(_EPISODE_FROM),
                                   where=where), {**params, "rule": rule_id, "limit": limit})


def delete_rule(conn: Conn, rule_id: int, *, actor: Principal | None = None) -> None:
    """Delete a rule with its episodes (their history goes too)."""
    with conn.transaction():
        conn.execute("DELETE FROM alert_rules WHERE id = %s", (rule_id,))
        audit.record(conn, actor, "delete", "alert_rule", rule_id)


# -- notification centre ------------------------------------------------------------------------
_STATES = {"open": "e.acknowledged_at IS NULL AND e.resolved_at IS NULL",
           "acknowledged": "e.acknowledged_at IS NOT NULL AND e.resolved_at IS NULL",
           "resolved": "e.resolved_at IS NOT NULL", "active": "e.resolved_at IS NULL", "all": "true"}


def alerts(conn: Conn, p: Principal, *, state: State = "active", site_id: int | None = None,
           since: datetime | None = None, limit: int = 100, offset: int = 0) -> list[Row]:
    where, params = scope(p)
    extra = " AND r.site_id = %(site)s" if site_id is not None else ""
    extra += " AND e.started_at >= %(since)s" if since is not None else ""
    return fetch_all(conn, sql.SQL("""SELECT {episode_columns}, s.name AS site_name, s.timezone FROM {episode_from}
                               WHERE {where} AND {states_state}{extra}
                               ORDER BY e.started_at DESC, e.id DESC LIMIT %(limit)s OFFSET %(offset)s""").format(
                                   episode_columns=sql.SQL(EPISODE_COLUMNS), episode_from=sql.SQL(_EPISODE_FROM),
                                   where=where, states_state=sql.SQL(_STATES[state]), extra=sql.SQL(extra)),
                     {**params, "site": site_id, "since": since, "limit": limit, "offset": offset})


def alert(conn: Conn, p: Principal, episode_id: int) -> Row | None:
    where, params = scope(p)
    return fetch_one(conn, sql.SQL("""SELECT {episode_columns}, s.name AS site_name, e.acknowledged_by, e.resolved_by
                               FROM {episode_from} WHERE e.id = %(id)s AND {where}""").format(
                                   episode_columns=sql.SQL(EPISODE_COLUMNS), episode_from=sql.SQL(_EPISODE_FROM),
                                   where=where), {**params, "id": episode_id})


def acknowledge(conn: Conn, episode_id: int, user_id: int) -> None:
    conn.execute("""UPDATE alert_episodes SET acknowledged_at = now(), acknowledged_by = %s
                    WHERE id = %s AND acknowledged_at IS NULL""", (user_id or None, episode_id))


def resolve(conn: Conn, episode_id: int, user_id: int) -> None:
    conn.execute("""UPDATE alert_episodes SET resolved_at = now(), resolved_by = %s,
                    acknowledged_at = COALESCE(acknowledged_at, now()),
                    acknowledged_by = COALESCE(acknowledged_by, %s)
                    WHERE id = %s AND resolved_at IS NULL""", (user_id or None, user_id or None, episode_id))


def open_counts(conn: Conn, p: Principal) -> dict[int, int]:
    """Unresolved episodes per site, for the portfolio's flags."""
    where, params = scope(p)
    rows = fetch_all(conn, sql.SQL("""SELECT r.site_id, count(*) AS n FROM {episode_from}
                               WHERE {where} AND e.resolved_at IS NULL GROUP BY r.site_id""").format(
                                   episode_from=sql.SQL(_EPISODE_FROM), where=where), params)
    return {r["site_id"]: r["n"] for r in rows}


# -- webhooks ---------------------------------------------------------------------------------
def create_webhook(conn: Conn, customer_id: int, url: str, *, actor: Principal | None = None,
                   allow_private: bool = False) -> tuple[int, str]:
    """Register a webhook; returns its id and its signing secret (shown once).

    The URL must be a safe destination (`wattline.outbound`); it is checked again, after
    DNS, at every delivery."""
    parse_destination(url, allow_private=allow_private)
    secret = new_secret()
    with conn.transaction():
        row = fetch_one(conn, "INSERT INTO webhooks (customer_id, url, secret) VALUES (%s, %s, %s) RETURNING id",
                        (customer_id, url, secret))
        assert row is not None
        audit.record(conn, actor, "create", "webhook", row["id"])
    return int(row["id"]), secret


def resume_webhook(conn: Conn, webhook_id: int, *, actor: Principal | None = None) -> None:
    """Lift a suspension: deliveries are attempted again from now on."""
    with conn.transaction():
        conn.execute("""UPDATE webhooks SET suspended_at = NULL, suspended_reason = NULL, deliveries_given_up = 0
                        WHERE id = %s""", (webhook_id,))
        audit.record(conn, actor, "resume", "webhook", webhook_id)


def delete_webhook(conn: Conn, webhook_id: int, *, actor: Principal | None = None) -> None:
    """Delete a webhook and its delivery history."""
    with conn.transaction():
        conn.execute("DELETE FROM webhooks WHERE id = %s", (webhook_id,))
        audit.record(conn, actor, "delete", "webhook", webhook_id)


def webhooks(conn: Conn, p: Principal, customer_id: int) -> list[Row]:
    where, params = scope(p, sites=None)
    return fetch_all(conn, sql.SQL("""SELECT w.id, w.customer_id, w.url, w.enabled, w.created_at, w.last_error,
                                      w.failing_since, w.suspended_at, w.suspended_reason FROM webhooks w
                               JOIN customers c ON c.id = w.customer_id WHERE w.customer_id = %(cust)s AND {where}
                               ORDER BY w.id""").format(where=where), {**params, "cust": customer_id})


def webhook(conn: Conn, p: Principal, webhook_id: int) -> Row | None:
    where, params = scope(p, sites=None)
    return fetch_one(conn, sql.SQL("""SELECT w.id, w.customer_id, w.url, w.enabled, w.created_at, w.last_error,
                                      w.failing_since, w.suspended_at, w.suspended_reason FROM webhooks w
                               JOIN customers c ON c.id = w.customer_id WHERE w.id = %(id)s AND {where}""").format(
                                   where=where),
                     {**params, "id": webhook_id})


def deliveries(conn: Conn, webhook_id: int, limit: int = 100) -> list[Row]:
    return fetch_all(conn, """SELECT id, episode_id, event, attempts, next_attempt_at, delivered_at, failed_at,
                                     last_error, created_at
                              FROM webhook_deliveries WHERE webhook_id = %s ORDER BY id DESC LIMIT %s""",
                     (webhook_id, limit))
