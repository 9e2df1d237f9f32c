"""Alert rules of a site: the list, and a builder for every kind of rule. Its parameters are
drawn from the rule's own model (`alerts.rules`) with their defaults and units, beside the
scope (site or node), severity, schedule, recipients (people, plain addresses, webhooks)
and whether it is on. A backtest shows what the rule would have raised over the last four
weeks before it is saved; a saved rule shows its history of episodes. Saving is one
function of `alerts.store`, the same the API calls."""

from __future__ import annotations

import types
import typing
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import dash
from dash import ALL, Dash, Input, Output, State, ctx, dcc, html
from pydantic import ValidationError

from alerts import store
from alerts.backtest import backtest
from alerts.rules import KINDS, MODELS, RULE_PARAMS, SEVERITIES, WEEKDAYS, Recipients, Schedule
from dashboard.auth import current_principal
from dashboard.data import conn, no_such_site, settings, site_from_path
from wattline import people, queries, virtual_meters
from wattline.errors import DomainError

KIND_NAMES = {"threshold": "Power above or below a limit", "after_hours": "Energy outside opening hours",
              "sensor_offline": "A sensor goes silent", "bridge_offline": "A bridge goes offline",
              "anomaly": "Unusual hourly energy", "cycling": "Short-cycling (starts per hour)",
              "base_load": "Base load creeping up", "budget": "Month's cost above a budget"}
#: The unit a parameter is in, from its name's ending.
UNITS = (("_kwh", "kWh"), ("_w", "W"), ("_minutes", "min"), ("_hours", "h"), ("_pct", "%"), ("_days", "days"),
         ("intervals", "reporting intervals"), ("weeks", "weeks"), ("cap", "in the tariff's currency"))
SETTINGS_FIELDS = ("name", "node", "params", "schedule", "recipients")


def register(app: Dash) -> None:
    dash.register_page("alert_rules", path_template="/alert-rules/<site_id>", title="Alert rules · Wattline",
                       layout=layout)
    app.callback(Output("rules-list", "children"), Output("rules-pick", "options"),
                 Input("rules-done", "data"), State("rules-site", "data"))(refresh)
    app.callback(Output("rules-params", "children"), Input("rules-kind", "value"),
                 Input("rules-loaded", "data"))(params_form)
    app.callback(Output("rules-name", "value"), Output("rules-node", "value"), Output("rules-kind", "value"),
                 Output("rules-severity", "value"), Output("rules-days", "value"), Output("rules-hours", "value"),
                 Output("rules-people", "value"), Output("rules-emails", "value"), Output("rules-hooks", "value"),
                 Output("rules-enabled", "value"), Output("rules-loaded", "data"), Output("rules-history", "children"),
                 Input("rules-pick", "value"), State("rules-site", "data"), prevent_initial_call=True)(load_rule)
    app.callback(Output("rules-message", "children"), Output("rules-backtest", "children"),
                 Output("rules-done", "data"), Output("rules-pick", "value"),
                 *(Output(f"rules-error-{f}", "children") for f in SETTINGS_FIELDS),
                 Input("rules-save", "n_clicks"), Input("rules-try", "n_clicks"), Input("rules-delete", "n_clicks"),
                 State("rules-site", "data"), State("rules-pick", "value"), State("rules-name", "value"),
                 State("rules-node", "value"), State("rules-kind", "value"),
                 State({"type": "rule-param", "name": ALL}, "value"), State({"type": "rule-param", "name": ALL}, "id"),
                 State("rules-severity", "value"), State("rules-days", "value"), State("rules-hours", "value"),
                 State("rules-people", "value"), State("rules-emails", "value"), State("rules-hooks", "value"),
                 State("rules-enabled", "value"), State("rules-done", "data"), prevent_initial_call=True)(act)


def _error(field: str) -> html.Div:
    return html.Div(id=f"rules-error-{field}", className="error field-error")


def layout(site_id: str = "0", **_: Any) -> html.Div:
    p = current_principal()
    with conn() as c:
        site = site_from_path(c, site_id)
        if site is None:
            return no_such_site()
        nodes = queries.tree(c, p, site["id"])
        meters = virtual_meters.meters(c, p, site["customer_id"])
        org = people.Org(customer_id=site["customer_id"])
        persons = people.people(c, org) if p.can("admin") or p.can("write") else []
        hooks = store.webhooks(c, p, site["customer_id"]) if p.can("admin") or p.can("write") else []
    kinds = [{"label": KIND_NAMES[k], "value": k} for k in KINDS if p.sees_costs or k != "budget"]
    can = p.can("write")
    builder = html.Div([
        html.H3("Build a rule"),
        html.Label(["Rule", dcc.Dropdown(id="rules-pick", placeholder="A new rule (or pick one to change it)")]),
        html.Label(["Name", dcc.Input(id="rules-name", type="text", placeholder="Freezer above 3 kW at night")]),
        _error("name"),
        html.Label(["Watch", dcc.Dropdown(id="rules-node", placeholder="The whole site", options=[
            {"label": f"{'· ' * n['depth']}{n['name']} ({n['kind']})", "value": n["id"]}
            for n in nodes if n["kind"] != "site"] + [
            {"label": f"Virtual meter: {m['name']}", "value": f"meter:{m['id']}"} for m in meters])]),
        _error("node"),
        html.Label(["Kind", dcc.Dropdown(id="rules-kind", options=kinds, value="threshold", clearable=False)]),
        html.Div(id="rules-params", className="rule-params"),
        _error("params"),
        html.Label(["Severity", dcc.RadioItems(id="rules-severity", value="warning", inline=True,
                                               options=[{"label": f" {s} ", "value": s} for s in SEVERITIES])]),
        html.Label(["Armed on", dcc.Checklist(id="rules-days", value=list(WEEKDAYS), inline=True,
                                              options=[{"label": f" {d} ", "value": d} for d in WEEKDAYS])]),
        html.Label(["Between (local time)", dcc.Input(id="rules-hours", type="text", value="00:00-24:00",
                                                      placeholder="08:00-18:00")]),
        _error("schedule"),
        html.Label(["Tell these people", dcc.Dropdown(id="rules-people", multi=True, options=[
            {"label": x["email"], "value": x["id"]} for x in persons if x["status"] == "active"])]),
        html.Label(["And these addresses (comma-separated)", dcc.Input(id="rules-emails", type="text")]),
        html.Label(["Webhooks (none chosen: every one)", dcc.Dropdown(id="rules-hooks", multi=True, options=[
            {"label": h["url"], "value": h["id"]} for h in hooks])]),
        _error("recipients"),
        dcc.Checklist(id="rules-enabled", value=["on"], options=[{"label": " On", "value": "on"}], inline=True),
        html.Div([html.Button("Backtest 4 weeks", id="rules-try", className="small"),
                  html.Button("Save rule", id="rules-save", className="primary"),
                  html.Button("Delete", id="rules-delete", className="small danger")], className="toolbar wrap"),
        html.Div(id="rules-message", role="status"),
        html.Div(id="rules-backtest", className="table-scroll"),
        html.Div(id="rules-history", className="table-scroll"),
    ], className="card form", id="rules-builder") if can else html.Div(
        "You can look, not change: rules are set by facility managers and admins.", className="muted")
    return html.Div([
        dcc.Store(id="rules-site", data=site["id"]), dcc.Store(id="rules-done", data=0),
        dcc.Store(id="rules-loaded", data=None),
        html.H2(["Alert rules · ", site["name"]]),
        html.Div([dcc.Link("Site", href=f"/site/{site['id']}"), " · ", dcc.Link("Alerts", href="/alerts")],
                 className="toolbar"),
        html.Div(id="rules-list", className="card table-scroll"),
        builder,
    ], className="page alert-rules")


def refresh(_done: int, site_id: int) -> tuple[Any, Any]:
    p = current_principal()
    with conn() as c:
        rules = store.rules(c, p, site_id)
        counts = {r["id"]: len(store.episodes_of(c, p, r["id"], limit=1000)) for r in rules}
        nodes = {n["id"]: n for n in queries.tree(c, p, site_id)}
        meters = {r["virtual_meter_id"]: virtual_meters.meter(c, p, r["virtual_meter_id"])
                  for r in rules if r["virtual_meter_id"]}
    if not rules:
        return html.Div("No rules yet.", className="muted"), []

    def watched(r: dict[str, Any]) -> str:
        """What the rule watches, as a person would name it."""
        if r["virtual_meter_id"]:
            meter = meters.get(r["virtual_meter_id"])
            return f"meter: {meter['name']}" if meter else "a meter"
        node = nodes.get(r["node_id"]) if r["node_id"] else None
        return "whole site" if node is None or node["kind"] == "site" else node["name"]

    table = html.Table([html.Tr([html.Th(h) for h in ("Rule", "Watches", "Kind", "Severity", "On", "Episodes",
                                                      "Problem")])] + [
        html.Tr([html.Td(r["name"]), html.Td(watched(r)), html.Td(KIND_NAMES.get(r["kind"], r["kind"])),
                 html.Td(r["severity"]),
                 html.Td("on" if r["enabled"] else "off"), html.Td(str(counts[r["id"]])),
                 html.Td(r["last_error"] or "", className="error")], id=f"rule-{r['id']}") for r in rules],
        className="grid", id="rules-table")
    return table, [{"label": r["name"], "value": r["id"]} for r in rules]


def _unit(name: str) -> str:
    return next((unit for ending, unit in UNITS if name.endswith(ending)), "")


def params_form(kind: str | None, loaded: dict[str, Any] | None) -> list[Any]:
    """One input per parameter of the kind, with its default, unit and description."""
    if not kind:
        return []
    values = loaded["params"] if loaded and loaded["params"].get("kind") == kind else {}
    out: list[Any] = []
    for name, info in MODELS[kind].model_fields.items():
        if name == "kind":
            continue
        default = info.get_default(call_default_factory=True)
        value = values.get(name, default)
        label = name.replace("_", " ").replace(" w", " (W)").replace(" kwh", " (kWh)") \
            .replace(" pct", " (%)").replace(" minutes", " (min)").replace(" hours", " (h)")
        annotation = info.annotation
        args = typing.get_args(annotation)
        if name in ("days",):
            control: Any = dcc.Checklist(id={"type": "rule-param", "name": name}, value=value, inline=True,
                                         options=[{"label": f" {d} ", "value": d} for d in WEEKDAYS])
        elif name == "hours":
            control = dcc.Input(id={"type": "rule-param", "name": name}, type="text", value="-".join(value))
        elif typing.get_origin(annotation) is typing.Literal:
            control = dcc.RadioItems(id={"type": "rule-param", "name": name}, value=value, inline=True,
                                     options=[{"label": f" {a} ", "value": a} for a in args])
        else:
            number = value if value is None else float(value) if isinstance(value, Decimal) else value
            control = dcc.Input(id={"type": "rule-param", "name": name}, type="number", value=number,
                                placeholder="optional" if type(None) in args or isinstance(annotation, types.UnionType)
                                else "")
        hint = " · ".join(x for x in (info.description or "", _unit(name)) if x)
        out.append(html.Label([label, control, html.Div(hint, className="muted")]))
    return out


def _params(kind: str, values: list[Any], ids: list[dict[str, str]]) -> Any:
    raw: dict[str, Any] = {"kind": kind}
    for value, pid in zip(values, ids, strict=True):
        if value in (None, ""):
            continue
        raw[pid["name"]] = tuple(x.strip() for x in value.replace("–", "-").split("-")) if pid["name"] == "hours" \
            else value
    return RULE_PARAMS.validate_python(raw)


def _reason(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(x) for x in first["loc"] if not str(x).startswith(("function-", "threshold")))
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where.replace('_', ' ')}: {message}" if where else message


def load_rule(rule_id: int | None, site_id: int) -> tuple[Any, ...]:
    if rule_id is None:
        return (dash.no_update,) * 12
    p = current_principal()
    with conn() as c:
        rule = store.rule(c, p, rule_id)
        if rule is None:
            return (dash.no_update,) * 12
        history = store.episodes_of(c, p, rule_id, limit=50)
    schedule = rule["schedule"] or {"days": list(WEEKDAYS), "hours": ["00:00", "24:00"]}
    recipients = rule["recipients"]
    watched = f"meter:{rule['virtual_meter_id']}" if rule["virtual_meter_id"] else rule["node_id"]
    return (rule["name"], watched, rule["kind"], rule["severity"], schedule["days"],
            "-".join(schedule["hours"]), recipients["user_ids"], ", ".join(recipients["emails"]),
            recipients["webhook_ids"] or [],
            ["on"] if rule["enabled"] else [], {"params": rule["params"]}, _history(history))


def _history(rows: list[dict[str, Any]]) -> Any:
    if not rows:
        return html.P("No episodes yet.", className="muted")
    return html.Div([html.H4("History"), html.Table(
        [html.Tr([html.Th(h) for h in ("Started", "Cleared", "What", "State")])] + [
            html.Tr([html.Td(_when(e["started_at"], e["timezone"])), html.Td(_when(e["cleared_at"], e["timezone"])),
                     html.Td(e["message"]), html.Td(e["state"])]) for e in rows], className="grid",
        id="rules-history-table")])


def _when(t: datetime | None, zone: str) -> str:
    return t.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M") if t else "ongoing"


def act(*args: Any) -> tuple[Any, ...]:
    (site_id, rule_id, name, watched, kind, values, ids, severity, days, hours, user_ids, emails, hooks, enabled,
     done) = args[3:]
    # "Watch" holds a node id, or "meter:<id>" for a virtual meter
    meter_id = int(watched.partition(":")[2]) if isinstance(watched, str) else None
    node_id = None if isinstance(watched, str) else watched
    p = current_principal()
    errors = dict.fromkeys(SETTINGS_FIELDS, "")
    message: Any = ""
    result: Any = dash.no_update
    try:
        params = _params(kind, values, ids)
    except ValidationError as exc:
        errors["params"] = _reason(exc)
        return (message, result, dash.no_update, dash.no_update, *errors.values())
    try:
        window = tuple(x.strip() for x in (hours or "").replace("–", "-").split("-"))
        schedule = None if (sorted(days or []) == sorted(WEEKDAYS) and window == ("00:00", "24:00")) else \
            Schedule(days=days or [], hours=window)
    except ValidationError as exc:
        errors["schedule"] = _reason(exc)
        return (message, result, dash.no_update, dash.no_update, *errors.values())
    try:
        recipients = Recipients(user_ids=user_ids or [], webhook_ids=hooks or None,
                                emails=[e for e in (emails or "").replace(";", ",").split(",") if e.strip()])
    except ValidationError as exc:
        errors["recipients"] = _reason(exc)
        return (message, result, dash.no_update, dash.no_update, *errors.values())
    try:
        with conn() as c:
            if ctx.triggered_id == "rules-try":
                found = backtest(c, p, site_id, node_id, params, schedule=schedule, severity=severity,
                                 settle_s=settings().alerts_settle_s,
                                 reporting_interval_s=settings().reporting_interval_s, virtual_meter_id=meter_id)
                site = queries.site(c, p, site_id)
                assert site is not None
                return (html.Span(f"{found.episodes} episode(s) in the last 4 weeks"
                                  + (" (this kind judges the present: what holds now)" if found.present_only else ""),
                                  className="saved"), _backtest_table(found, site["timezone"]), dash.no_update,
                        dash.no_update, *errors.values())
            if not p.can("write") or queries.site(c, p, site_id) is None:
                raise DomainError("not allowed")
            if ctx.triggered_id == "rules-delete":
                if rule_id is None or store.rule(c, p, rule_id) is None:
                    raise DomainError("pick a saved rule to delete", field="name")
                store.delete_rule(c, rule_id, actor=p)
                return (html.Span("Rule deleted.", className="saved"), "", done + 1, None, *errors.values())
            if not (name or "").strip():
                raise DomainError("give the rule a name", field="name")
            if rule_id is not None and store.rule(c, p, rule_id) is not None:
                store.update_rule(c, rule_id, name=name.strip(), params=params, enabled="on" in (enabled or []),
                                  severity=severity, schedule=schedule, recipients=recipients, actor=p)
                said = "Rule saved."
            else:
                rule_id = store.create_rule(c, site_id, node_id, name.strip(), params, "on" in (enabled or []),
                                            severity=severity, schedule=schedule, recipients=recipients, actor=p,
                                            virtual_meter_id=meter_id)
                said = "Rule created."
    except DomainError as exc:
        errors[exc.field if exc.field in errors else "name" if exc.field is None else "params"] = \
            exc.detail[:1].upper() + exc.detail[1:] + "."
        if exc.field in ("node_id", "virtual_meter_id"):
            errors["node"], errors["params"] = errors["params"], ""
        return (message, result, dash.no_update, dash.no_update, *errors.values())
    return (html.Span(said, className="saved"), dash.no_update, done + 1, rule_id, *errors.values())


def _backtest_table(found: Any, zone: str) -> Any:
    if not found.findings:
        return html.P("It would have raised nothing.", className="muted", id="rules-backtest-empty")
    return html.Table([html.Tr([html.Th(h) for h in ("Started", "Cleared", "What")])] + [
        html.Tr([html.Td(_when(f.start, zone)), html.Td(_when(f.end, zone)), html.Td(f.message)])
        for f in found.findings], className="grid", id="rules-backtest-table")
