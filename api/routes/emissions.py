"""Emission factors of a site (the bundled country table, the site's own, an hourly series)
and CO2e per node and period."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, UploadFile

from analytics.emissions import Period, co2e_by_node
from api.deps import Conn, Reader, Writer, visible_site
from api.routes.data import checked_range
from api.schemas import EmissionFactorIn, EmissionFactorOut, EmissionsOut, GridFactorOut, HourlyFactorsIn, Stored
from wattline import emissions
from wattline.db import fetch_one
from wattline.emissions import SiteFactor

router = APIRouter(prefix="/v1", tags=["emissions"])
From = Annotated[datetime, Query(alias="from", examples=["2026-11-01T00:00:00Z"])]
To = Annotated[datetime, Query(alias="to", examples=["2026-12-01T00:00:00Z"])]


def _factor_out(conn: Any, site_id: int, factor: SiteFactor) -> dict[str, Any]:
    row = fetch_one(conn, "SELECT count(*) AS n FROM site_co2e_hourly WHERE site_id = %s", (site_id,))
    return {"g_co2e_per_kwh": factor.g_per_kwh, "origin": factor.origin, "source": factor.source,
            "year": factor.year, "hourly_hours": row["n"] if row else 0}


@router.get("/grid-factors", response_model=list[GridFactorOut],
            summary="The bundled annual grid factors by country, with their year (source: "
                    "Ember and Energy Institute via Our World in Data, CC BY 4.0)")
def grid_factors(p: Reader) -> list[dict[str, Any]]:
    return [{"country": g.country, "name": g.name, "year": g.year, "g_co2e_per_kwh": g.g_per_kwh}
            for g in emissions.grid_factors().values()]


@router.get("/sites/{site_id}/emission-factor", response_model=EmissionFactorOut,
            summary="The annual factor the site's energy is counted at, and where it comes from")
def get_factor(site_id: int, p: Reader, conn: Conn) -> dict[str, Any]:
    site = visible_site(conn, p, site_id)
    return _factor_out(conn, site_id, emissions.factor_of(site))


@router.put("/sites/{site_id}/emission-factor", response_model=EmissionFactorOut,
            summary="Give the site its own annual factor, or (null) go back to its country's")
def put_factor(site_id: int, body: EmissionFactorIn, p: Writer, conn: Conn) -> dict[str, Any]:
    visible_site(conn, p, site_id)
    return _factor_out(conn, site_id, emissions.set_site_factor(conn, p, site_id, body.g_co2e_per_kwh, body.source))


@router.put("/sites/{site_id}/co2e-hourly", response_model=Stored,
            summary="Store hourly grid factors (an hour given again is replaced); all hours or none")
def put_hourly(site_id: int, body: HourlyFactorsIn, p: Writer, conn: Conn) -> Stored:
    visible_site(conn, p, site_id)
    hours = [emissions.HourFactor(h.hour, h.g_co2e_per_kwh) for h in body.hours]
    return Stored(stored=emissions.save_hourly(conn, p, site_id, hours, source="api"))


@router.post("/sites/{site_id}/co2e-hourly.csv", response_model=Stored,
             summary="Upload hourly grid factors as CSV (header hour,g_co2e_per_kwh); all rows or none")
def upload_hourly(site_id: int, file: UploadFile, p: Writer, conn: Conn) -> Stored:
    visible_site(conn, p, site_id)
    hours = emissions.parse_csv(file.file.read(2_000_000))
    return Stored(stored=emissions.save_hourly(conn, p, site_id, hours, source="upload"))


@router.delete("/sites/{site_id}/co2e-hourly", response_model=Stored, summary="Remove hourly factors in a range")
def delete_hourly(site_id: int, p: Writer, conn: Conn, t_from: From, t_to: To) -> Stored:
    visible_site(conn, p, site_id)
    t_from, t_to = checked_range(t_from, t_to)
    return Stored(stored=emissions.delete_hourly(conn, p, site_id, t_from, t_to))


@router.get("/sites/{site_id}/emissions", response_model=EmissionsOut,
            summary="Energy and CO2e per node, for the whole range or by local day or month (whole hours)")
def site_emissions(site_id: int, p: Reader, conn: Conn, t_from: From, t_to: To, by: Period = "total"
                   ) -> dict[str, Any]:
    site = visible_site(conn, p, site_id)
    t_from, t_to = checked_range(t_from, t_to)
    factor, rows = co2e_by_node(conn, p, site, t_from, t_to, by)
    return {"factor": _factor_out(conn, site_id, factor), "rows": [asdict(r) for r in rows]}
