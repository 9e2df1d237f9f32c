"""Request dependencies: a pooled connection and the authenticated principal."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.limits import RateLimits
from api.problems import Problem, not_found
from wattline import queries
from wattline.accounts import authenticate_key
from wattline.principal import Principal

bearer = HTTPBearer(auto_error=False, description="An API key or a login token: `wl_XXXXXXXX.<secret>`")


def get_conn(request: Request) -> Iterator[psycopg.Connection[Any]]:
    with request.app.state.pool.connection() as conn:
        yield conn


# Handed back when the handler returns, before the response is sent: a streamed body
# holds a connection of its own (api.routes.data), not this one as well.
Conn = Annotated[psycopg.Connection[Any], Depends(get_conn, scope="function")]


def client_address(request: Request) -> str:
    """The caller's address (what unverified traffic is limited by)."""
    return request.client.host if request.client else "unknown"


def get_principal(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    """Verify the credentials, then count the request against the key's own budget.

    Credentials that fail count against the client address instead, so that nobody can
    spend another key's budget by sending its public prefix with a wrong secret."""
    if credentials is None:
        raise Problem(401, "Unauthorized", "send Authorization: Bearer <api key>",
                      headers={"WWW-Authenticate": "Bearer"})
    limits: RateLimits = request.app.state.limits
    address = client_address(request)
    if wait := limits.unverified.wait_s(address):
        raise Problem(429, "Too many requests", "too many requests with unknown credentials from this address",
                      headers={"Retry-After": str(math.ceil(wait))})
    # A connection of its own, handed back at once: a handler that streams holds only its
    # stream's connection, so a burst of exports cannot starve the pool waiting on itself.
    with request.app.state.pool.connection() as conn:
        principal = authenticate_key(conn, credentials.credentials)
    if principal is None:
        limits.unverified.wait_s(address, take=True)
        raise Problem(401, "Unauthorized", "the key is unknown, expired or revoked",
                      headers={"WWW-Authenticate": "Bearer"})
    if wait := limits.keys.take(f"key:{principal.key_id}"):
        raise Problem(429, "Too many requests", "rate limit exceeded for this key",
                      headers={"Retry-After": str(math.ceil(wait))})
    return principal


def require(scope: str) -> Callable[[Principal], Principal]:
    def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not principal.can(scope):
            raise Problem(403, "Forbidden", f"this key lacks the '{scope}' scope")
        return principal
    return check


Reader = Annotated[Principal, Depends(require("read"))]
Writer = Annotated[Principal, Depends(require("write"))]
Commissioner = Annotated[Principal, Depends(require("commission"))]
Admin = Annotated[Principal, Depends(require("admin"))]


def _builds(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if not (principal.can("write") or principal.can("commission")):
        raise Problem(403, "Forbidden", "this key lacks the 'write' or 'commission' scope")
    return principal


#: The electrical hierarchy: facility managers ("write") and installers ("commission") build it.
Builder = Annotated[Principal, Depends(_builds)]


def _sees_costs(principal: Annotated[Principal, Depends(require("read"))]) -> Principal:
    if not principal.sees_costs:
        raise Problem(403, "Forbidden", "installers do not see tariffs or costs")
    return principal


#: Tariffs and costs: readers other than installers.
CostReader = Annotated[Principal, Depends(_sees_costs)]


def visible_site(conn: psycopg.Connection[Any], p: Principal, site_id: int) -> dict[str, Any]:
    """The site, if `p` may see it; 404 otherwise (the same answer as for no such site)."""
    site = queries.site(conn, p, site_id)
    if site is None:
        raise not_found("site")
    return site
