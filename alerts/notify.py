"""Alert mail: each episode that opens or clears reaches the rule's recipients as each of them
chose (`wattline.notifications`), through the mail outbox.

- A person who wants alerts as they happen gets one message per event; in their quiet hours
  it waits in the outbox until the quiet hours end.
- A person who chose a digest gets one message a day, at their hour, listing what happened.
- A plain address on the rule gets each event as it happens.
- An address that would get more than STORM_LIMIT alert messages within an hour gets the
  rest of that hour as one summary instead.

Events come from `alert_mail_events`, written in the transaction that opened or cleared the
episode; each is processed once, in a transaction of its own, and a failure stays with it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import structlog

from wattline import mail, notifications
from wattline.db import fetch_all, fetch_one
from wattline.settings import Settings

log = structlog.get_logger("wattline.alerts.mail")
STORM_LIMIT = 50
STORM_WINDOW = timedelta(hours=1)
BATCH = 500


@dataclass
class NotifyReport:
    """What one pass of alert mail did."""

    events: int = 0
    queued: int = 0
    held: int = 0
    summaries: int = 0
    digests: int = 0
    failed: int = 0


def _where(conn: psycopg.Connection[Any], rule: dict[str, Any]) -> str:
    """Site › panel › circuit: the path from the site to the rule's node; or its virtual meter."""
    if rule["meter_name"] is not None:
        return f"virtual meter {rule['meter_name']} ({rule['site_name']}'s organisation)"
    if rule["node_id"] is None:
        return str(rule["site_name"])
    rows = fetch_all(conn, """WITH RECURSIVE up AS (
                                  SELECT id, parent_id, name, kind, 0 AS depth FROM nodes WHERE id = %s
                                  UNION ALL
                                  SELECT n.id, n.parent_id, n.name, n.kind, up.depth + 1 FROM nodes n
                                  JOIN up ON n.id = up.parent_id)
                              SELECT name, kind FROM up ORDER BY depth DESC""", (rule["node_id"],))
    names = [r["name"] for r in rows if r["kind"] != "site"]
    return " › ".join([rule["site_name"], *names])


def _how_much(detail: dict[str, Any]) -> str:
    """The episode's figures, with their units read off their names."""
    parts = []
    for key, value in detail.items():
        if isinstance(value, int | float):
            unit = " W" if key.endswith("_w") else " kWh" if key.endswith("_kwh") else ""
            parts.append(f"{key.removesuffix('_w').removesuffix('_kwh').replace('_', ' ')} {value:,.0f}{unit}")
        elif isinstance(value, str) and value:
            parts.append(f"{key.replace('_', ' ')} {value}")
    return "; ".join(parts)


def _episode(conn: psycopg.Connection[Any], episode_id: int) -> dict[str, Any] | None:
    return fetch_one(conn, """SELECT e.id, e.subject, e.message, e.detail, e.started_at, e.cleared_at, e.severity,
                                     r.id AS rule_id, r.name AS rule_name, r.node_id, r.site_id,
                                     r.recipient_user_ids, r.recipient_emails, s.name AS site_name, s.timezone,
                                     m.name AS meter_name
                              FROM alert_episodes e JOIN alert_rules r ON r.id = e.rule_id
                              JOIN sites s ON s.id = r.site_id
                              LEFT JOIN virtual_meters m ON m.id = r.virtual_meter_id WHERE e.id = %s""", (episode_id,))


def _local(t: datetime | None, zone: str) -> str:
    return t.astimezone(ZoneInfo(zone)).strftime(f"%Y-%m-%d %H:%M {zone}") if t else ""


def message_for(conn: psycopg.Connection[Any], ep: dict[str, Any], event: str, link_base: str) -> tuple[str, str, str]:
    """(subject, text, html) of one alert event: what, where, since when, how much, the chart."""
    where = _where(conn, ep)
    link = f"{link_base}/site/{ep['site_id']}"
    tag = "cleared" if event == "cleared" else ep["severity"]
    subject = f"[{tag}] {ep['rule_name']}: {ep['message']}"[:200]
    lines = [f"{ep['rule_name']} ({ep['severity']}){' has cleared' if event == 'cleared' else ''}", "",
             f"What:     {ep['message']}", f"Where:    {where}",
             f"Since:    {_local(ep['started_at'], ep['timezone'])}"]
    if ep["cleared_at"] is not None:
        lines.append(f"Cleared:  {_local(ep['cleared_at'], ep['timezone'])}")
    how_much = _how_much(ep["detail"] or {})
    if how_much:
        lines.append(f"How much: {how_much}")
    lines += ["", f"See the chart: {link}", "", "Wattline"]
    rows = "".join(f"<tr><th align=left>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in (
        ("What", ep["message"]), ("Where", where), ("Since", _local(ep["started_at"], ep["timezone"])),
        ("Cleared", _local(ep["cleared_at"], ep["timezone"])), ("How much", how_much)) if v)
    body = (f"<p><b>{html.escape(ep['rule_name'])}</b> ({html.escape(ep['severity'])})"
            f"{' has cleared' if event == 'cleared' else ''}</p><table>{rows}</table>"
            f"<p><a href=\"{html.escape(link)}\">See the chart</a></p>")
    return subject, "\n".join(lines) + "\n", body


def quiet_until(prefs: dict[str, Any], now: datetime) -> datetime | None:
    """When the person's quiet hours end, if `now` is inside them (an end before the start
    spans midnight); else None."""
    start, end = prefs.get("quiet_start"), prefs.get("quiet_end")
    if start is None or end is None:
        return None
    zone = ZoneInfo(prefs["timezone"])
    local = now.astimezone(zone)
    at = local.time()
    inside = start <= at < end if start < end else (at >= start or at < end)
    if not inside:
        return None
    day = local.date() if at < end else local.date() + timedelta(days=1)
    return datetime.combine(day, end, zone).astimezone(UTC)


def _recent_alert_mail(conn: psycopg.Connection[Any], address: str, now: datetime) -> int:
    row = fetch_one(conn, """SELECT (SELECT count(*) FROM mail_outbox WHERE kind = 'alert' AND lower(to_address) = %(a)s
                                       AND created_at > %(since)s)
                                  + (SELECT count(*) FROM alert_mail_held WHERE reason = 'storm'
                                       AND lower(address) = %(a)s AND created_at > %(since)s) AS n""",
                    {"a": address.lower(), "since": now - STORM_WINDOW})
    return int(row["n"]) if row else 0


def _recipients(conn: psycopg.Connection[Any], ep: dict[str, Any]) -> list[tuple[str, int | None]]:
    people = fetch_all(conn, """SELECT id, email FROM users WHERE id = ANY(%s) AND disabled_at IS NULL
                                AND erased_at IS NULL ORDER BY id""", (ep["recipient_user_ids"],))
    out: list[tuple[str, int | None]] = [(p["email"], p["id"]) for p in people]
    known = {a.lower() for a, _ in out}
    out += [(a, None) for a in ep["recipient_emails"] if a.lower() not in known]
    return out


def _one_event(conn: psycopg.Connection[Any], event: dict[str, Any], link_base: str, now: datetime,
               report: NotifyReport) -> None:
    ep = _episode(conn, event["episode_id"])
    if ep is None:
        return
    subject, text, body = message_for(conn, ep, event["event"], link_base)
    for address, user_id in _recipients(conn, ep):
        prefs = notifications.preferences(conn, user_id) if user_id is not None else None
        if prefs is not None and prefs["alert_email"] == "off":
            continue
        reason = "digest" if prefs is not None and prefs["alert_email"] == "digest" else \
            "storm" if _recent_alert_mail(conn, address, now) >= STORM_LIMIT else None
        if reason is not None:
            conn.execute("""INSERT INTO alert_mail_held (address, user_id, episode_id, event, reason)
                            VALUES (%s, %s, %s, %s, %s)""", (address, user_id, ep["id"], event["event"], reason))
            report.held += 1
            continue
        queued = mail.queue(conn, kind="alert", to=address, user_id=user_id, subject=subject, text=text, html=body,
                            category="alerts", not_before=quiet_until(prefs, now) if prefs else None)
        report.queued += queued is not None


def _held_message(conn: psycopg.Connection[Any], items: list[dict[str, Any]], link_base: str,
                  title: str) -> tuple[str, str, str]:
    lines, rows = [title, ""], []
    for item in items:
        ep = _episode(conn, item["episode_id"])
        if ep is None:
            continue
        state = "cleared" if item["event"] == "cleared" else ep["severity"]
        when = _local(ep["cleared_at"] if item["event"] == "cleared" else ep["started_at"], ep["timezone"])
        where = _where(conn, ep)
        lines.append(f"- [{state}] {when} · {where} · {ep['rule_name']}: {ep['message']}")
        rows.append(f"<li>[{html.escape(state)}] {html.escape(when)} · {html.escape(where)} · "
                    f"<b>{html.escape(ep['rule_name'])}</b>: {html.escape(ep['message'])}</li>")
    lines += ["", f"The Alerts page has them all: {link_base}/alerts", "", "Wattline"]
    body = (f"<p>{html.escape(title)}</p><ul>{''.join(rows)}</ul>"
            f"<p><a href=\"{html.escape(link_base)}/alerts\">Open the Alerts page</a></p>")
    return title, "\n".join(lines) + "\n", body


def send_held(conn: psycopg.Connection[Any], link_base: str, now: datetime, report: NotifyReport) -> None:
    """Storm summaries whose hour is over, and digests whose hour has come (once a local day)."""
    storms = fetch_all(conn, """SELECT lower(address) AS address, min(user_id) AS user_id FROM alert_mail_held
                                WHERE reason = 'storm' AND sent_at IS NULL GROUP BY lower(address)
                                HAVING min(created_at) <= %s""", (now - STORM_WINDOW,))
    for storm in storms:
        with conn.transaction():
            items = fetch_all(conn, """SELECT id, episode_id, event FROM alert_mail_held WHERE reason = 'storm'
                                       AND sent_at IS NULL AND lower(address) = %s ORDER BY id FOR UPDATE""",
                              (storm["address"],))
            title = (f"{len(items)} more alerts within an hour: one summary instead of {len(items)} messages")
            subject, text, body = _held_message(conn, items, link_base, title)
            mail.queue(conn, kind="alert_summary", to=storm["address"], user_id=storm["user_id"], subject=subject,
                       text=text, html=body, category="alerts")
            conn.execute("UPDATE alert_mail_held SET sent_at = now() WHERE id = ANY(%s)", ([i["id"] for i in items],))
            report.summaries += 1
    waiting = fetch_all(conn, """SELECT DISTINCT user_id FROM alert_mail_held WHERE reason = 'digest'
                                 AND sent_at IS NULL AND user_id IS NOT NULL""")
    for row in waiting:
        prefs = notifications.preferences(conn, row["user_id"])
        zone = ZoneInfo(prefs["timezone"])
        local = now.astimezone(zone)
        due = datetime.combine(local.date(), time(prefs["digest_hour"]), zone)
        last = fetch_one(conn, """SELECT max(sent_at) AS at FROM alert_mail_held WHERE reason = 'digest'
                                  AND user_id = %s""", (row["user_id"],))
        if local < due or (last and last["at"] and last["at"].astimezone(zone).date() == local.date()):
            continue
        with conn.transaction():
            items = fetch_all(conn, """SELECT id, episode_id, event, address FROM alert_mail_held
                                       WHERE reason = 'digest' AND sent_at IS NULL AND user_id = %s
                                       ORDER BY id FOR UPDATE""", (row["user_id"],))
            if not items:
                continue
            title = f"Your Wattline alerts digest: {len(items)} event(s) since the last one"
            subject, text, body = _held_message(conn, items, link_base, title)
            mail.queue(conn, kind="alert_digest", to=items[0]["address"], user_id=row["user_id"], subject=subject,
                       text=text, html=body, category="alerts")
            conn.execute("UPDATE alert_mail_held SET sent_at = now() WHERE id = ANY(%s)", ([i["id"] for i in items],))
            report.digests += 1


def process(conn: psycopg.Connection[Any], settings: Settings, now: datetime | None = None) -> NotifyReport:
    """Turn pending episode events into mail, then send what was held back and is due."""
    now = now or datetime.now(UTC)
    report = NotifyReport()
    for _ in range(BATCH):
        event: dict[str, Any] | None = None
        try:
            with conn.transaction():
                event = fetch_one(conn, """SELECT id, episode_id, event FROM alert_mail_events
                                           WHERE processed_at IS NULL ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED""")
                if event is None:
                    break
                _one_event(conn, event, settings.dashboard_url, now, report)
                conn.execute("UPDATE alert_mail_events SET processed_at = now() WHERE id = %s", (event["id"],))
                report.events += 1
        except Exception as exc:  # this event's fault, whatever it raised: marked, the rest go on
            if conn.broken or conn.closed:
                raise
            report.failed += 1
            log.error("alert_mail_failed", error=type(exc).__name__)
            if event is None:
                break
            conn.execute("UPDATE alert_mail_events SET processed_at = now(), last_error = %s WHERE id = %s",
                         (f"{type(exc).__name__}: {exc}"[:500], event["id"]))
    send_held(conn, settings.dashboard_url, now, report)
    return report
