"""Outdoor temperatures, degree days, weather baselines and savings projects of a site."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, UploadFile, status

from analytics.degree_days import Baseline, SiteDays, project_savings, site_days
from api.deps import Conn, Reader, Writer, visible_site
from api.problems import Problem, not_found
from api.schemas import (
    BaselineOut,
    Created,
    DegreeDay,
    SavingsOut,
    SavingsProject,
    SavingsProjectIn,
    Stored,
    TemperaturesIn,
)
from wattline import weather
from wattline.principal import Principal

router = APIRouter(prefix="/v1", tags=["weather"])
FromDay = Annotated[date | None, Query(alias="from", ge=weather.FIRST_DAY, le=weather.LAST_DAY,
                                       description="first local day (default: a year before `to`)")]
ToDay = Annotated[date | None, Query(alias="to", ge=weather.FIRST_DAY, le=weather.LAST_DAY,
                                     description="day after the last (default: the site's today)")]
MAX_DAYS = 3660


def _days(site: dict[str, Any], day_from: date | None, day_to: date | None) -> tuple[date, date]:
    day_to = day_to or datetime.now(ZoneInfo(site["timezone"])).date()
    day_from = day_from or max(day_to - timedelta(days=365), weather.FIRST_DAY)
    if day_from >= day_to:
        raise Problem(422, "Invalid range", "`from` must be before `to`")
    if (day_to - day_from).days > MAX_DAYS:
        raise Problem(422, "Range too long", f"at most {MAX_DAYS} days at a time")
    return day_from, day_to


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


def baseline_out(b: Baseline, days: SiteDays) -> dict[str, Any]:
    return {**{k: getattr(b, k) for k in ("intercept_kwh", "hdd_slope_kwh", "cdd_slope_kwh", "r2", "days",
                                          "first_day", "last_day")},
            "terms": list(b.terms), "cv_rmse": _num(b.cv_rmse), "hdd_base_c": days.hdd_base_c,
            "cdd_base_c": days.cdd_base_c}


@router.put("/sites/{site_id}/temperatures", response_model=Stored,
            summary="Store daily mean outdoor temperatures (a day given again is replaced); all days or none")
def put_temperatures(site_id: int, body: TemperaturesIn, p: Writer, conn: Conn) -> Stored:
    visible_site(conn, p, site_id)
    days = [weather.DayTemperature(d.day, d.mean_c) for d in body.days]
    return Stored(stored=weather.save_temperatures(conn, p, site_id, days, source="api"))


@router.post("/sites/{site_id}/temperatures.csv", response_model=Stored,
             summary="Upload daily mean temperatures as CSV (header day,mean_c); all rows or none")
def upload_temperatures(site_id: int, file: UploadFile, p: Writer, conn: Conn) -> Stored:
    visible_site(conn, p, site_id)
    days = weather.parse_csv(file.file.read(2_000_000))
    return Stored(stored=weather.save_temperatures(conn, p, site_id, days, source="upload"))


@router.delete("/sites/{site_id}/temperatures", response_model=Stored, summary="Remove daily means in a range")
def delete_temperatures(site_id: int, p: Writer, conn: Conn,
                        day_from: Annotated[date, Query(alias="from", ge=weather.FIRST_DAY, le=weather.LAST_DAY)],
                        day_to: Annotated[date, Query(alias="to", ge=weather.FIRST_DAY, le=weather.LAST_DAY)]
                        ) -> Stored:
    site = visible_site(conn, p, site_id)
    day_from, day_to = _days(site, day_from, day_to)
    return Stored(stored=weather.delete_temperatures(conn, p, site_id, day_from, day_to))


@router.get("/sites/{site_id}/degree-days", response_model=list[DegreeDay],
            summary="Per local day: mean temperature, HDD and CDD at the site's bases, and the day's energy")
def degree_days(site_id: int, p: Reader, conn: Conn, day_from: FromDay = None, day_to: ToDay = None) -> list[Any]:
    site = visible_site(conn, p, site_id)
    days = site_days(conn, [site], *_days(site, day_from, day_to))[site_id]
    return [{"day": d, "mean_c": _num(t), "hdd": _num(h), "cdd": _num(c), "energy_kwh": _num(e)}
            for d, t, h, c, e in zip(days.day, days.mean_c.tolist(), days.hdd.tolist(), days.cdd.tolist(),
                                     days.energy_kwh.tolist(), strict=True)]


@router.get("/sites/{site_id}/baseline", response_model=BaselineOut,
            summary="The site's daily energy fitted against HDD and CDD over a range (default: the last year)")
def baseline(site_id: int, p: Reader, conn: Conn, day_from: FromDay = None, day_to: ToDay = None) -> dict[str, Any]:
    site = visible_site(conn, p, site_id)
    days = site_days(conn, [site], *_days(site, day_from, day_to))[site_id]
    return baseline_out(days.baseline(), days)


@router.get("/sites/{site_id}/savings-projects", response_model=list[SavingsProject])
def list_projects(site_id: int, p: Reader, conn: Conn) -> list[dict[str, Any]]:
    visible_site(conn, p, site_id)
    return weather.projects(conn, site_id)


@router.post("/sites/{site_id}/savings-projects", response_model=Created, status_code=status.HTTP_201_CREATED,
             summary="Start measuring a project's savings against the weather baseline before it")
def create_project(site_id: int, body: SavingsProjectIn, p: Writer, conn: Conn) -> Created:
    visible_site(conn, p, site_id)
    return Created(id=weather.create_project(conn, p, site_id, body.name, body.starts_on,
                                             baseline_days=body.baseline_days))


def _project_or_404(conn: Any, p: Principal, project_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    row = weather.project(conn, project_id)
    if row is None:
        raise not_found("savings project")
    try:
        site = visible_site(conn, p, row["site_id"])
    except Problem:
        raise not_found("savings project") from None
    return row, site


@router.delete("/savings-projects/{project_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_project(project_id: int, p: Writer, conn: Conn) -> None:
    _project_or_404(conn, p, project_id)
    weather.delete_project(conn, p, project_id)


@router.get("/savings-projects/{project_id}/savings", response_model=SavingsOut,
            summary="Savings so far: the baseline's prediction for each ended day's weather minus the metered energy")
def savings(project_id: int, p: Reader, conn: Conn) -> dict[str, Any]:
    project, site = _project_or_404(conn, p, project_id)
    found = project_savings(conn, site, project, datetime.now(ZoneInfo(site["timezone"])).date())
    d = found.days
    return {"project": project, "baseline": baseline_out(found.baseline, d), "metered_kwh": found.metered_kwh,
            "expected_kwh": found.expected_kwh, "savings_kwh": found.savings_kwh,
            "savings_percent": 100 * found.savings_kwh / found.expected_kwh if found.expected_kwh > 0 else None,
            "counted_days": found.counted_days, "missing_days": found.missing_days,
            "days": [{"day": day, "mean_c": _num(t), "metered_kwh": _num(m), "predicted_kwh": _num(e),
                      "savings_kwh": _num(e - m)}
                     for day, t, m, e in zip(d.day, d.mean_c.tolist(), d.energy_kwh.tolist(),
                                             found.predicted_kwh.tolist(), strict=True)]}
