"""Measurements (JSON or CSV, streamed), usage by node, cost and demand peaks."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from api.deps import Conn, CostReader, Reader, visible_site
from api.problems import Problem, not_found
from api.schemas import EnergyBalance, Usage
from wattline import export_format, queries
from wattline.domain import Resolution
from wattline.generation import balance_totals
from wattline.principal import Principal

router = APIRouter(prefix="/v1", tags=["data"])
_ROW_EXAMPLE = {"device_id": 12, "device_name": "Chiller 2", "time_utc": "2026-11-23T07:00:00Z",
                "resolution_minutes": 15, "site_id": 1, "site_name": "Leeds depot", "current_a": 41.2,
                "voltage_v": 230.9, "power_w": 8752.3, "power_factor": 0.92, "energy_wh": 2188.1, "coverage": 1.0,
                "samples": 90, "generation_wh": None, "export_wh": None}
_CSV_EXAMPLE = ("device_id,device_name,time_utc,resolution_minutes,site_id,site_name,current_a,voltage_v,power_w,"
                "power_factor,energy_wh,coverage,samples,generation_wh,export_wh\n"
                "12,Chiller 2,2026-11-23T07:00:00Z,15,1,Leeds depot,41.2,230.9,8752.3,0.92,2188.1,1.0,90,,\n")
MEASUREMENT_RESPONSES: dict[int | str, dict[str, Any]] = {200: {
    "description": "PowerRadar export columns, then generation_wh and export_wh (empty without generation), "
                   "oldest first",
    "content": {"application/json": {"example": [_ROW_EXAMPLE]}, "text/csv": {"example": _CSV_EXAMPLE}}}}
MAX_POINTS = 2_000_000
# Outside these, interval arithmetic (a gap's margin, a local day) overflows Python's dates.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def checked_range(t_from: datetime, t_to: datetime) -> tuple[datetime, datetime]:
    t_from = t_from if t_from.tzinfo else t_from.replace(tzinfo=UTC)
    t_to = t_to if t_to.tzinfo else t_to.replace(tzinfo=UTC)
    if t_from < EARLIEST or t_to > LATEST:
        raise Problem(422, "Invalid range", f"times must lie between {EARLIEST:%Y} and {LATEST:%Y}")
    if t_to < t_from:  # an empty range (from == to) is a fair question: its answer is empty
        raise Problem(422, "Invalid range", "'to' must be at or after 'from'")
    if t_to - t_from > timedelta(days=3660):
        raise Problem(422, "Invalid range", "at most ten years per request")
    return t_from, t_to


#: How long a streamed export waits for a database connection before it is refused (503).
STREAM_WAIT_S = 10.0


class ClosingStreamingResponse(StreamingResponse):
    """A streamed body whose generator is closed the moment the response ends: finished,
    failed, or the client gone.

    Starlette drops an unfinished body iterator and leaves closing it to the garbage
    collector; a hang-up's frames sit in a reference cycle (the cancellation's traceback),
    so the export's database connection came back only at the next full collection,
    seconds to minutes later, while new exports waited on a pool of leaked connections.
    Closing runs in a worker thread (it cancels a COPY: network I/O) and is shielded, so
    the cancellation that ended the response cannot skip it."""

    def __init__(self, content: Generator[bytes], media_type: str, headers: dict[str, str]) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self._source = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._source.close)


def _open_stream(request: Request, p: Principal, nodes_of: Callable[[Any], list[int] | None],
                 resolution: Resolution, t_from: datetime, t_to: datetime, fmt: str) -> Generator[bytes]:
    """Take a connection and run the query *before* the response starts, then stream.

    A 200 cannot become an error once its first byte is out: a full pool or a failing
    query must surface here, as a 503 or a problem, never as a truncated body. The export
    holds this one connection only (`nodes_of` finds the nodes on it: None is a 404)."""
    pool = request.app.state.pool
    conn = pool.getconn(timeout=STREAM_WAIT_S)  # PoolTimeout: 503 with Retry-After (api.problems)
    stack = ExitStack()
    stack.callback(pool.putconn, conn)
    try:
        node_ids = nodes_of(conn)
        if node_ids is None:
            raise not_found("node")
        stack.enter_context(conn.transaction())
        batches = queries.measurement_batches(conn, p, node_ids, resolution, t_from, t_to)
        stack.callback(batches.close)  # first out: the COPY ends before the connection goes back
        first = next(batches, None)  # runs the query and fetches the first batch
    except BaseException:
        stack.close()
        raise
    return _encode(itertools.chain([] if first is None else [first], batches), fmt, stack)


def _encode(batches: Iterator[queries.MeasurementBatch], fmt: str, stack: ExitStack) -> Generator[bytes]:
    with stack:  # the connection goes back when the body ends, or the client goes away
        yield from export_format.chunks(batches, fmt)




@router.get("/nodes/{node_id}/measurements", summary="Measurements of a node (circuit, panel or site root)",
            responses=MEASUREMENT_RESPONSES)
def node_measurements(node_id: int, request: Request, p: Reader,
                      t_from: Annotated[datetime, Query(alias="from", examples=["2026-11-01T00:00:00Z"])],
                      t_to: Annotated[datetime, Query(alias="to", examples=["2026-11-02T00:00:00Z"])],
                      resolution: Resolution = Resolution.MIN15,
                      format: Literal["json", "csv"] = "json") -> StreamingResponse:
    def visible(conn: Any) -> list[int] | None:
        return [node_id] if queries.node(conn, p, node_id) is not None else None

    return _measurements(request, p, visible, f"node-{node_id}", t_from, t_to, resolution, format)


def _check_points(t_from: datetime, t_to: datetime, resolution: Resolution, nodes: int = 1) -> None:
    points = (t_to - t_from).total_seconds() / 60 / resolution.minutes * nodes
    if points > MAX_POINTS:
        raise Problem(422, "Range too large", f"{int(points)} buckets at {resolution.value} (over {MAX_POINTS} a "
                      "request); use a coarser resolution or a shorter range")


def _measurements(request: Request, p: Principal, nodes_of: Callable[[Any], list[int] | None], name: str,
                  t_from: datetime, t_to: datetime, resolution: Resolution, format: str) -> StreamingResponse:
    t_from, t_to = checked_range(t_from, t_to)
    _check_points(t_from, t_to, resolution)
    media = "text/csv" if format == "csv" else "application/json"
    headers = {"Content-Disposition": f'attachment; filename="{name}-{resolution.value}.csv"'} \
        if format == "csv" else {}
    return ClosingStreamingResponse(_open_stream(request, p, nodes_of, resolution, t_from, t_to, format),
                                    media_type=media, headers=headers)


@router.get("/sites/{site_id}/usage", response_model=list[Usage], summary="Energy per node over a range")
def site_usage(site_id: int, p: Reader, conn: Conn,
               t_from: Annotated[datetime, Query(alias="from")], t_to: Annotated[datetime, Query(alias="to")]
               ) -> list[dict[str, Any]]:
    t_from, t_to = checked_range(t_from, t_to)
    visible_site(conn, p, site_id)
    return queries.usage_by_node(conn, p, site_id, t_from, t_to)


@router.get("/sites/{site_id}/energy-balance", response_model=EnergyBalance,
            summary="Consumption, generation, import, export and self-consumption of a site over a range")
def energy_balance(site_id: int, p: Reader, conn: Conn,
                   t_from: Annotated[datetime, Query(alias="from")], t_to: Annotated[datetime, Query(alias="to")],
                   resolution: Resolution = Resolution.HOUR1) -> dict[str, Any]:
    """From the site root's rollups: export is netted minute by minute (what an export meter
    registers), then summed to the resolution asked. A site without generation has
    generation, export and self-consumption 0 and import equal to consumption."""
    t_from, t_to = checked_range(t_from, t_to)
    _check_points(t_from, t_to, resolution)
    visible_site(conn, p, site_id)
    buckets = queries.energy_balance(conn, p, site_id, t_from, t_to, resolution)
    return {"site_id": site_id, "resolution": resolution, "totals": balance_totals(buckets), "buckets": buckets}


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
def site_cost(site_id: int, p: CostReader, conn: Conn,
              t_from: Annotated[datetime, Query(alias="from")], t_to: Annotated[datetime, Query(alias="to")]
              ) -> dict[str, Any]:
    from analytics.costing import site_cost as compute
    from wattline.tariffs import TariffError

    t_from, t_to = checked_range(t_from, t_to)
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


@router.get("/sites/{site_id}/measurements", summary="Measurements of a whole site (its root node)",
            responses=MEASUREMENT_RESPONSES)
def site_measurements(site_id: int, request: Request, p: Reader,
                      t_from: Annotated[datetime, Query(alias="from")], t_to: Annotated[datetime, Query(alias="to")],
                      resolution: Resolution = Resolution.MIN15,
                      format: Literal["json", "csv"] = "json") -> StreamingResponse:
    def root(conn: Any) -> list[int] | None:
        node = next((n for n in queries.tree(conn, p, site_id) if n["kind"] == "site"), None)
        return None if node is None else [int(node["id"])]

    return _measurements(request, p, root, f"site-{site_id}", t_from, t_to, resolution, format)


@router.get("/sites/{site_id}/export", summary="Measurements of every node of a site (circuits, boards, the "
            "root), streamed: one file, PowerRadar's columns, by node then time", responses=MEASUREMENT_RESPONSES)
def site_export(site_id: int, request: Request, p: Reader,
                t_from: Annotated[datetime, Query(alias="from")], t_to: Annotated[datetime, Query(alias="to")],
                resolution: Resolution = Resolution.MIN15,
                format: Literal["json", "csv"] = "json") -> StreamingResponse:
    """The scheduled export's file, on demand. At most 2,000,000 rows a request (nodes ×
    buckets): a month of 15-minute rows of a 500-circuit site is 1.5 M."""
    def every_node(conn: Any) -> list[int] | None:
        nodes = [int(n["id"]) for n in queries.tree(conn, p, site_id)]
        if not nodes:
            return None
        _check_points(*checked_range(t_from, t_to), resolution, len(nodes))
        return nodes

    return _measurements(request, p, every_node, f"site-{site_id}-all", t_from, t_to, resolution, format)


@router.get("/sensors/{serial}/measurements", summary="Measurements of one sensor (one conductor), from its raw "
            "readings", responses=MEASUREMENT_RESPONSES)
def sensor_measurements(serial: str, request: Request, p: Reader, conn: Conn,
                        t_from: Annotated[datetime, Query(alias="from")],
                        t_to: Annotated[datetime, Query(alias="to")],
                        resolution: Resolution = Resolution.MIN15,
                        format: Literal["json", "csv"] = "json") -> Response:
    """Buckets are computed on request by the same Numba core as the rollups (a sensor's
    history is its raw readings, in either tier; rollups are kept per node). 1 h and 1 d
    follow the site's clock and calendar, as node rollups do."""
    from analytics.sensor_buckets import sensor_buckets

    t_from, t_to = checked_range(t_from, t_to)
    if t_to - t_from > timedelta(days=93):
        raise Problem(422, "Range too large", "a sensor's raw readings are kept about 3 months; ask for ≤ 93 days")
    settings = request.app.state.settings
    gap = settings.reporting_interval_s * settings.gap_factor
    meta, raw = queries.sensor_readings(conn, p, serial, t_from - timedelta(seconds=gap),
                                        t_to + timedelta(seconds=gap))
    if meta is None:
        raise not_found("sensor")
    batch = sensor_buckets(meta, raw, resolution, t_from, t_to, gap)
    return Response(export_format.body([batch], format),
                    media_type="text/csv" if format == "csv" else "application/json")
