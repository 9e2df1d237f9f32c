"""Virtual meters: named groups of nodes with + and − terms, read like a node."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from analytics.virtual_meters import meter_co2e, meter_cost, meter_series
from api.deps import Conn, CostReader, Reader, Writer
from api.problems import Problem, not_found
from api.routes.data import checked_range
from api.schemas import Created, MeterCo2eOut, MeterCostOut, MeterPoint, MeterTerm, VirtualMeter, VirtualMeterIn
from wattline import queries, virtual_meters
from wattline.domain import Resolution
from wattline.principal import Principal
from wattline.tariffs import TariffError
from wattline.virtual_meters import Term

router = APIRouter(prefix="/v1", tags=["virtual meters"])
From = Annotated[datetime, Query(alias="from")]
To = Annotated[datetime, Query(alias="to")]


def _terms(body: VirtualMeterIn) -> list[Term]:
    return [Term(sign=1 if t.sign == "+" else -1, node_id=t.node_id, meter_id=t.meter_id) for t in body.terms]


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "terms": [MeterTerm(sign="+" if t["sign"] > 0 else "-", node_id=t["node_id"],
                                       meter_id=t["meter_id"]) for t in row["terms"]]}


def _customer(conn: Any, p: Principal, asked: int | None) -> int:
    customer_id = asked if p.reseller_id is not None else p.customer_id
    if customer_id is None or queries.customer(conn, p, customer_id) is None:
        raise not_found("customer")
    if p.site_ids is not None:  # a meter may span the customer's sites; a user of some sites cannot see them all
        raise Problem(403, "Forbidden", "users granted only some sites cannot define virtual meters")
    return customer_id


def _meter_or_404(conn: Any, p: Principal, meter_id: int) -> dict[str, Any]:
    row = virtual_meters.meter(conn, p, meter_id)
    if row is None:
        raise not_found("virtual meter")
    return row


@router.get("/virtual-meters", response_model=list[VirtualMeter], summary="Virtual meters you can see")
def list_meters(p: Reader, conn: Conn, customer_id: Annotated[int | None, Query(ge=1)] = None) -> list[dict[str, Any]]:
    return [_shown(r) for r in virtual_meters.meters(conn, p, customer_id)]


@router.post("/virtual-meters", response_model=Created, status_code=status.HTTP_201_CREATED,
             summary="Define a virtual meter; cycles and double counting are refused with the reason")
def create_meter(body: VirtualMeterIn, p: Writer, conn: Conn) -> Created:
    customer_id = _customer(conn, p, body.customer_id)
    return Created(id=virtual_meters.save_meter(conn, p, customer_id, body.name, _terms(body)))


@router.get("/virtual-meters/{meter_id}", response_model=VirtualMeter)
def get_meter(meter_id: int, p: Reader, conn: Conn) -> dict[str, Any]:
    return _shown(_meter_or_404(conn, p, meter_id))


@router.put("/virtual-meters/{meter_id}", response_model=Created, summary="Rename a virtual meter or replace its terms")
def replace_meter(meter_id: int, body: VirtualMeterIn, p: Writer, conn: Conn) -> Created:
    row = _meter_or_404(conn, p, meter_id)
    _customer(conn, p, row["customer_id"])
    virtual_meters.save_meter(conn, p, row["customer_id"], body.name, _terms(body), meter_id=meter_id)
    return Created(id=meter_id)


@router.delete("/virtual-meters/{meter_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a virtual meter that no other meter counts")
def delete_meter(meter_id: int, p: Writer, conn: Conn) -> None:
    row = _meter_or_404(conn, p, meter_id)
    _customer(conn, p, row["customer_id"])
    virtual_meters.delete_meter(conn, p, meter_id)


@router.get("/virtual-meters/{meter_id}/measurements", response_model=list[MeterPoint],
            summary="The meter's energy, mean power and coverage per bucket")
def measurements(meter_id: int, p: Reader, conn: Conn, t_from: From, t_to: To,
                 resolution: Resolution = Resolution.HOUR1) -> list[dict[str, Any]]:
    t_from, t_to = checked_range(t_from, t_to)
    if (t_to - t_from).total_seconds() / 60 / resolution.minutes > 100_000:
        raise Problem(422, "Too many points", "ask for a coarser resolution or a shorter range")
    series = meter_series(conn, p, meter_id, resolution, t_from, t_to)
    if series is None:
        raise not_found("virtual meter")
    return [{"bucket": datetime.fromtimestamp(b, UTC), "energy_wh": e, "mean_power_w": w, "coverage": c}
            for b, e, w, c in zip(series.bucket_s.tolist(), series.energy_wh.tolist(), series.mean_power_w.tolist(),
                                  series.coverage.tolist(), strict=True)]


@router.get("/virtual-meters/{meter_id}/cost", response_model=MeterCostOut,
            summary="The meter's energy cost by band (each node priced on its own site's tariffs)")
def cost(meter_id: int, p: CostReader, conn: Conn, t_from: From, t_to: To) -> dict[str, Any]:
    t_from, t_to = checked_range(t_from, t_to)
    try:
        found = meter_cost(conn, p, meter_id, t_from, t_to)
    except TariffError as exc:
        raise Problem(422, "Cannot cost", str(exc)) from exc
    if found is None:
        raise not_found("virtual meter")
    return {"currency": found.currency, "energy_wh": found.energy_wh, "energy_cost": found.energy_cost_minor / 100,
            "energy_cost_minor": found.energy_cost_minor,
            "by_band": {band: minor / 100 for band, minor in found.by_band_minor.items()}}


@router.get("/virtual-meters/{meter_id}/emissions", response_model=MeterCo2eOut,
            summary="The meter's energy and CO2e (each node at its own site's emission factors; whole hours)")
def emissions(meter_id: int, p: Reader, conn: Conn, t_from: From, t_to: To) -> dict[str, Any]:
    t_from, t_to = checked_range(t_from, t_to)
    found = meter_co2e(conn, p, meter_id, t_from, t_to)
    if found is None:
        raise not_found("virtual meter")
    return asdict(found)
