"""Findings → episodes. An episode opens when a condition starts and clears when it ends;
one condition gives one episode however often it is evaluated. Opening and clearing queue a
webhook delivery per enabled webhook of the customer, in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from alerts.evaluate import Evaluation, Rule
from wattline.db import fetch_all, fetch_one


@dataclass
class Changes:
    raised: list[int]
    cleared: list[int]


def ongoing(conn: psycopg.Connection[Any], rule_id: int) -> dict[str, tuple[int, datetime]]:
    rows = fetch_all(conn, "SELECT id, subject, started_at FROM alert_episodes WHERE rule_id = %s "
                           "AND cleared_at IS NULL", (rule_id,))
    return {r["subject"]: (r["id"], r["started_at"]) for r in rows}


def apply(conn: psycopg.Connection[Any], rule: Rule, evaluation: Evaluation) -> Changes:
    """Open and clear episodes for one evaluation, and move the rule's cursor. Idempotent:
    re-applying the same evaluation (after a crash before commit, say) changes nothing."""
    current = ongoing(conn, rule.id)
    changes = Changes([], [])
    still: set[str] = set()
    for f in sorted(evaluation.findings, key=lambda f: f.start):
        if f.subject in current:
            episode_id, started = current[f.subject]
            if f.end is None:
                still.add(f.subject)
            elif f.end > started:
                _clear(conn, episode_id, f.end)
                changes.cleared.append(episode_id)
                del current[f.subject]
            continue
        if not rule.armed_at(f.start):
            continue  # began outside the rule's schedule: not an episode
        row = fetch_one(conn, """
            INSERT INTO alert_episodes (rule_id, subject, severity, message, detail, started_at, cleared_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (rule_id, subject, started_at) DO NOTHING RETURNING id""",
                        (rule.id, f.subject, rule.severity, f.message, Jsonb(f.detail), f.start, f.end))
        if row is None:
            continue  # seen before: this run was already an episode
        changes.raised.append(row["id"])
        if f.end is None:
            current[f.subject] = (row["id"], f.start)
            still.add(f.subject)
        else:
            changes.cleared.append(row["id"])
    for subject, (episode_id, started) in current.items():
        if subject in still:
            continue
        at = evaluation.clears.get(subject) or evaluation.window_start or evaluation.evaluated_to
        _clear(conn, episode_id, max(at, started))
        changes.cleared.append(episode_id)
    conn.execute("UPDATE alert_rules SET evaluated_to = %s WHERE id = %s", (evaluation.evaluated_to, rule.id))
    for event, ids in (("raised", changes.raised), ("cleared", changes.cleared)):
        for episode_id in ids:
            enqueue(conn, episode_id, event)
    return changes


def _clear(conn: psycopg.Connection[Any], episode_id: int, at: datetime) -> None:
    conn.execute("UPDATE alert_episodes SET cleared_at = %s WHERE id = %s AND cleared_at IS NULL", (at, episode_id))


EPISODE_COLUMNS = """e.id, e.rule_id, r.name AS rule_name, r.kind, r.site_id, r.node_id, e.subject, e.severity,
    e.message, e.detail, e.started_at, e.cleared_at, e.acknowledged_at, e.resolved_at, e.created_at,
    CASE WHEN e.resolved_at IS NOT NULL THEN 'resolved' WHEN e.acknowledged_at IS NOT NULL THEN 'acknowledged'
         ELSE 'open' END AS state"""


def payload(conn: psycopg.Connection[Any], episode_id: int, event: str) -> dict[str, Any]:
    row = fetch_one(conn, sql.SQL("""SELECT {episode_columns}, s.name AS site_name, s.customer_id
                              FROM alert_episodes e JOIN alert_rules r ON r.id = e.rule_id
                              JOIN sites s ON s.id = r.site_id WHERE e.id = %s""").format(
                                  episode_columns=sql.SQL(EPISODE_COLUMNS)), (episode_id,))
    assert row is not None
    # Round-trip through JSON so that datetimes become ISO strings in the stored payload.
    body: dict[str, Any] = orjson.loads(orjson.dumps({"event": event, "alert": row}))
    return body


def enqueue(conn: psycopg.Connection[Any], episode_id: int, event: str) -> int:
    """The event's webhook deliveries and its mail event, in the caller's transaction;
    returns how many webhook deliveries it queued."""
    conn.execute("INSERT INTO alert_mail_events (episode_id, event) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                 (episode_id, event))
    body = payload(conn, episode_id, event)
    cur = conn.execute("""
        INSERT INTO webhook_deliveries (webhook_id, episode_id, event, payload)
        SELECT w.id, %s, %s, %s FROM webhooks w JOIN alert_episodes e ON e.id = %s
        JOIN alert_rules r ON r.id = e.rule_id
        WHERE w.customer_id = %s AND w.enabled AND (r.webhook_ids IS NULL OR w.id = ANY(r.webhook_ids))
        ON CONFLICT DO NOTHING""", (episode_id, event, Jsonb(body), episode_id, body["alert"]["customer_id"]))
    return cur.rowcount
