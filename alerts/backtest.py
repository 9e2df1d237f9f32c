"""A backtest: what a rule would have raised over the last four weeks, before it is saved.

The rule's own evaluator runs once over the whole window, on the same rollups the scheduler
reads, with nothing ongoing and nothing written: the findings are the episodes it would
have opened, with when they cleared. Rules about the present (a sensor or bridge silent
now, this month's budget) can only say what holds now; the answer says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from alerts.evaluate import Clock, Finding, Rule, evaluate, meter_scope
from alerts.rules import RuleParams, Schedule, Severity
from alerts.store import check_meter_scope
from wattline import queries, virtual_meters
from wattline.db import fetch_one
from wattline.errors import Forbidden, NotFound
from wattline.principal import Principal

WINDOW = timedelta(days=28)
#: Kinds whose evaluator judges the present only; a backtest of them shows what holds now.
PRESENT_ONLY = ("sensor_offline", "bridge_offline", "budget")


@dataclass(frozen=True)
class Backtest:
    """What the rule would have raised in [start, end)."""

    start: datetime
    end: datetime
    findings: list[Finding]
    present_only: bool

    @property
    def episodes(self) -> int:
        """How many episodes it would have opened."""
        return len(self.findings)


def backtest(conn: psycopg.Connection[Any], p: Principal, site_id: int, node_id: int | None, params: RuleParams,
             *, schedule: Schedule | None = None, severity: Severity = "warning", now: datetime | None = None,
             settle_s: float = 120.0, reporting_interval_s: float = 10.0,
             virtual_meter_id: int | None = None) -> Backtest:
    """Run `params` for the site (or its node, or a virtual meter of its customer) over the
    last four weeks; nothing is stored."""
    site = queries.site(conn, p, site_id)
    if site is None:
        raise NotFound("site")
    if params.kind == "budget" and not p.sees_costs:
        raise Forbidden("installers do not see tariffs or costs")
    root = fetch_one(conn, "SELECT id FROM nodes WHERE site_id = %s AND kind = 'site'", (site_id,))
    if node_id is not None and queries.node(conn, p, node_id) is None:
        raise NotFound("node", field="node_id")
    if virtual_meter_id is not None:
        if virtual_meters.meter(conn, p, virtual_meter_id) is None:
            raise NotFound("virtual meter", field="virtual_meter_id")
        check_meter_scope(conn, site_id, node_id, virtual_meter_id, params.kind)
    scope_node = node_id if node_id is not None else (root["id"] if root else None)
    detail = fetch_one(conn, "SELECT opening_hours, floor_area_m2 FROM sites WHERE id = %s", (site_id,))
    assert detail is not None
    rule = Rule(0, site_id, node_id, "backtest", params, None,
                {"timezone": site["timezone"], "country": site["country"], "opening_hours": detail["opening_hours"],
                 "floor_area_m2": detail["floor_area_m2"], "scope_node": scope_node,
                 "scope_meter": meter_scope(conn, virtual_meter_id)}, severity, schedule)
    clock = Clock(now or datetime.now(UTC), WINDOW, timedelta(seconds=settle_s), reporting_interval_s)
    # Read-only by construction: the evaluators only read; a transaction rolled back makes sure.
    with conn.transaction(force_rollback=True):
        evaluation = evaluate(conn, rule, clock, {})
    start = evaluation.window_start or clock.now - WINDOW
    findings = sorted((f for f in evaluation.findings if rule.armed_at(f.start)), key=lambda f: f.start)
    return Backtest(start, evaluation.evaluated_to, findings, params.kind in PRESENT_ONLY)
