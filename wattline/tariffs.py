"""Tariff versions: the vocabulary, the rule that bands tile every day, and the write.

A version is effective-dated and frozen once in effect (a trigger in `sql/008`): a change
is a new version, so history is never re-priced silently. Costing lives in
`analytics.tariffs`; this module is what the API, the dashboard and the seeders share.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, time
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

from wattline import audit
from wattline.db import fetch_all, fetch_one
from wattline.errors import Conflict, Forbidden, Invalid, NotFound
from wattline.principal import Principal

SLOT_MIN = 15
SLOTS = 24 * 60 // SLOT_MIN
DAY_TYPES = ("weekday", "weekend", "holiday")


class TariffError(Invalid):
    """A tariff that cannot be stored or used as given; the message says why."""

    def __init__(self, detail: str) -> None:
        """`detail` is the sentence shown to the user."""
        super().__init__("Invalid tariff", detail)


@dataclass(frozen=True)
class Band:
    """A unit rate for some day types between two local times (end 00:00 means midnight)."""

    name: str
    rate_minor_per_kwh: Decimal
    day_types: tuple[str, ...]
    start: time
    end: time


def slot_minute(t: time) -> int:
    """Minutes since local midnight."""
    return t.hour * 60 + t.minute


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def slot_problems(bands: list[Band] | tuple[Band, ...]) -> list[str]:
    """Every way the bands fail to price each 15-minute slot of each day type exactly once,
    as runs of slots ("no band covers weekend 00:00–07:00"); empty when they tile every day."""
    problems: list[str] = []
    for band in bands:
        start, end = slot_minute(band.start), slot_minute(band.end) or 1440
        if start % SLOT_MIN or end % SLOT_MIN:
            problems.append(f"band {band.name!r} must start and end on a quarter hour")
        elif end <= start:
            problems.append(f"band {band.name!r} ends before it starts")
    if problems:
        return problems
    for day_type in DAY_TYPES:
        names: list[list[str]] = [[] for _ in range(SLOTS)]
        for band in bands:
            if day_type in band.day_types:
                for slot in range(slot_minute(band.start) // SLOT_MIN, (slot_minute(band.end) or 1440) // SLOT_MIN):
                    names[slot].append(band.name)
        slot = 0
        while slot < SLOTS:
            here = names[slot]
            run = slot
            while run < SLOTS and names[run] == here:
                run += 1
            span = f"{_hhmm(slot * SLOT_MIN)}–{_hhmm(run * SLOT_MIN)}"
            if not here:
                problems.append(f"no band covers {day_type} {span}")
            elif len(here) > 1:
                problems.append(f"bands overlap on {day_type} at {span} ({', '.join(here)})")
            slot = run
    return problems


def validate_bands(bands: list[Band] | tuple[Band, ...]) -> None:
    """Bands must cover every 15-minute slot of every day type exactly once."""
    problems = slot_problems(bands)
    if problems:
        raise TariffError("; ".join(problems))


def add_tariff(conn: psycopg.Connection[Any], site_id: int, name: str, currency: str, valid_from: datetime,
               bands: list[Band] | tuple[Band, ...], *, standing_charge_minor_per_day: Decimal = Decimal(0),
               demand_charge_minor_per_kw: Decimal = Decimal(0), demand_interval_minutes: int = 30,
               vat_rate: Decimal = Decimal(0), export_rate_minor_per_kwh: Decimal = Decimal(0),
               actor: Principal | None = None) -> int:
    """Add a tariff version to a site (idempotent per `valid_from`); bands are validated first.

    The days it can re-price are un-marked in the cost tier by a trigger, so the rollup
    worker re-prices them. Returns the version's id.
    """
    validate_bands(bands)
    with conn.transaction():
        existing = fetch_one(conn, "SELECT id FROM tariffs WHERE site_id = %s AND valid_from = %s",
                             (site_id, valid_from))
        if existing is not None:
            return int(existing["id"])
        row = fetch_one(conn, """
            INSERT INTO tariffs (site_id, name, currency, valid_from, standing_charge_minor_per_day,
                                 demand_charge_minor_per_kw, demand_interval_minutes, vat_rate,
                                 export_rate_minor_per_kwh)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
                        (site_id, name, currency, valid_from, standing_charge_minor_per_day,
                         demand_charge_minor_per_kw, demand_interval_minutes, vat_rate, export_rate_minor_per_kwh))
        assert row is not None
        tariff_id = int(row["id"])
        with conn.cursor() as cur:
            cur.executemany("""INSERT INTO tariff_bands (tariff_id, name, rate_minor_per_kwh, day_types, start_time,
                                                         end_time) VALUES (%s, %s, %s, %s, %s, %s)""",
                            [(tariff_id, b.name, b.rate_minor_per_kwh, list(b.day_types), b.start, b.end)
                             for b in bands])
        audit.record(conn, actor, "create", "tariff", tariff_id, site_id=site_id, valid_from=valid_from.isoformat())
    return tariff_id


def tariff_versions(conn: psycopg.Connection[Any], site_id: int) -> list[dict[str, Any]]:
    """A site's tariff versions, newest first, each with its bands."""
    versions = fetch_all(conn, """SELECT id, name, currency, valid_from, standing_charge_minor_per_day,
                                         demand_charge_minor_per_kw, demand_interval_minutes, vat_rate,
                                         export_rate_minor_per_kwh
                                  FROM tariffs WHERE site_id = %s ORDER BY valid_from DESC""", (site_id,))
    for t in versions:
        t["bands"] = fetch_all(conn, """SELECT name, rate_minor_per_kwh, day_types, start_time AS start,
                                               end_time AS end
                                        FROM tariff_bands WHERE tariff_id = %s ORDER BY id""", (t["id"],))
    return versions


# -- the editor: drafts, publishing, corrections --------------------------------------------------
@dataclass(frozen=True)
class Draft:
    """A tariff version being edited: everything a version has, nothing checked but its shape."""

    name: str
    currency: str
    valid_from: datetime
    bands: tuple[Band, ...]
    standing_charge_minor_per_day: Decimal = Decimal(0)
    demand_charge_minor_per_kw: Decimal = Decimal(0)
    demand_interval_minutes: int = 30
    vat_rate: Decimal = Decimal(0)
    export_rate_minor_per_kwh: Decimal = Decimal(0)  # paid for energy given to the grid

    def to_json(self) -> dict[str, Any]:
        """The draft as stored (`tariff_drafts.body`) and as the API shows it."""
        return {"name": self.name, "currency": self.currency, "valid_from": self.valid_from.isoformat(),
                "standing_charge_minor_per_day": str(self.standing_charge_minor_per_day),
                "demand_charge_minor_per_kw": str(self.demand_charge_minor_per_kw),
                "demand_interval_minutes": self.demand_interval_minutes, "vat_rate": str(self.vat_rate),
                "export_rate_minor_per_kwh": str(self.export_rate_minor_per_kwh),
                "bands": [{"name": b.name, "rate_minor_per_kwh": str(b.rate_minor_per_kwh),
                           "day_types": list(b.day_types), "start": b.start.strftime("%H:%M"),
                           "end": b.end.strftime("%H:%M")} for b in self.bands]}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Draft:
        """Read a stored draft back."""
        return cls(body["name"], body["currency"], datetime.fromisoformat(body["valid_from"]),
                   tuple(Band(b["name"], Decimal(b["rate_minor_per_kwh"]), tuple(b["day_types"]),
                              time.fromisoformat(b["start"]), time.fromisoformat(b["end"])) for b in body["bands"]),
                   Decimal(body["standing_charge_minor_per_day"]), Decimal(body["demand_charge_minor_per_kw"]),
                   int(body["demand_interval_minutes"]), Decimal(body["vat_rate"]),
                   Decimal(body.get("export_rate_minor_per_kwh", "0")))  # drafts saved before it: none


def check_draft(draft: Draft) -> None:
    """What a draft must be even unfinished; `Invalid` names the field."""
    if not draft.name.strip():
        raise Invalid("Invalid tariff", "give the tariff a name", field="name")
    if not (len(draft.currency) == 3 and draft.currency.isalpha() and draft.currency.isupper()):
        raise Invalid("Invalid tariff", "a currency is three capital letters (GBP, EUR, USD)", field="currency")
    if draft.valid_from.tzinfo is None:
        raise Invalid("Invalid tariff", "the effective date needs a time zone", field="valid_from")
    if draft.demand_interval_minutes not in (15, 30):
        raise Invalid("Invalid tariff", "demand is measured over 15 or 30 minutes", field="demand_interval_minutes")
    if not Decimal(0) <= draft.vat_rate < 1:
        raise Invalid("Invalid tariff", "VAT is a fraction: 0.2 for 20 %", field="vat_rate")
    for value, field in ((draft.standing_charge_minor_per_day, "standing_charge_minor_per_day"),
                         (draft.demand_charge_minor_per_kw, "demand_charge_minor_per_kw"),
                         (draft.export_rate_minor_per_kwh, "export_rate_minor_per_kwh"),
                         *((b.rate_minor_per_kwh, "bands") for b in draft.bands)):
        if value < 0:
            raise Invalid("Invalid tariff", "charges and rates cannot be negative", field=field)
    for band in draft.bands:
        if not band.name.strip() or not band.day_types or not set(band.day_types) <= set(DAY_TYPES):
            raise Invalid("Invalid tariff", f"band {band.name!r} needs a name and day types among {DAY_TYPES}",
                          field="bands")


def split_overnight(bands: tuple[Band, ...]) -> tuple[Band, ...]:
    """A band that runs past midnight (night 19:00–07:00) as the two bands a day holds, under
    one name: [start, midnight) and [midnight, end)."""
    out: list[Band] = []
    for band in bands:
        start, end = slot_minute(band.start), slot_minute(band.end)
        if end and end < start:
            out += [replace(band, end=time(0)), replace(band, start=time(0))]
        else:
            out.append(band)
    return tuple(out)


def save_draft(conn: psycopg.Connection[Any], actor: Principal | None, site_id: int, draft: Draft,
               draft_id: int | None = None) -> tuple[int, list[str]]:
    """Create or change a draft; returns its id and the slots its bands do not price exactly once
    (a draft may be saved unfinished; it cannot be published so). A band past midnight is split."""
    check_draft(draft)
    draft = replace(draft, bands=split_overnight(draft.bands))
    body = Jsonb(draft.to_json())
    if draft_id is None:
        row = fetch_one(conn, "INSERT INTO tariff_drafts (site_id, body, created_by) VALUES (%s, %s, %s) RETURNING id",
                        (site_id, body, actor.user_id if actor else None))
    else:
        row = fetch_one(conn, """UPDATE tariff_drafts SET body = %s, updated_at = now() WHERE id = %s AND site_id = %s
                                 RETURNING id""", (body, draft_id, site_id))
    if row is None:
        raise NotFound("tariff draft")
    return int(row["id"]), slot_problems(draft.bands)


def drafts(conn: psycopg.Connection[Any], site_id: int) -> list[dict[str, Any]]:
    """A site's drafts, newest first, each with what stops it being published."""
    rows = fetch_all(conn, """SELECT id, body, created_at, updated_at FROM tariff_drafts WHERE site_id = %s
                              ORDER BY updated_at DESC, id DESC""", (site_id,))
    for r in rows:
        r["problems"] = slot_problems(Draft.from_json(r["body"]).bands)
    return rows


def load_draft(conn: psycopg.Connection[Any], site_id: int, draft_id: int) -> Draft:
    """One draft of the site, or NotFound."""
    row = fetch_one(conn, "SELECT body FROM tariff_drafts WHERE id = %s AND site_id = %s", (draft_id, site_id))
    if row is None:
        raise NotFound("tariff draft")
    return Draft.from_json(row["body"])


def delete_draft(conn: psycopg.Connection[Any], site_id: int, draft_id: int) -> None:
    """Throw a draft away."""
    if conn.execute("DELETE FROM tariff_drafts WHERE id = %s AND site_id = %s", (draft_id, site_id)).rowcount == 0:
        raise NotFound("tariff draft")


def _add(conn: psycopg.Connection[Any], site_id: int, draft: Draft, actor: Principal | None) -> int:
    return add_tariff(conn, site_id, draft.name, draft.currency, draft.valid_from, draft.bands,
                      standing_charge_minor_per_day=draft.standing_charge_minor_per_day,
                      demand_charge_minor_per_kw=draft.demand_charge_minor_per_kw,
                      demand_interval_minutes=draft.demand_interval_minutes, vat_rate=draft.vat_rate,
                      export_rate_minor_per_kwh=draft.export_rate_minor_per_kwh, actor=actor)


def publish_draft(conn: psycopg.Connection[Any], actor: Principal | None, site_id: int, draft_id: int) -> int:
    """Make a draft the site's next tariff version (it must start ahead of now once the site is
    costed: the past is changed only by `correct_from`). Returns the version's id."""
    draft = load_draft(conn, site_id, draft_id)
    validate_bands(draft.bands)
    with conn.transaction():
        if fetch_one(conn, "SELECT 1 FROM tariffs WHERE site_id = %s AND valid_from = %s",
                     (site_id, draft.valid_from)) is not None:
            raise Conflict("a version already starts at this date; pick another", field="valid_from")
        try:
            with conn.transaction():
                tariff_id = _add(conn, site_id, draft, actor)
        except pg_errors.CheckViolation as exc:
            raise Invalid("Effective date in a closed past",
                          "this site is already costed before that date: a new version must start in the future "
                          "(an admin can correct the past, with a reason)", field="valid_from") from exc
        conn.execute("DELETE FROM tariff_drafts WHERE id = %s", (draft_id,))
    return tariff_id


def correct_from(conn: psycopg.Connection[Any], actor: Principal, site_id: int, draft_id: int,
                 reason: str) -> dict[str, Any]:
    """Re-price the past: the draft takes effect from its (past) date, replacing a version that
    started at that very moment. The cost tier drops those days' prices for the worker to
    price again; the audit log says who and why; what was handed out for them is superseded."""
    if not actor.can("admin"):
        raise Forbidden("only an admin corrects a tariff in effect")
    if len(reason.strip()) < 10:
        raise Invalid("Reason needed", "say why the past is re-priced (10 characters at least)", field="reason")
    draft = load_draft(conn, site_id, draft_id)
    validate_bands(draft.bands)
    with conn.transaction():
        now = fetch_one(conn, "SELECT now() AS now")
        assert now is not None
        if draft.valid_from >= now["now"]:
            raise Invalid("Not in the past", "this date is ahead: publish the draft instead", field="valid_from")
        days = fetch_one(conn, "SELECT count(*) AS n FROM band_days WHERE site_id = %s AND day >= %s::date - 1",
                         (site_id, draft.valid_from))
        superseded = fetch_all(conn, """UPDATE cost_deliveries SET superseded_at = now()
                                        WHERE site_id = %s AND period_end > %s AND superseded_at IS NULL
                                        RETURNING kind, reference, period_start, period_end, delivered_at""",
                               (site_id, draft.valid_from))
        conn.execute("SET LOCAL wattline.allow_history_rewrite = 'on'")
        conn.execute("DELETE FROM tariffs WHERE site_id = %s AND valid_from = %s", (site_id, draft.valid_from))
        tariff_id = _add(conn, site_id, draft, actor)
        conn.execute("RESET wattline.allow_history_rewrite")
        row = fetch_one(conn, """INSERT INTO tariff_corrections (site_id, tariff_id, repriced_from, reason,
                                     corrected_by, days_repriced, superseded)
                                 VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id, corrected_at""",
                        (site_id, tariff_id, draft.valid_from, reason.strip(), actor.user_id,
                         days["n"] if days else 0, Jsonb(orjson.loads(orjson.dumps(superseded, default=str)))))
        assert row is not None
        audit.record(conn, actor, "correct", "tariff", tariff_id, site_id=site_id, reason=reason.strip(),
                     repriced_from=draft.valid_from.isoformat())
        conn.execute("DELETE FROM tariff_drafts WHERE id = %s", (draft_id,))
    return {"id": row["id"], "tariff_id": tariff_id, "repriced_from": draft.valid_from,
            "days_repriced": days["n"] if days else 0, "superseded": superseded}


def record_delivery(conn: psycopg.Connection[Any], site_id: int, kind: str, reference: str,
                    period_start: datetime, period_end: datetime) -> None:
    """Note that costs of the site for a period left Wattline (an export, a report), so that a
    later correction of those days can say it is superseded."""
    conn.execute("""INSERT INTO cost_deliveries (site_id, kind, reference, period_start, period_end)
                    VALUES (%s, %s, %s, %s, %s)""", (site_id, kind, reference, period_start, period_end))


def corrections(conn: psycopg.Connection[Any], site_id: int) -> list[dict[str, Any]]:
    """A site's corrections, newest first: when, from when, who and why, what it re-priced."""
    return fetch_all(conn, """SELECT c.id, c.tariff_id, c.repriced_from, c.reason, c.corrected_at, c.days_repriced,
                                     c.superseded, u.email AS corrected_by
                              FROM tariff_corrections c LEFT JOIN users u ON u.id = c.corrected_by
                              WHERE c.site_id = %s ORDER BY c.corrected_at DESC, c.id DESC""", (site_id,))
