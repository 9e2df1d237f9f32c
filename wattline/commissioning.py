"""What an installer sees on site: bridges, a live check of every sensor, the handover
report, and the site's commissioned mark. Reads are tenant-scoped through
`wattline.queries`; the one write (`mark_commissioned`) carries its audit entry.

The live check flags what looks wrong, each with a sentence an installer can act on:
- **no current**: 0 A in every reading of the last minute (a clamp not closed, a dead
  circuit, a sensor on the wrong conductor);
- **above rating**: the last current above the CT's rating (the wrong CT, or an overload);
- **phase imbalance**: a phase far from its siblings on the same circuit (a clamp on the
  wrong phase or reversed);
- **weak signal**: the last RSSI below WEAK_RSSI_DBW (move the bridge or add one);
- **silent**: nothing for three reporting intervals.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg

from wattline import audit, queries, raw_readings
from wattline.assignments import node_history
from wattline.db import fetch_all, fetch_one
from wattline.domain import sensor_state
from wattline.electrical import electrical
from wattline.errors import NotFound
from wattline.principal import Principal

Conn = psycopg.Connection[Any]
#: Below this the radio link drops packs (the simulator's sensors sit around -60 to -80).
WEAK_RSSI_DBW = -85.0
#: A phase this far from the median of its siblings (relative, and at least IMBALANCE_MIN_A) is flagged.
IMBALANCE_RATIO = 0.5
IMBALANCE_MIN_A = 2.0


@dataclass
class SensorCheck:
    """One sensor now: where it is, what it reads, and what looks wrong."""

    serial: str
    bridge_id: int
    node_id: int | None
    node_name: str | None
    phase: int | None
    ct_rating_a: float | None
    state: str  # discovered, live, silent, implausible, never_seen
    last_seen_at: datetime | None
    current_a: float | None
    power_w: float | None
    rssi_dbw: float | None
    flags: list[str] = field(default_factory=list)


@dataclass
class BridgeSummary:
    """A bridge as the installer picks it: online, last heard, signal and sensors."""

    id: int
    serial: str
    name: str
    online: bool | None
    last_seen_at: datetime | None
    weakest_rssi_dbw: float | None
    sensors: int
    weak_signal: bool


def bridges(conn: Conn, p: Principal, site_id: int) -> list[BridgeSummary]:
    """The site's bridges with their status, last reading, weakest sensor RSSI and sensor count."""
    return _summaries(conn, p, site_id, queries.sensors(conn, p, site_id))


def site_view(conn: Conn, p: Principal, site_id: int, *, interval_s: float, bridge_id: int | None
              ) -> tuple[list[BridgeSummary], list[SensorCheck]]:
    """The commissioning page's refresh: the bridges, and one bridge's sensors checked now, from
    one read of the site's sensors (their last readings are the costly part)."""
    sensors = queries.sensors(conn, p, site_id)
    mine = [r for r in sensors if bridge_id is None or r["bridge_id"] == bridge_id]
    return _summaries(conn, p, site_id, sensors), _checks(conn, mine, interval_s, datetime.now(UTC))


def _summaries(conn: Conn, p: Principal, site_id: int, sensors: list[dict[str, Any]]) -> list[BridgeSummary]:
    out = []
    for b in queries.bridges(conn, p, site_id):
        mine = [r for r in sensors if r["bridge_id"] == b["id"]]
        seen = max((r["last_seen_at"] for r in mine if r["last_seen_at"] is not None), default=None)
        rssi = min((r["last_rssi_dbw"] for r in mine if r["last_rssi_dbw"] is not None), default=None)
        out.append(BridgeSummary(b["id"], b["serial"], b["name"], b["online"], seen, rssi, int(b["sensors"]),
                                 rssi is not None and rssi < WEAK_RSSI_DBW))
    return out


def live_check(conn: Conn, p: Principal, site_id: int, *, interval_s: float, bridge_id: int | None = None,
               now: datetime | None = None) -> list[SensorCheck]:
    """Every sensor of the site (or of one bridge), checked now."""
    rows = queries.sensors(conn, p, site_id, bridge_id=bridge_id)
    return _checks(conn, rows, interval_s, now or datetime.now(UTC))


def _last_minute(conn: Conn, sensor_ids: list[int], now: datetime) -> tuple[set[int], dict[int, float]]:
    """From the readings since a minute before `now`: the sensors with at least 3, all of
    them 0 A; and each sensor's newest power as a meter sent it (NaN: none sent)."""
    raw = raw_readings.read(conn, sensor_ids, now.timestamp() - 60 + 1e-6, float("inf"))
    ids, counts = np.unique(raw.sensor_id, return_counts=True)
    nonzero = set(np.unique(raw.sensor_id[raw.current_a != 0]).tolist())
    quiet = {int(s) for s, c in zip(ids.tolist(), counts.tolist(), strict=True) if c >= 3 and s not in nonzero}
    newest = np.r_[raw.sensor_id[1:] != raw.sensor_id[:-1], True] if len(raw) else np.zeros(0, dtype=bool)
    return quiet, dict(zip(raw.sensor_id[newest].tolist(), raw.power_w[newest].tolist(), strict=True))


def _checks(conn: Conn, rows: list[dict[str, Any]], interval_s: float, now: datetime) -> list[SensorCheck]:
    params = electrical(conn, sorted({r["node_id"] for r in rows if r["node_id"] is not None}))
    ids = [r["id"] for r in rows]
    quiet, metered = _last_minute(conn, ids, now)
    checks = []
    for r in rows:
        state, detail = sensor_state(r["last_seen_at"], r["last_current_a"], r["ct_rating_a"], interval_s, now)
        flags = [] if state in ("live", "never_seen") else [detail]
        current = r["last_current_a"]
        power = None
        if r["reports_power"]:  # a meter's own power, signed; the sign says which way it flows
            power = metered.get(r["id"], math.nan)
            if math.isnan(power):
                power = None
                if r["id"] in metered:
                    flags.append("declared a meter, but its last reading has no power: it counts as a clamp until "
                                 "it sends SenML power (W)")
        elif r["node_id"] is not None and current is not None:
            e = params[r["node_id"]]
            power = current * e.conductor_voltage_v * e.effective_power_factor
        if r["id"] in quiet:
            flags.append("no current for a minute: is the clamp closed, on a live conductor?")
        if current is not None and r["ct_rating_a"] is not None and current > r["ct_rating_a"]:
            flags.append(f"{current:.1f} A is above the {r['ct_rating_a']:g} A rating: check the CT")
        if r["last_rssi_dbw"] is not None and r["last_rssi_dbw"] < WEAK_RSSI_DBW:
            flags.append(f"weak signal ({r['last_rssi_dbw']:.0f} dBW): move the bridge closer")
        checks.append(SensorCheck(r["serial"], r["bridge_id"], r["node_id"], r["node_name"], r["phase"],
                                  r["ct_rating_a"], "discovered" if r["node_id"] is None else state,
                                  r["last_seen_at"], current, power, r["last_rssi_dbw"], flags))
    _flag_imbalance(checks)
    return checks


def _flag_imbalance(checks: list[SensorCheck]) -> None:
    by_node: dict[int, list[SensorCheck]] = {}
    for c in checks:
        if c.node_id is not None and c.current_a is not None and c.state == "live":
            by_node.setdefault(c.node_id, []).append(c)
    for phases in by_node.values():
        if len(phases) < 2:
            continue
        median = statistics.median(c.current_a or 0.0 for c in phases)
        for c in phases:
            off = abs((c.current_a or 0.0) - median)
            if off >= IMBALANCE_MIN_A and off > IMBALANCE_RATIO * median:
                c.flags.append(f"phase {c.phase} reads {c.current_a:.1f} A against {median:.1f} A on its "
                               "siblings: right phase, clamp the right way round?")


# -- the handover report ------------------------------------------------------------------
HANDOVER_COLUMNS = ("panel", "circuit", "device", "sensor", "phase", "ct_rating_a", "from", "to", "first_reading",
                    "last_reading", "state", "assigned_by", "assigned_at")


def handover(conn: Conn, p: Principal, site_id: int, *, interval_s: float) -> list[dict[str, Any]]:
    """Every assignment of the site, panel by panel and circuit by circuit, with the sensor's
    first and last reading over its span, its state now, and who assigned it when."""
    tree = queries.tree(conn, p, site_id)
    if not tree:
        raise NotFound("site")
    by_id = {n["id"]: n for n in tree}
    order = {n["id"]: k for k, n in enumerate(tree)}
    spans = node_history(conn, list(by_id))
    states = {c.serial: c.state for c in live_check(conn, p, site_id, interval_s=interval_s)}
    people = {r["id"]: r["who"] for r in fetch_all(conn, """
        SELECT id, COALESCE(NULLIF(full_name, ''), email) AS who FROM users WHERE id = ANY(%s)""",
                                                  ([s.assigned_by for s in spans if s.assigned_by],))}
    rows = []
    for s in sorted(spans, key=lambda s: (order[s.node_id], s.valid_from or datetime.min.replace(tzinfo=UTC))):
        span = raw_readings.first_and_last(conn, [s.sensor_id], s.valid_from, s.valid_to)
        seen = {"first": span[0], "last": span[1]} if span else None
        names = _ancestry(by_id, s.node_id)
        rows.append({"panel": names.get("panel", ""), "circuit": names.get("circuit", ""),
                     "device": names.get("device", ""), "sensor": s.serial, "phase": s.phase,
                     "ct_rating_a": s.ct_rating_a, "from": s.valid_from, "to": s.valid_to,
                     "first_reading": seen["first"] if seen else None, "last_reading": seen["last"] if seen else None,
                     "state": states.get(s.serial, "") if s.valid_to is None else "ended",
                     "assigned_by": people.get(s.assigned_by, "system") if s.assigned_by else "system",
                     "assigned_at": s.assigned_at})
    return rows


def _ancestry(by_id: dict[int, dict[str, Any]], node_id: int) -> dict[str, str]:
    """The nearest panel, circuit and device names up from a node."""
    names: dict[str, str] = {}
    node: dict[str, Any] | None = by_id.get(node_id)
    while node is not None:
        names.setdefault(node["kind"], node["name"])
        node = by_id.get(node["parent_id"]) if node["parent_id"] is not None else None
    return names


def handover_csv(rows: list[dict[str, Any]]) -> str:
    """The report as CSV (UTC times in ISO 8601)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HANDOVER_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: v.isoformat() if isinstance(v, datetime) else ("" if v is None else v)
                         for k, v in row.items()})
    return out.getvalue()


# -- the commissioned mark -----------------------------------------------------------------
def mark_commissioned(conn: Conn, actor: Principal | None, site_id: int, commissioned: bool = True) -> None:
    """Mark the site commissioned (or open it again), audited."""
    with conn.transaction():
        conn.execute("""UPDATE sites SET commissioned_at = CASE WHEN %(c)s THEN now() END,
                                         commissioned_by = CASE WHEN %(c)s THEN %(by)s::bigint END
                        WHERE id = %(site)s""",
                     {"c": commissioned, "by": actor.user_id if actor else None, "site": site_id})
        audit.record(conn, actor, "commission" if commissioned else "reopen", "site", site_id)


def commissioned(conn: Conn, site_id: int) -> dict[str, Any] | None:
    """When and by whom the site was marked commissioned, or None."""
    return fetch_one(conn, """SELECT s.commissioned_at AS at, COALESCE(NULLIF(u.full_name, ''), u.email) AS who
                              FROM sites s LEFT JOIN users u ON u.id = s.commissioned_by
                              WHERE s.id = %s AND s.commissioned_at IS NOT NULL""", (site_id,))


def as_dict(check: SensorCheck) -> dict[str, Any]:
    """A check as plain data (the API's body, the dashboard's table)."""
    return asdict(check)
