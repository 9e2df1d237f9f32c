"""Commissioning, for an installer's phone as much as a desk: add a bridge (its MQTT sign-in
is shown once), pick a bridge, watch its sensors live, assign (or correct, move, replace,
unassign) one, check what looks wrong, and mark the site commissioned. Every action is a
core function (`wattline.assignments`, `wattline.commissioning`, `wattline.catalogue`,
`wattline.bridge_credentials`); the callbacks parse, authorise, call and put the error next
to its field."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import dash
from dash import Dash, Input, Output, State, ctx, dcc, html

from dashboard.auth import current_principal
from dashboard.data import conn, no_such_site, reporting_interval_s, settings, site_from_path
from wattline import assignments, bridge_credentials, catalogue, commissioning, progress, queries
from wattline.assignments import CLAMPABLE, EXPLAINED, Action
from wattline.bridge_credentials import Credential
from wattline.commissioning import BridgeSummary, SensorCheck
from wattline.errors import DomainError
from wattline.principal import Principal

NEW_CIRCUIT = -1
LIVE_EVERY_MS = 5_000
#: The form's actions: the four of the lifecycle, and unassigning.
ACTIONS = {**{a.value: EXPLAINED[a] for a in Action},
           "unassign": "The sensor stops counting anywhere from this time; what it measured before stays.",
           "meter": "Say what the sensor is: a clamp, or a meter that sends its real power with its sign. A meter's "
                    "sign tells import from export, so it may sit above solar; its history is re-summed."}
FIELDS = ("serial", "node_id", "new_name", "phase", "ct_rating_a", "at", "new_serial", "reports_power")


def register(app: Dash) -> None:
    dash.register_page("commissioning", path_template="/commissioning/<site_id>",
                       title="Commissioning · Wattline", layout=layout)
    app.callback(Output("comm-bridges", "children"), Output("comm-sensors", "children"),
                 Output("comm-updated", "children"), Output("comm-choices", "data"),
                 Input("comm-tick", "n_intervals"), Input("comm-bridge", "value"), Input("comm-done", "data"),
                 State("comm-site", "data"))(refresh)
    # The form's pickers exist only for those who may change things; a callback that outputs to
    # a missing component does not run, so the live cards must not depend on them.
    app.callback(Output("comm-serial", "options"), Output("comm-new-serial", "options"),
                 Input("comm-choices", "data"))(choices)
    # The tree changes when a circuit is created on the spot: its options follow each save.
    app.callback(Output("comm-node", "options"), Input("comm-done", "data"), State("comm-site", "data"))(
        node_options)
    app.callback(Output("comm-explain", "children"), Output("comm-where", "style"), Output("comm-when", "style"),
                 Output("comm-swap", "style"), Output("comm-new-circuit", "style"), Output("comm-meter", "style"),
                 Input("comm-action", "value"), Input("comm-node", "value"))(show_fields)
    app.callback(Output("comm-message", "children"), Output("comm-done", "data"),
                 *(Output(f"comm-error-{f}", "children") for f in FIELDS),
                 Input("comm-submit", "n_clicks"),
                 State("comm-site", "data"), State("comm-action", "value"), State("comm-serial", "value"),
                 State("comm-node", "value"), State("comm-new-name", "value"), State("comm-parent", "value"),
                 State("comm-phase", "value"), State("comm-ct", "value"), State("comm-at", "value"),
                 State("comm-new-serial", "value"), State("comm-reports-power", "value"), State("comm-done", "data"),
                 prevent_initial_call=True)(submit)
    app.callback(Output("comm-state", "children"), Input("comm-commission", "n_clicks"), State("comm-site", "data"),
                 prevent_initial_call=True)(commission)
    app.callback(Output("comm-credential", "children"), Output("comm-bridges-changed", "data"),
                 Input("comm-add-bridge", "n_clicks"), Input("comm-rotate", "n_clicks"),
                 Input("comm-revoke", "n_clicks"), State("comm-site", "data"), State("comm-new-bridge", "value"),
                 State("comm-claim-code", "value"), State("comm-bridge-name", "value"), State("comm-bridge", "value"),
                 State("comm-bridges-changed", "data"),
                 prevent_initial_call=True)(bridge_action)
    app.callback(Output("comm-bridge", "options"), Input("comm-bridges-changed", "data"), State("comm-site", "data"),
                 prevent_initial_call=True)(bridge_options)


def _state(c: Any, site_id: int) -> html.Span:
    mark = commissioning.commissioned(c, site_id)
    if mark is None:
        return html.Span("not yet commissioned", className="flag warn", id="comm-mark")
    return html.Span(f"commissioned {mark['at']:%Y-%m-%d %H:%M} UTC by {mark['who'] or 'the system'}",
                     className="flag ok", id="comm-mark")


def _error(field: str) -> html.Div:
    return html.Div(id=f"comm-error-{field}", className="error field-error")


def layout(site_id: str = "0", **_: Any) -> html.Div:
    p = current_principal()
    with conn() as c:
        site = site_from_path(c, site_id)
        if site is None:
            return no_such_site()
        nodes = queries.tree(c, p, site["id"])
        bridges = commissioning.bridges(c, p, site["id"])
        state = _state(c, site["id"])
    panels = [{"label": n["name"], "value": n["id"]} for n in nodes if n["kind"] == "panel"]
    can = p.can("commission")
    form = html.Div([
        html.H3("3 · Assign, correct, move or replace"),
        html.Label(["Action", dcc.RadioItems(id="comm-action", value="assign", className="stacked",
                                             options=[{"label": f" {k.capitalize()}", "value": k} for k in ACTIONS])]),
        html.P(id="comm-explain", className="muted explain"),
        html.Label(["Sensor", dcc.Dropdown(id="comm-serial", placeholder="Pick a sensor", searchable=True)]),
        _error("serial"),
        html.Div([
            html.Label(["Circuit", dcc.Dropdown(id="comm-node", placeholder="Pick from the tree",
                                                options=_node_options(nodes))]),
            _error("node_id"),
            html.Div([
                html.Label(["New circuit's name", dcc.Input(id="comm-new-name", type="text", debounce=True)]),
                _error("new_name"),
                html.Label(["On panel", dcc.Dropdown(id="comm-parent", options=panels,
                                                     value=panels[0]["value"] if panels else None)]),
            ], id="comm-new-circuit"),
            html.Label(["Phase", dcc.RadioItems(id="comm-phase", value=1, inline=True,
                                                options=[{"label": f" L{k} ", "value": k} for k in (1, 2, 3)])]),
            _error("phase"),
            html.Label(["CT rating (A)", dcc.Input(id="comm-ct", type="number", value=100, min=1, step=1)]),
            _error("ct_rating_a"),
        ], id="comm-where"),
        html.Div([
            html.Label([f"From (site time, {site['timezone']}; empty: now)",
                        dcc.Input(id="comm-at", type="text", placeholder="2026-12-01 14:30")]),
            _error("at"),
        ], id="comm-when"),
        html.Div([
            html.Label(["New sensor", dcc.Dropdown(id="comm-new-serial", placeholder="A discovered sensor")]),
            _error("new_serial"),
        ], id="comm-swap"),
        html.Div([
            dcc.RadioItems(id="comm-reports-power", value="clamp", className="stacked", options=[
                {"label": " A clamp: it measures current, its circuit's flow gives the direction", "value": "clamp"},
                {"label": " A meter: it sends its real power, signed (SenML power, W)", "value": "meter"}]),
            _error("reports_power"),
        ], id="comm-meter"),
        html.Button("Save", id="comm-submit", className="primary"),
        html.Div(id="comm-message", role="status"),
    ], className="card form", id="comm-form") if can else html.Div(
        "You can look, not change: assigning sensors needs an installer's or an admin's access.",
        className="muted", id="comm-readonly")
    bridge_tools = html.Details([
        html.Summary("Add a bridge, or change its MQTT sign-in"),
        html.Label(["Serial (on its label)", dcc.Input(id="comm-new-bridge", type="text", debounce=False)]),
        html.Label(["Claim code (on its label)", dcc.Input(id="comm-claim-code", type="text",
                                                          placeholder="XXXX-XXXX-XXXX")]),
        html.Label(["Name (where it is)", dcc.Input(id="comm-bridge-name", type="text")]),
        html.Button("Add bridge", id="comm-add-bridge", className="primary"),
        html.P("For the bridge picked above:", className="muted"),
        html.Div([html.Button("New MQTT password", id="comm-rotate", className="small"),
                  html.Button("Revoke its sign-in", id="comm-revoke", className="small danger")], className="toolbar"),
    ], className="card form", id="comm-bridge-tools") if can else None
    return html.Div([
        dcc.Store(id="comm-site", data=site["id"]),
        dcc.Store(id="comm-done", data=0),
        dcc.Store(id="comm-bridges-changed", data=0),
        dcc.Store(id="comm-choices", data={"sensors": [], "spare": []}),
        dcc.Interval(id="comm-tick", interval=LIVE_EVERY_MS),
        html.H2(["Commissioning · ", site["name"]]),
        html.Div([html.Span(state, id="comm-state"),
                  html.Button("Mark site commissioned", id="comm-commission", className="small")
                  if can else None,
                  dcc.Link("Hierarchy", href=f"/hierarchy/{site['id']}", className="small-link"),
                  html.A("Handover report", href=f"/handover/{site['id']}", className="small-link",
                         id="comm-handover"),
                  html.A("CSV", href=f"/handover/{site['id']}.csv", className="small-link")],
                 className="toolbar"),
        html.H3("1 · Bridge"),
        dcc.RadioItems(id="comm-bridge", value=bridges[0].id if bridges else None, className="bridge-picker",
                       options=_bridge_options(bridges)),
        html.Div(id="comm-bridges"),
        bridge_tools,
        html.Div(id="comm-credential", role="status"),
        html.H3(["2 · Sensors, live ", html.Span(id="comm-updated", className="muted")]),
        html.Div(id="comm-sensors", className="sensor-cards"),
        form,
    ], className="page commissioning")


def _node_options(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [*({"label": "\u2003" * n["depth"] + f"{n['name']} ({n['kind']})", "value": n["id"]}
              for n in nodes if n["kind"] in CLAMPABLE), {"label": "+ New circuit…", "value": NEW_CIRCUIT}]


def node_options(_done: int, site_id: int) -> list[dict[str, Any]]:
    with conn() as c:
        return _node_options(queries.tree(c, current_principal(), site_id))


def _ago(t: datetime | None, now: datetime) -> str:
    if t is None:
        return "never heard"
    s = int((now - t).total_seconds())
    return f"{s} s ago" if s < 120 else f"{s // 60} min ago" if s < 7200 else f"{s // 3600} h ago"


def _bridge_label(b: BridgeSummary, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    status = {True: "online", False: "offline", None: "no status"}[b.online]
    rssi = f"{b.weakest_rssi_dbw:.0f} dBW" if b.weakest_rssi_dbw is not None else "no RSSI"
    return f" {b.serial} · {status} · {_ago(b.last_seen_at, now)} · {rssi} · {b.sensors} sensors"


def _sensor_card(s: SensorCheck, zone: ZoneInfo, backfill: progress.Progress | None = None) -> html.Div:
    where = f"{s.node_name} · L{s.phase} · {s.ct_rating_a:g} A CT" if s.node_id is not None else "not assigned"
    now = "—" if s.current_a is None else f"{s.current_a:.2f} A"
    power = "" if s.power_w is None else f" · {s.power_w / 1000:.2f} kW"
    ok = not s.flags and s.state == "live"
    return html.Div([
        html.Div([html.Strong(s.serial), html.Span(s.state, className=f"flag {'ok' if ok else 'warn'}")],
                 className="sensor-head"),
        html.Div(where, className="muted"),
        html.Div([html.Span(now, className="sensor-current"), power], className="sensor-now"),
        html.Ul([html.Li(f) for f in s.flags], className="flags") if s.flags else None,
        html.Div(f"history being re-computed: {progress.eta_text(backfill)}", className="backfill muted",
                 id=f"backfill-{s.serial}") if backfill else None,
        html.Div(f"last reading {s.last_seen_at.astimezone(zone):%H:%M:%S}" if s.last_seen_at else "never heard",
                 className="muted"),
    ], className="card sensor-card", id=f"sensor-{s.serial}")


def refresh(_tick: int | None, bridge_id: int | None, _done: int, site_id: int) -> tuple[Any, ...]:
    p = current_principal()
    with conn() as c:
        site = queries.site(c, p, site_id)
        if site is None:
            return html.Div("No such site.", className="empty"), None, "", {"sensors": [], "spare": []}
        bridges, checks = commissioning.site_view(c, p, site_id, interval_s=reporting_interval_s(),
                                                  bridge_id=bridge_id)
        backfills = progress.backfills(c, [s.serial for s in checks])
        known = bridge_id is not None and any(b.id == bridge_id for b in bridges)
        credential = bridge_credentials.state(c, bridge_id) if known and bridge_id is not None else None
    zone = ZoneInfo(site["timezone"])
    now = datetime.now(UTC)
    chosen = next((b for b in bridges if b.id == bridge_id), None)
    if not bridges:
        summary: Any = html.Div("No bridges registered at this site yet.", className="empty")
    elif chosen is None:
        summary = html.Div("Pick a bridge.", className="muted")
    else:
        summary = html.Div([
            html.Span({True: "online", False: "offline", None: "no status"}[chosen.online],
                      className=f"flag {'ok' if chosen.online else 'bad'}"),
            html.Span(f"last heard {_ago(chosen.last_seen_at, now)}" if chosen.last_seen_at else "never heard"),
            html.Span(f" · weakest signal {chosen.weakest_rssi_dbw:.0f} dBW" if chosen.weakest_rssi_dbw else ""),
            html.Span(" · weak: move the bridge closer or add one", className="error") if chosen.weak_signal else None,
            html.Span(" · " + _sign_in_text(credential), id="comm-sign-in"),
            _pause_notice(credential),
        ], className="bridge-summary", id="comm-bridge-summary")
    cards = [_sensor_card(s, zone, backfills.get(s.serial)) for s in checks] or html.Div(
        "No sensors heard through this bridge yet.", className="muted")
    options = [{"label": f"{s.serial} · {'not assigned' if s.node_id is None else s.node_name}", "value": s.serial}
               for s in checks]
    spare = [{"label": s.serial, "value": s.serial} for s in checks if s.node_id is None]
    return summary, cards, f"updated {now.astimezone(zone):%H:%M:%S}", {"sensors": options, "spare": spare}


def choices(data: dict[str, list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return data["sensors"], data["spare"]


def show_fields(action: str | None, node: int | None) -> tuple[Any, ...]:
    shown: dict[str, str] = {}
    hidden = {"display": "none"}
    action = action or "assign"
    where = shown if action in ("assign", "correct", "move") else hidden
    when = shown if action in ("assign", "move", "replace", "unassign") else hidden
    swap = shown if action == "replace" else hidden
    new_circuit = shown if node == NEW_CIRCUIT and where is shown else hidden
    meter = shown if action == "meter" else hidden
    return ACTIONS[action], where, when, swap, new_circuit, meter


def _parse_time(text: str | None, zone: str) -> datetime | None:
    if not text or not text.strip():
        return None
    try:
        local = datetime.strptime(text.strip(), "%Y-%m-%d %H:%M")
    except ValueError as exc:
        raise DomainError("write the time as 2026-12-01 14:30", field="at") from exc
    return local.replace(tzinfo=ZoneInfo(zone))


def _act(c: Any, p: Principal, site: dict[str, Any], action: str, serial: str | None, node: int | None,
         new_name: str | None, parent: int | None, phase: int | None, ct: float | None, at_text: str | None,
         new_serial: str | None, kind: str | None) -> str:
    """Parse, authorise and call the core; returns what was done, in a sentence."""
    if not serial or queries.sensor_by_serial(c, p, serial) is None:
        raise DomainError("pick a sensor of this site", field="serial")
    if action == "meter":
        if kind not in ("clamp", "meter"):
            raise DomainError("say whether it is a clamp or a meter", field="reports_power")
        assignments.set_reports_power(c, p, serial, kind == "meter")
        return f"{serial} is a {kind}: its history is being re-summed."
    at = _parse_time(at_text, site["timezone"])
    if action == "unassign":
        assignments.unassign(c, p, serial, at=at)
        return f"{serial} unassigned."
    if action == "replace":
        if not new_serial or queries.sensor_by_serial(c, p, new_serial) is None:
            raise DomainError("pick the new sensor", field="new_serial")
        assignments.replace(c, p, serial, new_serial, at=at)
        return f"{new_serial} replaces {serial}."
    if node is None:
        raise DomainError("pick a circuit, or a new one", field="node_id")
    if ct is None:
        raise DomainError("give the CT's rating in amps", field="ct_rating_a")
    with c.transaction():  # a new circuit and its sensor, or neither
        if node == NEW_CIRCUIT:
            if not new_name or not new_name.strip():
                raise DomainError("name the new circuit", field="new_name")
            if parent is None or queries.node(c, p, parent) is None:
                raise DomainError("pick the panel it is on", field="node_id")
            node = catalogue.create_node(c, p, site["id"], parent, "circuit", new_name.strip())
        elif queries.node(c, p, node) is None:
            raise DomainError("pick a circuit of this site", field="node_id")
        if action == "assign":
            assignments.assign(c, p, serial, node, phase or 1, float(ct), since=at)
        elif action == "correct":
            assignments.correct(c, p, serial, node, phase or 1, float(ct))
        else:
            assignments.move(c, p, serial, node, phase or 1, float(ct), at=at)
    return f"{serial}: {action} saved."


def submit(_clicks: int | None, site_id: int, action: str, serial: str | None, node: int | None,
           new_name: str | None, parent: int | None, phase: int | None, ct: float | None, at_text: str | None,
           new_serial: str | None, kind: str | None, done: int) -> tuple[Any, ...]:
    p = current_principal()
    errors = dict.fromkeys(FIELDS, "")
    if not p.can("commission"):  # whatever the browser sends
        return html.Div("Not allowed: assigning sensors needs an installer's or an admin's access.",
                        className="error"), done, *errors.values()
    with conn() as c:
        site = queries.site(c, p, site_id)
        if site is None:
            return html.Div("No such site.", className="error"), done, *errors.values()
        try:
            said = _act(c, p, site, action or "assign", serial, node, new_name, parent, phase, ct, at_text, new_serial,
                        kind)
        except DomainError as exc:
            field = {"since": "at"}.get(exc.field or "", exc.field)
            field = field if field in errors else None
            if field:
                errors[field] = exc.detail
            return html.Div(exc.detail if not field else "Not saved: see the field marked.", className="error"), \
                done, *errors.values()
    return html.Div(said, className="saved"), done + 1, *errors.values()


def _sign_in_text(state: bridge_credentials.CredentialState | None) -> str:
    if state is None:
        return "no MQTT sign-in issued"
    if state.revoked_at is not None:
        return f"MQTT sign-in revoked{'' if state.applied else ' (reaching the broker…)'}"
    return (f"MQTT sign-in #{state.generation} issued {state.issued_at:%Y-%m-%d}"
            + ("" if state.applied else " (reaching the broker…)"))


def _pause_notice(state: bridge_credentials.CredentialState | None) -> html.Div | None:
    """Why the broker refuses the bridge just now, for how long, and what to look at."""
    if state is None or state.paused_until is None or state.revoked_at is not None:
        return None
    minutes = max(1, math.ceil((state.paused_until - datetime.now(UTC)).total_seconds() / 60))
    return html.Div(f"Sign-in paused for {minutes} min: the bridge reconnected over and over. Check its power "
                    "and network; it may sign in again after that.", className="flag warn", id="comm-paused")


def _shown(credential: Credential, said: str) -> html.Div:
    """The sign-in, once: to be typed into the bridge now."""
    rows = [("Username", credential.username), ("Password", credential.password),
            ("Client id", credential.client_id), ("Topic", credential.senml_topic)]
    return html.Div([
        html.Div(said, className="saved"),
        html.Dl([part for label, value in rows for part in (html.Dt(label), html.Dd(html.Code(value)))],
                className="credential"),
        html.P("Shown once: set it in the bridge now. Lost it? Ask for a new password.", className="muted"),
    ], className="card", id="comm-credential-shown")


def bridge_action(_add: int | None, _rotate: int | None, _revoke: int | None, site_id: int, serial: str | None,
                  code: str | None, name: str | None, bridge_id: int | None, changed: int) -> tuple[Any, int]:
    """Add a bridge by serial and claim code, or give the picked bridge a new password, or
    revoke its sign-in: each one core call; the new sign-in is shown once."""
    p = current_principal()
    if not p.can("commission"):
        return html.Div("Not allowed: bridges need an installer's or an admin's access.", className="error"), changed
    s = settings()
    with conn() as c:
        if queries.site(c, p, site_id) is None:
            return html.Div("No such site.", className="error"), changed
        try:
            if ctx.triggered_id == "comm-add-bridge":
                if not serial or not serial.strip():
                    raise DomainError("give the serial on the bridge's label", field="serial")
                _, credential = catalogue.register_bridge(
                    c, p, site_id, serial.strip(), (name or "").strip(), claim_code=code or "",
                    claim_key=s.claim_key, credential_key=s.bridge_credential_key)
                if credential is None:
                    return html.Div(f"{serial.strip()} is already here: its name is saved. For a new password, "
                                    "pick it and ask for one.", className="saved"), changed + 1
                return _shown(credential, f"{serial.strip()} added."), changed + 1
            if bridge_id is None or queries.bridge(c, p, bridge_id) is None:
                raise DomainError("pick a bridge of this site first", field="bridge")
            if ctx.triggered_id == "comm-rotate":
                credential = bridge_credentials.issue(c, p, bridge_id, key=s.bridge_credential_key)
                return _shown(credential, "New password issued: the old one stops working within seconds."), \
                    changed + 1
            bridge_credentials.revoke(c, p, bridge_id)
            return html.Div("Sign-in revoked: the bridge is disconnected within seconds.", className="saved"), \
                changed + 1
        except DomainError as exc:
            return html.Div(exc.detail, className="error"), changed


def _bridge_options(bridges: list[BridgeSummary]) -> list[dict[str, Any]]:
    return [{"label": _bridge_label(b), "value": b.id} for b in bridges]


def bridge_options(_changed: int, site_id: int) -> list[dict[str, Any]]:
    with conn() as c:
        return _bridge_options(commissioning.bridges(c, current_principal(), site_id))


def commission(_clicks: int | None, site_id: int) -> Any:
    p = current_principal()
    with conn() as c:
        if not p.can("commission") or queries.site(c, p, site_id) is None:
            return html.Span("Not allowed.", className="error")
        commissioning.mark_commissioned(c, p, site_id)
        return _state(c, site_id)
