"""Customers, sites, the electrical hierarchy, bridges and tariffs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, UploadFile, status
from fastapi.responses import Response

from api.deps import Admin, Builder, Commissioner, Conn, CostReader, Reader, Writer, visible_site
from api.problems import Problem, not_found
from api.schemas import (
    Bridge,
    BridgeIn,
    BridgePatch,
    BridgeRegistered,
    Created,
    CredentialState,
    Customer,
    CustomerIn,
    CustomerPatch,
    MqttCredential,
    Node,
    NodeIn,
    NodePatch,
    Site,
    SiteIn,
    SitePatch,
    TariffIn,
)
from wattline import audit, bridge_credentials, catalogue, queries
from wattline.bridge_credentials import Credential
from wattline.domain import Role
from wattline.tariffs import Band, add_tariff, tariff_versions

router = APIRouter(prefix="/v1", tags=["catalogue"])
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]


@router.get("/customers", response_model=list[Customer], summary="Customers you can see")
def list_customers(p: Reader, conn: Conn, limit: Limit = 100, offset: Offset = 0) -> list[dict[str, Any]]:
    return queries.customers(conn, p, limit=limit, offset=offset)


@router.post("/customers", response_model=Created, status_code=status.HTTP_201_CREATED,
             summary="Create a customer (reseller admins)")
def create_customer(body: CustomerIn, p: Admin, conn: Conn) -> Created:
    if p.role is not Role.RESELLER_ADMIN or p.reseller_id is None:
        raise Problem(403, "Forbidden", "only a reseller admin creates customers")
    return Created(id=catalogue.create_customer(conn, p, p.reseller_id, body.name, body.billing_email))


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
    site_id = catalogue.create_site(conn, p, customer_id, body.name, timezone=body.timezone, country=body.country,
                                    floor_area_m2=body.floor_area_m2,
                                    opening_hours={k: list(v) for k, v in body.opening_hours.items()})
    return Created(id=site_id)


@router.get("/sites/{site_id}", response_model=Site)
def get_site(site_id: int, p: Reader, conn: Conn) -> dict[str, Any]:
    return visible_site(conn, p, site_id)


@router.get("/sites/{site_id}/tree", response_model=list[Node], summary="The electrical hierarchy, parents first")
def get_tree(site_id: int, p: Reader, conn: Conn) -> list[dict[str, Any]]:
    visible_site(conn, p, site_id)
    return queries.tree(conn, p, site_id)


@router.post("/sites/{site_id}/nodes", response_model=Created, status_code=status.HTTP_201_CREATED,
             summary="Add a panel, circuit or device")
def create_node(site_id: int, body: NodeIn, p: Builder, conn: Conn) -> Created:
    visible_site(conn, p, site_id)
    node_id = catalogue.create_node(conn, p, site_id, body.parent_id, body.kind, body.name, body.external_ref,
                                    nominal_voltage_v=body.nominal_voltage_v, power_factor=body.power_factor,
                                    connection=body.connection, asset_type=body.asset_type, flow=body.flow)
    return Created(id=node_id)


@router.get("/nodes/{node_id}", response_model=Node)
def get_node(node_id: int, p: Reader, conn: Conn) -> dict[str, Any]:
    row = queries.node(conn, p, node_id)
    if row is None:
        raise not_found("node")
    return row


@router.patch("/nodes/{node_id}", response_model=Created,
              summary="Rename, re-rate or move a node, or set its flow (consumption or generation)")
def patch_node(node_id: int, body: NodePatch, p: Builder, conn: Conn) -> Created:
    if queries.node(conn, p, node_id) is None:
        raise not_found("node")
    catalogue.update_node(conn, p, node_id, body.model_dump(exclude_none=True))
    return Created(id=node_id)


@router.get("/sites/{site_id}/hierarchy.csv", summary="Export the hierarchy as CSV (installers' spreadsheet)",
            response_class=Response, responses={200: {"content": {"text/csv": {"example": (
                "external_ref,parent_ref,kind,name,nominal_voltage_v,power_factor,connection,asset_type,flow\n"
                "MSB,,panel,Main switchboard,400.0,0.95,three_phase_wye,,consumption\n"
                "C1,MSB,circuit,Chiller 1,,,,refrigeration,consumption\n"
                "PV1,MSB,circuit,Rooftop PV,,,,pv,generation\n")}}}})
def export_hierarchy(site_id: int, p: Reader, conn: Conn) -> Response:
    visible_site(conn, p, site_id)
    return Response(catalogue.export_hierarchy(conn, site_id), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="site-{site_id}-hierarchy.csv"'})


@router.post("/sites/{site_id}/hierarchy.csv", response_model=Created,
             summary="Import (create or update) nodes from CSV; all rows or none")
def import_hierarchy(site_id: int, file: UploadFile, p: Builder, conn: Conn) -> Created:
    visible_site(conn, p, site_id)
    return Created(id=catalogue.import_hierarchy(conn, p, site_id, file.file.read(2_000_000)))


@router.get("/sites/{site_id}/bridges", response_model=list[Bridge])
def list_bridges(site_id: int, p: Reader, conn: Conn, limit: Limit = 100, offset: Offset = 0) -> list[dict[str, Any]]:
    visible_site(conn, p, site_id)
    return queries.bridges(conn, p, site_id, limit=limit, offset=offset)


@router.post("/sites/{site_id}/bridges", response_model=BridgeRegistered, status_code=status.HTTP_201_CREATED,
             summary="Register a bridge by serial; the first registration issues its MQTT credential (shown once)")
def create_bridge(site_id: int, body: BridgeIn, request: Request, p: Commissioner, conn: Conn) -> BridgeRegistered:
    visible_site(conn, p, site_id)
    settings = request.app.state.settings
    bridge_id, credential = catalogue.register_bridge(
        conn, p, site_id, body.serial, body.name, claim_code=body.claim_code, claim_key=settings.claim_key,
        credential_key=settings.bridge_credential_key)
    return BridgeRegistered(id=bridge_id, mqtt=None if credential is None else _shown(credential))


def _shown(credential: Credential) -> MqttCredential:
    return MqttCredential.model_validate(credential, from_attributes=True)


@router.get("/bridges/{bridge_id}/credentials", response_model=CredentialState,
            summary="The bridge's MQTT credential (never its password) and whether the broker holds it yet")
def get_bridge_credential(bridge_id: int, p: Commissioner, conn: Conn) -> CredentialState:
    if queries.bridge(conn, p, bridge_id) is None:
        raise not_found("bridge")
    state = bridge_credentials.state(conn, bridge_id)
    if state is None:
        raise not_found("credential of that bridge")
    return CredentialState.model_validate(state, from_attributes=True)


@router.post("/bridges/{bridge_id}/credentials", response_model=MqttCredential, status_code=status.HTTP_201_CREATED,
             summary="Issue the bridge a new MQTT password (rotation); the old one stops working within seconds")
def rotate_bridge_credential(bridge_id: int, request: Request, p: Commissioner, conn: Conn) -> MqttCredential:
    if queries.bridge(conn, p, bridge_id) is None:
        raise not_found("bridge")
    return _shown(bridge_credentials.issue(conn, p, bridge_id, key=request.app.state.settings.bridge_credential_key))


@router.delete("/bridges/{bridge_id}/credentials", response_model=Created,
               summary="Revoke the bridge's MQTT credential: within seconds it is disconnected and refused")
def revoke_bridge_credential(bridge_id: int, p: Commissioner, conn: Conn) -> Created:
    if queries.bridge(conn, p, bridge_id) is None:
        raise not_found("bridge")
    bridge_credentials.revoke(conn, p, bridge_id)
    return Created(id=bridge_id)


@router.get("/sites/{site_id}/tariffs", summary="Tariff versions of a site, newest first",
            responses={200: {"content": {"application/json": {"example": [{
                "id": 1, "name": "Business day/night", "currency": "GBP", "valid_from": "2024-01-01T00:00:00Z",
                "standing_charge_minor_per_day": "95.0000", "demand_charge_minor_per_kw": "450.0000",
                "demand_interval_minutes": 30, "vat_rate": "0.2000", "export_rate_minor_per_kwh": "15.0000",
                "bands": [{"name": "night", "rate_minor_per_kwh": "14.5000",
                           "day_types": ["weekday", "weekend", "holiday"], "start": "00:00:00",
                           "end": "07:00:00"}]}]}}}})
def list_tariffs(site_id: int, p: CostReader, conn: Conn) -> list[dict[str, Any]]:
    visible_site(conn, p, site_id)
    return tariff_versions(conn, site_id)


@router.post("/sites/{site_id}/tariffs", response_model=Created, status_code=status.HTTP_201_CREATED,
             summary="Add a tariff version (effective-dated; history is never rewritten)")
def create_tariff(site_id: int, p: Writer, conn: Conn, body: Annotated[TariffIn, Body()]) -> Created:
    visible_site(conn, p, site_id)
    bands = [Band(b.name, b.rate_minor_per_kwh, tuple(b.day_types), b.start, b.end) for b in body.bands]
    tid = add_tariff(conn, site_id, body.name, body.currency, body.valid_from, bands,
                     standing_charge_minor_per_day=body.standing_charge_minor_per_day,
                     demand_charge_minor_per_kw=body.demand_charge_minor_per_kw,
                     demand_interval_minutes=body.demand_interval_minutes, vat_rate=body.vat_rate,
                     export_rate_minor_per_kwh=body.export_rate_minor_per_kwh, actor=p)
    return Created(id=tid)


@router.patch("/customers/{customer_id}", response_model=Created,
              summary="Rename a customer or change its billing email")
def patch_customer(customer_id: int, body: CustomerPatch, p: Admin, conn: Conn) -> Created:
    if queries.customer(conn, p, customer_id) is None:
        raise not_found("customer")
    catalogue.update_customer(conn, p, customer_id, body.model_dump(exclude_unset=True))
    return Created(id=customer_id)


@router.delete("/customers/{customer_id}", response_model=Created, summary="Delete a customer with no sites or users")
def delete_customer(customer_id: int, p: Admin, conn: Conn) -> Created:
    if p.reseller_id is None or queries.customer(conn, p, customer_id) is None:
        raise not_found("customer")
    catalogue.delete_customer(conn, p, customer_id)
    return Created(id=customer_id)


@router.patch("/sites/{site_id}", response_model=Created, summary="Change a site's name, zone, area or opening hours")
def patch_site(site_id: int, body: SitePatch, p: Writer, conn: Conn) -> Created:
    visible_site(conn, p, site_id)
    changes = body.model_dump(exclude_unset=True)
    if "opening_hours" in changes and changes["opening_hours"] is not None:
        changes["opening_hours"] = {k: list(v) for k, v in changes["opening_hours"].items()}
    catalogue.update_site(conn, p, site_id, {k: v for k, v in changes.items() if v is not None})
    return Created(id=site_id)


@router.delete("/sites/{site_id}", response_model=Created, summary="Delete a site with no bridges")
def delete_site(site_id: int, p: Admin, conn: Conn) -> Created:
    visible_site(conn, p, site_id)
    catalogue.delete_site(conn, p, site_id)
    return Created(id=site_id)


@router.delete("/nodes/{node_id}", response_model=Created, summary="Delete a node with no children and no sensors")
def delete_node(node_id: int, p: Builder, conn: Conn) -> Created:
    if queries.node(conn, p, node_id) is None:
        raise not_found("node")
    catalogue.delete_node(conn, p, node_id)
    return Created(id=node_id)


@router.patch("/bridges/{bridge_id}", response_model=Created, summary="Rename a bridge")
def patch_bridge(bridge_id: int, body: BridgePatch, p: Commissioner, conn: Conn) -> Created:
    if queries.bridge(conn, p, bridge_id) is None:
        raise not_found("bridge")
    catalogue.rename_bridge(conn, p, bridge_id, body.name)
    return Created(id=bridge_id)


@router.delete("/bridges/{bridge_id}", response_model=Created, summary="Remove a bridge that carries no sensors")
def delete_bridge(bridge_id: int, p: Commissioner, conn: Conn) -> Created:
    if queries.bridge(conn, p, bridge_id) is None:
        raise not_found("bridge")
    catalogue.delete_bridge(conn, p, bridge_id)
    return Created(id=bridge_id)
