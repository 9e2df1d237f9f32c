"""People and access: invites, roles and sites, disabling, sessions, organisation policy, and
a person's own password and two-factor sign-in. Each handler calls one core function of
`wattline.people` or `wattline.two_factor`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status

from api.deps import Admin, Conn, Reader, client_address
from api.schemas import (
    AccessIn,
    CodeIn,
    Created,
    InviteIn,
    LinkPassword,
    NotificationPreferences,
    NotificationPreferencesIn,
    PasswordChange,
    Person,
    Policy,
    PolicyIn,
    RecoveryCodes,
    ResetRequest,
    SessionInfo,
    TwoFactorEnrolment,
    TwoFactorState,
)
from wattline import notifications, people, two_factor
from wattline.accounts import ADDRESS_FAILURES, LoginThrottled
from wattline.errors import Conflict
from wattline.principal import Principal

router = APIRouter(prefix="/v1", tags=["people"])
CustomerQuery = Annotated[int | None, Query(description="a reseller admin acts on one of its customers")]


def _link_base(request: Request) -> str:
    return str(request.app.state.settings.dashboard_url)


@router.get("/people", response_model=list[Person], summary="The people of your organisation (admins)")
def list_people(p: Admin, conn: Conn, customer_id: CustomerQuery = None) -> list[dict[str, Any]]:
    return people.people(conn, people.managed_org(conn, p, customer_id))


@router.post("/people/invites", response_model=Created, status_code=status.HTTP_201_CREATED,
             summary="Invite a person by email: a single-use link, valid 72 h, to set their password")
def invite(body: InviteIn, request: Request, p: Admin, conn: Conn) -> Created:
    org = people.managed_org(conn, p, body.customer_id)
    return Created(id=people.invite(conn, p, org, email=body.email, role=body.role, full_name=body.full_name,
                                    site_ids=body.site_ids, link_base=_link_base(request)))


@router.post("/people/{user_id}/invite", response_model=Created, summary="Send a fresh invite link (the old one ends)")
def resend_invite(user_id: int, request: Request, p: Admin, conn: Conn) -> Created:
    people.resend_invite(conn, p, user_id, _link_base(request))
    return Created(id=user_id)


@router.put("/people/{user_id}/access", response_model=Created,
            summary="A person's role, for the whole organisation or chosen sites")
def set_access(user_id: int, body: AccessIn, p: Admin, conn: Conn) -> Created:
    people.set_access(conn, p, user_id, body.role, body.site_ids)
    return Created(id=user_id)


@router.post("/people/{user_id}/disable", response_model=Created,
             summary="Disable a person: sign-in and keys refused at once, sessions ended")
def disable(user_id: int, p: Admin, conn: Conn) -> Created:
    people.set_disabled(conn, p, user_id, True)
    return Created(id=user_id)


@router.post("/people/{user_id}/enable", response_model=Created, summary="Enable a disabled person again")
def enable(user_id: int, p: Admin, conn: Conn) -> Created:
    people.set_disabled(conn, p, user_id, False)
    return Created(id=user_id)


@router.get("/people/{user_id}/sessions", response_model=list[SessionInfo], summary="A person's live sessions")
def person_sessions(user_id: int, p: Admin, conn: Conn) -> list[dict[str, Any]]:
    people.managed_user(conn, p, user_id)
    return people.sessions(conn, user_id)


@router.delete("/people/{user_id}/sessions/{session_id}", response_model=Created,
               summary="End one of a person's sessions")
def revoke_person_session(user_id: int, session_id: int, p: Admin, conn: Conn) -> Created:
    people.revoke_session(conn, p, user_id, session_id)
    return Created(id=session_id)


@router.delete("/people/{user_id}/two-factor", response_model=Created,
               summary="Turn off a person's two-factor sign-in (they lost phone and codes); audited")
def reset_two_factor(user_id: int, p: Admin, conn: Conn) -> Created:
    people.managed_user(conn, p, user_id)
    two_factor.turn_off(conn, p, user_id)
    return Created(id=user_id)


@router.get("/organisation/policy", response_model=Policy, summary="Allowed email domains and two-factor requirement")
def get_policy(p: Admin, conn: Conn, customer_id: CustomerQuery = None) -> dict[str, Any]:
    return people.policy(conn, people.managed_org(conn, p, customer_id))


@router.put("/organisation/policy", response_model=Policy, summary="Set allowed email domains and require two-factor")
def put_policy(body: PolicyIn, p: Admin, conn: Conn, customer_id: CustomerQuery = None) -> dict[str, Any]:
    return people.set_policy(conn, p, people.managed_org(conn, p, customer_id),
                             allowed_email_domains=body.allowed_email_domains, require_totp=body.require_totp)


# -- links: no credentials, but throttled per address like sign-ins -------------------------------
def _throttle(request: Request) -> str:
    address = client_address(request)
    if wait := ADDRESS_FAILURES.wait_s(address):
        raise LoginThrottled("too many attempts from this address", wait)
    ADDRESS_FAILURES.wait_s(address, take=True)
    return address


@router.post("/auth/password-reset", status_code=status.HTTP_202_ACCEPTED, response_model=dict[str, str],
             summary="Mail a password-reset link (30 minutes, single use); the same answer for any address")
def request_reset(body: ResetRequest, request: Request, conn: Conn) -> dict[str, str]:
    _throttle(request)
    people.request_reset(conn, body.email, _link_base(request))
    return {"detail": "if an account has this address, a link is on its way"}


@router.post("/auth/password-reset/complete", response_model=Created, summary="Set a new password with a reset link")
def complete_reset(body: LinkPassword, request: Request, conn: Conn) -> Created:
    _throttle(request)
    return Created(id=people.use_link(conn, body.token, "reset", body.password))


@router.post("/auth/invites/accept", response_model=Created, summary="Accept an invite: set your password")
def accept_invite(body: LinkPassword, request: Request, conn: Conn) -> Created:
    _throttle(request)
    return Created(id=people.use_link(conn, body.token, "invite", body.password))


# -- a person's own sign-in ----------------------------------------------------------------------
@router.put("/me/password", response_model=Created, summary="Change your password; your other sessions end")
def change_password(body: PasswordChange, p: Reader, conn: Conn) -> Created:
    people.change_password(conn, p, body.current_password, body.new_password)
    return Created(id=p.user_id)


@router.get("/me/sessions", response_model=list[SessionInfo], summary="Your live sessions")
def my_sessions(p: Reader, conn: Conn) -> list[dict[str, Any]]:
    return people.sessions(conn, p.user_id)


@router.delete("/me/sessions/{session_id}", response_model=Created, summary="End one of your sessions")
def revoke_my_session(session_id: int, p: Reader, conn: Conn) -> Created:
    people.revoke_session(conn, p, p.user_id, session_id)
    return Created(id=session_id)


@router.get("/me/two-factor", response_model=TwoFactorState, summary="Whether your two-factor sign-in is on")
def my_two_factor(p: Reader, conn: Conn) -> dict[str, Any]:
    return two_factor.status(conn, p.user_id)


@router.post("/me/two-factor", response_model=TwoFactorEnrolment,
             summary="Start two-factor set-up: scan the secret, then confirm with a code")
def begin_two_factor(p: Reader, conn: Conn) -> dict[str, Any]:
    return two_factor.begin(conn, p.user_id).__dict__


@router.post("/me/two-factor/confirm", response_model=RecoveryCodes,
             summary="Turn two-factor on with a first code; returns recovery codes, shown once")
def confirm_two_factor(body: CodeIn, p: Reader, conn: Conn) -> RecoveryCodes:
    return RecoveryCodes(recovery_codes=two_factor.confirm(conn, p, p.user_id, body.code))


def _own_code(conn: Conn, p: Principal, code: str) -> None:
    # Throttled per person: a stolen session must not be a way to guess the code.
    key = f"user:{p.user_id}"
    if wait := ADDRESS_FAILURES.wait_s(key):
        raise LoginThrottled("too many wrong codes; wait before trying again", wait)
    if not two_factor.verify(conn, p.user_id, code):
        ADDRESS_FAILURES.wait_s(key, take=True)
        raise two_factor.WrongCode()


@router.post("/me/two-factor/recovery-codes", response_model=RecoveryCodes,
             summary="New recovery codes (the old ones stop working), with a current code")
def new_recovery_codes(body: CodeIn, p: Reader, conn: Conn) -> RecoveryCodes:
    _own_code(conn, p, body.code)
    return RecoveryCodes(recovery_codes=two_factor.new_recovery_codes(conn, p, p.user_id))


@router.post("/me/two-factor/off", response_model=Created, summary="Turn your two-factor sign-in off, with a code")
def turn_off_two_factor(body: CodeIn, p: Reader, conn: Conn) -> Created:
    if people.policy(conn, people.org_of(p))["require_totp"]:
        raise Conflict("your organisation requires two-factor sign-in")
    _own_code(conn, p, body.code)
    two_factor.turn_off(conn, p, p.user_id)
    return Created(id=p.user_id)


@router.get("/me/notifications", response_model=NotificationPreferences,
            summary="How you hear from Wattline: alert mail (immediate, digest, off), quiet hours, report mail")
def my_notifications(p: Reader, conn: Conn) -> dict[str, Any]:
    return notifications.preferences(conn, p.user_id)


@router.put("/me/notifications", response_model=NotificationPreferences,
            summary="Set how you hear from Wattline; choosing a category again lifts an unsubscribe from it")
def set_my_notifications(body: NotificationPreferencesIn, p: Reader, conn: Conn) -> dict[str, Any]:
    return notifications.set_preferences(conn, p, p.user_id, **body.model_dump())
