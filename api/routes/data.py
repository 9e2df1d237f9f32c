"""Measurements (JSON or CSV, streamed), usage by node, cost and demand peaks."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from api.deps import Conn, Reader
from api.problems import Problem, not_found
from api.schemas import Usage
from wattline import queries
from wattline.accounts import Principal
from wattline.domain import Resolution

router = APIRouter(prefix="/v1", tags=["data"])
MAX_POINTS = 2_000_000


def _range(t_from: datetime, t_to: datetime) -> tuple[datetime, datetime]:
    t_from = t_from if t_from.tzinfo else t_from.replace(tzinfo=UTC)
    t_to = t_to if t_to.tzinfo else t_to.replace(tzinfo=UTC)
    if t_to <= t_from:
        raise Problem(422, "Invalid range", "'to' must be after 'from'")
    if t_to - t_from > timedelta(days=3660):
        raise Problem(422, "Invalid range", "at most ten years per request")
    return t_from, t_to


def _stream(request: Request, p: Principal, node_id: int, resolution: Resolution, t_from: datetime,
            t_to: datetime, fmt: str) -> Iterator[bytes]:
    with request.app.state.pool.connection() as conn, conn.transaction():
        rows = queries.measurements(conn, p, node_id, resolution, t_from, t_to)
        if fmt == "csv":
            buf = io.StringIO()
            writer = csv.writer(buf)
            writer.writerow(queries.EXPORT_COLUMNS)
            for n, row in enumerate(rows, start=1):
                row["time_utc"] = row["time_utc"].astimezone(UTC).isoformat().replace("+00:00", "Z")
                writer.writerow(["" if row[c] is None else row[c] for c in queries.EXPORT_COLUMNS])
                if n % 2000 == 0:
                    yield buf.getvalue().encode()
                    buf.seek(0)
                    buf.truncate()
            yield buf.getvalue().encode()
        else:
            # Chunks of rows, not a row per chunk: Starlette moves every chunk of a sync
            # generator across a thread, which costs more than encoding the row.
            yield b"["
            first = True
            chunk: list[dict[str, Any]] = []
            for row in rows:
                chunk.append(row)
                if len(chunk) == 2000:
                    yield (b"" if first else b",") + orjson.dumps(chunk, option=_JSON)[1:-1]
                    first, chunk = False, []
            if chunk:
                yield (b"" if first else b",") + orjson.dumps(chunk, option=_JSON)[1:-1]
            yield b"]"


_JSON = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


@router.get("/nodes/{node_id}/measurements", summary="Measurements of a node (circuit, panel or site root)",
            responses={200: {"content": {"application/json": {}, "text/csv": {}},
                             "description": "PowerRadar export columns: " + ", ".join(queries.EXPORT_COLUMNS)}})
def node_measurements(node_id: int, request: Request, p: Reader, conn: Conn,
                      t_from: Annotated[datetime, Query(alias="from", examples=["2026-11-01T00:00:00Z"])],
                      t_to: Annotated[datetime, Query(alias="to", examples=["2026-11-02T00:00:00Z"])],
                      resolution: Resolution = Resolution.MIN15,
                      format: Literal["json", "csv"] = "json") -> StreamingResponse:
    t_from, t_to = _range(t_from, t_to)
    if queries.node(conn, p, node_id) is None:
        raise not_found("node")
    points = (t_to - t_from).total_seconds() / 60 / resolution.minutes
    if points > MAX_POINTS:
        raise Problem(422, "Range too large", f"{int(points)} buckets at {resolution.value}; use a coarser resolution")
    media = "text/csv" if format == "csv" else "application/json"
    headers = {"Content-Disposition": f'attachment; filename="node-{node_id}-{resolution.value}.csv"'} \
        if format == "csv" else {}
    return StreamingResponse(_stream(request, p, node_id, resolution, t_from, t_to, format), media_type=media,
                             headers=headers)


@router.get("/sites/{site_id}/usage", response_model=list[Usage], summary="Energy per node over a range")
def site_usage(site_id: int, p: Reader, conn: Conn,
               t_from: Annotated[datetime, Query(alias="from")], t_to: Annotated[datetime, Query(alias="to")]
               ) -> list[dict[str, Any]]:
    t_from, t_to = _range(t_from, t_to)
    if queries.site(conn, p, site_id) is None:
        raise not_found("site")
    return queries.usage_by_node(conn, p, site_id, t_from, t_to)


@router.get("/sites/{site_id}/cost", summary="Cost over a range: invoice lines by band, standing, demand, VAT; "
            "energy cost per node",
            responses={200: {"content": {"application/json": {"example": {
                "currency": "GBP", "total": "1033.55", "total_minor": 103355,
                "lines": [{"label": "day", "kind": "energy", "quantity": "92.054", "amount": "26.35",
                           "amount_minor": 2635},
                          {"label": "standing charge", "kind": "standing", "quantity": "2", "amount": "1.90",
                           "amount_minor": 190}],
                "demand_peaks": [{"month": "2026-11", "peak_kw": 184.1, "at": "2026-11-23T07:00:00Z"}],
                "nodes": [{"node_id": 4, "energy_wh": 74012.5, "energy_cost": "19.29", "by_band": {"day": "15.10"}}],
            }}}}})
def site_cost(site_id: int, p: Reader, conn: Conn,
              t_from: Annotated[datetime, Query(alias="from")], t_to: Annotated[datetime, Query(alias="to")]
              ) -> dict[str, Any]:
    from analytics.costing import site_cost as compute
    from analytics.tariffs import TariffError

    t_from, t_to = _range(t_from, t_to)
    try:
        cost = compute(conn, p, site_id, t_from, t_to)
    except TariffError as exc:
        raise Problem(422, "Cannot cost", str(exc)) from exc
    if cost is None:
        raise not_found("site")
    inv = cost.invoice
    return {
        "currency": inv.currency,
        "total": str(inv.total),
        "total_minor": int(inv.total_minor),
        "lines": [{"label": line.label, "kind": line.kind, "quantity": str(line.quantity),
                   "amount": str(line.minor / 100), "amount_minor": int(line.minor)} for line in inv.lines],
        "demand_peaks": inv.demand_peaks,
        "nodes": [{"node_id": n.node_id, "energy_wh": n.energy_wh, "energy_cost": str(n.energy_cost_minor / 100),
                   "by_band": {k: str(v / 100) for k, v in n.by_band_minor.items()}} for n in cost.nodes],
    }
