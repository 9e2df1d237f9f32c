"""Login, the caller's identity and API keys."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, status

from api.deps import Conn, Reader, client_address
from api.problems import Problem, not_found
from api.schemas import Created, KeyInfo, KeyRequest, Login, Me, Token
from wattline import accounts
from wattline.accounts import ROLE_SCOPES, api_keys, issue_key

router = APIRouter(prefix="/v1", tags=["auth"])
SESSION_TTL = timedelta(hours=12)


@router.post("/auth/login", response_model=Token, summary="Exchange email and password for a 12-hour token")
def login(body: Login, request: Request, conn: Conn) -> Token:
    client = client_address(request)
    principal = accounts.login(conn, body.email, body.password, client=client, code=body.code)
    key = accounts.start_session(conn, principal, SESSION_TTL,
                                 client=f"API from {client} ({request.headers.get('user-agent', '?')})")
    return Token(token=key.token, prefix=key.prefix, expires_at=key.expires_at, scopes=list(key.scopes))


@router.get("/me", response_model=Me, summary="Who the credentials belong to")
def me(principal: Reader) -> Me:
    return Me(user_id=principal.user_id, role=principal.role, reseller_id=principal.reseller_id,
              customer_id=principal.customer_id, scopes=sorted(principal.scopes))


@router.post("/api-keys", response_model=Token, status_code=status.HTTP_201_CREATED,
             summary="Create an API key; the token is shown once")
def create_key(body: KeyRequest, principal: Reader, conn: Conn) -> Token:
    allowed = ROLE_SCOPES[principal.role] & (principal.scopes | ({"admin"} if principal.can("admin") else set()))
    if not set(body.scopes) <= allowed:
        raise Problem(403, "Forbidden", f"your role may grant only {sorted(allowed)}")
    key = issue_key(conn, principal.user_id, list(body.scopes), name=body.name,
                    ttl=timedelta(days=body.ttl_days) if body.ttl_days else None)
    return Token(token=key.token, prefix=key.prefix, expires_at=key.expires_at, scopes=list(key.scopes))


@router.get("/api-keys", response_model=list[KeyInfo], summary="Your API keys (never their secrets)")
def list_keys(principal: Reader, conn: Conn) -> list[dict[str, Any]]:
    return api_keys(conn, principal.user_id)


@router.delete("/api-keys/{key_id}", response_model=Created, summary="Revoke one of your API keys")
def revoke_key(key_id: int, principal: Reader, conn: Conn) -> Created:
    if not accounts.revoke_key(conn, principal.user_id, key_id):
        raise not_found("api key")
    return Created(id=key_id)
