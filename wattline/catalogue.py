"""Writes to the catalogue: tenants, sites, the electrical hierarchy, bridges and sensors.

One function per write, called alike by the API, the dashboard, the CLI and the seeders.
Each carries its side effects in the same transaction: the audit entry, and the rollup
re-queue of exactly what the change affects (`wattline.rollup_queue`). Callers authorise
first (the tenant-scoped reads in `wattline.queries` find only what the caller may see);
these functions trust the ids they are given and raise `wattline.errors` for the rest.

Every function takes an open connection; each opens a transaction (a savepoint inside
the caller's), so a failed write leaves nothing behind.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from wattline import audit, bridge_credentials, generation, rollup_queue, virtual_meters
from wattline.bridge_credentials import Credential
from wattline.csv_upload import dict_reader
from wattline.db import fetch_all, fetch_one
from wattline.domain import Connection
from wattline.errors import Conflict, Invalid, NotFound, RowErrors
from wattline.generation import FLOWS, GENERATING_KINDS, Flow
from wattline.opening_hours import validate_opening_hours
from wattline.principal import Principal

Conn = psycopg.Connection[Any]
#: Columns of the installers' hierarchy spreadsheet, in order.
CSV_COLUMNS = ("external_ref", "parent_ref", "kind", "name", "nominal_voltage_v", "power_factor", "connection",
               "asset_type", "flow")
#: Node fields whose change alters the rollups of the sensors below the node.
_ROLLUP_FIELDS = frozenset({"parent_id", "nominal_voltage_v", "power_factor", "connection", "flow"})


def _id(conn: Conn, query: str, params: tuple[Any, ...]) -> int:
    row = fetch_one(conn, query, params)
    assert row is not None
    return int(row["id"])


def _update(conn: Conn, table: str, row_id: int, changes: Mapping[str, Any]) -> None:
    """UPDATE one row's given columns; column and table names are identifiers, never text."""
    if not changes:
        return
    values = {k: Jsonb(v) if isinstance(v, dict) else v for k, v in changes.items()}
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in values)
    conn.execute(sql.SQL("UPDATE {} SET {} WHERE id = {}").format(
        sql.Identifier(table), assignments, sql.Placeholder("row_id")), {**values, "row_id": row_id})


def _delete(conn: Conn, actor: Principal | None, table: str, row_id: int, what: str, attached: str) -> None:
    """Delete one row with its audit entry; a row that still has things attached is a Conflict."""
    try:
        with conn.transaction():
            conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(sql.Identifier(table)), (row_id,))
            audit.record(conn, actor, "delete", what, row_id)
    except psycopg.errors.ForeignKeyViolation as exc:
        raise Conflict(f"the {what} still has {attached}") from exc


def _db_detail(exc: psycopg.Error) -> str:
    return (exc.diag.message_primary if exc.diag and exc.diag.message_primary else type(exc).__name__)[:300]


# -- tenants and sites ---------------------------------------------------------------------
def upsert_reseller(conn: Conn, name: str) -> int:
    """The reseller of this name, created if missing."""
    return _id(conn, """INSERT INTO resellers (name) VALUES (%s)
                        ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id""", (name,))


def upsert_customer(conn: Conn, reseller_id: int, name: str) -> int:
    """The reseller's customer of this name, created if missing."""
    return _id(conn, """INSERT INTO customers (reseller_id, name) VALUES (%s, %s)
                        ON CONFLICT (reseller_id, name) DO UPDATE SET name = EXCLUDED.name RETURNING id""",
               (reseller_id, name))


def create_customer(conn: Conn, actor: Principal | None, reseller_id: int, name: str,
                    billing_email: str | None = None) -> int:
    """A customer (organisation) of the reseller, with an optional billing contact."""
    with conn.transaction():
        customer_id = upsert_customer(conn, reseller_id, name)
        if billing_email:
            conn.execute("UPDATE customers SET billing_email = %s WHERE id = %s", (billing_email, customer_id))
        audit.record(conn, actor, "create", "customer", customer_id)
    return customer_id


def update_customer(conn: Conn, actor: Principal | None, customer_id: int, changes: Mapping[str, Any]) -> None:
    """Rename a customer or change its billing email (a rectification of personal data, audited)."""
    with conn.transaction():
        _update(conn, "customers", customer_id, changes)
        if "billing_email" in changes:
            audit.record(conn, actor, "rectify", "customer", customer_id, fields=["billing_email"])
        elif changes:
            audit.record(conn, actor, "update", "customer", customer_id, fields=sorted(changes))


def delete_customer(conn: Conn, actor: Principal | None, customer_id: int) -> None:
    """Delete a customer that has no sites or users left."""
    _delete(conn, actor, "customers", customer_id, "customer", "things attached (remove or move them first)")


def upsert_site(conn: Conn, customer_id: int, name: str, *, timezone: str = "UTC", country: str = "GB",
                floor_area_m2: float | None = None, opening_hours: dict[str, list[str]] | None = None,
                latitude: float | None = None, longitude: float | None = None) -> int:
    """The customer's site of this name, created if missing (its root node comes with it)."""
    return _id(conn, """INSERT INTO sites (customer_id, name, timezone, country, floor_area_m2, opening_hours,
                                           latitude, longitude)
                        VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                        ON CONFLICT (customer_id, name) DO UPDATE SET timezone = EXCLUDED.timezone,
                            latitude = COALESCE(EXCLUDED.latitude, sites.latitude),
                            longitude = COALESCE(EXCLUDED.longitude, sites.longitude)
                        RETURNING id""",
               (customer_id, name, timezone, country, floor_area_m2, Jsonb(opening_hours or {}), latitude, longitude))


def create_site(conn: Conn, actor: Principal | None, customer_id: int, name: str, *, timezone: str = "UTC",
                country: str = "GB", floor_area_m2: float | None = None,
                opening_hours: dict[str, list[str]] | None = None) -> int:
    """A site of the customer (the same name again updates its zone)."""
    opening_hours = validate_opening_hours(opening_hours or {})
    with conn.transaction():
        site_id = upsert_site(conn, customer_id, name, timezone=timezone, country=country,
                              floor_area_m2=floor_area_m2, opening_hours=opening_hours)
        audit.record(conn, actor, "create", "site", site_id)
    return site_id


def update_site(conn: Conn, actor: Principal | None, site_id: int, changes: Mapping[str, Any]) -> None:
    """Change a site's name, zone, area, opening hours, location or degree-day bases (a zone
    change re-prices through a trigger; degree days are computed on read, so a base needs nothing more)."""
    if changes.get("opening_hours") is not None:
        changes = {**changes, "opening_hours": validate_opening_hours(changes["opening_hours"])}
    with conn.transaction():
        _update(conn, "sites", site_id, changes)
        if changes:
            audit.record(conn, actor, "update", "site", site_id, fields=sorted(changes))


def delete_site(conn: Conn, actor: Principal | None, site_id: int) -> None:
    """Delete a site that has no bridges left."""
    _delete(conn, actor, "sites", site_id, "site", "things attached (remove or move them first)")


# -- the electrical hierarchy -----------------------------------------------------------------
def site_root(conn: Conn, site_id: int) -> int:
    """The id of the site's root node (every site has one; site totals are its rollups)."""
    return _id(conn, "SELECT id FROM nodes WHERE site_id = %s AND kind = 'site'", (site_id,))


def upsert_node(conn: Conn, site_id: int, parent_id: int, kind: str, name: str, external_ref: str, *,
                nominal_voltage_v: float | None = None, power_factor: float | None = None,
                connection: Connection | None = None, asset_type: str | None = None,
                flow: Flow = "consumption") -> int:
    """Create or update a node identified by (site, external_ref), the installers' device id.

    Low level: no audit and no re-queue. Doors call `create_node`, `update_node` or
    `import_hierarchy`; the site builder calls this for trees that have no readings yet.
    """
    return _id(conn, """INSERT INTO nodes (site_id, parent_id, kind, name, external_ref, nominal_voltage_v,
                                           power_factor, connection, asset_type, flow)
                        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                        ON CONFLICT (site_id, external_ref) DO UPDATE
                           SET parent_id = EXCLUDED.parent_id, name = EXCLUDED.name,
                               nominal_voltage_v = EXCLUDED.nominal_voltage_v,
                               power_factor = EXCLUDED.power_factor, connection = EXCLUDED.connection,
                               asset_type = EXCLUDED.asset_type, flow = EXCLUDED.flow
                        RETURNING id""",
               (site_id, parent_id, kind, name, external_ref, nominal_voltage_v, power_factor,
                connection.value if connection else None, asset_type, flow))


def _node(conn: Conn, node_id: int) -> dict[str, Any] | None:
    return fetch_one(conn, """SELECT id, site_id, parent_id, kind, name, external_ref, nominal_voltage_v,
                                     power_factor, connection, asset_type, flow FROM nodes WHERE id = %s""", (node_id,))


def _same_site_parent(conn: Conn, site_id: int, parent_id: int) -> None:
    parent = _node(conn, parent_id)
    if parent is None or parent["site_id"] != site_id:
        raise NotFound("parent node", field="parent_id")


def create_node(conn: Conn, actor: Principal | None, site_id: int, parent_id: int, kind: str, name: str,
                external_ref: str | None = None, *, nominal_voltage_v: float | None = None,
                power_factor: float | None = None, connection: Connection | None = None,
                asset_type: str | None = None, flow: Flow = "consumption") -> int:
    """Add a panel, circuit or device under a parent of the same site; `flow` generation
    for a circuit or device that generates (wattline.generation has the rule it must keep).

    A new node has no sensors, so no rollup changes; an existing external_ref is updated
    as `update_node` would, re-queueing what that affects.
    """
    _same_site_parent(conn, site_id, parent_id)
    _generating_kind(kind, flow)
    ref = external_ref or f"node-{parent_id}-{name}"
    try:
        with conn.transaction():
            before = fetch_one(conn, "SELECT id FROM nodes WHERE site_id = %s AND external_ref = %s", (site_id, ref))
            old = _node(conn, int(before["id"])) if before else None
            node_id = upsert_node(conn, site_id, parent_id, kind, name, ref, nominal_voltage_v=nominal_voltage_v,
                                  power_factor=power_factor, connection=connection, asset_type=asset_type, flow=flow)
            generation.check_site(conn, site_id)
            if old is not None:
                _requeue_if_changed(conn, old)
            audit.record(conn, actor, "create" if old is None else "update", "node", node_id)
    except psycopg.errors.IntegrityError as exc:
        raise Invalid("Invalid node", _db_detail(exc)) from exc
    return node_id


def _generating_kind(kind: str, flow: str) -> None:
    if flow == "generation" and kind not in GENERATING_KINDS:
        raise Invalid("Invalid node", f"a {kind} cannot be generation: mark the circuit or device that generates",
                      field="flow")


def _requeue_if_changed(conn: Conn, before: dict[str, Any]) -> bool:
    """Re-queue the sensors under a node whose parent or electrical parameters changed
    (a move also names the parent it left, whose totals lose them)."""
    after = _node(conn, int(before["id"]))
    assert after is not None
    if not any(before[f] != after[f] for f in _ROLLUP_FIELDS):
        return False
    moved_from = [before["parent_id"]] if before["parent_id"] != after["parent_id"] else []
    rollup_queue.queue_subtrees(conn, [int(before["id"])], former_parents=moved_from)
    return True


def update_node(conn: Conn, actor: Principal | None, node_id: int, changes: Mapping[str, Any]) -> None:
    """Rename, re-rate, move a node or change its flow. A move, a re-rating or a new flow
    re-queues the history of every sensor below it, so that both the old and the new
    parents' totals are re-summed."""
    before = _node(conn, node_id)
    if before is None:
        raise NotFound("node")
    if changes.get("parent_id") is not None:
        _same_site_parent(conn, before["site_id"], int(changes["parent_id"]))
    _generating_kind(before["kind"], changes.get("flow", before["flow"]))
    if not changes:
        return
    try:
        with conn.transaction():
            _update(conn, "nodes", node_id, changes)
            generation.check_site(conn, before["site_id"])
            _requeue_if_changed(conn, before)
            audit.record(conn, actor, "update", "node", node_id, fields=sorted(changes))
    except psycopg.errors.IntegrityError as exc:  # a cycle, a parent of the wrong kind (trigger-checked)
        raise Invalid("Invalid node", _db_detail(exc)) from exc


def delete_node(conn: Conn, actor: Principal | None, node_id: int) -> None:
    """Delete a node with no children and no sensors, with its rollups."""
    node = _node(conn, node_id)
    if node is None:
        raise NotFound("node")
    if node["kind"] == "site":
        raise Invalid("Cannot delete", "a site's root node goes with the site")
    try:
        with conn.transaction():  # the node's rollups go with it, or nothing does
            for table in ("rollups_1m", "rollups_15m", "rollups_1h", "rollups_1d", "rollups_band_1d"):
                conn.execute(sql.SQL("DELETE FROM {} WHERE node_id = %s").format(sql.Identifier(table)), (node_id,))
            conn.execute("DELETE FROM nodes WHERE id = %s", (node_id,))
            audit.record(conn, actor, "delete", "node", node_id)
    except psycopg.errors.ForeignKeyViolation as exc:
        if meters := virtual_meters.counted_by(conn, "node_id", node_id):
            raise Conflict(f"the node is a term of virtual meter {', '.join(meters)}: remove it from the meter "
                           "first") from exc
        raise Conflict("the node still has children, or sensors now or in its history: move its children, and "
                       "correct its sensors' assignments, first") from exc


def export_hierarchy(conn: Conn, site_id: int) -> str:
    """The site's tree as the installers' CSV (`CSV_COLUMNS`), parents before children."""
    rows = fetch_all(conn, """
        SELECT n.external_ref, par.external_ref AS parent_ref, n.kind, n.name, n.nominal_voltage_v, n.power_factor,
               n.connection, n.asset_type, n.flow
        FROM nodes n LEFT JOIN nodes par ON par.id = n.parent_id
        WHERE n.site_id = %s AND n.kind <> 'site' ORDER BY n.id""", (site_id,))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow(["" if r[c] is None else r[c] for c in CSV_COLUMNS])
    return out.getvalue()


def import_hierarchy(conn: Conn, actor: Principal | None, site_id: int, data: bytes) -> int:
    """Create or update nodes from the installers' CSV: all rows or none.

    Parents must come before their children. Every row is tried (each in a savepoint), so
    that a refusal names every bad row with its line (`RowErrors`), not just the first.
    Nodes whose parent or electrical parameters change have their sensors' history
    re-queued, as `update_node` does. Returns the number of rows imported.
    """
    reader = dict_reader(data)
    if reader.fieldnames is None or not {"external_ref", "parent_ref", "kind", "name"} <= set(reader.fieldnames):
        raise Invalid("Invalid CSV", f"columns must include external_ref, parent_ref, kind, name; "
                      f"export gives {', '.join(CSV_COLUMNS)}", field="file")
    errors: list[tuple[int, str]] = []
    count = 0
    with conn.transaction():
        root = site_root(conn, site_id)
        existing = {r["external_ref"]: r for r in fetch_all(conn, """
            SELECT id, site_id, parent_id, kind, name, external_ref, nominal_voltage_v, power_factor, connection,
                   asset_type, flow FROM nodes WHERE site_id = %s AND external_ref IS NOT NULL""", (site_id,))}
        refs = {ref: int(r["id"]) for ref, r in existing.items()}
        for line, row in enumerate(reader, start=2):
            try:
                with conn.transaction():
                    refs[row["external_ref"]] = _import_row(conn, site_id, root, refs, row, existing)
                    count += 1
            except (Invalid, ValueError, psycopg.errors.IntegrityError) as exc:
                detail = exc.detail if isinstance(exc, Invalid) else \
                    _db_detail(exc) if isinstance(exc, psycopg.Error) else str(exc)
                errors.append((line, detail or "invalid row"))
        if errors:  # raised inside the transaction: the rows that went in come out again
            raise RowErrors("Invalid CSV", errors)
        if (reason := generation.problem(conn, site_id)) is not None:
            raise Invalid("Invalid CSV", reason, field="file")
        changed = sum(_requeue_if_changed(conn, before) for before in existing.values())
        audit.record(conn, actor, "import", "site", site_id, rows=count, nodes_changed=changed)
    return count


def _import_row(conn: Conn, site_id: int, root: int, refs: dict[str, int], row: dict[str, str | None],
                existing: dict[str, dict[str, Any]]) -> int:
    parent_ref = (row.get("parent_ref") or "").strip()
    parent = root if not parent_ref else refs.get(parent_ref)
    if parent is None:
        raise Invalid("Invalid CSV", f"unknown parent_ref {parent_ref!r} (parents must come before their children)")
    kind = (row.get("kind") or "").strip()
    if kind not in ("panel", "circuit", "device"):
        raise Invalid("Invalid CSV", f"kind must be panel, circuit or device, not {kind!r}")
    ref, name = (row.get("external_ref") or "").strip(), (row.get("name") or "").strip()
    if not ref or not name:
        raise Invalid("Invalid CSV", "external_ref and name are required")
    connection = (row.get("connection") or "").strip()
    if connection and connection not in {c.value for c in Connection}:
        raise Invalid("Invalid CSV", f"connection must be one of {', '.join(c.value for c in Connection)}")
    volts, pf = (row.get("nominal_voltage_v") or "").strip(), (row.get("power_factor") or "").strip()
    # No flow column (a sheet from before it), or an empty cell: the node keeps its flow.
    flow = (row.get("flow") or "").strip() or existing.get(ref, {}).get("flow") or "consumption"
    if flow not in FLOWS:
        raise Invalid("Invalid CSV", f"flow must be consumption or generation, not {flow!r}")
    _generating_kind(kind, flow)
    return upsert_node(conn, site_id, parent, kind, name, ref,
                       nominal_voltage_v=_number(volts, "nominal_voltage_v"), power_factor=_number(pf, "power_factor"),
                       connection=Connection(connection) if connection else None,
                       asset_type=(row.get("asset_type") or "").strip() or None,
                       flow="generation" if flow == "generation" else "consumption")


def _number(text: str, column: str) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise Invalid("Invalid CSV", f"{column} must be a number, not {text!r}") from None


# -- hardware ------------------------------------------------------------------------------------
def upsert_bridge(conn: Conn, site_id: int, serial: str, name: str = "") -> int:
    """The bridge of this serial at the site, created if missing (low level: no checks, no audit)."""
    return _id(conn, """INSERT INTO bridges (serial, site_id, name) VALUES (%s, %s, %s)
                        ON CONFLICT (serial) DO UPDATE SET name = EXCLUDED.name RETURNING id""",
               (serial, site_id, name))


def bridge_claim_code(serial: str, key: str) -> str:
    """The claim code printed on a bridge's label: proof that whoever registers it holds it.

    HMAC-SHA256 of the serial under the deployment's claim key, 60 bits in base32, grouped
    as XXXX-XXXX-XXXX. `wattline bridge-claim-code SERIAL` prints it for a label."""
    digest = hmac.new(key.encode(), serial.strip().upper().encode(), hashlib.sha256).digest()
    code = base64.b32encode(digest).decode()[:12]
    return "-".join(code[i:i + 4] for i in range(0, 12, 4))


def register_bridge(conn: Conn, actor: Principal | None, site_id: int, serial: str, name: str = "", *,
                    claim_code: str, claim_key: str, credential_key: bytes) -> tuple[int, Credential | None]:
    """Register a bridge at a site by its serial and the claim code on its label; returns its
    id and its MQTT credential, issued the first time (None when it already had one: rotate
    that to get a new password).

    A wrong code answers exactly as a serial that does not exist, so registration tells
    nobody which serials other tenants own; only the holder of the label learns that its
    bridge is registered elsewhere. Again at the same site: a rename."""
    given = claim_code.replace("-", "").replace(" ", "").upper()
    expected = bridge_claim_code(serial, claim_key).replace("-", "")
    if not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode()):
        raise NotFound("bridge with that serial and claim code", field="claim_code")
    with conn.transaction():
        existing = fetch_one(conn, "SELECT site_id FROM bridges WHERE serial = %s", (serial,))
        if existing is not None and existing["site_id"] != site_id:
            raise Conflict("that bridge is registered to another site: remove it there first")
        bridge_id = upsert_bridge(conn, site_id, serial, name)
        audit.record(conn, actor, "create", "bridge", bridge_id)
        credential = None
        if bridge_credentials.state(conn, bridge_id) is None:
            credential = bridge_credentials.issue(conn, actor, bridge_id, key=credential_key)
    return bridge_id, credential


def rename_bridge(conn: Conn, actor: Principal | None, bridge_id: int, name: str) -> None:
    """Give a bridge a name installers recognise."""
    with conn.transaction():
        _update(conn, "bridges", bridge_id, {"name": name})
        audit.record(conn, actor, "update", "bridge", bridge_id, fields=["name"])


def delete_bridge(conn: Conn, actor: Principal | None, bridge_id: int) -> None:
    """Remove a bridge that carries no sensors."""
    _delete(conn, actor, "bridges", bridge_id, "bridge", "sensors (unassign and remove them first)")
