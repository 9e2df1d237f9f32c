"""Evaluate one rule over the data that arrived since it last ran.

Each evaluator reads rollups (or sensor and bridge state) for its window and returns
`Finding`s: spans of data time during which the condition held. Windows overlap the
previous one by the rule's hold time, so a run that straddles two evaluations is seen
whole; the episode store (`alerts.episodes`) turns findings into episodes, once each.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from alerts import detect
from alerts.rules import (
    RULE_PARAMS,
    AfterHours,
    Anomaly,
    BaseLoad,
    BridgeOffline,
    Budget,
    Cycling,
    RuleParams,
    Schedule,
    SensorOffline,
    Severity,
    Threshold,
)
from analytics.costing import node_costs
from analytics.tariffs import load_tariffs
from wattline import raw_readings, virtual_meters
from wattline.db import fetch_all, fetch_one, fetch_tuples
from wattline.domain import Role
from wattline.principal import Principal

Conn = psycopg.Connection[Any]
DAY = 86400.0


@dataclass(frozen=True)
class Finding:
    subject: str
    start: datetime
    end: datetime | None  # None: still holding at the end of the window
    message: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evaluation:
    evaluated_to: datetime
    findings: list[Finding]
    #: when an ongoing episode's condition ended, where the evaluator knows better than
    #: "the start of this window" (a silent sensor's first reading after the silence)
    clears: dict[str, datetime] = field(default_factory=dict)
    window_start: datetime | None = None


@dataclass(frozen=True)
class Rule:
    id: int
    site_id: int
    node_id: int | None
    name: str
    params: RuleParams
    evaluated_to: datetime | None
    site: dict[str, Any]
    severity: Severity = "warning"
    schedule: Schedule | None = None
    #: the customer's webhooks that hear of it; None: every one
    webhook_ids: list[int] | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.site["timezone"])

    def armed_at(self, at: datetime) -> bool:
        """Whether an episode starting at `at` is one the rule's schedule lets open."""
        if self.schedule is None:
            return True
        local = at.astimezone(self.zone)
        return self.schedule.armed(local.weekday(), local.hour * 60 + local.minute)


@dataclass(frozen=True)
class Clock:
    """`now`, how far back a rule's first run looks, and how long the newest minutes are
    left to settle (late packs, the rollup worker's lag) before they are judged."""

    now: datetime
    first_lookback: timedelta = timedelta(days=1)
    settle: timedelta = timedelta(minutes=2)
    reporting_interval_s: float = 10.0


def load_rule(conn: Conn, rule_id: int) -> Rule | None:
    row = fetch_one(conn, """
        SELECT r.id, r.site_id, r.node_id, r.virtual_meter_id, r.name, r.params, r.evaluated_to, r.severity,
               r.schedule, r.webhook_ids,
               s.timezone, s.country, s.opening_hours, s.floor_area_m2,
               COALESCE(r.node_id, (SELECT id FROM nodes WHERE site_id = s.id AND kind = 'site')) AS scope_node
        FROM alert_rules r JOIN sites s ON s.id = r.site_id WHERE r.id = %s""", (rule_id,))
    if row is None:
        return None
    site = {k: row[k] for k in ("timezone", "country", "opening_hours", "floor_area_m2", "scope_node")}
    site["scope_meter"] = meter_scope(conn, row["virtual_meter_id"])
    return Rule(row["id"], row["site_id"], row["node_id"], row["name"], RULE_PARAMS.validate_python(row["params"]),
                row["evaluated_to"], site, row["severity"],
                Schedule.model_validate(row["schedule"]) if row["schedule"] is not None else None, row["webhook_ids"])


def evaluate(conn: Conn, rule: Rule, clock: Clock, ongoing: dict[str, datetime]) -> Evaluation:
    evaluator = EVALUATORS[type(rule.params)]
    return evaluator(conn, rule, clock, ongoing)


# -- helpers ----------------------------------------------------------------------------------
def _floor(t: datetime, step_s: float) -> datetime:
    return datetime.fromtimestamp(t.timestamp() // step_s * step_s, UTC)


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _window(rule: Rule, clock: Clock, step_s: float, overlap_s: float) -> tuple[datetime, datetime]:
    """[start, end) on the step grid: from the last evaluation (less the overlap) to the
    last complete, settled step."""
    end = _floor(clock.now - clock.settle, step_s)
    since = rule.evaluated_to or (clock.now - clock.first_lookback)
    start = _floor(since - timedelta(seconds=overlap_s), step_s)
    return min(start, end), end


def _series(conn: Conn, table: str, column: str, node_id: int, start: datetime, end: datetime,
            step_s: float) -> tuple[np.ndarray, np.ndarray]:
    """A node's rollup column on a full grid from start to end; NaN where there is no row."""
    grid = np.arange(start.timestamp(), end.timestamp(), step_s)
    values = np.full(len(grid), np.nan)
    rows = fetch_tuples(conn, sql.SQL("""SELECT extract(epoch FROM bucket)::float8, {column} FROM {table}
                                  WHERE node_id = %s AND bucket >= %s AND bucket < %s""").format(
                                      column=sql.Identifier(column),
                                      table=sql.Identifier(table)), (node_id, start, end))
    if rows and len(grid):
        at = np.array([r[0] for r in rows])
        idx = ((at - grid[0]) // step_s).astype(np.int64)
        ok = (idx >= 0) & (idx < len(grid))
        values[idx[ok]] = np.array([r[1] for r in rows], dtype=np.float64)[ok]
    return grid, values


def meter_scope(conn: Conn, meter_id: int | None) -> tuple[int, dict[int, int]] | None:
    """A rule's virtual meter as (id, node -> weight), or None for a rule on a node or site."""
    return None if meter_id is None else (meter_id, virtual_meters.expand(conn, meter_id))


def _scope_series(conn: Conn, rule: Rule, table: str, column: str, start: datetime, end: datetime,
                  step_s: float) -> tuple[np.ndarray, np.ndarray]:
    """The rule's node's rollup column, or its virtual meter's: Σ weight × each node's, NaN
    where any node has no row (a part missing is not judged as a drop)."""
    meter = rule.site.get("scope_meter")
    if meter is None:
        return _series(conn, table, column, rule.site["scope_node"], start, end, step_s)
    grid = np.arange(start.timestamp(), end.timestamp(), step_s)
    total = np.zeros(len(grid))
    for node, weight in meter[1].items():
        total += weight * _series(conn, table, column, node, start, end, step_s)[1]
    return grid, total


def _subject(rule: Rule) -> str:
    """What an episode is about: the rule's node (the site's root for a site), or its meter."""
    meter = rule.site.get("scope_meter")
    return f"meter-{meter[0]}" if meter is not None else str(rule.site["scope_node"])


def _local(grid: np.ndarray, zone: ZoneInfo) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(grid, unit="s", utc=True)).tz_convert(zone)


def _findings(runs: list[detect.Run], subject: str, message: Callable[[detect.Run], str],
              detail: Callable[[detect.Run], dict[str, Any]] = lambda _: {}) -> list[Finding]:
    return [Finding(subject, _ts(r.start), None if r.end is None else _ts(r.end), message(r), detail(r))
            for r in runs]


def _local_days(rule: Rule, clock: Clock, extra_days: int) -> tuple[list[datetime], datetime]:
    """Local midnights (as UTC) of complete days from the last evaluation (less one day)
    back `extra_days` more, and the end of the last complete day."""
    zone = rule.zone
    today = (clock.now - clock.settle).astimezone(zone).date()
    since = (rule.evaluated_to or clock.now - clock.first_lookback).astimezone(zone).date() - timedelta(days=1)
    first = since - timedelta(days=extra_days)
    days = [datetime.combine(first + timedelta(days=i), datetime.min.time(), zone).astimezone(UTC)
            for i in range((today - first).days + 1)]
    return days, days[-1]


# -- evaluators -------------------------------------------------------------------------------
def threshold(conn: Conn, rule: Rule, clock: Clock, ongoing: dict[str, datetime]) -> Evaluation:
    p = rule.params
    assert isinstance(p, Threshold)
    start, end = _window(rule, clock, 60.0, p.hold_minutes * 60.0)
    grid, power = _scope_series(conn, rule, "rollups_1m", "mean_power_w", start, end, 60.0)
    local = _local(grid, rule.zone)
    minute_of_day = np.asarray(local.hour * 60 + local.minute)
    lo, hi = (int(h[:2]) * 60 + int(h[3:]) for h in p.hours)
    days = {("mon", "tue", "wed", "thu", "fri", "sat", "sun").index(d) for d in p.days}
    scheduled = np.isin(np.asarray(local.day_of_week), list(days)) & (minute_of_day >= lo) & (minute_of_day < hi)
    over = power > p.above_w if p.above_w is not None else power < (p.below_w or 0.0)
    limit = f"above {p.above_w:g} W" if p.above_w is not None else f"below {p.below_w:g} W"
    found = detect.runs(grid, scheduled & over, power, 60.0, p.hold_minutes * 60.0)
    return Evaluation(end, _findings(found, _subject(rule), lambda r: f"power {limit} for {p.hold_minutes}+ min "
                                     f"(reached {r.peak:,.0f} W)", lambda r: {"peak_w": r.peak}), window_start=start)


def after_hours(conn: Conn, rule: Rule, clock: Clock, ongoing: dict[str, datetime]) -> Evaluation:
    p = rule.params
    assert isinstance(p, AfterHours)
    history = 28 if p.baseline_kwh is None else 0
    days, end = _local_days(rule, clock, history)
    if len(days) < 2:
        return Evaluation(end, [])
    grid, energy = _scope_series(conn, rule, "rollups_1h", "energy_wh", days[0], end, 3600.0)
    local = _local(grid, rule.zone)
    hours: dict[str, list[str]] = rule.site["opening_hours"] or {}
    names = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    minute = np.asarray(local.hour * 60 + local.minute)
    opened = np.zeros(len(grid), dtype=bool)
    for i, name in enumerate(names):
        if name in hours:
            lo, hi = (int(h[:2]) * 60 + int(h[3:]) for h in hours[name])
            opened |= (np.asarray(local.day_of_week) == i) & (minute >= lo) & (minute < hi)
    day_index = np.searchsorted(np.array([d.timestamp() for d in days]), grid, side="right") - 1
    n_days = len(days) - 1
    closed_known = ~opened & ~np.isnan(energy)
    per_day = np.bincount(day_index, weights=np.where(closed_known, energy, 0.0), minlength=n_days)[:n_days] / 1e3
    closed_hours = np.bincount(day_index, weights=closed_known.astype(float), minlength=n_days)[:n_days]
    per_day = np.where(closed_hours > 0, per_day, np.nan)
    stamps = np.array([d.timestamp() for d in days[:-1]])
    if p.baseline_kwh is not None:
        over = per_day > p.baseline_kwh
    else:
        # Per closed hour, so that a Sunday (closed all day) compares with a weekday night.
        rate = per_day / np.where(closed_hours > 0, closed_hours, np.nan)
        usual = np.array([np.nanmedian(rate[max(0, i - 28):i]) if np.sum(~np.isnan(rate[max(0, i - 28):i])) >= 7
                          else np.nan for i in range(n_days)])
        over = rate > usual * p.factor
    over &= per_day >= p.min_kwh
    judged = slice(history, None)  # the look-back days only feed the baseline
    found = detect.runs(stamps[judged], over[judged], per_day[judged], DAY, DAY * 0.9)
    return Evaluation(end, _findings(found, _subject(rule), lambda r: f"{r.peak:,.1f} kWh used outside opening hours "
                                     "(above baseline)", lambda r: {"kwh": r.peak}),
                      window_start=days[history] if history < len(days) else end)


def sensor_offline(conn: Conn, rule: Rule, clock: Clock, ongoing: dict[str, datetime]) -> Evaluation:
    p = rule.params
    assert isinstance(p, SensorOffline)
    silence = timedelta(seconds=p.intervals * clock.reporting_interval_s)
    rows = fetch_all(conn, """
        WITH RECURSIVE sub AS (
            SELECT id FROM nodes WHERE id = %(node)s
            UNION ALL SELECT n.id FROM nodes n JOIN sub ON n.parent_id = sub.id)
        SELECT se.serial, se.id, last.ts AS last_seen
        FROM sensors se JOIN sub ON sub.id = se.node_id
        LEFT JOIN LATERAL wattline_last_reading(se.id) last ON true
        """, {"node": rule.site["scope_node"]})
    findings: list[Finding] = []
    clears: dict[str, datetime] = {}
    for r in rows:
        last: datetime | None = r["last_seen"]
        if last is None:
            continue  # never heard from: a commissioning matter, not an outage
        if clock.now - last > silence:
            findings.append(Finding(r["serial"], last, None, f"sensor {r['serial']} silent since "
                                    f"{last.isoformat(timespec='seconds')}", {"last_seen": last.isoformat()}))
        elif r["serial"] in ongoing:
            back = raw_readings.first_and_last(conn, [r["id"]], ongoing[r["serial"]] + timedelta(microseconds=1))
            clears[r["serial"]] = back[0] if back else clock.now
    return Evaluation(clock.now, findings, clears, window_start=clock.now)


def bridge_offline(conn: Conn, rule: Rule, clock: Clock, ongoing: dict[str, datetime]) -> Evaluation:
    p = rule.params
    assert isinstance(p, BridgeOffline)
    rows = fetch_all(conn, """SELECT b.serial, st.online, st.changed_at FROM bridges b
                              JOIN bridge_status st ON st.bridge_id = b.id WHERE b.site_id = %s""", (rule.site_id,))
    findings: list[Finding] = []
    clears: dict[str, datetime] = {}
    for r in rows:
        if not r["online"] and clock.now - r["changed_at"] >= timedelta(minutes=p.hold_minutes):
            findings.append(Finding(r["serial"], r["changed_at"], None, f"bridge {r['serial']} offline"))
        elif r["online"] and r["serial"] in ongoing:
            clears[r["serial"]] = max(r["changed_at"], ongoing[r["serial"]])
    return Evaluation(clock.now, findings, clears, window_start=clock.now)


def anomaly(conn: Conn, rule: Rule, clock: Clock, ongoing: dict[str, datetime]) -> Evaluation:
    p = rule.params
    assert isinstance(p, Anomaly)
    start, end = _window(rule, clock, 3600.0, p.hold_hours * 3600.0)
    week = 7 * DAY
    grid, energy = _scope_series(conn, rule, "rollups_1h", "energy_wh", start - timedelta(seconds=p.weeks * week), end,
                           3600.0)
    per_week = int(week // 3600)
    n = len(grid) - p.weeks * per_week
    if n <= 0:
        return Evaluation(end, [], window_start=start)
    values = energy[-n:] / 1000.0
    history = np.stack([energy[p.weeks * per_week - k * per_week: len(grid) - k * per_week] / 1000.0
                        for k in range(1, p.weeks + 1)], axis=1)
    baseline, score = detect.robust_scores(values, history)
    deviation = values - baseline
    big = np.abs(deviation) >= p.min_deviation_kwh
    if p.direction == "high":
        far = score > p.sensitivity
    elif p.direction == "low":
        far = score < -p.sensitivity
    else:
        far = np.abs(score) > p.sensitivity
    stamps = grid[-n:]
    found = detect.runs(stamps, far & big, values, 3600.0, p.hold_hours * 3600.0)

    def message(r: detect.Run) -> str:
        i = int(np.searchsorted(stamps, r.start))
        return (f"{r.peak:,.2f} kWh in an hour against a usual {baseline[i]:,.2f} kWh "
                f"(robust z {score[i]:+.1f})")
    return Evaluation(end, _findings(found, _subject(rule), message, lambda r: {"kwh": r.peak}), window_start=start)


def cycling(conn: Conn, rule: Rule, clock: Clock, ongoing: dict[str, datetime]) -> Evaluation:
    p = rule.params
    assert isinstance(p, Cycling)
    start, end = _window(rule, clock, 3600.0, p.hold_hours * 3600.0)
    grid, power = _scope_series(conn, rule, "rollups_1m", "mean_power_w", start, end, 60.0)
    known = power[~np.isnan(power)]
    if len(known) < 2:
        return Evaluation(end, [], window_start=start)
    on_w = p.on_w if p.on_w is not None else 0.5 * float(np.percentile(known, 95))
    hours, starts = detect.starts_per_hour(grid, power, on_w)
    found = detect.runs(hours, starts > p.max_starts_per_hour, starts, 3600.0, p.hold_hours * 3600.0)
    return Evaluation(end, _findings(found, _subject(rule), lambda r: f"{r.peak:.0f} starts an hour (limit "
                                     f"{p.max_starts_per_hour:g}): short-cycling", lambda r: {"starts": r.peak}),
                      window_start=start)


def base_load(conn: Conn, rule: Rule, clock: Clock, ongoing: dict[str, datetime]) -> Evaluation:
    p = rule.params
    assert isinstance(p, BaseLoad)
    days, end = _local_days(rule, clock, p.recent_days + p.baseline_days)
    if len(days) < 2:
        return Evaluation(end, [])
    grid, power = _scope_series(conn, rule, "rollups_1h", "mean_power_w", days[0], end, 3600.0)
    day_index = np.searchsorted(np.array([d.timestamp() for d in days]), grid, side="right") - 1
    base = np.full(len(days) - 1, np.nan)
    for i in range(len(days) - 1):
        day = power[day_index == i]
        if np.sum(~np.isnan(day)) >= 12:  # half a day known, or the minimum means little
            base[i] = np.nanmin(day)
    first = p.recent_days + p.baseline_days - 1
    stamps = np.array([d.timestamp() for d in days[:-1]])
    now_w, before_w = np.full(len(base), np.nan), np.full(len(base), np.nan)
    for i in range(first, len(base)):
        recent = base[i - p.recent_days + 1: i + 1]
        before = base[i - p.recent_days - p.baseline_days + 1: i - p.recent_days + 1]
        if np.sum(~np.isnan(recent)) >= p.recent_days // 2 + 1 and np.sum(~np.isnan(before)) >= 3:
            now_w[i], before_w[i] = np.nanmedian(recent), np.nanmedian(before)
    # Relative to the old base load, and by at least min_rise_w: a base of zero (a motor that
    # used to switch off) rising to anything real counts.
    rising = (now_w - before_w) >= np.maximum(before_w * p.rise_pct / 100.0, p.min_rise_w)
    found = detect.runs(stamps[first:], rising[first:], now_w[first:], DAY, DAY * 0.9)

    def message(r: detect.Run) -> str:
        i = int(np.searchsorted(stamps, r.start))
        return f"base load {r.peak:,.0f} W, up from {before_w[i]:,.0f} W in the weeks before"
    return Evaluation(end, _findings(found, _subject(rule), message, lambda r: {"base_w": r.peak}),
                      window_start=days[min(first, len(days) - 1)])


def budget(conn: Conn, rule: Rule, clock: Clock, ongoing: dict[str, datetime]) -> Evaluation:
    """Cost so far this local month, plus the cost rate of the last week with data carried
    to the month's end."""
    p = rule.params
    assert isinstance(p, Budget)
    zone = rule.zone
    local_now = clock.now.astimezone(zone)
    month_start = local_now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    month_end = (month_start + timedelta(days=calendar.monthrange(month_start.year, month_start.month)[1])
                 ).replace(hour=0)
    month_start_utc, month_end_utc = month_start.astimezone(UTC), month_end.astimezone(UTC)
    node = rule.site["scope_node"]
    versions = load_tariffs(conn, rule.site_id)
    subject = f"{month_start:%Y-%m}"
    if not versions:
        return Evaluation(clock.now, [], window_start=clock.now)
    site = {"timezone": rule.site["timezone"], "country": rule.site["country"]}
    # The scheduler reads as the site's own customer: the query layer is tenant-scoped.
    system = Principal(0, Role.CUSTOMER_ADMIN, None, _customer_of(conn, rule.site_id), frozenset({"read"}))
    costs = {c.node_id: c for c in node_costs(conn, system, rule.site_id, month_start_utc, clock.now, versions, site)}
    so_far = costs[node].energy_cost_minor if node in costs else Decimal(0)
    first = fetch_one(conn, "SELECT min(bucket) AS b FROM rollups_1h WHERE node_id = %s AND bucket >= %s",
                      (node, month_start_utc))
    since = max(month_start_utc, clock.now - timedelta(days=7), (first or {}).get("b") or clock.now)
    recent = {c.node_id: c for c in node_costs(conn, system, rule.site_id, since, clock.now, versions, site)}
    span = (clock.now - since).total_seconds()
    rate = (recent[node].energy_cost_minor if node in recent else Decimal(0)) / Decimal(span) if span > 0 else 0
    projected_minor = so_far + Decimal(rate) * Decimal((month_end_utc - clock.now).total_seconds())
    projected = (projected_minor / 100).quantize(Decimal("0.01"))
    detail = {"projected": str(projected), "so_far": str((so_far / 100).quantize(Decimal("0.01"))),
              "cap": str(p.cap), "month": subject}
    if projected > p.cap:
        start = ongoing.get(subject, clock.now)
        return Evaluation(clock.now, [Finding(subject, start, None, f"{subject} projected to cost {projected} "
                                              f"against a cap of {p.cap}", detail)], window_start=clock.now)
    return Evaluation(clock.now, [], window_start=clock.now)


def _customer_of(conn: Conn, site_id: int) -> int:
    row = fetch_one(conn, "SELECT customer_id FROM sites WHERE id = %s", (site_id,))
    assert row is not None
    return int(row["customer_id"])


EVALUATORS: dict[type, Callable[[Conn, Rule, Clock, dict[str, datetime]], Evaluation]] = {
    Threshold: threshold, AfterHours: after_hours, SensorOffline: sensor_offline, BridgeOffline: bridge_offline,
    Anomaly: anomaly, Cycling: cycling, BaseLoad: base_load, Budget: budget,
}
