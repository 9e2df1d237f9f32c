"""The hierarchy editor: add, rename, move and delete panels, circuits and devices; set a
panel's nominal voltage, power factor and connection; download the installers' CSV and
upload it back, with every bad row named. Writes go through `wattline.catalogue`, the
same functions as the API's."""

from __future__ import annotations

import base64
from typing import Any

import dash
from dash import Dash, Input, Output, State, ctx, dcc, html

from dashboard.auth import current_principal
from dashboard.data import conn, no_such_site, site_from_path
from wattline import catalogue, queries
from wattline.domain import Connection
from wattline.errors import DomainError, RowErrors
from wattline.generation import FLOWS
from wattline.principal import Principal

KINDS = ("panel", "circuit", "device")
#: Which kinds a node of each kind may be placed under (the database's trigger says the same).
PARENTS = {"panel": ("site", "circuit"), "circuit": ("panel",), "device": ("circuit",)}
CONNECTIONS = [{"label": c.value.replace("_", " "), "value": c.value} for c in Connection]
FIELDS = ("node", "kind", "parent", "name", "voltage", "power_factor", "connection", "flow", "file")
FLOW_OPTIONS = [{"label": " consumption ", "value": "consumption"}, {"label": " generation (PV, a generator) ",
                                                              "value": "generation"}]


def register(app: Dash) -> None:
    dash.register_page("hierarchy", path_template="/hierarchy/<site_id>", title="Hierarchy · Wattline",
                       layout=layout)
    app.callback(Output("hier-tree", "children"), Output("hier-nodes", "data"),
                 Input("hier-done", "data"), State("hier-site", "data"))(refresh)
    # The editor's pickers exist only for those who may change things; a callback that outputs to a
    # missing component does not run, so the tree must not depend on them.
    app.callback(Output("hier-node", "options"), Output("hier-parent", "options"),
                 Input("hier-nodes", "data"), Input("hier-kind", "value"))(pickers)
    app.callback(Output("hier-kind", "value"), Output("hier-name", "value"), Output("hier-parent", "value"),
                 Output("hier-voltage", "value"), Output("hier-pf", "value"), Output("hier-connection", "value"),
                 Output("hier-flow", "value"),
                 Input("hier-node", "value"), State("hier-site", "data"), prevent_initial_call=True)(load_node)
    app.callback(Output("hier-panel-fields", "style"), Output("hier-flow-field", "style"),
                 Input("hier-kind", "value"))(panel_fields)
    app.callback(Output("hier-message", "children"), Output("hier-done", "data"),
                 *(Output(f"hier-error-{f}", "children") for f in FIELDS),
                 Input("hier-save", "n_clicks"), Input("hier-delete", "n_clicks"), Input("hier-upload", "contents"),
                 State("hier-site", "data"), State("hier-node", "value"), State("hier-kind", "value"),
                 State("hier-parent", "value"), State("hier-name", "value"), State("hier-voltage", "value"),
                 State("hier-pf", "value"), State("hier-connection", "value"), State("hier-flow", "value"),
                 State("hier-done", "data"), prevent_initial_call=True)(save)


def _error(field: str) -> html.Div:
    return html.Div(id=f"hier-error-{field}", className="error field-error")


def layout(site_id: str = "0", **_: Any) -> html.Div:
    p = current_principal()
    with conn() as c:
        site = site_from_path(c, site_id)
        if site is None:
            return no_such_site()
    can = p.can("write") or p.can("commission")
    editor = html.Div([
        html.H3("Add or change a node"),
        html.Label(["Node", dcc.Dropdown(id="hier-node", placeholder="New node (or pick one to change it)")]),
        _error("node"),
        html.Label(["Kind", dcc.RadioItems(id="hier-kind", value="circuit", inline=True,
                                           options=[{"label": f" {k} ", "value": k} for k in KINDS])]),
        _error("kind"),
        html.Label(["Name", dcc.Input(id="hier-name", type="text")]), _error("name"),
        html.Label(["Under", dcc.Dropdown(id="hier-parent", placeholder="Its parent")]), _error("parent"),
        html.Div([
            html.Label(["Nominal voltage (V)", dcc.Input(id="hier-voltage", type="number", value=230)]),
            _error("voltage"),
            html.Label(["Power factor", dcc.Input(id="hier-pf", type="number", value=1.0, step=0.01)]),
            _error("power_factor"),
            html.Label(["Connection", dcc.Dropdown(id="hier-connection", options=CONNECTIONS,
                                                   value=Connection.SINGLE_PHASE.value)]),
            _error("connection"),
        ], id="hier-panel-fields"),
        html.Div([
            html.Label(["Flow", dcc.RadioItems(id="hier-flow", value="consumption", options=FLOW_OPTIONS,
                                               inline=True)]),
            html.Div("A clamp reads how much current, not which way: mark what generates. No clamp may sit "
                     "above it.", className="muted"),
            _error("flow"),
        ], id="hier-flow-field"),
        html.Div([html.Button("Save", id="hier-save", className="primary"),
                  html.Button("Delete", id="hier-delete", className="small danger")], className="toolbar"),
        html.H3("Spreadsheet"),
        html.P(["Download the hierarchy as CSV, edit it, and upload it back: all rows go in, or none. ",
                html.A("Download CSV", href=f"/hierarchy/{site['id']}.csv", id="hier-download")]),
        dcc.Upload(html.Div(["Drop a CSV here, or ", html.A("choose one")]), id="hier-upload",
                   className="upload", accept=".csv,text/csv"),
        _error("file"),
        html.Div(id="hier-message", role="status"),
    ], className="card form", id="hier-form") if can else html.Div(
        "You can look, not change: editing the hierarchy needs an installer's, a facility manager's or an "
        "admin's access.", className="muted", id="hier-readonly")
    return html.Div([
        dcc.Store(id="hier-site", data=site["id"]),
        dcc.Store(id="hier-done", data=0),
        dcc.Store(id="hier-nodes", data=[]),
        html.H2(["Hierarchy · ", site["name"]]),
        html.Div([dcc.Link("Commissioning", href=f"/commissioning/{site['id']}"), " · ",
                  dcc.Link("Site", href=f"/site/{site['id']}")], className="toolbar"),
        html.Div(id="hier-tree", className="card tree-editor"),
        editor,
    ], className="page hierarchy")


def _describe(n: dict[str, Any], detail: dict[str, Any]) -> str:
    extra = ""
    if n["kind"] == "panel" and detail.get("nominal_voltage_v"):
        extra = (f" · {detail['nominal_voltage_v']:g} V, PF {detail['power_factor']:g}, "
                 f"{(detail['connection'] or '').replace('_', ' ')}")
    sensors = f" · {n['sensors']} sensor(s)" if n["sensors"] else ""
    generates = " · generation" if n.get("flow") == "generation" else ""
    return f"{n['name']} ({n['kind']}){extra}{generates}{sensors}"


def refresh(_done: int, site_id: int) -> tuple[Any, ...]:
    p = current_principal()
    with conn() as c:
        nodes = queries.tree(c, p, site_id)
        details = {n["id"]: queries.node(c, p, n["id"]) or {} for n in nodes if n["kind"] == "panel"}
    rows = [html.Div(_describe(n, details.get(n["id"], {})), className=f"node-row kind-{n['kind']}",
                     style={"paddingLeft": f"{n['depth'] * 1.2}rem"}, id=f"node-{n['id']}") for n in nodes]
    return rows, [{k: n[k] for k in ("id", "kind", "name", "depth")} for n in nodes]


def pickers(nodes: list[dict[str, Any]], kind: str | None) -> tuple[Any, ...]:
    editable = [{"label": "\u2003" * max(0, n["depth"] - 1) + f"{n['name']} ({n['kind']})", "value": n["id"]}
                for n in nodes if n["kind"] != "site"]
    allowed = PARENTS.get(kind or "circuit", ())
    parents = [{"label": "\u2003" * n["depth"] + f"{n['name']} ({n['kind']})", "value": n["id"]}
               for n in nodes if n["kind"] in allowed]
    return editable, parents


def load_node(node_id: int | None, site_id: int) -> tuple[Any, ...]:
    if node_id is None:
        return "circuit", "", None, 230, 1.0, Connection.SINGLE_PHASE.value, "consumption"
    with conn() as c:
        n = queries.node(c, current_principal(), node_id)
    if n is None or n["site_id"] != site_id:
        return (dash.no_update,) * 7
    return (n["kind"], n["name"], n["parent_id"], n["nominal_voltage_v"] or 230, n["power_factor"] or 1.0,
            n["connection"] or Connection.SINGLE_PHASE.value, n["flow"])


def panel_fields(kind: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """A panel's electrics for a panel; a flow for what can generate (circuits, devices)."""
    hidden = {"display": "none"}
    return ({}, hidden) if kind == "panel" else (hidden, {})


def _write(c: Any, p: Principal, site_id: int, trigger: str, node_id: int | None, kind: str | None,
           parent: int | None, name: str | None, volts: float | None, pf: float | None, connection: str | None,
           flow: str | None, upload: str | None) -> str:
    """Parse, authorise and call the core; returns what was done."""
    if trigger == "hier-upload":
        if not upload:
            raise DomainError("choose a CSV file", field="file")
        data = base64.b64decode(upload.partition(",")[2])
        n = catalogue.import_hierarchy(c, p, site_id, data)
        return f"{n} row(s) imported."
    if node_id is not None and (queries.node(c, p, node_id) or {}).get("site_id") != site_id:
        raise DomainError("pick a node of this site", field="node")
    if trigger == "hier-delete":
        if node_id is None:
            raise DomainError("pick the node to delete", field="node")
        catalogue.delete_node(c, p, node_id)
        return "Deleted."
    if kind not in KINDS:
        raise DomainError("pick panel, circuit or device", field="kind")
    if not name or not name.strip():
        raise DomainError("give it a name", field="name")
    if parent is None or (queries.node(c, p, parent) or {}).get("site_id") != site_id:
        raise DomainError(f"pick what the {kind} is under", field="parent")
    electrics: dict[str, Any] = {}
    if kind == "panel":
        if volts is None or not 0 < volts < 100_000:
            raise DomainError("a nominal voltage between 1 and 99,999 V", field="voltage")
        if pf is None or not 0 < pf <= 1:
            raise DomainError("a power factor above 0 and at most 1", field="power_factor")
        if connection not in {x.value for x in Connection}:
            raise DomainError("pick the connection", field="connection")
        electrics = {"nominal_voltage_v": float(volts), "power_factor": float(pf), "connection": connection}
    elif flow not in FLOWS:
        raise DomainError("pick consumption or generation", field="flow")
    else:
        electrics = {"flow": flow}
    if node_id is None:
        catalogue.create_node(c, p, site_id, parent, kind, name.strip(),
                              nominal_voltage_v=electrics.get("nominal_voltage_v"),
                              power_factor=electrics.get("power_factor"),
                              connection=Connection(electrics["connection"]) if "connection" in electrics else None,
                              flow="generation" if electrics.get("flow") == "generation" else "consumption")
        return f"{name.strip()} added."
    catalogue.update_node(c, p, node_id, {"name": name.strip(), "parent_id": parent, **electrics})
    return f"{name.strip()} saved."


def save(_save: int | None, _delete: int | None, upload: str | None, site_id: int, node_id: int | None,
         kind: str | None, parent: int | None, name: str | None, volts: float | None, pf: float | None,
         connection: str | None, flow: str | None, done: int) -> tuple[Any, ...]:
    p = current_principal()
    errors = dict.fromkeys(FIELDS, "")
    if not (p.can("write") or p.can("commission")):  # whatever the browser sends
        return html.Div("Not allowed: editing the hierarchy needs more access.", className="error"), done, \
            *errors.values()
    with conn() as c:
        if queries.site(c, p, site_id) is None:
            return html.Div("No such site.", className="error"), done, *errors.values()
        try:
            said = _write(c, p, site_id, str(ctx.triggered_id), node_id, kind, parent, name, volts, pf, connection,
                          flow, upload)
        except RowErrors as exc:
            errors["file"] = html.Ul([html.Li(f"Line {line}: {why}") for line, why in exc.rows],
                                     className="csv-errors")  # type: ignore[assignment]
            return html.Div(f"Nothing imported: {len(exc.rows)} row(s) need fixing.", className="error"), done, \
                *errors.values()
        except DomainError as exc:
            field = {"parent_id": "parent", "nominal_voltage_v": "voltage", "node_id": "node"}.get(
                exc.field or "", exc.field)
            if field in errors:
                errors[field] = exc.detail
                return html.Div("Not saved: see the field marked.", className="error"), done, *errors.values()
            return html.Div(exc.detail, className="error"), done, *errors.values()
    return html.Div(said, className="saved"), done + 1, *errors.values()
