"""Installers: discovered sensors, assignment (with back-fill), live checks and the report."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from api.deps import Commissioner, Conn, Reader, visible_site
from api.problems import not_found
from api.schemas import (
    Assignment,
    AssignmentSpan,
    BridgeCheck,
    Commissioned,
    CommissionedIn,
    CommissioningReport,
    Correction,
    Created,
    LiveCheck,
    MeterSetting,
    Move,
    ProgressOut,
    Replacement,
    SensorCheck,
    SensorInfo,
)
from wattline import assignments, commissioning, progress, queries
from wattline.assignments import EXPLAINED, Action
from wattline.domain import sensor_state
from wattline.errors import NotFound
from wattline.principal import Principal

router = APIRouter(prefix="/v1", tags=["commissioning"])


def sensor_check(row: dict[str, Any], interval_s: float, now: datetime) -> SensorCheck:
    last, current, rating = row.get("last_seen_at"), row.get("last_current_a"), row.get("ct_rating_a")
    state, detail = sensor_state(last, current, rating, interval_s, now)
    return SensorCheck(serial=row["serial"], state=state, last_seen_at=last, last_current_a=current,
                       ct_rating_a=rating, detail=detail)


@router.get("/sites/{site_id}/sensors", response_model=list[SensorInfo],
            summary="Sensors at a site (discovered_only: not yet assigned), with last reading and RSSI")
def list_sensors(site_id: int, p: Reader, conn: Conn, discovered_only: bool = False,
                 bridge_id: int | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                 offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> list[dict[str, Any]]:
    visible_site(conn, p, site_id)
    return queries.sensors(conn, p, site_id, discovered_only=discovered_only, bridge_id=bridge_id, limit=limit,
                           offset=offset)


def _visible(conn: Any, p: Principal, serial: str, node_id: int | None = None) -> None:
    """404 unless the caller may see the sensor (and the node). A sensor is visible once it
    has reported through one of the caller's bridges: another tenant's serial and one never
    heard answer alike, and nobody can claim a serial in advance."""
    if node_id is not None and queries.node(conn, p, node_id) is None:
        raise not_found("node")
    if queries.sensor_by_serial(conn, p, serial) is None:
        raise not_found("sensor")


@router.put("/sensors/{serial}/assignment", response_model=Created,
            summary="Assign a discovered sensor to a circuit phase",
            description=EXPLAINED[Action.ASSIGN] + " An assigned sensor answers 409: correct it or move it.")
def assign(serial: str, body: Assignment, p: Commissioner, conn: Conn) -> Created:
    _visible(conn, p, serial, body.node_id)
    return Created(id=assignments.assign(conn, p, serial, body.node_id, body.phase, body.ct_rating_a,
                                         since=body.since))


@router.post("/sensors/{serial}/assignment/correction", response_model=Created,
             summary="Correct an assignment: it was always on this circuit", description=EXPLAINED[Action.CORRECT])
def correct(serial: str, body: Correction, p: Commissioner, conn: Conn) -> Created:
    _visible(conn, p, serial, body.node_id)
    return Created(id=assignments.correct(conn, p, serial, body.node_id, body.phase, body.ct_rating_a))


@router.post("/sensors/{serial}/assignment/move", response_model=Created,
             summary="Move a sensor to another circuit from a time on", description=EXPLAINED[Action.MOVE])
def move(serial: str, body: Move, p: Commissioner, conn: Conn) -> Created:
    _visible(conn, p, serial, body.node_id)
    return Created(id=assignments.move(conn, p, serial, body.node_id, body.phase, body.ct_rating_a, at=body.at))


@router.post("/sensors/{serial}/replacement", response_model=Created,
             summary="Replace a failed sensor with a new one on the same circuit",
             description=EXPLAINED[Action.REPLACE] + " Answers the new sensor's id.")
def replace(serial: str, body: Replacement, p: Commissioner, conn: Conn) -> Created:
    _visible(conn, p, serial)
    if queries.sensor_by_serial(conn, p, body.new_serial) is None:
        raise NotFound("sensor", field="new_serial")
    return Created(id=assignments.replace(conn, p, serial, body.new_serial, at=body.at))


@router.put("/sensors/{serial}/meter", response_model=Created,
            summary="Declare whether a sensor is a meter reporting signed power",
            description="Its history is re-summed. Turning a meter above generation into a clamp answers 422.")
def set_meter(serial: str, body: MeterSetting, p: Commissioner, conn: Conn) -> Created:
    _visible(conn, p, serial)
    return Created(id=assignments.set_reports_power(conn, p, serial, body.reports_power))


@router.delete("/sensors/{serial}/assignment", response_model=Created,
               summary="Unassign a sensor at a time (default: now); it counts nowhere from then")
def unassign(serial: str, p: Commissioner, conn: Conn, at: datetime | None = None) -> Created:
    _visible(conn, p, serial)
    return Created(id=assignments.unassign(conn, p, serial, at=at))


@router.get("/sensors/{serial}/assignments", response_model=list[AssignmentSpan],
            summary="A sensor's assignments over time, oldest first")
def sensor_assignments(serial: str, p: Reader, conn: Conn) -> list[dict[str, Any]]:
    sensor = queries.sensor_by_serial(conn, p, serial)
    if sensor is None:
        raise not_found("sensor")
    return [asdict(a) for a in assignments.history(conn, sensor["id"])]


@router.get("/sensors/{serial}/backfill", response_model=ProgressOut,
            summary="How far the re-computation of a sensor's history is, after it was assigned or moved")
def sensor_backfill(serial: str, p: Reader, conn: Conn) -> dict[str, Any]:
    sensor = queries.sensor_by_serial(conn, p, serial)
    if sensor is None:
        raise not_found("sensor")
    done = progress.backfill(conn, sensor["id"])
    if done is None:
        raise not_found("back-fill")
    return done.as_dict()


@router.get("/sensors/{serial}/check", response_model=SensorCheck, summary="Live check of one sensor")
def check_sensor(serial: str, request: Request, p: Reader, conn: Conn) -> SensorCheck:
    sensor = queries.sensor_by_serial(conn, p, serial)
    if sensor is None:
        raise not_found("sensor")
    return sensor_check(sensor, request.app.state.settings.reporting_interval_s, datetime.now(UTC))


@router.get("/bridges/{bridge_id}/check", response_model=BridgeCheck,
            summary="Is the bridge online (from its retained status)?")
def check_bridge(bridge_id: int, p: Reader, conn: Conn) -> BridgeCheck:
    bridge = queries.bridge(conn, p, bridge_id)
    if bridge is None:
        raise not_found("bridge")
    return BridgeCheck(serial=bridge["serial"], online=bridge["online"], status_changed_at=bridge["status_changed_at"])


@router.get("/sites/{site_id}/commissioning-report", response_model=CommissioningReport,
            summary="What is mapped, discovered, live, silent or implausible at a site")
def report(site_id: int, request: Request, p: Reader, conn: Conn) -> CommissioningReport:
    visible_site(conn, p, site_id)
    now = datetime.now(UTC)
    rows = queries.sensors(conn, p, site_id)
    checks = [sensor_check(r, request.app.state.settings.reporting_interval_s, now) for r in rows]
    states = [c.state for c in checks]
    return CommissioningReport(site_id=site_id, mapped=sum(r["node_id"] is not None for r in rows),
                               discovered=sum(r["node_id"] is None for r in rows), live=states.count("live"),
                               silent=states.count("silent"), implausible=states.count("implausible"), sensors=checks)


@router.get("/sites/{site_id}/live-check", response_model=list[LiveCheck],
            summary="Every sensor now: current, power, and what looks wrong (no current, above rating, phase "
                    "imbalance, weak signal, silent)")
def live_check(site_id: int, request: Request, p: Reader, conn: Conn, bridge_id: int | None = None
               ) -> list[dict[str, Any]]:
    visible_site(conn, p, site_id)
    return [commissioning.as_dict(c) for c in commissioning.live_check(
        conn, p, site_id, interval_s=request.app.state.settings.reporting_interval_s, bridge_id=bridge_id)]


@router.get("/sites/{site_id}/handover.csv", summary="The commissioning handover report: every panel, circuit, "
            "sensor, phase, CT rating, first and last reading, state, who assigned it and when",
            response_class=Response, responses={200: {"content": {"text/csv": {"example": ",".join(
                commissioning.HANDOVER_COLUMNS) + "\n"}}}})
def handover_csv(site_id: int, request: Request, p: Reader, conn: Conn) -> Response:
    visible_site(conn, p, site_id)
    rows = commissioning.handover(conn, p, site_id, interval_s=request.app.state.settings.reporting_interval_s)
    return Response(commissioning.handover_csv(rows), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="handover-site-{site_id}.csv"'})


@router.put("/sites/{site_id}/commissioned", response_model=Commissioned,
            summary="Mark the site commissioned, or open it again (audited)")
def mark_commissioned(site_id: int, body: CommissionedIn, p: Commissioner, conn: Conn) -> Commissioned:
    visible_site(conn, p, site_id)
    commissioning.mark_commissioned(conn, p, site_id, body.commissioned)
    mark = commissioning.commissioned(conn, site_id)
    return Commissioned(commissioned_at=mark["at"] if mark else None, commissioned_by=mark["who"] if mark else None)
