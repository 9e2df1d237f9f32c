"""Tariffs: versions and bands as a week's price map, and the editor: drafts with their bands
checked slot by slot, a preview of the last complete month, publishing, and an admin's
correction of the past with a reason. Writes are `wattline.tariffs` functions, the same the
API calls; the preview is `analytics.costing.preview_draft`."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

import dash
import numpy as np
import plotly.graph_objects as go
from dash import ALL, Dash, Input, Output, State, ctx, dcc, html

from analytics.costing import preview_draft
from analytics.tariffs import load_tariffs, rate_table
from dashboard.auth import current_principal
from dashboard.data import conn, no_such_site, site_from_path
from wattline import progress, queries, tariffs
from wattline.errors import DomainError, Invalid, NotFound
from wattline.tariffs import DAY_TYPES, SLOT_MIN, SLOTS, TariffError

WEEK_ROWS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "Public holiday"]


def register(app: Dash) -> None:
    dash.register_page("tariffs", path_template="/tariffs/<site_id>", title="Tariffs · Wattline", layout=layout)
    register_editor(app)


MAP_STYLE = {"height": "320px"}  # a responsive graph takes its height from its box


def week_map(rates: dict[str, Any], currency: str) -> go.Figure:
    """A week's price on the 15-minute grid: one row per weekday (Mon–Fri use the weekday
    bands, Sat–Sun the weekend ones) and one for public holidays, as a facility manager reads
    a week. A slot no band prices is blank."""
    hours = [f"{(s * SLOT_MIN) // 60:02d}:{(s * SLOT_MIN) % 60:02d}" for s in range(SLOTS)]
    rows = [rates["weekday" if d < 5 else "weekend"] for d in range(7)] + [rates["holiday"]]
    fig = go.Figure(go.Heatmap(z=rows, x=hours, y=WEEK_ROWS, colorscale="YlOrRd",
                               colorbar={"title": f"{currency} minor/kWh"},
                               hovertemplate="%{y} %{x}: %{z:.2f}<extra></extra>"))
    fig.update_layout(margin={"t": 10, "l": 110, "r": 10, "b": 40}, yaxis={"autorange": "reversed"})
    return fig


def draft_map(draft: tariffs.Draft) -> go.Figure:
    """The draft's week, gaps blank (overlaps take the last band: the problems list names them)."""
    rates = {d: np.full(SLOTS, np.nan) for d in DAY_TYPES}
    for band in draft.bands:
        start = tariffs.slot_minute(band.start) // SLOT_MIN
        end = (tariffs.slot_minute(band.end) or 1440) // SLOT_MIN
        for d in band.day_types:
            if d in rates and end > start:
                rates[d][start:end] = float(band.rate_minor_per_kwh)
    return week_map(rates, draft.currency)


def layout(site_id: str = "0", **_: Any) -> html.Div:
    with conn() as c:
        site = site_from_path(c, site_id)
        if site is None:
            return no_such_site()
        if not current_principal().sees_costs:
            return html.Div([html.H2(f"Tariffs · {site['name']}"),
                             html.Div("Tariffs and costs are not shown to installers.", className="empty")],
                            className="page")
        versions = load_tariffs(c, site["id"])
    p = current_principal()
    editor = editor_card(site, admin=p.can("admin")) if p.can("write") else html.Div()
    if not versions:
        return html.Div([html.H2(f"Tariffs · {site['name']}"),
                         html.Div("No tariff yet: write the first one below." if p.can("write") else
                                  "No tariff yet.", className="empty"), editor], className="page")
    table = rate_table(versions)
    blocks = []
    for v, version in enumerate(reversed(versions)):
        k = len(versions) - 1 - v
        # One row per weekday (Mon-Fri use the weekday bands, Sat-Sun the weekend ones) and
        # one for public holidays, as a facility manager reads a week.
        fig = week_map({d: table.rates[k, DAY_TYPES.index(d)] for d in DAY_TYPES}, version.currency)
        bands = html.Table([html.Tr([html.Th(h) for h in ("Band", "Rate (minor/kWh)", "Days", "From", "To")])] + [
            html.Tr([html.Td(b.name), html.Td(f"{b.rate_minor_per_kwh}"), html.Td(", ".join(b.day_types)),
                     html.Td(b.start.strftime("%H:%M")), html.Td(b.end.strftime("%H:%M"))]) for b in version.bands],
            className="grid")
        blocks.append(html.Div([
            html.H4(f"{version.name} — from {version.valid_from:%Y-%m-%d %H:%M %Z}"),
            html.Div(f"Standing charge {version.standing_minor_per_day}/day · demand "
                     f"{version.demand_minor_per_kw}/kW on the {version.demand_interval_min}-minute peak · "
                     f"VAT {float(version.vat_rate) * 100:g} %"
                     + (f" · export paid {version.export_minor_per_kwh}/kWh" if version.export_minor_per_kwh else ""),
                     className="muted"),
            dcc.Graph(figure=fig, className="tariff-map", responsive=True, style=MAP_STYLE),
            html.Div(bands, className="table-scroll")],
            className="card"))
    return html.Div([html.H2(f"Tariffs · {site['name']}"), editor, *blocks], className="page tariffs")


# -- the editor ------------------------------------------------------------------------------------
BAND_FIELDS = ("name", "rate_minor_per_kwh", "day_types", "start", "end")
FIELDS = ("name", "currency", "valid_from", "standing_charge_minor_per_day", "demand_charge_minor_per_kw",
          "vat_rate", "export_rate_minor_per_kwh", "bands", "reason")
ALL_DAYS = ["weekday", "weekend", "holiday"]
NEW_BANDS: list[dict[str, Any]] = [
    {"name": "day", "rate_minor_per_kwh": "28", "day_types": ALL_DAYS, "start": "07:00", "end": "23:00"},
    {"name": "night", "rate_minor_per_kwh": "14", "day_types": ALL_DAYS, "start": "23:00", "end": "07:00"}]


def band_row(k: int, band: dict[str, Any]) -> html.Div:
    """One band as plain inputs, one line on a desktop and a small card on a phone. (It was an
    editable DataTable: deprecated, awkward to type into on a phone, and a cell edit could be
    lost under a re-render.) Ids are pattern-matching, so the callbacks read every row at once."""
    def field(label: str, kind: str, **props: Any) -> html.Label:
        return html.Label([label, dcc.Input(id={"type": f"band-{kind}", "index": k}, type="text", **props)])

    return html.Div([
        field("Band", "name", value=band["name"], placeholder="day"),
        field("Rate (minor/kWh)", "rate", value=str(band["rate_minor_per_kwh"]), inputMode="decimal"),
        html.Div([html.Span("Days"), dcc.Checklist(id={"type": "band-days", "index": k}, options=ALL_DAYS,
                                                   value=list(band["day_types"]), inline=True,
                                                   className="band-days")], className="band-days-field"),
        field("From", "start", value=band["start"], placeholder="HH:MM"),
        field("To", "end", value=band["end"], placeholder="HH:MM"),
        html.Button("Remove", id={"type": "band-remove", "index": k}, className="small band-remove",
                    title="Remove this band"),
    ], className="band")


def band_rows(bands: list[dict[str, Any]]) -> list[html.Div]:
    return [band_row(k, b) for k, b in enumerate(bands)]


def _field_error(field: str) -> html.Div:
    return html.Div(id=f"tariff-error-{field}", className="error field-error")


def editor_card(site: dict[str, Any], *, admin: bool) -> html.Div:
    """The draft editor of one site (for those who may write)."""
    correction = html.Div([
        html.H4("Correct a mistake (admins)"),
        html.P("Re-price from the draft's past date: the days since are priced again, and reports already "
               "sent for them are marked superseded.", className="muted"),
        html.Label(["Why", dcc.Input(id="tariff-reason", type="text", placeholder="the day rate was keyed as 82.6")]),
        _field_error("reason"),
        html.Button("Correct from this date", id="tariff-correct", className="small danger"),
    ]) if admin else html.Div([  # the callback's inputs and outputs must exist even where unused
        dcc.Input(id="tariff-reason", type="hidden"), _field_error("reason"),
        html.Button(id="tariff-correct", style={"display": "none"})])
    return html.Div([
        dcc.Store(id="tariff-site", data=site["id"]),
        dcc.Store(id="tariff-done", data=0),
        # The draft the form holds (None: a new one). The picker shows it, but is set only
        # together with its options: a value set before its option exists shows the placeholder.
        dcc.Store(id="tariff-current", data=None),
        html.H3("Write or change a tariff"),
        html.Div([dcc.Dropdown(id="tariff-draft", placeholder="A new draft (or pick one to change it)"),
                  html.Button("Start from the current version", id="tariff-copy", className="small")],
                 className="toolbar"),
        html.Label(["Name", dcc.Input(id="tariff-name", type="text", value="New tariff")]), _field_error("name"),
        html.Div([
            html.Label(["Currency", dcc.Input(id="tariff-currency", type="text", value="GBP", maxLength=3)]),
            html.Label([f"In effect from (local midnight, {site['timezone']})",
                        dcc.Input(id="tariff-valid-from", type="text", placeholder="YYYY-MM-DD",
                                  pattern=r"\d{4}-\d{2}-\d{2}")]),
        ], className="row"),
        _field_error("currency"), _field_error("valid_from"),
        html.Div([
            html.Label(["Standing charge (minor/day)", dcc.Input(id="tariff-standing", type="number", value=0, min=0)]),
            html.Label(["Demand charge (minor/kW)", dcc.Input(id="tariff-demand", type="number", value=0, min=0)]),
            html.Label(["Demand over", dcc.RadioItems(id="tariff-interval", value=30, inline=True, options=[
                {"label": " 15 min ", "value": 15}, {"label": " 30 min ", "value": 30}])]),
            html.Label(["VAT (%)", dcc.Input(id="tariff-vat", type="number", value=20, min=0, max=99)]),
            html.Label(["Export rate (minor/kWh, paid for energy given to the grid)",
                        dcc.Input(id="tariff-export", type="number", value=0, min=0)]),
        ], className="row"),
        _field_error("standing_charge_minor_per_day"), _field_error("demand_charge_minor_per_kw"),
        _field_error("vat_rate"), _field_error("export_rate_minor_per_kwh"),
        html.P("Bands price each quarter hour of each kind of day (weekday, weekend, holiday) exactly once. "
               "A band past midnight (23:00 to 07:00) is fine; 00:00 as its end means midnight.", className="muted"),
        html.Div(band_rows(NEW_BANDS), id="tariff-bands", className="bands"),
        html.Button("Add a band", id="tariff-add-band", className="small"),
        _field_error("bands"),
        html.Ul(id="tariff-problems", className="error"),
        # Responsive: drawn while hidden, it took plotly's default 700 px and ran off a phone.
        dcc.Graph(id="tariff-draft-map", className="draft-map", style={"display": "none"}, responsive=True,
                  config={"displayModeBar": False}),
        html.Div([html.Button("Save draft", id="tariff-save", className="primary"),
                  html.Button("Preview last month", id="tariff-preview-button", className="small"),
                  html.Button("Publish", id="tariff-publish", className="small")], className="toolbar wrap"),
        html.Div(id="tariff-message", role="status"),
        html.Div(id="tariff-preview", className="table-scroll"),
        correction,
        html.Div(id="tariff-corrections", className="table-scroll"),
    ], className="card form tariff-editor", id="tariff-editor")


# Every band's inputs, in row order: (names, rates, days, starts, ends).
BAND_STATES = [State({"type": f"band-{kind}", "index": ALL}, "value")
               for kind in ("name", "rate", "days", "start", "end")]


def _bands_of(names: list[Any], rates: list[Any], days: list[Any], starts: list[Any],
              ends: list[Any]) -> list[dict[str, Any]]:
    return [dict(zip(BAND_FIELDS, values, strict=True))
            for values in zip(names, rates, days, starts, ends, strict=True)]


def register_editor(app: Dash) -> None:
    app.callback(Output("tariff-draft", "options"), Output("tariff-corrections", "children"),
                 Output("tariff-draft", "value"),
                 Input("tariff-done", "data"), State("tariff-site", "data"), State("tariff-current", "data")
                 )(refresh_editor)
    app.callback(Output("tariff-name", "value"), Output("tariff-currency", "value"),
                 Output("tariff-valid-from", "value"), Output("tariff-standing", "value"),
                 Output("tariff-demand", "value"), Output("tariff-interval", "value"), Output("tariff-vat", "value"),
                 Output("tariff-export", "value"), Output("tariff-bands", "children", allow_duplicate=True),
                 Output("tariff-current", "data", allow_duplicate=True),
                 Input("tariff-draft", "value"), Input("tariff-copy", "n_clicks"), State("tariff-site", "data"),
                 State("tariff-current", "data"), prevent_initial_call=True)(load_draft)
    app.callback(Output("tariff-bands", "children", allow_duplicate=True), Input("tariff-add-band", "n_clicks"),
                 Input({"type": "band-remove", "index": ALL}, "n_clicks"), *BAND_STATES,
                 prevent_initial_call=True)(change_bands)
    app.callback(Output("tariff-message", "children"), Output("tariff-problems", "children"),
                 Output("tariff-preview", "children"), Output("tariff-done", "data"),
                 Output("tariff-current", "data"), Output("tariff-draft-map", "figure"),
                 Output("tariff-draft-map", "style"),
                 *(Output(f"tariff-error-{f}", "children") for f in FIELDS),
                 Input("tariff-save", "n_clicks"), Input("tariff-preview-button", "n_clicks"),
                 Input("tariff-publish", "n_clicks"), Input("tariff-correct", "n_clicks"),
                 State("tariff-site", "data"), State("tariff-current", "data"), State("tariff-name", "value"),
                 State("tariff-currency", "value"), State("tariff-valid-from", "value"),
                 State("tariff-standing", "value"), State("tariff-demand", "value"),
                 State("tariff-interval", "value"), State("tariff-vat", "value"), State("tariff-export", "value"),
                 *BAND_STATES,
                 State("tariff-reason", "value"), State("tariff-done", "data"),
                 prevent_initial_call=True)(act)


def _site(site_id: int) -> dict[str, Any]:
    with conn() as c:
        site = queries.site(c, current_principal(), site_id)
    if site is None:
        raise NotFound("site")
    return site


def refresh_editor(_done: int, site_id: int, current: int | None) -> tuple[Any, ...]:
    with conn() as c:
        if queries.site(c, current_principal(), site_id) is None:
            return [], "", None
        found = tariffs.drafts(c, site_id)
        fixes = tariffs.corrections(c, site_id)
        repriced = {f["id"]: progress.repricing(c, f["id"]) for f in fixes}
    options = [{"label": f"{d['body']['name']} from {d['body']['valid_from'][:10]}"
                         + (" (unfinished)" if d["problems"] else ""), "value": d["id"]} for d in found]
    table = html.Div()
    if fixes:
        table = html.Div([html.H4("Corrections"), html.Table(
            [html.Tr([html.Th(h) for h in ("When", "From", "Who", "Why", "Days re-priced", "Superseded")])] + [
                html.Tr([html.Td(f"{f['corrected_at']:%Y-%m-%d %H:%M}"), html.Td(f"{f['repriced_from']:%Y-%m-%d}"),
                         html.Td(f["corrected_by"] or ""), html.Td(f["reason"]),
                         html.Td(progress.eta_text(done) if (done := repriced[f["id"]]) else str(f["days_repriced"])),
                         html.Td(", ".join(x["reference"] for x in f["superseded"]) or "none")]) for f in fixes],
            className="grid", id="tariff-correction-list")])
    return options, table, current if any(o["value"] == current for o in options) else None


def load_draft(draft_id: int | None, _copy: int | None, site_id: int, current: int | None) -> tuple[Any, ...]:
    """Fill the form from the picked draft, or from the tariff in effect (copy). The form
    already holds the draft it just saved: picking that one again changes nothing (and a
    reload would overwrite what is being typed)."""
    site = _site(site_id)
    with conn() as c:
        if ctx.triggered_id == "tariff-copy":
            versions = tariffs.tariff_versions(c, site_id)
            if not versions:
                return (dash.no_update,) * 10
            v = versions[0]
            draft = tariffs.Draft(v["name"], v["currency"], v["valid_from"], tuple(
                tariffs.Band(b["name"], b["rate_minor_per_kwh"], tuple(b["day_types"]), b["start"], b["end"])
                for b in v["bands"]), v["standing_charge_minor_per_day"], v["demand_charge_minor_per_kw"],
                v["demand_interval_minutes"], v["vat_rate"], v["export_rate_minor_per_kwh"])
        elif draft_id is None:  # the picker cleared: what is saved next is a new draft
            return (*(dash.no_update,) * 9, None)
        elif draft_id == current:
            return (dash.no_update,) * 10
        else:
            draft = tariffs.load_draft(c, site_id, draft_id)
    local = draft.valid_from.astimezone(ZoneInfo(site["timezone"])).date()
    return (draft.name, draft.currency, local.isoformat(), float(draft.standing_charge_minor_per_day),
            float(draft.demand_charge_minor_per_kw), draft.demand_interval_minutes, float(draft.vat_rate * 100),
            float(draft.export_rate_minor_per_kwh), band_rows(draft.to_json()["bands"]),
            draft_id if ctx.triggered_id == "tariff-draft" else dash.no_update)


def change_bands(_add: int | None, removes: list[int | None], *states: list[Any]) -> Any:
    """Add an empty band, or remove the one whose button was pressed; what was typed stays."""
    rows = _bands_of(*states)
    trigger = ctx.triggered_id
    if trigger == "tariff-add-band":
        rows.append({"name": "", "rate_minor_per_kwh": "", "day_types": ALL_DAYS, "start": "00:00", "end": "00:00"})
    elif isinstance(trigger, dict) and any(removes):  # not a button that has only just been drawn
        rows.pop(int(trigger["index"]))
    else:
        return dash.no_update
    return band_rows(rows)


def _number(value: Any, field: str) -> Decimal:
    try:
        return Decimal(str(value if value not in (None, "") else 0))
    except InvalidOperation as exc:
        raise Invalid("Invalid tariff", "not a number", field=field) from exc


def _draft(site: dict[str, Any], name: str | None, currency: str | None, valid_from: str | None, standing: Any,
           demand: Any, interval: int | None, vat: Any, export: Any, rows: list[dict[str, Any]] | None
           ) -> tariffs.Draft:
    """The form as a draft; what cannot be read names its field."""
    if not valid_from:
        raise Invalid("Invalid tariff", "pick the date it takes effect", field="valid_from")
    try:
        day = date.fromisoformat(valid_from)
    except ValueError as exc:
        raise Invalid("Invalid tariff", "write the date as YYYY-MM-DD", field="valid_from") from exc
    bands = []
    for k, row in enumerate(rows or [], start=1):
        try:
            bands.append(tariffs.Band(str(row.get("name") or "").strip(), _number(row.get("rate_minor_per_kwh"),
                                                                                  "bands"),
                                      tuple(row.get("day_types") or ()),
                                      time.fromisoformat(str(row.get("start") or "")),
                                      time.fromisoformat(str(row.get("end") or ""))))
        except (ValueError, Invalid) as exc:
            raise Invalid("Invalid tariff", f"band {k}: a rate is a number, times are HH:MM", field="bands") from exc
    if not bands:
        raise Invalid("Invalid tariff", "add at least one band", field="bands")
    return tariffs.Draft((name or "").strip(), (currency or "").strip().upper(),
                         datetime.combine(day, time(0), ZoneInfo(site["timezone"])), tuple(bands),
                         _number(standing, "standing_charge_minor_per_day"),
                         _number(demand, "demand_charge_minor_per_kw"), int(interval or 30),
                         _number(vat, "vat_rate") / 100, _number(export, "export_rate_minor_per_kwh"))


def _preview_table(preview: dict[str, Any]) -> html.Div:
    def cell(minor: Any) -> str:
        return "—" if minor is None else f"{Decimal(minor) / 100:,.2f}"

    rows = [html.Tr([html.Td(line["label"]), html.Td(cell(line["actual_minor"])), html.Td(cell(line["draft_minor"])),
                     html.Td(cell((line["draft_minor"] or 0) - (line["actual_minor"] or 0)))])
            for line in preview["lines"]]
    total = html.Tr([html.Th("Total"), html.Th(cell(preview["actual_total_minor"])),
                     html.Th(cell(preview["draft_total_minor"])),
                     html.Th(cell(preview["draft_total_minor"] - (preview["actual_total_minor"] or 0)))])
    month = f"{preview['from']:%B %Y}"
    return html.Div([html.H4(f"{month} under this draft ({preview['energy_kwh']:,.1f} kWh)"),
                     html.Table([html.Tr([html.Th(h) for h in ("Line", f"Cost ({preview['actual_currency'] or '—'})",
                                                               f"Draft ({preview['currency']})", "Difference")]),
                                 *rows, total], className="grid", id="tariff-preview-table")])


def act(*args: Any) -> tuple[Any, ...]:
    (site_id, draft_id, name, currency, valid_from, standing, demand, interval, vat, export, *bands, reason,
     done) = args[4:]
    rows = _bands_of(*bands)
    action = ctx.triggered_id
    p = current_principal()
    errors = dict.fromkeys(FIELDS, "")
    message: Any = ""
    problems: list[Any] = []
    preview: Any = dash.no_update
    figure: Any = dash.no_update
    shown: Any = dash.no_update
    try:
        site = _site(site_id)
        draft = _draft(site, name, currency, valid_from, standing, demand, interval, vat, export, rows)
        with conn() as c:
            draft_id, found = tariffs.save_draft(c, p, site_id, draft, draft_id)
            problems = [html.Li(x) for x in found]
            figure, shown = draft_map(tariffs.load_draft(c, site_id, draft_id)), MAP_STYLE  # as stored: overnight split
            if action == "tariff-save":
                message = html.Span("Draft saved." + (" It cannot be published until every slot is priced once."
                                                      if found else " Ready to publish."), className="saved")
            elif action == "tariff-preview-button":
                preview = _preview_table(preview_draft(c, p, site_id, tariffs.load_draft(c, site_id, draft_id)))
                message = html.Span("Preview below.", className="saved")
            elif action == "tariff-publish":
                tariffs.publish_draft(c, p, site_id, draft_id)
                message, draft_id = html.Span("Published: it takes effect on its date.", className="saved"), None
            else:
                fixed = tariffs.correct_from(c, p, site_id, draft_id, reason or "")
                message = html.Span(f"Corrected: {fixed['days_repriced']} day(s) will be priced again; "
                                    f"{len(fixed['superseded'])} report(s) superseded.", className="saved")
                draft_id = None
    except (TariffError, DomainError) as exc:
        field = exc.field if exc.field in errors else "bands"
        errors[field] = exc.detail[:1].upper() + exc.detail[1:] + "."
    return (message, problems, preview, done + 1, draft_id, figure, shown, *errors.values())
