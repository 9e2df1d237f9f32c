"""Customers, sites, the electrical hierarchy, bridges and tariffs."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Body, Query, UploadFile, status
from fastapi.responses import Response

from api.deps import Admin, Commissioner, Conn, Reader, Writer
from api.problems import Problem, not_found
from api.schemas import (
    Bridge,
    BridgeIn,
    BridgePatch,
    Created,
    Customer,
    CustomerIn,
    CustomerPatch,
    Node,
    NodeIn,
    NodePatch,
    Site,
    SiteIn,
    SitePatch,
    TariffIn,
)
from wattline import audit, catalogue, queries
from wattline.accounts import Principal
from wattline.domain import Connection, Role

router = APIRouter(prefix="/v1", tags=["catalogue"])
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
CSV_COLUMNS = ("external_ref", "parent_ref", "kind", "name", "nominal_voltage_v", "power_factor", "connection",
               "asset_type")


def _site_or_404(conn: psycopg.Connection[Any], p: Principal, site_id: int) -> dict[str, Any]:
    site = queries.site(conn, p, site_id)
    if site is None:
        raise not_found("site")
    return site


@router.get("/customers", response_model=list[Customer], summary="Customers you can see")
def list_customers(p: Reader, conn: Conn, limit: Limit = 100, offset: Offset = 0) -> list[dict[str, Any]]:
    return queries.customers(conn, p, limit=limit, offset=offset)


@router.post("/customers", response_model=Created, status_code=status.HTTP_201_CREATED,
             summary="Create a customer (reseller admins)")
def create_customer(body: CustomerIn, p: Admin, conn: Conn) -> Created:
    if p.role is not Role.RESELLER_ADMIN or p.reseller_id is None:
        raise Problem(403, "Forbidden", "only a reseller admin creates customers")
    cid = catalogue.upsert_customer(conn, p.reseller_id, body.name)
    if body.billing_email:
        conn.execute("UPDATE customers SET billing_email = %s WHERE id = %s", (body.billing_email, cid))
    return Created(id=cid)


@router.get("/customers/{customer_id}", response_model=Customer)
def get_customer(customer_id: int, p: Reader, conn: Conn) -> dict[str, Any]:
    row = queries.customer(conn, p, customer_id)
    if row is None:
        raise not_found("customer")
    if not p.can("admin"):  # a billing contact and payment data: personal, for admins only
        return {**row, "billing_email": None, "card_last4": None}
    if row["billing_email"] or row["card_last4"]:
        audit.record(conn, p, "read", "customer", customer_id, fields=["billing_email", "card_last4"])
    return row


@router.get("/sites", response_model=list[Site], summary="Sites you can see")
def list_sites(p: Reader, conn: Conn, limit: Limit = 100, offset: Offset = 0) -> list[dict[str, Any]]:
    return queries.sites(conn, p, limit=limit, offset=offset)


@router.post("/sites", response_model=Created, status_code=status.HTTP_201_CREATED)
def create_site(body: SiteIn, p: Writer, conn: Conn) -> Created:
    customer_id = body.customer_id if p.reseller_id is not None else p.customer_id
    if customer_id is None or queries.customer(conn, p, customer_id) is None:
        raise not_found("customer")
    site_id = catalogue.upsert_site(conn, customer_id, body.name, timezone=body.timezone, country=body.country,
                                    floor_area_m2=body.floor_area_m2,
                                    opening_hours={k: list(v) for k, v in body.opening_hours.items()})
    return Created(id=site_id)


@router.get("/sites/{site_id}", response_model=Site)
def get_site(site_id: int, p: Reader, conn: Conn) -> dict[str, Any]:
    return _site_or_404(conn, p, site_id)


@router.get("/sites/{site_id}/tree", response_model=list[Node], summary="The electrical hierarchy, parents first")
def get_tree(site_id: int, p: Reader, conn: Conn) -> list[dict[str, Any]]:
    _site_or_404(conn, p, site_id)
    return queries.tree(conn, p, site_id)


@router.post("/sites/{site_id}/nodes", response_model=Created, status_code=status.HTTP_201_CREATED,
             summary="Add a panel, circuit or device")
def create_node(site_id: int, body: NodeIn, p: Writer, conn: Conn) -> Created:
    _site_or_404(conn, p, site_id)
    parent = queries.node(conn, p, body.parent_id)
    if parent is None or parent["site_id"] != site_id:
        raise not_found("parent node")
    node_id = catalogue.upsert_node(conn, site_id, body.parent_id, body.kind, body.name,
                                    body.external_ref or f"node-{body.parent_id}-{body.name}",
                                    nominal_voltage_v=body.nominal_voltage_v, power_factor=body.power_factor,
                                    connection=body.connection, asset_type=body.asset_type)
    return Created(id=node_id)


@router.get("/nodes/{node_id}", response_model=Node)
def get_node(node_id: int, p: Reader, conn: Conn) -> dict[str, Any]:
    row = queries.node(conn, p, node_id)
    if row is None:
        raise not_found("node")
    return row


@router.patch("/nodes/{node_id}", response_model=Created, summary="Rename, re-rate or move a node")
def patch_node(node_id: int, body: NodePatch, p: Writer, conn: Conn) -> Created:
    row = queries.node(conn, p, node_id)
    if row is None:
        raise not_found("node")
    if body.parent_id is not None:
        parent = queries.node(conn, p, body.parent_id)
        if parent is None or parent["site_id"] != row["site_id"]:
            raise not_found("parent node")
    changes = body.model_dump(exclude_none=True)
    if not changes:
        return Created(id=node_id)
    sets = ", ".join(f"{k} = %({k})s" for k in changes)
    # Database check violations (a cycle, a wrong parent kind) become 422 problems in api.problems.
    with conn.transaction():
        conn.execute(f"UPDATE nodes SET {sets} WHERE id = %(id)s", {**changes, "id": node_id})
        # Totals above the moved node change: re-sum its site's history.
        conn.execute("""INSERT INTO rollup_dirty (ts_from, ts_to, sensor_ids)
                        SELECT min(r.ts), max(r.ts), array_agg(DISTINCT r.sensor_id)
                        FROM readings r JOIN sensors s ON s.id = r.sensor_id JOIN nodes n ON n.id = s.node_id
                        WHERE n.site_id = %s HAVING count(*) > 0""", (row["site_id"],))
    return Created(id=node_id)


@router.get("/sites/{site_id}/hierarchy.csv", summary="Export the hierarchy as CSV (installers' spreadsheet)",
            response_class=Response, responses={200: {"content": {"text/csv": {"example": (
                "external_ref,parent_ref,kind,name,nominal_voltage_v,power_factor,connection,asset_type\n"
                "MSB,,panel,Main switchboard,400.0,0.95,three_phase_wye,\n"
                "C1,MSB,circuit,Chiller 1,,,,refrigeration\n")}}}})
def export_hierarchy(site_id: int, p: Reader, conn: Conn) -> Response:
    _site_or_404(conn, p, site_id)
    rows = conn.execute(
        """SELECT n.external_ref, par.external_ref AS parent_ref, n.kind, n.name, n.nominal_voltage_v, n.power_factor,
                  n.connection, n.asset_type
           FROM nodes n LEFT JOIN nodes par ON par.id = n.parent_id
           WHERE n.site_id = %s AND n.kind <> 'site' ORDER BY n.id""", (site_id,)).fetchall()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow(["" if r[c] is None else r[c] for c in CSV_COLUMNS])
    return Response(out.getvalue(), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="site-{site_id}-hierarchy.csv"'})


@router.post("/sites/{site_id}/hierarchy.csv", response_model=Created,
             summary="Import (create or update) nodes from CSV; all rows or none")
def import_hierarchy(site_id: int, file: UploadFile, p: Writer, conn: Conn) -> Created:
    _site_or_404(conn, p, site_id)
    text = file.file.read(2_000_000).decode("utf-8-sig", errors="strict")
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or not {"external_ref", "parent_ref", "kind", "name"} <= set(reader.fieldnames):
        raise Problem(422, "Invalid CSV", f"columns must include external_ref, parent_ref, kind, name; "
                      f"export gives {', '.join(CSV_COLUMNS)}")
    count = 0
    try:
        with conn.transaction():
            root = catalogue.site_root(conn, site_id)
            refs = {r["external_ref"]: r["id"] for r in conn.execute(
                "SELECT external_ref, id FROM nodes WHERE site_id = %s AND external_ref IS NOT NULL", (site_id,))}
            for line, row in enumerate(reader, start=2):
                parent = root if not row.get("parent_ref") else refs.get(row["parent_ref"])
                if parent is None:
                    raise Problem(422, "Invalid CSV", f"line {line}: unknown parent_ref {row['parent_ref']!r} "
                                  "(parents must come before their children)")
                kind = row["kind"].strip()
                if kind not in ("panel", "circuit", "device") or not row.get("external_ref") or not row.get("name"):
                    raise Problem(422, "Invalid CSV", f"line {line}: kind, external_ref and name are required")
                refs[row["external_ref"]] = catalogue.upsert_node(
                    conn, site_id, parent, kind, row["name"], row["external_ref"],
                    nominal_voltage_v=float(row["nominal_voltage_v"]) if row.get("nominal_voltage_v") else None,
                    power_factor=float(row["power_factor"]) if row.get("power_factor") else None,
                    connection=Connection(row["connection"]) if row.get("connection") else None,
                    asset_type=row.get("asset_type") or None)
                count += 1
    except (psycopg.errors.IntegrityError, ValueError) as exc:
        detail = exc.diag.message_primary if isinstance(exc, psycopg.Error) and exc.diag else str(exc)
        raise Problem(422, "Invalid CSV", detail or "invalid row") from exc
    return Created(id=count)


@router.get("/sites/{site_id}/bridges", response_model=list[Bridge])
def list_bridges(site_id: int, p: Reader, conn: Conn, limit: Limit = 100, offset: Offset = 0) -> list[dict[str, Any]]:
    _site_or_404(conn, p, site_id)
    return queries.bridges(conn, p, site_id, limit=limit, offset=offset)


@router.post("/sites/{site_id}/bridges", response_model=Created, status_code=status.HTTP_201_CREATED,
             summary="Register a bridge by serial")
def create_bridge(site_id: int, body: BridgeIn, p: Commissioner, conn: Conn) -> Created:
    _site_or_404(conn, p, site_id)
    existing = conn.execute("SELECT site_id FROM bridges WHERE serial = %s", (body.serial,)).fetchone()
    if existing is not None and existing["site_id"] != site_id:
        raise Problem(409, "Conflict", "that bridge serial is registered elsewhere")
    return Created(id=catalogue.upsert_bridge(conn, site_id, body.serial, body.name))


@router.get("/sites/{site_id}/tariffs", summary="Tariff versions of a site, newest first",
            responses={200: {"content": {"application/json": {"example": [{
                "id": 1, "name": "Business day/night", "currency": "GBP", "valid_from": "2024-01-01T00:00:00Z",
                "standing_charge_minor_per_day": "95.0000", "demand_charge_minor_per_kw": "450.0000",
                "demand_interval_minutes": 30, "vat_rate": "0.2000",
                "bands": [{"name": "night", "rate_minor_per_kwh": "14.5000",
                           "day_types": ["weekday", "weekend", "holiday"], "start": "00:00:00",
                           "end": "07:00:00"}]}]}}}})
def list_tariffs(site_id: int, p: Reader, conn: Conn) -> list[dict[str, Any]]:
    _site_or_404(conn, p, site_id)
    tariffs = conn.execute("""SELECT id, name, currency, valid_from, standing_charge_minor_per_day,
                                     demand_charge_minor_per_kw, demand_interval_minutes, vat_rate
                              FROM tariffs WHERE site_id = %s ORDER BY valid_from DESC""", (site_id,)).fetchall()
    for t in tariffs:
        t["bands"] = conn.execute("""SELECT name, rate_minor_per_kwh, day_types, start_time AS start, end_time AS end
                                     FROM tariff_bands WHERE tariff_id = %s ORDER BY id""", (t["id"],)).fetchall()
    return tariffs


@router.post("/sites/{site_id}/tariffs", response_model=Created, status_code=status.HTTP_201_CREATED,
             summary="Add a tariff version (effective-dated; history is never rewritten)")
def create_tariff(site_id: int, p: Writer, conn: Conn, body: Annotated[TariffIn, Body()]) -> Created:
    from analytics.tariffs import TariffError, validate_bands

    _site_or_404(conn, p, site_id)
    bands = [catalogue.Band(b.name, b.rate_minor_per_kwh, tuple(b.day_types), b.start, b.end) for b in body.bands]
    try:
        validate_bands(bands)
    except TariffError as exc:
        raise Problem(422, "Invalid tariff", str(exc)) from exc
    with conn.transaction():
        tid = catalogue.add_tariff(conn, site_id, body.name, body.currency, body.valid_from, bands,
                                   standing_charge_minor_per_day=body.standing_charge_minor_per_day,
                                   demand_charge_minor_per_kw=body.demand_charge_minor_per_kw,
                                   demand_interval_minutes=body.demand_interval_minutes, vat_rate=body.vat_rate)
    return Created(id=tid)


def _patch(conn: psycopg.Connection[Any], table: str, row_id: int, changes: dict[str, Any]) -> None:
    if not changes:
        return
    from psycopg.types.json import Jsonb

    values = {k: Jsonb(v) if isinstance(v, dict) else v for k, v in changes.items()}
    sets = ", ".join(f"{k} = %({k})s" for k in values)
    conn.execute(f"UPDATE {table} SET {sets} WHERE id = %(row_id)s", {**values, "row_id": row_id})


def _delete(conn: psycopg.Connection[Any], table: str, row_id: int, what: str) -> Created:
    try:
        with conn.transaction():
            conn.execute(f"DELETE FROM {table} WHERE id = %s", (row_id,))
    except psycopg.errors.ForeignKeyViolation as exc:
        raise Problem(409, "Conflict", f"the {what} still has things attached (remove or move them first)") from exc
    return Created(id=row_id)


@router.patch("/customers/{customer_id}", response_model=Created,
              summary="Rename a customer or change its billing email")
def patch_customer(customer_id: int, body: CustomerPatch, p: Admin, conn: Conn) -> Created:
    if queries.customer(conn, p, customer_id) is None:
        raise not_found("customer")
    changes = body.model_dump(exclude_unset=True)
    _patch(conn, "customers", customer_id, changes)
    if "billing_email" in changes:
        audit.record(conn, p, "rectify", "customer", customer_id, fields=["billing_email"])
    return Created(id=customer_id)


@router.delete("/customers/{customer_id}", response_model=Created, summary="Delete a customer with no sites or users")
def delete_customer(customer_id: int, p: Admin, conn: Conn) -> Created:
    if p.reseller_id is None or queries.customer(conn, p, customer_id) is None:
        raise not_found("customer")
    return _delete(conn, "customers", customer_id, "customer")


@router.patch("/sites/{site_id}", response_model=Created, summary="Change a site's name, zone, area or opening hours")
def patch_site(site_id: int, body: SitePatch, p: Writer, conn: Conn) -> Created:
    _site_or_404(conn, p, site_id)
    changes = body.model_dump(exclude_unset=True)
    if "opening_hours" in changes and changes["opening_hours"] is not None:
        changes["opening_hours"] = {k: list(v) for k, v in changes["opening_hours"].items()}
    _patch(conn, "sites", site_id, {k: v for k, v in changes.items() if v is not None})
    return Created(id=site_id)


@router.delete("/sites/{site_id}", response_model=Created, summary="Delete a site with no bridges")
def delete_site(site_id: int, p: Admin, conn: Conn) -> Created:
    _site_or_404(conn, p, site_id)
    return _delete(conn, "sites", site_id, "site")


@router.delete("/nodes/{node_id}", response_model=Created, summary="Delete a node with no children and no sensors")
def delete_node(node_id: int, p: Writer, conn: Conn) -> Created:
    row = queries.node(conn, p, node_id)
    if row is None:
        raise not_found("node")
    if row["kind"] == "site":
        raise Problem(422, "Cannot delete", "a site's root node goes with the site")
    try:
        with conn.transaction():  # the node's rollups go with it, or nothing does
            for table in ("rollups_1m", "rollups_15m", "rollups_1h", "rollups_1d"):
                conn.execute(f"DELETE FROM {table} WHERE node_id = %s", (node_id,))
            conn.execute("DELETE FROM nodes WHERE id = %s", (node_id,))
    except psycopg.errors.ForeignKeyViolation as exc:
        raise Problem(409, "Conflict", "the node still has children or sensors (move or unassign them first)") from exc
    return Created(id=node_id)


@router.patch("/bridges/{bridge_id}", response_model=Created, summary="Rename a bridge")
def patch_bridge(bridge_id: int, body: BridgePatch, p: Commissioner, conn: Conn) -> Created:
    if queries.bridge(conn, p, bridge_id) is None:
        raise not_found("bridge")
    _patch(conn, "bridges", bridge_id, body.model_dump())
    return Created(id=bridge_id)


@router.delete("/bridges/{bridge_id}", response_model=Created, summary="Remove a bridge that carries no sensors")
def delete_bridge(bridge_id: int, p: Commissioner, conn: Conn) -> Created:
    if queries.bridge(conn, p, bridge_id) is None:
        raise not_found("bridge")
    return _delete(conn, "bridges", bridge_id, "bridge")
