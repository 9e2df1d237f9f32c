"""The data-subject rights of the privacy notice: access, rectification, erasure, consent;
support requests; and the k-anonymous benchmark export. Every read or change of personal
data here is audited."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import Admin, Conn, Reader
from api.problems import Problem, not_found
from api.routes.data import checked_range
from api.schemas import ConsentIn, ConsentState, ContactPatch, Created, ErasureDone, SiteAccess, SupportRequestIn
from wattline import accounts, privacy, queries
from wattline.errors import NotFound
from wattline.principal import Principal

router = APIRouter(prefix="/v1", tags=["privacy"])


def _user(conn: Conn, p: Principal, user_id: int) -> int:
    if privacy.visible_user(conn, p, user_id) is None:
        raise not_found("user")
    return user_id


@router.get("/me/export", summary="Access request: everything held about you, as JSON")
def export_me(p: Reader, conn: Conn) -> dict[str, Any]:
    return privacy.export_person(conn, p.user_id, p)


@router.get("/users/{user_id}/export", summary="Access request for a user of your organisation (admins)")
def export_user(user_id: int, p: Admin, conn: Conn) -> dict[str, Any]:
    return privacy.export_person(conn, _user(conn, p, user_id), p)


def _rectify(conn: Conn, p: Principal, user_id: int, body: ContactPatch) -> Created:
    try:
        privacy.rectify(conn, user_id, p, body.model_dump(exclude_unset=True))
    except privacy.PrivacyError as exc:
        raise Problem(422, "Cannot correct", str(exc)) from exc
    return Created(id=user_id)


@router.patch("/me", response_model=Created, summary="Correct your contact details (audited)")
def rectify_me(body: ContactPatch, p: Reader, conn: Conn) -> Created:
    return _rectify(conn, p, p.user_id, body)


@router.patch("/users/{user_id}", response_model=Created, summary="Correct a user's contact details (admins; audited)")
def rectify_user(user_id: int, body: ContactPatch, p: Admin, conn: Conn) -> Created:
    return _rectify(conn, p, _user(conn, p, user_id), body)


@router.put("/users/{user_id}/sites", response_model=SiteAccess,
            summary="Limit a user to some sites (an installer to the sites they commission); [] lifts it (admins)")
def grant_sites(user_id: int, body: SiteAccess, p: Admin, conn: Conn) -> SiteAccess:
    _user(conn, p, user_id)
    for site_id in body.site_ids:
        if queries.site(conn, p, site_id) is None:
            raise NotFound("site", field="site_ids")
    accounts.grant_sites(conn, p, user_id, body.site_ids)
    return SiteAccess(site_ids=sorted(set(body.site_ids)))


@router.post("/users/{user_id}/erase", response_model=ErasureDone,
             summary="Erase a person by anonymisation: contacts replaced, account disabled, keys revoked")
def erase_user(user_id: int, p: Admin, conn: Conn) -> dict[str, Any]:
    _user(conn, p, user_id)
    try:
        done = privacy.erase(conn, user_id, p)
    except privacy.PrivacyError as exc:
        raise Problem(409, "Cannot erase", str(exc)) from exc
    return done.__dict__


@router.get("/me/consents", response_model=dict[str, ConsentState], summary="Your marketing consent per channel")
def my_consents(p: Reader, conn: Conn) -> dict[str, Any]:
    return privacy.consents(conn, p.user_id)


@router.put("/me/consents", response_model=dict[str, ConsentState],
            summary="Give or withdraw marketing consent on a channel; effective at once")
def set_my_consent(body: ConsentIn, p: Reader, conn: Conn) -> dict[str, Any]:
    privacy.set_consent(conn, p.user_id, p, body.channel, body.granted, body.source)
    return privacy.consents(conn, p.user_id)


@router.post("/support-requests", response_model=Created, status_code=201, summary="Ask for support")
def create_support_request(body: SupportRequestIn, p: Reader, conn: Conn) -> Created:
    return Created(id=privacy.open_support_request(conn, p, body.subject, body.body))


@router.get("/benchmarks/anonymised",
            summary="Energy intensity by country and floor-area band across organisations; groups of fewer than "
                    "k organisations are suppressed")
def anonymised_benchmark(p: Admin, conn: Conn, t_from: Annotated[datetime, Query(alias="from")],
                         t_to: Annotated[datetime, Query(alias="to")],
                         k: Annotated[int, Query(ge=5, le=1000, description="at least 5")] = 5) -> dict[str, Any]:
    t_from, t_to = checked_range(t_from, t_to)
    return privacy.anonymised_benchmark(conn, p, t_from, t_to, k)
