"""Which node's phase a sensor measures, and since when: the sensor lifecycle, effective-dated.

An assignment covers [valid_from, valid_to) (table `sensor_assignments`); the rollup
worker attributes each minute of a sensor's readings to the node it was assigned to then.
An installer tells us one of these, and they are different things:

- **assign** a discovered sensor: it counts for the circuit from `since` (default: from
  its first reading, since it was clamped there before anyone mapped it);
- **correct**: "it was always on this circuit". The current assignment is re-pointed over
  its whole span, and its history moves with it;
- **move** from a time on: readings before it stay with the old circuit;
- **replace** a failed sensor with a new serial on the same circuit from a time on: the
  circuit's history runs on across the swap;
- **unassign** at a time: the sensor counts nowhere from then.

A sensor may also be declared a meter that reports signed power (`set_reports_power`).

Bounds fall on whole minutes (the finest rollup); a time may not be in the future. Each
function runs in one transaction with its audit entry and the rollup re-queue of exactly
the minutes it changed, naming the nodes that lost the sensor so the worker sweeps them.
`sensors.node_id`, `phase`, `ct_rating_a` and `assigned_at` mirror the open assignment.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import psycopg

from wattline import audit, generation, rollup_queue
from wattline.db import fetch_all, fetch_one
from wattline.errors import Conflict, Invalid, NotFound
from wattline.principal import Principal

Conn = psycopg.Connection[Any]
#: A CT rating beyond this is a typo, not a clamp (the largest split-core CTs are a few kA).
MAX_CT_RATING_A = 6000.0
#: Kinds of node a sensor can clamp: a circuit, a panel's feed, or a device on a circuit.
CLAMPABLE = ("circuit", "panel", "device")


class Action(StrEnum):
    """How an assignment began (and which of the installer's actions made it)."""

    ASSIGN = "assign"
    CORRECT = "correct"
    MOVE = "move"
    REPLACE = "replace"


#: One sentence per action, shown beside it in the dashboard and in the API's description.
EXPLAINED = {
    Action.ASSIGN: "Start counting a discovered sensor on this circuit (by default, all it has measured so far).",
    Action.CORRECT: "It was always on this circuit: its history moves here, and leaves the circuit it was on.",
    Action.MOVE: "The clamp was moved at this time: readings before it stay with the old circuit.",
    Action.REPLACE: "A new sensor took the failed one's place at this time: the circuit's history runs on.",
}


@dataclass(frozen=True)
class Assignment:
    """One span of a sensor on a node's phase."""

    id: int
    sensor_id: int
    serial: str
    node_id: int
    phase: int
    ct_rating_a: float
    valid_from: datetime | None  # None: since the sensor first reported
    valid_to: datetime | None  # None: still assigned
    reason: Action
    assigned_by: int | None
    assigned_at: datetime


_COLUMNS = """a.id, a.sensor_id, s.serial, a.node_id, a.phase, a.ct_rating_a,
              CASE WHEN a.valid_from = '-infinity' THEN NULL ELSE a.valid_from END AS valid_from,
              CASE WHEN a.valid_to = 'infinity' THEN NULL ELSE a.valid_to END AS valid_to,
              a.reason, a.assigned_by, a.assigned_at"""


def _assignment(row: dict[str, Any]) -> Assignment:
    return Assignment(row["id"], row["sensor_id"], row["serial"], row["node_id"], row["phase"],
                      float(row["ct_rating_a"]), row["valid_from"], row["valid_to"], Action(row["reason"]),
                      row["assigned_by"], row["assigned_at"])


_SELECT = f"SELECT {_COLUMNS} FROM sensor_assignments a JOIN sensors s ON s.id = a.sensor_id"  # noqa: S608


def history(conn: Conn, sensor_id: int) -> list[Assignment]:
    """Every span of a sensor, oldest first."""
    return [_assignment(r) for r in fetch_all(conn, _SELECT + " WHERE a.sensor_id = %s ORDER BY a.valid_from",
                                              (sensor_id,))]


def node_history(conn: Conn, node_ids: list[int]) -> list[Assignment]:
    """Every span on these nodes, by node then time (the handover report's sensor column)."""
    return [_assignment(r) for r in fetch_all(
        conn, _SELECT + " WHERE a.node_id = ANY(%s) ORDER BY a.node_id, a.valid_from", (node_ids,))]


# -- checks ---------------------------------------------------------------------------
def _minute(at: datetime | None, field: str) -> datetime:
    """`at` on its whole minute (now if None); refused in the future or without a zone."""
    now = datetime.now(UTC)
    if at is None:
        at = now
    if at.tzinfo is None:
        raise Invalid("Invalid time", "give the time with its UTC offset", field=field)
    if at > now:
        raise Invalid("Invalid time", "a time in the future: say what happened, when it has happened", field=field)
    return at.astimezone(UTC).replace(second=0, microsecond=0)


def _check_rating(ct_rating_a: float) -> None:
    if not 0 < ct_rating_a <= MAX_CT_RATING_A:
        raise Invalid("Invalid CT rating", f"a CT rating is between 1 and {MAX_CT_RATING_A:,.0f} A; "
                      f"{ct_rating_a:g} A is not a clamp", field="ct_rating_a")


def _target(conn: Conn, node_id: int, site_id: int) -> None:
    node = fetch_one(conn, "SELECT site_id, kind FROM nodes WHERE id = %s", (node_id,))
    if node is None:
        raise NotFound("node", field="node_id")
    if node["site_id"] != site_id:
        raise Invalid("Cannot assign", "that circuit is at another site than the sensor's bridge", field="node_id")
    if node["kind"] not in CLAMPABLE:
        raise Invalid("Cannot assign", f"a sensor clamps a circuit, a panel feed or a device, not a {node['kind']}",
                      field="node_id")


def _sensor(conn: Conn, serial: str, field: str = "serial") -> dict[str, Any]:
    row = fetch_one(conn, """SELECT s.id, s.serial, b.site_id FROM sensors s JOIN bridges b ON b.id = s.bridge_id
                             WHERE s.serial = %s FOR UPDATE OF s""", (serial,))
    if row is None:
        raise NotFound("sensor", field=field)
    return row


def _open(conn: Conn, sensor_id: int) -> dict[str, Any] | None:
    """The current assignment; its `valid_from` None when it runs from the first reading."""
    return fetch_one(conn, """SELECT id, node_id, phase, ct_rating_a,
                                     CASE WHEN valid_from = '-infinity' THEN NULL ELSE valid_from END AS valid_from
                              FROM sensor_assignments
                              WHERE sensor_id = %s AND valid_to = 'infinity' FOR UPDATE""", (sensor_id,))


def _starts_after(current: dict[str, Any], when: datetime) -> bool:
    return current["valid_from"] is not None and current["valid_from"] >= when


def _mirror(conn: Conn, sensor_id: int) -> None:
    """sensors.node_id & co. = the open assignment (or none)."""
    conn.execute("""UPDATE sensors s SET node_id = a.node_id, phase = a.phase,
                           ct_rating_a = COALESCE(a.ct_rating_a, s.ct_rating_a), assigned_at = a.assigned_at
                    FROM (SELECT NULL) x LEFT JOIN sensor_assignments a
                         ON a.sensor_id = %(s)s AND a.valid_to = 'infinity'
                    WHERE s.id = %(s)s""", {"s": sensor_id})


def _insert(conn: Conn, actor: Principal | None, sensor_id: int, node_id: int, phase: int, ct_rating_a: float,
            valid_from: datetime | str, reason: Action) -> int:
    row = fetch_one(conn, """INSERT INTO sensor_assignments (sensor_id, node_id, phase, ct_rating_a, valid_from,
                                                             reason, assigned_by)
                             VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id""",
                    (sensor_id, node_id, phase, ct_rating_a, valid_from, reason.value,
                     actor.user_id if actor else None))
    assert row is not None
    return int(row["id"])


def _clashes(exc: psycopg.Error) -> Conflict:
    if "node_id" in str(exc) or "one_per_phase" in str(exc):
        return Conflict("that phase of the circuit is already measured by another sensor over that time",
                        field="phase")
    return Conflict("the sensor is already assigned over part of that time")


@contextmanager
def _change(conn: Conn) -> Iterator[None]:
    """One transaction; spans the exclusion constraints refuse as overlapping are a Conflict."""
    try:
        with conn.transaction():
            yield
    except (psycopg.errors.ExclusionViolation, psycopg.errors.UniqueViolation) as exc:
        raise _clashes(exc) from exc


def _placing(conn: Conn, serial: str, node_id: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The sensor (locked) and its current assignment, once `node_id` is a place it can go."""
    sensor = _sensor(conn, serial)
    _target(conn, node_id, sensor["site_id"])
    return sensor, _open(conn, sensor["id"])


def _same(current: dict[str, Any], node_id: int, phase: int, ct_rating_a: float) -> bool:
    return (current["node_id"], current["phase"], current["ct_rating_a"]) == (node_id, phase, ct_rating_a)


def _end(conn: Conn, assignment_id: int, when: datetime) -> None:
    conn.execute("UPDATE sensor_assignments SET valid_to = %s WHERE id = %s", (when, assignment_id))


# -- the actions ------------------------------------------------------------------------
def register_sensor(conn: Conn, serial: str, bridge_id: int) -> int:
    """A sensor known before it reports (seeders, a bridge's manifest); returns its id.
    Discovery by the gateway does the same when it first hears one."""
    row = fetch_one(conn, """INSERT INTO sensors (serial, bridge_id) VALUES (%s, %s)
                             ON CONFLICT (serial) DO UPDATE SET serial = EXCLUDED.serial RETURNING id""",
                    (serial, bridge_id))
    assert row is not None
    return int(row["id"])


def assign(conn: Conn, actor: Principal | None, serial: str, node_id: int, phase: int, ct_rating_a: float, *,
           since: datetime | None = None) -> int:
    """Assign a sensor that has no current assignment; returns the sensor's id.

    Assigning it again exactly as it is changes nothing. An assigned sensor elsewhere is a
    Conflict: say whether it is a correction or a move."""
    _check_rating(ct_rating_a)
    with _change(conn):
        sensor, current = _placing(conn, serial, node_id)
        if current is not None:
            if _same(current, node_id, phase, ct_rating_a):
                return int(sensor["id"])
            raise Conflict(f"sensor {serial} is already assigned: correct the assignment, or move it from a time")
        last = fetch_one(conn, "SELECT max(valid_to) AS t FROM sensor_assignments WHERE sensor_id = %s",
                         (sensor["id"],))
        # Default: from where its last assignment ended, or (None) from its first reading.
        start: datetime | None = _minute(since, "since") if since is not None else (last or {}).get("t")
        _insert(conn, actor, sensor["id"], node_id, phase, ct_rating_a, start or "-infinity", Action.ASSIGN)
        _mirror(conn, sensor["id"])
        generation.check_site(conn, sensor["site_id"])
        rollup_queue.queue_history(conn, [sensor["id"]], since=start, progress_of=sensor["id"])
        audit.record(conn, actor, "assign", "sensor", sensor["id"], node_id=node_id, phase=phase,
                     ct_rating_a=ct_rating_a, since=start.isoformat() if start else None)
    return int(sensor["id"])


def correct(conn: Conn, actor: Principal | None, serial: str, node_id: int, phase: int, ct_rating_a: float) -> int:
    """Re-point the current assignment over its whole span: it was always there."""
    _check_rating(ct_rating_a)
    with _change(conn):
        sensor, current = _placing(conn, serial, node_id)
        if current is None:
            raise Conflict(f"sensor {serial} is not assigned: assign it")
        if _same(current, node_id, phase, ct_rating_a):
            return int(sensor["id"])
        conn.execute("""UPDATE sensor_assignments SET node_id = %s, phase = %s, ct_rating_a = %s,
                               reason = 'correct', assigned_by = %s, assigned_at = now() WHERE id = %s""",
                     (node_id, phase, ct_rating_a, actor.user_id if actor else None, current["id"]))
        _mirror(conn, sensor["id"])
        generation.check_site(conn, sensor["site_id"])
        rollup_queue.queue_history(conn, [sensor["id"]], former_nodes=[current["node_id"]],
                                   since=current["valid_from"], progress_of=sensor["id"])
        audit.record(conn, actor, "correct", "sensor", sensor["id"], node_id=node_id, phase=phase,
                     ct_rating_a=ct_rating_a, former_node_id=current["node_id"])
    return int(sensor["id"])


def move(conn: Conn, actor: Principal | None, serial: str, node_id: int, phase: int, ct_rating_a: float, *,
         at: datetime | None) -> int:
    """The clamp moved at `at` (now if None): earlier readings stay with the old circuit."""
    _check_rating(ct_rating_a)
    when = _minute(at, "at")
    with _change(conn):
        sensor, current = _placing(conn, serial, node_id)
        if current is None:
            raise Conflict(f"sensor {serial} is not assigned: assign it")
        if _starts_after(current, when):
            raise Invalid("Invalid time", "the sensor was only assigned there at "
                          f"{current['valid_from']:%Y-%m-%d %H:%M} UTC: move it after that, or correct it",
                          field="at")
        _end(conn, current["id"], when)
        _insert(conn, actor, sensor["id"], node_id, phase, ct_rating_a, when, Action.MOVE)
        _mirror(conn, sensor["id"])
        generation.check_site(conn, sensor["site_id"])
        rollup_queue.queue_history(conn, [sensor["id"]], former_nodes=[current["node_id"]], since=when,
                                   progress_of=sensor["id"])
        audit.record(conn, actor, "move", "sensor", sensor["id"], node_id=node_id, phase=phase,
                     ct_rating_a=ct_rating_a, former_node_id=current["node_id"], at=when.isoformat())
    return int(sensor["id"])


def replace(conn: Conn, actor: Principal | None, failed_serial: str, new_serial: str, *,
            at: datetime | None) -> int:
    """A new sensor takes a failed one's circuit, phase and rating from `at` (now if None);
    returns the new sensor's id. The failed one counts nowhere from then."""
    when = _minute(at, "at")
    with _change(conn):
        failed = _sensor(conn, failed_serial)
        new = _sensor(conn, new_serial, field="new_serial")
        if new["id"] == failed["id"]:
            raise Invalid("Cannot replace", "a sensor cannot replace itself", field="new_serial")
        if new["site_id"] != failed["site_id"]:
            raise Invalid("Cannot replace", f"sensor {new_serial} reports through a bridge of another site",
                          field="new_serial")
        current = _open(conn, failed["id"])
        if current is None:
            raise Conflict(f"sensor {failed_serial} is not assigned: there is nothing to take over")
        if _starts_after(current, when):
            raise Invalid("Invalid time", "the failed sensor was only assigned at "
                          f"{current['valid_from']:%Y-%m-%d %H:%M} UTC", field="at")
        if _open(conn, new["id"]) is not None:
            raise Conflict(f"sensor {new_serial} is already assigned: unassign it first", field="new_serial")
        _end(conn, current["id"], when)
        _mirror(conn, failed["id"])  # frees the phase before the new sensor takes it
        _insert(conn, actor, new["id"], current["node_id"], current["phase"], float(current["ct_rating_a"]),
                when, Action.REPLACE)
        _mirror(conn, new["id"])
        generation.check_site(conn, new["site_id"])  # a clamp may not take a meter's place above generation
        rollup_queue.queue_history(conn, [failed["id"], new["id"]], former_nodes=[current["node_id"]], since=when,
                                   progress_of=new["id"])
        audit.record(conn, actor, "replace", "sensor", new["id"], replaces=failed["id"],
                     node_id=current["node_id"], phase=current["phase"], at=when.isoformat())
    return int(new["id"])


def set_reports_power(conn: Conn, actor: Principal | None, serial: str, reports_power: bool) -> int:
    """Declare whether the sensor is a meter that reports signed power (wattline.generation,
    "Signed meters"); returns its id. Its whole history is re-summed, since its nodes' minutes
    net by it or not; a clamp (False) above generation is refused as any clamp there is."""
    with _change(conn):
        sensor = _sensor(conn, serial)
        before = fetch_one(conn, "SELECT reports_power FROM sensors WHERE id = %s", (sensor["id"],))
        assert before is not None
        if before["reports_power"] == reports_power:
            return int(sensor["id"])
        conn.execute("UPDATE sensors SET reports_power = %s WHERE id = %s", (reports_power, sensor["id"]))
        generation.check_site(conn, sensor["site_id"])
        rollup_queue.queue_history(conn, [sensor["id"]], progress_of=sensor["id"])
        audit.record(conn, actor, "set_reports_power", "sensor", sensor["id"], reports_power=reports_power)
    return int(sensor["id"])


def unassign(conn: Conn, actor: Principal | None, serial: str, *, at: datetime | None = None) -> int:
    """End the current assignment at `at` (now if None); returns the sensor's id. Ended at
    (or before) its start, the assignment is withdrawn, as if never made."""
    when = _minute(at, "at")
    with conn.transaction():
        sensor = _sensor(conn, serial)
        current = _open(conn, sensor["id"])
        if current is None:
            raise Conflict(f"sensor {serial} is not assigned")
        since: datetime | None
        if _starts_after(current, when):
            conn.execute("DELETE FROM sensor_assignments WHERE id = %s", (current["id"],))
            since = current["valid_from"]
        else:
            _end(conn, current["id"], when)
            since = when
        _mirror(conn, sensor["id"])
        rollup_queue.queue_history(conn, [sensor["id"]], former_nodes=[current["node_id"]], since=since,
                                   progress_of=sensor["id"])
        audit.record(conn, actor, "unassign", "sensor", sensor["id"], former_node_id=current["node_id"],
                     at=when.isoformat())
    return int(sensor["id"])
