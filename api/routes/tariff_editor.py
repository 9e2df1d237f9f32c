"""The tariff editor: drafts (saved unfinished, checked slot by slot), a preview of the last
complete month under a draft, publishing, and an admin's correction of the past with a
reason. Each handler calls one function of `wattline.tariffs` (or the costing preview)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from analytics.costing import preview_draft
from api.deps import Admin, Conn, CostReader, Writer, visible_site
from api.schemas import (
    CorrectionIn,
    Created,
    DraftSaved,
    TariffCorrection,
    TariffDraft,
    TariffIn,
    TariffPreview,
)
from wattline import progress, tariffs
from wattline.tariffs import Band, Draft

router = APIRouter(prefix="/v1", tags=["tariffs"])


def draft_of(body: TariffIn) -> Draft:
    """The API's tariff body as a draft."""
    return Draft(body.name, body.currency, body.valid_from,
                 tuple(Band(b.name, b.rate_minor_per_kwh, tuple(b.day_types), b.start, b.end) for b in body.bands),
                 body.standing_charge_minor_per_day, body.demand_charge_minor_per_kw, body.demand_interval_minutes,
                 body.vat_rate, body.export_rate_minor_per_kwh)


@router.get("/sites/{site_id}/tariff-drafts", response_model=list[TariffDraft], summary="A site's tariff drafts")
def list_drafts(site_id: int, p: CostReader, conn: Conn) -> list[dict[str, Any]]:
    visible_site(conn, p, site_id)
    return tariffs.drafts(conn, site_id)


@router.post("/sites/{site_id}/tariff-drafts", response_model=DraftSaved, status_code=status.HTTP_201_CREATED,
             summary="Save a new draft; the answer lists the slots it does not price exactly once")
def create_draft(site_id: int, body: TariffIn, p: Writer, conn: Conn) -> DraftSaved:
    visible_site(conn, p, site_id)
    draft_id, problems = tariffs.save_draft(conn, p, site_id, draft_of(body))
    return DraftSaved(id=draft_id, problems=problems)


@router.put("/sites/{site_id}/tariff-drafts/{draft_id}", response_model=DraftSaved, summary="Change a draft")
def update_draft(site_id: int, draft_id: int, body: TariffIn, p: Writer, conn: Conn) -> DraftSaved:
    visible_site(conn, p, site_id)
    draft_id, problems = tariffs.save_draft(conn, p, site_id, draft_of(body), draft_id)
    return DraftSaved(id=draft_id, problems=problems)


@router.delete("/sites/{site_id}/tariff-drafts/{draft_id}", response_model=Created, summary="Throw a draft away")
def delete_draft(site_id: int, draft_id: int, p: Writer, conn: Conn) -> Created:
    visible_site(conn, p, site_id)
    tariffs.delete_draft(conn, site_id, draft_id)
    return Created(id=draft_id)


@router.get("/sites/{site_id}/tariff-drafts/{draft_id}/preview", response_model=TariffPreview,
            summary="The last complete month priced under the draft, beside what it cost")
def preview(site_id: int, draft_id: int, p: CostReader, conn: Conn) -> dict[str, Any]:
    visible_site(conn, p, site_id)
    return preview_draft(conn, p, site_id, tariffs.load_draft(conn, site_id, draft_id))


@router.post("/sites/{site_id}/tariff-drafts/{draft_id}/publish", response_model=Created,
             summary="Make the draft the next tariff version (from a future date once the site is costed)")
def publish(site_id: int, draft_id: int, p: Writer, conn: Conn) -> Created:
    visible_site(conn, p, site_id)
    return Created(id=tariffs.publish_draft(conn, p, site_id, draft_id))


@router.post("/sites/{site_id}/tariff-drafts/{draft_id}/correction", response_model=TariffCorrection,
             summary="Correct a mistake: re-price from the draft's past date, with a reason (admins; audited)")
def correct(site_id: int, draft_id: int, body: CorrectionIn, p: Admin, conn: Conn) -> dict[str, Any]:
    visible_site(conn, p, site_id)
    return tariffs.correct_from(conn, p, site_id, draft_id, body.reason)


@router.get("/sites/{site_id}/tariff-corrections", response_model=list[TariffCorrection],
            summary="Corrections of a site's tariffs: who, why, from when, what was superseded")
def list_corrections(site_id: int, p: CostReader, conn: Conn) -> list[dict[str, Any]]:
    visible_site(conn, p, site_id)
    rows = tariffs.corrections(conn, site_id)
    for row in rows:
        done = progress.repricing(conn, row["id"])
        row["progress"] = done.as_dict() if done else None
    return rows
